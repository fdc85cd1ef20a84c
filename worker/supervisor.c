/* supervisor.c: the worker's one poll loop over the broker socket, the children's sockets, a
 * signalfd and timers; startup (store, broker, topology, pool) and warm/cold shutdown. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/control.h"
#include "worker/sup.h"

#define TICK_US 250000 /* the longest poll: timers are checked at least this often */

static int open_store(struct cel__sup *s)
{
    char err[256] = "", where[512];
    struct cel_store_opts o = {s->cfg->backend, s->cfg->result_expires, 0, 0};
    int rc = cel_store_open(&s->store, &o, err, sizeof err);
    cel_url_redact(s->cfg->backend, where, sizeof where);
    if (rc < 0)
        cel_log_error("result backend %s: %s", where, *err ? err : cel_strerror(rc));
    else
        cel__revoke_poll(s, 0); /* revocations first, before any delivery can arrive */
    return rc;
}

/* The consumers' window. Finished jobs hold their slot until their batch is stored and acked
 * (outcome.c), so with the default multiplier a prefork window has a floor that covers a batch in
 * flight: with 8 slots for 2 children the children idle while 4 results are stored and the broker
 * refills (measured: about 60% of the throughput of a 64-slot window). The queue is still shared
 * fairly: the broker hands a queue's messages round robin to consumers with room, and the
 * supervisor never gives a busy child a job. An explicit --prefetch-multiplier is taken as is. */
#define DEFAULT_MULTIPLIER 4
#define DEFAULT_MIN_WINDOW 64

static long prefetch_window(const struct cel__wcfg *cfg)
{
    long m = cfg->prefetch_multiplier > 0 ? cfg->prefetch_multiplier : DEFAULT_MULTIPLIER;
    if (cfg->pool == CEL__POOL_SOLO)
        return 64L * m;
    long w = (long)cfg->concurrency * m;
    return cfg->prefetch_multiplier > 0 || w >= DEFAULT_MIN_WINDOW ? w : DEFAULT_MIN_WINDOW;
}

static int open_broker(struct cel__sup *s)
{
    char err[256] = "", where[512];
    struct cel_broker_opts o = {.url = s->cfg->broker,
                                .queue_type =
                                    s->cfg->queue_type == CEL__QUEUE_QUORUM ? "quorum" : NULL,
                                .delivery_limit = s->cfg->delivery_limit,
                                .max_priority = s->cfg->max_priority,
                                .tls_ca = s->cfg->tls_ca,
                                .tls_cert = s->cfg->tls_cert,
                                .tls_key = s->cfg->tls_key,
                                .tls_insecure = s->cfg->tls_insecure};
    cel_url_redact(s->cfg->broker, where, sizeof where);
    if (!(s->bc = cel_broker_class_for(s->cfg->broker))) {
        cel_log_error("broker %s: unsupported URL scheme", where);
        return CEL_EURL;
    }
    int rc = s->bc->open(&s->broker, &o, err, sizeof err);
    if (rc < 0) {
        cel_log_error("broker %s: %s", where, *err ? err : cel_strerror(rc));
        return rc;
    }
    long prefetch = prefetch_window(s->cfg);
    if (prefetch > 65535)
        prefetch = 65535;
    s->prefetch = (size_t)prefetch;
    cel__control_start(s); /* before the task queues: broadcasts are heard once a job runs */
    for (size_t i = 0; i < s->cfg->n_queues && rc == 0; i++) {
        const char *q = s->cfg->queue_list[i];
        if ((rc = s->bc->declare(s->broker, q)) == 0)
            rc = s->bc->consume(s->broker, q, (uint16_t)prefetch);
        if (rc < 0)
            cel_log_error("queue %s: %s: %s", q, cel_strerror(rc), s->bc->errstr(s->broker));
    }
    s->connected = rc == 0;
    return rc;
}

static int setup_signals(struct cel__sup *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return CEL_ESYS;
    signal(SIGPIPE, SIG_IGN);
    s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return s->sigfd < 0 ? CEL_ESYS : 0;
}

