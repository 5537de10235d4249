#ifndef S3MOUNT_CCURLSHIM_H
#define S3MOUNT_CCURLSHIM_H
/* Typed wrappers over libcurl's variadic calls, which Swift cannot call directly. */
#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

typedef size_t (*s3m_data_callback)(char *ptr, size_t size, size_t nmemb, void *userdata);

int s3m_curl_global_init(void);
CURLcode s3m_easy_setopt_long(CURL *h, CURLoption opt, long value);
CURLcode s3m_easy_setopt_off(CURL *h, CURLoption opt, curl_off_t value);
CURLcode s3m_easy_setopt_string(CURL *h, CURLoption opt, const char *value);
CURLcode s3m_easy_setopt_pointer(CURL *h, CURLoption opt, void *value);
CURLcode s3m_easy_setopt_callback(CURL *h, CURLoption opt, s3m_data_callback cb);
long s3m_easy_response_code(CURL *h);
CURLSHcode s3m_share_setopt_long(CURLSH *h, CURLSHoption opt, long value);

/* zlib's CRC-32 (the one S3 checks as x-amz-checksum-crc32): continues `crc` over `len` bytes. */
uint32_t s3m_crc32(uint32_t crc, const void *buf, size_t len);

/* syslog(3) is variadic too: one message, already formatted. */
void s3m_syslog(int priority, const char *message);
void s3m_openlog(const char *ident);

/* Returns freed heap memory to the system (after large caches are dropped). */
void s3m_malloc_trim(void);
/* Caps glibc's per-thread malloc arenas: FUSE runs many worker threads, and each arena keeps its own
   free memory, which multiplies the daemon's RSS for the same cached data. */
void s3m_malloc_arenas(int count);
/* Bytes of heap in use (allocated and not freed), for statistics and memory measurements. */
size_t s3m_heap_in_use(void);
/* Names the calling thread (at most 15 bytes are kept), for top -H and gdb. */
void s3m_set_thread_name(const char *name);
/* Whether the calling thread does bulk work (uploads, copies, prefetch): its S3 requests yield to
   interactive ones (FUSE threads, listings) when the mount's request slots run short. */
void s3m_set_bulk_thread(int bulk);
int s3m_is_bulk_thread(void);

/* Options used from Swift, re-exported as plain ints so the importer never has to guess. */
extern const CURLoption S3M_OPT_URL, S3M_OPT_CUSTOMREQUEST, S3M_OPT_HTTPHEADER, S3M_OPT_NOBODY,
    S3M_OPT_UPLOAD, S3M_OPT_INFILESIZE_LARGE, S3M_OPT_READFUNCTION, S3M_OPT_READDATA,
    S3M_OPT_WRITEFUNCTION, S3M_OPT_WRITEDATA, S3M_OPT_HEADERFUNCTION, S3M_OPT_HEADERDATA,
    S3M_OPT_NOSIGNAL, S3M_OPT_PATH_AS_IS, S3M_OPT_CONNECTTIMEOUT_MS, S3M_OPT_LOW_SPEED_LIMIT,
    S3M_OPT_LOW_SPEED_TIME, S3M_OPT_SHARE, S3M_OPT_TCP_KEEPALIVE, S3M_OPT_HTTPGET,
    S3M_OPT_POST, S3M_OPT_POSTFIELDSIZE_LARGE, S3M_OPT_TIMEOUT_MS, S3M_OPT_FOLLOWLOCATION,
    S3M_OPT_ERRORBUFFER, S3M_OPT_BUFFERSIZE, S3M_OPT_UPLOAD_BUFFERSIZE, S3M_OPT_EXPECT_100_TIMEOUT_MS, S3M_OPT_CAINFO,
    S3M_OPT_PROTOCOLS_STR, S3M_OPT_REDIR_PROTOCOLS_STR;
extern const CURLSHoption S3M_SHOPT_SHARE;
extern const long S3M_LOCK_DATA_DNS, S3M_LOCK_DATA_SSL_SESSION;
extern const size_t S3M_READFUNC_ABORT;

#endif
