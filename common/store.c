/* store.c: the store's connection handling and command runner: connect (AUTH, SELECT),
 * reconnect, one-round-trip pipelines, EVALSHA with reload after NOSCRIPT, and the generic
 * command. The operations themselves are in store_results.c and store_ops.c. */
#include "common/store_internal.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sha1.h"

#define DEFAULT_CONNECT_MS 5000
#define DEFAULT_COMMAND_MS 10000
#define MAX_EVAL_ARGS 16

int cel__store_fail(struct cel_store *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errstr, sizeof s->errstr, fmt, ap);
    va_end(ap);
    return status;
}

static struct timeval ms_tv(int ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

/* Why a context failed, with timeouts named as such (hiredis reports them as EAGAIN). */
const char *cel__ctx_reason(const redisContext *c, char *buf, size_t len, int timeout_ms)
{
    if (c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        snprintf(buf, len, "timed out after %d ms", timeout_ms);
        return buf;
    }
    return c->errstr[0] ? c->errstr : "connection lost";
}

static void sha1_hex(const char *text, char out[41])
{
    cel__sha1_hex(text, strlen(text), out);
}

/* CEL_EAUTH with a hint when the server wants a password it was not given, else 0. */
static int noauth(struct cel_store *s, const redisReply *r)
{
    if (strncmp(r->str, "NOAUTH", 6) != 0)
        return 0;
    return cel__store_fail(s, CEL_EAUTH,
                           "redis %s: the server requires a password: give it in the URL "
                           "(redis://:password@host) or in CELERIAC_REDIS_PASSWORD",
                           s->where);
}

/* AUTH and SELECT, pipelined, on a fresh context. */
static int handshake(struct cel_store *s, redisContext *c)
{
    char db[16];
    snprintf(db, sizeof db, "%d", s->url.db);
    const char *auth[] = {"AUTH", s->url.user, s->url.password};
    const char *sel[] = {"SELECT", db};
    int nauth = s->url.password[0] ? (s->url.user[0] ? 3 : 2) : 0;
    if (nauth)
        auth[1] = s->url.user[0] ? s->url.user : s->url.password;
    int n = 0;
    if (nauth && redisAppendCommandArgv(c, nauth, auth, NULL) == REDIS_OK)
        n++;
    if (s->url.db && redisAppendCommandArgv(c, 2, sel, NULL) == REDIS_OK)
        n++;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            char why[64];
            return cel__store_fail(s, CEL_ECONN, "redis %s: %s", s->where,
                                   cel__ctx_reason(c, why, sizeof why, s->command_timeout_ms));
        }
        bool is_auth = i == 0 && nauth;
        if (r->type == REDIS_REPLY_ERROR && rc == 0 && (rc = noauth(s, r)) == 0)
            rc = cel__store_fail(s, is_auth ? CEL_EAUTH : CEL_EREDIS, "redis %s: %s: %s", s->where,
                                 is_auth ? "AUTH" : "SELECT", r->str);
        freeReplyObject(r);
    }
    return rc;
}

int cel__store_connect(struct cel_store *s, redisContext **out)
{
    struct timeval tv = ms_tv(s->connect_timeout_ms);
    redisContext *c = s->url.is_unix ? redisConnectUnixWithTimeout(s->url.path, tv)
                                     : redisConnectWithTimeout(s->url.host, s->url.port, tv);
    *out = NULL;
    if (!c)
        return cel__store_fail(s, CEL_ENOMEM, "redis %s: out of memory", s->where);
    if (c->err) {
        cel__store_fail(s, CEL_ECONN, "redis %s: connect: %s", s->where, c->errstr);
        redisFree(c);
        return CEL_ECONN;
    }
    redisSetTimeout(c, ms_tv(s->command_timeout_ms));
    if (!s->url.is_unix)
        redisEnableKeepAlive(c);
    int rc = handshake(s, c);
    if (rc < 0) {
        redisFree(c);
        return rc;
    }
    *out = c;
    if (out == &s->c)
        s->connects++;
    return 0;
}

void cel__drop(redisContext **c)
{
    if (*c)
        redisFree(*c);
    *c = NULL;
}

int cel_store_reconnect(struct cel_store *s)
{
    cel__drop(&s->c);
    cel__drop(&s->sub);
    return cel__store_connect(s, &s->c);
}

unsigned long cel_store_connects(const struct cel_store *s)
{
    return s ? s->connects : 0;
}

/* An idle connection with something to read (EOF, RST, a server-side close) is dead: nothing is
 * outstanding because every pipeline reads all its replies. Checked before each send, so even
 * non-idempotent commands survive a server restart between calls. */
bool cel__idle_dead(redisContext *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    return poll(&pfd, 1, 0) != 0;
}

static int ensure_conn(struct cel_store *s)
{
    if (s->c && !s->c->err && !cel__idle_dead(s->c))
        return 0;
    cel__drop(&s->c);
    return cel__store_connect(s, &s->c);
}

