/* pool.c: the prefork children (spawn, hand jobs to an idle child, read replies, reap,
 * enforce hard time limits and retirement) and the solo pool (the same execution in-process). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/child.h"
#include "worker/sup.h"

static int spawn(struct cel__sup *s, struct cel__child *c)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return CEL_ESYS;
    int sz = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return CEL_ESYS;
    }
    if (pid == 0) {
        /* keep only stdio and our socket: a copy of another child's socket or of the broker
         * connection would keep them open after the supervisor closes them */
        if (sv[1] != 3 && dup2(sv[1], 3) < 0)
            _exit(71);
        close_range(4, ~0u, 0);
        struct cel__child_opts o = {c->index, s->cfg->hostname, s->cfg->max_memory_per_child,
                                    parent, s->cfg->max_result_size};
        cel__child_main(3, s->reg, &o);
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    c->pid = pid;
    c->fd = sv[0];
    c->job = c->jtail = NULL;
    c->jobs_done = 0;
    c->retiring = c->hup = false;
    c->in_off = c->out_off = 0;
    cel_buf_clear(&c->in);
    cel_buf_clear(&c->out);
    c->reg = cel__registry_ref(s->reg);
    c->spawned_us = cel_mono_us();
    cel_log_debug("child %d started (pid %ld)", c->index, (long)pid);
    return 0;
}

static void spawn_missing(struct cel__sup *s)
{
    if (s->draining || s->stop)
        return;
    int64_t now = cel_mono_us();
    for (int i = 0; i < s->n_children; i++) {
        struct cel__child *c = &s->children[i];
        if (c->pid == 0 && c->fd < 0 && now >= c->respawn_at_us && spawn(s, c) < 0)
            cel_log_error("cannot start child %d: %s", i, strerror(errno));
    }
}

int cel__pool_start(struct cel__sup *s)
{
    if (s->solo) {
        cel__job_init(&s->solo_job);
        s->solo_job.max_result = (size_t)s->cfg->max_result_size;
        cel__registry_init_services(s->reg, &cel__host);
        return 0;
    }
    s->n_children = s->cfg->concurrency;
    if (!(s->children = calloc((size_t)s->n_children, sizeof *s->children)))
        return CEL_ENOMEM;
    for (int i = 0; i < s->n_children; i++) {
        s->children[i].index = i;
        s->children[i].fd = -1;
    }
    spawn_missing(s);
    return 0;
}

/* ---- handing out jobs ---- */

static double pick(double header, double task, double worker)
{
    return header > 0 ? header : task > 0 ? task : worker;
}

static int64_t max_retries_of(const struct cel__job *j)
{
    int m = j->entry->def->max_retries;
    return m == 0 ? 3 : m < 0 ? -1 : m;
}

static double hard_limit_of(const struct cel__sup *s, const struct cel__job *j)
{
    return pick(j->t.time_limit, j->entry->def->time_limit, s->cfg->time_limit);
}

static void set_deadlines(struct cel__sup *s, struct cel__job *j, int64_t now, int64_t *soft)
{
    const struct cel_task_def *d = j->entry->def;
    j->hard_limit_s = hard_limit_of(s, j);
    double soft_s = pick(j->t.soft_time_limit, d->soft_time_limit, s->cfg->soft_time_limit);
    j->started_us = now;
    j->hard_deadline_us = j->hard_limit_s > 0 ? now + (int64_t)(j->hard_limit_s * 1e6) : 0;
    *soft = soft_s > 0 ? now + (int64_t)(soft_s * 1e6) : 0;
}

static void log_started(const struct cel__job *j, const struct cel__child *c)
{
    if (!cel_log_enabled(CEL_LOG_DEBUG))
        return;
    struct cel_log_fields f = {j->t.task, j->t.id, j->d.queue, "started", CEL_LOG_NO_DURATION};
    cel_log(CEL_LOG_DEBUG, &f, "task started (child %d)", c ? c->index : -1);
}

static struct cel_span cspan(const char *s)
{
    return (struct cel_span){s, s ? strlen(s) : 0};
}

