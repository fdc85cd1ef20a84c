/* store_ops.c: the store's small state machines: idempotency leases, crash-attempt counters,
 * durable revocations, the worker registry and Celery's chord counter (spec section 4.2). */
#include "common/store_internal.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDEM_PREFIX "celeriac-idem-"
#define ATTEMPTS_PREFIX "celeriac-attempts-"
#define REVOKED_KEY "celeriac-revoked"
#define WORKER_PREFIX "celeriac-worker-"
#define CHORD_PREFIX "celery-taskset-meta-"
#define DEFAULT_REVOKE_TTL 10800

/* Runs a script whose first argument is its one key. */
static int eval1(struct cel_store *s, unsigned flags, int script, int argc, const char **argv,
                 const size_t *lens, redisReply **r)
{
    return cel__store_call(s, flags, script, argc, argv, lens, r);
}

static int int_reply(struct cel_store *s, int rc, redisReply *r, long long *v)
{
    if (rc < 0)
        return rc;
    rc = r->type == REDIS_REPLY_INTEGER ? 0
                                        : cel__store_fail(s, CEL_EREDIS,
                                                          "redis %s: expected an "
                                                          "integer reply",
                                                          s->where);
    if (rc == 0)
        *v = r->integer;
    freeReplyObject(r);
    return rc;
}

/* ---- idempotency ---- */

static const char *idem_key(struct cel_store *s, const char *key)
{
    return cel__store_key(s, IDEM_PREFIX, key);
}

static int claim_reply(struct cel_store *s, redisReply *r, enum cel_idem_state *state,
                       struct cel_buf *out)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[0]->integer < 0 ||
        r->element[0]->integer > CEL_IDEM_DONE)
        return cel__store_fail(s, CEL_EREDIS, "redis %s: bad idem_claim reply", s->where);
    *state = (enum cel_idem_state)r->element[0]->integer;
    if (*state != CEL_IDEM_DONE)
        return 0;
    if (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING)
        return cel__store_fail(s, CEL_EREDIS, "redis %s: idempotency record without meta",
                               s->where);
    return cel_buf_append(out, r->element[1]->str, r->element[1]->len);
}

int cel_store_idem_claim(struct cel_store *s, const char *key, const char *token, int lease_ms,
                         enum cel_idem_state *state, struct cel_buf *out)
{
    char lease[16];
    snprintf(lease, sizeof lease, "%d", lease_ms > 0 ? lease_ms : 1);
    const char *argv[] = {idem_key(s, key), token, lease};
    if (!argv[0])
        return CEL_ENOMEM;
    redisReply *r = NULL;
    int rc = eval1(s, CEL__RETRY_SAFE, CEL__SCRIPT_IDEM_CLAIM, 3, argv, NULL, &r);
    if (rc < 0)
        return rc;
    rc = claim_reply(s, r, state, out);
    freeReplyObject(r);
    return rc;
}

static int held_or_busy(struct cel_store *s, int rc, redisReply *r, const char *what,
                        const char *key)
{
    long long v = 0;
    rc = int_reply(s, rc, r, &v);
    if (rc == 0 && v == 0)
        rc = cel__store_fail(s, CEL_EBUSY, "idempotency key %s: %s: held by another token", key,
                             what);
    return rc;
}

int cel_store_idem_complete(struct cel_store *s, const char *key, const char *token,
                            struct cel_span meta, int ttl_s)
{
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_s > 0 ? ttl_s : s->result_expires);
    const char *argv[] = {idem_key(s, key), token, meta.ptr, ttl};
    if (!argv[0])
        return CEL_ENOMEM;
    size_t lens[] = {s->key.len, strlen(token), meta.len, strlen(ttl)};
    redisReply *r = NULL;
    int rc = eval1(s, CEL__RETRY_SAFE, CEL__SCRIPT_IDEM_COMPLETE, 4, argv, lens, &r);
    return held_or_busy(s, rc, r, "complete", key);
}

int cel_store_idem_release(struct cel_store *s, const char *key, const char *token)
{
    const char *argv[] = {idem_key(s, key), token};
    if (!argv[0])
        return CEL_ENOMEM;
    redisReply *r = NULL;
    int rc = eval1(s, CEL__RETRY_SAFE, CEL__SCRIPT_IDEM_RELEASE, 2, argv, NULL, &r);
    return held_or_busy(s, rc, r, "release", key);
}

int cel_store_idem_renew(struct cel_store *s, const char *key, const char *token, int lease_ms)
{
    char lease[16];
    snprintf(lease, sizeof lease, "%d", lease_ms > 0 ? lease_ms : 1);
    const char *argv[] = {idem_key(s, key), token, lease};
    if (!argv[0])
        return CEL_ENOMEM;
    redisReply *r = NULL;
    int rc = eval1(s, CEL__RETRY_SAFE, CEL__SCRIPT_IDEM_RENEW, 3, argv, NULL, &r);
    return held_or_busy(s, rc, r, "renew", key);
}

