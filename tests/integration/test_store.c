/* test_store.c: the Redis store against a real Redis (CELERIAC_RESULT_BACKEND), plus a private
 * redis-server for the restart test. With CEL_STORE_CELERY_IDS=<succ>,<fail>,<json> set it only
 * writes those three results for tests/integration/test_store_celery.py to read with Celery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/redis_url.h"
#include "common/result.h"
#include "common/store.h"

/* ---- helpers ---- */

static char prefix[64];
static int seq;

static const char *backend_url(void)
{
    const char *url = getenv("CELERIAC_RESULT_BACKEND");
    if (!url || !*url)
        fail_msg("CELERIAC_RESULT_BACKEND is not set: start the stack (scripts/stack.sh up) and "
                 "eval its env");
    return url;
}

static struct cel_store *open_url(const char *url)
{
    struct cel_store_opts o = {.url = url, .command_timeout_ms = 5000};
    struct cel_store *s = NULL;
    char err[256];
    if (cel_store_open(&s, &o, err, sizeof err) != 0)
        fail_msg("cel_store_open(%s): %s", url, err);
    return s;
}

static struct cel_store *open_store(void)
{
    return open_url(backend_url());
}

/* A fresh id unique to this process and run. */
static const char *uid(char buf[96])
{
    snprintf(buf, 96, "%s-%d", prefix, ++seq);
    return buf;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

#define DATE_DONE INT64_C(1795304569613563) /* 2026-11-21T23:42:49.613563 */

/* A meta encoded by the codec (common/result.h), as the worker writes it. */
static void meta_encode(struct cel_buf *b, const char *task_id, const char *status,
                        struct cel_span result, const struct cel_exc *exc, enum cel_format fmt)
{
    struct cel_result r = {.status = status, .result = result, .exc = exc, .task_id = task_id};
    r.date_done = cel_state_ready(status) ? DATE_DONE : 0;
    cel_buf_clear(b);
    if (cel_result_encode(&r, fmt, b) != 0)
        fail_msg("cel_result_encode failed");
}

/* SUCCESS with result {'id': value} */
static void meta_success_fmt(struct cel_buf *b, const char *task_id, int value, enum cel_format fmt)
{
    struct cel_buf res = CEL_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &res, cel_buf_msgpack_write);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "id");
    msgpack_pack_int(&pk, value);
    meta_encode(b, task_id, "SUCCESS", cel_buf_span(&res), NULL, fmt);
    cel_buf_free(&res);
}

static void meta_success(struct cel_buf *b, const char *task_id, int value)
{
    meta_success_fmt(b, task_id, value, CEL_FMT_MSGPACK);
}

/* FAILURE with {exc_type: type, exc_message: [message], exc_module: 'builtins'} */
static void meta_failure(struct cel_buf *b, const char *task_id, const char *type,
                         const char *message)
{
    struct cel_exc exc = {.type = type, .module = "builtins", .message = message};
    meta_encode(b, task_id, "FAILURE", (struct cel_span){NULL, 0}, &exc, CEL_FMT_MSGPACK);
}

/* A non-ready state (STARTED, RETRY) with a nil result. */
static void meta_state(struct cel_buf *b, const char *task_id, const char *status)
{
    meta_encode(b, task_id, status, (struct cel_span){NULL, 0}, NULL, CEL_FMT_MSGPACK);
}

/* JSON: SUCCESS with {"id": 1}, or another state with a nil result. */
static void meta_json(struct cel_buf *b, const char *task_id, const char *status)
{
    if (strcmp(status, "SUCCESS") == 0)
        meta_success_fmt(b, task_id, 1, CEL_FMT_JSON);
    else
        meta_encode(b, task_id, status, (struct cel_span){NULL, 0}, NULL, CEL_FMT_JSON);
}

static void put1(struct cel_store *s, const char *id, const struct cel_buf *meta)
{
    struct cel_store_put p = {id, cel_buf_span(meta), 60};
    if (cel_store_put_results(s, &p, 1) != 0)
        fail_msg("put %s: %s", id, cel_store_errstr(s));
}

static void assert_stored(struct cel_store *s, const char *id, const struct cel_buf *want)
{
    struct cel_buf got = CEL_BUF_INIT;
    assert_int_equal(cel_store_get_result(s, id, &got), 0);
    assert_int_equal(got.len, want->len);
    assert_memory_equal(got.data, want->data, want->len);
    cel_buf_free(&got);
}

