/* intake.c: deliveries -> jobs. Reads every ready delivery, decodes it into the job's arena and
 * decides: dead letter, NotRegistered, expired, delayed (eta), or queued for a child. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/sign.h"
#include "worker/control.h"
#include "worker/sup.h"

struct cel__job *cel__job_alloc(struct cel__sup *s)
{
    struct cel__job *j = s->free_jobs;
    if (j) {
        s->free_jobs = j->next;
    } else {
        if (!(j = calloc(1, sizeof *j)))
            return NULL;
        cel_arena_init(&j->arena, 16384);
        s->n_jobs++;
    }
    struct cel_arena keep = j->arena;
    memset(j, 0, sizeof *j);
    j->arena = keep;
    j->state = J_QUEUED;
    j->settle = SETTLE_ACK;
    j->seq = ++s->next_seq;
    return j;
}

void cel__job_release(struct cel__sup *s, struct cel__job *j)
{
    if (j->unsettled)
        cel__unsettled_remove(s, j);
    cel__registry_unref(j->reg);
    j->reg = NULL;
    cel_arena_reset(&j->arena);
    j->state = J_FREE;
    j->next = s->free_jobs;
    s->free_jobs = j;
}

static void unsettled_append(struct cel__sup *s, struct cel__job *j)
{
    j->unext = NULL;
    j->uprev = s->utail;
    if (s->utail)
        s->utail->unext = j;
    else
        s->uhead = j;
    s->utail = j;
    j->unsettled = true;
}

void cel__unsettled_remove(struct cel__sup *s, struct cel__job *j)
{
    if (j->uprev)
        j->uprev->unext = j->unext;
    else
        s->uhead = j->unext;
    if (j->unext)
        j->unext->uprev = j->uprev;
    else
        s->utail = j->uprev;
    j->uprev = j->unext = NULL;
    j->unsettled = false;
}

bool cel__job_void(const struct cel__sup *s, const struct cel__job *j)
{
    return j->d.conn_gen < s->min_live_gen;
}

static void queue_push(struct cel__sup *s, struct cel__job *j)
{
    j->state = J_QUEUED;
    j->next = NULL;
    j->queued_us = cel_mono_us();
    if (s->qtail)
        s->qtail->next = j;
    else
        s->qhead = j;
    s->qtail = j;
    s->n_queued++;
}

static void log_job(enum cel_log_level lvl, const struct cel__job *j, const char *outcome,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void log_job(enum cel_log_level lvl, const struct cel__job *j, const char *outcome,
                    const char *fmt, ...)
{
    struct cel_log_fields f = {j->decoded ? j->t.task : NULL, j->decoded ? j->t.id : NULL,
                               j->d.queue, outcome, CEL_LOG_NO_DURATION};
    va_list ap;
    va_start(ap, fmt);
    cel_logv(lvl, &f, fmt, ap);
    va_end(ap);
}

static void reject_undecodable(struct cel__sup *s, struct cel__job *j, int rc, const char *why)
{
    char msg[600];
    snprintf(msg, sizeof msg, "%s: %s", cel_strerror(rc), why);
    log_job(CEL_LOG_ERROR, j, "dead-letter", "undecodable message dead-lettered: %s", msg);
    cel__outcome_dead_letter(s, j, "celeriac.DecodeError", msg, 0, 0);
    cel__job_done(s, j, SETTLE_ACK);
}

static void reject_unknown(struct cel__sup *s, struct cel__job *j)
{
    log_job(CEL_LOG_ERROR, j, "dead-letter", "received unregistered task of type '%s'", j->t.task);
    struct cel_exc exc = {"NotRegistered", "celery.exceptions", {NULL, 0}, j->t.task};
    cel__outcome_store_exc(s, j, CEL_STATE_FAILURE, &exc);
    cel__outcome_dead_letter(s, j, "NotRegistered", j->t.task, 0, 0);
    cel__job_done(s, j, SETTLE_ACK);
}

static void revoke_expired(struct cel__sup *s, struct cel__job *j)
{
    log_job(CEL_LOG_INFO, j, "revoked", "task %s expired before it ran", j->t.id);
    struct cel_exc exc = {"TaskRevokedError", "celery.exceptions", {NULL, 0}, "expired"};
    cel__outcome_store_exc(s, j, CEL_STATE_REVOKED, &exc);
    j->outcome = "revoked";
    cel__job_done(s, j, SETTLE_ACK);
}

/* eta in the future: into the broker's delay levels, unchanged, then ack (never hold it). */
static void delay_eta(struct cel__sup *s, struct cel__job *j, int64_t wait_us)
{
    uint64_t secs = (uint64_t)((wait_us + CEL_USEC_PER_SEC - 1) / CEL_USEC_PER_SEC);
    if (secs > (1u << 28) - 1)
        secs = (1u << 28) - 1;
    struct cel_publish *p = cel_arena_calloc(&j->arena, sizeof *p);
    if (!p) {
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    *p = (struct cel_publish){"",        j->d.queue,     &j->d.props, &j->d.headers,
                              j->d.body, (uint32_t)secs, false};
    j->pubs = p;
    j->n_pubs = j->cap_pubs = 1;
    j->outcome = "delayed";
    if (cel_log_enabled(CEL_LOG_DEBUG))
        log_job(CEL_LOG_DEBUG, j, "delayed", "eta in the future: delayed %llu s",
                (unsigned long long)secs);
    cel__job_done(s, j, SETTLE_ACK);
}

/* --require-signature: checked before any other use of the job (no result, no idempotency
 * claim, no canvas): a job without a valid signature is dead-lettered unrun. */
static bool signature_ok(struct cel__sup *s, struct cel__job *j)
{
    const struct cel__wcfg *cfg = s->cfg;
    char why[160];
    if (!cfg->require_signature || cel_sign_verify(&j->t, j->d.body, cfg->signing_key,
                                                   cfg->signing_key_len, why, sizeof why) == 0)
        return true;
    log_job(CEL_LOG_ERROR, j, "dead-letter", "task %s refused, not run: %s", j->t.id, why);
    cel__outcome_dead_letter(s, j, "celeriac.SignatureError", why, 0, 0);
    cel__job_done(s, j, SETTLE_ACK);
    return false;
}

static void classify(struct cel__sup *s, struct cel__job *j)
{
    char err[512] = "";
    if (j->d.defect) {
        reject_undecodable(s, j, CEL_ETOODEEP, j->d.defect);
        return;
    }
    int rc = cel_task_decode(&j->t, &j->arena, &j->d.props, &j->d.headers, j->d.body.ptr,
                             j->d.body.len, &s->limits, err, sizeof err);
    if (rc < 0) {
        reject_undecodable(s, j, rc, err);
        return;
    }
    j->decoded = true;
    if (!signature_ok(s, j))
        return;
    j->reg = cel__registry_ref(s->reg);
    if (!(j->entry = cel__registry_find(s->reg, j->t.task))) {
        reject_unknown(s, j);
        return;
    }
    int64_t now = cel_now_us();
    if (j->t.expires && now > j->t.expires) {
        revoke_expired(s, j);
        return;
    }
    if (j->t.eta && j->t.eta > now) {
        delay_eta(s, j, j->t.eta - now);
        return;
    }
    if (cel__idem_admit(s, j))
        queue_push(s, j);
}

static void intake_one(struct cel__sup *s, struct cel__job *j)
{
    s->last_gen = j->d.conn_gen;
    if (cel__control_owns(s, &j->d)) { /* consumed without acks: never settled */
        cel__control_handle(s, j);
        cel__job_release(s, j);
        return;
    }
    unsettled_append(s, j);
    if (s->draining) { /* consumer cancelled: give it back for another worker */
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    classify(s, j);
}

/* The connection died: every delivery it carried is void (RabbitMQ requeues them). Jobs not yet
 * started are dropped; running ones finish and their results are stored, without an ack. */
static void connection_lost(struct cel__sup *s, int rc)
{
    char where[256];
    cel_url_redact(s->cfg->broker, where, sizeof where);
    cel_log_error("broker connection lost (%s): %s; reconnecting to %s", cel_strerror(rc),
                  s->bc->errstr(s->broker), where);
    s->connected = false;
    s->min_live_gen = s->last_gen + 1;
    while (s->qhead) {
        struct cel__job *j = s->qhead;
        s->qhead = j->next;
        j->settle = SETTLE_REQUEUE;
        cel__idem_finish(s, j); /* give a claimed key back for the redelivery */
        cel__job_release(s, j);
    }
    s->qtail = NULL;
    s->n_queued = 0;
    while (s->uhead)
        cel__unsettled_remove(s, s->uhead);
    s->reconnect_at_us = cel_mono_us();
    s->reconnect_attempt = 0;
}

int cel__intake_drain(struct cel__sup *s)
{
    if (!s->connected)
        return 0;
    /* bounded so replies and the flush get their turn under a flood */
    for (int n = 0; n < 1024; n++) {
        struct cel__job *j = cel__job_alloc(s);
        if (!j)
            return CEL_ENOMEM;
        int rc = s->bc->next(s->broker, &j->d, &j->arena, 0);
        if (rc < 0) {
            cel__job_release(s, j);
            if (rc == CEL_ETIMEDOUT)
                return 0;
            connection_lost(s, rc);
            return rc;
        }
        intake_one(s, j);
    }
    return 0;
}
