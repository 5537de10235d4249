#ifndef S3MOUNT_CRABBITMQ_SHIM_H
#define S3MOUNT_CRABBITMQ_SHIM_H
/* librabbitmq (rabbitmq-c) for the AMQP notification queue (Sources/S3/AMQPQueue.swift). amqp_login
   is variadic and the replies are unions: the steps are done here, each with a timeout, and Swift
   sees a connection handle, a status and a message. */
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/time.h>
/* Not <stdio.h>, <stdlib.h> or <string.h>: with _FORTIFY_SOURCE (release builds) their inline
   wrappers would be defined in this module and in SwiftGlibc differently, which the compiler
   refuses. The compiler's builtins need no header. */
#define snprintf __builtin_snprintf
#define malloc __builtin_malloc
#define free __builtin_free
#define memcpy __builtin_memcpy
#define memset __builtin_memset

/* Frames larger than this are refused by the library (it checks each frame against frame_max). */
#define S3M_AMQP_FRAME_MAX 131072
#define S3M_AMQP_CHANNEL 1
/* The mount's probes are published on a channel of their own: a broker that refuses them closes
   that channel, not the one the mount consumes on. */
#define S3M_AMQP_PROBE_CHANNEL 2

/* What went wrong in an RPC, as text; 0 when it went right. */
static inline int s3m_amqp_reply_problem(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        snprintf(err, errlen, "%s: the broker closed the connection", what);
        return -1;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
        return -1;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD && r.reply.decoded) {
            amqp_connection_close_t *m = (amqp_connection_close_t *)r.reply.decoded;
            snprintf(err, errlen, "%s: the broker closed the connection: %u %.*s", what, m->reply_code,
                     (int)(m->reply_text.len > 300 ? 300 : m->reply_text.len), (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD && r.reply.decoded) {
            amqp_channel_close_t *m = (amqp_channel_close_t *)r.reply.decoded;
            snprintf(err, errlen, "%s: the broker closed the channel: %u %.*s", what, m->reply_code,
                     (int)(m->reply_text.len > 300 ? 300 : m->reply_text.len), (const char *)m->reply_text.bytes);
        } else {
            snprintf(err, errlen, "%s: the broker answered with method 0x%08x", what, r.reply.id);
        }
        return -1;
    }
    snprintf(err, errlen, "%s: unknown reply", what);
    return -1;
}

/* Connects, logs in (PLAIN), opens the channel, sets the prefetch and starts consuming `queue`
   with manual acks. Every step is bounded by `timeout_s` (connect, handshake, RPCs). Returns the
   connection, or NULL with `err` filled. `cacert`: PEM file for amqps (NULL: the system's). */
