/* host.h: the host function table handed to service handlers, and the one function that runs a
 * job and turns what the handler did into a reply (used by prefork children and the solo pool). */
#ifndef CEL_WORKER_HOST_H
#define CEL_WORKER_HOST_H

#include <stdbool.h>

#include "celeriac/service.h"
#include "common/arena.h"
#include "common/buf.h"
#include "worker/ipc.h"
#include "worker/loader.h"

extern const struct cel_host cel__host;

struct cel_job {
    struct cel_job_info info;            /* strings borrowed for the run */
    const msgpack_object *args;          /* array */
    const msgpack_object *kwargs;        /* map */
    const struct cel__task_entry *entry; /* NULL = not registered in this process */
    int64_t soft_deadline_us;            /* CLOCK_MONOTONIC; 0 = none */

    /* filled while the handler runs; buffers are kept between jobs */
    struct cel_buf result;
    msgpack_packer pk;
    int outcome;  /* enum cel__outcome, set by fail()/retry() */
    bool settled; /* fail() or retry() was called */
    char exc_type[200], exc_module[200];
    struct cel_buf message;
    double countdown;
    struct cel_buf enq; /* packed cel__enq items */
    uint32_t n_enq;
    size_t max_result; /* bytes of a packed result; larger fails celeriac.ResultTooLarge; 0 = any */
};

void cel__job_init(struct cel_job *job);
void cel__job_free(struct cel_job *job);
/* Runs job->entry's handler and describes the outcome in r (spans point into job's buffers,
 * valid until the next run). rusage fields are left to the caller. */
void cel__job_execute(struct cel_job *job, struct cel__reply *r);
/* CLOCK_MONOTONIC in microseconds. */
int64_t cel__mono_us(void);

#endif
