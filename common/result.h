/* result.h: Celery result meta (celery-task-meta-<id>) encoding and decoding, msgpack and JSON.
 * Pure: no I/O. Field order as Celery's Redis backend writes it:
 * status, result, traceback, children, date_done, [group_id], [parent_id], task_id, [extras]. */
#ifndef CEL_COMMON_RESULT_H
#define CEL_COMMON_RESULT_H

#include "common/message.h"

#define CEL_STATE_PENDING "PENDING"
#define CEL_STATE_STARTED "STARTED"
#define CEL_STATE_RETRY "RETRY"
#define CEL_STATE_SUCCESS "SUCCESS"
#define CEL_STATE_FAILURE "FAILURE"
#define CEL_STATE_REVOKED "REVOKED"

/* An exception as Celery stores it with non-pickle serializers. */
struct cel_exc {
    const char *type;     /* exc_type, e.g. "ValueError" */
    const char *module;   /* exc_module, e.g. "builtins", "celery.exceptions" */
    struct cel_span args; /* exc_message: msgpack array; len 0 means [message] */
    const char *message;  /* used when args.len == 0 */
};

struct cel_result {
    const char *status;        /* one of CEL_STATE_* */
    struct cel_span result;    /* msgpack value (SUCCESS); len 0 = nil. Ignored when exc set */
    const struct cel_exc *exc; /* FAILURE/RETRY/REVOKED: encoded as the exception dict */
    const char *traceback;     /* NULL = nil */
    struct cel_span children;  /* msgpack array; len 0 = [] */
    int64_t date_done;         /* us since epoch; 0 = nil (non-ready states) */
    const char *group_id;      /* only written when non-NULL */
    const char *parent_id;     /* only written when non-NULL */
    const char *task_id;       /* required */
    struct cel_span extra; /* msgpack map of extra fields appended after task_id; len 0 = none */
};

/* Appends the encoded meta to out in the given format. */
int cel_result_encode(const struct cel_result *r, enum cel_format fmt, struct cel_buf *out);

/* Decodes a stored meta (either format; JSON is converted). Strings go into the arena; result
 * and children point into arena copies as msgpack. For exception states exc is filled. */
struct cel_result_view {
    struct cel_result r;
    struct cel_exc exc; /* valid when r.exc != NULL */
};
int cel_result_decode(struct cel_result_view *v, struct cel_arena *a, const void *data, size_t len,
                      enum cel_format fmt, char *err, size_t errlen);

/* Appends the msgpack exception dict {exc_type, exc_message, exc_module}. */
int cel_exc_pack(const struct cel_exc *e, struct cel_buf *out);

/* true for SUCCESS, FAILURE, REVOKED. */
int cel_state_ready(const char *status);

#endif
