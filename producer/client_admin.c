/* client_admin.c: the operator side of libceleriac: revoke (Redis + Celery's pidbox broadcast),
 * queue depth, the worker registry, and dead letters (list without losing, replay, purge). */
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/json.h"
#include "producer/client_priv.h"

#define CEL__DEAD_ROUND 500

static int pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

/* {method: revoke, arguments: {task_id, terminate, signal}, destination, pattern, matcher} */
static int pidbox_body(const char *task_id, bool terminate, struct cel_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, cel_buf_msgpack_write);
    int bad = msgpack_pack_map(&pk, 5) || pk_str(&pk, "method") || pk_str(&pk, "revoke") ||
              pk_str(&pk, "arguments") || msgpack_pack_map(&pk, 3) || pk_str(&pk, "task_id") ||
              pk_str(&pk, task_id) || pk_str(&pk, "terminate") ||
              (terminate ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk)) ||
              pk_str(&pk, "signal") || pk_str(&pk, "SIGTERM") || pk_str(&pk, "destination") ||
              msgpack_pack_nil(&pk) || pk_str(&pk, "pattern") || msgpack_pack_nil(&pk) ||
              pk_str(&pk, "matcher") || msgpack_pack_nil(&pk);
    return bad ? CEL_ENOMEM : 0;
}

static int pidbox_broadcast(struct cel_client *c, const char *task_id, bool terminate,
                            bool *notified)
{
    struct cel_buf mp = CEL_BUF_INIT, js = CEL_BUF_INIT;
    int rc = pidbox_body(task_id, terminate, &mp);
    bool json = c->format == CEL_FMT_JSON;
    if (!rc && json)
        rc = cel_msgpack_to_json(cel_buf_span(&mp), &js);
    struct cel_field hf[2] = {
        {CEL_SPAN_LIT("clock"), cel_value_int(1)},
        {CEL_SPAN_LIT("expires"), {.type = CEL_V_DOUBLE, .u.d = cel_now_us() / 1e6 + 1.0}},
    };
    struct cel_table headers = {hf, 2};
    struct cel_props props = {
        .content_type = json ? CEL_CT_JSON : CEL_CT_MSGPACK,
        .content_encoding = json ? "utf-8" : "binary",
        .delivery_mode = 2,
        .has_priority = true,
    };
    struct cel_publish p = {
        .exchange = "celery.pidbox",
        .routing_key = "",
        .props = &props,
        .headers = &headers,
        .body = json ? cel_buf_span(&js) : cel_buf_span(&mp),
    };
    if (!rc)
        rc = cel__client_broker(c);
    if (!rc) {
        size_t conf = 0;
        rc = CEL_BROKER_CLASS(c->broker)->publish(c->broker, &p, 1, &conf);
        *notified = rc == 0;
        /* no pidbox exchange: no Celery worker ever ran on this vhost, nobody to tell */
        if (rc == CEL_ENOTFOUND || rc == CEL_ECHANNEL)
            rc = 0;
        else if (rc)
            rc = cel__client_broker_err(c, rc, "pidbox revoke broadcast");
    }
    cel_buf_free(&mp);
    cel_buf_free(&js);
    return rc;
}

int cel_client_revoke(struct cel_client *c, const char *task_id, bool terminate,
                      bool *celery_notified)
{
    bool notified = false;
    if (!task_id || !*task_id)
        return cel__client_err(c, CEL_EINVAL, "empty task id");
    int rc = cel__client_store(c);
    if (!rc && (rc = cel_store_revoke(c->store, task_id, terminate, 0)) != 0)
        rc = cel__client_store_err(c, rc, "revoke");
    if (!rc)
        rc = pidbox_broadcast(c, task_id, terminate, &notified);
    if (celery_notified)
        *celery_notified = notified;
    return rc;
}