/* ---- crash attempts ---- */

/* Not CEL__RETRY_SAFE: INCR must not run twice for one crash, so after a send whose outcome is
 * unknown the caller gets CEL_ECONN (the connection is re-established on the next call). */
int cel_store_attempt_incr(struct cel_store *s, const char *task_id, int ttl_s, int64_t *count)
{
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_s > 0 ? ttl_s : s->result_expires);
    const char *argv[] = {cel__store_key(s, ATTEMPTS_PREFIX, task_id), ttl};
    if (!argv[0])
        return CEL_ENOMEM;
    redisReply *r = NULL;
    long long v = 0;
    int rc = eval1(s, 0, CEL__SCRIPT_ATTEMPT, 2, argv, NULL, &r);
    rc = int_reply(s, rc, r, &v);
    if (rc == 0)
        *count = v;
    return rc;
}

static int del_key(struct cel_store *s, const char *key)
{
    const char *argv[] = {"DEL", key};
    if (!key)
        return CEL_ENOMEM;
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, 2, argv, NULL, &r);
    if (r)
        freeReplyObject(r);
    return rc;
}

int cel_store_attempt_clear(struct cel_store *s, const char *task_id)
{
    return del_key(s, cel__store_key(s, ATTEMPTS_PREFIX, task_id));
}

/* ---- revocations ----
 * Members of celeriac-revoked are "r:<id>" (revoke) or "t:<id>" (revoke and terminate): a fixed
 * two-byte prefix parses unambiguously whatever the id contains. */

int cel_store_revoke(struct cel_store *s, const char *task_id, bool terminate, int ttl_s)
{
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_s > 0 ? ttl_s : DEFAULT_REVOKE_TTL);
    char *member = NULL;
    if (asprintf(&member, "%c:%s", terminate ? 't' : 'r', task_id) < 0)
        return CEL_ENOMEM;
    const char *argv[] = {REVOKED_KEY, member, ttl};
    redisReply *r = NULL;
    long long v = 0;
    int rc = eval1(s, CEL__RETRY_SAFE, CEL__SCRIPT_REVOKE, 3, argv, NULL, &r);
    rc = int_reply(s, rc, r, &v);
    free(member);
    return rc;
}

static void report_revoked(const redisReply *m, void (*fn)(void *, const char *, bool), void *ctx)
{
    if (m->type != REDIS_REPLY_STRING || m->len < 2 || m->str[1] != ':' ||
        (m->str[0] != 'r' && m->str[0] != 't'))
        return; /* not ours: ignore rather than misreport */
    fn(ctx, m->str + 2, m->str[0] == 't');
}

int cel_store_revoked_since(struct cel_store *s, int64_t since_ms, int64_t *latest_ms,
                            void (*fn)(void *ctx, const char *task_id, bool terminate), void *ctx)
{
    char since[24];
    snprintf(since, sizeof since, "%lld", (long long)since_ms);
    const char *argv[] = {"ZRANGEBYSCORE", REVOKED_KEY, since, "+inf", "WITHSCORES"};
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, 5, argv, NULL, &r);
    if (rc < 0)
        return rc;
    int64_t latest = since_ms;
    if (r->type != REDIS_REPLY_ARRAY)
        rc = cel__store_fail(s, CEL_EREDIS, "redis %s: ZRANGEBYSCORE: not an array", s->where);
    for (size_t i = 0; rc == 0 && i + 1 < r->elements; i += 2) {
        int64_t score = r->element[i + 1]->str ? strtoll(r->element[i + 1]->str, NULL, 10) : 0;
        if (score > latest)
            latest = score;
        report_revoked(r->element[i], fn, ctx);
    }
    freeReplyObject(r);
    if (rc == 0 && latest_ms)
        *latest_ms = latest;
    return rc;
}

/* ---- worker registry ---- */

int cel_store_register_worker(struct cel_store *s, const char *hostname, struct cel_span json,
                              int ttl_s)
{
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_s > 0 ? ttl_s : 60);
    const char *argv[] = {"SETEX", cel__store_key(s, WORKER_PREFIX, hostname), ttl, json.ptr};
    if (!argv[1])
        return CEL_ENOMEM;
    size_t lens[] = {5, s->key.len, strlen(ttl), json.len};
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, 4, argv, lens, &r);
    if (r)
        freeReplyObject(r);
    return rc;
}

