/* outcome.c: what a finished (or crashed, or refused) job leaves behind, and the flush that
 * makes it durable in the only safe order: publish (confirmed) -> store -> ack. A crash anywhere
 * in between means redelivery, never loss. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/sign.h"
#include "common/uuid.h"
#include "worker/canvas.h"
#include "worker/sup.h"

#define ATTEMPTS_TTL_S 86400
/* Finished jobs are recorded in batches: one publish, one Redis pipeline and one multiple ack
 * for all of them. A batch is flushed when nothing else is running, when it is this old, or
 * when it is this big, so an idle worker adds no latency and a busy one amortises round trips. */
#define FLUSH_DELAY_US 2000
#define FLUSH_BATCH 512

enum cel_format cel__result_format(const struct cel__sup *s, const struct cel__job *j)
{
    if (s->cfg->result_format == CEL__RESFMT_MSGPACK)
        return CEL_FMT_MSGPACK;
    if (s->cfg->result_format == CEL__RESFMT_JSON)
        return CEL_FMT_JSON;
    return j->decoded ? j->t.format : CEL_FMT_MSGPACK;
}

static void *arena_grow(struct cel_arena *a, void *old, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap)
        return old;
    size_t nc = *cap ? *cap * 2 : 4;
    void *p = cel_arena_alloc(a, nc * elem);
    if (p && n)
        memcpy(p, old, n * elem);
    if (p)
        *cap = nc;
    return p;
}

static struct cel_span arena_copy(struct cel_arena *a, struct cel_span s)
{
    char *p = s.len ? cel_arena_alloc(a, s.len) : NULL;
    if (p)
        memcpy(p, s.ptr, s.len);
    return (struct cel_span){p, p ? s.len : 0};
}

static int add_put(struct cel__job *j, const char *task_id, struct cel_span meta)
{
    struct cel_store_put *p = arena_grow(&j->arena, j->puts, j->n_puts, &j->cap_puts, sizeof *p);
    if (!p)
        return CEL_ENOMEM;
    j->puts = p;
    struct cel_span m = arena_copy(&j->arena, meta);
    if (!m.ptr)
        return CEL_ENOMEM;
    p[j->n_puts++] = (struct cel_store_put){task_id, m, 0};
    return 0;
}

static int add_pub(struct cel__job *j, const struct cel_publish *pub)
{
    struct cel_publish *p = arena_grow(&j->arena, j->pubs, j->n_pubs, &j->cap_pubs, sizeof *p);
    if (!p)
        return CEL_ENOMEM;
    j->pubs = p;
    p[j->n_pubs++] = *pub;
    return 0;
}

/* Encodes and records a result meta for task_id (the job's own id carries group/parent). */
static int store_meta(struct cel__sup *s, struct cel__job *j, const char *task_id,
                      struct cel_result *r)
{
    bool own = strcmp(task_id, j->t.id) == 0;
    r->task_id = task_id;
    r->group_id = own ? j->t.group : NULL;
    r->parent_id = own ? j->t.parent_id : NULL;
    r->extra = own ? j->extra : (struct cel_span){NULL, 0};
    r->date_done = cel_state_ready(r->status) ? cel_now_us() : 0;
    cel_buf_clear(&s->scratch);
    int rc = cel_result_encode(r, cel__result_format(s, j), &s->scratch);
    if (rc < 0 || (rc = add_put(j, task_id, cel_buf_span(&s->scratch))) < 0)
        return rc;
    if (own && r->date_done)
        j->idem_meta = j->puts[j->n_puts - 1].meta;
    return 0;
}

/* ignore_result: nothing is stored, but an idempotency key still needs the final meta. */
static void idem_meta_only(struct cel__sup *s, struct cel__job *j, struct cel_result *r)
{
    r->task_id = j->t.id;
    r->date_done = cel_now_us();
    cel_buf_clear(&s->scratch);
    if (cel_result_encode(r, cel__result_format(s, j), &s->scratch) == 0)
        j->idem_meta = arena_copy(&j->arena, cel_buf_span(&s->scratch));
}

