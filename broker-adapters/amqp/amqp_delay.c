/* amqp_delay.c: the Celery queue topology and the binary delay levels (DESIGN.md section 4).
 * Level n is a topic exchange and a durable queue "celeriac.delay.<n>" holding messages 2^n s
 * (x-message-ttl), dead-lettering to level n-1 (level 0 to "celeriac.delay.deliver"). The routing
 * key is the delay's 28 bits, most significant first, then the queue: level n's queue takes keys
 * with bit n set, the others pass on by an exchange-to-exchange binding, and the deliver exchange
 * routes on the queue name. Delay queues are always classic queues. */
#include <stdio.h>
#include <string.h>

#include "broker-adapters/amqp/amqp_adapter.h"

#define LEVEL_NAME "celeriac.delay.%d"

static int highest_bit(uint32_t v)
{
    int n = -1;
    while (v) {
        v >>= 1;
        n++;
    }
    return n;
}

int cel__amqp_delay_route(uint32_t delay_s, const char *queue, char *exchange, size_t exlen,
                          char *rk, size_t rklen)
{
    if (delay_s == 0 || delay_s > CEL_DELAY_MAX)
        return CEL_EINVAL;
    char bits[2 * CEL_DELAY_LEVELS];
    for (int i = 0; i < CEL_DELAY_LEVELS; i++) {
        bits[2 * i] = (delay_s >> (CEL_DELAY_LEVELS - 1 - i)) & 1 ? '1' : '0';
        bits[2 * i + 1] = '.';
    }
    int n = snprintf(rk, rklen, "%.*s%s", 2 * CEL_DELAY_LEVELS, bits, queue);
    if (n < 0 || (size_t)n >= rklen || n > 255)
        return CEL_ETOOBIG; /* a routing key is a shortstr */
    snprintf(exchange, exlen, LEVEL_NAME, highest_bit(delay_s));
    return 0;
}

void cel__amqp_delay_pattern(int level, char bit, char *out, size_t outlen)
{
    char p[2 * CEL_DELAY_LEVELS + 2];
    for (int i = 0; i < CEL_DELAY_LEVELS; i++) {
        p[2 * i] = i == CEL_DELAY_LEVELS - 1 - level ? bit : '*';
        p[2 * i + 1] = '.';
    }
    p[2 * CEL_DELAY_LEVELS] = '#';
    p[2 * CEL_DELAY_LEVELS + 1] = 0;
    snprintf(out, outlen, "%s", p);
}

int cel__amqp_delay_queue_pattern(const char *queue, char *out, size_t outlen)
{
    char stars[2 * CEL_DELAY_LEVELS + 1];
    for (int i = 0; i < CEL_DELAY_LEVELS; i++) {
        stars[2 * i] = '*';
        stars[2 * i + 1] = '.';
    }
    stars[2 * CEL_DELAY_LEVELS] = 0;
    int n = snprintf(out, outlen, "%s%s", stars, queue);
    return n < 0 || (size_t)n >= outlen || n > 255 ? CEL_ETOOBIG : 0;
}

/* ---- declarations on the publisher connection ---- */

static int exchange(struct cel__amqp *b, const char *name, const char *type)
{
    amqp_exchange_declare(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(name),
                          amqp_cstring_bytes(type), 0, 1, 0, 0, amqp_empty_table);
    return cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "exchange.declare");
}

static int queue(struct cel__amqp *b, const char *name, amqp_table_t args)
{
    amqp_queue_declare(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
    return cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "queue.declare");
}

static int bind(struct cel__amqp *b, const char *q, const char *ex, const char *key)
{
    amqp_queue_bind(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(q), amqp_cstring_bytes(ex),
                    amqp_cstring_bytes(key), amqp_empty_table);
    return cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "queue.bind");
}

static int exchange_bind(struct cel__amqp *b, const char *dst, const char *src, const char *key)
{
    amqp_exchange_bind(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(dst), amqp_cstring_bytes(src),
                       amqp_cstring_bytes(key), amqp_empty_table);
    return cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "exchange.bind");
}

static void level_name(int n, char *out, size_t outlen)
{
    if (n < 0)
        snprintf(out, outlen, "%s", CEL_DELAY_DELIVER);
    else
        snprintf(out, outlen, LEVEL_NAME, n);
}

