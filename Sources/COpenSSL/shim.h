#ifndef S3MOUNT_COPENSSL_SHIM_H
#define S3MOUNT_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/crypto.h>
#endif
