/* host.c: struct cel_host (what a handler may call) and the execution of one job. */
#include "worker/host.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/message.h"

int64_t cel__mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const struct cel_job_info *h_info(struct cel_job *job)
{
    return &job->info;
}

static const msgpack_object *h_args(struct cel_job *job)
{
    return job->args;
}

static const msgpack_object *h_kwargs(struct cel_job *job)
{
    return job->kwargs;
}

static const msgpack_object *h_arg(struct cel_job *job, size_t i, const char *name)
{
    if (i < job->args->via.array.size)
        return &job->args->via.array.ptr[i];
    if (!name)
        return NULL;
    size_t nl = strlen(name);
    const msgpack_object_map *m = &job->kwargs->via.map;
    for (uint32_t k = 0; k < m->size; k++) {
        const msgpack_object *key = &m->ptr[k].key;
        if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == nl &&
            memcmp(key->via.str.ptr, name, nl) == 0)
            return &m->ptr[k].val;
    }
    return NULL;
}

static msgpack_packer *h_result(struct cel_job *job)
{
    cel_buf_clear(&job->result);
    return &job->pk;
}

/* "pkg.mod.Cls" -> module "pkg.mod", type "Cls"; "ValueError" -> "builtins". */
static void set_exc(struct cel_job *job, int outcome, const char *exc_type, const char *fmt,
                    va_list ap)
{
    if (job->settled)
        return;
    job->settled = true;
    job->outcome = outcome;
    if (!exc_type || !*exc_type)
        exc_type = "RuntimeError";
    const char *dot = strrchr(exc_type, '.');
    if (dot && dot[1]) {
        snprintf(job->exc_module, sizeof job->exc_module, "%.*s", (int)(dot - exc_type), exc_type);
        snprintf(job->exc_type, sizeof job->exc_type, "%s", dot + 1);
    } else {
        snprintf(job->exc_module, sizeof job->exc_module, "builtins");
        snprintf(job->exc_type, sizeof job->exc_type, "%s", exc_type);
    }
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt ? fmt : "", ap);
    cel_buf_clear(&job->message);
    cel_buf_puts(&job->message, msg);
}

