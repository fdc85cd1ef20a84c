/* amqp_publish.c: publishing on the "tx" connection: each batch is sent whole (reading confirms
 * now and then so they never pile up), then every message waits for its basic.ack; a nack or a
 * basic.return (matched to its message by route and body) fails the batch from that message on.
 * Frames the broker sends on tx between batches are read here without waiting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker-adapters/amqp/amqp_adapter.h"

#define B(x) CEL__AMQP(x)
#define CONFIRM_TIMEOUT_MS 30000
#define DRAIN_EVERY 128 /* read confirms while sending a big batch so acks never pile up */

/* ---- the publisher connection ---- */

static int tx_frame(struct cel__amqp *b, amqp_frame_t *f, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int st = amqp_simple_wait_frame_noblock(b->tx.st, f, &tv);
    if (st == AMQP_STATUS_OK)
        return 0;
    if (st == AMQP_STATUS_TIMEOUT)
        return CEL_ETIMEDOUT;
    cel__amqp_seterr(b, "publisher connection: %s", amqp_error_string2(st));
    cel__amqp_conn_drop(&b->tx);
    return CEL_ECONN;
}

/* A frame on tx outside a publish: closes are handled, anything else is dropped. */
static int tx_stray(struct cel__amqp *b, const amqp_frame_t *f)
{
    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0;
    amqp_method_number_t id = f->payload.method.id;
    if (id == AMQP_CHANNEL_CLOSE_METHOD || id == AMQP_CONNECTION_CLOSE_METHOD)
        return cel__amqp_close_frame(b, &b->tx, f, "publisher");
    if (id == AMQP_BASIC_RETURN_METHOD) {
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(b->tx.st, f->channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            cel__amqp_conn_drop(&b->tx);
            return CEL_ECONN;
        }
        amqp_destroy_message(&msg);
    }
    return 0;
}

/* Reads what the broker sent on tx without waiting; sends heartbeats when due. */
void cel__amqp_tx_service(struct cel__amqp *b)
{
    amqp_frame_t f;
    while (b->tx.st && tx_frame(b, &f, 0) == 0)
        if (tx_stray(b, &f) != 0)
            break;
    if (b->tx.st)
        amqp_maybe_release_buffers(b->tx.st);
}

int cel__amqp_tx_ready(struct cel__amqp *b)
{
    cel__amqp_tx_service(b);
    if (b->tx.st)
        return 0;
    int rc = cel__amqp_conn_open_any(b, &b->tx, b->cur);
    for (size_t i = 0; rc == 0 && i < b->nq; i++)
        b->q[i].delay_bound = false;
    return rc;
}

/* ---- publish with confirms ---- */

enum { M_SETTLED = 1, M_NACKED = 2, M_RETURNED = 4 };

struct batch {
    const struct cel_publish *m;
    size_t n, sent, settled, low;
    uint64_t base; /* sequence number of m[0] */
    uint8_t *st;
};

/* Where message m really goes: its own exchange/key, or the delay level and bits key. */
static int route(const struct cel_publish *m, char *ex, size_t exlen, char *rk, size_t rklen)
{
    if (m->delay_s == 0) {
        snprintf(ex, exlen, "%s", m->exchange ? m->exchange : "");
        snprintf(rk, rklen, "%s", m->routing_key ? m->routing_key : "");
        return 0;
    }
    return cel__amqp_delay_route(m->delay_s, m->routing_key ? m->routing_key : "", ex, exlen, rk,
                                 rklen);
}

static void settle(struct batch *bt, uint64_t tag, bool multiple, uint8_t how)
{
    if (tag < bt->base || tag - bt->base >= bt->sent)
        return;
    size_t hi = (size_t)(tag - bt->base);
    for (size_t i = multiple ? bt->low : hi; i <= hi; i++) {
        if (bt->st[i] & M_SETTLED)
            continue;
        bt->st[i] |= M_SETTLED | how;
        bt->settled++;
    }
    while (bt->low < bt->sent && (bt->st[bt->low] & M_SETTLED))
        bt->low++;
}

