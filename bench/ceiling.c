/* ceiling.c: the broker's and Redis's ceiling on this machine: minimal rabbitmq-c + hiredis
 * loops doing only what the worker must do per job, so worker throughput can be reported as a
 * fraction of what the servers allow in the same run.
 *
 *   ceiling drain  N PREFETCH  queue pre-filled with N messages; consume, SETEX+PUBLISH the
 *                              result pipelined per batch of ready deliveries, multiple-ack
 *   ceiling single N           the same, one message at a time (consume, store, ack)
 *   ceiling publish N BATCH    confirming publisher alone (batches of BATCH)
 *   ceiling duplex N BATCH     confirming publisher and batch consumer at once (two processes)
 *   ceiling rtt N              round trip: publish, consume, SETEX+PUBLISH, pubsub wake-up
 *
 * Environment: CELERIAC_BROKER_URL (amqp://user:pass@127.0.0.1:port/), CELERIAC_RESULT_BACKEND
 * (redis://127.0.0.1:port/0). Prints one JSON object per run on stdout. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BODY_LEN 40 /* the size of a bench.noop Celery body: [[i], {}, {callbacks: nil, ...}] */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "ceiling: %s\n", what);
    exit(1);
}

static void check_rpc(amqp_connection_state_t c, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        die(what);
}

static amqp_connection_state_t amqp_open(void)
{
    const char *env = getenv("CELERIAC_BROKER_URL");
    if (!env)
        die("CELERIAC_BROKER_URL not set");
    char *url = strdup(env);
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK)
        die("bad CELERIAC_BROKER_URL");
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK)
        die("cannot connect to RabbitMQ");
    amqp_rpc_reply_t r = amqp_login(c, ci.vhost[0] ? ci.vhost : "/", 0, 131072, 0,
                                    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        die("login failed");
    amqp_channel_open(c, 1);
    check_rpc(c, "channel.open");
    free(url);
    return c;
}

static redisContext *redis_open(void)
{
    const char *env = getenv("CELERIAC_RESULT_BACKEND");
    char host[256] = "127.0.0.1";
    int port = 6379;
    if (env && sscanf(env, "redis://%255[^:]:%d", host, &port) < 1)
        die("bad CELERIAC_RESULT_BACKEND");
    redisContext *r = redisConnect(host, port);
    if (!r || r->err)
        die("cannot connect to Redis");
    return r;
}

static void declare(amqp_connection_state_t c, const char *q)
{
    /* durable, like every Celery queue */
    amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, amqp_empty_table);
    check_rpc(c, "queue.declare");
    amqp_queue_purge(c, 1, amqp_cstring_bytes(q));
    check_rpc(c, "queue.purge");
}

static void delete_queue(amqp_connection_state_t c, const char *q)
{
    amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
    check_rpc(c, "queue.delete");
}

/* The 16 headers of a Celery 5.2 task message (spec 7.2), so the broker does the same work per
 * message as for a real job. */
static amqp_table_t celery_headers(void)
{
    static amqp_table_entry_t e[16];
    static amqp_field_value_t tl[2];
    static const char *voids[] = {"shadow", "eta", "expires", "group", "group_index", "parent_id"};
    static const char *strs[][2] = {
        {"lang", "py"},
        {"task", "bench.noop"},
        {"id", "11111111-2222-3333-4444-555555555555"},
        {"root_id", "11111111-2222-3333-4444-555555555555"},
        {"argsrepr", "(1,)"},
        {"kwargsrepr", "{}"},
        {"origin", "gen12345@bench"},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++, n++) {
        e[n].key = amqp_cstring_bytes(strs[i][0]);
        e[n].value.kind = AMQP_FIELD_KIND_UTF8;
        e[n].value.value.bytes = amqp_cstring_bytes(strs[i][1]);
    }
    for (size_t i = 0; i < sizeof voids / sizeof voids[0]; i++, n++) {
        e[n].key = amqp_cstring_bytes(voids[i]);
        e[n].value.kind = AMQP_FIELD_KIND_VOID;
    }
    e[n].key = amqp_cstring_bytes("retries");
    e[n].value.kind = AMQP_FIELD_KIND_I32;
    e[n++].value.value.i32 = 0;
    tl[0].kind = tl[1].kind = AMQP_FIELD_KIND_VOID;
    e[n].key = amqp_cstring_bytes("timelimit");
    e[n].value.kind = AMQP_FIELD_KIND_ARRAY;
    e[n].value.value.array = (amqp_array_t){2, tl};
    n++;
    e[n].key = amqp_cstring_bytes("ignore_result");
    e[n].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e[n++].value.value.boolean = 0;
    return (amqp_table_t){n, e};
}