/* Runs a command given as a string of space-separated words; the summary into out. */
static int cmd(struct cel_store *s, struct cel_buf *out, const char *line)
{
    const char *argv[16];
    char copy[512];
    int argc = 0;
    snprintf(copy, sizeof copy, "%s", line);
    for (char *save = NULL, *w = strtok_r(copy, " ", &save); w && argc < 16;
         w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    cel_buf_clear(out);
    return cel_store_command(s, argc, argv, NULL, out);
}

static long long cmd_int(struct cel_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static long long cmd_int(struct cel_store *s, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct cel_buf out = CEL_BUF_INIT;
    if (cmd(s, &out, line) != 0)
        fail_msg("%s: %s", line, cel_store_errstr(s));
    long long v = 0;
    if (sscanf(out.data, "(integer) %lld", &v) != 1)
        fail_msg("%s: not an integer: %s", line, out.data);
    cel_buf_free(&out);
    return v;
}

/* ---- results ---- */

static void put_get_roundtrip(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf meta = CEL_BUF_INIT, got = CEL_BUF_INIT;
    char id[96];
    uid(id);
    assert_int_equal(cel_store_get_result(s, id, &got), CEL_ENOTFOUND);
    meta_success(&meta, id, 1);
    put1(s, id, &meta);
    assert_stored(s, id, &meta);
    long long ttl = cmd_int(s, "TTL celery-task-meta-%s", id);
    assert_true(ttl > 0 && ttl <= 60);

    /* a batch of 100 in one call, default expiry */
    struct cel_store_put items[100];
    struct cel_buf metas[100];
    char ids[100][96];
    for (int i = 0; i < 100; i++) {
        metas[i] = (struct cel_buf)CEL_BUF_INIT;
        meta_success(&metas[i], uid(ids[i]), i);
        items[i] = (struct cel_store_put){ids[i], cel_buf_span(&metas[i]), 0};
    }
    assert_int_equal(cel_store_put_results(s, items, 100), 0);
    for (int i = 0; i < 100; i++) {
        assert_stored(s, ids[i], &metas[i]);
        cel_buf_free(&metas[i]);
    }
    assert_true(cmd_int(s, "TTL celery-task-meta-%s", ids[99]) > 3600);
    cel_buf_free(&meta);
    cel_buf_free(&got);
    cel_store_free(s);
}

static void success_is_sticky(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf ok = CEL_BUF_INIT, bad = CEL_BUF_INIT;
    char id[96];

    /* msgpack: FAILURE after SUCCESS is skipped (and still reported as recorded) */
    meta_success(&ok, uid(id), 1);
    meta_failure(&bad, id, "ValueError", "late");
    put1(s, id, &ok);
    put1(s, id, &bad);
    assert_stored(s, id, &ok);

    /* the other way round SUCCESS replaces FAILURE; RETRY then SUCCESS too */
    meta_failure(&bad, uid(id), "ValueError", "first");
    meta_success(&ok, id, 2);
    put1(s, id, &bad);
    put1(s, id, &ok);
    assert_stored(s, id, &ok);

    /* JSON */
    meta_json(&ok, uid(id), "SUCCESS");
    meta_json(&bad, id, "FAILURE");
    put1(s, id, &ok);
    put1(s, id, &bad);
    assert_stored(s, id, &ok);
    meta_json(&bad, uid(id), "RETRY");
    meta_json(&ok, id, "SUCCESS");
    put1(s, id, &bad);
    put1(s, id, &ok);
    assert_stored(s, id, &ok);

    /* a stored map whose first key is not status (another writer): decoded, still sticky */
    msgpack_packer pk;
    uid(id);
    cel_buf_clear(&ok);
    msgpack_packer_init(&pk, &ok, cel_buf_msgpack_write);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "task_id");
    pack_str(&pk, id);
    pack_str(&pk, "status");
    pack_str(&pk, "SUCCESS");
    put1(s, id, &ok);
    meta_failure(&bad, id, "ValueError", "late");
    put1(s, id, &bad);
    assert_stored(s, id, &ok);
    /* map16 (more than 15 fields, e.g. result_extended plus extras) */
    uid(id);
    cel_buf_clear(&ok);
    msgpack_packer_init(&pk, &ok, cel_buf_msgpack_write);
    msgpack_pack_map(&pk, 16);
    pack_str(&pk, "status");
    pack_str(&pk, "SUCCESS");
    for (int i = 0; i < 15; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        pack_str(&pk, k);
        msgpack_pack_int(&pk, i);
    }
    assert_int_equal((unsigned char)ok.data[0], 0xde);
    put1(s, id, &ok);
    put1(s, id, &bad);
    assert_stored(s, id, &ok);
    /* JSON with status later in the object */
    uid(id);
    cel_buf_clear(&ok);
    cel_buf_printf(&ok, "{\"task_id\": \"%s\", \"status\": \"SUCCESS\", \"result\": 1}", id);
    put1(s, id, &ok);
    meta_json(&bad, id, "FAILURE");
    put1(s, id, &bad);
    assert_stored(s, id, &ok);
    /* ... and one that only mentions SUCCESS elsewhere is not */
    meta_failure(&ok, uid(id), "ValueError", "SUCCESS was expected");
    meta_failure(&bad, id, "KeyError", "second");
    put1(s, id, &ok);
    put1(s, id, &bad);
    assert_stored(s, id, &bad);

    cel_buf_free(&ok);
    cel_buf_free(&bad);
    cel_store_free(s);
}

static redisContext *raw_connect(void)
{
    struct cel_redis_url u;
    char err[256];
    if (cel_redis_url_parse(backend_url(), &u, err, sizeof err) != 0)
        fail_msg("%s", err);
    redisContext *c = u.is_unix ? redisConnectUnix(u.path) : redisConnect(u.host, u.port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

static void publish_observed(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf meta = CEL_BUF_INIT;
    char id[96], channel[128];
    uid(id);
    snprintf(channel, sizeof channel, "celery-task-meta-%s", id);
    redisContext *sub = raw_connect();
    redisReply *r = redisCommand(sub, "SUBSCRIBE %s", channel);
    assert_non_null(r);
    freeReplyObject(r);

    meta_success(&meta, id, 7);
    put1(s, id, &meta);
    assert_int_equal(redisGetReply(sub, (void **)&r), REDIS_OK);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_string_equal(r->element[0]->str, "message");
    assert_string_equal(r->element[1]->str, channel);
    assert_int_equal(r->element[2]->len, meta.len);
    assert_memory_equal(r->element[2]->str, meta.data, meta.len);
    freeReplyObject(r);
    redisFree(sub);
    cel_buf_free(&meta);
    cel_store_free(s);
}

/* Child: after delay_ms writes the given states in order, then exits 0. */
static pid_t spawn_writer(const char *id, int delay_ms, bool started_first)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid > 0)
        return pid;
    struct cel_store *s = open_store();
    struct cel_buf meta = CEL_BUF_INIT;
    sleep_ms(delay_ms);
    if (started_first) {
        meta_state(&meta, id, "STARTED");
        put1(s, id, &meta);
        sleep_ms(delay_ms);
    }
    meta_success(&meta, id, 42);
    put1(s, id, &meta);
    cel_buf_free(&meta);
    cel_store_free(s);
    _exit(0);
}

static void reap_ok(pid_t pid)
{
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void wait_result_from_other_process(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf got = CEL_BUF_INIT, want = CEL_BUF_INIT;
    char id[96];
    uid(id);
    meta_success(&want, id, 42);

    /* written 200 ms later, after a non-ready STARTED that must not end the wait */
    pid_t pid = spawn_writer(id, 200, true);
    assert_int_equal(cel_store_wait_result(s, id, 10000, &got), 0);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.data, want.data, want.len);
    reap_ok(pid);

    /* already there: returned by the GET; the subscriber connection is reused */
    cel_buf_clear(&got);
    assert_int_equal(cel_store_wait_result(s, id, 0, &got), 0);
    assert_memory_equal(got.data, want.data, want.len);

    /* again with a second id on the same store */
    cel_buf_clear(&got);
    uid(id);
    meta_success(&want, id, 42);
    pid = spawn_writer(id, 200, false);
    assert_int_equal(cel_store_wait_result(s, id, -1, &got), 0);
    assert_memory_equal(got.data, want.data, want.len);
    reap_ok(pid);

    cel_buf_free(&got);
    cel_buf_free(&want);
    cel_store_free(s);
}

static void wait_result_times_out(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf got = CEL_BUF_INIT, meta = CEL_BUF_INIT;
    char id[96];
    assert_int_equal(cel_store_wait_result(s, uid(id), 300, &got), CEL_ETIMEDOUT);
    assert_int_equal(got.len, 0);
    /* a stored non-ready state does not satisfy the wait either */
    meta_state(&meta, id, "RETRY");
    put1(s, id, &meta);
    assert_int_equal(cel_store_wait_result(s, id, 200, &got), CEL_ETIMEDOUT);
    assert_int_equal(got.len, 0);
    /* and the store is still usable afterwards */
    meta_success(&meta, id, 1);
    put1(s, id, &meta);
    assert_int_equal(cel_store_wait_result(s, id, 200, &got), 0);
    /* JSON metas: the status is read from either format */
    cel_buf_clear(&got);
    meta_json(&meta, uid(id), "RETRY");
    put1(s, id, &meta);
    assert_int_equal(cel_store_wait_result(s, id, 100, &got), CEL_ETIMEDOUT);
    meta_json(&meta, id, "FAILURE");
    put1(s, id, &meta);
    assert_int_equal(cel_store_wait_result(s, id, 100, &got), 0);
    assert_int_equal(got.len, meta.len);
    cel_buf_free(&got);
    cel_buf_free(&meta);
    cel_store_free(s);
}

/* ---- idempotency ---- */

static void idem_claims_are_exclusive(void **state)
{
    enum { N = 8 };
    char key[96];
    int ready[2], go[2];
    pid_t pids[N];
    uid(key);
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct cel_store *s = open_store();
            struct cel_buf out = CEL_BUF_INIT;
            char token[32], b = 0;
            enum cel_idem_state st;
            snprintf(token, sizeof token, "token-%d", i);
            if (write(ready[1], "r", 1) != 1 || read(go[0], &b, 1) != 1)
                _exit(100);
            int rc = cel_store_idem_claim(s, key, token, 30000, &st, &out);
            cel_store_free(s);
            _exit(rc == 0 ? (int)st : 101);
        }
    }
    for (int i = 0; i < N; i++) {
        char b;
        assert_int_equal(read(ready[0], &b, 1), 1);
    }
    char gos[N];
    memset(gos, 'g', N);
    assert_int_equal(write(go[1], gos, N), N);
    int claimed = 0, running = 0;
    for (int i = 0; i < N; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st));
        claimed += WEXITSTATUS(st) == CEL_IDEM_CLAIMED;
        running += WEXITSTATUS(st) == CEL_IDEM_RUNNING;
    }
    assert_int_equal(claimed, 1);
    assert_int_equal(running, N - 1);
    close(ready[0]), close(ready[1]), close(go[0]), close(go[1]);
    struct cel_store *s = open_store();
    assert_int_equal(cmd_int(s, "DEL celeriac-idem-%s", key), 1);
    cel_store_free(s);
}