static inline amqp_connection_state_t s3m_amqp_open(const char *host, int port, int tls, const char *cacert,
                                                    const char *vhost, const char *user, const char *password,
                                                    const char *queue, uint16_t prefetch, int heartbeat_s,
                                                    int timeout_s, char *err, size_t errlen) {
    amqp_connection_state_t c = amqp_new_connection();
    if (c == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
    amqp_socket_t *s = tls ? amqp_ssl_socket_new(c) : amqp_tcp_socket_new(c);
    if (s == NULL) { snprintf(err, errlen, "cannot create the socket"); amqp_destroy_connection(c); return NULL; }
    if (tls) {
        amqp_ssl_socket_set_verify_peer(s, 1);
        amqp_ssl_socket_set_verify_hostname(s, 1);
        int rc = amqp_ssl_socket_set_cacert(s, cacert ? cacert : "/etc/ssl/certs/ca-certificates.crt");
        if (rc != AMQP_STATUS_OK) {
            snprintf(err, errlen, "CA certificates %s: %s", cacert ? cacert : "/etc/ssl/certs/ca-certificates.crt", amqp_error_string2(rc));
            amqp_destroy_connection(c);
            return NULL;
        }
    }
    struct timeval tv = { timeout_s, 0 };
    int rc = amqp_socket_open_noblock(s, host, port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "connecting to %s:%d: %s", host, port, amqp_error_string2(rc));
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_set_handshake_timeout(c, &tv);
    amqp_set_rpc_timeout(c, &tv);
    amqp_rpc_reply_t r = amqp_login(c, vhost, 2 /* the consumer's channel and the probes' */, S3M_AMQP_FRAME_MAX, heartbeat_s, AMQP_SASL_METHOD_PLAIN, user, password);
    if (s3m_amqp_reply_problem(r, "login", err, errlen) != 0) { amqp_destroy_connection(c); return NULL; }
    amqp_channel_open(c, S3M_AMQP_CHANNEL);
    if (s3m_amqp_reply_problem(amqp_get_rpc_reply(c), "opening the channel", err, errlen) != 0) { amqp_destroy_connection(c); return NULL; }
    amqp_basic_qos(c, S3M_AMQP_CHANNEL, 0, prefetch, 0);
    if (s3m_amqp_reply_problem(amqp_get_rpc_reply(c), "basic.qos", err, errlen) != 0) { amqp_destroy_connection(c); return NULL; }
    amqp_basic_consume(c, S3M_AMQP_CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0 /* manual acks */, 0, amqp_empty_table);
    if (s3m_amqp_reply_problem(amqp_get_rpc_reply(c), "consuming the queue", err, errlen) != 0) { amqp_destroy_connection(c); return NULL; }
    amqp_maybe_release_buffers(c);
    return c;
}

/* Ends the connection: a polite close when `polite` (it waits at most the RPC timeout), then frees. */
static inline void s3m_amqp_close(amqp_connection_state_t c, int polite) {
    if (c == NULL) return;
    if (polite) amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

enum { S3M_AMQP_MESSAGE = 0, S3M_AMQP_NOTHING = 1, S3M_AMQP_TOO_LARGE = 2, S3M_AMQP_PROBES_REFUSED = 3, S3M_AMQP_FAILED = -1 };

/* One delivery. Waits up to `wait_ms` for it to start (0: only what has arrived), then up to
   `body_timeout_s` for its header and body. The body, when not larger than `max_body`, is copied to
   a malloc'd buffer the caller frees; a larger one is read and dropped (S3M_AMQP_TOO_LARGE, with
   its tag, to be acked). S3M_AMQP_FAILED: the connection is unusable (`err` says why). */
static inline int s3m_amqp_next(amqp_connection_state_t c, int wait_ms, int body_timeout_s, uint64_t max_body,
                                uint64_t *tag, void **body, size_t *body_len, char *err, size_t errlen) {
    amqp_frame_t f;
    struct timeval tv = { wait_ms / 1000, (wait_ms % 1000) * 1000 };
    *body = NULL;
    *body_len = 0;
    amqp_maybe_release_buffers(c);
    int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
    if (rc == AMQP_STATUS_TIMEOUT) return S3M_AMQP_NOTHING;
    if (rc != AMQP_STATUS_OK) { snprintf(err, errlen, "reading from the broker: %s", amqp_error_string2(rc)); return S3M_AMQP_FAILED; }
    if (f.frame_type != AMQP_FRAME_METHOD) { snprintf(err, errlen, "the broker sent frame type %u outside a message", f.frame_type); return S3M_AMQP_FAILED; }
    if (f.channel == S3M_AMQP_PROBE_CHANNEL && f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
        /* The broker refused a probe (the user may not publish): that channel is closed, the mount
           goes on consuming without probes. */
        amqp_rpc_reply_t r;
        memset(&r, 0, sizeof r);
        r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
        r.reply = f.payload.method;
        s3m_amqp_reply_problem(r, "publishing a probe", err, errlen);
        amqp_channel_close_ok_t ok;
        ok.dummy = 0;
        if (amqp_send_method(c, S3M_AMQP_PROBE_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK) return S3M_AMQP_FAILED;
        return S3M_AMQP_PROBES_REFUSED;
    }
    if (f.payload.method.id != AMQP_BASIC_DELIVER_METHOD) {
        amqp_rpc_reply_t r;
        memset(&r, 0, sizeof r);
        r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
        r.reply = f.payload.method;
        if (f.payload.method.id == AMQP_BASIC_CANCEL_METHOD) snprintf(err, errlen, "the broker cancelled the consumer (the queue was deleted?)");
        else s3m_amqp_reply_problem(r, "waiting for messages", err, errlen);
        return S3M_AMQP_FAILED;
    }
    *tag = ((amqp_basic_deliver_t *)f.payload.method.decoded)->delivery_tag;
    struct timeval btv = { body_timeout_s, 0 };
    rc = amqp_simple_wait_frame_noblock(c, &f, &btv);
    if (rc != AMQP_STATUS_OK) { snprintf(err, errlen, "reading a message's header: %s", amqp_error_string2(rc)); return S3M_AMQP_FAILED; }
    if (f.frame_type != AMQP_FRAME_HEADER) { snprintf(err, errlen, "the broker sent frame type %u for a message's header", f.frame_type); return S3M_AMQP_FAILED; }
    uint64_t size = f.payload.properties.body_size;
    int keep = size <= max_body;
    unsigned char *buf = NULL;
    if (keep && size > 0) {
        buf = (unsigned char *)malloc((size_t)size);
        if (buf == NULL) { snprintf(err, errlen, "out of memory for a message of %llu bytes", (unsigned long long)size); return S3M_AMQP_FAILED; }
    }
    uint64_t got = 0;
    while (got < size) {
        rc = amqp_simple_wait_frame_noblock(c, &f, &btv);
        if (rc != AMQP_STATUS_OK) { free(buf); snprintf(err, errlen, "reading a message's body: %s", amqp_error_string2(rc)); return S3M_AMQP_FAILED; }
        if (f.frame_type != AMQP_FRAME_BODY) { free(buf); snprintf(err, errlen, "the broker sent frame type %u in a message's body", f.frame_type); return S3M_AMQP_FAILED; }
        size_t n = f.payload.body_fragment.len;
        /* An empty body frame moves nothing: a broker sending them without end would hold us here. */
        if (n == 0) { free(buf); snprintf(err, errlen, "the broker sent an empty body frame"); return S3M_AMQP_FAILED; }
        if (n > size - got) { free(buf); snprintf(err, errlen, "a message's body is longer than its header said"); return S3M_AMQP_FAILED; }
        if (keep) memcpy(buf + got, f.payload.body_fragment.bytes, n);
        got += n;
        /* A large body spans many frames: free each one's memory as it goes. */
        amqp_maybe_release_buffers(c);
    }
    if (!keep) return S3M_AMQP_TOO_LARGE;
    *body = buf;
    *body_len = (size_t)size;
    return S3M_AMQP_MESSAGE;
}

/* Publishes `body` to `queue` through the default exchange, on the probe channel (opened first when
   `open` is set: an RPC whose replies on the consumer's channel librabbitmq keeps for later reads).
   0, or a library status; `err` says why. */
static inline int s3m_amqp_publish(amqp_connection_state_t c, int open, const char *queue, const void *body, size_t len,
                                   char *err, size_t errlen) {
    if (open) {
        amqp_channel_open(c, S3M_AMQP_PROBE_CHANNEL);
        if (s3m_amqp_reply_problem(amqp_get_rpc_reply(c), "opening the probe channel", err, errlen) != 0) return AMQP_STATUS_UNEXPECTED_STATE;
    }
    amqp_bytes_t b;
    b.len = len;
    b.bytes = (void *)body;
    int rc = amqp_basic_publish(c, S3M_AMQP_PROBE_CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, NULL, b);
    if (rc != AMQP_STATUS_OK) snprintf(err, errlen, "publishing a probe: %s", amqp_error_string2(rc));
    return rc;
}

/* Acknowledges one delivery; 0 or a library status. */
static inline int s3m_amqp_ack(amqp_connection_state_t c, uint64_t tag) {
    return amqp_basic_ack(c, S3M_AMQP_CHANNEL, tag, 0);
}

static inline const char *s3m_amqp_error(int status) { return amqp_error_string2(status); }

#undef snprintf
#undef malloc
#undef free
#undef memcpy
#undef memset
#endif