/* Publishes n messages in confirmed batches of `batch`. */
static void publish(amqp_connection_state_t c, const char *q, long n, long batch)
{
    static int selected;
    if (!selected) {
        amqp_confirm_select(c, 1);
        check_rpc(c, "confirm.select");
        selected = 1;
    }
    char body[BODY_LEN];
    memset(body, 'x', sizeof body);
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG |
               AMQP_BASIC_CONTENT_ENCODING_FLAG | AMQP_BASIC_HEADERS_FLAG |
               AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
    p.delivery_mode = 2;
    p.content_type = amqp_cstring_bytes("application/x-msgpack");
    p.content_encoding = amqp_cstring_bytes("binary");
    p.headers = celery_headers();
    p.correlation_id = amqp_cstring_bytes("11111111-2222-3333-4444-555555555555");
    for (long sent = 0; sent < n;) {
        long k = n - sent < batch ? n - sent : batch;
        for (long i = 0; i < k; i++)
            if (amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(q), 0, 0, &p,
                                   (amqp_bytes_t){sizeof body, body}) != AMQP_STATUS_OK)
                die("publish");
        /* confirms may be multiple: wait until the last tag is covered */
        uint64_t want = (uint64_t)(sent + k), got = 0;
        while (got < want) {
            amqp_frame_t f;
            if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK)
                die("wait confirm");
            if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
                amqp_basic_ack_t *a = f.payload.method.decoded;
                got = a->delivery_tag;
            } else if (f.frame_type == AMQP_FRAME_METHOD) {
                die("unexpected method while waiting for confirms");
            }
        }
        sent += k;
        amqp_maybe_release_buffers(c);
    }
}

static void store(redisContext *r, uint64_t id)
{
    char key[64];
    int kl = snprintf(key, sizeof key, "ceiling-meta-%" PRIu64, id);
    static const char meta[] = "\x86\xa6"
                               "status"
                               "\xa7"
                               "SUCCESS"
                               "\xa6"
                               "result"
                               "\xc0\xa9"
                               "traceback"
                               "\xc0\xa8"
                               "children"
                               "\x90\xa9"
                               "date_done"
                               "\xc0\xa7"
                               "task_id"
                               "\xa1"
                               "x";
    redisAppendCommand(r, "SETEX %b 60 %b", key, (size_t)kl, meta, sizeof meta - 1);
    redisAppendCommand(r, "PUBLISH %b %b", key, (size_t)kl, meta, sizeof meta - 1);
}

static void flush_replies(redisContext *r, long n)
{
    for (long i = 0; i < n; i++) {
        redisReply *rep;
        if (redisGetReply(r, (void **)&rep) != REDIS_OK)
            die("redis reply");
        freeReplyObject(rep);
    }
}

