/* amqp_adapter.h: the rabbitmq-c adapter's state, shared by its files (connections in
 * amqp_conn.c, topology in amqp_delay.c, the broker operations in amqp.c). */
#ifndef CEL_BROKER_AMQP_ADAPTER_H
#define CEL_BROKER_AMQP_ADAPTER_H

#include <amqp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "broker-adapters/amqp/amqp_internal.h"
#include "common/amqp_url.h"
#include "common/clock.h"

#define CEL__AMQP_CH 1     /* the consuming channel on rx, the publishing channel on tx */
#define CEL__AMQP_GET_CH 2 /* basic.get on rx, so its content never mixes with deliveries */
/* A delivery tag from the get channel carries bit 63 and, in bits 48..62, the epoch of that
 * channel, so reopening it makes its old tags stale without touching the consumer's. */
#define CEL__AMQP_GET_TAG (UINT64_C(1) << 63)
#define CEL__AMQP_EPOCH_SHIFT 48
#define CEL__AMQP_EPOCH_MASK UINT64_C(0x7fff)

/* One AMQP connection. */
struct cel__amqp_conn {
    amqp_connection_state_t st; /* NULL while closed */
    const char *name;           /* "consumer" or "publisher", for errors */
    bool tx;                    /* publisher: confirm.select on its channel */
    bool get_open;              /* rx: the get channel is open */
    uint64_t get_epoch;         /* rx: incremented when the get channel closes */
    uint64_t next_seq;          /* tx: publish sequence number of the next message */
    bool delay_declared;        /* tx: delay levels declared on this connection */
    int64_t hb_sent_us;         /* last heartbeat sent by tick() */
    unsigned opens;             /* successful opens, for tests and diagnostics */
};

struct cel__amqp_queue {
    char *name;
    bool declared;    /* declare() asked for it: redeclared on reconnect */
    bool delay_bound; /* bound to the delay deliver exchange on the current tx connection */
    bool consuming;   /* consume() asked for it and cancel() did not stop it */
    uint16_t prefetch;
    char *ctag;   /* consumer tag on the current rx connection, NULL when not consuming */
    bool control; /* the remote control queue: declared before every consume, no_ack */
};

struct cel__amqp {
    struct cel_broker_base base;
    struct cel_amqp_url urls[CEL_AMQP_URL_MAX];
    size_t nurls;
    size_t cur; /* index of the URL rx is connected to */
    char *tls_ca, *tls_cert, *tls_key;
    bool tls_insecure;
    int heartbeat;
    int connect_timeout_ms;
    char *queue_type;
    int max_priority, delivery_limit;

    struct cel__amqp_conn rx, tx;
    uint64_t gen;
    int64_t tx_serviced_us; /* last time next() read what the broker sent on tx */
    struct cel__amqp_queue *q;
    size_t nq;
    amqp_pool_t pool; /* scratch for header tables being published */
    char errstr[512];
};

#define CEL__AMQP(x) ((struct cel__amqp *)(void *)(x))

/* amqp_conn.c */
void cel__amqp_seterr(struct cel__amqp *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int cel__amqp_conn_open(struct cel__amqp *b, struct cel__amqp_conn *c, size_t url);
int cel__amqp_conn_open_any(struct cel__amqp *b, struct cel__amqp_conn *c, size_t first);
void cel__amqp_conn_drop(struct cel__amqp_conn *c);
void cel__amqp_conn_close(struct cel__amqp_conn *c);
/* Checks the last RPC on channel ch of c: 0, or the broker's error in errstr. A channel close
 * is answered and the channel reopened (CEL_ECHANNEL, CEL_ENOTFOUND for 404); a connection
 * close or a library error drops c (CEL_ECONN, CEL_ETIMEDOUT). */
int cel__amqp_rpc_check(struct cel__amqp *b, struct cel__amqp_conn *c, amqp_channel_t ch,
                        const char *what);
/* Handles a channel.close or connection.close method received outside an RPC. */
int cel__amqp_close_frame(struct cel__amqp *b, struct cel__amqp_conn *c, const amqp_frame_t *f,
                          const char *what);
/* Reopens channel ch of c after the broker closed it (confirm.select again on tx; consumers
 * again and a new generation on rx). */
int cel__amqp_channel_reopen(struct cel__amqp *b, struct cel__amqp_conn *c, amqp_channel_t ch);

static inline bool cel__amqp_same_bytes(amqp_bytes_t a, const char *s, size_t n)
{
    return a.len == n && (n == 0 || memcmp(a.bytes, s, n) == 0);
}

/* amqp_publish.c */
/* Reads what the broker sent on tx without waiting (closes; rabbitmq-c sends heartbeats). */
void cel__amqp_tx_service(struct cel__amqp *b);
/* tx open and serviced: reopened (one pass over the URLs) when the broker closed it. */
int cel__amqp_tx_ready(struct cel__amqp *b);
int cel__amqp_publish(struct cel_broker *broker, const struct cel_publish *msgs, size_t n,
                      size_t *confirmed);

/* amqp.c */
int cel__amqp_consume_all(struct cel__amqp *b);
/* Starts consuming q on rx (remembered: consuming, ctag). */
int cel__amqp_consume(struct cel__amqp *b, struct cel__amqp_queue *q);
struct cel__amqp_queue *cel__amqp_queue_find(struct cel__amqp *b, const char *name, bool add);

/* amqp_delay.c */
int cel__amqp_declare_delay(struct cel__amqp *b);
int cel__amqp_bind_delay(struct cel__amqp *b, struct cel__amqp_queue *q);
int cel__amqp_declare_queue(struct cel__amqp *b, struct cel__amqp_queue *q);

/* amqp_control.c */
/* The pidbox exchanges and queue q (spec 6.1), on tx; before each consume of q, since an
 * auto-delete queue goes away with its consumer. */
int cel__amqp_declare_control(struct cel__amqp *b, struct cel__amqp_queue *q);
int cel__amqp_control(struct cel_broker *broker, const char *node, char *name, size_t namelen);

#endif
