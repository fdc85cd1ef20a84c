/* sign.h: HMAC-SHA256 signatures over a task message (x-celeriac-signature), so a worker can
 * refuse jobs that were not produced by someone holding the shared key. Pure apart from
 * cel_sign_load_key(), which reads one file.
 *
 * What is signed (format v1); integers are big-endian:
 * - the 16 bytes "celeriac-sign-v1";
 * - task, id: string fields;
 * - eta, expires, retries: int64, 8 bytes each (eta/expires in us since the epoch, 0 = none);
 * - root_id, parent_id, group, idempotency_key: string fields (an unset root_id is signed as
 *   the id, because cel_task_encode() sends root_id = id when it is unset);
 * - format: 1 byte, 0 msgpack, 1 JSON;
 * - the body: an 8-byte length, then the body bytes exactly as they travel.
 * A string field is the byte 0x00 when absent (NULL), else 0x01, an 8-byte length, the bytes.
 * Any change to these (a retry bumps retries, a countdown sets eta) needs a new signature. */
#ifndef CEL_COMMON_SIGN_H
#define CEL_COMMON_SIGN_H

#include <stddef.h>

#include "common/arena.h"
#include "common/buf.h"
#include "common/message.h"

#define CEL_SIGN_HEX_LEN 64   /* hex digits of an HMAC-SHA256; out_hex needs this + 1 */
#define CEL_SIGN_KEY_MIN 16   /* shortest key cel_sign_load_key() accepts */
#define CEL_SIGN_KEY_MAX 4096 /* longest key file cel_sign_load_key() accepts */
#define CEL_SIGN_HEADER "x-celeriac-signature"

/* Writes the lower-case hex HMAC-SHA256 of t's canonical bytes plus body into out_hex
 * (NUL-terminated). Returns 0, CEL_EINVAL (no key, task or id missing) or CEL_ENOMEM. */
int cel_sign_task(const struct cel_task *t, struct cel_span body, const unsigned char *key,
                  size_t keylen, char out_hex[CEL_SIGN_HEX_LEN + 1]);

/* Checks t->signature against the HMAC of t and body, in constant time. Returns 0 when it
 * matches, CEL_ESIGNATURE when the signature is absent, malformed or wrong (err says which). */
int cel_sign_verify(const struct cel_task *t, struct cel_span body, const unsigned char *key,
                    size_t keylen, char *err, size_t errlen);

/* Appends the canonical bytes (described above) to out; what cel_sign_task() MACs. For tests
 * and for reproducing a signature in another language. */
int cel_sign_canonical(const struct cel_task *t, struct cel_span body, struct cel_buf *out);

/* Reads a key file into key (capacity *len on entry, key length on return). Refuses a file
 * that is not a regular file, is readable or writable by group or others, is shorter than
 * CEL_SIGN_KEY_MIN or longer than *len bytes once one trailing newline ("\n" or "\r\n") is
 * stripped. Returns 0, CEL_ESYS (cannot open/read) or CEL_ECONFIG, with the reason in err. */
int cel_sign_load_key(const char *path, unsigned char *key, size_t *len, char *err, size_t errlen);

/* Signs an encoded message: computes the signature of t (its signature field is ignored) and
 * body, and sets the x-celeriac-signature field of headers (as cel_task_encode() left them),
 * replacing one already there; the new items array and string live in a. Returns 0,
 * CEL_EINVAL or CEL_ENOMEM. */
int cel_sign_headers(const struct cel_task *t, struct cel_span body, const unsigned char *key,
                     size_t keylen, struct cel_arena *a, struct cel_table *headers);

#endif