void cel__outcome_store_exc(struct cel__sup *s, struct cel__job *j, const char *status,
                            const struct cel_exc *exc)
{
    struct cel_result r = {.status = status, .exc = exc};
    if (store_meta(s, j, j->t.id, &r) < 0)
        cel_log_error("cannot encode the %s result of %s", status, j->t.id);
}

int cel__outcome_publish_task(struct cel__sup *s, struct cel__job *j, const struct cel_task *t,
                              const char *queue, uint32_t delay_s)
{
    struct cel_props *props = cel_arena_calloc(&j->arena, sizeof *props);
    struct cel_table *headers = cel_arena_calloc(&j->arena, sizeof *headers);
    if (!props || !headers)
        return CEL_ENOMEM;
    /* a copy of the job's task carries its old signature: never republish that one */
    struct cel_task unsigned_t = *t;
    unsigned_t.signature = NULL;
    cel_buf_clear(&s->scratch);
    int rc = cel_task_encode(&unsigned_t, &j->arena, props, headers, &s->scratch);
    if (rc < 0)
        return rc;
    struct cel_span body = arena_copy(&j->arena, cel_buf_span(&s->scratch));
    if (!body.ptr)
        return CEL_ENOMEM;
    if (s->cfg->signing_key_len &&
        (rc = cel_sign_headers(&unsigned_t, body, s->cfg->signing_key, s->cfg->signing_key_len,
                               &j->arena, headers)) < 0)
        return rc;
    struct cel_publish p = {"", queue, props, headers, body, delay_s, false};
    return add_pub(j, &p);
}

/* ---- dead letters ---- */

static struct cel_field field_str(struct cel_arena *a, const char *k, const char *v)
{
    const char *c = cel_arena_strdup(a, v ? v : "");
    return (struct cel_field){{k, strlen(k)}, cel_value_str(c ? c : "", c ? strlen(c) : 0)};
}

void cel__outcome_dead_letter(struct cel__sup *s, struct cel__job *j, const char *etype,
                              const char *emsg, int64_t attempts, int sig)
{
    size_t n = j->d.headers.n;
    struct cel_field *f = cel_arena_alloc(&j->arena, (n + 6) * sizeof *f);
    size_t ql = strlen(j->d.queue) + 6;
    char *dq = cel_arena_alloc(&j->arena, ql);
    if (!f || !dq) {
        cel_log_error("out of memory building a dead letter");
        return;
    }
    if (n)
        memcpy(f, j->d.headers.items, n * sizeof *f);
    char when[33];
    cel_iso8601_format(cel_now_us(), 1, when);
    f[n++] = field_str(&j->arena, "x-celeriac-error-type", etype);
    f[n++] = field_str(&j->arena, "x-celeriac-error-message", emsg);
    f[n++] = field_str(&j->arena, "x-celeriac-error-worker", s->cfg->hostname);
    f[n++] = field_str(&j->arena, "x-celeriac-error-time", when);
    f[n++] = (struct cel_field){CEL_SPAN_LIT("x-celeriac-error-attempts"), cel_value_int(attempts)};
    if (sig)
        f[n++] = (struct cel_field){CEL_SPAN_LIT("x-celeriac-error-signal"), cel_value_int(sig)};
    struct cel_table *h = cel_arena_alloc(&j->arena, sizeof *h);
    if (!h)
        return;
    *h = (struct cel_table){f, n};
    snprintf(dq, ql, "%s.dead", j->d.queue);
    struct cel_publish p = {"", dq, &j->d.props, h, j->d.body, 0, true};
    if (add_pub(j, &p) < 0)
        cel_log_error("out of memory building a dead letter");
    else
        cel__metrics_dead_letter(s);
}

/* ---- outcomes ---- */

