#ifndef S3MOUNT_CFUSE3_SHIM_H
#define S3MOUNT_CFUSE3_SHIM_H
#define FUSE_USE_VERSION 314
#include <stddef.h>
#include <stdint.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <errno.h>
#include <sys/ioctl.h>

/* `s3mount stats`: an ioctl on a directory of the mount returns its statistics as NUL-terminated JSON. */
#define S3M_STATS_MAX 16000
static const unsigned int S3M_STATS_IOCTL = _IOR('S', 0x53, char[S3M_STATS_MAX]);
static inline int s3m_stats_ioctl(int fd, char *buf) { return ioctl(fd, S3M_STATS_IOCTL, buf); }

/* `s3mount restore`: an ioctl on the directory holding the file (an archived file cannot be
   opened) starts the restore of the object of `name`; `result` comes back 0 started, 1 already
   in progress, 2 already restored. */
struct s3m_restore {
    uint32_t days;
    char tier[16];
    char name[256];
    int32_t result;
};
static const unsigned int S3M_RESTORE_IOCTL = _IOWR('S', 0x52, struct s3m_restore);
static inline int s3m_restore_ioctl(int fd, struct s3m_restore *r) { return ioctl(fd, S3M_RESTORE_IOCTL, r); }

/* fuse_session_loop_mt is a macro over versioned symbols; Swift cannot call macros. */
static inline int s3m_session_loop_mt(struct fuse_session *se, unsigned int max_threads, unsigned int max_idle) {
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (cfg == NULL) return -1;
    fuse_loop_cfg_set_max_threads(cfg, max_threads);
    fuse_loop_cfg_set_idle_threads(cfg, max_idle);
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return rc;
}

static inline struct fuse_session *s3m_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *ops, void *userdata) {
    return fuse_session_new(args, ops, sizeof(struct fuse_lowlevel_ops), userdata);
}

static inline void s3m_fi_set_cache_flags(struct fuse_file_info *fi, int keep_cache, int cache_readdir) {
    fi->keep_cache = keep_cache ? 1 : 0;
    fi->cache_readdir = cache_readdir ? 1 : 0;
}
static inline void s3m_fi_set_direct_io(struct fuse_file_info *fi, int on) { fi->direct_io = on ? 1 : 0; }
static inline int s3m_fi_flags(const struct fuse_file_info *fi) { return fi->flags; }
static inline uint64_t s3m_fi_fh(const struct fuse_file_info *fi) { return fi->fh; }
static inline void s3m_fi_set_fh(struct fuse_file_info *fi, uint64_t fh) { fi->fh = fh; }

static inline void s3m_conn_want(struct fuse_conn_info *conn, unsigned flag) {
    if (conn->capable & flag) conn->want |= flag;
}
static inline void s3m_conn_unwant(struct fuse_conn_info *conn, unsigned flag) { conn->want &= ~flag; }

enum {
    S3M_CAP_READDIRPLUS = FUSE_CAP_READDIRPLUS,
    S3M_CAP_READDIRPLUS_AUTO = FUSE_CAP_READDIRPLUS_AUTO,
    S3M_CAP_ASYNC_READ = FUSE_CAP_ASYNC_READ,
    S3M_CAP_CACHE_SYMLINKS = FUSE_CAP_CACHE_SYMLINKS,
    S3M_CAP_PARALLEL_DIROPS = FUSE_CAP_PARALLEL_DIROPS,
    S3M_CAP_AUTO_INVAL_DATA = FUSE_CAP_AUTO_INVAL_DATA,
    S3M_CAP_SPLICE_WRITE = FUSE_CAP_SPLICE_WRITE,
    S3M_CAP_SPLICE_READ = FUSE_CAP_SPLICE_READ,
    S3M_CAP_IOCTL_DIR = FUSE_CAP_IOCTL_DIR,
};
#endif
