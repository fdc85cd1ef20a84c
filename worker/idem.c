/* idem.c: idempotency keys. A job carrying x-celeriac-idempotency-key claims the key (a lease in
 * Redis) before it is queued; a key already done makes the job copy the stored result under its
 * own id and be acked without running; a key running elsewhere sends the job back through a short
 * delay instead of holding it. The key is completed with the final meta after the result is
 * stored, and released on a retry or a requeue so the next delivery can claim it. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/sup.h"

#define IDEM_RUNNING_DELAY_S 2
#define IDEM_RENEW_EVERY_US (5 * CEL_USEC_PER_SEC)

static int lease_ms(const struct cel__sup *s, const struct cel__job *j)
{
    double hard = j->t.time_limit > 0             ? j->t.time_limit
                  : j->entry->def->time_limit > 0 ? j->entry->def->time_limit
                                                  : s->cfg->time_limit;
    /* renewed every 5 s while the job runs; the lease only has to outlive a dead worker */
    return hard > 0 ? (int)(hard * 1000) + 30000 : 30000;
}

static const char *make_token(struct cel__sup *s, struct cel__job *j)
{
    unsigned char rnd[8] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        memcpy(rnd, &j->seq, sizeof rnd < sizeof j->seq ? sizeof rnd : sizeof j->seq);
    size_t n = strlen(s->cfg->hostname) + strlen(j->t.id) + 20;
    char *t = cel_arena_alloc(&j->arena, n);
    if (t)
        snprintf(t, n, "%s/%s/%02x%02x%02x%02x%02x%02x%02x%02x", s->cfg->hostname, j->t.id, rnd[0],
                 rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    return t;
}

static void delay_unchanged(struct cel__sup *s, struct cel__job *j, uint32_t secs)
{
    struct cel_publish p = {"", j->d.queue, &j->d.props, &j->d.headers, j->d.body, secs, false};
    struct cel_publish *cp = cel_arena_alloc(&j->arena, sizeof *cp);
    if (!cp) {
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    *cp = p;
    j->pubs = cp;
    j->n_pubs = j->cap_pubs = 1;
    j->outcome = "delayed";
    cel__job_done(s, j, SETTLE_ACK);
}

/* The key is done: store its meta under this job's id (a Python waiter matches task_id). */
static void copy_done(struct cel__sup *s, struct cel__job *j, struct cel_span meta)
{
    struct cel_result_view v;
    char err[128];
    enum cel_format fmt = meta.len && meta.ptr[0] == '{' ? CEL_FMT_JSON : CEL_FMT_MSGPACK;
    int rc = cel_result_decode(&v, &j->arena, meta.ptr, meta.len, fmt, err, sizeof err);
    if (rc == 0) {
        v.r.task_id = j->t.id;
        v.r.group_id = j->t.group;
        v.r.parent_id = j->t.parent_id;
        cel_buf_clear(&s->scratch);
        rc = cel_result_encode(&v.r, cel__result_format(s, j), &s->scratch);
    }
    struct cel_store_put *p = cel_arena_alloc(&j->arena, sizeof *p);
    char *m = rc == 0 ? cel_arena_alloc(&j->arena, s->scratch.len) : NULL;
    if (!p || !m) {
        cel_log_error("idempotency key %s: stored result unreadable (%s); requeueing",
                      j->t.idempotency_key, rc < 0 ? cel_strerror(rc) : "out of memory");
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    memcpy(m, s->scratch.data, s->scratch.len);
    *p = (struct cel_store_put){j->t.id, {m, s->scratch.len}, 0};
    j->puts = p;
    j->n_puts = j->cap_puts = 1;
    struct cel_log_fields f = {j->t.task, j->t.id, j->d.queue, "duplicate", CEL_LOG_NO_DURATION};
    cel_log(CEL_LOG_INFO, &f, "idempotency key %s already done: result copied, not run",
            j->t.idempotency_key);
    j->outcome = "duplicate";
    cel__job_done(s, j, SETTLE_ACK);
}

bool cel__idem_admit(struct cel__sup *s, struct cel__job *j)
{
    const char *key = j->t.idempotency_key;
    if (!key || !*key)
        return true;
    const char *token = make_token(s, j);
    enum cel_idem_state st = CEL_IDEM_RUNNING;
    cel_buf_clear(&s->scratch);
    int rc = token ? cel_store_idem_claim(s->store, key, token, lease_ms(s, j), &st, &s->scratch)
                   : CEL_ENOMEM;
    if (rc < 0) {
        cel_log_warning("idempotency key %s: claim failed (%s); retrying in %d s", key,
                        cel_strerror(rc), IDEM_RUNNING_DELAY_S);
        delay_unchanged(s, j, IDEM_RUNNING_DELAY_S);
        return false;
    }
    if (st == CEL_IDEM_CLAIMED) {
        j->idem_token = token;
        return true;
    }
    if (st == CEL_IDEM_DONE) {
        struct cel_span meta = {cel_arena_strndup(&j->arena, s->scratch.data, s->scratch.len),
                                s->scratch.len};
        copy_done(s, j, meta);
        return false;
    }
    cel_log_debug("idempotency key %s is running elsewhere: job %s delayed %d s", key, j->t.id,
                  IDEM_RUNNING_DELAY_S);
    delay_unchanged(s, j, IDEM_RUNNING_DELAY_S);
    return false;
}

void cel__idem_finish(struct cel__sup *s, struct cel__job *j)
{
    if (!j->idem_token)
        return;
    const char *key = j->t.idempotency_key;
    int rc;
    if (j->settle == SETTLE_ACK && j->idem_meta.len)
        rc = cel_store_idem_complete(s->store, key, j->idem_token, j->idem_meta,
                                     s->cfg->result_expires);
    else
        rc = cel_store_idem_release(s->store, key, j->idem_token);
    if (rc < 0)
        cel_log_warning("idempotency key %s: %s", key, cel_strerror(rc));
    j->idem_token = NULL;
}

void cel__idem_renew(struct cel__sup *s, int64_t now)
{
    if (now < s->next_renew_us)
        return;
    s->next_renew_us = now + IDEM_RENEW_EVERY_US;
    for (int i = 0; i < s->n_children; i++) {
        struct cel__job *j = s->children[i].job;
        if (j && j->idem_token &&
            cel_store_idem_renew(s->store, j->t.idempotency_key, j->idem_token, lease_ms(s, j)) ==
                CEL_EBUSY)
            cel_log_warning("idempotency key %s: lease lost while job %s runs",
                            j->t.idempotency_key, j->t.id);
    }
}
