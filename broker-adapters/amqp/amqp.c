/* amqp.c: the RabbitMQ adapter behind broker.h, on rabbitmq-c 0.11.
 *
 * Two connections, because rabbitmq-c is not thread safe and a publish waiting for its confirms
 * must not swallow deliveries meant for the consumer: "rx" consumes (channel 1: basic.qos,
 * basic.consume, acks; channel 2: basic.get, whose tags carry CEL__AMQP_GET_TAG) and "tx"
 * declares and publishes (channel 1 in confirm mode, also queue_info and purge). The generation
 * counts rx connections and rx channel reopenings: a settle for an older one is CEL_ESTALE and
 * sends nothing. tx is reopened on demand when the broker closed it while idle; next() and
 * tick() keep its heartbeats going. Frames the broker sends on tx between publishes (closes,
 * blocked notices) are read without waiting by next() and tick(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker-adapters/amqp/amqp_adapter.h"

#define B(x) CEL__AMQP(x)
#define TX_SERVICE_US 100000

static char *dup_opt(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    *oom |= !d;
    return d;
}

struct cel__amqp_queue *cel__amqp_queue_find(struct cel__amqp *b, const char *name, bool add)
{
    for (size_t i = 0; i < b->nq; i++)
        if (strcmp(b->q[i].name, name) == 0)
            return &b->q[i];
    if (!add)
        return NULL;
    struct cel__amqp_queue *q = realloc(b->q, (b->nq + 1) * sizeof *q);
    if (!q)
        return NULL;
    b->q = q;
    memset(&q[b->nq], 0, sizeof *q);
    q[b->nq].name = strdup(name);
    if (!q[b->nq].name)
        return NULL;
    return &b->q[b->nq++];
}

static void amqp_free(struct cel_broker *broker)
{
    struct cel__amqp *b = B(broker);
    if (!b)
        return;
    cel__amqp_conn_close(&b->rx);
    cel__amqp_conn_close(&b->tx);
    for (size_t i = 0; i < b->nq; i++) {
        free(b->q[i].name);
        free(b->q[i].ctag);
    }
    free(b->q);
    free(b->tls_ca);
    free(b->tls_cert);
    free(b->tls_key);
    free(b->queue_type);
    empty_amqp_pool(&b->pool);
    free(b);
}

static const char *amqp_errstr(const struct cel_broker *broker)
{
    return B(broker)->errstr;
}

static int copy_opts(struct cel__amqp *b, const struct cel_broker_opts *o)
{
    bool oom = false;
    b->tls_ca = dup_opt(o->tls_ca, &oom);
    b->tls_cert = dup_opt(o->tls_cert, &oom);
    b->tls_key = dup_opt(o->tls_key, &oom);
    b->queue_type = dup_opt(o->queue_type, &oom);
    b->tls_insecure = o->tls_insecure;
    b->heartbeat = o->heartbeat == 0 ? 30 : o->heartbeat < 0 ? 0 : o->heartbeat;
    b->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
    b->max_priority = o->max_priority;
    b->delivery_limit = o->delivery_limit;
    return oom ? CEL_ENOMEM : 0;
}

static int amqp_open(struct cel_broker **out, const struct cel_broker_opts *o, char *err,
                     size_t errlen)
{
    *out = NULL;
    struct cel__amqp *b = calloc(1, sizeof *b);
    if (!b)
        return CEL_ENOMEM;
    b->base.cls = &cel__amqp_broker_class;
    b->rx.name = "consumer";
    b->tx.name = "publisher";
    b->tx.tx = true;
    init_amqp_pool(&b->pool, 16384);
    int rc = cel_amqp_url_parse_list(o->url, b->urls, CEL_AMQP_URL_MAX, &b->nurls, b->errstr,
                                     sizeof b->errstr);
    cel_amqp_url_env_password(b->urls, b->nurls);
    if (rc == 0)
        rc = copy_opts(b, o);
    if (rc == 0)
        rc = cel__amqp_conn_open_any(b, &b->rx, 0);
    if (rc == 0)
        rc = cel__amqp_conn_open_any(b, &b->tx, b->cur);
    if (rc != 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s", b->errstr[0] ? b->errstr : cel_strerror(rc));
        amqp_free((struct cel_broker *)b);
        return rc;
    }
    b->gen = 1;
    *out = (struct cel_broker *)b;
    return 0;
}

static int amqp_declare(struct cel_broker *broker, const char *name)
{
    struct cel__amqp *b = B(broker);
    int rc = cel__amqp_tx_ready(b);
    if (rc != 0)
        return rc;
    struct cel__amqp_queue *q = cel__amqp_queue_find(b, name, true);
    if (!q)
        return CEL_ENOMEM;
    rc = cel__amqp_declare_queue(b, q);
    q->declared |= rc == 0;
    return rc;
}

/* ---- consuming ---- */

