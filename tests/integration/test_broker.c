/* test_broker.c: the AMQP adapter against the real RabbitMQ of $CELERIAC_BROKER_URL: round trips
 * with confirms and header types, 10,000 messages with none lost or duplicated, delay levels,
 * dead letters, 406 conflicts, unroutable returns, get/purge/queue_info, heartbeats, credentials
 * from the environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <poll.h>

#include "broker-adapters/amqp/amqp_adapter.h"
#include "test_broker_util.h"

static const char *url;

struct fx {
    struct cel_broker *b;
    const struct cel_broker_class *c;
    char q[200];
    struct cel_arena a;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char err[512];
    int rc;
    f->b = test_open(url, err, sizeof err, &rc);
    if (rc != 0) {
        fprintf(stderr, "open %s: %s\n", url, err);
        free(f);
        return -1;
    }
    f->c = CEL_BROKER_CLASS(f->b);
    test_name(f->q, sizeof f->q, "q");
    cel_arena_init(&f->a, 4096);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    f->c->free(f->b);
    test_cleanup_queue(url, f->q);
    cel_arena_free(&f->a);
    free(f);
    return 0;
}

/* The headers of spec 7.2 plus values of every type we write. */
static struct cel_field *sample_headers(size_t *n, const char *id)
{
    static struct cel_value tl[2] = {{.type = CEL_V_VOID}, {.type = CEL_V_VOID}};
    static struct cel_value arr[3];
    static struct cel_field nested[1];
    static struct cel_field h[12];
    arr[0] = cel_value_int(1);
    arr[1] = cel_value_str("two", 3);
    arr[2].type = CEL_V_DOUBLE;
    arr[2].u.d = 3.5;
    nested[0].key = CEL_SPAN_LIT("k");
    nested[0].v = cel_value_str("v", 1);
    size_t i = 0;
    h[i].key = CEL_SPAN_LIT("lang");
    h[i++].v = cel_value_str("py", 2);
    h[i].key = CEL_SPAN_LIT("task");
    h[i++].v = cel_value_str("users.create", 12);
    h[i].key = CEL_SPAN_LIT("id");
    h[i++].v = cel_value_str(id, strlen(id));
    h[i].key = CEL_SPAN_LIT("eta");
    h[i++].v.type = CEL_V_VOID;
    h[i].key = CEL_SPAN_LIT("retries");
    h[i++].v = cel_value_int(0);
    h[i].key = CEL_SPAN_LIT("timelimit");
    h[i].v.type = CEL_V_ARRAY;
    h[i].v.u.a.items = tl;
    h[i++].v.u.a.n = 2;
    h[i].key = CEL_SPAN_LIT("ignore_result");
    h[i].v.type = CEL_V_BOOL;
    h[i++].v.u.b = true;
    h[i].key = CEL_SPAN_LIT("big");
    h[i++].v = cel_value_int(-5000000000LL);
    h[i].key = CEL_SPAN_LIT("mixed");
    h[i].v.type = CEL_V_ARRAY;
    h[i].v.u.a.items = arr;
    h[i++].v.u.a.n = 3;
    h[i].key = CEL_SPAN_LIT("tbl");
    h[i].v.type = CEL_V_TABLE;
    h[i].v.u.t.items = nested;
    h[i++].v.u.t.n = 1;
    h[i].key = CEL_SPAN_LIT("raw");
    h[i].v.type = CEL_V_BYTES;
    h[i++].v.u.s = CEL_SPAN_LIT("\x00\x01");
    *n = i;
    return h;
}

static const struct cel_props sample_props = {
    .content_type = "application/x-msgpack",
    .content_encoding = "binary",
    .correlation_id = "id-1",
    .reply_to = "reply-oid",
    .delivery_mode = 2,
    .priority = 0,
    .has_priority = true,
};

static struct cel_publish msg_to(const char *q, const struct cel_table *h, const char *body)
{
    struct cel_publish m = {.exchange = "",
                            .routing_key = q,
                            .props = &sample_props,
                            .headers = h,
                            .body = {body, strlen(body)}};
    return m;
}