/* basic.return: marks the first unsettled message with that route and body. */
static void returned(struct batch *bt, const amqp_basic_return_t *r, const amqp_message_t *msg)
{
    char ex[256], rk[512];
    for (size_t i = bt->low; i < bt->sent; i++) {
        if ((bt->st[i] & (M_SETTLED | M_RETURNED)) ||
            route(&bt->m[i], ex, sizeof ex, rk, sizeof rk))
            continue;
        if (cel__amqp_same_bytes(r->exchange, ex, strlen(ex)) &&
            cel__amqp_same_bytes(r->routing_key, rk, strlen(rk)) &&
            cel__amqp_same_bytes(msg->body, bt->m[i].body.ptr, bt->m[i].body.len)) {
            bt->st[i] |= M_RETURNED;
            return;
        }
    }
}

static int confirm_frame(struct cel__amqp *b, struct batch *bt, const amqp_frame_t *f)
{
    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0;
    const void *d = f->payload.method.decoded;
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD:
        settle(bt, ((const amqp_basic_ack_t *)d)->delivery_tag,
               ((const amqp_basic_ack_t *)d)->multiple, 0);
        return 0;
    case AMQP_BASIC_NACK_METHOD:
        settle(bt, ((const amqp_basic_nack_t *)d)->delivery_tag,
               ((const amqp_basic_nack_t *)d)->multiple, M_NACKED);
        return 0;
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_basic_return_t ret = *(const amqp_basic_return_t *)d;
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(b->tx.st, f->channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            cel__amqp_seterr(b, "publisher connection: reading a returned message failed");
            cel__amqp_conn_drop(&b->tx);
            return CEL_ECONN;
        }
        returned(bt, &ret, &msg);
        amqp_destroy_message(&msg);
        return 0;
    }
    default:
        return tx_stray(b, f);
    }
}

static int drain(struct cel__amqp *b, struct batch *bt, int timeout_ms)
{
    amqp_frame_t f;
    int rc;
    while ((rc = tx_frame(b, &f, timeout_ms)) == 0) {
        if ((rc = confirm_frame(b, bt, &f)) != 0)
            return rc;
        if (timeout_ms > 0)
            return 0;
    }
    return rc;
}

static void props_to_amqp(const struct cel_publish *m, amqp_basic_properties_t *p)
{
    const struct cel_props *c = m->props;
    memset(p, 0, sizeof *p);
    if (!c)
        return;
#define STR_PROP(field, flag)                                                                      \
    if (c->field) {                                                                                \
        p->_flags |= flag;                                                                         \
        p->field = amqp_cstring_bytes(c->field);                                                   \
    }
    STR_PROP(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG)
    STR_PROP(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG)
    STR_PROP(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG)
    STR_PROP(reply_to, AMQP_BASIC_REPLY_TO_FLAG)
#undef STR_PROP
    /* A per-message TTL would expire inside a delay level and skip ahead, so delayed messages
     * travel without it (RabbitMQ drops it on the first dead-lettering anyway). */
    if (c->expiration && m->delay_s == 0) {
        p->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
        p->expiration = amqp_cstring_bytes(c->expiration);
    }
    if (c->delivery_mode) {
        p->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
        p->delivery_mode = c->delivery_mode;
    }
    if (c->has_priority) {
        p->_flags |= AMQP_BASIC_PRIORITY_FLAG;
        p->priority = c->priority;
    }
}

