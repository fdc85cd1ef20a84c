/* client.h: libceleriac, the client library: enqueue Celery tasks (protocol v2, msgpack or JSON)
 * on RabbitMQ with publisher confirms, read and wait for their results in Redis, revoke them,
 * and inspect or repair queues. The producer CLI is a thin layer over it; C services use it to
 * enqueue follow-up jobs.
 *
 * Ownership: everything passed in is borrowed and copied before the call returns, unless said
 * otherwise. Memory handed out (result views, dead-letter views) belongs to the client and stays
 * valid until the next call of the same family on the same client. A client is not thread-safe:
 * use one per thread.
 *
 * Connections are opened lazily: the broker on the first publish or queue operation, Redis on
 * the first result, revoke or registry operation, so `send` works while Redis is down and
 * `result` works while the broker is down. A connection failure returns CEL_ECONN and errstr
 * names which server failed (with the URL's password redacted). */
#ifndef CELERIAC_CLIENT_H
#define CELERIAC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "celeriac/celeriac.h"

struct cel_client;

#define CEL_CLIENT_DEFAULT_BROKER "amqp://guest:guest@127.0.0.1:5672/"
#define CEL_CLIENT_DEFAULT_BACKEND "redis://127.0.0.1:6379/0"

/* Body format of published messages. DEFAULT: the client's format (msgpack unless configured). */
enum cel_client_format {
    CEL_CLIENT_FMT_DEFAULT = 0,
    CEL_CLIENT_FMT_MSGPACK = 1, /* application/x-msgpack, content_encoding binary */
    CEL_CLIENT_FMT_JSON = 2,    /* application/json, utf-8 (Celery's default serializer) */
};

struct cel_client_config {
    const char *broker_url;  /* NULL: $CELERIAC_BROKER_URL, else CEL_CLIENT_DEFAULT_BROKER; a
                                comma-separated list fails over in turn */
    const char *backend_url; /* NULL: $CELERIAC_RESULT_BACKEND, else CEL_CLIENT_DEFAULT_BACKEND */
    const char *tls_ca;      /* amqps: CA bundle; NULL = $CELERIAC_TLS_CA or the system's */
    const char *tls_cert;    /* amqps: client certificate (PEM); NULL = $CELERIAC_TLS_CERT */
    const char *tls_key;     /* amqps: client key (PEM); NULL = $CELERIAC_TLS_KEY */
    bool tls_insecure;       /* amqps: no peer verification */
    enum cel_client_format format; /* default msgpack */
    int connect_timeout_ms;        /* 0 = 5000 */
    int reconnect_timeout_ms;      /* how long a flush keeps reconnecting after a connection
                                      loss before giving up; 0 = 60000 */
    size_t batch_max;              /* cel_client_add flushes by itself at this many; 0 = 500 */
    const char *queue_type;        /* declared queues: "classic" or "quorum" (must match the
                                      workers' declaration); NULL = $CELERIAC_QUEUE_TYPE */
    int max_priority;              /* > 0: x-max-priority on declared queues (same caveat);
                                      0 = $CELERIAC_MAX_PRIORITY */
    const char *signing_key_file;  /* HMAC key (mode 0600, >= 16 bytes): every published task
                                      (and every replayed dead letter) carries an
                                      x-celeriac-signature; NULL = $CELERIAC_SIGNING_KEY_FILE,
                                      unset = unsigned. A bad file fails cel_client_open() */
};

/* A Celery signature for link / link_error / chain: task name plus optional msgpack parts.
 * Encoded as {task, args, kwargs, options, subtask_type: nil, immutable}. options.queue is added
 * (the task name's first component) when absent, so Celery workers route it as ours do. */
struct cel_sig {
    const char *task;
    struct cel_span args;    /* msgpack array; len 0 = [] */
    struct cel_span kwargs;  /* msgpack map; len 0 = {} */
    struct cel_span options; /* msgpack map (queue, task_id, countdown, ...); len 0 = {} */
    bool immutable;          /* true: the parent's return value is not prepended */
};