static void wait_key_gone(struct cel_store *s, const char *key)
{
    for (int i = 0; i < 500 && cmd_int(s, "EXISTS %s", key) == 1; i++)
        sleep_ms(20);
    assert_int_equal(cmd_int(s, "EXISTS %s", key), 0);
}

static void idem_lease_and_done(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf out = CEL_BUF_INIT, meta = CEL_BUF_INIT;
    enum cel_idem_state st;
    char key[96], rkey[128];
    uid(key);
    snprintf(rkey, sizeof rkey, "celeriac-idem-%s", key);

    assert_int_equal(cel_store_idem_claim(s, key, "A", 300, &st, &out), 0);
    assert_int_equal(st, CEL_IDEM_CLAIMED);
    long long pttl = cmd_int(s, "PTTL %s", rkey);
    assert_true(pttl > 0 && pttl <= 300);
    assert_int_equal(cel_store_idem_claim(s, key, "B", 300, &st, &out), 0);
    assert_int_equal(st, CEL_IDEM_RUNNING);
    /* redelivery to the same claimer */
    assert_int_equal(cel_store_idem_claim(s, key, "A", 300, &st, &out), 0);
    assert_int_equal(st, CEL_IDEM_CLAIMED);
    assert_int_equal(cel_store_idem_renew(s, key, "A", 300), 0);
    assert_int_equal(cel_store_idem_renew(s, key, "B", 300), CEL_EBUSY);
    assert_int_equal(cel_store_idem_release(s, key, "B"), CEL_EBUSY);

    /* A dies: its lease runs out and B takes over */
    wait_key_gone(s, rkey);
    assert_int_equal(cel_store_idem_claim(s, key, "B", 30000, &st, &out), 0);
    assert_int_equal(st, CEL_IDEM_CLAIMED);
    meta_success(&meta, key, 5);
    assert_int_equal(cel_store_idem_complete(s, key, "A", cel_buf_span(&meta), 60), CEL_EBUSY);
    assert_int_equal(cel_store_idem_complete(s, key, "B", cel_buf_span(&meta), 60), 0);
    assert_int_equal(cel_store_idem_complete(s, key, "B", cel_buf_span(&meta), 60), 0);
    long long ttl = cmd_int(s, "TTL %s", rkey);
    assert_true(ttl > 0 && ttl <= 60);

    /* done: every later claim gets the meta */
    assert_int_equal(cel_store_idem_claim(s, key, "C", 300, &st, &out), 0);
    assert_int_equal(st, CEL_IDEM_DONE);
    assert_int_equal(out.len, meta.len);
    assert_memory_equal(out.data, meta.data, meta.len);
    assert_int_equal(cel_store_idem_release(s, key, "B"), CEL_EBUSY);
    assert_int_equal(cel_store_idem_renew(s, key, "B", 100), CEL_EBUSY);

    /* release gives the key up for a duplicate */
    uid(key);
    assert_int_equal(cel_store_idem_claim(s, key, "A", 30000, &st, &out), 0);
    assert_int_equal(cel_store_idem_release(s, key, "A"), 0);
    assert_int_equal(cel_store_idem_release(s, key, "A"), 0);
    assert_int_equal(cel_store_idem_claim(s, key, "B", 30000, &st, &out), 0);
    assert_int_equal(st, CEL_IDEM_CLAIMED);
    assert_int_equal(cel_store_idem_release(s, key, "B"), 0);

    cel_buf_free(&out);
    cel_buf_free(&meta);
    cel_store_free(s);
}

