/* amqp_conn.c: opening, checking and closing the adapter's rabbitmq-c connections: TCP or TLS
 * socket with a connect timeout, login with heartbeats, channels, and turning the broker's
 * channel.close / connection.close into status codes with the broker's text in errstr. */
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker-adapters/amqp/amqp_adapter.h"

#define RPC_TIMEOUT_MS 30000
#define FRAME_MAX 131072

void cel__amqp_seterr(struct cel__amqp *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->errstr, sizeof b->errstr, fmt, ap);
    va_end(ap);
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* "amqp://user@host:port/vhost": where we connect, never with the password. */
static const char *url_desc(const struct cel_amqp_url *u, char *buf, size_t n)
{
    snprintf(buf, n, "%s://%s@%s:%d vhost %s", u->tls ? "amqps" : "amqp", u->user, u->host, u->port,
             u->vhost);
    return buf;
}

void cel__amqp_conn_drop(struct cel__amqp_conn *c)
{
    if (c->st)
        amqp_destroy_connection(c->st);
    c->st = NULL;
    c->get_open = false;
    c->get_epoch++;
    c->delay_declared = false;
}

void cel__amqp_conn_close(struct cel__amqp_conn *c)
{
    if (!c->st)
        return;
    struct timeval tv = {2, 0}; /* do not hang on a broker that went away */
    amqp_set_rpc_timeout(c->st, &tv);
    amqp_connection_close(c->st, AMQP_REPLY_SUCCESS);
    cel__amqp_conn_drop(c);
}

static int tls_setup(struct cel__amqp *b, amqp_socket_t *sock)
{
    if (b->tls_ca) {
        if (amqp_ssl_socket_set_cacert(sock, b->tls_ca) != AMQP_STATUS_OK) {
            cel__amqp_seterr(b, "TLS: cannot load CA file %s", b->tls_ca);
            return CEL_ETLS;
        }
    } else if (SSL_CTX_set_default_verify_paths(amqp_ssl_socket_get_context(sock)) != 1) {
        cel__amqp_seterr(b, "TLS: cannot load the system CA store");
        return CEL_ETLS;
    }
    if (b->tls_cert && b->tls_key &&
        amqp_ssl_socket_set_key(sock, b->tls_cert, b->tls_key) != AMQP_STATUS_OK) {
        cel__amqp_seterr(b, "TLS: cannot load client certificate %s / key %s", b->tls_cert,
                         b->tls_key);
        return CEL_ETLS;
    }
    amqp_ssl_socket_set_verify_peer(sock, !b->tls_insecure);
    amqp_ssl_socket_set_verify_hostname(sock, !b->tls_insecure);
    return 0;
}

static int open_status(int st)
{
    if (st <= AMQP_STATUS_SSL_ERROR && st > _AMQP_STATUS_SSL_NEXT_VALUE)
        return CEL_ETLS;
    return st == AMQP_STATUS_TIMEOUT ? CEL_ETIMEDOUT : CEL_ECONN;
}

static int socket_open(struct cel__amqp *b, struct cel__amqp_conn *c, const struct cel_amqp_url *u)
{
    amqp_socket_t *sock = u->tls ? amqp_ssl_socket_new(c->st) : amqp_tcp_socket_new(c->st);
    if (!sock)
        return CEL_ENOMEM;
    int rc = u->tls ? tls_setup(b, sock) : 0;
    if (rc != 0)
        return rc;
    struct timeval tv = ms_tv(b->connect_timeout_ms);
    amqp_set_handshake_timeout(c->st, &tv);
    struct timeval rpc = ms_tv(RPC_TIMEOUT_MS);
    amqp_set_rpc_timeout(c->st, &rpc);
    int st = amqp_socket_open_noblock(sock, u->host, u->port, &tv);
    if (st != AMQP_STATUS_OK) {
        char d[1100];
        cel__amqp_seterr(b, "%s connection to %s: %s", c->name, url_desc(u, d, sizeof d),
                         amqp_error_string2(st));
        return open_status(st);
    }
    return 0;
}

static void bool_entry(amqp_table_entry_t *e, const char *key)
{
    e->key = amqp_cstring_bytes(key);
    e->value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e->value.value.boolean = 1;
}

/* Client properties: a connection name operators can see, and the capabilities we handle
 * (a 403 close on bad credentials, e2e bindings for the delay levels, consumer cancels). */
static amqp_rpc_reply_t login_as(struct cel__amqp *b, struct cel__amqp_conn *c,
                                 const struct cel_amqp_url *u)
{
    char name[64];
    snprintf(name, sizeof name, "celeriac %s pid %ld", c->name, (long)getpid());
    amqp_table_entry_t caps[3], props[2];
    bool_entry(&caps[0], "authentication_failure_close");
    bool_entry(&caps[1], "exchange_exchange_bindings");
    bool_entry(&caps[2], "consumer_cancel_notify");
    props[0].key = amqp_cstring_bytes("connection_name");
    props[0].value.kind = AMQP_FIELD_KIND_UTF8;
    props[0].value.value.bytes = amqp_cstring_bytes(name);
    props[1].key = amqp_cstring_bytes("capabilities");
    props[1].value.kind = AMQP_FIELD_KIND_TABLE;
    props[1].value.value.table = (amqp_table_t){3, caps};
    amqp_table_t t = {2, props};
    return amqp_login_with_properties(c->st, u->vhost, 0, FRAME_MAX, b->heartbeat, &t,
                                      AMQP_SASL_METHOD_PLAIN, u->user, u->pass);
}