/* Per-message options. A zeroed struct means Celery's defaults. */
struct cel_send_opts {
    const char *queue;   /* NULL: the task name's first component ("users.create" -> "users") */
    const char *task_id; /* NULL: a new uuid4 */
    double countdown;    /* > 0: run that many seconds from now */
    int64_t eta_us;      /* > 0: run at this time (us since the epoch); countdown wins */
    int64_t expires_us;  /* > 0: discard if not started by this time (us since the epoch) */
    double expires_in;   /* > 0: same, relative to now in seconds; expires_us wins */
    int priority;        /* 0..255 (AMQP priority; needs queues declared with max_priority) */
    const char *idempotency_key; /* header x-celeriac-idempotency-key */
    const struct cel_sig *link;  /* callbacks on success (embed.callbacks) */
    size_t n_link;
    const struct cel_sig *link_error; /* errbacks on failure (embed.errbacks) */
    size_t n_link_error;
    const struct cel_sig *chain; /* tasks to run after this one, in order (embed.chain);
                                    each gets options.task_id frozen when absent */
    size_t n_chain;
    bool ignore_result;
    double time_limit;       /* hard, seconds; 0 = none */
    double soft_time_limit;  /* seconds; 0 = none */
    struct cel_span headers; /* msgpack map of extra headers (str keys); len 0 = none */
    enum cel_client_format format;
    const char *parent_id; /* when enqueued from inside a job: that job's id */
    const char *root_id;   /* and its root id (NULL = the task's own id) */
};

/* Creates a client; connects nothing yet. err receives a one-line reason on failure. */
int cel_client_open(struct cel_client **c, const struct cel_client_config *cfg, char *err,
                    size_t errlen);
/* Closes the connections; unflushed messages are dropped (flush first). NULL is a no-op. */
void cel_client_free(struct cel_client *c);
/* The last error's detail, e.g. "broker amqp://guest:***@127.0.0.1:1/ unreachable: ...". */
const char *cel_client_errstr(const struct cel_client *c);
/* Connects now instead of lazily: the broker, the result backend, or both. */
int cel_client_connect(struct cel_client *c, bool broker, bool backend);

/* ---- publishing ---- */

/* Publishes one task and waits for the broker's confirm. args: msgpack array, kwargs: msgpack
 * map (len 0 = [] / {}). Delays (countdown/eta) travel through the broker's delay levels and
 * also carry the eta header, so a Celery worker understands them too. id_out (37 bytes, may be
 * NULL) receives the task id. Pending batched messages are flushed first. */
int cel_client_send(struct cel_client *c, const char *task, struct cel_span args,
                    struct cel_span kwargs, const struct cel_send_opts *o, char *id_out);
/* The same with JSON text (NULL = [] / {}). Bad JSON: CEL_EJSON, errstr names the part and the
 * position ("kwargs: line 1 column 9: ..."). */
int cel_client_send_json(struct cel_client *c, const char *task, const char *args_json,
                         const char *kwargs_json, const struct cel_send_opts *o, char *id_out);

/* Batches: add encodes the message into the pending batch (no I/O until batch_max messages are
 * pending, then it flushes by itself); flush publishes the batch with one confirm round. On a
 * connection loss the unconfirmed rest is republished after reconnecting (at-least-once: a
 * message may then be delivered twice, never lost). On an error the unconfirmed messages stay
 * pending. */
int cel_client_add(struct cel_client *c, const char *task, struct cel_span args,
                   struct cel_span kwargs, const struct cel_send_opts *o, char *id_out);
int cel_client_flush(struct cel_client *c);
/* Messages added but not yet confirmed. */
size_t cel_client_pending(const struct cel_client *c);
/* Messages confirmed by the broker since the client was opened. */
uint64_t cel_client_confirmed(const struct cel_client *c);

