/* metrics.c: Prometheus text at /metrics, /healthz and /readyz from libmicrohttpd run inside the
 * supervisor's poll loop (see metrics.h), and the counters the worker's hooks feed. */
#include "worker/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "worker/sup.h"

#define MAX_TASKS 1024 /* distinct task labels; later ones are counted as "other" */
#define QUEUE_REFRESH_US (5 * CEL_USEC_PER_SEC)
#define MAX_SIGNALS 65

static const double buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5,   1,     2.5,  5,     10,   30,  60};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

/* outcome labels (the log lines' "outcome" field) */
static const char *const outcomes[] = {"success", "failure",  "retry", "crash",
                                       "revoked", "rejected", "other"};
#define N_OUTCOMES (sizeof outcomes / sizeof outcomes[0])

struct task_stats {
    char *name;
    uint64_t jobs[N_OUTCOMES];
    uint64_t hist[N_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    double dur_sum;
    uint64_t dur_count;
    double cpu_s;
    int64_t maxrss_kb;
};

struct queue_depth {
    uint32_t messages, consumers;
    bool known;
};

struct cel__metrics {
    struct MHD_Daemon *d;
    struct task_stats *tasks;
    size_t n_tasks;
    struct queue_depth *queues; /* one per cfg->queue_list entry */
    int64_t next_queue_refresh_us;
    uint64_t child_exits, child_restarts;
    uint64_t crashes_by_signal[MAX_SIGNALS]; /* [0] = non-zero exit code */
    uint64_t dead_letters, broker_reconnects;
    struct cel_buf page;
};

/* ---- counters (no MHD needed) ---- */

static size_t outcome_index(const char *o)
{
    for (size_t i = 0; o && i < N_OUTCOMES - 1; i++)
        if (strcmp(o, outcomes[i]) == 0)
            return i;
    return N_OUTCOMES - 1;
}

static struct task_stats *task_of(struct cel__metrics *m, const struct cel__job *j)
{
    const char *name = j->entry ? j->entry->name : "unregistered";
    for (size_t i = 0; i < m->n_tasks; i++)
        if (strcmp(m->tasks[i].name, name) == 0)
            return &m->tasks[i];
    if (m->n_tasks >= MAX_TASKS)
        return &m->tasks[MAX_TASKS - 1]; /* "other" */
    struct task_stats *t = &m->tasks[m->n_tasks];
    t->name = strdup(m->n_tasks == MAX_TASKS - 1 ? "other" : name);
    if (!t->name)
        return NULL;
    m->n_tasks++;
    return t;
}

void cel__metrics_job_done(struct cel__sup *s, const struct cel__job *j)
{
    struct task_stats *t;
    if (!s->metrics || !j->outcome || !(t = task_of(s->metrics, j)))
        return;
    t->jobs[outcome_index(j->outcome)]++;
    if (!j->started_us)
        return;
    double d = (double)(cel_mono_us() - j->started_us) / 1e6;
    size_t b = 0;
    while (b < N_BUCKETS && d > buckets[b])
        b++;
    t->hist[b]++;
    t->dur_sum += d;
    t->dur_count++;
}

void cel__metrics_usage(struct cel__sup *s, const struct cel__job *j, const struct cel__reply *r)
{
    struct task_stats *t;
    if (!s->metrics || !(t = task_of(s->metrics, j)))
        return;
    t->cpu_s += (double)(r->utime_us + r->stime_us) / 1e6;
    if (r->maxrss_kb > t->maxrss_kb)
        t->maxrss_kb = r->maxrss_kb;
}

void cel__metrics_child_exit(struct cel__sup *s, int status, bool expected)
{
    struct cel__metrics *m = s->metrics;
    if (!m)
        return;
    m->child_exits++;
    if (!s->draining && !s->stop)
        m->child_restarts++;
    if (expected)
        return;
    if (WIFSIGNALED(status) && WTERMSIG(status) < MAX_SIGNALS)
        m->crashes_by_signal[WTERMSIG(status)]++;
    else if (!WIFSIGNALED(status) && WEXITSTATUS(status) != 0)
        m->crashes_by_signal[0]++;
}

void cel__metrics_dead_letter(struct cel__sup *s)
{
    if (s->metrics)
        s->metrics->dead_letters++;
}

void cel__metrics_broker_reconnect(struct cel__sup *s)
{
    if (s->metrics)
        s->metrics->broker_reconnects++;
}

void cel__metrics_tick(struct cel__sup *s, int64_t now)
{
    struct cel__metrics *m = s->metrics;
    if (!m || now < m->next_queue_refresh_us)
        return;
    m->next_queue_refresh_us = now + QUEUE_REFRESH_US;
    for (size_t i = 0; i < s->cfg->n_queues; i++) {
        struct cel_queue_info qi = {0, 0};
        bool ok = s->connected && s->bc->queue_info(s->broker, s->cfg->queue_list[i], &qi) == 0;
        m->queues[i] = (struct queue_depth){qi.messages, qi.consumers, ok};
    }
}

#ifdef CEL_HAVE_MHD
#include <arpa/inet.h>
#include <microhttpd.h>

/* ---- the page ---- */

static void label_value(struct cel_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            cel_buf_printf(b, "\\%c", *v);
        else if (*v == '\n')
            cel_buf_printf(b, "\\n");
        else
            cel_buf_printf(b, "%c", *v);
    }
}