static void round_trip_keeps_properties_and_header_types(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    struct cel_table h;
    h.items = sample_headers(&h.n, "id-1");
    struct cel_publish m = msg_to(f->q, &h, "\x93\x90\x80\x80");
    size_t confirmed = 99;
    assert_int_equal(f->c->publish(f->b, &m, 1, &confirmed), 0);
    assert_int_equal(confirmed, 1);
    assert_int_equal(f->c->consume(f->b, f->q, 10), 0);

    struct cel_delivery d;
    assert_int_equal(f->c->next(f->b, &d, &f->a, 10000), 0);
    assert_string_equal(d.queue, f->q);
    assert_string_equal(d.routing_key, f->q);
    assert_string_equal(d.exchange, "");
    assert_false(d.redelivered);
    assert_int_equal(d.body.len, 4);
    assert_memory_equal(d.body.ptr, "\x93\x90\x80\x80", 4);
    assert_string_equal(d.props.content_type, "application/x-msgpack");
    assert_string_equal(d.props.content_encoding, "binary");
    assert_string_equal(d.props.correlation_id, "id-1");
    assert_string_equal(d.props.reply_to, "reply-oid");
    assert_null(d.props.expiration);
    assert_int_equal(d.props.delivery_mode, 2);
    assert_true(d.props.has_priority);
    assert_int_equal(d.headers.n, h.n);
    for (size_t i = 0; i < h.n; i++)
        assert_true(test_span_eq(d.headers.items[i].key, h.items[i].key.ptr));
    assert_int_equal(test_header(&d.headers, "task")->type, CEL_V_STR);
    assert_true(test_span_eq(test_header(&d.headers, "task")->u.s, "users.create"));
    assert_int_equal(test_header(&d.headers, "eta")->type, CEL_V_VOID);
    assert_int_equal(test_header(&d.headers, "retries")->type, CEL_V_INT);
    assert_int_equal(test_header(&d.headers, "big")->u.i, -5000000000LL);
    assert_int_equal(test_header(&d.headers, "ignore_result")->u.b, true);
    const struct cel_value *mixed = test_header(&d.headers, "mixed");
    assert_int_equal(mixed->type, CEL_V_ARRAY);
    assert_int_equal(mixed->u.a.n, 3);
    assert_int_equal(mixed->u.a.items[2].type, CEL_V_DOUBLE);
    assert_true(mixed->u.a.items[2].u.d == 3.5);
    const struct cel_value *tbl = test_header(&d.headers, "tbl");
    assert_int_equal(tbl->type, CEL_V_TABLE);
    assert_true(test_span_eq(tbl->u.t.items[0].v.u.s, "v"));
    const struct cel_value *raw = test_header(&d.headers, "raw");
    assert_int_equal(raw->type, CEL_V_BYTES);
    assert_int_equal(raw->u.s.len, 2);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
    assert_int_equal(f->c->next(f->b, &d, &f->a, 0), CEL_ETIMEDOUT);
}

static void unset_properties_are_not_sent(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    struct cel_props none = {0};
    struct cel_publish m = {
        .exchange = f->q, .routing_key = f->q, .props = &none, .body = {"x", 1}};
    assert_int_equal(f->c->publish(f->b, &m, 1, NULL), 0);
    struct cel_delivery d;
    assert_int_equal(f->c->get(f->b, f->q, &d, &f->a), 0);
    assert_null(d.props.content_type);
    assert_null(d.props.correlation_id);
    assert_int_equal(d.props.delivery_mode, 0);
    assert_false(d.props.has_priority);
    assert_int_equal(d.headers.n, 0);
    assert_string_equal(d.exchange, f->q);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
    assert_int_equal(f->c->get(f->b, f->q, &d, &f->a), CEL_ENOTFOUND);
}

#define MANY 10000
#define BATCH 1000