/* Packs j into c's pending output and appends it to c's batch (the caller writes). */
static int send_job(struct cel__sup *s, struct cel__child *c, struct cel__job *j, int64_t now)
{
    int64_t soft;
    set_deadlines(s, j, now, &soft);
    struct cel__ipc_job f = {j->seq,
                             cspan(j->t.task),
                             cspan(j->t.id),
                             cspan(j->t.root_id),
                             cspan(j->t.parent_id),
                             cspan(j->t.group),
                             cspan(j->d.queue),
                             j->t.retries,
                             max_retries_of(j),
                             j->d.redelivered,
                             soft ? now - soft : 0, /* relative: the child starts the clock */
                             j->t.args,
                             j->t.kwargs,
                             NULL,
                             NULL};
    int rc = cel__ipc_pack_job(&c->out, &f);
    if (rc < 0)
        return rc;
    j->state = J_RUNNING;
    j->child = c;
    j->next = NULL;
    if (c->jtail)
        c->jtail->next = j;
    else
        c->job = j;
    c->jtail = j;
    s->n_busy++;
    log_started(j, c);
    return 0;
}

static struct cel__child *idle_child(struct cel__sup *s)
{
    for (int i = 0; i < s->n_children; i++) {
        struct cel__child *c = &s->children[i];
        if (c->pid && !c->job && !c->retiring && !c->hup && c->reg == s->reg)
            return c;
    }
    return NULL;
}

/* Removes j (whose predecessor is prev, NULL at the head) from the queue. */
static void queue_unlink(struct cel__sup *s, struct cel__job *prev, struct cel__job *j)
{
    if (prev)
        prev->next = j->next;
    else
        s->qhead = j->next;
    if (s->qtail == j)
        s->qtail = prev;
    s->n_queued--;
    j->next = NULL;
}

/* Rate limits: a token bucket per task; a job without a token waits in the queue (later jobs
 * go ahead of it) for up to RATE_WAIT_US, then goes back to the broker through a short delay. */
#define RATE_WAIT_US 1000000
#define RATE_REQUEUE_DELAY_S 1

static bool take_token(struct cel__bucket *b, double rate, int64_t now)
{
    double cap = rate < 1 ? 1 : rate;
    b->tokens += (double)(now - b->last_us) / 1e6 * rate;
    if (b->tokens > cap)
        b->tokens = cap;
    b->last_us = now;
    if (b->tokens < 1)
        return false;
    b->tokens -= 1;
    return true;
}