int cel__append_eval(struct cel_store *s, int script, int nkeys, int argc, const char **argv,
                     const size_t *lens)
{
    const char *av[MAX_EVAL_ARGS + 3];
    size_t al[MAX_EVAL_ARGS + 3];
    char nk[12];
    assert(argc <= MAX_EVAL_ARGS);
    snprintf(nk, sizeof nk, "%d", nkeys);
    av[0] = "EVALSHA", al[0] = 7;
    av[1] = s->sha[script], al[1] = 40;
    av[2] = nk, al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    return redisAppendCommandArgv(s->c, argc + 3, av, al) == REDIS_OK ? 0 : CEL_ENOMEM;
}

enum { LOST = 1 };

static int reply_error(struct cel_store *s, const struct cel__pipe *p, const redisReply *r,
                       bool *noscript)
{
    if (strncmp(r->str, "NOSCRIPT", 8) == 0) {
        *noscript = true;
        return 0;
    }
    if (noauth(s, r))
        return CEL_EAUTH;
    if (p->script == CEL__SCRIPT_NONE)
        return cel__store_fail(s, CEL_EREDIS, "redis %s: %s", s->where, r->str);
    return cel__store_fail(s, CEL_ESCRIPT, "redis %s: script %s: %s", s->where,
                           cel__scripts[p->script].name, r->str);
}

/* Appends all commands, then reads all replies. LOST when the connection broke (s->c dropped). */
static int send_and_read(struct cel_store *s, const struct cel__pipe *p, bool *noscript)
{
    int rc = 0;
    *noscript = false;
    for (size_t i = 0; i < p->n; i++)
        if (p->append(s, p->ctx, i) < 0) {
            cel__drop(&s->c);
            return cel__store_fail(s, CEL_ENOMEM, "redis %s: out of memory", s->where);
        }
    for (size_t i = 0; i < p->n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(s->c, (void **)&r) != REDIS_OK) {
            char why[64];
            cel__store_fail(s, CEL_ECONN, "redis %s: %s", s->where,
                            cel__ctx_reason(s->c, why, sizeof why, s->command_timeout_ms));
            cel__drop(&s->c);
            return LOST;
        }
        int e = r->type == REDIS_REPLY_ERROR ? reply_error(s, p, r, noscript)
                                             : (p->reply ? p->reply(s, p->ctx, i, &r) : 0);
        if (e < 0 && rc == 0)
            rc = e;
        if (r)
            freeReplyObject(r);
    }
    return rc;
}

static int load_script(struct cel_store *s, int script)
{
    const char *argv[] = {"SCRIPT", "LOAD", cel__scripts[script].body};
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, 3, argv, NULL, &r);
    if (rc < 0)
        return rc;
    if (r->type == REDIS_REPLY_STRING && r->len == 40)
        memcpy(s->sha[script], r->str, 41);
    freeReplyObject(r);
    return 0;
}

/* hiredis writes with write(), so a peer that closed raises SIGPIPE, which kills a process that
 * did not ignore it. As libpq does: block it in this thread around the I/O, and swallow one that
 * we caused (it was not pending before). */
void cel__sigpipe_block(struct cel__sigpipe *g)
{
    sigset_t pipe, pending;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
    /* only a signal the caller already blocked can be pending */
    g->was_pending = sigismember(&g->old, SIGPIPE) && sigpending(&pending) == 0 &&
                     sigismember(&pending, SIGPIPE);
}

