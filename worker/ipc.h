/* ipc.h: the frames between the supervisor and a prefork child over a socketpair.
 *
 * A frame is a 4-byte length (host byte order: both ends are the same machine) followed by one
 * msgpack array. Job frame, supervisor -> child:
 *     [seq, task, id, root_id, parent_id, group, queue, retries, max_retries, redelivered,
 *      soft_deadline_us, args, kwargs]
 * where the ids may be nil, soft_deadline_us is CLOCK_MONOTONIC microseconds (0 = none; < 0 =
 * minus the soft limit, counted from when the child starts the job, as a batch runs in turn) and
 * args/kwargs are the task's msgpack array and map inlined as they are, so the child's single
 * unpack yields them as msgpack_objects without a second decode. Reply frame, child -> supervisor:
 *     [seq, outcome, payload, enqueues, utime_us, stime_us, maxrss_kb]
 * outcome 0 = success (payload: bin with the result's msgpack bytes, or nil for None),
 * 1 = failure (payload: [exc_type, exc_module, message]), 2 = retry (payload: [exc_type,
 * exc_module, message, countdown]); enqueues is an array of
 *     [task, queue|nil, args bin|nil, kwargs bin|nil, countdown, idempotency_key|nil].
 * The same reply encoding carries solo-pool outcomes, so both pools share one outcome path. */
#ifndef CEL_WORKER_IPC_H
#define CEL_WORKER_IPC_H

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

#include "common/arena.h"
#include "common/buf.h"

#define CEL__FRAME_MAX (64u << 20)

enum cel__outcome { CEL__OUT_SUCCESS = 0, CEL__OUT_FAILURE = 1, CEL__OUT_RETRY = 2 };

struct cel__ipc_job {
    uint64_t seq;
    struct cel_span task, id, root_id, parent_id, group, queue; /* ptr NULL = nil */
    int64_t retries, max_retries;
    bool redelivered;
    int64_t soft_deadline_us;
    struct cel_span args, kwargs;                /* packing: the msgpack bytes to inline */
    const msgpack_object *args_obj, *kwargs_obj; /* unpacking: the inlined values */
};

struct cel__enq {
    const char *task, *queue, *idempotency_key; /* NUL-terminated; queue/key may be NULL */
    struct cel_span args, kwargs;               /* msgpack; len 0 = [] / {} */
    double countdown;
};

struct cel__reply {
    uint64_t seq;
    int outcome;                                 /* enum cel__outcome */
    struct cel_span result;                      /* success: msgpack bytes; len 0 = None */
    const char *exc_type, *exc_module, *message; /* failure/retry; NUL-terminated */
    double countdown;                            /* retry; < 0 = the task's policy */
    struct cel_span enq_raw;                     /* packing: the enqueue items, already packed */
    uint32_t n_enq;
    struct cel__enq *enq; /* unpacking: n_enq items */
    int64_t utime_us, stime_us, maxrss_kb;
    int64_t wall_us; /* the handler's wall time */
};

/* Starts a frame in out (reserves the length) and returns its offset for cel__frame_end. */
size_t cel__frame_begin(struct cel_buf *out);
void cel__frame_end(struct cel_buf *out, size_t start);
/* If data[0..len) starts with a whole frame: 1 and *payload (points into data), *used = its
 * total size. 0 = need more bytes. CEL_ETOOBIG for a length over CEL__FRAME_MAX. */
int cel__frame_next(const char *data, size_t len, struct cel_span *payload, size_t *used);

int cel__ipc_pack_job(struct cel_buf *out, const struct cel__ipc_job *j);
/* Unpacks into z (strings point into payload). */
int cel__ipc_unpack_job(struct cel_span payload, msgpack_zone *z, struct cel__ipc_job *j);

int cel__ipc_pack_reply(struct cel_buf *out, const struct cel__reply *r);
/* Unpacks a reply; strings (NUL-terminated) and spans are copied into a. */
int cel__ipc_unpack_reply(struct cel_span payload, msgpack_zone *z, struct cel_arena *a,
                          struct cel__reply *r);
/* Packs one enqueue item (appended to the reply's enq_raw by the host). */
int cel__ipc_pack_enq(struct cel_buf *out, const struct cel__enq *e);

#endif
