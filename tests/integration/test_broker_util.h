/* test_broker_util.h: helpers shared by the broker integration tests (header-only so each test
 * stays one binary): env checks, unique names, raw rabbitmq-c cleanup, header lookups. */
#ifndef CEL_TEST_BROKER_UTIL_H
#define CEL_TEST_BROKER_UTIL_H

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "celeriac/broker.h"
#include "common/amqp_url.h"
#include "common/clock.h"

static inline const char *test_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr,
                "%s is not set: run with the shared stack's env, e.g.\n"
                "  eval \"$(CELERIAC_RUN_DIR=/work/main/.run/stack scripts/stack.sh env)\"\n",
                name);
        exit(1);
    }
    return v;
}

static inline void test_name(char *out, size_t n, const char *what)
{
    static unsigned seq;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, n, "celeriac-test-%d-%lx-%u-%s", (int)getpid(), (unsigned long)ts.tv_nsec, seq++,
             what);
}

static inline struct cel_broker *test_open(const char *url, char *err, size_t errlen, int *rc)
{
    struct cel_broker_opts o = {.url = url};
    struct cel_broker *b = NULL;
    *rc = cel_broker_open(&b, &o, err, errlen);
    return b;
}

/* Deletes queues q and q.dead and exchange q with a plain rabbitmq-c connection. */
static inline void test_cleanup_queue(const char *url, const char *q)
{
    struct cel_amqp_url u;
    char err[256];
    if (cel_amqp_url_parse(url, strlen(url), &u, err, sizeof err) != 0 || u.tls)
        return;
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, u.host, u.port) != 0 ||
        amqp_login(c, u.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, u.user, u.pass).reply_type !=
            AMQP_RESPONSE_NORMAL) {
        amqp_destroy_connection(c);
        return;
    }
    char dead[512];
    snprintf(dead, sizeof dead, "%s.dead", q);
    amqp_channel_open(c, 1);
    amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
    amqp_queue_delete(c, 1, amqp_cstring_bytes(dead), 0, 0);
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(q), 0);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static inline const struct cel_value *test_header(const struct cel_table *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->items[i].key.len == strlen(key) &&
            memcmp(t->items[i].key.ptr, key, t->items[i].key.len) == 0)
            return &t->items[i].v;
    return NULL;
}

static inline int test_span_eq(struct cel_span s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

#endif
