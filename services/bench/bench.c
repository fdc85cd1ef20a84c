/* bench.c: the bench service, tasks for benchmarks and failure tests (echo, sleep, fail, retry,
 * crash, abort, soft time limits, memory, a shared counter in bench.db). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "celeriac/service.h"
#include "services/lib/svcdb.h"

#define MAX_DEPTH 512

struct bench {
    sqlite3 *db;
    sqlite3_stmt *count;
};

/* ---- arguments ---- */

/* An int or a float as a double; 0 when o is something else. */
static int as_number(const msgpack_object *o, double *out)
{
    if (!o)
        return 0;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = (double)o->via.u64;
        return 1;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = (double)o->via.i64;
        return 1;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *out = o->via.f64;
        return 1;
    default:
        return 0;
    }
}

static int need_number(const struct cel_host *host, struct cel_job *job, const char *name,
                       double *out)
{
    const msgpack_object *o = host->arg(job, 0, name);
    if (!o)
        return host->fail(job, "TypeError", "%s() missing required argument: '%s'",
                          host->info(job)->task, name);
    if (!as_number(o, out))
        return host->fail(job, "TypeError", "%s() argument '%s' must be a number",
                          host->info(job)->task, name);
    if (*out < 0 || *out != *out)
        return host->fail(job, "ValueError", "%s() argument '%s' must be non-negative",
                          host->info(job)->task, name);
    if (*out > 1e15)
        return host->fail(job, "OverflowError", "%s() argument '%s' is too large",
                          host->info(job)->task, name);
    return 0;
}

/* ---- noop: copy any msgpack value into the result ---- */

static int copy(msgpack_packer *pk, const msgpack_object *o, int depth);

static int copy_array(msgpack_packer *pk, const msgpack_object_array *a, int depth)
{
    int rc = msgpack_pack_array(pk, a->size);
    for (uint32_t i = 0; rc == 0 && i < a->size; i++)
        rc = copy(pk, &a->ptr[i], depth + 1);
    return rc;
}

static int copy_map(msgpack_packer *pk, const msgpack_object_map *m, int depth)
{
    int rc = msgpack_pack_map(pk, m->size);
    for (uint32_t i = 0; rc == 0 && i < m->size; i++) {
        rc = copy(pk, &m->ptr[i].key, depth + 1);
        if (rc == 0)
            rc = copy(pk, &m->ptr[i].val, depth + 1);
    }
    return rc;
}