/* ---- attempts, revocations, registry ---- */

static void attempts_counter(void **state)
{
    struct cel_store *s = open_store();
    char id[96];
    int64_t n = 0;
    uid(id);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(cel_store_attempt_incr(s, id, 120, &n), 0);
        assert_int_equal(n, i);
    }
    long long ttl = cmd_int(s, "TTL celeriac-attempts-%s", id);
    assert_true(ttl > 0 && ttl <= 120);
    assert_int_equal(cel_store_attempt_clear(s, id), 0);
    assert_int_equal(cmd_int(s, "EXISTS celeriac-attempts-%s", id), 0);
    assert_int_equal(cel_store_attempt_incr(s, id, 0, &n), 0);
    assert_int_equal(n, 1);
    assert_true(cmd_int(s, "TTL celeriac-attempts-%s", id) > 0);
    assert_int_equal(cel_store_attempt_clear(s, id), 0);
    cel_store_free(s);
}

struct seen {
    char ids[8][96];
    bool terminate[8];
    int n;
};

static void collect(void *ctx, const char *task_id, bool terminate)
{
    struct seen *sn = ctx;
    if (strncmp(task_id, prefix, strlen(prefix)) != 0 || sn->n == 8)
        return; /* other tests share the key */
    snprintf(sn->ids[sn->n], 96, "%s", task_id);
    sn->terminate[sn->n++] = terminate;
}

static int find(const struct seen *sn, const char *id)
{
    for (int i = 0; i < sn->n; i++)
        if (strcmp(sn->ids[i], id) == 0)
            return i;
    return -1;
}

static void revocations(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf out = CEL_BUF_INIT;
    char a[96], b[96], c[96];
    uid(a), uid(b), uid(c);
    struct seen sn = {0};
    int64_t latest = 0, before = 0;
    assert_int_equal(cel_store_revoked_since(s, INT64_MAX / 2, &before, collect, &sn), 0);
    assert_int_equal(sn.n, 0);

    assert_int_equal(cel_store_revoke(s, a, false, 0), 0);
    assert_int_equal(cel_store_revoke(s, b, true, 0), 0);
    assert_int_equal(cel_store_revoked_since(s, 0, &latest, collect, &sn), 0);
    assert_true(find(&sn, a) >= 0 && !sn.terminate[find(&sn, a)]);
    assert_true(find(&sn, b) >= 0 && sn.terminate[find(&sn, b)]);
    assert_true(latest > 1700000000000LL);
    long long ttl = cmd_int(s, "TTL celeriac-revoked");
    assert_true(ttl > 10000 && ttl <= 10800);

    /* incremental: from the latest score on, a is no longer reported once c is newer */
    sleep_ms(5);
    assert_int_equal(cel_store_revoke(s, c, false, 0), 0);
    memset(&sn, 0, sizeof sn);
    int64_t latest2 = 0;
    assert_int_equal(cel_store_revoked_since(s, latest + 1, &latest2, collect, &sn), 0);
    assert_true(find(&sn, c) >= 0);
    assert_int_equal(find(&sn, a), -1);
    assert_true(latest2 > latest);
    memset(&sn, 0, sizeof sn);
    assert_int_equal(cel_store_revoked_since(s, latest2 + 1, &latest, collect, &sn), 0);
    assert_int_equal(sn.n, 0);
    assert_int_equal(latest, latest2 + 1);

    char line[512];
    snprintf(line, sizeof line, "ZREM celeriac-revoked r:%s t:%s r:%s", a, b, c);
    assert_int_equal(cmd(s, &out, line), 0);
    assert_string_equal(out.data, "(integer) 3");
    cel_buf_free(&out);
    cel_store_free(s);
}

