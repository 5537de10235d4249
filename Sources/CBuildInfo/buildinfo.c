#include "CBuildInfo.h"

// A string macro cannot pass through SwiftPM's -Xcc without quoting trouble, so the commit is
// given as bare tokens (a hex hash, maybe "-dirty") and turned into a string here.
#define S3M_STR2(x) #x
#define S3M_STR(x) S3M_STR2(x)

const char *s3m_build_commit(void) {
#ifdef S3MOUNT_COMMIT
    return S3M_STR(S3MOUNT_COMMIT);
#else
    return "";
#endif
}