/* A control queue is declared again first (it is auto-delete) and consumed without acks and
 * without a basic.qos, which would otherwise apply to it. */
int cel__amqp_consume(struct cel__amqp *b, struct cel__amqp_queue *q)
{
    q->consuming = false; /* a channel reopened because of this very failure skips it */
    int rc = 0;
    if (q->control) {
        rc = cel__amqp_declare_control(b, q);
    } else {
        amqp_basic_qos(b->rx.st, CEL__AMQP_CH, 0, q->prefetch, 0);
        rc = cel__amqp_rpc_check(b, &b->rx, CEL__AMQP_CH, "basic.qos");
    }
    amqp_basic_consume_ok_t *ok = NULL;
    if (rc == 0) {
        ok = amqp_basic_consume(b->rx.st, CEL__AMQP_CH, amqp_cstring_bytes(q->name),
                                amqp_empty_bytes, 0, q->control, 0, amqp_empty_table);
        rc = cel__amqp_rpc_check(b, &b->rx, CEL__AMQP_CH, "basic.consume");
    }
    q->consuming = rc == 0 || rc == CEL_ECONN || rc == CEL_ETIMEDOUT;
    if (rc != 0 || !ok)
        return rc ? rc : CEL_ECONN;
    free(q->ctag);
    q->ctag = strndup(ok->consumer_tag.bytes, ok->consumer_tag.len);
    return q->ctag ? 0 : CEL_ENOMEM;
}

int cel__amqp_consume_all(struct cel__amqp *b)
{
    int rc = 0;
    for (size_t i = 0; i < b->nq && b->rx.st; i++) {
        if (!b->q[i].consuming || b->q[i].ctag)
            continue;
        int r = cel__amqp_consume(b, &b->q[i]);
        rc = rc ? rc : r;
    }
    return b->rx.st ? rc : CEL_ECONN;
}

static int amqp_consume(struct cel_broker *broker, const char *name, uint16_t prefetch)
{
    struct cel__amqp *b = B(broker);
    if (!b->rx.st)
        return CEL_ECONN;
    struct cel__amqp_queue *q = cel__amqp_queue_find(b, name, true);
    if (!q)
        return CEL_ENOMEM;
    q->prefetch = prefetch;
    if (q->ctag)
        return 0;
    return cel__amqp_consume(b, q);
}

static const char *dup_bytes(struct cel_arena *a, amqp_bytes_t x)
{
    return cel_arena_strndup(a, x.len ? x.bytes : "", x.len);
}

static int props_to_cel(const amqp_basic_properties_t *p, struct cel_props *c, struct cel_arena *a)
{
    memset(c, 0, sizeof *c);
#define STR_PROP(field, flag)                                                                      \
    if ((p->_flags & flag) && !(c->field = dup_bytes(a, p->field)))                                \
        return CEL_ENOMEM;
    STR_PROP(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG)
    STR_PROP(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG)
    STR_PROP(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG)
    STR_PROP(reply_to, AMQP_BASIC_REPLY_TO_FLAG)
    STR_PROP(expiration, AMQP_BASIC_EXPIRATION_FLAG)
#undef STR_PROP
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
        c->delivery_mode = p->delivery_mode;
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG) {
        c->priority = p->priority;
        c->has_priority = true;
    }
    return 0;
}

struct envelope {
    uint64_t tag;
    bool redelivered;
    amqp_bytes_t exchange, routing_key;
    const char *queue;
};

/* Copies a received message into the caller's arena. Headers too deep to convert are left
 * out (the decoder then refuses the task and the worker dead-letters it). */
