/* metrics.h: the worker's Prometheus figures, /healthz and /readyz (--metrics-port).
 *
 * The HTTP server is libmicrohttpd in external-select mode with epoll: its one epoll fd sits in
 * the supervisor's poll set and MHD_run() is called from the same loop, so there is no thread,
 * no lock, and forking children stays as safe as before (a child closes every inherited fd).
 * Counters are only kept while metrics are on (s->metrics non-NULL); every hook is a no-op
 * otherwise. Built without libmicrohttpd (no CEL_HAVE_MHD), --metrics-port > 0 refuses to
 * start with a clear message. */
#ifndef CEL_WORKER_METRICS_H
#define CEL_WORKER_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct cel__sup;
struct cel__job;
struct cel__reply;

/* Starts the server when cfg->metrics_port > 0 (s->metrics stays NULL otherwise). */
int cel__metrics_start(struct cel__sup *s);
void cel__metrics_free(struct cel__sup *s);
/* The fd to poll for input (-1 = none) and the longest wait MHD allows (ms, -1 = any). */
int cel__metrics_fd(const struct cel__sup *s);
int cel__metrics_timeout_ms(const struct cel__sup *s);
/* Serves what is ready; refreshes queue depths every few seconds (broker queue_info). */
void cel__metrics_run(struct cel__sup *s);
void cel__metrics_tick(struct cel__sup *s, int64_t now);

/* hooks */
void cel__metrics_job_done(struct cel__sup *s, const struct cel__job *j);
void cel__metrics_usage(struct cel__sup *s, const struct cel__job *j, const struct cel__reply *r);
void cel__metrics_child_exit(struct cel__sup *s, int status, bool expected);
void cel__metrics_dead_letter(struct cel__sup *s);
void cel__metrics_broker_reconnect(struct cel__sup *s);

#endif
