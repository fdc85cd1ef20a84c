/* sha1.h: SHA-1 (FIPS 180-4) for naming Redis scripts (EVALSHA): a few lines here instead of
 * initialising OpenSSL, which costs every worker process about 3 MB of resident pages. Not for
 * security. */
#ifndef CEL_COMMON_SHA1_H
#define CEL_COMMON_SHA1_H

#include <stddef.h>

/* out: 40 lowercase hex digits and a NUL */
void cel__sha1_hex(const void *data, size_t len, char out[41]);

#endif
