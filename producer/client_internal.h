/* client_internal.h: libceleriac internals shared by producer/client*.c and the producer CLI:
 * JSON to msgpack conversion, send options by name (one table for CLI flags and JSONL keys),
 * JSONL job lines. All of it is pure (no I/O) and unit-tested. */
#ifndef CEL_PRODUCER_CLIENT_INTERNAL_H
#define CEL_PRODUCER_CLIENT_INTERNAL_H

#include <jansson.h>

#include "celeriac/client.h"
#include "common/arena.h"
#include "common/buf.h"

/* Appends the msgpack encoding of v (text as str, integers smallest, reals as float64). */
int cel__json_pack(const json_t *v, struct cel_buf *out);
/* Parses JSON text that must be of type want (JSON_ARRAY, JSON_OBJECT, or -1 = any) and appends
 * its msgpack to out. what names the part in err: "args: line 1 column 5: ..." */
int cel__json_text_pack(const char *text, int want, const char *what, struct cel_buf *out,
                        char *err, size_t errlen);

/* Sets the send option called name ('-' and '_' alike) from a JSON value; strings, arrays and
 * signatures are copied into a. CEL_EINVAL with a reason for an unknown name or a bad value.
 * link / link_error / chain append. */
int cel__sendopt_set(struct cel_send_opts *o, struct cel_arena *a, const char *name,
                     const json_t *v, char *err, size_t errlen);
/* The same from command-line text: numbers and ISO times as text, signatures as a task name or
 * a JSON object, headers as a JSON object. */
int cel__sendopt_set_text(struct cel_send_opts *o, struct cel_arena *a, const char *name,
                          const char *text, char *err, size_t errlen);
/* true when name is a send option. */
bool cel__sendopt_known(const char *name);

/* One line of a bulk file: {"task", "args", "kwargs", plus any send option by name}. */
struct cel__job {
    const char *task;
    struct cel_span args;   /* msgpack, in scratch */
    struct cel_span kwargs; /* msgpack, in scratch */
    struct cel_send_opts opts;
};
/* Parses one JSONL line; strings in a, msgpack in scratch (both cleared by the caller between
 * lines). CEL_EJSON / CEL_EINVAL with a one-line reason. */
int cel__job_parse(const char *line, size_t len, struct cel__job *job, struct cel_arena *a,
                   struct cel_buf *scratch, char *err, size_t errlen);

/* Parses a duration or time: "10", "1.5" (seconds) into *secs, or an ISO-8601 time into *abs_us.
 * Exactly one of the two is set; CEL_EINVAL otherwise. */
int cel__parse_time(const char *s, double *secs, int64_t *abs_us);

/* The default queue of a task: its name up to the first '.', or the whole name. */
size_t cel__default_queue_len(const char *task);

/* Appends the msgpack signature map {task, args, kwargs, options, subtask_type, immutable},
 * adding options.queue when absent and, when task_id is non-NULL, options.task_id. */
int cel__sig_pack(const struct cel_sig *s, const char *task_id, struct cel_buf *out);

/* Renders a Python str() of an exception's args (msgpack array) into out. */
int cel__exc_str(struct cel_span args, struct cel_buf *out);

#endif