int cel_client_queue_info(struct cel_client *c, const char *queue,
                          struct cel_client_queue_info *info)
{
    struct cel_queue_info qi = {0, 0};
    int rc = cel__client_broker(c);
    if (rc)
        return rc;
    rc = CEL_BROKER_CLASS(c->broker)->queue_info(c->broker, queue, &qi);
    if (rc == CEL_ENOTFOUND)
        return cel__client_err(c, rc, "queue %s does not exist", queue);
    if (rc)
        return cel__client_broker_err(c, rc, "queue info");
    info->messages = qi.messages;
    info->consumers = qi.consumers;
    return 0;
}

struct workers_ctx {
    void (*fn)(void *ctx, const char *hostname, const char *json, size_t len);
    void *ctx;
};

static void worker_cb(void *ctx, const char *hostname, struct cel_span json)
{
    struct workers_ctx *w = ctx;
    w->fn(w->ctx, hostname, json.ptr, json.len);
}

int cel_client_list_workers(struct cel_client *c,
                            void (*fn)(void *ctx, const char *hostname, const char *json,
                                       size_t len),
                            void *ctx)
{
    struct workers_ctx w = {fn, ctx};
    int rc = cel__client_store(c);
    if (!rc && (rc = cel_store_list_workers(c->store, worker_cb, &w)) != 0)
        rc = cel__client_store_err(c, rc, "list workers");
    return rc;
}

/* ---- dead letters ---- */

static const char *dead_name(struct cel_client *c, const char *queue)
{
    size_t n = strlen(queue);
    char *s = cel_arena_alloc(&c->tmp_arena, n + 6);
    if (s) {
        memcpy(s, queue, n);
        memcpy(s + n, ".dead", 6);
    }
    return s;
}

static const char *value_text(struct cel_arena *a, const struct cel_value *v)
{
    char tmp[64];
    switch (v->type) {
    case CEL_V_STR:
    case CEL_V_BYTES:
        return cel_arena_strndup(a, v->u.s.ptr, v->u.s.len);
    case CEL_V_INT:
        snprintf(tmp, sizeof tmp, "%" PRId64, v->u.i);
        break;
    case CEL_V_UINT:
        snprintf(tmp, sizeof tmp, "%" PRIu64, v->u.u);
        break;
    case CEL_V_DOUBLE:
        snprintf(tmp, sizeof tmp, "%.6f", v->u.d);
        break;
    case CEL_V_BOOL:
        return v->u.b ? "true" : "false";
    case CEL_V_VOID:
        return "null";
    case CEL_V_ARRAY:
        return "[...]";
    case CEL_V_TABLE:
        return "{...}";
    }
    return cel_arena_strdup(a, tmp);
}

static const char *header_str(const struct cel_table *h, const char *key)
{
    const struct cel_value *v = cel_table_get(h, key);
    return v && v->type == CEL_V_STR ? v->u.s.ptr : NULL;
}

static bool is_prefix(struct cel_span key, const char *prefix)
{
    size_t n = strlen(prefix);
    return key.len >= n && !memcmp(key.ptr, prefix, n);
}

static void dead_view(struct cel_arena *a, const struct cel_delivery *d, struct cel_dead_letter *v)
{
    const char *id = header_str(&d->headers, "id");
    const char *task = header_str(&d->headers, "task");
    v->id = id ? id : d->props.correlation_id ? d->props.correlation_id : "";
    v->task = task ? task : "";
    v->body_len = d->body.len;
    struct cel_dead_header *h = cel_arena_calloc(a, (d->headers.n + 1) * sizeof *h);
    v->headers = h;
    v->n_headers = 0;
    for (size_t i = 0; h && i < d->headers.n; i++) {
        const struct cel_field *f = &d->headers.items[i];
        if (!is_prefix(f->key, "x-celeriac-") || is_prefix(f->key, "x-celeriac-signature"))
            continue;
        h[v->n_headers].key = cel_arena_strndup(a, f->key.ptr, f->key.len);
        h[v->n_headers++].value = value_text(a, &f->v);
    }
}

/* Returns every message this client holds unsettled from the dead queue, in their order. */
static int requeue_all(struct cel_client *c, const struct cel_delivery *last, bool any)
{
    if (!any)
        return 0;
    int rc = CEL_BROKER_CLASS(c->broker)->nack(c->broker, last->conn_gen, last->tag, true, true);
    return rc ? cel__client_broker_err(c, rc, "return dead letters to their queue") : 0;
}