static void ten_thousand_messages_none_lost_or_duplicated(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    static struct cel_publish msgs[MANY];
    static char bodies[MANY][16];
    struct cel_props p = {.content_type = "application/x-msgpack", .delivery_mode = 2};
    for (int i = 0; i < MANY; i++) {
        snprintf(bodies[i], sizeof bodies[i], "%d", i);
        msgs[i] = (struct cel_publish){.exchange = "",
                                       .routing_key = f->q,
                                       .props = &p,
                                       .body = {bodies[i], strlen(bodies[i])}};
    }
    int64_t t0 = cel_mono_us();
    size_t confirmed = 0;
    assert_int_equal(f->c->publish(f->b, msgs, MANY, &confirmed), 0);
    int64_t t1 = cel_mono_us();
    assert_int_equal(confirmed, MANY);
    printf("# publish: one batch of %d confirmed in %.3f s (%.0f msg/s)\n", MANY, (t1 - t0) / 1e6,
           MANY / ((t1 - t0) / 1e6));
    for (int i = 0; i < MANY; i += BATCH) {
        assert_int_equal(f->c->publish(f->b, msgs + i, BATCH, &confirmed), 0);
        assert_int_equal(confirmed, BATCH);
    }
    printf("# publish: %d in batches of %d confirmed in %.3f s\n", MANY, BATCH,
           (cel_mono_us() - t1) / 1e6);
    struct cel_queue_info qi;
    assert_int_equal(f->c->queue_info(f->b, f->q, &qi), 0);
    assert_int_equal(qi.messages, 2 * MANY);

    static unsigned char seen[MANY];
    assert_int_equal(f->c->consume(f->b, f->q, 500), 0);
    int got = 0;
    struct cel_delivery d;
    int64_t t2 = cel_mono_us();
    while (got < 2 * MANY) {
        cel_arena_reset(&f->a);
        int rc = f->c->next(f->b, &d, &f->a, 10000);
        assert_int_equal(rc, 0);
        int i = atoi(d.body.ptr);
        assert_true(i >= 0 && i < MANY);
        seen[i]++;
        got++;
        if (got % 100 == 0)
            assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, true), 0);
    }
    printf("# consume: %d in %.3f s\n", got, (cel_mono_us() - t2) / 1e6);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(seen[i], 2);
    assert_int_equal(f->c->next(f->b, &d, &f->a, 300), CEL_ETIMEDOUT);
}

static void delayed_message_arrives_after_its_delay(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    assert_int_equal(f->c->consume(f->b, f->q, 10), 0);
    struct cel_table h;
    h.items = sample_headers(&h.n, "delayed-1");
    struct cel_publish m[2] = {msg_to(f->q, &h, "later3"), msg_to(f->q, &h, "later")};
    m[0].delay_s = 3; /* bits 11: level 1 then level 0 */
    m[1].delay_s = 2; /* bits 10: level 1, then passes level 0 by the exchange binding */
    int64_t t0 = cel_mono_us();
    assert_int_equal(f->c->publish(f->b, m, 2, NULL), 0);
    struct cel_delivery d;
    int rc = f->c->next(f->b, &d, &f->a, 15000);
    int64_t dt = cel_mono_us() - t0;
    assert_int_equal(rc, 0);
    printf("# delay 2 s: arrived after %.3f s\n", dt / 1e6);
    assert_true(dt >= 2000000);
    assert_int_equal(d.body.len, 5);
    assert_string_equal(d.queue, f->q);
    assert_string_equal(d.props.correlation_id, "id-1");
    assert_true(test_span_eq(test_header(&d.headers, "id")->u.s, "delayed-1"));
    assert_int_equal(test_header(&d.headers, "big")->u.i, -5000000000LL);
    const struct cel_value *death = test_header(&d.headers, "x-death");
    assert_non_null(death);
    assert_int_equal(death->type, CEL_V_ARRAY);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
    rc = f->c->next(f->b, &d, &f->a, 15000);
    dt = cel_mono_us() - t0;
    assert_int_equal(rc, 0);
    printf("# delay 3 s: arrived after %.3f s\n", dt / 1e6);
    assert_true(dt >= 3000000);
    assert_true(test_span_eq(d.body, "later3"));
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
}