static void rate_requeue(struct cel__sup *s, struct cel__job *j)
{
    struct cel_publish *p = cel_arena_alloc(&j->arena, sizeof *p);
    if (!p) {
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    *p = (struct cel_publish){"",        j->d.queue,           &j->d.props, &j->d.headers,
                              j->d.body, RATE_REQUEUE_DELAY_S, false};
    j->pubs = p;
    j->n_pubs = j->cap_pubs = 1;
    j->outcome = "rate-limited";
    cel_log_debug("task %s: rate limit %s: back to the broker for %d s", j->t.id,
                  j->entry->def->rate_limit, RATE_REQUEUE_DELAY_S);
    cel__job_done(s, j, SETTLE_ACK);
}

/* The next job that may run now, unlinked from the queue; NULL when none. */
static struct cel__job *queue_take(struct cel__sup *s)
{
    int64_t now = 0;
    struct cel__job *prev = NULL, *j = s->qhead, *next;
    s->rate_waiting = false;
    for (; j; j = next) {
        next = j->next;
        struct cel__bucket *b = j->entry->bucket;
        if (!b)
            break;
        now = now ? now : cel_mono_us();
        if (take_token(b, j->entry->rate_per_s, now))
            break;
        if (now - j->queued_us >= RATE_WAIT_US) {
            queue_unlink(s, prev, j);
            rate_requeue(s, j);
            continue;
        }
        s->rate_waiting = true;
        prev = j;
    }
    if (j)
        queue_unlink(s, prev, j);
    return j;
}

static void solo_run(struct cel__sup *s, struct cel__job *j)
{
    int64_t soft;
    set_deadlines(s, j, cel_mono_us(), &soft);
    struct cel_job *job = &s->solo_job;
    msgpack_object args, kwargs;
    size_t off = 0, off2 = 0;
    msgpack_zone_clear(&s->zone);
    msgpack_unpack(j->t.args.ptr, j->t.args.len, &off, &s->zone, &args);
    msgpack_unpack(j->t.kwargs.ptr, j->t.kwargs.len, &off2, &s->zone, &kwargs);
    job->info = (struct cel_job_info){
        j->t.id,    j->t.task,        j->t.root_id, j->t.parent_id,    j->t.group,
        j->d.queue, s->cfg->hostname, j->t.retries, max_retries_of(j), j->d.redelivered};
    job->args = &args;
    job->kwargs = &kwargs;
    job->entry = cel__registry_find(s->reg, j->t.task); /* the live generation (after SIGHUP) */
    job->soft_deadline_us = soft;
    j->state = J_RUNNING;
    log_started(j, NULL);
    struct cel__reply r;
    cel__job_execute(job, &r);
    r.seq = j->seq;
    /* through the same encoding as a child's reply, so both pools share one outcome path */
    cel_buf_clear(&s->scratch);
    struct cel_span payload;
    size_t used;
    struct cel__reply out;
    if (cel__ipc_pack_reply(&s->scratch, &r) < 0 ||
        cel__frame_next(s->scratch.data, s->scratch.len, &payload, &used) != 1 ||
        cel__ipc_unpack_reply(payload, &s->zone, &j->arena, &out) < 0) {
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    cel__outcome_reply(s, j, &out);
}

/* Batches (see sup.h): at most BATCH_MAX jobs, and only jobs that may share a child: tasks
 * whose handlers have been seen to take under BATCH_FAST_US on average, so that a slow job
 * does not keep the jobs batched behind it from idle children. */
#define BATCH_MAX 16
#define BATCH_FAST_US 1000

static bool batchable(const struct cel__sup *s, const struct cel__job *j)
{
    int64_t avg = j->entry->stat->avg_wall_us;
    return avg > 0 && avg < BATCH_FAST_US && !j->d.redelivered && !j->entry->bucket &&
           hard_limit_of(s, j) <= 0;
}

static size_t batch_size(const struct cel__sup *s, const struct cel__child *c)
{
    size_t n = s->n_queued / (size_t)s->n_children; /* leave the other children their share */
    n = n > BATCH_MAX ? BATCH_MAX : n ? n : 1;
    unsigned max = (unsigned)s->cfg->max_tasks_per_child;
    if (max && max > c->jobs_done && max - c->jobs_done < n)
        n = max - c->jobs_done;
    return n;
}

/* Hands c a batch from the head of the queue; false when nothing could be taken. */
static bool fill_child(struct cel__sup *s, struct cel__child *c)
{
    size_t want = batch_size(s, c);
    int64_t now = cel_mono_us();
    struct cel__job *j;
    while (!c->job || (batchable(s, c->job) && s->qhead && batchable(s, s->qhead))) {
        if (!(j = queue_take(s)))
            break;
        if (cel__revoke_check(s, j))
            continue;
        if (send_job(s, c, j, now) < 0)
            cel__job_done(s, j, SETTLE_REQUEUE);
        else if (--want == 0)
            break;
    }
    if (c->job)
        cel__pool_write(s, c);
    return c->job != NULL;
}

void cel__pool_dispatch(struct cel__sup *s)
{
    if (s->solo) {
        struct cel__job *j;
        for (int n = 0; n < 256 && (j = queue_take(s)); n++) {
            if (!cel__revoke_check(s, j))
                solo_run(s, j);
        }
        return;
    }
    struct cel__child *c;
    while (s->qhead && (c = idle_child(s)) && fill_child(s, c))
        ;
}

/* ---- replies ---- */

void cel__pool_write(struct cel__sup *s, struct cel__child *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return; /* POLLOUT will bring us back */
        if (n <= 0) {
            c->hup = true; /* the child died: SIGCHLD handles its job */
            return;
        }
        c->out_off += (size_t)n;
    }
    cel_buf_clear(&c->out);
    c->out_off = 0;
}

static void retire(struct cel__child *c)
{
    if (c->fd >= 0 && !c->job) {
        shutdown(c->fd, SHUT_WR); /* EOF: the child runs fini() and exits */
        c->retiring = true;
    }
}

static void on_reply(struct cel__sup *s, struct cel__child *c, struct cel_span payload)
{
    struct cel__job *j = c->job;
    if (!j) {
        cel_log_error("child %d sent a reply without a job", c->index);
        return;
    }
    struct cel__reply r;
    c->job = j->next;
    if (c->job)
        c->job->started_us = cel_mono_us(); /* the child moves on to it now */
    else
        c->jtail = NULL;
    j->next = NULL;
    s->n_busy--;
    c->jobs_done++;
    j->child = NULL;
    if (cel__ipc_unpack_reply(payload, &s->zone, &j->arena, &r) < 0 || r.seq != j->seq) {
        cel_log_error("child %d sent a malformed reply; retiring it", c->index);
        c->retiring = true;
        kill(c->pid, SIGKILL);
        cel__job_done(s, j, SETTLE_REQUEUE);
        return;
    }
    if (j->kill != KILL_NONE) { /* the kill raced with the reply: honour the reply */
        j->kill = KILL_NONE;
    }
    cel__outcome_reply(s, j, &r);
    unsigned max = (unsigned)s->cfg->max_tasks_per_child;
    if ((max && c->jobs_done >= max) || c->reg != s->reg)
        retire(c);
}

void cel__pool_read(struct cel__sup *s, struct cel__child *c)
{
    for (;;) {
        if (cel_buf_reserve(&c->in, 65536) < 0)
            return;
        size_t room = c->in.cap - c->in.len - 1;
        ssize_t n = read(c->fd, c->in.data + c->in.len, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0) {
            c->in.len += (size_t)n;
            if ((size_t)n < room)
                break; /* drained: skip the read that would only say EAGAIN */
            continue;
        }
        if (n == 0 || errno != EAGAIN)
            c->hup = true;
        break;
    }
    struct cel_span payload;
    size_t used;
    int rc;
    while ((rc = cel__frame_next(c->in.data + c->in_off, c->in.len - c->in_off, &payload, &used)) ==
           1) {
        c->in_off += used;
        on_reply(s, c, payload);
    }
    if (rc < 0) {
        cel_log_error("child %d: oversized frame; killing it", c->index);
        kill(c->pid, SIGKILL);
        c->hup = true;
    }
    if (c->in_off == c->in.len) {
        cel_buf_clear(&c->in);
        c->in_off = 0;
    }
}

/* ---- reaping ---- */

static struct cel__child *child_by_pid(struct cel__sup *s, pid_t pid)
{
    for (int i = 0; i < s->n_children; i++)
        if (s->children[i].pid == pid)
            return &s->children[i];
    return NULL;
}

/* The jobs after the first of a dead child's batch: requeued unblamed (redelivered, they are
 * sent alone, so a crash among them is then blamed on the right job). */
static void requeue_batch_rest(struct cel__sup *s, struct cel__child *c)
{
    struct cel__job *next;
    for (struct cel__job *j = c->job->next; j; j = next) {
        next = j->next;
        s->n_busy--;
        j->child = NULL;
        cel__job_done(s, j, SETTLE_REQUEUE);
    }
    c->job->next = NULL;
    c->jtail = c->job;
    cel_log_warning("child %d died during a batch: its unfinished jobs are requeued", c->index);
}

static void child_gone(struct cel__sup *s, struct cel__child *c, int status,
                       const struct rusage *ru)
{
    if (c->fd >= 0 && !c->hup)
        cel__pool_read(s, c); /* a reply may still sit in the socket */
    struct cel__job *j = c->job;
    bool batch = j && j->next;
    if (batch)
        requeue_batch_rest(s, c);
    if (j) {
        c->job = NULL;
        c->jtail = NULL;
        s->n_busy--;
        j->child = NULL;
        struct cel_log_fields f = {j->t.task, j->t.id, j->d.queue, NULL, CEL_LOG_NO_DURATION};
        cel_log(CEL_LOG_WARNING, &f,
                "child %d (pid %ld) died running a job: status 0x%x, maxrss %ld KB, user %.3f s, "
                "system %.3f s",
                c->index, (long)c->pid, (unsigned)status, ru->ru_maxrss,
                (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6,
                (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6);
        if (batch && j->kill == KILL_NONE) /* maybe not the culprit: it comes back alone */
            cel__job_done(s, j, SETTLE_REQUEUE);
        else
            cel__outcome_crash(s, j, status);
    } else if (!c->retiring && !s->draining && !s->stop) {
        cel_log_warning("child %d (pid %ld) exited unexpectedly (status %d)", c->index,
                        (long)c->pid, status);
    }
    cel__metrics_child_exit(s, status,
                            c->retiring || s->draining || s->stop || (j && j->kill != KILL_NONE));
    if (c->fd >= 0)
        close(c->fd);
    int64_t now = cel_mono_us();
    bool early = !j && !c->retiring && c->jobs_done == 0 && now - c->spawned_us < CEL_USEC_PER_SEC;
    c->fast_fails = early ? c->fast_fails + 1 : 0;
    c->respawn_at_us = 0;
    if (c->fast_fails) {
        int64_t wait = (int64_t)100000 << (c->fast_fails < 7 ? c->fast_fails : 7);
        c->respawn_at_us = now + wait;
        cel_log_warning("child %d died at startup %u time(s) in a row; respawning in %lld ms",
                        c->index, c->fast_fails, (long long)(wait / 1000));
    }
    c->fd = -1;
    c->pid = 0;
    cel__registry_unref(c->reg);
    c->reg = NULL;
}

void cel__pool_maintain(struct cel__sup *s, int64_t now)
{
    for (int i = 0; i < s->n_children; i++)
        if (!s->children[i].pid && now >= s->children[i].respawn_at_us) {
            spawn_missing(s);
            return;
        }
}

void cel__pool_reap(struct cel__sup *s)
{
    int status;
    struct rusage ru;
    pid_t pid;
    while ((pid = wait4(-1, &status, WNOHANG, &ru)) > 0) {
        struct cel__child *c = child_by_pid(s, pid);
        if (c)
            child_gone(s, c, status, &ru);
    }
    spawn_missing(s);
}

void cel__pool_check_limits(struct cel__sup *s, int64_t now)
{
    for (int i = 0; i < s->n_children; i++) {
        struct cel__child *c = &s->children[i];
        struct cel__job *j = c->job;
        if (j && j->kill == KILL_NONE && j->hard_deadline_us && now >= j->hard_deadline_us) {
            j->kill = KILL_TIMELIMIT;
            kill(c->pid, SIGKILL);
        }
    }
}

int64_t cel__pool_next_deadline(const struct cel__sup *s)
{
    int64_t next = 0;
    for (int i = 0; i < s->n_children; i++) {
        const struct cel__job *j = s->children[i].job;
        if (j && j->kill == KILL_NONE && j->hard_deadline_us &&
            (!next || j->hard_deadline_us < next))
            next = j->hard_deadline_us;
    }
    return next;
}

void cel__pool_retire_all(struct cel__sup *s)
{
    for (int i = 0; i < s->n_children; i++)
        if (s->children[i].pid && !s->children[i].job)
            retire(&s->children[i]);
}

void cel__pool_stop(struct cel__sup *s, bool kill_now)
{
    if (s->solo) {
        cel__registry_fini_services(s->reg);
        cel__job_free(&s->solo_job);
        return;
    }
    for (int i = 0; i < s->n_children; i++) {
        struct cel__child *c = &s->children[i];
        if (c->pid && kill_now)
            kill(c->pid, SIGKILL);
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_WR);
    }
    for (int i = 0; i < s->n_children; i++) {
        struct cel__child *c = &s->children[i];
        if (c->pid)
            waitpid(c->pid, NULL, 0);
        if (c->fd >= 0)
            close(c->fd);
        cel__registry_unref(c->reg);
        cel_buf_free(&c->in);
        cel_buf_free(&c->out);
        *c = (struct cel__child){.fd = -1, .index = i};
    }
    free(s->children);
    s->children = NULL;
    s->n_children = 0;
}
