/* client_priv.h: the client's state, shared by the library's files (producer/client*.c) only. */
#ifndef CEL_PRODUCER_CLIENT_PRIV_H
#define CEL_PRODUCER_CLIENT_PRIV_H

#include <stdarg.h>

#include "celeriac/broker.h"
#include "common/sign.h"
#include "common/store.h"
#include "producer/client_internal.h"

/* One encoded message of the pending batch; its body lives in client.bodies at body_off. */
struct cel__pending {
    size_t body_off, body_len;
    struct cel_props *props;
    struct cel_table *headers;
    const char *queue;
    uint32_t delay_s;
};

struct cel_client {
    char errstr[768];
    char *broker_url;   /* NULL: the adapter reads the environment */
    char *broker_shown; /* for messages (redacted when printed) */
    char *backend_url;
    char *tls_ca, *tls_cert, *tls_key, *queue_type;
    bool tls_insecure;
    int max_priority;
    int connect_timeout_ms, reconnect_timeout_ms;
    size_t batch_max;
    enum cel_format format;
    char oid[37];     /* reply_to, as Celery's app.thread_oid */
    char origin[300]; /* gen<pid>@<host> */
    unsigned char signing_key[CEL_SIGN_KEY_MAX];
    size_t signing_key_len; /* 0 = messages are not signed */

    struct cel_broker *broker;
    struct cel_store *store;

    /* the pending batch, reused across flushes */
    struct cel_arena batch_arena;
    struct cel_buf bodies;
    struct cel__pending *pend;
    size_t npend, cappend;
    struct cel_publish *pubs;
    size_t cappubs;
    struct cel_buf scratch;
    char **declared; /* queues declared on the broker so far */
    size_t ndeclared;
    uint64_t confirmed;

    /* results and tool views, valid until the next call of their family */
    struct cel_arena res_arena;
    struct cel_buf res_buf, res_json;
    struct cel_arena tmp_arena;
};

int cel__client_err(struct cel_client *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Connect lazily; CEL_ECONN with errstr naming the server. */
int cel__client_broker(struct cel_client *c);
int cel__client_store(struct cel_client *c);
/* errstr from the adapter's / store's detail; returns rc. */
int cel__client_broker_err(struct cel_client *c, int rc, const char *what);
int cel__client_store_err(struct cel_client *c, int rc, const char *what);
int cel__client_reconnect(struct cel_client *c);
/* A msgpack map of extra headers as a header table, strings copied into a. */
int cel__headers_table(struct cel_arena *a, struct cel_span map, struct cel_table *out);

#endif