static amqp_field_value_t ttl_value(int level)
{
    int64_t ms = ((int64_t)1 << level) * 1000;
    amqp_field_value_t v;
    if (ms <= INT32_MAX) {
        v.kind = AMQP_FIELD_KIND_I32;
        v.value.i32 = (int32_t)ms;
    } else {
        v.kind = AMQP_FIELD_KIND_I64; /* read by RabbitMQ, which takes 'l' as signed */
        v.value.i64 = ms;
    }
    return v;
}

static int declare_level(struct cel__amqp *b, int n)
{
    char name[64], next[64], pat[128];
    level_name(n, name, sizeof name);
    level_name(n - 1, next, sizeof next);
    amqp_table_entry_t e[2];
    e[0].key = amqp_cstring_bytes("x-message-ttl");
    e[0].value = ttl_value(n);
    e[1].key = amqp_cstring_bytes("x-dead-letter-exchange");
    e[1].value.kind = AMQP_FIELD_KIND_UTF8;
    e[1].value.value.bytes = amqp_cstring_bytes(next);
    amqp_table_t args = {2, e};
    int rc = queue(b, name, args);
    if (rc == 0) {
        cel__amqp_delay_pattern(n, '1', pat, sizeof pat);
        rc = bind(b, name, name, pat);
    }
    if (rc == 0) {
        cel__amqp_delay_pattern(n, '0', pat, sizeof pat);
        rc = exchange_bind(b, next, name, pat);
    }
    return rc;
}

int cel__amqp_declare_delay(struct cel__amqp *b)
{
    if (b->tx.delay_declared)
        return 0;
    int rc = exchange(b, CEL_DELAY_DELIVER, "topic");
    for (int n = 0; rc == 0 && n < CEL_DELAY_LEVELS; n++) {
        char name[64];
        level_name(n, name, sizeof name);
        rc = exchange(b, name, "topic");
    }
    for (int n = 0; rc == 0 && n < CEL_DELAY_LEVELS; n++)
        rc = declare_level(b, n);
    b->tx.delay_declared = rc == 0;
    return rc;
}

int cel__amqp_bind_delay(struct cel__amqp *b, struct cel__amqp_queue *q)
{
    if (q->delay_bound)
        return 0;
    char pat[512];
    int rc = cel__amqp_delay_queue_pattern(q->name, pat, sizeof pat);
    if (rc == 0)
        rc = cel__amqp_declare_delay(b);
    if (rc == 0)
        rc = bind(b, q->name, CEL_DELAY_DELIVER, pat);
    q->delay_bound = rc == 0;
    return rc;
}

/* x-queue-type, x-max-priority, x-delivery-limit as the options ask; nothing by default. */
static amqp_table_t queue_args(struct cel__amqp *b, amqp_table_entry_t e[3], bool dead)
{
    int n = 0;
    bool quorum = b->queue_type && strcmp(b->queue_type, "quorum") == 0;
    if (quorum) {
        e[n].key = amqp_cstring_bytes("x-queue-type");
        e[n].value.kind = AMQP_FIELD_KIND_UTF8;
        e[n++].value.value.bytes = amqp_cstring_bytes("quorum");
    }
    if (!dead && b->max_priority > 0) {
        e[n].key = amqp_cstring_bytes("x-max-priority");
        e[n].value.kind = AMQP_FIELD_KIND_I32;
        e[n++].value.value.i32 = b->max_priority;
    }
    if (!dead && quorum && b->delivery_limit > 0) {
        e[n].key = amqp_cstring_bytes("x-delivery-limit");
        e[n].value.kind = AMQP_FIELD_KIND_I32;
        e[n++].value.value.i32 = b->delivery_limit;
    }
    amqp_table_t t = {n, n ? e : NULL};
    return t;
}

int cel__amqp_declare_queue(struct cel__amqp *b, struct cel__amqp_queue *q)
{
    amqp_table_entry_t e[3], de[3];
    char dead[512];
    if (snprintf(dead, sizeof dead, "%s.dead", q->name) >= 256)
        return CEL_ETOOBIG;
    int rc = exchange(b, q->name, "direct");
    if (rc == 0)
        rc = queue(b, q->name, queue_args(b, e, false));
    if (rc == 0)
        rc = bind(b, q->name, q->name, q->name);
    if (rc == 0)
        rc = queue(b, dead, queue_args(b, de, true));
    q->delay_bound = false; /* the queue may be new: bind it again */
    if (rc == 0)
        rc = cel__amqp_bind_delay(b, q);
    return rc;
}