struct workers {
    char host[4][96];
    char json[4][256];
    int n;
};

static void collect_worker(void *ctx, const char *hostname, struct cel_span json)
{
    struct workers *w = ctx;
    if (strncmp(hostname, prefix, strlen(prefix)) != 0 || w->n == 4)
        return;
    snprintf(w->host[w->n], 96, "%s", hostname);
    snprintf(w->json[w->n++], 256, "%.*s", (int)json.len, json.ptr);
}

static void worker_registry(void **state)
{
    struct cel_store *s = open_store();
    char h1[96], h2[96], doc[256];
    uid(h1), uid(h2);
    snprintf(doc, sizeof doc, "{\"hostname\": \"%s\", \"queues\": [\"users\"]}", h1);
    assert_int_equal(cel_store_register_worker(s, h1, (struct cel_span){doc, strlen(doc)}, 30), 0);
    assert_int_equal(cel_store_register_worker(s, h2, CEL_SPAN_LIT("{}"), 30), 0);
    assert_true(cmd_int(s, "TTL celeriac-worker-%s", h1) > 0);
    struct workers w = {0};
    assert_int_equal(cel_store_list_workers(s, collect_worker, &w), 0);
    assert_int_equal(w.n, 2);
    int i1 = strcmp(w.host[0], h1) == 0 ? 0 : 1;
    assert_string_equal(w.host[i1], h1);
    assert_string_equal(w.json[i1], doc);
    assert_string_equal(w.host[1 - i1], h2);
    assert_string_equal(w.json[1 - i1], "{}");
    assert_int_equal(cel_store_unregister_worker(s, h1), 0);
    memset(&w, 0, sizeof w);
    assert_int_equal(cel_store_list_workers(s, collect_worker, &w), 0);
    assert_int_equal(w.n, 1);
    assert_string_equal(w.host[0], h2);
    assert_int_equal(cel_store_unregister_worker(s, h2), 0);
    cel_store_free(s);
}

/* ---- chords ---- */

static void encode_part(struct cel_buf *b, const char *tid, int value)
{
    msgpack_packer pk;
    cel_buf_clear(b);
    msgpack_packer_init(&pk, b, cel_buf_msgpack_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 1);
    pack_str(&pk, tid);
    pack_str(&pk, "SUCCESS");
    msgpack_pack_int(&pk, value);
}

static void chord_counter(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf out = CEL_BUF_INIT, parts = CEL_BUF_INIT, enc[3];
    char gid[96], tid[3][96], line[256];
    bool complete = true;
    uid(gid);
    snprintf(line, sizeof line, "SETEX celery-taskset-meta-%s.s 60 3", gid);
    assert_int_equal(cmd(s, &out, line), 0);
    static const int order[3] = {2, 0, 1};
    for (int k = 0; k < 3; k++) {
        int i = order[k];
        enc[i] = (struct cel_buf)CEL_BUF_INIT;
        encode_part(&enc[i], uid(tid[i]), i * 10);
        int rc = cel_store_chord_part(s, gid, i, cel_buf_span(&enc[i]), 60, &complete, &parts);
        if (rc != 0)
            fail_msg("chord_part: %s", cel_store_errstr(s));
        assert_int_equal(complete, k == 2);
        if (k == 0) { /* the same part again (redelivery) does not count twice */
            assert_int_equal(
                cel_store_chord_part(s, gid, i, cel_buf_span(&enc[i]), 60, &complete, &parts), 0);
            assert_false(complete);
            assert_true(cmd_int(s, "TTL celery-taskset-meta-%s.j", gid) > 0);
        }
    }
    /* parts: msgpack array of bin, in group_index order */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, parts.data, parts.len, NULL), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(u.data.via.array.size, 3);
    for (int i = 0; i < 3; i++) {
        const msgpack_object *o = &u.data.via.array.ptr[i];
        assert_int_equal(o->type, MSGPACK_OBJECT_BIN);
        assert_int_equal(o->via.bin.size, enc[i].len);
        assert_memory_equal(o->via.bin.ptr, enc[i].data, enc[i].len);
        cel_buf_free(&enc[i]);
    }
    msgpack_unpacked_destroy(&u);

    assert_int_equal(cel_store_chord_cleanup(s, gid), 0);
    assert_int_equal(
        cmd_int(s, "EXISTS celery-taskset-meta-%s.j celery-taskset-meta-%s.s", gid, gid), 0);

    /* without .s nothing completes; with .t the size grows; index < 0 scores +inf */
    uid(gid);
    encode_part(&enc[0], uid(tid[0]), 1);
    cel_buf_clear(&parts);
    assert_int_equal(cel_store_chord_part(s, gid, -1, cel_buf_span(&enc[0]), 60, &complete, &parts),
                     0);
    assert_false(complete);
    snprintf(line, sizeof line, "ZRANGE celery-taskset-meta-%s.j 0 -1 WITHSCORES", gid);
    assert_int_equal(cmd(s, &out, line), 0);
    assert_non_null(strstr(out.data, "2) inf"));
    snprintf(line, sizeof line, "SETEX celery-taskset-meta-%s.s 60 1", gid);
    assert_int_equal(cmd(s, &out, line), 0);
    snprintf(line, sizeof line, "SETEX celery-taskset-meta-%s.t 60 1", gid);
    assert_int_equal(cmd(s, &out, line), 0);
    encode_part(&enc[0], uid(tid[1]), 2);
    assert_int_equal(cel_store_chord_part(s, gid, -1, cel_buf_span(&enc[0]), 60, &complete, &parts),
                     0);
    assert_true(complete);
    assert_int_equal(cel_store_chord_cleanup(s, gid), 0);
    assert_int_equal(cmd_int(s, "EXISTS celery-taskset-meta-%s.t", gid), 0);
    cel_buf_free(&enc[0]);
    cel_buf_free(&out);
    cel_buf_free(&parts);
    cel_store_free(s);
}