int cel_store_unregister_worker(struct cel_store *s, const char *hostname)
{
    return del_key(s, cel__store_key(s, WORKER_PREFIX, hostname));
}

struct names {
    char **v;
    size_t n, cap;
};

static int names_add(struct names *ns, const char *p, size_t len)
{
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 16;
        char **v = realloc(ns->v, cap * sizeof *v);
        if (!v)
            return CEL_ENOMEM;
        ns->v = v, ns->cap = cap;
    }
    if (!(ns->v[ns->n] = strndup(p, len)))
        return CEL_ENOMEM;
    ns->n++;
    return 0;
}

static void names_free(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* SCAN may return a key more than once; sorted and deduplicated here. */
static void names_unique(struct names *ns)
{
    if (ns->n == 0)
        return;
    qsort(ns->v, ns->n, sizeof *ns->v, cmp_str);
    size_t o = 0;
    for (size_t i = 0; i < ns->n; i++) {
        if (o > 0 && strcmp(ns->v[o - 1], ns->v[i]) == 0)
            free(ns->v[i]);
        else
            ns->v[o++] = ns->v[i];
    }
    ns->n = o;
}

static int scan_page(struct cel_store *s, char cursor[32], struct names *ns)
{
    const char *argv[] = {"SCAN", cursor, "MATCH", WORKER_PREFIX "*", "COUNT", "1000"};
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, 6, argv, NULL, &r);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY)
        rc = cel__store_fail(s, CEL_EREDIS, "redis %s: bad SCAN reply", s->where);
    else
        snprintf(cursor, 32, "%s", r->element[0]->str);
    for (size_t i = 0; rc == 0 && i < r->element[1]->elements; i++)
        rc = names_add(ns, r->element[1]->element[i]->str, r->element[1]->element[i]->len);
    freeReplyObject(r);
    return rc;
}

static int mget_report(struct cel_store *s, struct names *ns,
                       void (*fn)(void *, const char *, struct cel_span), void *ctx)
{
    if (ns->n == 0)
        return 0;
    const char **argv = malloc((ns->n + 1) * sizeof *argv);
    if (!argv)
        return CEL_ENOMEM;
    argv[0] = "MGET";
    for (size_t i = 0; i < ns->n; i++)
        argv[i + 1] = ns->v[i];
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, (int)ns->n + 1, argv, NULL, &r);
    free(argv);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < r->elements && i < ns->n; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING) /* nil: expired since the SCAN */
            fn(ctx, ns->v[i] + strlen(WORKER_PREFIX),
               (struct cel_span){r->element[i]->str, r->element[i]->len});
    freeReplyObject(r);
    return 0;
}

int cel_store_list_workers(struct cel_store *s,
                           void (*fn)(void *ctx, const char *hostname, struct cel_span json),
                           void *ctx)
{
    struct names ns = {0};
    char cursor[32] = "0";
    int rc;
    do
        rc = scan_page(s, cursor, &ns);
    while (rc == 0 && strcmp(cursor, "0") != 0);
    if (rc == 0) {
        names_unique(&ns);
        rc = mget_report(s, &ns, fn, ctx);
    }
    names_free(&ns);
    return rc;
}

/* ---- chords (spec 4.2: the exact MULTI Celery's Redis backend sends) ---- */

enum { CHORD_CMDS = 9, CHORD_EXEC = CHORD_CMDS - 1 };

struct chord_ctx {
    char key[3][512]; /* .j .t .s */
    char score[24];
    char exp[16];
    int argc[CHORD_CMDS];
    const char *argv[CHORD_CMDS][4];
    size_t lens[CHORD_CMDS][4];
    long long count, diff, size;
    bool has_size;
};

static void chord_cmd(struct chord_ctx *c, int i, int argc, const char *a0, const char *a1,
                      const char *a2, const char *a3)
{
    const char *v[4] = {a0, a1, a2, a3};
    c->argc[i] = argc;
    for (int k = 0; k < argc; k++) {
        c->argv[i][k] = v[k];
        c->lens[i][k] = strlen(v[k]);
    }
}