static int fill(struct cel__amqp *b, struct cel_delivery *d, struct cel_arena *a,
                const struct envelope *e, const amqp_message_t *msg)
{
    memset(d, 0, sizeof *d);
    d->tag = e->tag;
    d->conn_gen = b->gen;
    d->redelivered = e->redelivered;
    d->queue = cel_arena_strdup(a, e->queue ? e->queue : "");
    d->exchange = dup_bytes(a, e->exchange);
    d->routing_key = dup_bytes(a, e->routing_key);
    char *body = cel_arena_alloc(a, msg->body.len + 1);
    if (!d->queue || !d->exchange || !d->routing_key || !body)
        return CEL_ENOMEM;
    if (msg->body.len)
        memcpy(body, msg->body.bytes, msg->body.len);
    body[msg->body.len] = 0;
    d->body.ptr = body;
    d->body.len = msg->body.len;
    int rc = props_to_cel(&msg->properties, &d->props, a);
    if (rc == 0 && (msg->properties._flags & AMQP_BASIC_HEADERS_FLAG)) {
        const char *deep = NULL;
        rc = cel__amqp_table_to_cel(&msg->properties.headers, &d->headers, a, &deep);
        if (rc == 0 && deep) {
            size_t n = strlen(deep) + 64;
            char *why = cel_arena_alloc(a, n);
            if (!why)
                return CEL_ENOMEM;
            snprintf(why, n, "header '%s' nested deeper than %d levels", deep, CEL_AMQP_MAX_DEPTH);
            d->defect = why;
        }
    }
    return rc;
}

static const char *queue_of(struct cel__amqp *b, amqp_bytes_t ctag)
{
    for (size_t i = 0; i < b->nq; i++)
        if (b->q[i].ctag && cel__amqp_same_bytes(ctag, b->q[i].ctag, strlen(b->q[i].ctag)))
            return b->q[i].name;
    return NULL;
}

static void server_cancel(struct cel__amqp *b, const amqp_basic_cancel_t *c)
{
    for (size_t i = 0; i < b->nq; i++) {
        if (!b->q[i].ctag ||
            !cel__amqp_same_bytes(c->consumer_tag, b->q[i].ctag, strlen(b->q[i].ctag)))
            continue;
        cel__amqp_seterr(b, "the broker cancelled the consumer of queue %s", b->q[i].name);
        free(b->q[i].ctag);
        b->q[i].ctag = NULL;
        b->q[i].consuming = false;
        b->q[i].delay_bound = false; /* deleted with the queue, most likely */
    }
}

/* The next frame on rx is not a delivery: read it and act on it. */
static int rx_other(struct cel__amqp *b)
{
    amqp_frame_t f;
    int st = amqp_simple_wait_frame(b->rx.st, &f);
    if (st != AMQP_STATUS_OK) {
        cel__amqp_seterr(b, "consumer connection: %s", amqp_error_string2(st));
        cel__amqp_conn_drop(&b->rx);
        return CEL_ECONN;
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
        return 0;
    switch (f.payload.method.id) {
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: {
        int rc = cel__amqp_close_frame(b, &b->rx, &f, "consumer");
        return b->rx.st ? 0 : rc;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        server_cancel(b, f.payload.method.decoded);
        return 0;
    default:
        return 0; /* connection.blocked/unblocked, stray content */
    }
}

static int next_once(struct cel__amqp *b, struct cel_delivery *d, struct cel_arena *a, int ms)
{
    amqp_envelope_t env;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    amqp_maybe_release_buffers(b->rx.st);
    amqp_rpc_reply_t r = amqp_consume_message(b->rx.st, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        struct envelope e = {env.delivery_tag, env.redelivered, env.exchange, env.routing_key,
                             queue_of(b, env.consumer_tag)};
        int rc = fill(b, d, a, &e, &env.message);
        amqp_destroy_envelope(&env);
        return rc;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        if (r.library_error == AMQP_STATUS_TIMEOUT)
            return CEL_ETIMEDOUT;
        if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            int rc = rx_other(b);
            return rc ? rc : CEL_EAGAIN;
        }
    }
    cel__amqp_seterr(b, "consumer connection: %s",
                     r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION
                         ? amqp_error_string2(r.library_error)
                         : "unexpected reply");
    cel__amqp_conn_drop(&b->rx);
    return CEL_ECONN;
}

static void tx_service_maybe(struct cel__amqp *b)
{
    int64_t now = cel_mono_us();
    if (now - b->tx_serviced_us < TX_SERVICE_US)
        return;
    b->tx_serviced_us = now;
    cel__amqp_tx_service(b);
}

static int amqp_next(struct cel_broker *broker, struct cel_delivery *d, struct cel_arena *a,
                     int timeout_ms)
{
    struct cel__amqp *b = B(broker);
    int64_t deadline = cel_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        if (!b->rx.st)
            return CEL_ECONN;
        tx_service_maybe(b);
        int64_t left = timeout_ms < 0 ? 1000000 : deadline - cel_mono_us();
        int slice = left <= 0 ? 0 : left > 1000000 ? 1000 : (int)(left / 1000);
        int rc = next_once(b, d, a, slice);
        if (rc == CEL_EAGAIN)
            continue;
        if (rc != CEL_ETIMEDOUT || (timeout_ms >= 0 && cel_mono_us() >= deadline))
            return rc;
    }
}

