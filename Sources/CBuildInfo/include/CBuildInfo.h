#ifndef S3MOUNT_CBUILDINFO_H
#define S3MOUNT_CBUILDINFO_H

/// The commit s3mount was built from, as recorded by scripts/build-release.sh
/// (-Xcc -DS3MOUNT_COMMIT=...), or "" for a plain `swift build`.
const char *s3m_build_commit(void);

#endif