static int copy(msgpack_packer *pk, const msgpack_object *o, int depth)
{
    if (depth > MAX_DEPTH)
        return -1;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return msgpack_pack_nil(pk);
    case MSGPACK_OBJECT_BOOLEAN:
        return o->via.boolean ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return msgpack_pack_uint64(pk, o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return msgpack_pack_int64(pk, o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
        return msgpack_pack_float(pk, (float)o->via.f64);
    case MSGPACK_OBJECT_FLOAT64:
        return msgpack_pack_double(pk, o->via.f64);
    case MSGPACK_OBJECT_STR:
        return msgpack_pack_str_with_body(pk, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return msgpack_pack_bin_with_body(pk, o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT:
        return msgpack_pack_ext_with_body(pk, o->via.ext.ptr, o->via.ext.size, o->via.ext.type);
    case MSGPACK_OBJECT_ARRAY:
        return copy_array(pk, &o->via.array, depth);
    case MSGPACK_OBJECT_MAP:
        return copy_map(pk, &o->via.map, depth);
    }
    return -1;
}

static int noop(const struct cel_host *host, struct cel_job *job, void *state)
{
    const msgpack_object *x = host->arg(job, 0, "x");
    if (!x)
        return 0;
    if (copy(host->result(job), x, 0) != 0)
        return host->fail(job, "ValueError", "bench.noop: value nested deeper than %d levels",
                          MAX_DEPTH);
    return 0;
}

/* ---- time ---- */

static void sleep_for(double seconds)
{
    struct timespec left = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

static int sleep_task(const struct cel_host *host, struct cel_job *job, void *state)
{
    double seconds;
    int rc = need_number(host, job, "seconds", &seconds);
    if (rc == 0)
        sleep_for(seconds);
    return rc;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Busy-loops for seconds; returns early with "soft-timeout" once the soft limit has passed. */
static int spin(const struct cel_host *host, struct cel_job *job, void *state)
{
    double seconds;
    int rc = need_number(host, job, "seconds", &seconds);
    if (rc != 0)
        return rc;
    double end = now() + seconds;
    uint64_t iterations = 0;
    do {
        iterations++;
        if (host->deadline_passed(job)) {
            host->log(job, CEL_LOG_INFO, "bench.spin: soft time limit after %llu iterations",
                      (unsigned long long)iterations);
            return msgpack_pack_str_with_body(host->result(job), "soft-timeout", 12);
        }
    } while (now() < end);
    return msgpack_pack_uint64(host->result(job), iterations);
}

/* ---- failures ---- */

static int fail(const struct cel_host *host, struct cel_job *job, void *state)
{
    const msgpack_object *m = host->arg(job, 0, "message");
    if (m && m->type == MSGPACK_OBJECT_STR)
        return host->fail(job, "RuntimeError", "%.*s", (int)m->via.str.size, m->via.str.ptr);
    return host->fail(job, "RuntimeError", "bench.fail called");
}

/* Retries (1 s countdown) while fewer than n retries happened, then returns n. */
static int flaky(const struct cel_host *host, struct cel_job *job, void *state)
{
    const msgpack_object *o = host->arg(job, 0, "n");
    if (!o ||
        (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER && o->type != MSGPACK_OBJECT_NEGATIVE_INTEGER))
        return host->fail(job, "TypeError", "bench.flaky() argument 'n' must be int");
    int64_t n = o->via.i64;
    int64_t retries = host->info(job)->retries;
    if (retries < n)
        return host->retry(job, 1.0, "RuntimeError", "bench.flaky: attempt %lld of %lld failed",
                           (long long)retries + 1, (long long)n + 1);
    return msgpack_pack_int64(host->result(job), n);
}

/* The write is deliberately through a NULL pointer; sanitizers must not turn it into a report. */
__attribute__((no_sanitize("undefined"))) static int crash(const struct cel_host *host,
                                                           struct cel_job *job, void *state)
{
    volatile int *volatile p = NULL;
    *p = 1;
    return 0;
}

static int abort_task(const struct cel_host *host, struct cel_job *job, void *state)
{
    abort();
}

/* ---- resources ---- */

static int alloc(const struct cel_host *host, struct cel_job *job, void *state)
{
    double bytes;
    int rc = need_number(host, job, "bytes", &bytes);
    if (rc != 0)
        return rc;
    size_t n = (size_t)bytes;
    volatile char *p = malloc(n ? n : 1);
    if (!p)
        return host->fail(job, "MemoryError", "bench.alloc: cannot allocate %zu bytes", n);
    long page = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < n; i += (size_t)page)
        p[i] = (char)i;
    free((void *)p);
    return msgpack_pack_uint64(host->result(job), n);
}

/* One UPSERT statement is one atomic transaction, so concurrent workers never lose a count. */
static int count(const struct cel_host *host, struct cel_job *job, void *state)
{
    struct bench *b = state;
    const msgpack_object *name = host->arg(job, 0, "name");
    if (!name || name->type != MSGPACK_OBJECT_STR)
        return host->fail(job, "TypeError", "bench.count() argument 'name' must be str");
    sqlite3_bind_text(b->count, 1, name->via.str.ptr, (int)name->via.str.size, SQLITE_STATIC);
    int rc = sqlite3_step(b->count);
    int64_t value = rc == SQLITE_ROW ? sqlite3_column_int64(b->count, 0) : 0;
    if (rc == SQLITE_ROW)
        rc = sqlite3_step(b->count);
    sqlite3_reset(b->count);
    sqlite3_clear_bindings(b->count);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return host->retry(job, -1, "RuntimeError", "bench.db is busy");
    if (rc != SQLITE_DONE)
        return host->fail(job, "RuntimeError", "bench.db: %s", sqlite3_errmsg(b->db));
    return msgpack_pack_int64(host->result(job), value);
}

/* ---- database ---- */

static void bench_fini(void *state)
{
    struct bench *b = state;
    if (!b)
        return;
    sqlite3_finalize(b->count);
    sqlite3_close(b->db);
    free(b);
}

static int bench_init(const struct cel_host *host, void **state)
{
    struct bench *b = calloc(1, sizeof *b);
    if (!b)
        return CEL_ENOMEM;
    if (svc_db_open("bench.db", &b->db) != 0 ||
        sqlite3_exec(b->db,
                     "PRAGMA synchronous=NORMAL;"
                     "CREATE TABLE IF NOT EXISTS counters("
                     "  name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(b->db,
                           "INSERT INTO counters(name, value) VALUES(?1, 1) "
                           "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
                           -1, &b->count, NULL) != SQLITE_OK) {
        bench_fini(b);
        return CEL_EIO;
    }
    *state = b;
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "bench.noop", .handler = noop},
    {.name = "bench.sleep", .handler = sleep_task},
    {.name = "bench.fail", .handler = fail},
    {.name = "bench.flaky", .handler = flaky, .max_retries = 10},
    {.name = "bench.crash", .handler = crash},
    {.name = "bench.abort", .handler = abort_task},
    {.name = "bench.spin", .handler = spin},
    {.name = "bench.alloc", .handler = alloc},
    {.name = "bench.count", .handler = count},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_service),
    .name = "bench",
    .tasks = tasks,
    .init = bench_init,
    .fini = bench_fini,
};

CEL_SERVICE_EXPORT(service)