void cel__sigpipe_restore(struct cel__sigpipe *g)
{
    sigset_t pipe, pending;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigpending(&pending);
    if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static int run_pipe(struct cel_store *s, const struct cel__pipe *p)
{
    bool resent = false, reloaded = false;
    for (;;) {
        int rc = ensure_conn(s);
        if (rc < 0)
            return rc;
        bool noscript = false;
        rc = send_and_read(s, p, &noscript);
        if (rc == LOST) {
            if (!(p->flags & CEL__RETRY_SAFE) || resent)
                return CEL_ECONN;
            resent = true;
            continue;
        }
        if (!noscript)
            return rc;
        if (reloaded)
            return cel__store_fail(s, CEL_ESCRIPT, "redis %s: NOSCRIPT again after SCRIPT LOAD",
                                   s->where);
        reloaded = true;
        if ((rc = load_script(s, p->script)) < 0)
            return rc;
    }
}

int cel__store_run(struct cel_store *s, const struct cel__pipe *p)
{
    struct cel__sigpipe g;
    cel__sigpipe_block(&g);
    int rc = run_pipe(s, p);
    cel__sigpipe_restore(&g);
    return rc;
}

struct call_ctx {
    int script;
    int argc;
    const char **argv;
    const size_t *lens;
    redisReply *reply;
};

static int call_append(struct cel_store *s, void *ctx, size_t i)
{
    struct call_ctx *c = ctx;
    if (c->script != CEL__SCRIPT_NONE)
        return cel__append_eval(s, c->script, 1, c->argc, c->argv, c->lens);
    return redisAppendCommandArgv(s->c, c->argc, c->argv, c->lens) == REDIS_OK ? 0 : CEL_ENOMEM;
}

static int call_reply(struct cel_store *s, void *ctx, size_t i, redisReply **r)
{
    struct call_ctx *c = ctx;
    if (c->reply)
        freeReplyObject(c->reply);
    c->reply = *r;
    *r = NULL;
    return 0;
}

int cel__store_call(struct cel_store *s, unsigned flags, int script, int argc, const char **argv,
                    const size_t *lens, redisReply **reply)
{
    struct call_ctx c = {script, argc, argv, lens, NULL};
    struct cel__pipe p = {1, script, flags, call_append, call_reply, &c};
    int rc = cel__store_run(s, &p);
    if (rc < 0 && c.reply) {
        freeReplyObject(c.reply);
        c.reply = NULL;
    }
    *reply = c.reply;
    return rc;
}

const char *cel__store_key(struct cel_store *s, const char *prefix, const char *name)
{
    cel_buf_clear(&s->key);
    if (cel_buf_puts(&s->key, prefix) < 0 || cel_buf_puts(&s->key, name) < 0)
        return NULL;
    return s->key.data;
}

static int ping(struct cel_store *s)
{
    const char *argv[] = {"PING"};
    redisReply *r = NULL;
    int rc = cel__store_call(s, CEL__RETRY_SAFE, CEL__SCRIPT_NONE, 1, argv, NULL, &r);
    if (r)
        freeReplyObject(r);
    return rc;
}

static int store_init(struct cel_store *s, const struct cel_store_opts *o, char *err, size_t errlen)
{
    int rc = cel_redis_url_parse(o->url, &s->url, err, errlen);
    if (rc < 0)
        return rc;
    const char *pw = getenv("CELERIAC_REDIS_PASSWORD");
    if (!s->url.password[0] && pw && *pw)
        snprintf(s->url.password, sizeof s->url.password, "%s", pw);
    cel_redis_url_describe(&s->url, s->where, sizeof s->where);
    s->result_expires = o->result_expires > 0 ? o->result_expires : CEL__DEFAULT_EXPIRES;
    s->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : DEFAULT_CONNECT_MS;
    s->command_timeout_ms = o->command_timeout_ms > 0 ? o->command_timeout_ms : DEFAULT_COMMAND_MS;
    for (int i = 0; i < CEL__SCRIPT_COUNT; i++)
        sha1_hex(cel__scripts[i].body, s->sha[i]);
    return 0;
}

int cel_store_open(struct cel_store **out, const struct cel_store_opts *o, char *err, size_t errlen)
{
    *out = NULL;
    struct cel_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "redis: out of memory");
        return CEL_ENOMEM;
    }
    int rc = store_init(s, o, err, errlen);
    if (rc == 0 && (rc = ping(s)) < 0)
        snprintf(err, errlen, "%s", s->errstr);
    if (rc < 0) {
        cel_store_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void cel_store_free(struct cel_store *s)
{
    if (!s)
        return;
    cel__drop(&s->c);
    cel__drop(&s->sub);
    cel_buf_free(&s->key);
    explicit_bzero(s->url.password, sizeof s->url.password);
    free(s);
}

const char *cel_store_errstr(const struct cel_store *s)
{
    return s->errstr;
}

/* redis-cli's layout without quotes: bulk strings raw (binary safe), "(integer) n", "(nil)",
 * arrays as numbered lines, nested arrays indented. */
static int summarize(const redisReply *r, int depth, struct cel_buf *out)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        return cel_buf_append(out, r->str, r->len);
    case REDIS_REPLY_INTEGER:
        return cel_buf_printf(out, "(integer) %lld", r->integer);
    case REDIS_REPLY_NIL:
        return cel_buf_puts(out, "(nil)");
    case REDIS_REPLY_ARRAY:
        break;
    default:
        return cel_buf_printf(out, "(error) %.*s", (int)r->len, r->str);
    }
    if (r->elements == 0)
        return cel_buf_puts(out, "(empty array)");
    int rc = 0;
    for (size_t i = 0; i < r->elements && rc == 0; i++) {
        if (i > 0 && (rc = cel_buf_printf(out, "\n%*s", depth * 3, "")) < 0)
            break;
        rc = cel_buf_printf(out, "%zu) ", i + 1);
        if (rc == 0)
            rc = summarize(r->element[i], depth + 1, out);
    }
    return rc;
}

int cel_store_command(struct cel_store *s, int argc, const char **argv, const size_t *argvlen,
                      struct cel_buf *out)
{
    redisReply *r = NULL;
    int rc = cel__store_call(s, 0, CEL__SCRIPT_NONE, argc, argv, argvlen, &r);
    if (rc < 0) {
        cel_buf_printf(out, "(error) %s", s->errstr);
        return rc;
    }
    rc = summarize(r, 0, out);
    freeReplyObject(r);
    return rc;
}