static void delayed_to_an_undeclared_queue_declares_it(void **state)
{
    struct fx *f = *state;
    struct cel_publish m = msg_to(f->q, NULL, "d1");
    m.delay_s = 1;
    int64_t t0 = cel_mono_us();
    assert_int_equal(f->c->publish(f->b, &m, 1, NULL), 0);
    struct cel_queue_info qi;
    assert_int_equal(f->c->queue_info(f->b, f->q, &qi), 0);
    assert_int_equal(f->c->consume(f->b, f->q, 10), 0);
    struct cel_delivery d;
    assert_int_equal(f->c->next(f->b, &d, &f->a, 15000), 0);
    assert_true(cel_mono_us() - t0 >= 1000000);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
    m.delay_s = (1u << 28); /* one past the 28 levels */
    assert_int_equal(f->c->publish(f->b, &m, 1, NULL), CEL_EINVAL);
}

static void dead_letters_carry_their_headers(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    char dead[256];
    snprintf(dead, sizeof dead, "%s.dead", f->q);
    struct cel_field h[3];
    h[0].key = CEL_SPAN_LIT("task");
    h[0].v = cel_value_str("users.create", 12);
    h[1].key = CEL_SPAN_LIT("x-celeriac-error-type");
    h[1].v = cel_value_str("KeyError", 8);
    h[2].key = CEL_SPAN_LIT("x-celeriac-error-attempts");
    h[2].v = cel_value_int(3);
    struct cel_table t = {h, 3};
    struct cel_publish m = msg_to(dead, &t, "body");
    m.mandatory = true;
    assert_int_equal(f->c->publish(f->b, &m, 1, NULL), 0);
    struct cel_queue_info qi;
    assert_int_equal(f->c->queue_info(f->b, dead, &qi), 0);
    assert_int_equal(qi.messages, 1);
    struct cel_delivery d;
    assert_int_equal(f->c->get(f->b, dead, &d, &f->a), 0);
    assert_string_equal(d.queue, dead);
    assert_true(test_span_eq(test_header(&d.headers, "x-celeriac-error-type")->u.s, "KeyError"));
    assert_int_equal(test_header(&d.headers, "x-celeriac-error-attempts")->u.i, 3);
    assert_int_equal(f->c->nack(f->b, d.conn_gen, d.tag, false, true), 0);
    uint32_t purged = 0;
    assert_int_equal(f->c->purge(f->b, dead, &purged), 0);
    assert_int_equal(purged, 1);
}

static void conflicting_declare_is_a_channel_error_and_the_channel_recovers(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    struct cel_broker_opts o = {.url = url, .max_priority = 5};
    struct cel_broker *b2;
    char err[512];
    assert_int_equal(cel_broker_open(&b2, &o, err, sizeof err), 0);
    assert_int_equal(f->c->declare(b2, f->q), CEL_ECHANNEL);
    const char *e = f->c->errstr(b2);
    printf("# 406: %s\n", e);
    assert_non_null(strstr(e, "406"));
    assert_non_null(strstr(e, "PRECONDITION_FAILED"));
    assert_non_null(strstr(e, "x-max-priority"));
    struct cel_publish m = msg_to(f->q, NULL, "after");
    assert_int_equal(f->c->publish(b2, &m, 1, NULL), 0);
    struct cel_queue_info qi;
    assert_int_equal(f->c->queue_info(b2, f->q, &qi), 0);
    assert_int_equal(qi.messages, 1);
    f->c->free(b2);
}

static void unroutable_mandatory_is_returned(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    struct cel_publish m[3] = {msg_to(f->q, NULL, "a"), msg_to(f->q, NULL, "b"),
                               msg_to(f->q, NULL, "c")};
    m[1].exchange = f->q;
    m[1].routing_key = "no-such-binding";
    m[1].mandatory = true;
    size_t confirmed = 99;
    assert_int_equal(f->c->publish(f->b, &m[1], 1, &confirmed), CEL_EUNROUTABLE);
    assert_int_equal(confirmed, 0);
    assert_int_equal(f->c->publish(f->b, m, 3, &confirmed), CEL_EUNROUTABLE);
    assert_int_equal(confirmed, 1);
    assert_non_null(strstr(f->c->errstr(f->b), "unroutable"));
    m[1].mandatory = false; /* dropped silently by the broker, as AMQP says */
    assert_int_equal(f->c->publish(f->b, m, 3, &confirmed), 0);
    assert_int_equal(confirmed, 3);
}