/* ---- scripts, commands, errors ---- */

static void noscript_recovery(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf meta = CEL_BUF_INIT, out = CEL_BUF_INIT;
    enum cel_idem_state st;
    char id[96];
    assert_int_equal(cmd(s, &out, "SCRIPT FLUSH"), 0);
    meta_success(&meta, uid(id), 1);
    put1(s, id, &meta);
    assert_stored(s, id, &meta);
    assert_int_equal(cmd(s, &out, "SCRIPT FLUSH"), 0);
    assert_int_equal(cel_store_idem_claim(s, id, "T", 1000, &st, &out), 0);
    assert_int_equal(st, CEL_IDEM_CLAIMED);
    assert_int_equal(cel_store_idem_release(s, id, "T"), 0);
    cel_buf_free(&meta);
    cel_buf_free(&out);
    cel_store_free(s);
}

static void generic_command(void **state)
{
    struct cel_store *s = open_store();
    struct cel_buf out = CEL_BUF_INIT;
    char id[96], line[256];
    assert_int_equal(cmd(s, &out, "PING"), 0);
    assert_string_equal(out.data, "PONG");
    uid(id);
    snprintf(line, sizeof line, "GET nothing-%s", id);
    assert_int_equal(cmd(s, &out, line), 0);
    assert_string_equal(out.data, "(nil)");
    snprintf(line, sizeof line, "RPUSH list-%s a b", id);
    assert_int_equal(cmd(s, &out, line), 0);
    snprintf(line, sizeof line, "LRANGE list-%s 0 -1", id);
    assert_int_equal(cmd(s, &out, line), 0);
    assert_string_equal(out.data, "1) a\n2) b");
    snprintf(line, sizeof line, "DEL list-%s", id);
    assert_int_equal(cmd(s, &out, line), 0);
    assert_int_equal(cmd(s, &out, "NOSUCHCOMMAND x"), CEL_EREDIS);
    assert_non_null(strstr(cel_store_errstr(s), "unknown command"));
    /* a binary-safe argument */
    const char *argv[] = {"ECHO", "a\0b"};
    size_t lens[] = {4, 3};
    cel_buf_clear(&out);
    assert_int_equal(cel_store_command(s, 2, argv, lens, &out), 0);
    assert_int_equal(out.len, 3);
    assert_memory_equal(out.data, "a\0b", 3);
    cel_buf_free(&out);
    cel_store_free(s);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void open_errors(void **state)
{
    struct cel_store *s = (struct cel_store *)1;
    struct cel_store_opts o = {.url = "http://x/"};
    char err[256], url[400];
    assert_int_equal(cel_store_open(&s, &o, err, sizeof err), CEL_EURL);
    assert_null(s);
    o.url = "rediss://:hunter2@127.0.0.1:1/0";
    assert_int_equal(cel_store_open(&s, &o, err, sizeof err), CEL_EUNSUPPORTED);
    assert_null(strstr(err, "hunter2"));

    snprintf(url, sizeof url, "redis://:hunter2@127.0.0.1:%d/0", free_port());
    o.url = url;
    assert_int_equal(cel_store_open(&s, &o, err, sizeof err), CEL_ECONN);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "127.0.0.1"));

    /* a password the server does not want */
    struct cel_redis_url u;
    assert_int_equal(cel_redis_url_parse(backend_url(), &u, err, sizeof err), 0);
    if (!u.password[0] && !u.is_unix) {
        snprintf(url, sizeof url, "redis://:hunter2@%s:%d/%d", u.host, u.port, u.db);
        o.url = url;
        assert_int_equal(cel_store_open(&s, &o, err, sizeof err), CEL_EAUTH);
        assert_null(strstr(err, "hunter2"));
        assert_non_null(strstr(err, "AUTH"));
    }
    cel_store_free(NULL);
}

/* ---- a private redis-server: restarts ---- */

struct server {
    char dir[64];
    int port;
    pid_t pid;
    const char *password; /* --requirepass, or NULL */
    bool unix_socket;     /* also listen on <dir>/redis.sock */
};

/* Servers still running when a test fails are stopped by the group teardown. */
static struct server live[4];

static void track(const struct server *sv, bool add)
{
    for (int i = 0; i < 4; i++)
        if (add ? live[i].pid == 0 : live[i].pid == sv->pid) {
            live[i] = add ? *sv : (struct server){0};
            return;
        }
}

static int stop_leftovers(void **state)
{
    for (int i = 0; i < 4; i++)
        if (live[i].pid > 0) {
            char rm[512];
            kill(live[i].pid, SIGKILL);
            waitpid(live[i].pid, NULL, 0);
            snprintf(rm, sizeof rm, "rm -rf %s", live[i].dir);
            if (system(rm) != 0)
                fprintf(stderr, "could not remove %s\n", live[i].dir);
        }
    return 0;
}

static bool server_up(const struct server *sv)
{
    redisContext *c = redisConnect("127.0.0.1", sv->port);
    bool up = c && !c->err;
    redisFree(c);
    if (up && sv->unix_socket) {
        char sock[128];
        snprintf(sock, sizeof sock, "%s/redis.sock", sv->dir);
        up = access(sock, F_OK) == 0;
    }
    return up;
}

