#define _GNU_SOURCE
#include "CCurlShim.h"
#include <syslog.h>
#include <malloc.h>
#include <zlib.h>
#include <pthread.h>
#include <string.h>

void s3m_malloc_trim(void) { malloc_trim(0); }

static __thread int bulk_thread;
void s3m_set_bulk_thread(int bulk) { bulk_thread = bulk; }
int s3m_is_bulk_thread(void) { return bulk_thread; }
void s3m_set_thread_name(const char *name) {
    char short_name[16];
    strncpy(short_name, name, 15);
    short_name[15] = 0;
    pthread_setname_np(pthread_self(), short_name);
}
void s3m_malloc_arenas(int count) { mallopt(M_ARENA_MAX, count); }
size_t s3m_heap_in_use(void) { struct mallinfo2 m = mallinfo2(); return m.uordblks + m.hblkhd; }

uint32_t s3m_crc32(uint32_t crc, const void *buf, size_t len) { return (uint32_t)crc32_z(crc, buf, len); }

void s3m_syslog(int priority, const char *message) { syslog(priority, "%s", message); }
void s3m_openlog(const char *ident) { openlog(ident, LOG_PID, LOG_DAEMON); }

int s3m_curl_global_init(void) { return (int)curl_global_init(CURL_GLOBAL_ALL); }
CURLcode s3m_easy_setopt_long(CURL *h, CURLoption opt, long value) { return curl_easy_setopt(h, opt, value); }
CURLcode s3m_easy_setopt_off(CURL *h, CURLoption opt, curl_off_t value) { return curl_easy_setopt(h, opt, value); }
CURLcode s3m_easy_setopt_string(CURL *h, CURLoption opt, const char *value) { return curl_easy_setopt(h, opt, value); }
CURLcode s3m_easy_setopt_pointer(CURL *h, CURLoption opt, void *value) { return curl_easy_setopt(h, opt, value); }
CURLcode s3m_easy_setopt_callback(CURL *h, CURLoption opt, s3m_data_callback cb) { return curl_easy_setopt(h, opt, cb); }
long s3m_easy_response_code(CURL *h) {
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    return code;
}
CURLSHcode s3m_share_setopt_long(CURLSH *h, CURLSHoption opt, long value) { return curl_share_setopt(h, opt, value); }

const CURLoption S3M_OPT_URL = CURLOPT_URL, S3M_OPT_CUSTOMREQUEST = CURLOPT_CUSTOMREQUEST,
    S3M_OPT_HTTPHEADER = CURLOPT_HTTPHEADER, S3M_OPT_NOBODY = CURLOPT_NOBODY,
    S3M_OPT_UPLOAD = CURLOPT_UPLOAD, S3M_OPT_INFILESIZE_LARGE = CURLOPT_INFILESIZE_LARGE,
    S3M_OPT_READFUNCTION = CURLOPT_READFUNCTION, S3M_OPT_READDATA = CURLOPT_READDATA,
    S3M_OPT_WRITEFUNCTION = CURLOPT_WRITEFUNCTION, S3M_OPT_WRITEDATA = CURLOPT_WRITEDATA,
    S3M_OPT_HEADERFUNCTION = CURLOPT_HEADERFUNCTION, S3M_OPT_HEADERDATA = CURLOPT_HEADERDATA,
    S3M_OPT_NOSIGNAL = CURLOPT_NOSIGNAL, S3M_OPT_PATH_AS_IS = CURLOPT_PATH_AS_IS,
    S3M_OPT_CONNECTTIMEOUT_MS = CURLOPT_CONNECTTIMEOUT_MS, S3M_OPT_LOW_SPEED_LIMIT = CURLOPT_LOW_SPEED_LIMIT,
    S3M_OPT_LOW_SPEED_TIME = CURLOPT_LOW_SPEED_TIME, S3M_OPT_SHARE = CURLOPT_SHARE,
    S3M_OPT_TCP_KEEPALIVE = CURLOPT_TCP_KEEPALIVE, S3M_OPT_HTTPGET = CURLOPT_HTTPGET,
    S3M_OPT_POST = CURLOPT_POST, S3M_OPT_POSTFIELDSIZE_LARGE = CURLOPT_POSTFIELDSIZE_LARGE,
    S3M_OPT_TIMEOUT_MS = CURLOPT_TIMEOUT_MS, S3M_OPT_FOLLOWLOCATION = CURLOPT_FOLLOWLOCATION,
    S3M_OPT_ERRORBUFFER = CURLOPT_ERRORBUFFER, S3M_OPT_BUFFERSIZE = CURLOPT_BUFFERSIZE,
    S3M_OPT_UPLOAD_BUFFERSIZE = CURLOPT_UPLOAD_BUFFERSIZE,
    S3M_OPT_EXPECT_100_TIMEOUT_MS = CURLOPT_EXPECT_100_TIMEOUT_MS, S3M_OPT_CAINFO = CURLOPT_CAINFO,
    S3M_OPT_PROTOCOLS_STR = CURLOPT_PROTOCOLS_STR, S3M_OPT_REDIR_PROTOCOLS_STR = CURLOPT_REDIR_PROTOCOLS_STR;
const CURLSHoption S3M_SHOPT_SHARE = CURLSHOPT_SHARE;
const long S3M_LOCK_DATA_DNS = CURL_LOCK_DATA_DNS, S3M_LOCK_DATA_SSL_SESSION = CURL_LOCK_DATA_SSL_SESSION;
const size_t S3M_READFUNC_ABORT = CURL_READFUNC_ABORT;
