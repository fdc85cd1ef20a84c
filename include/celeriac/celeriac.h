/* celeriac.h: status codes, byte spans and version shared by every part of celeriac. */
#ifndef CELERIAC_CELERIAC_H
#define CELERIAC_CELERIAC_H

#include <stddef.h>
#include <stdint.h>

#define CEL_VERSION_MAJOR 0
#define CEL_VERSION_MINOR 1
#define CEL_VERSION_PATCH 0
#define CEL_VERSION_STRING "0.1.0"

/* Every fallible function returns 0 or one of these negative codes. Ranges: -1..-99 general,
 * -100.. codec, -200.. broker, -300.. store, -400.. services and worker. Add codes here only;
 * the enum and cel_strerror() are both generated from this list. */
/* clang-format off */
#define CEL_ERRNO_MAP(X)                                                                   \
    X(ENOMEM, -1, "out of memory")                                                         \
    X(EINVAL, -2, "invalid argument")                                                      \
    X(ESYS, -3, "system call failed (see errno)")                                          \
    X(ETIMEDOUT, -4, "timed out")                                                          \
    X(ENOTFOUND, -5, "not found")                                                          \
    X(EEXIST, -6, "already exists")                                                        \
    X(EAGAIN, -7, "try again")                                                             \
    X(ECONFIG, -8, "invalid configuration")                                                \
    X(EURL, -9, "invalid URL")                                                             \
    X(EIO, -10, "input/output error")                                                      \
    X(ECLOSED, -11, "closed")                                                              \
    X(EDECODE, -100, "malformed msgpack")                                                  \
    X(EJSON, -101, "malformed JSON")                                                       \
    X(ECONTENT, -102, "unsupported content type or encoding")                             \
    X(EHEADER, -103, "missing or mistyped header")                                         \
    X(EBODY, -104, "body is not [args, kwargs, embed]")                                    \
    X(ETIME, -105, "invalid timestamp")                                                    \
    X(ETOOBIG, -106, "size limit exceeded")                                                \
    X(ETOODEEP, -107, "nesting limit exceeded")                                            \
    X(EUTF8, -108, "invalid UTF-8")                                                        \
    X(EUNSUPPORTED, -109, "value cannot be represented")                                   \
    X(ESIGNATURE, -110, "missing or invalid message signature")                            \
    X(ECONN, -200, "broker connection failed or lost")                                     \
    X(EAUTH, -201, "broker authentication failed")                                         \
    X(ETLS, -202, "TLS failure")                                                           \
    X(ENACK, -203, "publish nacked by the broker")                                         \
    X(EUNROUTABLE, -204, "message unroutable (returned by the broker)")                    \
    X(ECHANNEL, -205, "channel closed by the broker")                                      \
    X(ESTALE, -206, "delivery belongs to a closed connection")                             \
    X(EREDIS, -300, "redis error")                                                         \
    X(ESCRIPT, -301, "redis script error")                                                 \
    X(EBUSY, -302, "held by another worker")                                               \
    X(EABI, -400, "service ABI mismatch")                                                  \
    X(ESYMBOL, -401, "service symbol missing")                                             \
    X(EDUPTASK, -402, "duplicate task name")                                               \
    X(ETASKNAME, -403, "invalid task name")                                                \
    X(ELOAD, -404, "cannot load shared object")                                            \
    X(ENOTASK, -405, "task not registered")
/* clang-format on */

enum cel_status {
    CEL_OK = 0,
#define CEL__ERRNO_ENUM(name, code, str) CEL_##name = (code),
    CEL_ERRNO_MAP(CEL__ERRNO_ENUM)
#undef CEL__ERRNO_ENUM
};

/* A static string for a status code; "unknown error" for codes not in the list. Never NULL. */
const char *cel_strerror(int err);
/* The symbolic name ("CEL_ENOMEM"), or NULL for codes not in the list. */
const char *cel_errname(int err);

/* A borrowed, non-owning view of bytes. */
struct cel_span {
    const char *ptr;
    size_t len;
};

#define CEL_SPAN_LIT(s) ((struct cel_span){(s), sizeof(s) - 1})

#endif
