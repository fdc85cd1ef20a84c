/* canvas.h: Celery canvas semantics for a finished job (spec section 4): chain forwarding,
 * link callbacks, link_error errbacks and the chord body. Pure: it builds the messages to
 * publish and the ids to mark, and does no I/O; the supervisor publishes (with confirms) and
 * stores results, then acks. Everything is allocated in the job's arena.
 *
 * Signatures are untrusted: anything that is not a signature map with a str task, array args,
 * map kwargs and map options (or nil), or an option of the wrong type, gives CEL_EBODY.
 * Supported: plain signatures and nested chains (subtask_type 'chain', kwargs.tasks: the first
 * task is published with the rest as its chain; the chain's options.task_id names its last
 * task, its link, link_error, chord or group_id give CEL_EUNSUPPORTED, other chain-level options
 * are ignored). A group or chord as a callback, errback, chain element or chord body gives
 * CEL_EUNSUPPORTED (the caller stores a failure); Celery 5.2.6 cannot serialize a group with
 * msgpack anyway (spec 4.5). The chord body's link_error on a ChordError is built by
 * cel__canvas_chord_errbacks (below). The ChordError text formats the dependency's exception
 * args with cel_msgpack_repr (saferepr: containers nested deeper than 3 levels print as [...]). */
#ifndef CEL_WORKER_CANVAS_H
#define CEL_WORKER_CANVAS_H

#include "common/arena.h"
#include "common/buf.h"
#include "common/message.h"
#include "common/result.h"

/* One message to publish: a task (headers + body parts) and where it goes. */
struct cel__outmsg {
    const char *queue;    /* routing key on the default exchange: signature options.queue, else
                             the task name's first component ("users.create" -> "users"). This
                             is celeriac's convention (DESIGN 3); Celery would route a signature
                             without a queue through its router to task_default_queue. */
    struct cel_task task; /* fully populated: id (options.task_id or a new uuid4), root_id,
                            parent_id, group/group_index, args/kwargs/embed, format of the parent */
    uint32_t delay_s;     /* from options.countdown / options.eta, 0 = now */
};

struct cel__outbox {
    struct cel__outmsg *items;
    size_t n;
    size_t cap;
};

/* After SUCCESS with return value retval (msgpack): one message per embed.callbacks entry
 * (retval prepended to its args unless immutable) and, when embed.chain is non-empty, the next
 * element popped from its end with retval prepended, the remaining chain carried in its embed,
 * parent_id = done->id, root_id kept. children receives the msgpack array for the result meta's
 * `children` field ([[[id, nil], nil], ...]). origin is the worker's gen<pid>@host. */
int cel__canvas_success(const struct cel_task *done, struct cel_span retval, const char *origin,
                        struct cel_arena *a, struct cel__outbox *out, struct cel_buf *children);

/* After FAILURE with exc: one message per embed.errbacks entry (args = [done->id] + sig args, as
 * Celery sends errbacks it cannot call inline), and *ids / *n_ids receive the task_id of every
 * remaining chain element, which the caller marks FAILURE with the same exception. */
int cel__canvas_failure(const struct cel_task *done, const struct cel_exc *exc, const char *origin,
                        struct cel_arena *a, struct cel__outbox *out, const char ***ids,
                        size_t *n_ids);

/* The chord entry for this part, as the Redis backend stores it: msgpack
 * [1, task_id, state, result-or-exception-dict] (spec 4.2). */
int cel__canvas_chord_entry(const char *task_id, const char *state, struct cel_span result,
                            struct cel_buf *out);

/* The chord is complete: parts is the ZRANGE (msgpack array of bin/str members, each an encoded
 * entry in group_index order). On success *body is the body signature (done->chord) as a message
 * whose first argument is the list of part results; if a part failed or was revoked, *body is
 * NULL and *err_exc describes the ChordError (spec 4.2) to store as FAILURE under *body_id. */
int cel__canvas_chord_body(const struct cel_task *done, struct cel_span parts, const char *origin,
                           struct cel_arena *a, struct cel__outmsg **body, const char **body_id,
                           struct cel_exc **err_exc);

/* Outboxes passed to the functions above are appended to; one with n == 0 may be otherwise
 * uninitialised (it is initialised then). */
void cel__outbox_init(struct cel__outbox *o);

/* Added by canvas: the chord entry in the given result format. JSON entries are what a Python
 * worker configured with result_serializer='json' writes and reads in the same .j key;
 * cel__canvas_chord_body reads either kind of member. */
int cel__canvas_chord_entry_fmt(const char *task_id, const char *state, struct cel_span result,
                                enum cel_format fmt, struct cel_buf *out);

/* Added by canvas: after cel__canvas_chord_body reported a ChordError, the errbacks of the chord
 * body (its options.link_error), sent as Celery's chord_error_from_stack does: args
 * [body_id] + sig args, parent_id = body_id, a fresh group id. Nothing when it has none. */
int cel__canvas_chord_errbacks(const struct cel_task *done, const char *origin, struct cel_arena *a,
                               struct cel__outbox *out);

#endif
