/* fake_host.h: an in-process host for unit tests of service handlers. It implements every
 * struct cel_host function: arguments come from msgpack (or JSON) built by the test, the result
 * goes to a buffer, and fail/retry/enqueue/log calls are recorded for assertions. */
#ifndef CEL_TESTS_FAKE_HOST_H
#define CEL_TESTS_FAKE_HOST_H

#include <stddef.h>

#include "celeriac/service.h"

/* Returned by fake_job_run() when a handler broke the ABI contract (see fake_job_run). */
#define FAKE_EPROTOCOL (-9999)

/* The job a handler sees. Set info fields and deadline before running; read the rest after. */
struct cel_job {
    struct cel_job_info info;
    int deadline; /* what deadline_passed() returns */

    /* Arguments: pack into these (an array and a map), or use fake_job_*_json(). */
    msgpack_sbuffer args_buf, kwargs_buf;
    msgpack_packer args_pk, kwargs_pk;

    /* Outcome. */
    msgpack_sbuffer result_buf;
    int failed;       /* fail() was called, or retry() past max_retries */
    int retried;      /* retry() was called and granted */
    double countdown; /* retry()'s countdown */
    char exc_type[128];
    char exc_message[1024];
    int enqueued; /* number of enqueue() calls; the last one is kept below */
    char enqueue_task[200];
    msgpack_sbuffer enqueue_args;
    int logged;
    char last_log[1024];
    const char *violation; /* why fake_job_run() returned FAKE_EPROTOCOL; static string */

    /* Internal. */
    msgpack_packer result_pk;
    msgpack_unpacked args_u, kwargs_u;
    msgpack_object empty_args, empty_kwargs;
    char *result_json;
    char id_buf[64];
};

struct fake_service {
    void *dl;
    const struct cel_service *svc;
    void *state;
    char errstr[512];
};

/* The host table (valid for the life of the process). */
const struct cel_host *fake_host(void);

/* Opens a .so, checks its descriptor and calls init(). Returns 0, or -1 with s->errstr set.
 * fake_service_close() calls fini() and dlclose()s; safe on a zeroed or failed struct. */
int fake_service_open(struct fake_service *s, const char *path);
void fake_service_close(struct fake_service *s);
/* The task named name, or NULL. */
const struct cel_task_def *fake_service_task(const struct fake_service *s, const char *name);

/* A job for task (borrowed; must outlive the job), id "fake-<n>", retries 0, max_retries 3. */
void fake_job_init(struct cel_job *j, const char *task);
void fake_job_free(struct cel_job *j);
/* Replaces the arguments with JSON text: an array for args, an object for kwargs. 0 or -1. */
int fake_job_args_json(struct cel_job *j, const char *json);
int fake_job_kwargs_json(struct cel_job *j, const char *json);

/* Runs j->info.task's handler of s and returns what the handler returned, or FAKE_EPROTOCOL
 * (with j->violation) when the handler broke the contract: returned 0 after fail/retry, returned
 * < 0 without them, or packed anything but exactly one value. Run a job once. */
int fake_job_run(struct fake_service *s, struct cel_job *j);
/* fake_job_init + args JSON (NULL = []) + kwargs JSON (NULL = {}) + fake_job_run. */
int fake_call(struct fake_service *s, struct cel_job *j, const char *task, const char *args,
              const char *kwargs);

/* The result as compact JSON (owned by j), "null" when nothing was packed. */
const char *fake_job_result_json(struct cel_job *j);

#endif
