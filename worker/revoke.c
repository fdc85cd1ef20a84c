/* revoke.c: durable revocation. Every ~250 ms the supervisor reads the revocations recorded in
 * Redis since its last poll into an in-memory hash set (loaded whole at startup, so a revoked id
 * stays revoked across restarts until its Redis TTL). A job is checked just before dispatch;
 * terminate kills the child running it. The set only grows for the life of the process: it
 * holds the ids revoked within the Redis TTL (3 h by default). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/sup.h"

#define REVOKE_POLL_US 250000

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static size_t slot_of(const struct cel__revoked *r, const char *id)
{
    size_t i = (size_t)hash_id(id) & (r->cap - 1);
    while (r->ids[i] && strcmp(r->ids[i], id) != 0)
        i = (i + 1) & (r->cap - 1);
    return i;
}

static int grow(struct cel__revoked *r)
{
    size_t nc = r->cap ? r->cap * 2 : 256;
    struct cel__revoked n = {calloc(nc, sizeof *n.ids), calloc(nc, sizeof *n.terminate), nc, 0};
    if (!n.ids || !n.terminate) {
        free(n.ids);
        free(n.terminate);
        return CEL_ENOMEM;
    }
    for (size_t i = 0; i < r->cap; i++) {
        if (!r->ids[i])
            continue;
        size_t k = slot_of(&n, r->ids[i]);
        n.ids[k] = r->ids[i];
        n.terminate[k] = r->terminate[i];
        n.n++;
    }
    free(r->ids);
    free(r->terminate);
    *r = n;
    return 0;
}

static const bool *lookup(const struct cel__revoked *r, const char *id)
{
    if (!r->n)
        return NULL;
    size_t k = slot_of(r, id);
    return r->ids[k] ? &r->terminate[k] : NULL;
}

static int terminate_running(struct cel__sup *s, const char *id)
{
    int n = 0;
    for (int i = 0; i < s->n_children; i++) {
        struct cel__child *c = &s->children[i];
        if (c->job && c->job->kill == KILL_NONE && strcmp(c->job->t.id, id) == 0) {
            c->job->kill = KILL_REVOKED;
            kill(c->pid, SIGKILL);
            cel_log_info("revoke: terminating task %s (child %d)", id, c->index);
            n++;
        }
    }
    return n;
}

int cel__revoke_add(struct cel__sup *s, const char *id, bool terminate)
{
    struct cel__revoked *r = &s->revoked;
    if ((r->n + 1) * 2 > r->cap && grow(r) < 0)
        return CEL_ENOMEM;
    size_t k = slot_of(r, id);
    if (!r->ids[k]) {
        if (!(r->ids[k] = strdup(id)))
            return CEL_ENOMEM;
        r->n++;
    }
    r->terminate[k] |= terminate;
    return terminate ? terminate_running(s, id) : 0;
}

static void on_revoked(void *ctx, const char *id, bool terminate)
{
    cel__revoke_add(ctx, id, terminate);
}

void cel__revoke_poll(struct cel__sup *s, int64_t now)
{
    if (now < s->next_revoke_poll_us)
        return;
    s->next_revoke_poll_us = now + REVOKE_POLL_US;
    int64_t latest = s->revoked_since_ms;
    int rc = cel_store_revoked_since(s->store, s->revoked_since_ms, &latest, on_revoked, s);
    if (rc < 0)
        cel_log_debug("revocation poll: %s", cel_strerror(rc));
    else
        s->revoked_since_ms = latest;
}

bool cel__revoke_check(struct cel__sup *s, struct cel__job *j)
{
    /* like Celery, expiry is checked on receipt and again right before the job runs */
    bool expired = j->t.expires && cel_now_us() > j->t.expires;
    if (!expired && !lookup(&s->revoked, j->t.id))
        return false;
    struct cel_exc exc = {
        "TaskRevokedError", "celery.exceptions", {NULL, 0}, expired ? "expired" : "revoked"};
    struct cel_log_fields f = {j->t.task, j->t.id, j->d.queue, "revoked", CEL_LOG_NO_DURATION};
    cel_log(CEL_LOG_INFO, &f, "task %s: discarded", exc.message);
    cel__outcome_store_exc(s, j, CEL_STATE_REVOKED, &exc);
    j->outcome = "revoked";
    cel__job_done(s, j, SETTLE_ACK);
    return true;
}

void cel__revoke_free(struct cel__sup *s)
{
    for (size_t i = 0; i < s->revoked.cap; i++)
        free(s->revoked.ids[i]);
    free(s->revoked.ids);
    free(s->revoked.terminate);
    memset(&s->revoked, 0, sizeof s->revoked);
}