static int amqp_fd(const struct cel_broker *broker)
{
    const struct cel__amqp *b = B(broker);
    if (!b->rx.st)
        return -1;
    amqp_socket_t *s = amqp_get_socket(b->rx.st);
    return s ? amqp_socket_get_sockfd(s) : -1;
}

static bool amqp_pending(const struct cel_broker *broker)
{
    const struct cel__amqp *b = B(broker);
    return b->rx.st && (amqp_frames_enqueued(b->rx.st) || amqp_data_in_buffer(b->rx.st));
}

static int settle_check(struct cel__amqp *b, uint64_t gen, uint64_t *tag, amqp_channel_t *ch)
{
    if (gen != b->gen) {
        cel__amqp_seterr(b, "delivery %llu belongs to connection generation %llu, now %llu",
                         (unsigned long long)*tag, (unsigned long long)gen,
                         (unsigned long long)b->gen);
        return CEL_ESTALE;
    }
    if (!b->rx.st)
        return CEL_ECONN;
    *ch = CEL__AMQP_CH;
    if (!(*tag & CEL__AMQP_GET_TAG))
        return 0;
    *ch = CEL__AMQP_GET_CH;
    uint64_t epoch = (*tag >> CEL__AMQP_EPOCH_SHIFT) & CEL__AMQP_EPOCH_MASK;
    *tag &= (UINT64_C(1) << CEL__AMQP_EPOCH_SHIFT) - 1;
    if (b->rx.get_open && epoch == (b->rx.get_epoch & CEL__AMQP_EPOCH_MASK))
        return 0;
    cel__amqp_seterr(b, "delivery %llu came from a get channel that has closed since",
                     (unsigned long long)*tag);
    return CEL_ESTALE;
}

static int sent(struct cel__amqp *b, int st, const char *what)
{
    if (st == AMQP_STATUS_OK)
        return 0;
    cel__amqp_seterr(b, "%s: %s", what, amqp_error_string2(st));
    cel__amqp_conn_drop(&b->rx);
    return CEL_ECONN;
}

static int amqp_ack(struct cel_broker *broker, uint64_t gen, uint64_t tag, bool multiple)
{
    struct cel__amqp *b = B(broker);
    amqp_channel_t ch;
    int rc = settle_check(b, gen, &tag, &ch);
    return rc ? rc : sent(b, amqp_basic_ack(b->rx.st, ch, tag, multiple), "basic.ack");
}

static int amqp_nack(struct cel_broker *broker, uint64_t gen, uint64_t tag, bool multiple,
                     bool requeue)
{
    struct cel__amqp *b = B(broker);
    amqp_channel_t ch;
    int rc = settle_check(b, gen, &tag, &ch);
    return rc ? rc : sent(b, amqp_basic_nack(b->rx.st, ch, tag, multiple, requeue), "basic.nack");
}

static int amqp_cancel(struct cel_broker *broker)
{
    struct cel__amqp *b = B(broker);
    int rc = 0;
    for (size_t i = 0; i < b->nq; i++) {
        struct cel__amqp_queue *q = &b->q[i];
        q->consuming = false;
        if (!q->ctag || !b->rx.st)
            continue;
        amqp_basic_cancel(b->rx.st, CEL__AMQP_CH, amqp_cstring_bytes(q->ctag));
        int r = cel__amqp_rpc_check(b, &b->rx, CEL__AMQP_CH, "basic.cancel");
        free(q->ctag);
        q->ctag = NULL;
        rc = rc ? rc : r;
    }
    return rc;
}

static int amqp_reconnect(struct cel_broker *broker)
{
    struct cel__amqp *b = B(broker);
    cel__amqp_conn_drop(&b->rx);
    cel__amqp_conn_drop(&b->tx);
    for (size_t i = 0; i < b->nq; i++) {
        free(b->q[i].ctag);
        b->q[i].ctag = NULL;
        b->q[i].delay_bound = false;
    }
    int rc = cel__amqp_conn_open_any(b, &b->rx, 0);
    if (rc != 0)
        return rc;
    b->gen++;
    rc = cel__amqp_conn_open_any(b, &b->tx, b->cur);
    for (size_t i = 0; rc == 0 && i < b->nq; i++)
        if (b->q[i].declared)
            rc = cel__amqp_declare_queue(b, &b->q[i]);
    if (rc == 0)
        rc = cel__amqp_consume_all(b);
    if (rc != 0) {
        cel__amqp_conn_drop(&b->rx);
        cel__amqp_conn_drop(&b->tx);
        return rc == CEL_ECHANNEL || rc == CEL_ENOTFOUND ? rc : CEL_ECONN;
    }
    return 0;
}

