/* message.h: Celery task protocol v2 messages: the model, the encoder (exactly what Celery 5.2
 * produces) and the validating decoder (what Celery and hostile peers send). Pure: no I/O. */
#ifndef CEL_COMMON_MESSAGE_H
#define CEL_COMMON_MESSAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/buf.h"
#include "common/value.h"

#define CEL_CT_MSGPACK "application/x-msgpack"
#define CEL_CT_JSON "application/json"

enum cel_format { CEL_FMT_MSGPACK = 0, CEL_FMT_JSON = 1 };

/* AMQP basic properties we read or write. NULL strings are unset. */
struct cel_props {
    const char *content_type;
    const char *content_encoding;
    const char *correlation_id;
    const char *reply_to;
    const char *expiration; /* ms as decimal text; only set together with the expires header */
    uint8_t delivery_mode;  /* 2 = persistent, 0 = unset */
    uint8_t priority;
    bool has_priority;
};

/* Decoding limits; every one enforced before the allocation it guards. */
struct cel_limits {
    size_t max_body;  /* bytes of the message body (default 16 MiB) */
    size_t max_depth; /* nesting of arrays/maps (default 64) */
    size_t max_items; /* elements in any one array or map (default 1,000,000) */
    size_t max_str;   /* bytes of any one string (default 8 MiB) */
};
extern const struct cel_limits cel_default_limits;

/* One task message. Strings are NUL-terminated and live in the arena passed to decode (or are
 * borrowed from the caller when encoding); NULL means absent/None. Body parts are msgpack bytes
 * whatever the wire format: JSON bodies are converted on decode and back on encode. */
struct cel_task {
    struct cel_props props;

    /* the 16 Celery headers */
    const char *lang;
    const char *task; /* required */
    const char *id;   /* required */
    const char *shadow;
    int64_t eta;     /* us since epoch; 0 = none */
    int64_t expires; /* us since epoch; 0 = none */
    const char *group;
    int64_t group_index; /* -1 = none */
    int64_t retries;
    double time_limit;      /* hard, seconds; 0 = none (timelimit[0]) */
    double soft_time_limit; /* seconds; 0 = none (timelimit[1]) */
    const char *root_id;
    const char *parent_id;
    const char *argsrepr;
    const char *kwargsrepr;
    const char *origin;
    bool ignore_result;

    /* celeriac's own headers (x-celeriac-*) */
    const char *idempotency_key; /* x-celeriac-idempotency-key */
    const char *signature;       /* x-celeriac-signature (hex HMAC-SHA256) */
    /* any other header, kept in order so forwarding preserves it (includes other x-celeriac-*) */
    struct cel_table extra;

    /* body: [args, kwargs, embed], each part as msgpack bytes */
    struct cel_span args;      /* msgpack array; never empty after decode */
    struct cel_span kwargs;    /* msgpack map with str keys; never empty after decode */
    struct cel_span callbacks; /* embed.callbacks: msgpack array of signatures, len 0 = nil */
    struct cel_span errbacks;  /* embed.errbacks */
    struct cel_span chain;     /* embed.chain (reverse order: next task last) */
    struct cel_span chord;     /* embed.chord: one signature map */

    enum cel_format format; /* the body format it arrived in / will be sent in */
};

/* Fills the optional fields with Celery's defaults (group_index -1, lang "py", retries 0...). */
void cel_task_init(struct cel_task *t);

/* Decodes a delivery. Every string is copied into the arena, so the task outlives the
 * delivery buffer. On error returns CEL_E* and writes a one-line reason to err
 * (e.g. "header 'id' missing", "kwargs: map key 3 is not a string"). */
int cel_task_decode(struct cel_task *t, struct cel_arena *a, const struct cel_props *props,
                    const struct cel_table *headers, const void *body, size_t len,
                    const struct cel_limits *lim, char *err, size_t errlen);

/* Encodes t as Celery 5.2 does: the 16 headers in the spec's order (then idempotency key,
 * signature, and t->extra), properties (content type/encoding by t->format, delivery_mode 2,
 * priority, correlation_id = id, reply_to, expiration when expires is set) and the body.
 * Missing argsrepr/kwargsrepr/origin/root_id are derived (Python repr of args, gen<pid>@host,
 * the id). headers/props point into the arena; body is appended to out. */
int cel_task_encode(const struct cel_task *t, struct cel_arena *a, struct cel_props *props,
                    struct cel_table *headers, struct cel_buf *body);

/* Python repr() of a msgpack value, truncated to maxlen like saferepr (argsrepr/kwargsrepr). */
int cel_msgpack_repr(struct cel_span mp, size_t maxlen, struct cel_buf *out);

/* Checks that mp holds exactly one well-formed msgpack value within the limits: text valid
 * UTF-8, map keys strings, no ext types. The same checks the decoder applies to a body. */
int cel_msgpack_validate(struct cel_span mp, const struct cel_limits *lim, char *err,
                         size_t errlen);

/* ---- internal to the codec (message.c, repr.c, json.c, result.c); other parts use the API above.
 * A pure cursor over msgpack bytes: every read is bounds-checked, nothing is allocated. ---- */
enum cel__mp_kind {
    CEL__MP_NIL,
    CEL__MP_BOOL,
    CEL__MP_INT,  /* negative integers (i) */
    CEL__MP_UINT, /* non-negative integers (u) */
    CEL__MP_FLOAT,
    CEL__MP_STR,
    CEL__MP_BIN,
    CEL__MP_ARRAY,
    CEL__MP_MAP,
    CEL__MP_EXT,
};

struct cel__mp_tok {
    enum cel__mp_kind kind;
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double d;
    } v;
    const char *ptr; /* STR/BIN/EXT payload */
    uint32_t len;    /* STR/BIN/EXT bytes, ARRAY/MAP element count */
};

/* Reads one token (for STR/BIN/EXT also its payload) and advances *p. 0 or CEL_EDECODE. */
int cel__mp_next(const char **p, const char *end, struct cel__mp_tok *t);
/* Skips one whole value without validating its content. 0 or CEL_EDECODE. */
int cel__mp_skip(const char **p, const char *end);
/* Validates one whole value (see cel_msgpack_validate), nested `depth` levels deep already;
 * errors name `what` ("kwargs: map key 3 is not a string"). Advances *p. */
int cel__mp_check(const char **p, const char *end, const struct cel_limits *lim, size_t depth,
                  const char *what, char *err, size_t errlen);
bool cel__utf8_valid(const char *s, size_t n);
/* Python's repr() of a float ("1.0", "1e+16", "inf", "nan"); returns the length (< 32). */
size_t cel__py_float_repr(double d, char out[32]);
void cel__errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* msgpack writers (smallest encodings, as msgpack-python and msgpack-c 4.0 produce). */
int cel__mp_put_nil(struct cel_buf *b);
int cel__mp_put_bool(struct cel_buf *b, bool v);
int cel__mp_put_int(struct cel_buf *b, int64_t v);
int cel__mp_put_uint(struct cel_buf *b, uint64_t v);
int cel__mp_put_double(struct cel_buf *b, double v);
int cel__mp_put_str(struct cel_buf *b, const char *s, size_t n);
int cel__mp_put_str_hdr(struct cel_buf *b, size_t n);   /* the header only; n bytes must follow */
int cel__mp_put_cstr(struct cel_buf *b, const char *s); /* NULL -> nil */
int cel__mp_put_bin(struct cel_buf *b, const void *s, size_t n);
int cel__mp_put_array(struct cel_buf *b, size_t n);
int cel__mp_put_map(struct cel_buf *b, size_t n);

#endif