/* ---- shutdown and reload ---- */

static void requeue_queued(struct cel__sup *s)
{
    while (s->qhead) {
        struct cel__job *j = s->qhead;
        s->qhead = j->next;
        s->n_queued--;
        cel__job_done(s, j, SETTLE_REQUEUE);
    }
    s->qtail = NULL;
}

static void warm_shutdown(struct cel__sup *s)
{
    cel_log_info("warm shutdown: finishing %d running job(s) (timeout %g s), requeueing %zu",
                 s->n_busy, s->cfg->shutdown_timeout, s->n_queued);
    s->draining = true;
    s->drain_deadline_us = cel_mono_us() + (int64_t)(s->cfg->shutdown_timeout * 1e6);
    if (s->connected && s->bc->cancel(s->broker) < 0)
        cel_log_warning("cancelling consumers: %s", s->bc->errstr(s->broker));
    requeue_queued(s);
    cel__pool_retire_all(s);
}

static void reload(struct cel__sup *s)
{
    char err[512] = "";
    struct cel__registry *r = NULL;
    cel_log_info("SIGHUP: reloading services from %s", s->cfg->services);
    int rc = cel__registry_load(&r, s->cfg->services, false, s->reg, err, sizeof err);
    if (rc < 0) {
        cel_log_error("reload failed, keeping generation %llu: %s",
                      (unsigned long long)s->reg->generation, *err ? err : cel_strerror(rc));
        return;
    }
    struct cel__registry *old = s->reg;
    s->reg = r;
    if (s->solo) {
        cel__registry_fini_services(old);
        cel__registry_init_services(r, &cel__host);
    }
    cel__registry_unref(old);
    cel__pool_retire_all(s); /* idle old-generation children now, busy ones after their job */
    cel_log_info("services generation %llu loaded (%zu tasks)", (unsigned long long)r->generation,
                 r->n_tasks);
}

static void on_signals(struct cel__sup *s)
{
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            cel__pool_reap(s);
            break;
        case SIGHUP:
            s->reload_requested = true;
            break;
        default: /* SIGTERM, SIGINT */
            if (s->draining) {
                cel_log_warning("cold shutdown: exiting without acking (the broker requeues)");
                s->stop = true;
                s->exit_code = 1;
            } else {
                warm_shutdown(s);
            }
        }
    }
}

/* ---- timers ---- */

static void try_reconnect(struct cel__sup *s, int64_t now)
{
    if (s->connected || now < s->reconnect_at_us)
        return;
    int rc = s->bc->reconnect(s->broker);
    if (rc == 0) {
        s->connected = true;
        s->reconnect_attempt = 0;
        cel__metrics_broker_reconnect(s);
        cel_log_info("broker reconnected");
        if (s->draining)
            s->bc->cancel(s->broker);
        return;
    }
    int ms = cel_backoff_ms(s->reconnect_attempt < 16 ? s->reconnect_attempt : 16, 250, 30000);
    s->reconnect_attempt++;
    s->reconnect_at_us = now + (int64_t)(ms < 50 ? 50 : ms) * 1000;
    cel_log_warning("broker reconnect failed (%s); next attempt in %d ms", cel_strerror(rc), ms);
}

static void summary(struct cel__sup *s, int64_t now)
{
    if (now < s->next_summary_us)
        return;
    if (s->next_summary_us)
        cel_log_info("processed %llu (failed %llu, retried %llu), running %d, queued %zu",
                     (unsigned long long)s->processed, (unsigned long long)s->failed,
                     (unsigned long long)s->retried, s->n_busy, s->n_queued);
    s->next_summary_us = now + 60 * CEL_USEC_PER_SEC;
}

static void timers(struct cel__sup *s, int64_t now)
{
    cel__pool_check_limits(s, now);
    cel__pool_maintain(s, now);
    try_reconnect(s, now);
    if (s->connected && now >= s->next_tick_us) { /* heartbeats: no need every iteration */
        s->next_tick_us = now + 100000;
        if (s->bc->tick(s->broker) < 0)
            cel_log_debug("broker tick: %s", s->bc->errstr(s->broker));
    }
    summary(s, now);
    cel__idem_renew(s, now);
    cel__revoke_poll(s, now);
    cel__presence_beat(s, now);
    cel__metrics_tick(s, now);
}