static int login(struct cel__amqp *b, struct cel__amqp_conn *c, const struct cel_amqp_url *u)
{
    char d[1100];
    amqp_rpc_reply_t r = login_as(b, c, u);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    url_desc(u, d, sizeof d);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *m = r.reply.decoded;
        cel__amqp_seterr(b, "%s login to %s refused: %u %.*s", c->name, d, m->reply_code,
                         (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        return m->reply_code == 403 || m->reply_code == 530 ? CEL_EAUTH : CEL_ECONN;
    }
    int st = r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? r.library_error : 0;
    cel__amqp_seterr(b, "%s login to %s failed: %s", c->name, d,
                     st ? amqp_error_string2(st) : "unexpected reply");
    return st == AMQP_STATUS_SSL_ERROR ? CEL_ETLS : CEL_ECONN;
}

static int channel_setup(struct cel__amqp *b, struct cel__amqp_conn *c, amqp_channel_t ch)
{
    amqp_channel_open(c->st, ch);
    int rc = cel__amqp_rpc_check(b, c, ch, "channel.open");
    if (rc != 0 || !c->tx)
        return rc;
    amqp_confirm_select(c->st, ch);
    c->next_seq = 1;
    return cel__amqp_rpc_check(b, c, ch, "confirm.select");
}

int cel__amqp_conn_open(struct cel__amqp *b, struct cel__amqp_conn *c, size_t url)
{
    cel__amqp_conn_drop(c);
    c->st = amqp_new_connection();
    if (!c->st)
        return CEL_ENOMEM;
    const struct cel_amqp_url *u = &b->urls[url];
    int rc = socket_open(b, c, u);
    if (rc == 0)
        rc = login(b, c, u);
    if (rc == 0)
        rc = channel_setup(b, c, CEL__AMQP_CH);
    if (rc != 0) {
        cel__amqp_conn_drop(c);
        return rc == CEL_ECHANNEL || rc == CEL_ENOTFOUND ? CEL_ECONN : rc;
    }
    c->hb_sent_us = cel_mono_us();
    c->opens++;
    return 0;
}

int cel__amqp_conn_open_any(struct cel__amqp *b, struct cel__amqp_conn *c, size_t first)
{
    int rc = CEL_ECONN;
    for (size_t i = 0; i < b->nurls; i++) {
        size_t k = (first + i) % b->nurls;
        rc = cel__amqp_conn_open(b, c, k);
        if (rc == 0) {
            if (c == &b->rx)
                b->cur = k;
            return 0;
        }
    }
    return rc;
}

static int close_ok(struct cel__amqp_conn *c, amqp_channel_t ch, bool channel)
{
    if (channel) {
        amqp_channel_close_ok_t ok = {0};
        return amqp_send_method(c->st, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    }
    amqp_connection_close_ok_t ok = {0};
    return amqp_send_method(c->st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
}

int cel__amqp_channel_reopen(struct cel__amqp *b, struct cel__amqp_conn *c, amqp_channel_t ch)
{
    if (ch == CEL__AMQP_GET_CH) {
        c->get_open = false;
        c->get_epoch++; /* its delivery tags are gone */
        return 0;       /* reopened on the next get() */
    }
    int rc = channel_setup(b, c, ch);
    if (rc != 0)
        return rc;
    if (c->tx)
        return 0;
    b->gen++;
    for (size_t i = 0; i < b->nq; i++) {
        free(b->q[i].ctag);
        b->q[i].ctag = NULL;
    }
    return cel__amqp_consume_all(b);
}

/* Records the broker's reason for closing, answers with close-ok and recovers. */
static int server_close(struct cel__amqp *b, struct cel__amqp_conn *c, amqp_channel_t ch,
                        amqp_method_number_t id, const void *decoded, const char *what)
{
    if (id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *m = decoded;
        cel__amqp_seterr(b, "%s: channel closed by the broker: %u %.*s", what, m->reply_code,
                         (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        int code = m->reply_code;
        if (close_ok(c, ch, true) != AMQP_STATUS_OK) {
            cel__amqp_conn_drop(c);
            return CEL_ECONN;
        }
        char saved[sizeof b->errstr];
        memcpy(saved, b->errstr, sizeof saved);
        int rc = cel__amqp_channel_reopen(b, c, ch);
        if (rc != 0)
            return CEL_ECONN;
        memcpy(b->errstr, saved, sizeof saved);
        return code == 404 ? CEL_ENOTFOUND : CEL_ECHANNEL;
    }
    if (id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *m = decoded;
        cel__amqp_seterr(b, "%s: %s connection closed by the broker: %u %.*s", what, c->name,
                         m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        close_ok(c, 0, false);
    } else {
        cel__amqp_seterr(b, "%s: unexpected method 0x%08x from the broker", what, id);
    }
    cel__amqp_conn_drop(c);
    return CEL_ECONN;
}

int cel__amqp_close_frame(struct cel__amqp *b, struct cel__amqp_conn *c, const amqp_frame_t *f,
                          const char *what)
{
    return server_close(b, c, f->channel, f->payload.method.id, f->payload.method.decoded, what);
}

int cel__amqp_rpc_check(struct cel__amqp *b, struct cel__amqp_conn *c, amqp_channel_t ch,
                        const char *what)
{
    if (!c->st) {
        cel__amqp_seterr(b, "%s: %s connection is closed", what, c->name);
        return CEL_ECONN;
    }
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->st);
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        return server_close(b, c, ch, r.reply.id, r.reply.decoded, what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        cel__amqp_seterr(b, "%s: %s connection: %s", what, c->name,
                         amqp_error_string2(r.library_error));
        cel__amqp_conn_drop(c);
        return r.library_error == AMQP_STATUS_TIMEOUT ? CEL_ETIMEDOUT : CEL_ECONN;
    default:
        cel__amqp_seterr(b, "%s: no reply", what);
        cel__amqp_conn_drop(c);
        return CEL_ECONN;
    }
}