/* Consumes n messages: per batch of ready deliveries one pipelined store, one multiple-ack. */
static void consume(amqp_connection_state_t c, redisContext *r, const char *q, long n, int prefetch,
                    int batch_mode)
{
    amqp_basic_qos(c, 1, 0, (uint16_t)prefetch, 0);
    check_rpc(c, "basic.qos");
    amqp_basic_consume(c, 1, amqp_cstring_bytes(q), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    check_rpc(c, "basic.consume");
    long done = 0;
    while (done < n) {
        long got = 0;
        uint64_t last = 0;
        struct timeval zero = {0, 0};
        for (;;) {
            amqp_envelope_t env;
            amqp_rpc_reply_t res = amqp_consume_message(c, &env, got ? &zero : NULL, 0);
            if (res.reply_type != AMQP_RESPONSE_NORMAL)
                break; /* timeout: nothing more ready */
            store(r, env.delivery_tag);
            last = env.delivery_tag;
            amqp_destroy_envelope(&env);
            got++;
            if (!batch_mode || done + got >= n || got >= prefetch)
                break;
        }
        flush_replies(r, 2 * got);
        if (amqp_basic_ack(c, 1, last, 1) != AMQP_STATUS_OK)
            die("ack");
        done += got;
        amqp_maybe_release_buffers(c);
    }
}

static void report(const char *mode, long n, double secs)
{
    printf("{\"mode\": \"%s\", \"messages\": %ld, \"seconds\": %.3f, \"rate\": %.0f}\n", mode, n,
           secs, n / secs);
    fflush(stdout);
}

static void cleanup_keys(redisContext *r)
{
    redisReply *rep = redisCommand(r, "EVAL %s 0",
                                   "local k = redis.call('KEYS', 'ceiling-meta-*') "
                                   "for i = 1, #k, 1000 do redis.call('DEL', unpack(k, i, "
                                   "math.min(i + 999, #k))) end return #k");
    freeReplyObject(rep);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void rtt(long n)
{
    amqp_connection_state_t pc = amqp_open(), cc = amqp_open();
    redisContext *w = redis_open(), *sub = redis_open();
    char q[64];
    snprintf(q, sizeof q, "ceiling-rtt-%d", (int)getpid());
    declare(pc, q);
    amqp_basic_qos(cc, 1, 0, 1, 0);
    amqp_basic_consume(cc, 1, amqp_cstring_bytes(q), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    check_rpc(cc, "basic.consume");
    double *lat = calloc((size_t)n, sizeof *lat);
    for (long i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "ceiling-meta-rtt-%ld", i);
        redisReply *rep = redisCommand(sub, "SUBSCRIBE %s", key);
        freeReplyObject(rep);
        double t0 = now_s();
        publish(pc, q, 1, 1);
        amqp_envelope_t env;
        if (amqp_consume_message(cc, &env, NULL, 0).reply_type != AMQP_RESPONSE_NORMAL)
            die("rtt consume");
        rep = redisCommand(w, "SETEX %s 60 x", key);
        freeReplyObject(rep);
        rep = redisCommand(w, "PUBLISH %s x", key);
        freeReplyObject(rep);
        amqp_basic_ack(cc, 1, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        if (redisGetReply(sub, (void **)&rep) != REDIS_OK)
            die("rtt pubsub");
        freeReplyObject(rep);
        lat[i] = now_s() - t0;
        rep = redisCommand(sub, "UNSUBSCRIBE %s", key);
        freeReplyObject(rep);
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("{\"mode\": \"rtt\", \"messages\": %ld, \"p50_ms\": %.3f, \"p90_ms\": %.3f, "
           "\"p99_ms\": %.3f}\n",
           n, lat[n / 2] * 1e3, lat[n * 9 / 10] * 1e3, lat[n * 99 / 100] * 1e3);
    free(lat);
    delete_queue(pc, q);
    cleanup_keys(w);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: ceiling drain|single|publish|duplex|rtt N [PREFETCH|BATCH]\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    long arg = argc > 3 ? atol(argv[3]) : 0;
    if (strcmp(mode, "rtt") == 0) {
        rtt(n);
        return 0;
    }
    char q[64];
    snprintf(q, sizeof q, "ceiling-%s-%d", mode, (int)getpid());
    amqp_connection_state_t c = amqp_open();
    redisContext *r = redis_open();
    declare(c, q);
    if (strcmp(mode, "drain") == 0 || strcmp(mode, "single") == 0) {
        int single = strcmp(mode, "single") == 0;
        publish(c, q, n, 1000);
        amqp_connection_state_t cc = amqp_open();
        double t0 = now_s();
        consume(cc, r, q, n, single ? 1 : (int)(arg ? arg : 256), !single);
        report(mode, n, now_s() - t0);
    } else if (strcmp(mode, "publish") == 0) {
        double t0 = now_s();
        publish(c, q, n, arg ? arg : 500);
        report(mode, n, now_s() - t0);
    } else if (strcmp(mode, "duplex") == 0) {
        double t0 = now_s();
        pid_t pid = fork();
        if (pid == 0) {
            amqp_connection_state_t pc = amqp_open();
            publish(pc, q, n, arg ? arg : 500);
            _exit(0);
        }
        amqp_connection_state_t cc = amqp_open();
        consume(cc, r, q, n, 256, 1);
        waitpid(pid, NULL, 0);
        report(mode, n, now_s() - t0);
    } else {
        fprintf(stderr, "ceiling: unknown mode %s\n", mode);
        return 2;
    }
    delete_queue(c, q);
    cleanup_keys(r);
    return 0;
}