static int dead_count(struct cel_client *c, const char *dq, size_t limit, size_t *n)
{
    struct cel_client_queue_info qi;
    int rc = cel_client_queue_info(c, dq, &qi);
    *n = rc ? 0 : (limit && limit < qi.messages ? limit : qi.messages);
    return rc;
}

int cel_client_dead_list(struct cel_client *c, const char *queue, size_t limit,
                         void (*fn)(void *ctx, const struct cel_dead_letter *d), void *ctx)
{
    cel_arena_reset(&c->tmp_arena);
    const char *dq = dead_name(c, queue);
    size_t n = 0;
    int rc = dq ? dead_count(c, dq, limit, &n) : CEL_ENOMEM;
    struct cel_delivery d, last = {0};
    struct cel_arena a;
    bool any = false;
    cel_arena_init(&a, 65536);
    for (size_t i = 0; !rc && i < n; i++) {
        cel_arena_reset(&a);
        rc = CEL_BROKER_CLASS(c->broker)->get(c->broker, dq, &d, &a);
        if (rc == CEL_ENOTFOUND) {
            rc = 0;
            break;
        }
        if (rc) {
            rc = cel__client_broker_err(c, rc, "get dead letter");
            break;
        }
        struct cel_dead_letter v;
        dead_view(&a, &d, &v);
        fn(ctx, &v);
        last = d;
        any = true;
    }
    int rc2 = rc == CEL_ECONN ? 0 : requeue_all(c, &last, any);
    cel_arena_free(&a);
    return rc ? rc : rc2;
}

static bool strip_header(struct cel_span key)
{
    return is_prefix(key, "x-celeriac-error-") || is_prefix(key, "x-celeriac-attempt") ||
           is_prefix(key, "x-death") || is_prefix(key, "x-first-death-") ||
           is_prefix(key, "x-last-death-");
}

/* The message as it should go back to queue: same properties and body, headers stripped. */
/* A client with a signing key vouches for what it replays: the message is signed again (a
 * dead letter it cannot decode goes back as it was). */
static int replay_sign(struct cel_client *c, struct cel_arena *a, const struct cel_delivery *d,
                       struct cel_table *h)
{
    struct cel_task t;
    char err[256];
    if (!c->signing_key_len ||
        cel_task_decode(&t, a, &d->props, &d->headers, d->body.ptr, d->body.len,
                        &cel_default_limits, err, sizeof err) != 0)
        return 0;
    return cel_sign_headers(&t, d->body, c->signing_key, c->signing_key_len, a, h);
}

static int replay_msg(struct cel_client *c, struct cel_arena *a, const struct cel_delivery *d,
                      const char *queue, struct cel_publish *p)
{
    struct cel_field *f = cel_arena_calloc(a, (d->headers.n + 1) * sizeof *f);
    struct cel_table *h = cel_arena_calloc(a, sizeof *h);
    struct cel_props *props = cel_arena_alloc(a, sizeof *props);
    if (!f || !h || !props)
        return CEL_ENOMEM;
    for (size_t i = 0; i < d->headers.n; i++)
        if (!strip_header(d->headers.items[i].key))
            f[h->n++] = d->headers.items[i];
    h->items = f;
    int rc = replay_sign(c, a, d, h);
    if (rc)
        return rc;
    *props = d->props;
    *p = (struct cel_publish){
        .exchange = "", .routing_key = queue, .props = props, .headers = h, .body = d->body};
    return 0;
}

struct replay_round {
    struct cel_publish *pubs;
    struct cel_delivery *dels;
    size_t n;
};

/* Clears the crash counters first (a worker may run a replayed job at once), then publishes the
 * round's matches with one confirm, then acks their dead copies. */
