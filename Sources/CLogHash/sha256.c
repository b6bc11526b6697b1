// The chain hash's SHA-256: Debian's OpenSSL libcrypto (its own SHA-extension/AVX2 code paths, chosen at run
// time), called through the low-level one-context API so that a record costs no allocation. The low-level API
// is deprecated in OpenSSL 3 in favour of EVP, whose one-shot EVP_Digest allocates a context per call.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>

#include "cloghash.h"

void csha256(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[32]) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  if (alen) SHA256_Update(&ctx, a, alen);
  if (blen) SHA256_Update(&ctx, b, blen);
  SHA256_Final(out, &ctx);
}