/* MULTI; ZADD .j score encoded; ZCOUNT .j; GET .t; GET .s; EXPIRE .j/.t/.s; EXEC */
static int chord_build(struct chord_ctx *c, const char *gid, int64_t index, struct cel_span enc,
                       int expires)
{
    static const char sfx[3] = {'j', 't', 's'};
    for (int i = 0; i < 3; i++)
        if (snprintf(c->key[i], sizeof c->key[i], CHORD_PREFIX "%s.%c", gid, sfx[i]) >=
            (int)sizeof c->key[i])
            return CEL_EINVAL;
    if (index < 0)
        snprintf(c->score, sizeof c->score, "+inf");
    else
        snprintf(c->score, sizeof c->score, "%lld", (long long)index);
    snprintf(c->exp, sizeof c->exp, "%d", expires);
    chord_cmd(c, 0, 1, "MULTI", NULL, NULL, NULL);
    chord_cmd(c, 1, 4, "ZADD", c->key[0], c->score, "");
    c->argv[1][3] = enc.ptr, c->lens[1][3] = enc.len;
    chord_cmd(c, 2, 4, "ZCOUNT", c->key[0], "-inf", "+inf");
    chord_cmd(c, 3, 2, "GET", c->key[1], NULL, NULL);
    chord_cmd(c, 4, 2, "GET", c->key[2], NULL, NULL);
    for (int k = 0; k < 3; k++)
        chord_cmd(c, 5 + k, 3, "EXPIRE", c->key[k], c->exp, NULL);
    chord_cmd(c, CHORD_EXEC, 1, "EXEC", NULL, NULL, NULL);
    return 0;
}

static int chord_append(struct cel_store *s, void *ctx, size_t i)
{
    struct chord_ctx *c = ctx;
    return redisAppendCommandArgv(s->c, c->argc[i], c->argv[i], c->lens[i]) == REDIS_OK
               ? 0
               : CEL_ENOMEM;
}

static long long reply_ll(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    return r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
}

/* MULTI and the queued commands answer +OK/+QUEUED; EXEC carries the results. */
static int chord_reply(struct cel_store *s, void *ctx, size_t i, redisReply **rp)
{
    struct chord_ctx *c = ctx;
    const redisReply *r = *rp;
    if (i != CHORD_EXEC)
        return 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 4)
        return cel__store_fail(s, CEL_EREDIS, "redis %s: chord transaction aborted", s->where);
    for (size_t k = 0; k < r->elements; k++)
        if (r->element[k]->type == REDIS_REPLY_ERROR)
            return cel__store_fail(s, CEL_EREDIS, "redis %s: chord: %s", s->where,
                                   r->element[k]->str);
    c->count = reply_ll(r->element[1]);
    c->diff = reply_ll(r->element[2]);
    c->has_size = r->element[3]->type == REDIS_REPLY_STRING;
    c->size = reply_ll(r->element[3]);
    return 0;
}

/* Each member packed as msgpack bin: the caller decodes every encoded [1, id, state, result]. */
static int chord_parts(struct cel_store *s, const struct chord_ctx *c, struct cel_buf *parts)
{
    const char *argv[] = {"ZRANGE", c->key[0], "0", "-1"};
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, 4, argv, NULL, &r);
    if (rc < 0)
        return rc;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return cel__store_fail(s, CEL_EREDIS, "redis %s: ZRANGE: not an array", s->where);
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, parts, cel_buf_msgpack_write);
    int bad = msgpack_pack_array(&pk, r->elements);
    for (size_t i = 0; !bad && i < r->elements; i++)
        bad = msgpack_pack_bin_with_body(&pk, r->element[i]->str, r->element[i]->len);
    freeReplyObject(r);
    return bad ? CEL_ENOMEM : 0;
}

int cel_store_chord_part(struct cel_store *s, const char *group_id, int64_t index,
                         struct cel_span encoded, int expires, bool *complete,
                         struct cel_buf *parts)
{
    struct chord_ctx c = {0};
    *complete = false;
    if (chord_build(&c, group_id, index, encoded, expires > 0 ? expires : s->result_expires) < 0)
        return cel__store_fail(s, CEL_EINVAL, "chord: group id too long");
    struct cel__pipe p = {CHORD_CMDS,   CEL__SCRIPT_NONE, CEL__RETRY_SAFE,
                          chord_append, chord_reply,      &c};
    int rc = cel__store_run(s, &p);
    if (rc < 0 || !c.has_size || c.count != c.size + c.diff)
        return rc;
    *complete = true;
    return chord_parts(s, &c, parts);
}

int cel_store_chord_cleanup(struct cel_store *s, const char *group_id)
{
    struct chord_ctx c = {0};
    if (chord_build(&c, group_id, 0, CEL_SPAN_LIT(""), 1) < 0)
        return cel__store_fail(s, CEL_EINVAL, "chord: group id too long");
    chord_cmd(&c, 0, 1, "MULTI", NULL, NULL, NULL);
    for (int k = 0; k < 3; k++)
        chord_cmd(&c, 1 + k, 2, "DEL", c.key[k], NULL, NULL);
    chord_cmd(&c, 4, 1, "EXEC", NULL, NULL, NULL);
    struct cel__pipe p = {5, CEL__SCRIPT_NONE, CEL__RETRY_SAFE, chord_append, NULL, &c};
    return cel__store_run(s, &p);
}
