/* store_results.c: Celery results in Redis (celery-task-meta-<id>): pipelined conditional writes,
 * reads, and the race-free wait (SUBSCRIBE, then GET, then pubsub messages) on a second
 * connection kept for the purpose. */
#include "common/store_internal.h"

#include "common/result.h"

#include <errno.h>
#include <jansson.h>
#include <msgpack.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define META_PREFIX "celery-task-meta-"

/* ---- status of a stored meta (either serializer) ---- */

static int status_msgpack(const char *p, size_t n, char *out, size_t outlen)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = CEL_EDECODE;
    if (msgpack_unpack_next(&u, p, n, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        rc = 0;
        const msgpack_object_map *m = &u.data.via.map;
        for (uint32_t i = 0; i < m->size; i++) {
            const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
            if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 6 &&
                memcmp(k->via.str.ptr, "status", 6) == 0 && v->type == MSGPACK_OBJECT_STR) {
                snprintf(out, outlen, "%.*s", (int)v->via.str.size, v->via.str.ptr);
                break;
            }
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int status_json(const char *p, size_t n, char *out, size_t outlen)
{
    json_t *root = json_loadb(p, n, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return CEL_EJSON;
    }
    const char *st = json_string_value(json_object_get(root, "status"));
    snprintf(out, outlen, "%s", st ? st : "");
    json_decref(root);
    return 0;
}

int cel__meta_status(const char *p, size_t n, char *out, size_t outlen)
{
    out[0] = 0;
    if (n == 0)
        return CEL_EDECODE;
    /* '{' opens a JSON object; in msgpack 0x7b is the integer 123, never a meta */
    return p[0] == '{' ? status_json(p, n, out, outlen) : status_msgpack(p, n, out, outlen);
}

static bool meta_ready(const char *p, size_t n)
{
    char st[32];
    return cel__meta_status(p, n, st, sizeof st) == 0 && cel_state_ready(st);
}

/* ---- writes ---- */

struct put_ctx {
    const struct cel_store_put *items;
};

static int put_append(struct cel_store *s, void *ctx, size_t i)
{
    const struct cel_store_put *it = &((struct put_ctx *)ctx)->items[i];
    const char *key = cel__store_key(s, META_PREFIX, it->task_id);
    if (!key)
        return CEL_ENOMEM;
    char exp[16];
    int elen = snprintf(exp, sizeof exp, "%d", it->expires > 0 ? it->expires : s->result_expires);
    const char *argv[] = {key, it->meta.ptr, exp};
    size_t lens[] = {s->key.len, it->meta.len, (size_t)elen};
    return cel__append_eval(s, CEL__SCRIPT_PUT, 1, 3, argv, lens);
}

static int put_reply(struct cel_store *s, void *ctx, size_t i, redisReply **r)
{
    if ((*r)->type != REDIS_REPLY_INTEGER)
        return cel__store_fail(s, CEL_EREDIS, "redis %s: unexpected reply to put_result", s->where);
    return 0;
}

int cel_store_put_results(struct cel_store *s, const struct cel_store_put *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!items[i].task_id || !items[i].meta.len)
            return cel__store_fail(s, CEL_EINVAL, "put_results: item %zu has no id or meta", i);
    if (n == 0)
        return 0;
    struct put_ctx c = {items};
    struct cel__pipe p = {n, CEL__SCRIPT_PUT, CEL__RETRY_SAFE, put_append, put_reply, &c};
    return cel__store_run(s, &p);
}

/* ---- reads ---- */

int cel_store_get_result(struct cel_store *s, const char *task_id, struct cel_buf *out)
{
    const char *argv[] = {"GET", cel__store_key(s, META_PREFIX, task_id)};
    if (!argv[1])
        return CEL_ENOMEM;
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, 2, argv, NULL, &r);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_NIL)
        rc = CEL_ENOTFOUND;
    else if (r->type == REDIS_REPLY_STRING)
        rc = cel_buf_append(out, r->str, r->len);
    else
        rc = cel__store_fail(s, CEL_EREDIS, "redis %s: GET %s: not a string", s->where, argv[1]);
    freeReplyObject(r);
    return rc;
}

/* ---- waiting ---- */

enum { SUB_LOST = 1 };

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sub_lost(struct cel_store *s)
{
    char why[64];
    cel__store_fail(s, CEL_ECONN, "redis %s: subscriber: %s", s->where,
                    cel__ctx_reason(s->sub, why, sizeof why, s->command_timeout_ms));
    cel__drop(&s->sub);
    return SUB_LOST;
}

static bool is_push(const redisReply *r, const char *kind)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
           r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, kind) == 0;
}

/* Opens the subscriber if needed and subscribes to channel; SUB_LOST or an error. The previous
 * wait's UNSUBSCRIBE was sent without waiting: its reply (and any message that raced it) is read
 * here, in the same round trip as the SUBSCRIBE. */
