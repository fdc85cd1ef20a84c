/* child.c: the prefork child's loop: frames in, handlers, reply frames out (a batch's together). */
#include "worker/child.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/host.h"
#include "worker/ipc.h"

struct child {
    int fd;
    struct cel_buf in, out;
    size_t in_off;
    msgpack_zone zone;
    struct cel_arena arena;
    struct cel_job job;
    struct rusage last;
    const char *hostname;
    int64_t first_reply_us; /* monotonic, when the oldest unwritten reply was packed */
};

static void setup_process(const struct cel__child_opts *o)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != o->parent)
        _exit(0); /* the supervisor died before the prctl took effect */
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    /* Ctrl-C reaches the whole process group: only the supervisor decides when children stop */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    char name[32];
    snprintf(name, sizeof name, "child-%d", o->index);
    cel_log_set_proc(name);
    if (o->max_memory_kb > 0) {
        struct rlimit rl = {(rlim_t)o->max_memory_kb * 1024, (rlim_t)o->max_memory_kb * 1024};
        if (setrlimit(RLIMIT_AS, &rl) < 0)
            cel_log_warning("setrlimit(RLIMIT_AS): %s", strerror(errno));
    }
}

/* Blocks until a whole frame is buffered; 0 = EOF (the supervisor closed the socket). */
static int read_frame(struct child *c, struct cel_span *payload)
{
    for (;;) {
        size_t used;
        int rc = cel__frame_next(c->in.data + c->in_off, c->in.len - c->in_off, payload, &used);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            c->in_off += used;
            return 1;
        }
        if (c->in_off) { /* compact before reading more */
            memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
            c->in.len -= c->in_off;
            c->in_off = 0;
        }
        if (cel_buf_reserve(&c->in, 65536) < 0)
            return CEL_ENOMEM;
        ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 0; /* the supervisor closed our socket (or died) */
        if (n < 0 && errno != EINTR)
            return CEL_ESYS;
        if (n > 0)
            c->in.len += (size_t)n;
    }
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return CEL_ESYS;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static const char *str(struct cel_arena *a, struct cel_span s)
{
    return s.ptr ? cel_arena_strndup(a, s.ptr, s.len) : NULL;
}

static int64_t tv_us(struct timeval tv)
{
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void fill_rusage(struct child *c, struct cel__reply *r)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r->utime_us = tv_us(ru.ru_utime) - tv_us(c->last.ru_utime);
    r->stime_us = tv_us(ru.ru_stime) - tv_us(c->last.ru_stime);
    r->maxrss_kb = ru.ru_maxrss;
    c->last = ru;
}

static int run_one(struct child *c, struct cel__registry *reg, struct cel_span payload)
{
    struct cel__ipc_job j;
    int rc = cel__ipc_unpack_job(payload, &c->zone, &j);
    if (rc < 0)
        return rc;
    cel_arena_reset(&c->arena);
    struct cel_job *job = &c->job;
    struct cel_arena *a = &c->arena;
    job->info = (struct cel_job_info){
        str(a, j.id),    str(a, j.task), str(a, j.root_id), str(a, j.parent_id), str(a, j.group),
        str(a, j.queue), c->hostname,    j.retries,         j.max_retries,       j.redelivered};
    job->args = j.args_obj;
    job->kwargs = j.kwargs_obj;
    job->entry = cel__registry_find(reg, job->info.task);
    /* relative (< 0): from now, when the job starts, which in a batch is after the others */
    job->soft_deadline_us =
        j.soft_deadline_us < 0 ? cel_mono_us() - j.soft_deadline_us : j.soft_deadline_us;
    struct cel__reply r;
    cel__job_execute(job, &r);
    r.seq = j.seq;
    fill_rusage(c, &r);
    if (!c->out.len)
        c->first_reply_us = cel_mono_us();
    return cel__ipc_pack_reply(&c->out, &r);
}

/* Replies of a batch are written together: when no further job is buffered (we would block),
 * or when the oldest unwritten reply is REPLY_HOLD_US old (a slow job does not hold the results
 * of the jobs before it). */
#define REPLY_HOLD_US 1000

static int flush_replies(struct child *c, bool force)
{
    if (!c->out.len)
        return 0;
    struct cel_span next;
    size_t used;
    if (!force &&
        cel__frame_next(c->in.data + c->in_off, c->in.len - c->in_off, &next, &used) == 1 &&
        cel_mono_us() - c->first_reply_us < REPLY_HOLD_US)
        return 0;
    int rc = write_all(c->fd, c->out.data, c->out.len);
    cel_buf_clear(&c->out);
    return rc;
}

void cel__child_main(int fd, struct cel__registry *reg, const struct cel__child_opts *o)
{
    setup_process(o);
    struct child c = {.fd = fd, .hostname = o->hostname};
    msgpack_zone_init(&c.zone, 8192);
    cel_arena_init(&c.arena, 4096);
    cel__job_init(&c.job);
    c.job.max_result = (size_t)(o->max_result > 0 ? o->max_result : 0);
    getrusage(RUSAGE_SELF, &c.last);
    cel__registry_init_services(reg, &cel__host);
    int rc;
    struct cel_span payload;
    while ((rc = read_frame(&c, &payload)) == 1) {
        if ((rc = run_one(&c, reg, payload)) < 0 || (rc = flush_replies(&c, false)) < 0)
            break;
    }
    if (rc == 0)
        flush_replies(&c, true);
    if (rc < 0)
        cel_log_error("child stopping: %s", cel_strerror(rc));
    cel__registry_fini_services(reg);
    _exit(rc < 0 ? 70 : 0);
}
