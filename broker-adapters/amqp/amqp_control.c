/* amqp_control.c: Celery's remote control topology (spec 6.1): the fanout exchange
 * celery.pidbox, the direct reply exchange reply.celery.pidbox and this node's transient
 * queue "<node>.celery.pidbox", declared exactly as kombu declares them so a Python worker or
 * client declaring the same entities does not get PRECONDITION_FAILED. */
#include <stdio.h>

#include "broker-adapters/amqp/amqp_adapter.h"

#define B(x) CEL__AMQP(x)
#define CONTROL_EXPIRES_MS 10000      /* control_queue_expires = 10.0 s */
#define CONTROL_MESSAGE_TTL_MS 300000 /* control_queue_ttl = 300.0 s */

static int exchange(struct cel__amqp *b, const char *name, const char *type)
{
    amqp_exchange_declare(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(name),
                          amqp_cstring_bytes(type), 0, 0, 0, 0, amqp_empty_table);
    return cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "exchange.declare");
}

static void int_arg(amqp_table_entry_t *e, const char *key, int32_t v)
{
    e->key = amqp_cstring_bytes(key);
    e->value.kind = AMQP_FIELD_KIND_I32; /* 'I', as py-amqp writes a small int */
    e->value.value.i32 = v;
}

int cel__amqp_declare_control(struct cel__amqp *b, struct cel__amqp_queue *q)
{
    int rc = cel__amqp_tx_ready(b);
    if (rc == 0)
        rc = exchange(b, CEL_PIDBOX_EXCHANGE, "fanout");
    if (rc == 0)
        rc = exchange(b, CEL_PIDBOX_REPLY_EXCHANGE, "direct");
    if (rc != 0)
        return rc;
    amqp_table_entry_t e[2];
    int_arg(&e[0], "x-expires", CONTROL_EXPIRES_MS);
    int_arg(&e[1], "x-message-ttl", CONTROL_MESSAGE_TTL_MS);
    amqp_table_t args = {2, e};
    amqp_queue_declare(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(q->name), 0, 0, 0, 1, args);
    rc = cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "queue.declare (pidbox)");
    if (rc != 0)
        return rc;
    amqp_queue_bind(b->tx.st, CEL__AMQP_CH, amqp_cstring_bytes(q->name),
                    amqp_cstring_bytes(CEL_PIDBOX_EXCHANGE), amqp_empty_bytes, amqp_empty_table);
    return cel__amqp_rpc_check(b, &b->tx, CEL__AMQP_CH, "queue.bind (pidbox)");
}

int cel__amqp_control(struct cel_broker *broker, const char *node, char *name, size_t namelen)
{
    struct cel__amqp *b = B(broker);
    char qname[256];
    int n = snprintf(qname, sizeof qname, "%s%s", node, CEL_PIDBOX_SUFFIX);
    if (n < 0 || (size_t)n >= sizeof qname) {
        cel__amqp_seterr(b, "control: node name too long for a queue name");
        return CEL_ETOOBIG;
    }
    if (name && namelen && snprintf(name, namelen, "%s", qname) >= (int)namelen)
        return CEL_ETOOBIG;
    if (!b->rx.st)
        return CEL_ECONN;
    struct cel__amqp_queue *q = cel__amqp_queue_find(b, qname, true);
    if (!q)
        return CEL_ENOMEM;
    q->control = true;
    if (q->ctag)
        return 0;
    return cel__amqp_consume(b, q);
}