static void log_outcome(struct cel__sup *s, struct cel__job *j, enum cel_log_level lvl,
                        const char *outcome, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void log_outcome(struct cel__sup *s, struct cel__job *j, enum cel_log_level lvl,
                        const char *outcome, const char *fmt, ...)
{
    j->outcome = outcome;
    if (!cel_log_enabled(lvl))
        return;
    double ms = j->started_us ? (double)(cel_mono_us() - j->started_us) / 1000.0 : -1;
    struct cel_log_fields f = {j->t.task, j->t.id, j->d.queue, outcome, ms};
    va_list ap;
    va_start(ap, fmt);
    cel_logv(lvl, &f, fmt, ap);
    va_end(ap);
}

static const char *default_queue(struct cel_arena *a, const char *task)
{
    const char *dot = strchr(task, '.');
    return dot ? cel_arena_strndup(a, task, (size_t)(dot - task)) : task;
}

static uint32_t delay_of(double seconds)
{
    if (!(seconds > 0))
        return 0;
    double c = ceil(seconds);
    return c >= (double)((1u << 28) - 1) ? (1u << 28) - 1 : (uint32_t)c;
}

static int publish_enqueue(struct cel__sup *s, struct cel__job *j, const struct cel__enq *e)
{
    struct cel_task t;
    cel_task_init(&t);
    char *id = cel_arena_alloc(&j->arena, 37);
    if (!id)
        return CEL_ENOMEM;
    cel_uuid4(id);
    t.task = e->task;
    t.id = id;
    t.args = e->args.len ? e->args : CEL_SPAN_LIT("\x90");
    t.kwargs = e->kwargs.len ? e->kwargs : CEL_SPAN_LIT("\x80");
    t.root_id = j->t.root_id ? j->t.root_id : j->t.id;
    t.parent_id = j->t.id;
    t.origin = s->origin;
    t.format = j->t.format;
    t.idempotency_key = e->idempotency_key;
    if (e->countdown > 0)
        t.eta = cel_now_us() + (int64_t)(e->countdown * 1e6);
    const char *q = e->queue ? e->queue : default_queue(&j->arena, e->task);
    if (!q)
        return CEL_ENOMEM;
    return cel__outcome_publish_task(s, j, &t, q, delay_of(e->countdown));
}

static int publish_outbox(struct cel__sup *s, struct cel__job *j, const struct cel__outbox *o)
{
    for (size_t i = 0; i < o->n; i++) {
        int rc = cel__outcome_publish_task(s, j, &o->items[i].task, o->items[i].queue,
                                           o->items[i].delay_s);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* A chord header part: remember its entry for the chord step after the result is stored. */
static void chord_part(struct cel__sup *s, struct cel__job *j, const char *state,
                       struct cel_span result, const struct cel_exc *exc)
{
    if (!j->t.chord.len || !j->t.group)
        return;
    struct cel_buf tmp = CEL_BUF_INIT;
    int rc = 0;
    if (exc && (rc = cel_exc_pack(exc, &tmp)) == 0)
        result = cel_buf_span(&tmp);
    cel_buf_clear(&s->scratch);
    if (rc == 0)
        rc = cel__canvas_chord_entry_fmt(j->t.id, state, result, cel__result_format(s, j),
                                         &s->scratch);
    if (rc == 0)
        j->chord_entry = arena_copy(&j->arena, cel_buf_span(&s->scratch));
    else
        cel_log_error("task %s: chord entry: %s", j->t.id, cel_strerror(rc));
    cel_buf_free(&tmp);
}

static bool ignore_result(const struct cel__job *j)
{
    return j->t.ignore_result || (j->entry && (j->entry->def->flags & CEL_TASK_IGNORE_RESULT));
}

static void on_failure(struct cel__sup *s, struct cel__job *j, const struct cel_exc *exc)
{
    struct cel__outbox out;
    const char **ids = NULL;
    size_t n_ids = 0;
    cel__outbox_init(&out);
    int rc = cel__canvas_failure(&j->t, exc, s->origin, &j->arena, &out, &ids, &n_ids);
    if (rc == 0)
        rc = publish_outbox(s, j, &out);
    if (rc < 0)
        cel_log_error("task %s: canvas on failure: %s", j->t.id, cel_strerror(rc));
    struct cel_result r = {.status = CEL_STATE_FAILURE, .exc = exc};
    store_meta(s, j, j->t.id, &r);
    chord_part(s, j, CEL_STATE_FAILURE, (struct cel_span){NULL, 0}, exc);
    for (size_t i = 0; i < n_ids; i++) {
        struct cel_result rr = {.status = CEL_STATE_FAILURE, .exc = exc};
        store_meta(s, j, ids[i], &rr);
    }
    s->failed++;
}

static void canvas_failure(struct cel__sup *s, struct cel__job *j, int rc)
{
    char msg[160];
    snprintf(msg, sizeof msg, "cannot forward the task's callbacks or chain: %s%s",
             cel_strerror(rc),
             rc == CEL_EUNSUPPORTED ? " (nested group/chord signatures are not supported)" : "");
    struct cel_exc exc = {
        rc == CEL_EUNSUPPORTED ? "NotImplementedError" : "ValueError", "builtins", {NULL, 0}, msg};
    s->processed++;
    log_outcome(s, j, CEL_LOG_ERROR, "failure", "task %s: %s", j->t.id, msg);
    on_failure(s, j, &exc);
    cel__job_done(s, j, SETTLE_ACK);
}

static void on_success(struct cel__sup *s, struct cel__job *j, const struct cel__reply *rep)
{
    struct cel_span retval = rep->result.len ? rep->result : CEL_SPAN_LIT("\xc0");
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    cel__outbox_init(&out);
    int rc = cel__canvas_success(&j->t, retval, s->origin, &j->arena, &out, &children);
    if (rc < 0 && rc != CEL_ENOMEM) {
        /* a callback or chain this worker cannot build (malformed, or a nested group/chord):
         * a permanent error, so the job fails instead of being requeued forever */
        cel_buf_free(&children);
        canvas_failure(s, j, rc);
        return;
    }
    if (rc == 0)
        rc = publish_outbox(s, j, &out);
    for (uint32_t i = 0; rc == 0 && i < rep->n_enq; i++)
        rc = publish_enqueue(s, j, &rep->enq[i]);
    if (rc < 0) {
        /* cannot build the follow-ups: retry the whole job on another delivery */
        cel_log_error("task %s: follow-ups: %s; requeueing", j->t.id, cel_strerror(rc));
        cel_buf_free(&children);
        j->n_pubs = 0;
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    struct cel_span kids = arena_copy(&j->arena, cel_buf_span(&children));
    cel_buf_free(&children);
    struct cel_result r = {.status = CEL_STATE_SUCCESS, .result = retval, .children = kids};
    if (!ignore_result(j))
        store_meta(s, j, j->t.id, &r);
    else if (j->idem_token)
        idem_meta_only(s, j, &r);
    chord_part(s, j, CEL_STATE_SUCCESS, retval, NULL);
    log_outcome(s, j, CEL_LOG_DEBUG, "success", "task succeeded");
    cel__job_done(s, j, SETTLE_ACK);
}

static double retry_countdown(const struct cel__job *j, double asked)
{
    if (asked >= 0)
        return asked;
    const struct cel_task_def *d = j->entry->def;
    if (d->retry_backoff > 0) {
        double cap = d->retry_backoff_max > 0 ? d->retry_backoff_max : 600;
        double top = d->retry_backoff * pow(2.0, (double)(j->t.retries < 60 ? j->t.retries : 60));
        if (top > cap)
            top = cap;
        return top * ((double)random() / ((double)RAND_MAX + 1.0)); /* full jitter */
    }
    return d->retry_delay > 0 ? d->retry_delay : 180;
}

static void on_retry(struct cel__sup *s, struct cel__job *j, const struct cel__reply *rep,
                     const struct cel_exc *exc)
{
    int m = j->entry->def->max_retries;
    int64_t max = m == 0 ? 3 : m;
    if (max >= 0 && j->t.retries >= max) {
        log_outcome(s, j, CEL_LOG_WARNING, "failure", "retry limit (%lld) reached: %s: %s",
                    (long long)max, exc->type, exc->message);
        on_failure(s, j, exc);
        cel__job_done(s, j, SETTLE_ACK);
        return;
    }
    double countdown = retry_countdown(j, rep->countdown);
    struct cel_task nt = j->t;
    nt.retries = j->t.retries + 1;
    nt.eta = cel_now_us() + (int64_t)(countdown * 1e6);
    nt.parent_id = j->t.id;
    nt.origin = s->origin;
    int rc = cel__outcome_publish_task(s, j, &nt, j->d.queue, delay_of(countdown));
    if (rc < 0) {
        cel_log_error("task %s: cannot build the retry: %s", j->t.id, cel_strerror(rc));
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    struct cel_result r = {.status = CEL_STATE_RETRY, .exc = exc};
    store_meta(s, j, j->t.id, &r);
    s->retried++;
    log_outcome(s, j, CEL_LOG_INFO, "retry", "retry %lld in %.3f s: %s: %s", (long long)nt.retries,
                countdown, exc->type, exc->message);
    cel__job_done(s, j, SETTLE_ACK);
}

static void pack_str(msgpack_packer *pk, const char *v)
{
    size_t n = strlen(v);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, v, n);
}

/* The job's resource use as extra result fields: {"celeriac": {cpu_ms, maxrss_kb, worker,
 * duration_ms}} (Celery ignores keys it does not know). */
static void usage_extra(struct cel__sup *s, struct cel__job *j, const struct cel__reply *r)
{
    cel__metrics_usage(s, j, r);
    cel_buf_clear(&s->scratch);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s->scratch, cel_buf_msgpack_write);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "celeriac");
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "cpu_ms");
    msgpack_pack_double(&pk, (double)(r->utime_us + r->stime_us) / 1000.0);
    pack_str(&pk, "maxrss_kb");
    msgpack_pack_int64(&pk, r->maxrss_kb);
    pack_str(&pk, "worker");
    pack_str(&pk, s->cfg->hostname);
    pack_str(&pk, "duration_ms");
    msgpack_pack_double(&pk, j->started_us ? (double)(cel_mono_us() - j->started_us) / 1000.0 : 0);
    j->extra = arena_copy(&j->arena, cel_buf_span(&s->scratch));
}

void cel__outcome_reply(struct cel__sup *s, struct cel__job *j, const struct cel__reply *r)
{
    s->processed++;
    if (j->entry) { /* learn how long the task takes (pool.c batches only fast ones) */
        struct cel__task_stat *st = j->entry->stat;
        st->avg_wall_us = st->avg_wall_us ? st->avg_wall_us + (r->wall_us - st->avg_wall_us) / 8
                                          : (r->wall_us > 0 ? r->wall_us : 1);
    }
    usage_extra(s, j, r);
    if (r->outcome == CEL__OUT_SUCCESS) {
        on_success(s, j, r);
        return;
    }
    struct cel_exc exc = {r->exc_type, r->exc_module, {NULL, 0}, r->message};
    if (r->outcome == CEL__OUT_RETRY) {
        on_retry(s, j, r, &exc);
        return;
    }
    log_outcome(s, j, CEL_LOG_WARNING, "failure", "task failed: %s: %s", exc.type, exc.message);
    on_failure(s, j, &exc);
    cel__job_done(s, j, SETTLE_ACK);
}

/* ---- a child died while running the job ---- */

static void describe_exit(int status, char *out, size_t n)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *abbrev = sigabbrev_np(sig);
        snprintf(out, n, "signal %d (SIG%s)", sig, abbrev ? abbrev : "?");
    } else {
        snprintf(out, n, "exitcode %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
}

static void time_limit_exceeded(struct cel__sup *s, struct cel__job *j)
{
    char args[16];
    args[0] = (char)0x91; /* [hard_limit] as Celery's TimeLimitExceeded(1.0,) */
    args[1] = (char)0xcb;
    uint64_t bits;
    double d = j->hard_limit_s;
    memcpy(&bits, &d, sizeof bits);
    for (int i = 0; i < 8; i++)
        args[2 + i] = (char)(bits >> (56 - 8 * i));
    struct cel_exc exc = {"TimeLimitExceeded", "celery.exceptions", {args, 10}, NULL};
    char msg[64];
    snprintf(msg, sizeof msg, "TimeLimitExceeded(%g,)", j->hard_limit_s);
    exc.message = msg;
    s->processed++;
    log_outcome(s, j, CEL_LOG_ERROR, "failure",
                "hard time limit (%g s) exceeded: child killed, dead-lettered", j->hard_limit_s);
    on_failure(s, j, &exc);
    /* DESIGN section 4: a job killed at its hard limit is kept for replay, like other kills */
    cel__outcome_dead_letter(s, j, "TimeLimitExceeded", msg, 1, SIGKILL);
    cel__job_done(s, j, SETTLE_ACK);
}

static void terminated(struct cel__sup *s, struct cel__job *j)
{
    struct cel_exc exc = {"TaskRevokedError", "celery.exceptions", {NULL, 0}, "terminated"};
    log_outcome(s, j, CEL_LOG_WARNING, "revoked", "revoked task terminated");
    cel__outcome_store_exc(s, j, CEL_STATE_REVOKED, &exc);
    cel__job_done(s, j, SETTLE_ACK);
}

void cel__outcome_crash(struct cel__sup *s, struct cel__job *j, int status)
{
    if (j->kill == KILL_TIMELIMIT) {
        time_limit_exceeded(s, j);
        return;
    }
    if (j->kill == KILL_REVOKED) {
        terminated(s, j);
        return;
    }
    char how[64], msg[256];
    describe_exit(status, how, sizeof how);
    int64_t attempts = 0;
    int rc = cel_store_attempt_incr(s->store, j->t.id, ATTEMPTS_TTL_S, &attempts);
    if (rc < 0 || attempts < s->cfg->max_crashes) {
        log_outcome(s, j, CEL_LOG_ERROR, "crash",
                    "child crashed (%s), attempt %lld of %d: "
                    "requeued",
                    how, (long long)attempts, s->cfg->max_crashes);
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    snprintf(msg, sizeof msg, "Worker exited prematurely: %s Job: %s.", how, j->t.id);
    log_outcome(s, j, CEL_LOG_ERROR, "failure", "%s (%lld crashes): dead-lettered", msg,
                (long long)attempts);
    struct cel_exc exc = {"WorkerLostError", "billiard.exceptions", {NULL, 0}, msg};
    s->processed++;
    on_failure(s, j, &exc);
    cel__outcome_dead_letter(s, j, "WorkerLostError", msg, attempts,
                             WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    cel__job_done(s, j, SETTLE_ACK);
}

/* ---- the flush: publish -> store -> settle, batched over every finished job ---- */

void cel__job_done(struct cel__sup *s, struct cel__job *j, enum job_settle settle)
{
    cel__metrics_job_done(s, j);
    j->settle = settle;
    j->state = J_DONE;
    j->stage = STAGE_PUBLISH;
    j->next = NULL;
    if (s->dtail)
        s->dtail->next = j;
    else
        s->dhead = j;
    s->dtail = j;
    if (s->n_done++ == 0)
        s->flush_due_us = cel_mono_us() + FLUSH_DELAY_US;
}

static void *grow_scratch(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *np = realloc(p, nc * elem);
    if (np)
        *cap = nc;
    return np;
}

static void retry_later(struct cel__sup *s, const char *what, int rc)
{
    int ms = cel_backoff_ms(s->flush_attempt < 16 ? s->flush_attempt : 16, 100, 5000);
    if (s->flush_attempt++ == 0 || cel_log_enabled(CEL_LOG_DEBUG))
        cel_log_warning("%s failed (%s); holding finished jobs and retrying", what,
                        cel_strerror(rc));
    s->flush_retry_at_us = cel_mono_us() + (int64_t)ms * 1000;
}

static int flush_publish(struct cel__sup *s)
{
    size_t n = 0;
    for (struct cel__job *j = s->dhead; j; j = j->next) {
        if (j->stage != STAGE_PUBLISH)
            continue;
        if (cel__job_void(s, j) || !j->n_pubs) { /* a void delivery will be redelivered */
            j->stage = j->settle == SETTLE_REQUEUE ? STAGE_SETTLE : STAGE_STORE;
            continue;
        }
        if (!s->connected)
            continue;
        if (!(s->pubbuf =
                  grow_scratch(s->pubbuf, &s->cap_pubbuf, n + j->n_pubs, sizeof *s->pubbuf)))
            return CEL_ENOMEM;
        memcpy(s->pubbuf + n, j->pubs, j->n_pubs * sizeof *j->pubs);
        n += j->n_pubs;
    }
    if (!n)
        return 0;
    size_t confirmed = 0;
    int rc = s->bc->publish(s->broker, s->pubbuf, n, &confirmed);
    size_t seen = 0;
    for (struct cel__job *j = s->dhead; j; j = j->next) {
        if (j->stage != STAGE_PUBLISH || !j->n_pubs || cel__job_void(s, j) || !s->connected)
            continue;
        seen += j->n_pubs;
        if (rc == 0 || seen <= confirmed)
            j->stage = STAGE_STORE;
    }
    return rc;
}

static int flush_store(struct cel__sup *s)
{
    size_t n = 0;
    for (struct cel__job *j = s->dhead; j; j = j->next) {
        if (j->stage != STAGE_STORE)
            continue;
        if (!(s->putbuf =
                  grow_scratch(s->putbuf, &s->cap_putbuf, n + j->n_puts + 1, sizeof *s->putbuf)))
            return CEL_ENOMEM;
        if (j->n_puts)
            memcpy(s->putbuf + n, j->puts, j->n_puts * sizeof *j->puts);
        n += j->n_puts;
    }
    int rc = n ? cel_store_put_results(s->store, s->putbuf, n) : 0;
    if (rc < 0)
        return rc;
    bool fault = false;
    for (struct cel__job *j = s->dhead; j; j = j->next)
        if (j->stage == STAGE_STORE) {
            cel__idem_finish(s, j);
            j->stage = j->chord_entry.len && j->settle == SETTLE_ACK ? STAGE_CHORD : STAGE_SETTLE;
            fault |= s->fault_kill_before_ack && j->decoded && j->started_us &&
                     strcmp(j->t.task, s->fault_kill_before_ack) == 0; /* a job that ran */
        }
    if (fault) {
        cel_log_warning("CELERIAC_FAULT_KILL_BEFORE_ACK: killing the worker before the ack");
        kill(getpid(), SIGKILL);
    }
    return 0;
}

/* ---- chords: after a header part's result is stored (spec 4.2) ---- */

static int chord_error(struct cel__sup *s, struct cel__job *j, const char *body_id,
                       const struct cel_exc *exc)
{
    struct cel_result r = {.status = CEL_STATE_FAILURE, .exc = exc};
    int rc = store_meta(s, j, body_id, &r);
    if (rc == 0)
        rc = cel_store_put_results(s->store, &j->puts[j->n_puts - 1], 1);
    cel_log_warning("chord %s failed: %s: %s", j->t.group, exc->type,
                    exc->message ? exc->message : "");
    /* the body's link_error, as Celery's chord_error_from_stack calls it */
    struct cel__outbox out;
    cel__outbox_init(&out);
    if (rc == 0 && cel__canvas_chord_errbacks(&j->t, s->origin, &j->arena, &out) == 0 && out.n) {
        size_t first = j->n_pubs;
        for (size_t i = 0; rc == 0 && i < out.n; i++)
            rc = cel__outcome_publish_task(s, j, &out.items[i].task, out.items[i].queue,
                                           out.items[i].delay_s);
        if (rc == 0)
            rc = s->bc->publish(s->broker, &j->pubs[first], j->n_pubs - first, NULL);
    }
    return rc;
}

static int chord_body(struct cel__sup *s, struct cel__job *j, struct cel_span parts)
{
    struct cel__outmsg *body = NULL;
    const char *body_id = NULL;
    struct cel_exc *err = NULL;
    int rc = cel__canvas_chord_body(&j->t, parts, s->origin, &j->arena, &body, &body_id, &err);
    if (rc < 0) {
        cel_log_error("chord %s: cannot build the body: %s", j->t.group, cel_strerror(rc));
        return 0; /* a malformed chord will not get better by retrying */
    }
    if (!body)
        return err && body_id ? chord_error(s, j, body_id, err) : 0;
    /* A worker killed between this publish and the cleanup below completes the chord again on
     * redelivery and publishes the body a second time; the idempotency key makes a celeriac
     * worker run it once all the same. */
    if (!body->task.idempotency_key) {
        size_t n = strlen(j->t.group) + 32;
        char *key = cel_arena_alloc(&j->arena, n);
        if (!key)
            return CEL_ENOMEM;
        snprintf(key, n, "celeriac-chord-%s", j->t.group);
        body->task.idempotency_key = key;
    }
    size_t first = j->n_pubs;
    if ((rc = cel__outcome_publish_task(s, j, &body->task, body->queue, body->delay_s)) < 0)
        return rc;
    return s->bc->publish(s->broker, &j->pubs[first], 1, NULL);
}

static int chord_step(struct cel__sup *s, struct cel__job *j)
{
    bool complete = false;
    struct cel_buf parts = CEL_BUF_INIT;
    int rc = cel_store_chord_part(s->store, j->t.group, j->t.group_index, j->chord_entry, 0,
                                  &complete, &parts);
    if (rc == 0 && complete && (rc = chord_body(s, j, cel_buf_span(&parts))) == 0)
        rc = cel_store_chord_cleanup(s->store, j->t.group);
    cel_buf_free(&parts);
    return rc;
}

static int flush_chords(struct cel__sup *s)
{
    for (struct cel__job *j = s->dhead; j; j = j->next) {
        if (j->stage != STAGE_CHORD)
            continue;
        if (cel__job_void(s, j) || !s->connected) {
            j->stage = STAGE_SETTLE; /* redelivered: the part will be counted then */
            continue;
        }
        int rc = chord_step(s, j);
        if (rc < 0)
            return rc;
        j->stage = STAGE_SETTLE;
    }
    return 0;
}

static void settle_one(struct cel__sup *s, struct cel__job *j)
{
    int rc = 0;
    if (j->settle == SETTLE_ACK)
        rc = s->bc->ack(s->broker, j->d.conn_gen, j->d.tag, false);
    else if (j->settle == SETTLE_REQUEUE)
        rc = s->bc->nack(s->broker, j->d.conn_gen, j->d.tag, false, true);
    if (rc < 0 && rc != CEL_ESTALE)
        cel_log_warning("settling delivery %llu: %s", (unsigned long long)j->d.tag,
                        cel_strerror(rc));
}

/* Acks the longest run of ready acks at the head of the unsettled list with one multiple ack. */
static void ack_prefix(struct cel__sup *s)
{
    struct cel__job *last = NULL;
    size_t n = 0;
    while (s->uhead && s->uhead->state == J_DONE && s->uhead->stage == STAGE_SETTLE &&
           s->uhead->settle == SETTLE_ACK && !cel__job_void(s, s->uhead)) {
        last = s->uhead;
        cel__unsettled_remove(s, last);
        n++;
    }
    if (!last)
        return;
    int rc = s->bc->ack(s->broker, last->d.conn_gen, last->d.tag, n > 1);
    if (rc < 0 && rc != CEL_ESTALE)
        cel_log_warning("ack: %s", cel_strerror(rc));
}

static void flush_settle(struct cel__sup *s)
{
    if (s->connected)
        ack_prefix(s);
    struct cel__job *keep = NULL, *ktail = NULL, *next;
    for (struct cel__job *j = s->dhead; j; j = next) {
        next = j->next;
        if (j->stage != STAGE_SETTLE) {
            j->next = NULL;
            if (ktail)
                ktail->next = j;
            else
                keep = j;
            ktail = j;
            continue;
        }
        if (j->unsettled && !cel__job_void(s, j) && s->connected)
            settle_one(s, j);
        cel__idem_finish(s, j); /* a requeue that skipped the store gives the lease back */
        cel__job_release(s, j);
    }
    s->dhead = keep;
    s->dtail = ktail;
    s->n_done = 0;
    for (struct cel__job *j = keep; j; j = j->next)
        s->n_done++;
    if (s->n_done)
        s->flush_due_us = cel_mono_us() + FLUSH_DELAY_US;
}

void cel__flush(struct cel__sup *s)
{
    int64_t now = cel_mono_us();
    if (!s->dhead || now < s->flush_retry_at_us)
        return;
    /* idle, or half the prefetch window finished (acks let the broker refill the window while
     * the rest runs), or big, or old */
    bool idle = s->n_busy == 0 && !s->qhead;
    bool half = s->n_done * 2 >= s->prefetch;
    if (!idle && !half && s->n_done < FLUSH_BATCH && now < s->flush_due_us && !s->draining)
        return;
    int rc = flush_publish(s);
    if (rc < 0) {
        retry_later(s, "publishing follow-ups", rc);
        return;
    }
    if ((rc = flush_store(s)) < 0) {
        retry_later(s, "storing results", rc);
        return;
    }
    if ((rc = flush_chords(s)) < 0) {
        retry_later(s, "completing a chord", rc);
        return;
    }
    s->flush_attempt = 0;
    flush_settle(s);
}