static int replay_commit(struct cel_client *c, struct replay_round *r, size_t *replayed)
{
    const struct cel_broker_class *cls = CEL_BROKER_CLASS(c->broker);
    for (size_t i = 0; c->store && i < r->n; i++) {
        const char *id = header_str(&r->dels[i].headers, "id");
        if (id)
            cel_store_attempt_clear(c->store, id);
    }
    size_t conf = 0;
    int rc = r->n ? cls->publish(c->broker, r->pubs, r->n, &conf) : 0;
    if (rc)
        return cel__client_broker_err(c, rc, "republish dead letters");
    for (size_t i = 0; i < r->n; i++)
        if ((rc = cls->ack(c->broker, r->dels[i].conn_gen, r->dels[i].tag, false)) != 0)
            return cel__client_broker_err(c, rc, "ack replayed dead letter");
    *replayed += r->n;
    r->n = 0;
    return 0;
}

static int replay_scan(struct cel_client *c, const char *queue, const char *dq, const char *id,
                       size_t total, size_t *replayed, struct cel_delivery *last, bool *held)
{
    struct replay_round r = {cel_arena_alloc(&c->tmp_arena, CEL__DEAD_ROUND * sizeof *r.pubs),
                             cel_arena_alloc(&c->tmp_arena, CEL__DEAD_ROUND * sizeof *r.dels), 0};
    struct cel_arena a;
    int rc = r.pubs && r.dels ? 0 : CEL_ENOMEM;
    cel_arena_init(&a, 1 << 20);
    for (size_t i = 0; !rc && i < total; i++) {
        struct cel_delivery *d = &r.dels[r.n];
        rc = CEL_BROKER_CLASS(c->broker)->get(c->broker, dq, d, &a);
        if (rc) {
            rc = rc == CEL_ENOTFOUND ? 0 : cel__client_broker_err(c, rc, "get dead letter");
            break;
        }
        const char *did = header_str(&d->headers, "id");
        if (id && !(did && !strcmp(did, id)) &&
            !(d->props.correlation_id && !strcmp(d->props.correlation_id, id))) {
            *last = *d; /* held: returned to the dead queue at the end */
            *held = true;
            continue;
        }
        rc = replay_msg(c, &a, d, queue, &r.pubs[r.n]);
        if (!rc && ++r.n == CEL__DEAD_ROUND) {
            rc = replay_commit(c, &r, replayed);
            cel_arena_reset(&a);
        }
    }
    if (!rc)
        rc = replay_commit(c, &r, replayed);
    cel_arena_free(&a);
    return rc;
}

int cel_client_dead_replay(struct cel_client *c, const char *queue, const char *id,
                           size_t *replayed)
{
    cel_arena_reset(&c->tmp_arena);
    *replayed = 0;
    const char *dq = dead_name(c, queue);
    size_t total = 0;
    int rc = dq ? dead_count(c, dq, 0, &total) : CEL_ENOMEM;
    if (!rc && (rc = CEL_BROKER_CLASS(c->broker)->declare(c->broker, queue)) != 0)
        rc = cel__client_broker_err(c, rc, "declare queue");
    if (!rc && cel__client_store(c))
        c->errstr[0] = 0; /* attempt counters are then left to expire */
    struct cel_delivery last = {0};
    bool held = false;
    if (!rc)
        rc = replay_scan(c, queue, dq, id, total, replayed, &last, &held);
    int rc2 = rc == CEL_ECONN ? 0 : requeue_all(c, &last, held);
    if (!rc && !rc2 && id && !*replayed)
        return cel__client_err(c, CEL_ENOTFOUND, "no dead letter with id %s in %s", id, dq);
    return rc ? rc : rc2;
}

int cel_client_dead_purge(struct cel_client *c, const char *queue, uint32_t *purged)
{
    cel_arena_reset(&c->tmp_arena);
    const char *dq = dead_name(c, queue);
    int rc = dq ? cel__client_broker(c) : CEL_ENOMEM;
    if (rc)
        return rc;
    *purged = 0;
    rc = CEL_BROKER_CLASS(c->broker)->purge(c->broker, dq, purged);
    if (rc == CEL_ENOTFOUND)
        return cel__client_err(c, rc, "queue %s does not exist", dq);
    return rc ? cel__client_broker_err(c, rc, "purge") : 0;
}