static int h_fail(struct cel_job *job, const char *exc_type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int h_fail(struct cel_job *job, const char *exc_type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_exc(job, CEL__OUT_FAILURE, exc_type, fmt, ap);
    va_end(ap);
    return -1;
}

static int h_retry(struct cel_job *job, double countdown, const char *exc_type, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
static int h_retry(struct cel_job *job, double countdown, const char *exc_type, const char *fmt,
                   ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool was = job->settled;
    set_exc(job, CEL__OUT_RETRY, exc_type, fmt, ap);
    va_end(ap);
    if (!was)
        job->countdown = countdown;
    return -1;
}

static int json_part(const char *json, struct cel_span *out, struct cel_buf *tmp, size_t *start)
{
    char err[128];
    *start = tmp->len;
    int rc = cel_json_to_msgpack(json, strlen(json), &cel_default_limits, tmp, err, sizeof err);
    if (rc == 0)
        out->len = tmp->len - *start;
    return rc;
}

static int h_enqueue(struct cel_job *job, const struct cel_enqueue *req)
{
    if (!req || !req->task || !*req->task)
        return CEL_EINVAL;
    struct cel__enq e = {req->task, req->queue,  req->idempotency_key,
                         req->args, req->kwargs, req->countdown};
    struct cel_buf tmp = CEL_BUF_INIT;
    size_t a0 = 0, k0 = 0;
    char verr[128];
    int rc = 0;
    if (req->args_json && !req->args.len)
        rc = json_part(req->args_json, &e.args, &tmp, &a0);
    if (rc == 0 && req->kwargs_json && !req->kwargs.len)
        rc = json_part(req->kwargs_json, &e.kwargs, &tmp, &k0);
    if (rc == 0 && req->args_json && !req->args.len)
        e.args.ptr = tmp.data + a0;
    if (rc == 0 && req->kwargs_json && !req->kwargs.len)
        e.kwargs.ptr = tmp.data + k0;
    if (rc == 0 && e.args.len &&
        cel_msgpack_validate(e.args, &cel_default_limits, verr, sizeof verr))
        rc = CEL_EINVAL;
    if (rc == 0 && e.kwargs.len &&
        cel_msgpack_validate(e.kwargs, &cel_default_limits, verr, sizeof verr))
        rc = CEL_EINVAL;
    if (rc == 0 && (rc = cel__ipc_pack_enq(&job->enq, &e)) == 0)
        job->n_enq++;
    cel_buf_free(&tmp);
    return rc;
}

static void h_log(struct cel_job *job, enum cel_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void h_log(struct cel_job *job, enum cel_log_level level, const char *fmt, ...)
{
    struct cel_log_fields f = {job->info.task, job->info.id, job->info.queue, NULL,
                               CEL_LOG_NO_DURATION};
    va_list ap;
    va_start(ap, fmt);
    cel_logv(level, &f, fmt, ap);
    va_end(ap);
}

static int h_deadline_passed(struct cel_job *job)
{
    return job->soft_deadline_us > 0 && cel__mono_us() >= job->soft_deadline_us;
}

const struct cel_host cel__host = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_host),
    .info = h_info,
    .args = h_args,
    .kwargs = h_kwargs,
    .arg = h_arg,
    .result = h_result,
    .fail = h_fail,
    .retry = h_retry,
    .enqueue = h_enqueue,
    .log = h_log,
    .deadline_passed = h_deadline_passed,
};

void cel__job_init(struct cel_job *job)
{
    memset(job, 0, sizeof *job);
    msgpack_packer_init(&job->pk, &job->result, cel_buf_msgpack_write);
}

void cel__job_free(struct cel_job *job)
{
    cel_buf_free(&job->result);
    cel_buf_free(&job->message);
    cel_buf_free(&job->enq);
}

static void reset(struct cel_job *job)
{
    cel_buf_clear(&job->result);
    cel_buf_clear(&job->message);
    cel_buf_clear(&job->enq);
    job->n_enq = 0;
    job->settled = false;
    job->outcome = CEL__OUT_SUCCESS;
    job->countdown = 0;
}

static void fail_now(struct cel_job *job, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_now(struct cel_job *job, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_exc(job, CEL__OUT_FAILURE, type, fmt, ap);
    va_end(ap);
}

static void run_handler(struct cel_job *job)
{
    const struct cel__task_entry *e = job->entry;
    if (!e) {
        fail_now(job, "celery.exceptions.NotRegistered", "%s", job->info.task);
        return;
    }
    if (e->slot->init_rc != 0) {
        fail_now(job, "RuntimeError", "service %s is unavailable in this worker: init() failed",
                 e->slot->svc->name);
        return;
    }
    int rc = e->def->handler(&cel__host, job, e->slot->state);
    if (rc < 0 && !job->settled)
        fail_now(job, "RuntimeError", "handler %s returned %d", e->name, rc);
    if (!job->settled && job->max_result && job->result.len > job->max_result) {
        size_t n = job->result.len;
        cel_buf_free(&job->result); /* give the memory back now, not after the next job */
        fail_now(job, "celeriac.ResultTooLarge",
                 "handler %s returned a result of %zu bytes, over the worker's "
                 "--max-result-size of %zu bytes",
                 e->name, n, job->max_result);
        return;
    }
    char verr[128];
    if (!job->settled && job->result.len &&
        cel_msgpack_validate(cel_buf_span(&job->result), &cel_default_limits, verr, sizeof verr) <
            0)
        fail_now(job, "celeriac.InvalidResult",
                 "handler %s packed a result that is not exactly one valid msgpack value", e->name);
}

void cel__job_execute(struct cel_job *job, struct cel__reply *r)
{
    reset(job);
    int64_t t0 = cel_mono_us();
    run_handler(job);
    memset(r, 0, sizeof *r);
    r->wall_us = cel_mono_us() - t0;
    r->outcome = job->settled ? job->outcome : CEL__OUT_SUCCESS;
    if (r->outcome == CEL__OUT_SUCCESS) {
        r->result = cel_buf_span(&job->result);
    } else {
        r->exc_type = job->exc_type;
        r->exc_module = job->exc_module;
        r->message = job->message.data ? job->message.data : "";
        r->countdown = job->countdown;
    }
    r->enq_raw = cel_buf_span(&job->enq);
    r->n_enq = job->n_enq;
}