static void publishing_to_a_missing_exchange_fails_and_recovers(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    char missing[256];
    snprintf(missing, sizeof missing, "%s-no-such-exchange", f->q);
    struct cel_publish m[2] = {msg_to(f->q, NULL, "a"), msg_to(f->q, NULL, "b")};
    m[1].exchange = missing;
    size_t confirmed = 99;
    assert_int_equal(f->c->publish(f->b, m, 2, &confirmed), CEL_ENOTFOUND);
    assert_true(confirmed <= 1);
    assert_non_null(strstr(f->c->errstr(f->b), "404"));
    assert_int_equal(f->c->publish(f->b, m, 1, &confirmed), 0);
    assert_int_equal(confirmed, 1);
}

static void quorum_and_priority_options_are_declared(void **state)
{
    struct fx *f = *state;
    char err[512];
    struct cel_broker *b;
    struct cel_broker_opts o = {
        .url = url, .queue_type = "quorum", .delivery_limit = 5, .heartbeat = -1};
    assert_int_equal(cel_broker_open(&b, &o, err, sizeof err), 0);
    assert_int_equal(f->c->declare(b, f->q), 0);
    assert_int_equal(f->c->declare(b, f->q), 0);
    struct cel_publish m = msg_to(f->q, NULL, "qq");
    assert_int_equal(f->c->publish(b, &m, 1, NULL), 0);
    assert_int_equal(f->c->consume(b, f->q, 2), 0);
    struct cel_delivery d;
    assert_int_equal(f->c->next(b, &d, &f->a, 10000), 0);
    assert_int_equal(f->c->ack(b, d.conn_gen, d.tag, false), 0);
    /* the classic default conflicts with it, as RabbitMQ says */
    assert_int_equal(f->c->declare(f->b, f->q), CEL_ECHANNEL);
    assert_non_null(strstr(f->c->errstr(f->b), "x-queue-type"));
    f->c->free(b);

    char pq[256];
    snprintf(pq, sizeof pq, "%s-prio", f->q);
    o = (struct cel_broker_opts){.url = url, .max_priority = 9};
    assert_int_equal(cel_broker_open(&b, &o, err, sizeof err), 0);
    assert_int_equal(f->c->declare(b, pq), 0);
    struct cel_props lo = sample_props, hi = sample_props;
    lo.priority = 1;
    hi.priority = 8;
    struct cel_publish pm[2] = {msg_to(pq, NULL, "low"), msg_to(pq, NULL, "high")};
    pm[0].props = &lo;
    pm[1].props = &hi;
    assert_int_equal(f->c->publish(b, pm, 2, NULL), 0);
    assert_int_equal(f->c->get(b, pq, &d, &f->a), 0);
    assert_true(test_span_eq(d.body, "high"));
    assert_int_equal(d.props.priority, 8);
    f->c->free(b);
    test_cleanup_queue(url, pq);
}

static void missing_queue_is_not_found(void **state)
{
    struct fx *f = *state;
    struct cel_queue_info qi;
    assert_int_equal(f->c->queue_info(f->b, f->q, &qi), CEL_ENOTFOUND);
    struct cel_delivery d;
    assert_int_equal(f->c->get(f->b, f->q, &d, &f->a), CEL_ENOTFOUND);
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    assert_int_equal(f->c->get(f->b, f->q, &d, &f->a), CEL_ENOTFOUND);
    struct cel_publish m = msg_to(f->q, NULL, "x");
    assert_int_equal(f->c->publish(f->b, &m, 1, NULL), 0);
    assert_int_equal(f->c->get(f->b, f->q, &d, &f->a), 0);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
}