static void head(struct cel_buf *b, const char *name, const char *type, const char *help)
{
    cel_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void task_line(struct cel_buf *b, const char *metric, const struct task_stats *t,
                      const char *more)
{
    cel_buf_printf(b, "%s{task=\"", metric);
    label_value(b, t->name);
    cel_buf_printf(b, "\"%s}", more ? more : "");
}

static void page_jobs(struct cel_buf *b, const struct cel__metrics *m)
{
    head(b, "celeriac_jobs_total", "counter", "Finished jobs by task and outcome.");
    for (size_t i = 0; i < m->n_tasks; i++)
        for (size_t o = 0; o < N_OUTCOMES; o++) {
            if (!m->tasks[i].jobs[o])
                continue;
            char more[64];
            snprintf(more, sizeof more, ",outcome=\"%s\"", outcomes[o]);
            task_line(b, "celeriac_jobs_total", &m->tasks[i], more);
            cel_buf_printf(b, " %llu\n", (unsigned long long)m->tasks[i].jobs[o]);
        }
    head(b, "celeriac_job_duration_seconds", "histogram", "Run time of finished jobs by task.");
    for (size_t i = 0; i < m->n_tasks; i++) {
        const struct task_stats *t = &m->tasks[i];
        if (!t->dur_count)
            continue;
        uint64_t cum = 0;
        for (size_t k = 0; k <= N_BUCKETS; k++) {
            char more[64];
            cum += t->hist[k];
            if (k < N_BUCKETS)
                snprintf(more, sizeof more, ",le=\"%g\"", buckets[k]);
            else
                snprintf(more, sizeof more, ",le=\"+Inf\"");
            task_line(b, "celeriac_job_duration_seconds_bucket", t, more);
            cel_buf_printf(b, " %llu\n", (unsigned long long)cum);
        }
        task_line(b, "celeriac_job_duration_seconds_sum", t, NULL);
        cel_buf_printf(b, " %.6f\n", t->dur_sum);
        task_line(b, "celeriac_job_duration_seconds_count", t, NULL);
        cel_buf_printf(b, " %llu\n", (unsigned long long)t->dur_count);
    }
    head(b, "celeriac_job_cpu_seconds_total", "counter", "CPU time (user + system) of jobs.");
    for (size_t i = 0; i < m->n_tasks; i++) {
        task_line(b, "celeriac_job_cpu_seconds_total", &m->tasks[i], NULL);
        cel_buf_printf(b, " %.6f\n", m->tasks[i].cpu_s);
    }
    head(b, "celeriac_job_maxrss_kilobytes", "gauge",
         "Largest max RSS of a child that ran the task.");
    for (size_t i = 0; i < m->n_tasks; i++) {
        task_line(b, "celeriac_job_maxrss_kilobytes", &m->tasks[i], NULL);
        cel_buf_printf(b, " %lld\n", (long long)m->tasks[i].maxrss_kb);
    }
}

static void simple(struct cel_buf *b, const char *name, const char *type, const char *help,
                   unsigned long long v)
{
    head(b, name, type, help);
    cel_buf_printf(b, "%s %llu\n", name, v);
}

static void page_process(struct cel_buf *b, const struct cel__sup *s)
{
    const struct cel__metrics *m = s->metrics;
    int children = 0;
    for (int i = 0; i < s->n_children; i++)
        children += s->children[i].pid != 0;
    simple(b, "celeriac_jobs_in_flight", "gauge", "Jobs running now.", (unsigned)s->n_busy);
    simple(b, "celeriac_jobs_queued", "gauge", "Jobs received, waiting for a child.", s->n_queued);
    simple(b, "celeriac_children", "gauge", "Live child processes.", (unsigned)children);
    simple(b, "celeriac_child_restarts_total", "counter", "Children replaced (any reason).",
           m->child_restarts);
    head(b, "celeriac_child_crashes_total", "counter",
         "Children that died unexpectedly, by signal (\"exit\" = non-zero exit code).");
    for (int sig = 0; sig < MAX_SIGNALS; sig++) {
        if (!m->crashes_by_signal[sig])
            continue;
        const char *ab = sig ? sigabbrev_np(sig) : NULL;
        cel_buf_printf(b, "celeriac_child_crashes_total{signal=\"%s%s\"} %llu\n", sig ? "SIG" : "",
                       sig ? (ab ? ab : "?") : "exit",
                       (unsigned long long)m->crashes_by_signal[sig]);
    }
    simple(b, "celeriac_retries_total", "counter", "Retries scheduled.", s->retried);
    simple(b, "celeriac_dead_letters_total", "counter", "Messages dead-lettered.", m->dead_letters);
    simple(b, "celeriac_broker_reconnects_total", "counter", "Broker reconnections.",
           m->broker_reconnects);
    unsigned long conns = cel_store_connects(s->store);
    simple(b, "celeriac_redis_reconnects_total", "counter", "Result backend reconnections.",
           conns > 1 ? conns - 1 : 0);
    simple(b, "celeriac_broker_connected", "gauge", "1 while connected to the broker.",
           s->connected);
    head(b, "celeriac_queue_messages", "gauge", "Ready messages per consumed queue.");
    for (size_t i = 0; i < s->cfg->n_queues; i++)
        if (m->queues[i].known) {
            cel_buf_printf(b, "celeriac_queue_messages{queue=\"");
            label_value(b, s->cfg->queue_list[i]);
            cel_buf_printf(b, "\"} %u\n", m->queues[i].messages);
        }
    head(b, "celeriac_queue_consumers", "gauge", "Consumers per consumed queue.");
    for (size_t i = 0; i < s->cfg->n_queues; i++)
        if (m->queues[i].known) {
            cel_buf_printf(b, "celeriac_queue_consumers{queue=\"");
            label_value(b, s->cfg->queue_list[i]);
            cel_buf_printf(b, "\"} %u\n", m->queues[i].consumers);
        }
}

/* ---- HTTP ---- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *type,
                             const void *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result rc = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result text(struct MHD_Connection *conn, unsigned code, const char *msg)
{
    return reply(conn, code, "text/plain; charset=utf-8", msg, strlen(msg));
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    struct cel__sup *s = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only\n");
    if (strcmp(url, "/healthz") == 0)
        return text(conn, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/readyz") == 0) {
        bool ready = s->connected && !s->draining && !s->stop;
        return text(conn, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                    ready         ? "ready\n"
                    : s->draining ? "draining\n"
                                  : "broker disconnected\n");
    }
    if (strcmp(url, "/metrics") != 0)
        return text(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics, /healthz, /readyz\n");
    struct cel_buf *b = &s->metrics->page;
    cel_buf_clear(b);
    page_jobs(b, s->metrics);
    page_process(b, s);
    return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b->data, b->len);
}

static int listen_on(struct cel__sup *s)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)s->cfg->metrics_port)};
    const char *bind_addr = s->cfg->metrics_bind ? s->cfg->metrics_bind : "127.0.0.1";
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        cel_log_error("--metrics-bind: '%s' is not an IPv4 address", bind_addr);
        return CEL_EINVAL;
    }
    s->metrics->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle, s,
                                     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                     MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (!s->metrics->d) {
        cel_log_error("metrics: cannot listen on %s:%d", bind_addr, s->cfg->metrics_port);
        return CEL_ESYS;
    }
    cel_log_info("metrics on http://%s:%d/metrics (also /healthz, /readyz)", bind_addr,
                 s->cfg->metrics_port);
    return 0;
}

int cel__metrics_fd(const struct cel__sup *s)
{
    if (!s->metrics || !s->metrics->d)
        return -1;
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->metrics->d, MHD_DAEMON_INFO_EPOLL_FD);
    return i ? i->epoll_fd : -1;
}

int cel__metrics_timeout_ms(const struct cel__sup *s)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (!s->metrics || !s->metrics->d || MHD_get_timeout(s->metrics->d, &t) != MHD_YES)
        return -1;
    return t > 250 ? 250 : (int)t;
}

void cel__metrics_run(struct cel__sup *s)
{
    if (s->metrics && s->metrics->d)
        MHD_run(s->metrics->d);
}

#else /* built without libmicrohttpd */

static int listen_on(struct cel__sup *s)
{
    cel_log_error("--metrics-port: this worker was built without libmicrohttpd (install "
                  "libmicrohttpd-dev and rebuild)");
    return CEL_EINVAL;
}

int cel__metrics_fd(const struct cel__sup *s)
{
    return -1;
}

int cel__metrics_timeout_ms(const struct cel__sup *s)
{
    return -1;
}

void cel__metrics_run(struct cel__sup *s) {}

#endif

int cel__metrics_start(struct cel__sup *s)
{
    if (s->cfg->metrics_port <= 0)
        return 0;
    struct cel__metrics *m = calloc(1, sizeof *m);
    if (!m || !(m->tasks = calloc(MAX_TASKS, sizeof *m->tasks)) ||
        !(m->queues = calloc(s->cfg->n_queues ? s->cfg->n_queues : 1, sizeof *m->queues))) {
        if (m)
            free(m->tasks);
        free(m);
        return CEL_ENOMEM;
    }
    s->metrics = m;
    int rc = listen_on(s);
    if (rc < 0)
        cel__metrics_free(s);
    return rc;
}

void cel__metrics_free(struct cel__sup *s)
{
    struct cel__metrics *m = s->metrics;
    if (!m)
        return;
#ifdef CEL_HAVE_MHD
    if (m->d)
        MHD_stop_daemon(m->d);
#endif
    for (size_t i = 0; i < m->n_tasks; i++)
        free(m->tasks[i].name);
    free(m->tasks);
    free(m->queues);
    cel_buf_free(&m->page);
    free(m);
    s->metrics = NULL;
}