static int send_one(struct cel__amqp *b, const struct cel_publish *m)
{
    amqp_basic_properties_t p;
    char ex[256], rk[512];
    int rc = route(m, ex, sizeof ex, rk, sizeof rk);
    if (rc != 0) {
        cel__amqp_seterr(b, "publish: bad delay %u s or routing key", m->delay_s);
        return rc;
    }
    props_to_amqp(m, &p);
    recycle_amqp_pool(&b->pool);
    if (m->headers) {
        rc = cel__amqp_table_from_cel(m->headers, &p.headers, &b->pool);
        if (rc != 0) {
            cel__amqp_seterr(b, "publish: headers cannot be encoded (%s)", cel_strerror(rc));
            return rc;
        }
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
    }
    amqp_bytes_t body = {m->body.len, (void *)m->body.ptr};
    int st = amqp_basic_publish(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(ex),
                                amqp_cstring_bytes(rk), m->mandatory, 0, &p, body);
    if (st == AMQP_STATUS_OK)
        return 0;
    cel__amqp_seterr(b, "publish: %s", amqp_error_string2(st));
    cel__amqp_conn_drop(&b->tx);
    return st == AMQP_STATUS_TABLE_TOO_BIG ? CEL_ETOOBIG : CEL_ECONN;
}

/* Declares the delay topology and the target queues' bindings before anything is in flight. */
static int prepare_delays(struct cel__amqp *b, const struct cel_publish *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].delay_s == 0)
            continue;
        if (!msgs[i].routing_key || !*msgs[i].routing_key || msgs[i].delay_s > CEL_DELAY_MAX) {
            cel__amqp_seterr(b, "publish: a delayed message needs a queue and <= %u s",
                             CEL_DELAY_MAX);
            return CEL_EINVAL;
        }
        struct cel__amqp_queue *q = cel__amqp_queue_find(b, msgs[i].routing_key, true);
        if (!q)
            return CEL_ENOMEM;
        int rc = q->delay_bound ? 0 : cel__amqp_declare_queue(b, q);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int wait_confirms(struct cel__amqp *b, struct batch *bt)
{
    int64_t last = cel_mono_us();
    while (bt->settled < bt->sent) {
        size_t before = bt->settled;
        int rc = drain(b, bt, 1000);
        if (rc != 0 && rc != CEL_ETIMEDOUT)
            return rc;
        int64_t now = cel_mono_us();
        if (bt->settled != before)
            last = now;
        else if (now - last > (int64_t)CONFIRM_TIMEOUT_MS * 1000) {
            cel__amqp_seterr(b, "publish: no confirm from the broker for %d s",
                             CONFIRM_TIMEOUT_MS / 1000);
            cel__amqp_conn_drop(&b->tx);
            return CEL_ETIMEDOUT;
        }
    }
    return 0;
}

static int batch_result(struct cel__amqp *b, const struct batch *bt, int rc, size_t *confirmed)
{
    size_t i = 0;
    while (i < bt->n && bt->st[i] == M_SETTLED)
        i++;
    if (confirmed)
        *confirmed = i;
    if (rc != 0 || i == bt->n)
        return rc;
    if (bt->st[i] & M_RETURNED) {
        cel__amqp_seterr(b, "publish: message %zu of %zu returned unroutable (routing key %s)", i,
                         bt->n, bt->m[i].routing_key ? bt->m[i].routing_key : "");
        return CEL_EUNROUTABLE;
    }
    cel__amqp_seterr(b, "publish: message %zu of %zu nacked by the broker", i, bt->n);
    return CEL_ENACK;
}

int cel__amqp_publish(struct cel_broker *broker, const struct cel_publish *msgs, size_t n,
                      size_t *confirmed)
{
    struct cel__amqp *b = B(broker);
    if (confirmed)
        *confirmed = 0;
    int rc = cel__amqp_tx_ready(b);
    if (rc == 0)
        rc = prepare_delays(b, msgs, n);
    if (rc != 0 || n == 0)
        return rc;
    struct batch bt = {.m = msgs, .n = n, .base = b->tx.next_seq};
    bt.st = calloc(n, 1);
    if (!bt.st)
        return CEL_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = send_one(b, &msgs[i]);
        if (rc != 0)
            break;
        bt.sent++;
        b->tx.next_seq++;
        if (bt.sent % DRAIN_EVERY == 0) {
            rc = drain(b, &bt, 0);
            rc = rc == CEL_ETIMEDOUT ? 0 : rc;
        }
    }
    if (rc == 0)
        rc = wait_confirms(b, &bt);
    rc = batch_result(b, &bt, rc, confirmed);
    free(bt.st);
    return rc;
}
