/* store_internal.h: what the store's files share: the store object, the command runner (one
 * pipeline round trip, reconnect and NOSCRIPT policy) and the Lua scripts. Only for
 * common/store*.c. */
#ifndef CEL_COMMON_STORE_INTERNAL_H
#define CEL_COMMON_STORE_INTERNAL_H

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdbool.h>

#include "common/buf.h"
#include "common/redis_url.h"
#include "common/store.h"

enum cel__script_id {
    CEL__SCRIPT_PUT,
    CEL__SCRIPT_IDEM_CLAIM,
    CEL__SCRIPT_IDEM_COMPLETE,
    CEL__SCRIPT_IDEM_RELEASE,
    CEL__SCRIPT_IDEM_RENEW,
    CEL__SCRIPT_ATTEMPT,
    CEL__SCRIPT_REVOKE,
    CEL__SCRIPT_COUNT,
    CEL__SCRIPT_NONE = -1,
};

struct cel__script {
    const char *name;
    const char *body;
};
extern const struct cel__script cel__scripts[CEL__SCRIPT_COUNT];

#define CEL__DEFAULT_EXPIRES 86400

struct cel_store {
    struct cel_redis_url url;
    char where[300]; /* host:port or socket path, for messages */
    int result_expires;
    int connect_timeout_ms;
    int command_timeout_ms;
    redisContext *c;   /* main connection; NULL while down */
    redisContext *sub; /* subscriber for wait_result, opened on first use */
    char sha[CEL__SCRIPT_COUNT][41];
    struct cel_buf key; /* scratch for key names */
    char errstr[256];
    bool sub_unsubscribing; /* an UNSUBSCRIBE was sent on sub; its reply is read on next use */
    unsigned long connects; /* successful connections of the main link (cel_store_connects) */
};

/* The command may be sent again after a send whose outcome is unknown (it is idempotent). Without
 * it a command is only (re)sent on a connection known good before the send. */
#define CEL__RETRY_SAFE 1u

/* A pipeline: append(i) adds command i to s->c with redisAppendCommandArgv (or
 * cel__append_eval); reply(i) sees its reply and may take ownership by setting *r = NULL.
 * Error replies never reach reply(): the runner turns them into CEL_EREDIS / CEL_ESCRIPT. */
struct cel__pipe {
    size_t n;
    int script; /* the script every command runs with EVALSHA, or CEL__SCRIPT_NONE */
    unsigned flags;
    int (*append)(struct cel_store *s, void *ctx, size_t i);
    int (*reply)(struct cel_store *s, void *ctx, size_t i, redisReply **r);
    void *ctx;
};

/* Sends the whole pipeline, then reads every reply (one round trip). Reconnects first when the
 * connection is down or found dead; on a connection lost mid-flight resends once if
 * CEL__RETRY_SAFE; on NOSCRIPT loads the script and resends once. Returns 0 or the first error. */
int cel__store_run(struct cel_store *s, const struct cel__pipe *p);

/* One command; *reply (owned by the caller, freeReplyObject) is never an error reply. */
int cel__store_call(struct cel_store *s, unsigned flags, int script, int argc, const char **argv,
                    const size_t *lens, redisReply **reply);

/* Appends EVALSHA <sha> <nkeys> argv... for script id. */
int cel__append_eval(struct cel_store *s, int script, int nkeys, int argc, const char **argv,
                     const size_t *lens);

/* Writes prefix+name into s->key and returns it (valid until the next call). */
const char *cel__store_key(struct cel_store *s, const char *prefix, const char *name);

int cel__store_fail(struct cel_store *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Why a context failed ("timed out after N ms" for hiredis's EAGAIN). */
const char *cel__ctx_reason(const redisContext *c, char *buf, size_t len, int timeout_ms);
/* True when an idle connection has something to read: EOF, reset or a server-side close. */
bool cel__idle_dead(redisContext *c);
/* Frees *c and sets it to NULL (no-op on NULL). */
void cel__drop(redisContext **c);

/* SIGPIPE blocked in this thread around socket I/O (see store.c). */
struct cel__sigpipe {
    sigset_t old;
    bool was_pending;
};
void cel__sigpipe_block(struct cel__sigpipe *g);
void cel__sigpipe_restore(struct cel__sigpipe *g);

/* Opens a connection (AUTH, SELECT) with the store's URL and timeouts. */
int cel__store_connect(struct cel_store *s, redisContext **out);

/* The status of a stored meta, msgpack or JSON, into out ("" when none). Pure. */
int cel__meta_status(const char *p, size_t n, char *out, size_t outlen);

#endif
