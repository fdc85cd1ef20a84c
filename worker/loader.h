/* loader.h: loads service shared objects from a directory into a registry (one generation),
 * validates them (ABI, size, task names, duplicates) and finds tasks by name through a hash
 * table. A new generation is built on SIGHUP; jobs and children keep a reference to the
 * generation they were matched against. */
#ifndef CEL_WORKER_LOADER_H
#define CEL_WORKER_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "celeriac/service.h"

struct cel__service_slot {
    char *path; /* the .so file it came from */
    void *dl;   /* dlopen handle; NULL when shared from an older generation */
    const struct cel_service *svc;
    void *state; /* init()'s state in this process */
    int init_rc; /* 1 = init not yet run, 0 = ok, < 0 = init failed */
};

/* A token bucket for a rate-limited task (per worker, in the supervisor). */
struct cel__bucket {
    double tokens;
    int64_t last_us; /* monotonic time of the last refill */
};

/* What the supervisor learns about a task by running it (pool.c decides batching with it). */
struct cel__task_stat {
    int64_t avg_wall_us; /* moving average of the handler's wall time; 0 = not run yet */
};

/* Per-task settings the supervisor needs, parsed once at load time. */
struct cel__task_entry {
    const char *name;
    const struct cel_task_def *def;
    struct cel__service_slot *slot;
    double rate_per_s;           /* from def->rate_limit; 0 = unlimited */
    struct cel__bucket *bucket;  /* NULL when not rate limited */
    struct cel__task_stat *stat; /* never NULL in a built registry */
};

struct cel__registry {
    uint64_t generation;
    unsigned refs;
    struct cel__service_slot *slots;
    size_t n_slots;
    struct cel__task_entry *tasks;
    size_t n_tasks;
    uint32_t *table;              /* open addressing: index + 1 into tasks, 0 = empty */
    struct cel__bucket *buckets;  /* one per task */
    struct cel__task_stat *stats; /* one per task */
    uint32_t mask;
    struct cel__registry *prev; /* older generation this one keeps alive (shared slots) */
};

/* Loads every *.so in dir (sorted by name). A refused file is logged as "<file>: <reason>";
 * with strict the first refusal fails the load (CEL_E* and the line in err). prev, when not NULL,
 * is the running generation: a file that fails to load keeps prev's version of that service.
 * A new registry starts with one reference. */
int cel__registry_load(struct cel__registry **out, const char *dir, bool strict,
                       struct cel__registry *prev, char *err, size_t errlen);
const struct cel__task_entry *cel__registry_find(const struct cel__registry *r, const char *name);
struct cel__registry *cel__registry_ref(struct cel__registry *r);
/* Drops one reference; the last one runs fini() for initialised services and dlcloses. */
void cel__registry_unref(struct cel__registry *r);
/* Runs init() of every service in this process (after fork, or once for solo). */
void cel__registry_init_services(struct cel__registry *r, const struct cel_host *host);
void cel__registry_fini_services(struct cel__registry *r);

/* Validates a task name: "<service>.<x>", [A-Za-z0-9_.-], < 200 bytes. */
bool cel__task_name_valid(const char *service, const char *name);
/* Parses "10/s", "100/m", "1000/h" (or a bare number per second) into jobs per second. */
int cel__rate_parse(const char *s, double *per_s);

#endif
