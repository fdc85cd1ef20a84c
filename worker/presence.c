/* presence.c: the worker registry (service discovery): every 10 s the supervisor writes
 * celeriac-worker-<hostname> with a 30 s TTL holding {hostname, pid, queues, tasks, concurrency,
 * pool, started, heartbeat, processed, failed, retried, running, queued, generation}; a clean
 * shutdown deletes it, a dead worker's entry expires. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/sup.h"

#define REGISTER_EVERY_US (10 * CEL_USEC_PER_SEC)
#define REGISTER_TTL_S 30

static json_t *string_list(const char *const *items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(items[i]));
    return a;
}

static json_t *task_names(const struct cel__registry *r)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < r->n_tasks; i++)
        json_array_append_new(a, json_string(r->tasks[i].name));
    return a;
}

static char *document(const struct cel__sup *s)
{
    char started[33], beat[33];
    cel_iso8601_format(s->started_wall_us, 1, started);
    cel_iso8601_format(cel_now_us(), 1, beat);
    json_t *doc =
        json_pack("{s:s, s:I, s:o, s:o, s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:i, s:I, s:I}",
                  "hostname", s->cfg->hostname, "pid", (json_int_t)getpid(), "queues",
                  string_list((const char *const *)s->cfg->queue_list, s->cfg->n_queues), "tasks",
                  task_names(s->reg), "concurrency", s->solo ? 1 : s->cfg->concurrency, "pool",
                  s->solo ? "solo" : "prefork", "started", started, "heartbeat", beat, "processed",
                  (json_int_t)s->processed, "failed", (json_int_t)s->failed, "retried",
                  (json_int_t)s->retried, "running", s->n_busy, "queued", (json_int_t)s->n_queued,
                  "generation", (json_int_t)s->reg->generation);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

void cel__presence_beat(struct cel__sup *s, int64_t now)
{
    if (now < s->next_register_us)
        return;
    s->next_register_us = now + REGISTER_EVERY_US;
    char *text = document(s);
    if (!text)
        return;
    int rc = cel_store_register_worker(s->store, s->cfg->hostname,
                                       (struct cel_span){text, strlen(text)}, REGISTER_TTL_S);
    if (rc < 0)
        cel_log_debug("worker registry: %s", cel_strerror(rc));
    free(text);
}

void cel__presence_leave(struct cel__sup *s)
{
    if (s->store)
        cel_store_unregister_worker(s->store, s->cfg->hostname);
}