/* basic.get runs on its own channel: when the broker closes it (404), only its tags go stale. */
static void a_failed_get_leaves_consumer_deliveries_alone(void **state)
{
    struct fx *f = *state;
    char missing[256];
    snprintf(missing, sizeof missing, "%s-missing", f->q);
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    struct cel_publish m[2] = {msg_to(f->q, NULL, "1"), msg_to(f->q, NULL, "2")};
    assert_int_equal(f->c->publish(f->b, m, 2, NULL), 0);
    struct cel_delivery got, d;
    assert_int_equal(f->c->get(f->b, f->q, &got, &f->a), 0);
    assert_int_equal(f->c->consume(f->b, f->q, 1), 0);
    assert_int_equal(f->c->next(f->b, &d, &f->a, 10000), 0);
    assert_int_equal(f->c->get(f->b, missing, &d, &f->a) == CEL_ENOTFOUND ? 0 : -1, 0);
    assert_int_equal(f->c->ack(f->b, got.conn_gen, got.tag, false), CEL_ESTALE);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
    /* the stale one went back to the queue and comes again */
    assert_int_equal(f->c->next(f->b, &d, &f->a, 10000), 0);
    assert_true(d.redelivered);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
}

/* Deleting a consumed queue: the broker cancels the consumer; consuming it again works. */
static void a_deleted_queue_cancels_its_consumer(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    assert_int_equal(f->c->consume(f->b, f->q, 1), 0);
    test_cleanup_queue(url, f->q);
    struct cel_delivery d;
    assert_int_equal(f->c->next(f->b, &d, &f->a, 500), CEL_ETIMEDOUT);
    assert_non_null(strstr(f->c->errstr(f->b), "cancelled the consumer"));
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    assert_int_equal(f->c->consume(f->b, f->q, 1), 0);
    struct cel_publish m = msg_to(f->q, NULL, "back");
    m.delay_s = 1; /* the recreated queue is bound to the delay levels again */
    assert_int_equal(f->c->publish(f->b, &m, 1, NULL), 0);
    assert_int_equal(f->c->next(f->b, &d, &f->a, 15000), 0);
    assert_string_equal(d.queue, f->q);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
}

static void nack_requeues_and_redelivers(void **state)
{
    struct fx *f = *state;
    assert_int_equal(f->c->declare(f->b, f->q), 0);
    struct cel_publish m = msg_to(f->q, NULL, "again");
    assert_int_equal(f->c->publish(f->b, &m, 1, NULL), 0);
    assert_int_equal(f->c->consume(f->b, f->q, 1), 0);
    struct cel_delivery d;
    assert_int_equal(f->c->next(f->b, &d, &f->a, 10000), 0);
    assert_false(d.redelivered);
    assert_int_equal(f->c->nack(f->b, d.conn_gen, d.tag, false, true), 0);
    assert_int_equal(f->c->next(f->b, &d, &f->a, 10000), 0);
    assert_true(d.redelivered);
    assert_int_equal(f->c->ack(f->b, d.conn_gen + 1, d.tag, false), CEL_ESTALE);
    assert_int_equal(f->c->cancel(f->b), 0);
    assert_int_equal(f->c->ack(f->b, d.conn_gen, d.tag, false), 0);
    assert_int_equal(f->c->publish(f->b, &m, 1, NULL), 0);
    assert_int_equal(f->c->next(f->b, &d, &f->a, 500), CEL_ETIMEDOUT);
}

/* Only poll() and next(0), as the worker does: the broker must not drop us for missed
 * heartbeats (2 s negotiated; the broker gives up after about two missed ones). */