static void server_start(struct server *sv)
{
    char port[16];
    snprintf(port, sizeof port, "%d", sv->port);
    sv->pid = fork();
    assert_true(sv->pid >= 0);
    if (sv->pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1), dup2(fd, 2);
        char sock[128];
        const char *argv[20] = {"redis-server", "--port", port,   "--bind",
                                "127.0.0.1",    "--save", "",     "--appendonly",
                                "no",           "--dir",  sv->dir};
        int n = 11;
        snprintf(sock, sizeof sock, "%s/redis.sock", sv->dir);
        if (sv->password)
            argv[n++] = "--requirepass", argv[n++] = sv->password;
        if (sv->unix_socket)
            argv[n++] = "--unixsocket", argv[n++] = sock;
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    track(sv, true);
    for (int i = 0; i < 3000; i++) {
        if (waitpid(sv->pid, NULL, WNOHANG) == sv->pid) {
            track(sv, false);
            fail_msg("redis-server on port %d exited at start (port taken?)", sv->port);
        }
        if (server_up(sv))
            return;
        sleep_ms(10);
    }
    fail_msg("redis-server on port %d did not start in 30 s", sv->port);
}

static void server_kill(struct server *sv)
{
    kill(sv->pid, SIGKILL);
    waitpid(sv->pid, NULL, 0);
    track(sv, false);
}

static void write_survives_restart(void **state)
{
    struct server sv = {.port = free_port()};
    snprintf(sv.dir, sizeof sv.dir, "/tmp/cel-store-%d-XXXXXX", (int)getpid());
    assert_non_null(mkdtemp(sv.dir));
    server_start(&sv);
    char url[96], id[96];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/2", sv.port);
    struct cel_store *s = open_url(url);
    struct cel_buf meta = CEL_BUF_INIT;
    int64_t n = 0;
    assert_int_equal(cel_store_attempt_incr(s, "warm", 60, &n), 0);
    server_kill(&sv);

    /* the caller's part: retry with reconnect and backoff until the write is recorded */
    int failed[2];
    assert_int_equal(pipe(failed), 0);
    meta_success(&meta, uid(id), 9);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct cel_store_put p = {id, cel_buf_span(&meta), 60};
        for (int attempt = 0; attempt < 200; attempt++) {
            if (cel_store_put_results(s, &p, 1) == 0)
                _exit(attempt > 0 ? 0 : 2);
            if (attempt == 0 && write(failed[1], "f", 1) != 1)
                _exit(3);
            sleep_ms(attempt < 5 ? 20 << attempt : 500);
            cel_store_reconnect(s);
        }
        _exit(1);
    }
    char b;
    assert_int_equal(read(failed[0], &b, 1), 1); /* the child has seen the outage */
    server_start(&sv);
    reap_ok(pid);
    close(failed[0]), close(failed[1]);

    /* the parent's store finds its connection dead and reconnects on its own, even for the
     * non-idempotent INCR (nothing was sent on the dead connection) */
    assert_stored(s, id, &meta);
    assert_int_equal(cel_store_attempt_incr(s, "fresh", 60, &n), 0);
    assert_int_equal(n, 1);
    server_kill(&sv);
    /* with the server gone a command fails cleanly */
    assert_int_equal(cel_store_attempt_incr(s, "fresh", 60, &n), CEL_ECONN);
    assert_non_null(strstr(cel_store_errstr(s), "127.0.0.1"));
    cel_store_free(s);
    cel_buf_free(&meta);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", sv.dir);
    assert_int_equal(system(rm), 0);
}

static void subscriber_survives_restart(void **state)
{
    struct server sv = {.port = free_port()};
    snprintf(sv.dir, sizeof sv.dir, "/tmp/cel-store-%d-XXXXXX", (int)getpid());
    assert_non_null(mkdtemp(sv.dir));
    server_start(&sv);
    char url[96], id[96];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", sv.port);
    struct cel_store *s = open_url(url);
    struct cel_buf got = CEL_BUF_INIT, meta = CEL_BUF_INIT;
    /* open the subscriber, then restart the server under it */
    assert_int_equal(cel_store_wait_result(s, uid(id), 10, &got), CEL_ETIMEDOUT);
    server_kill(&sv);
    server_start(&sv);
    meta_success(&meta, id, 3);
    put1(s, id, &meta);
    assert_int_equal(cel_store_wait_result(s, id, 1000, &got), 0);
    assert_memory_equal(got.data, meta.data, meta.len);
    server_kill(&sv);
    assert_int_equal(cel_store_wait_result(s, id, 1000, &got), CEL_ECONN);
    cel_store_free(s);
    cel_buf_free(&got);
    cel_buf_free(&meta);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", sv.dir);
    assert_int_equal(system(rm), 0);
}

static void server_rmdir(struct server *sv)
{
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", sv->dir);
    assert_int_equal(system(rm), 0);
}