static int poll_timeout_ms(const struct cel__sup *s, int64_t now)
{
    if ((s->connected && s->bc->pending(s->broker)) || (s->solo && s->qhead && !s->rate_waiting))
        return 0;
    int64_t next = now + (s->rate_waiting ? 20000 : TICK_US);
    int64_t dl = cel__pool_next_deadline(s);
    if (dl && dl < next)
        next = dl;
    if (s->dhead) {
        int64_t f = s->flush_retry_at_us > s->flush_due_us ? s->flush_retry_at_us : s->flush_due_us;
        if (f < next)
            next = f;
    }
    if (!s->connected && s->reconnect_at_us < next)
        next = s->reconnect_at_us;
    int mt = cel__metrics_timeout_ms(s);
    if (mt >= 0 && now + (int64_t)mt * 1000 < next)
        next = now + (int64_t)mt * 1000;
    return next <= now ? 0 : (int)((next - now + 999) / 1000);
}

/* ---- the loop ---- */

static struct pollfd *add_fd(struct cel__sup *s, size_t *n, int fd, short events)
{
    if (*n >= s->cap_pfds) {
        size_t nc = s->cap_pfds ? s->cap_pfds * 2 : 16;
        struct pollfd *p = realloc(s->pfds, nc * sizeof *p);
        if (!p)
            return NULL;
        s->pfds = p;
        s->cap_pfds = nc;
    }
    s->pfds[*n] = (struct pollfd){fd, events, 0};
    return &s->pfds[(*n)++];
}

static bool drained(const struct cel__sup *s)
{
    return s->draining && s->n_busy == 0 && !s->qhead && !s->dhead;
}

static int iterate(struct cel__sup *s)
{
    size_t n = 0;
    int64_t now = cel_mono_us();
    add_fd(s, &n, s->sigfd, POLLIN);
    int bfd = s->connected ? s->bc->fd(s->broker) : -1;
    if (bfd >= 0)
        add_fd(s, &n, bfd, POLLIN);
    int mfd = cel__metrics_fd(s);
    size_t mslot = n;
    if (mfd >= 0)
        add_fd(s, &n, mfd, POLLIN);
    size_t first_child = n;
    for (int i = 0; i < s->n_children; i++) {
        struct cel__child *c = &s->children[i];
        short ev = c->fd >= 0 && !c->hup ? POLLIN : 0;
        if (ev && c->out.len > c->out_off)
            ev |= POLLOUT;
        add_fd(s, &n, ev ? c->fd : -1, ev);
    }
    int rc = poll(s->pfds, n, poll_timeout_ms(s, now));
    if (rc < 0 && errno != EINTR)
        return CEL_ESYS;
    if (s->pfds[0].revents)
        on_signals(s);
    if (s->stop)
        return 0;
    /* a connection the adapter dropped on a failed send (an ack, a heartbeat) has no fd any
     * more: intake's next() reports it and the reconnect starts */
    if (s->connected && (bfd < 0 || s->pfds[1].revents || s->bc->pending(s->broker)))
        cel__intake_drain(s);
    for (int i = 0; i < s->n_children; i++) {
        struct pollfd *p = &s->pfds[first_child + (size_t)i];
        struct cel__child *c = &s->children[i];
        if (p->fd < 0 || p->fd != c->fd || !p->revents)
            continue;
        if (p->revents & POLLOUT)
            cel__pool_write(s, c);
        if (p->revents & (POLLIN | POLLHUP | POLLERR))
            cel__pool_read(s, c);
    }
    if (mfd >= 0 && s->pfds[mslot].revents)
        cel__metrics_run(s);
    cel__pool_dispatch(s);
    cel__flush(s);
    if (s->reload_requested) {
        s->reload_requested = false;
        reload(s);
    }
    timers(s, cel_mono_us());
    return 0;
}