/* ---- results ---- */

struct cel_client_result {
    const char *task_id;
    const char *status;       /* "PENDING" when nothing is stored */
    struct cel_span result;   /* SUCCESS (and other non-exception states): msgpack value;
                                 len 0 = None */
    const char *exc_type;     /* FAILURE/RETRY/REVOKED: e.g. "ValueError"; NULL otherwise */
    const char *exc_module;   /* e.g. "builtins"; NULL when absent */
    struct cel_span exc_args; /* exc_message as a msgpack array */
    const char *exc_message;  /* str(exc) as Python prints it: the single string argument, or
                                 the repr of the arguments */
    const char *traceback;    /* NULL = none */
    int64_t date_done_us;     /* 0 = not done */
};

/* Reads the stored result (either serializer). Views are valid until the next result call. */
int cel_client_result_get(struct cel_client *c, const char *task_id, struct cel_client_result *r);
/* Waits until the result is ready (SUCCESS, FAILURE or REVOKED): 0, or CEL_ETIMEDOUT.
 * timeout_ms < 0 waits forever. */
int cel_client_result_wait(struct cel_client *c, const char *task_id, int timeout_ms,
                           struct cel_client_result *r);
/* The result as JSON text ({"id", "status", "result"} plus "exception" for failures),
 * NUL-terminated, owned by the client until the next result call. */
const char *cel_client_result_json(struct cel_client *c, const struct cel_client_result *r);
/* The result value alone as JSON text ("null" for none), owned as above. */
const char *cel_client_value_json(struct cel_client *c, const struct cel_client_result *r);

/* ---- control ---- */

/* Revokes a task: durably in Redis (workers check before running it; terminate kills a running
 * one), and by Celery's pidbox broadcast (spec 6.1) so Python Celery workers honour it too.
 * *celery_notified (may be NULL) tells whether a pidbox exchange existed to broadcast on. */
int cel_client_revoke(struct cel_client *c, const char *task_id, bool terminate,
                      bool *celery_notified);

struct cel_client_queue_info {
    uint32_t messages; /* ready messages */
    uint32_t consumers;
};
/* CEL_ENOTFOUND when the queue does not exist. */
int cel_client_queue_info(struct cel_client *c, const char *queue,
                          struct cel_client_queue_info *info);

/* Calls fn with each live worker's registry document (JSON text, len bytes). */
int cel_client_list_workers(struct cel_client *c,
                            void (*fn)(void *ctx, const char *hostname, const char *json,
                                       size_t len),
                            void *ctx);

/* ---- dead letters (<queue>.dead) ---- */

struct cel_dead_header {
    const char *key;   /* e.g. "x-celeriac-error-type" */
    const char *value; /* rendered as text */
};
struct cel_dead_letter {
    const char *id;                        /* header id (or correlation_id); "" if neither */
    const char *task;                      /* header task; "" if absent */
    const struct cel_dead_header *headers; /* the x-celeriac-* headers */
    size_t n_headers;
    size_t body_len;
};
/* Lists up to limit (0 = all) dead letters of queue without losing them: they are fetched and
 * then all returned to <queue>.dead in their order. The view passed to fn is valid during the
 * call. */
int cel_client_dead_list(struct cel_client *c, const char *queue, size_t limit,
                         void (*fn)(void *ctx, const struct cel_dead_letter *d), void *ctx);
/* Republishes dead letters to queue (confirmed) with the x-celeriac-error-*, attempt and x-death
 * headers removed, then removes them from <queue>.dead. id NULL = all; else only that task id
 * (CEL_ENOTFOUND when no dead letter has it). *replayed receives the count. */
int cel_client_dead_replay(struct cel_client *c, const char *queue, const char *id,
                           size_t *replayed);
/* Deletes every dead letter of queue. */
int cel_client_dead_purge(struct cel_client *c, const char *queue, uint32_t *purged);

#endif