/* A unix socket, a password from CELERIAC_REDIS_PASSWORD, a Redis 6 ACL user, SELECT. */
static void unix_socket_and_auth(void **state)
{
    struct server sv = {.port = free_port(), .password = "s3cret pw", .unix_socket = true};
    snprintf(sv.dir, sizeof sv.dir, "/tmp/cel-store-%d-XXXXXX", (int)getpid());
    assert_non_null(mkdtemp(sv.dir));
    server_start(&sv);
    char url[256], id[96], err[256];
    struct cel_buf meta = CEL_BUF_INIT, out = CEL_BUF_INIT;
    struct cel_store *s = NULL;
    snprintf(url, sizeof url, "unix://%s/redis.sock?db=5", sv.dir);
    struct cel_store_opts o = {.url = url};
    assert_int_equal(cel_store_open(&s, &o, err, sizeof err), CEL_EAUTH); /* NOAUTH */
    assert_non_null(strstr(err, "CELERIAC_REDIS_PASSWORD"));
    setenv("CELERIAC_REDIS_PASSWORD", "wrong", 1);
    assert_int_equal(cel_store_open(&s, &o, err, sizeof err), CEL_EAUTH);
    assert_null(strstr(err, "wrong"));
    setenv("CELERIAC_REDIS_PASSWORD", "s3cret pw", 1);
    s = open_url(url);
    unsetenv("CELERIAC_REDIS_PASSWORD");
    meta_success(&meta, uid(id), 4);
    put1(s, id, &meta);
    assert_int_equal(cmd(s, &out, "CLIENT INFO"), 0);
    assert_non_null(strstr(out.data, " db=5 "));
    assert_int_equal(
        cmd(s, &out, "ACL SETUSER alice on >alice%pw ~celery-task-meta-* resetchannels &* +@all"),
        0);
    cel_store_free(s);

    snprintf(url, sizeof url, "redis://alice:alice%%25pw@127.0.0.1:%d/5", sv.port);
    s = open_url(url);
    assert_stored(s, id, &meta);
    assert_int_equal(cmd(s, &out, "ACL WHOAMI"), 0);
    assert_string_equal(out.data, "alice");
    cel_store_free(s);
    snprintf(url, sizeof url, "redis://alice:nope@127.0.0.1:%d/5", sv.port);
    o.url = url;
    assert_int_equal(cel_store_open(&s, &o, err, sizeof err), CEL_EAUTH);
    assert_null(strstr(err, "nope"));
    server_kill(&sv);
    server_rmdir(&sv);
    cel_buf_free(&meta);
    cel_buf_free(&out);
}

/* A fake server that answers PING, then half-closes (FIN) while the client is blocked writing a
 * large pipeline, then closes (RST): the client's write fails with EPIPE, which must not kill
 * the process with SIGPIPE (the default disposition during this test). */
static void fake_server(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    char buf[4096];
    close(lfd);                            /* the store's reconnect is refused */
    ssize_t n = read(fd, buf, sizeof buf); /* PING */
    if (n <= 0 || write(fd, "+PONG\r\n", 7) != 7)
        _exit(1);
    n = read(fd, buf, sizeof buf); /* the start of the big EVALSHA */
    shutdown(fd, SHUT_WR);
    sleep_ms(100);
    close(fd);
    _exit(n > 0 ? 0 : 2);
}

static void broken_pipe_is_an_error(void **state)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        fake_server(lfd);
    close(lfd);
    char url[96], id[96];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", ntohs(a.sin_port));
    struct cel_store *s = open_url(url);
    void (*old)(int) = signal(SIGPIPE, SIG_DFL);
    size_t big = 64 << 20;
    char *meta = malloc(big);
    assert_non_null(meta);
    memset(meta, 'x', big);
    struct cel_store_put p = {uid(id), {meta, big}, 60};
    assert_int_equal(cel_store_put_results(s, &p, 1), CEL_ECONN);
    signal(SIGPIPE, old);
    reap_ok(pid);
    free(meta);
    cel_store_free(s);
}

/* ---- the writer for test_store_celery.py ---- */

static void celery_writer(void **state)
{
    const char *ids = getenv("CEL_STORE_CELERY_IDS");
    const char *delay = getenv("CEL_STORE_CELERY_DELAY_MS");
    char succ[128], fail[128], json[128];
    assert_non_null(ids);
    assert_int_equal(sscanf(ids, "%127[^,],%127[^,],%127s", succ, fail, json), 3);
    struct cel_store *s = open_store();
    struct cel_buf m[3] = {CEL_BUF_INIT, CEL_BUF_INIT, CEL_BUF_INIT};
    meta_success(&m[0], succ, 1);
    meta_failure(&m[1], fail, "ValueError", "email taken");
    meta_json(&m[2], json, "SUCCESS");
    if (delay)
        sleep_ms(atoi(delay));
    struct cel_store_put p[3] = {{succ, cel_buf_span(&m[0]), 600},
                                 {fail, cel_buf_span(&m[1]), 600},
                                 {json, cel_buf_span(&m[2]), 600}};
    assert_int_equal(cel_store_put_results(s, p, 3), 0);
    for (int i = 0; i < 3; i++)
        cel_buf_free(&m[i]);
    cel_store_free(s);
}

int main(void)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    snprintf(prefix, sizeof prefix, "cstest-%d-%04x", (int)getpid(), rand() & 0xffff);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_get_roundtrip),
        cmocka_unit_test(success_is_sticky),
        cmocka_unit_test(publish_observed),
        cmocka_unit_test(wait_result_from_other_process),
        cmocka_unit_test(wait_result_times_out),
        cmocka_unit_test(idem_claims_are_exclusive),
        cmocka_unit_test(idem_lease_and_done),
        cmocka_unit_test(attempts_counter),
        cmocka_unit_test(revocations),
        cmocka_unit_test(worker_registry),
        cmocka_unit_test(chord_counter),
        cmocka_unit_test(noscript_recovery),
        cmocka_unit_test(generic_command),
        cmocka_unit_test(open_errors),
        cmocka_unit_test(write_survives_restart),
        cmocka_unit_test(subscriber_survives_restart),
        cmocka_unit_test(unix_socket_and_auth),
        cmocka_unit_test(broken_pipe_is_an_error),
        cmocka_unit_test(celery_writer),
    };
    if (getenv("CEL_STORE_CELERY_IDS"))
        cmocka_set_test_filter("celery_writer");
    else
        cmocka_set_skip_filter("celery_writer");
    return cmocka_run_group_tests_name("store", tests, NULL, stop_leftovers);
}
