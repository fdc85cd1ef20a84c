/* store.h: the Redis store on hiredis: Celery results, idempotency keys, crash-attempt
 * counters, durable revocations and the worker registry. Every key written carries its TTL in
 * the same command or script. Scripts are loaded once (SCRIPT LOAD) and run with EVALSHA,
 * reloaded after NOSCRIPT. Used by the worker and by libceleriac. */
#ifndef CEL_COMMON_STORE_H
#define CEL_COMMON_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"

struct cel_store;

struct cel_store_opts {
    const char *url;        /* redis://[:password@]host:port/db or unix:///path[?db=N] */
    int result_expires;     /* seconds; 0 = default 86400 */
    int connect_timeout_ms; /* 0 = default 5000 */
    int command_timeout_ms; /* 0 = default 10000 */
};

/* Failure semantics (what the store does, and what the caller must do):
 * - Before sending, a command reconnects once (AUTH, SELECT) if the connection is down or found
 *   dead (an idle socket that reads EOF). Nothing was sent, so this is safe for every command.
 * - If the connection breaks or times out after the send, the outcome is unknown. Commands that
 *   are idempotent by construction are then resent once on a new connection: results (conditional
 *   SETEX + PUBLISH; a repeat only republishes), gets, idempotency claim/complete/release/renew
 *   (token-checked), revoke (ZADD of the same member), registry, chord_part (ZADD of the same
 *   member; Celery's own protocol) and chord_cleanup. attempt_incr and cel_store_command are
 *   never resent after such a send: they return CEL_ECONN, and the next call reconnects.
 * - Otherwise the error is returned (CEL_ECONN for the connection, CEL_EAUTH for AUTH,
 *   CEL_EREDIS for an error reply, CEL_ESCRIPT for a Lua error) with the detail in
 *   cel_store_errstr(); the password never appears in it. The caller decides whether to retry:
 *   the worker keeps the message unacked and retries the put with backoff (cel_store_reconnect
 *   between attempts) until it succeeds, so a result is never lost to a Redis restart.
 * - NOSCRIPT (script cache flushed, server restarted) is handled inside: SCRIPT LOAD, resend once.
 * - The password may come from CELERIAC_REDIS_PASSWORD when the URL has none.
 * Not thread-safe: one store per thread (or a lock around it). */

/* Connects (and checks with PING). On failure *s is NULL and err says why. */
int cel_store_open(struct cel_store **s, const struct cel_store_opts *o, char *err, size_t errlen);
void cel_store_free(struct cel_store *s);
const char *cel_store_errstr(const struct cel_store *s);
/* Drops and re-establishes the connection (one attempt). Commands also reconnect once on their
 * own when they find the connection broken, before returning CEL_EREDIS/CEL_ECONN. */
int cel_store_reconnect(struct cel_store *s);
/* How many times the main connection was established (the first connect plus reconnects). */
unsigned long cel_store_connects(const struct cel_store *s);

/* ---- results (celery-task-meta-<id>) ---- */

struct cel_store_put {
    const char *task_id;
    struct cel_span meta; /* encoded result meta (common/result.h) */
    int expires;          /* seconds; 0 = the store's result_expires */
};
/* Writes n results in one pipeline, each atomically: skipped if the stored status is SUCCESS,
 * else SETEX + PUBLISH on the key's channel. Returns 0 only when all n were recorded (an item
 * skipped because SUCCESS is already stored counts as recorded). One Lua script does the check
 * and the write, so unlike Celery's GET-then-MULTI no concurrent writer can slip in between. */
int cel_store_put_results(struct cel_store *s, const struct cel_store_put *items, size_t n);
/* The stored meta bytes appended to out; CEL_ENOTFOUND when absent (PENDING). */
int cel_store_get_result(struct cel_store *s, const char *task_id, struct cel_buf *out);
/* Race-free wait: SUBSCRIBE, then GET, then wait for a published meta whose status is ready
 * (SUCCESS/FAILURE/REVOKED). 0 with the meta in out, or CEL_ETIMEDOUT. timeout_ms < 0 = forever.
 * Decodes only the status field; either serializer. */
int cel_store_wait_result(struct cel_store *s, const char *task_id, int timeout_ms,
                          struct cel_buf *out);

