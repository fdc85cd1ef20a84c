/* broker.h: the broker adapter interface. A broker is a small vtable chosen by URL scheme
 * (rabbitmq-c's amqp_socket_class_t is the model), so a Redis Streams adapter can be added
 * without touching the worker or the producer. */
#ifndef CELERIAC_BROKER_H
#define CELERIAC_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "celeriac/celeriac.h"
#include "common/arena.h"
#include "common/message.h"
#include "common/value.h"

struct cel_broker;

struct cel_broker_opts {
    const char *url;        /* one URL, or a comma-separated list tried in turn (failover) */
    const char *tls_ca;     /* amqps: CA bundle file; NULL = system default */
    const char *tls_cert;   /* amqps: client certificate (PEM), optional */
    const char *tls_key;    /* amqps: client key (PEM), optional */
    bool tls_insecure;      /* amqps: disable peer and hostname verification (off by default) */
    int heartbeat;          /* seconds; 0 = default (30); < 0 disables */
    int connect_timeout_ms; /* 0 = default (5000) */
    const char *queue_type; /* NULL/"classic" or "quorum" (x-queue-type) for declared queues */
    int max_priority;       /* > 0: x-max-priority on declared queues */
    int delivery_limit;     /* > 0 with quorum: x-delivery-limit */
};

/* A message received from a queue. Everything (strings, table, body) is copied into the arena
 * passed to next(), so it stays valid while the job runs. */
struct cel_delivery {
    uint64_t tag;      /* delivery tag on the connection that delivered it */
    uint64_t conn_gen; /* that connection's generation; acks for an older one return CEL_ESTALE */
    const char *queue; /* the queue it was consumed from */
    const char *exchange;
    const char *routing_key;
    bool redelivered;
    struct cel_props props;
    struct cel_table headers;
    struct cel_span body;
    /* Non-NULL when the adapter could not represent part of the delivery (a header nested past
     * its limit): the reason. The other headers are kept; the consumer dead-letters it. */
    const char *defect;
};

/* One message to publish. Routed to exchange/routing_key; with delay > 0 through the delay
 * levels (1 s precision, at most 2^28 - 1 s) and delivered to the queue named routing_key. */
struct cel_publish {
    const char *exchange;    /* "" = the default exchange */
    const char *routing_key; /* the queue name when exchange is "" or delay_s > 0 */
    const struct cel_props *props;
    const struct cel_table *headers;
    struct cel_span body;
    uint32_t delay_s;
    bool mandatory; /* unroutable -> CEL_EUNROUTABLE instead of being dropped */
};

struct cel_queue_info {
    uint32_t messages; /* ready messages */
    uint32_t consumers;
};

struct cel_broker_class {
    const char *scheme; /* "amqp" also serves "amqps" */
    int (*open)(struct cel_broker **b, const struct cel_broker_opts *o, char *err, size_t errlen);
    void (*free)(struct cel_broker *b);
    const char *(*errstr)(const struct cel_broker *b);

    /* Celery topology for q: exchange q (direct, durable), queue q (durable, arguments only
     * as the options ask), binding q, plus the durable dead-letter queue q.dead. Idempotent and
     * remembered, so reconnect() declares it again. */
    int (*declare)(struct cel_broker *b, const char *queue);
    /* Publishes n messages with publisher confirms; returns once all are confirmed. A nack or
     * a return is an error (CEL_ENACK / CEL_EUNROUTABLE); *confirmed, when non-NULL, receives how
     * many messages from the start of the batch were confirmed before the first failure. */
    int (*publish)(struct cel_broker *b, const struct cel_publish *msgs, size_t n,
                   size_t *confirmed);

    /* Starts consuming q (manual ack) with the prefetch window; remembered for reconnect(). */
    int (*consume)(struct cel_broker *b, const char *queue, uint16_t prefetch);
    /* Waits up to timeout_ms (0 = poll, < 0 = forever) for the next delivery.
     * 0 = a delivery, CEL_ETIMEDOUT = none, CEL_ECONN = connection lost (call reconnect()). */
    int (*next)(struct cel_broker *b, struct cel_delivery *d, struct cel_arena *a, int timeout_ms);
    /* File descriptor to poll for readability, -1 while disconnected. When pending() is true
     * frames are already buffered: call next() without waiting on the fd. */
    int (*fd)(const struct cel_broker *b);
    bool (*pending)(const struct cel_broker *b);
    /* Settle deliveries. With multiple, every unsettled tag <= tag on that connection. */
    int (*ack)(struct cel_broker *b, uint64_t conn_gen, uint64_t tag, bool multiple);
    int (*nack)(struct cel_broker *b, uint64_t conn_gen, uint64_t tag, bool multiple, bool requeue);
    /* Stops consuming (warm shutdown): no new deliveries; settling is still allowed. */
    int (*cancel)(struct cel_broker *b);

    /* One connection attempt over the URL list; on success re-declares and re-consumes and
     * increments the generation. The caller owns the backoff between attempts. */
    int (*reconnect)(struct cel_broker *b);
    /* Keeps the connection alive (heartbeats) when the caller has nothing else to do. */
    int (*tick)(struct cel_broker *b);

    /* Operations for tools (producer dead ls/replay/purge, inspect queues). */
    int (*queue_info)(struct cel_broker *b, const char *queue, struct cel_queue_info *info);
    /* basic.get with manual ack: 0 = got one, CEL_ENOTFOUND = queue empty. */
    int (*get)(struct cel_broker *b, const char *queue, struct cel_delivery *d,
               struct cel_arena *a);
    int (*purge)(struct cel_broker *b, const char *queue, uint32_t *purged);

    /* Celery's remote control (spec 6.1) for node `node`: declares the fanout exchange
     * CEL_PIDBOX_EXCHANGE and the direct reply exchange CEL_PIDBOX_REPLY_EXCHANGE (both
     * durable=false) and the queue "<node>.celery.pidbox" (durable=false, auto_delete, x-expires
     * 10 s, x-message-ttl 300 s) bound with key "", and consumes it without acks. Its deliveries
     * come out of next() with d->queue set to that name and must never be settled. The queue
     * name is written to name (when not NULL). Remembered for reconnect(), stopped by cancel().
     * Replies go out through publish() to CEL_PIDBOX_REPLY_EXCHANGE. NULL when unsupported. */
    int (*control)(struct cel_broker *b, const char *node, char *name, size_t namelen);
};

#define CEL_PIDBOX_EXCHANGE "celery.pidbox"
#define CEL_PIDBOX_REPLY_EXCHANGE "reply.celery.pidbox"
#define CEL_PIDBOX_SUFFIX ".celery.pidbox"

/* The adapter for a URL's scheme, or NULL. */
const struct cel_broker_class *cel_broker_class_for(const char *url);

/* Convenience wrappers: every call goes through b's class. */
int cel_broker_open(struct cel_broker **b, const struct cel_broker_opts *o, char *err,
                    size_t errlen);
/* Every adapter's struct starts with this header so the wrappers can find the class. */
struct cel_broker_base {
    const struct cel_broker_class *cls;
};
#define CEL_BROKER_CLASS(b) (((const struct cel_broker_base *)(const void *)(b))->cls)

/* Copies url into out with any password replaced by "***" (for logs). */
void cel_url_redact(const char *url, char *out, size_t outlen);
/* Overwrites in place every password in s (a URL, a comma-separated list, or "--opt=URL") with
 * '*', keeping the length: for argv, so that ps and /proc/<pid>/cmdline do not show it. */
void cel_url_scrub(char *s);

/* Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)). */
int cel_backoff_ms(unsigned attempt, int base_ms, int cap_ms);

#endif