static void run_loop(struct cel__sup *s)
{
    while (!s->stop) {
        if (iterate(s) < 0) {
            cel_log_error("poll: %s", strerror(errno));
            s->exit_code = 1;
            break;
        }
        if (drained(s)) {
            cel_log_info("warm shutdown complete");
            break;
        }
        if (s->draining && cel_mono_us() >= s->drain_deadline_us) {
            cel_log_warning("shutdown timeout: killing %d running job(s); they will be "
                            "redelivered",
                            s->n_busy);
            s->exit_code = 1;
            break;
        }
    }
}

static void free_jobs(struct cel__sup *s)
{
    while (s->free_jobs) {
        struct cel__job *j = s->free_jobs;
        s->free_jobs = j->next;
        cel_arena_free(&j->arena);
        free(j);
    }
}

static void log_start(const struct cel__sup *s)
{
    char b[512], r[512];
    cel_url_redact(s->cfg->broker, b, sizeof b);
    cel_url_redact(s->cfg->backend, r, sizeof r);
    cel_log_info("worker %s ready: queues %s, pool %s, concurrency %d, %zu tasks, broker %s, "
                 "backend %s",
                 s->cfg->hostname, s->cfg->queues, s->solo ? "solo" : "prefork",
                 s->solo ? 1 : s->cfg->concurrency, s->reg->n_tasks, b, r);
    if (s->solo && s->cfg->time_limit > 0)
        cel_log_warning("--pool solo cannot enforce hard time limits (soft limits work)");
    if (s->cfg->tls_insecure)
        cel_log_warning("--tls-insecure: the broker's certificate is not verified");
    if (s->cfg->require_signature)
        cel_log_info("signatures required: unsigned or forged jobs are dead-lettered unrun");
    else if (s->cfg->signing_key_len)
        cel_log_info("signing published messages; unsigned jobs are accepted "
                     "(--require-signature to refuse them)");
}

static void init_state(struct cel__sup *s, const struct cel__wcfg *cfg, struct cel__registry *reg)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->reg = cel__registry_ref(reg);
    s->solo = cfg->pool == CEL__POOL_SOLO;
    s->limits = cel_default_limits;
    if (cfg->max_message_size > 0)
        s->limits.max_body = (size_t)cfg->max_message_size;
    if (cfg->max_nesting > 0)
        s->limits.max_depth = (size_t)cfg->max_nesting;
    if (cfg->max_items > 0)
        s->limits.max_items = (size_t)cfg->max_items;
    if (cfg->max_string > 0)
        s->limits.max_str = (size_t)cfg->max_string;
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(s->origin, sizeof s->origin, "gen%ld@%s", (long)getpid(), host);
    s->sigfd = -1;
    s->fault_kill_before_ack = getenv("CELERIAC_FAULT_KILL_BEFORE_ACK");
    s->started_wall_us = cel_now_us();
    msgpack_zone_init(&s->zone, 8192);
    srandom((unsigned)(getpid() ^ cel_now_us()));
}

int cel__supervisor_run(const struct cel__wcfg *cfg, struct cel__registry *reg)
{
    static struct cel__sup sup;
    struct cel__sup *s = &sup;
    init_state(s, cfg, reg);
    if (setup_signals(s) < 0 || cel__metrics_start(s) < 0 || open_store(s) < 0 ||
        open_broker(s) < 0 || cel__pool_start(s) < 0) {
        s->exit_code = 1;
    } else {
        log_start(s);
        run_loop(s);
    }
    cel__pool_stop(s, s->stop || s->exit_code != 0);
    cel__presence_leave(s);
    cel__metrics_free(s);
    if (s->broker)
        s->bc->free(s->broker);
    cel_store_free(s->store);
    free_jobs(s);
    cel__revoke_free(s);
    cel__registry_unref(s->reg);
    free(s->pfds);
    free(s->pubbuf);
    free(s->putbuf);
    cel_buf_free(&s->scratch);
    msgpack_zone_destroy(&s->zone);
    if (s->sigfd >= 0)
        close(s->sigfd);
    return s->exit_code;
}