static void heartbeats_flow_with_poll_and_next0(void **state)
{
    struct fx *f = *state;
    struct cel_broker_opts o = {.url = url, .heartbeat = 2};
    struct cel_broker *b;
    char err[512];
    assert_int_equal(cel_broker_open(&b, &o, err, sizeof err), 0);
    assert_int_equal(f->c->declare(b, f->q), 0);
    assert_int_equal(f->c->consume(b, f->q, 1), 0);
    const struct cel__amqp *in = (const struct cel__amqp *)(const void *)b;
    unsigned tx_opens = in->tx.opens;
    struct cel_delivery d;
    int64_t end = cel_mono_us() + 9000000;
    while (cel_mono_us() < end) {
        struct pollfd p = {.fd = f->c->fd(b), .events = POLLIN};
        assert_true(p.fd >= 0);
        if (!f->c->pending(b))
            poll(&p, 1, 250);
        int rc = f->c->next(b, &d, &f->a, 0);
        assert_int_equal(rc, CEL_ETIMEDOUT);
    }
    /* the publisher connection too: still the same one (publish() would silently reopen it) */
    struct cel_publish m = msg_to(f->q, NULL, "alive");
    assert_int_equal(f->c->publish(b, &m, 1, NULL), 0);
    assert_int_equal(in->tx.opens, tx_opens);
    assert_int_equal(f->c->next(b, &d, &f->a, 5000), 0);
    assert_int_equal(f->c->ack(b, d.conn_gen, d.tag, false), 0);
    assert_int_equal(d.conn_gen, 1);
    /* tick() alone keeps an idle connection too */
    end = cel_mono_us() + 7000000;
    while (cel_mono_us() < end) {
        assert_int_equal(f->c->tick(b), 0);
        usleep(200000);
    }
    assert_int_equal(f->c->publish(b, &m, 1, NULL), 0);
    assert_int_equal(in->tx.opens, tx_opens);
    assert_int_equal(f->c->next(b, &d, &f->a, 5000), 0);
    assert_int_equal(d.conn_gen, 1);
    f->c->free(b);
}

static void credentials_from_the_environment(void **state)
{
    struct fx *f = *state;
    struct cel_amqp_url u;
    char err[512];
    assert_int_equal(cel_amqp_url_parse(url, strlen(url), &u, err, sizeof err), 0);
    char bad[1200];
    snprintf(bad, sizeof bad, "amqp://%s:wrong-secret-pw@%s:%d/", u.user, u.host, u.port);
    struct cel_broker *b;
    struct cel_broker_opts o = {.url = bad};
    int rc = cel_broker_open(&b, &o, err, sizeof err);
    printf("# bad password: %s\n", err);
    assert_int_equal(rc, CEL_EAUTH);
    assert_null(strstr(err, "wrong-secret-pw"));

    setenv("CELERIAC_BROKER_PASSWORD", u.pass, 1);
    assert_int_equal(cel_broker_open(&b, &o, err, sizeof err), 0);
    f->c->free(b);
    unsetenv("CELERIAC_BROKER_PASSWORD");

    char path[] = "/tmp/celeriac-url-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char list[2600];
    /* a dead first URL: failover to the working one */
    int n = snprintf(list, sizeof list, "amqp://%s:%s@127.0.0.1:1/,\n%s\n", u.user, u.pass, url);
    assert_int_equal(write(fd, list, (size_t)n), n);
    close(fd);
    setenv("CELERIAC_BROKER_URL_FILE", path, 1);
    o.url = NULL;
    rc = cel_broker_open(&b, &o, err, sizeof err);
    unsetenv("CELERIAC_BROKER_URL_FILE");
    unlink(path);
    assert_int_equal(rc, 0);
    assert_int_equal(f->c->reconnect(b), 0);
    f->c->free(b);
}

int main(void)
{
    url = test_env("CELERIAC_BROKER_URL");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trip_keeps_properties_and_header_types, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unset_properties_are_not_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(ten_thousand_messages_none_lost_or_duplicated, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(delayed_message_arrives_after_its_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(delayed_to_an_undeclared_queue_declares_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(dead_letters_carry_their_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(
            conflicting_declare_is_a_channel_error_and_the_channel_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(unroutable_mandatory_is_returned, setup, teardown),
        cmocka_unit_test_setup_teardown(publishing_to_a_missing_exchange_fails_and_recovers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(quorum_and_priority_options_are_declared, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_queue_is_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_get_leaves_consumer_deliveries_alone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_deleted_queue_cancels_its_consumer, setup, teardown),
        cmocka_unit_test_setup_teardown(nack_requeues_and_redelivers, setup, teardown),
        cmocka_unit_test_setup_teardown(heartbeats_flow_with_poll_and_next0, setup, teardown),
        cmocka_unit_test_setup_teardown(credentials_from_the_environment, setup, teardown),
    };
    return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