static int amqp_tick(struct cel_broker *broker)
{
    struct cel__amqp *b = B(broker);
    cel__amqp_tx_service(b);
    if (!b->rx.st)
        return CEL_ECONN;
    int64_t now = cel_mono_us();
    if (b->heartbeat <= 0 || now - b->rx.hb_sent_us < (int64_t)b->heartbeat * 500000)
        return 0;
    b->rx.hb_sent_us = now;
    amqp_frame_t f;
    memset(&f, 0, sizeof f);
    f.frame_type = AMQP_FRAME_HEARTBEAT;
    f.channel = 0;
    return sent(b, amqp_send_frame(b->rx.st, &f), "heartbeat");
}

/* ---- tools ---- */

static int amqp_queue_info(struct cel_broker *broker, const char *name, struct cel_queue_info *info)
{
    struct cel__amqp *b = B(broker);
    int rc = cel__amqp_tx_ready(b);
    if (rc != 0)
        return rc;
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(
        b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);
    rc = cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "queue.declare (passive)");
    if (rc == 0 && ok) {
        info->messages = ok->message_count;
        info->consumers = ok->consumer_count;
    }
    return rc;
}

static int get_channel(struct cel__amqp *b)
{
    if (!b->rx.st)
        return CEL_ECONN;
    if (b->rx.get_open)
        return 0;
    amqp_channel_open(b->rx.st, CEL__AMQP_GET_CH);
    int rc = cel__amqp_rpc_check(b, &b->rx, CEL__AMQP_GET_CH, "channel.open");
    b->rx.get_open = rc == 0;
    return rc;
}

static int amqp_get(struct cel_broker *broker, const char *name, struct cel_delivery *d,
                    struct cel_arena *a)
{
    struct cel__amqp *b = B(broker);
    int rc = get_channel(b);
    if (rc != 0)
        return rc;
    amqp_rpc_reply_t r = amqp_basic_get(b->rx.st, CEL__AMQP_GET_CH, amqp_cstring_bytes(name), 0);
    rc = cel__amqp_rpc_check(b, &b->rx, CEL__AMQP_GET_CH, "basic.get");
    if (rc != 0)
        return rc;
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
        return CEL_ENOTFOUND;
    const amqp_basic_get_ok_t *ok = r.reply.decoded;
    uint64_t epoch = (b->rx.get_epoch & CEL__AMQP_EPOCH_MASK) << CEL__AMQP_EPOCH_SHIFT;
    struct envelope e = {ok->delivery_tag | epoch | CEL__AMQP_GET_TAG, ok->redelivered,
                         ok->exchange, ok->routing_key, name};
    amqp_message_t msg;
    r = amqp_read_message(b->rx.st, CEL__AMQP_GET_CH, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        cel__amqp_seterr(b, "basic.get: reading the message failed");
        cel__amqp_conn_drop(&b->rx);
        return CEL_ECONN;
    }
    rc = fill(b, d, a, &e, &msg);
    amqp_destroy_message(&msg);
    return rc;
}

static int amqp_purge(struct cel_broker *broker, const char *name, uint32_t *purged)
{
    struct cel__amqp *b = B(broker);
    int rc = cel__amqp_tx_ready(b);
    if (rc != 0)
        return rc;
    amqp_queue_purge_ok_t *ok = amqp_queue_purge(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(name));
    rc = cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "queue.purge");
    if (rc == 0 && purged)
        *purged = ok ? ok->message_count : 0;
    return rc;
}

const struct cel_broker_class cel__amqp_broker_class = {
    .scheme = "amqp",
    .open = amqp_open,
    .free = amqp_free,
    .errstr = amqp_errstr,
    .declare = amqp_declare,
    .publish = cel__amqp_publish,
    .consume = amqp_consume,
    .next = amqp_next,
    .fd = amqp_fd,
    .pending = amqp_pending,
    .ack = amqp_ack,
    .nack = amqp_nack,
    .cancel = amqp_cancel,
    .reconnect = amqp_reconnect,
    .tick = amqp_tick,
    .queue_info = amqp_queue_info,
    .get = amqp_get,
    .purge = amqp_purge,
    .control = cel__amqp_control,
};