static int subscribe(struct cel_store *s, const char *channel)
{
    if (s->sub && (s->sub->err || (!s->sub_unsubscribing && cel__idle_dead(s->sub))))
        cel__drop(&s->sub);
    if (!s->sub) {
        s->sub_unsubscribing = false;
        int rc = cel__store_connect(s, &s->sub);
        if (rc < 0)
            return rc;
    }
    const char *argv[] = {"SUBSCRIBE", channel};
    redisReply *r = NULL;
    if (redisAppendCommandArgv(s->sub, 2, argv, NULL) != REDIS_OK)
        return sub_lost(s);
    bool ok = false;
    for (;;) {
        if (redisGetReply(s->sub, (void **)&r) != REDIS_OK)
            return sub_lost(s);
        bool old = s->sub_unsubscribing && (is_push(r, "message") || is_push(r, "unsubscribe"));
        if (is_push(r, "unsubscribe"))
            s->sub_unsubscribing = false;
        ok = !old && is_push(r, "subscribe");
        freeReplyObject(r);
        if (!old)
            break;
    }
    if (!ok) {
        cel__drop(&s->sub);
        return cel__store_fail(s, CEL_EREDIS, "redis %s: SUBSCRIBE refused", s->where);
    }
    return 0;
}

/* Sends UNSUBSCRIBE without waiting for its reply (subscribe() reads it); messages still in
 * flight are dropped then. Drops the connection rather than leave it subscribed. */
static void unsubscribe(struct cel_store *s, const char *channel)
{
    const char *argv[] = {"UNSUBSCRIBE", channel};
    if (!s->sub)
        return;
    int done = 0;
    if (redisAppendCommandArgv(s->sub, 2, argv, NULL) != REDIS_OK) {
        cel__drop(&s->sub);
        return;
    }
    while (!done)
        if (redisBufferWrite(s->sub, &done) != REDIS_OK) {
            cel__drop(&s->sub);
            return;
        }
    s->sub_unsubscribing = true;
}

/* A published message that is a ready meta: copied to out, returns true. */
static bool take_message(const redisReply *r, struct cel_buf *out, int *rc)
{
    if (!is_push(r, "message") || r->element[2]->type != REDIS_REPLY_STRING)
        return false;
    const redisReply *m = r->element[2];
    if (!meta_ready(m->str, m->len))
        return false;
    *rc = cel_buf_append(out, m->str, m->len);
    return true;
}

/* Waits for a ready meta on the subscriber until deadline_ms (-1: forever). */
static int wait_message(struct cel_store *s, int64_t deadline_ms, struct cel_buf *out)
{
    for (;;) {
        redisReply *r = NULL;
        if (redisGetReplyFromReader(s->sub, (void **)&r) != REDIS_OK)
            return sub_lost(s);
        if (r) {
            int rc = 0;
            bool got = take_message(r, out, &rc);
            freeReplyObject(r);
            if (got)
                return rc;
            continue;
        }
        int64_t left = deadline_ms < 0 ? -1 : deadline_ms - mono_ms();
        if (deadline_ms >= 0 && left <= 0)
            return CEL_ETIMEDOUT;
        struct pollfd pfd = {.fd = s->sub->fd, .events = POLLIN};
        int n = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n < 0 && errno != EINTR)
            return cel__store_fail(s, CEL_ESYS, "poll: %s", strerror(errno));
        if (n > 0 && redisBufferRead(s->sub) != REDIS_OK)
            return sub_lost(s);
    }
}

/* GET: 0 with out filled when ready, CEL_ENOTFOUND while absent or not ready. */
static int get_ready(struct cel_store *s, const char *task_id, struct cel_buf *out)
{
    size_t mark = out->len;
    int rc = cel_store_get_result(s, task_id, out);
    if (rc < 0 || meta_ready(out->data + mark, out->len - mark))
        return rc;
    out->len = mark;
    if (out->cap)
        out->data[mark] = 0;
    return CEL_ENOTFOUND;
}

/* One subscribe-GET-wait round; SUB_LOST when the subscriber broke. */
static int wait_round(struct cel_store *s, const char *task_id, const char *channel,
                      int64_t deadline_ms, struct cel_buf *out)
{
    int rc = subscribe(s, channel);
    if (rc != 0)
        return rc;
    rc = get_ready(s, task_id, out);
    if (rc == CEL_ENOTFOUND)
        rc = wait_message(s, deadline_ms, out);
    if (rc != SUB_LOST)
        unsubscribe(s, channel);
    return rc;
}

int cel_store_wait_result(struct cel_store *s, const char *task_id, int timeout_ms,
                          struct cel_buf *out)
{
    char *channel = NULL;
    if (asprintf(&channel, META_PREFIX "%s", task_id) < 0)
        return CEL_ENOMEM;
    int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    struct cel__sigpipe g;
    cel__sigpipe_block(&g);
    int rc = wait_round(s, task_id, channel, deadline, out);
    if (rc == SUB_LOST) /* missed messages are covered by the GET of the new round */
        rc = wait_round(s, task_id, channel, deadline, out);
    cel__sigpipe_restore(&g);
    free(channel);
    return rc == SUB_LOST ? CEL_ECONN : rc;
}