/* ---- idempotency (celeriac-idem-<key>): absent -> running(token, lease) -> done(meta, ttl) ----
 */

enum cel_idem_state {
    CEL_IDEM_CLAIMED = 0, /* the caller holds the lease: run the handler */
    CEL_IDEM_RUNNING = 1, /* another worker holds an unexpired lease */
    CEL_IDEM_DONE = 2,    /* finished: the stored result meta is in out */
};
/* The record is a hash {state=running|done, token, meta}; while running, the key's PEXPIRE is
 * the lease, so a dead claimer's record vanishes and the next claim takes over. Claiming again
 * with the holder's token returns CLAIMED and restarts the lease. */
int cel_store_idem_claim(struct cel_store *s, const char *key, const char *token, int lease_ms,
                         enum cel_idem_state *state, struct cel_buf *out);
/* Marks done with the result meta (TTL ttl_s, 0 = result_expires), only if token still holds
 * the lease, or the lease lapsed and nobody took it over (else CEL_EBUSY). Repeating it is 0. */
int cel_store_idem_complete(struct cel_store *s, const char *key, const char *token,
                            struct cel_span meta, int ttl_s);
/* Gives the lease up (final failure that should be retryable by a duplicate). 0 when released
 * or already absent; CEL_EBUSY when another token holds it or it is done. */
int cel_store_idem_release(struct cel_store *s, const char *key, const char *token);
/* Extends a held lease; CEL_EBUSY if lost. */
int cel_store_idem_renew(struct cel_store *s, const char *key, const char *token, int lease_ms);

/* ---- crash attempts (celeriac-attempts-<id>) ---- */

/* INCR with TTL in one step; *count receives the new value. */
int cel_store_attempt_incr(struct cel_store *s, const char *task_id, int ttl_s, int64_t *count);
int cel_store_attempt_clear(struct cel_store *s, const char *task_id);

/* ---- revocations (sorted set celeriac-revoked, score = time revoked in ms) ----
 * Members are "r:<id>" (revoke) or "t:<id>" (revoke and terminate); scores come from the Redis
 * server's clock (TIME inside the script), so producers' clock skew cannot hide an entry from
 * incremental polling. The same id may appear under both prefixes. */

/* Records a revocation for ttl_s seconds (default 10800 when 0), pruning expired entries and
 * refreshing the key's TTL in one script. terminate asks workers to kill a running child. */
int cel_store_revoke(struct cel_store *s, const char *task_id, bool terminate, int ttl_s);
/* Calls fn for every revocation recorded at or after since_ms; *latest_ms receives the newest
 * score seen (pass it back as since_ms for incremental polling). */
int cel_store_revoked_since(struct cel_store *s, int64_t since_ms, int64_t *latest_ms,
                            void (*fn)(void *ctx, const char *task_id, bool terminate), void *ctx);

/* ---- worker registry (celeriac-worker-<hostname>, a JSON document) ---- */

int cel_store_register_worker(struct cel_store *s, const char *hostname, struct cel_span json,
                              int ttl_s);
int cel_store_unregister_worker(struct cel_store *s, const char *hostname);
/* Calls fn with each live worker's JSON document. */
int cel_store_list_workers(struct cel_store *s,
                           void (*fn)(void *ctx, const char *hostname, struct cel_span json),
                           void *ctx);

/* ---- chords (celery-taskset-meta-<gid>.j/.s/.t, spec section 4.2) ---- */

/* Adds this part's encoded [1, id, state, result] at index (or +inf when index < 0) and reports
 * whether it completed the chord; when *complete, parts receives the ZRANGE as a msgpack array
 * of the encoded entries in order. Idempotent per member. */
int cel_store_chord_part(struct cel_store *s, const char *group_id, int64_t index,
                         struct cel_span encoded, int expires, bool *complete,
                         struct cel_buf *parts);
int cel_store_chord_cleanup(struct cel_store *s, const char *group_id);

/* ---- generic, for tools and tests ---- */

/* Runs one command given as argv (binary safe) and appends a reply summary to out;
 * for tests and the producer's inspect command. */
int cel_store_command(struct cel_store *s, int argc, const char **argv, const size_t *argvlen,
                      struct cel_buf *out);

#endif
