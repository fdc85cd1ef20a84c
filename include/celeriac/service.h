/* service.h: the handler ABI between the worker and a service shared object.
 *
 * A service is one folder in services/ built into one .so that exports
 *
 *     const struct cel_service *celeriac_service(void);
 *
 * (CEL_SERVICE_EXPORT below writes it). The worker hands every handler a table of host
 * functions, so a service links against nothing of the worker: it needs only this header and
 * msgpack-c's headers (msgpack_object and the inline msgpack_pack_* functions).
 *
 * Ownership: everything the host passes in (the host table, the job, msgpack objects, strings in
 * cel_job_info) is borrowed and valid until the handler returns, except the host table, which is
 * valid for the life of the process. Everything the service passes to the host (names, formats,
 * spans) is copied by the host before the call returns. The descriptor and its task table must be
 * static: the host reads them for as long as the .so is loaded. */
#ifndef CELERIAC_SERVICE_H
#define CELERIAC_SERVICE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "celeriac/celeriac.h"

/* Bumped on any incompatible change to the structs below. */
#define CEL_SERVICE_ABI 1
#define CEL_SERVICE_SYMBOL "celeriac_service"

struct cel_job; /* opaque; owned by the host */

enum cel_log_level { CEL_LOG_DEBUG = 0, CEL_LOG_INFO = 1, CEL_LOG_WARNING = 2, CEL_LOG_ERROR = 3 };

/* What a handler may know about the job it runs. */
struct cel_job_info {
    const char *id;
    const char *task;
    const char *root_id;   /* NULL when absent */
    const char *parent_id; /* NULL when absent */
    const char *group;     /* NULL when absent */
    const char *queue;     /* the queue it was consumed from */
    const char *hostname;  /* the worker's node name */
    int64_t retries;       /* how many times it was retried before this run */
    int64_t max_retries;   /* the effective limit for this run; -1 = unlimited */
    int redelivered;       /* 1 when the broker redelivered it */
};

/* A follow-up job to enqueue. The host publishes it through the broker (with confirms) after
 * the handler returns and before the current job is acked, so a follow-up is never lost and
 * never sent for a job that will run again because it was not acked. */
struct cel_enqueue {
    const char *task;            /* required */
    const char *queue;           /* NULL = the task name's first component */
    struct cel_span args;        /* msgpack array; len 0 = [] */
    struct cel_span kwargs;      /* msgpack map; len 0 = {} */
    const char *args_json;       /* alternative to args: JSON array text */
    const char *kwargs_json;     /* alternative to kwargs: JSON object text */
    double countdown;            /* seconds; 0 = now */
    const char *idempotency_key; /* NULL = none */
};

struct cel_host {
    uint32_t abi;  /* CEL_SERVICE_ABI of the worker */
    uint32_t size; /* sizeof(struct cel_host) in the worker; fields past it are absent */

    const struct cel_job_info *(*info)(struct cel_job *job);
    /* The task's positional arguments (always an array) and keyword arguments (always a map). */
    const msgpack_object *(*args)(struct cel_job *job);
    const msgpack_object *(*kwargs)(struct cel_job *job);
    /* Positional argument i if present, else the keyword argument name (may be NULL), else NULL. */
    const msgpack_object *(*arg)(struct cel_job *job, size_t i, const char *name);

    /* A packer for the return value. Pack exactly one value; not calling it returns None. */
    msgpack_packer *(*result)(struct cel_job *job);

    /* Fails the job with a Python-style exception: exc_type like "ValueError" (exc_module
     * "builtins" unless exc_type contains a '.', e.g. "myapp.errors.Conflict"). Returns a
     * negative value for the handler to return. */
    int (*fail)(struct cel_job *job, const char *exc_type, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    /* Asks for a retry after countdown seconds (< 0 = the task's backoff policy). If the retry
     * limit is reached the job fails with this exception instead. Return its value. */
    int (*retry)(struct cel_job *job, double countdown, const char *exc_type, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
    /* Schedules a follow-up job (see struct cel_enqueue). 0 or a negative CEL_E* code. */
    int (*enqueue)(struct cel_job *job, const struct cel_enqueue *req);

    void (*log)(struct cel_job *job, enum cel_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    /* 1 once the soft time limit has passed: the handler should return soon. */
    int (*deadline_passed)(struct cel_job *job);

    void *reserved[8];
};

/* A handler returns 0 on success (the packed result, or None) or the value of fail()/retry().
 * state is what the service's init() stored (NULL without init). */
typedef int (*cel_handler_fn)(const struct cel_host *host, struct cel_job *job, void *state);

enum cel_task_flags {
    CEL_TASK_IGNORE_RESULT = 1u << 0, /* store no SUCCESS result, like Celery's ignore_result */
};

struct cel_task_def {
    const char *name; /* "<service>.<name>": letters, digits, '_', '.', '-'; < 200 bytes */
    cel_handler_fn handler;
    double time_limit;        /* hard limit in seconds; 0 = the worker's --time-limit */
    double soft_time_limit;   /* seconds; 0 = the worker's --soft-time-limit */
    int max_retries;          /* 0 = the default (3); < 0 = unlimited */
    double retry_delay;       /* countdown when retry() passes < 0 and no backoff; 0 = 180 s */
    double retry_backoff;     /* > 0: exponential backoff base in seconds, with full jitter */
    double retry_backoff_max; /* cap of the backoff; 0 = 600 s */
    const char *rate_limit;   /* "10/s", "100/m", "1000/h"; NULL = none */
    unsigned flags;           /* enum cel_task_flags */
    void *reserved[4];
};

struct cel_service {
    uint32_t abi;  /* CEL_SERVICE_ABI */
    uint32_t size; /* sizeof(struct cel_service) */
    const char *name;
    const struct cel_task_def *tasks; /* terminated by an entry whose name is NULL */
    /* Called once per process that runs handlers (each prefork child, or the solo worker),
     * after fork. Returns 0 or a negative code (the process then refuses the service's jobs). */
    int (*init)(const struct cel_host *host, void **state);
    void (*fini)(void *state);
    void *reserved[8];
};

#define CEL_SERVICE_EXPORT(desc)                                                                   \
    const struct cel_service *celeriac_service(void);                                              \
    const struct cel_service *celeriac_service(void)                                               \
    {                                                                                              \
        return &(desc);                                                                            \
    }

#endif
