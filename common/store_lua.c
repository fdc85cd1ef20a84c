/* store_lua.c: the store's Lua scripts. Each one does its whole read-check-write atomically and
 * sets the TTL of every key it writes. Run with EVALSHA (store.c computes the SHA1 locally and
 * loads a script only after NOSCRIPT). Lua 5.1: decimal escapes only (\166 is 0xa6). */
#include "common/store_internal.h"

/* KEYS[1] celery-task-meta-<id>; ARGV[1] meta, ARGV[2] expires (s). Returns 1 when written,
 * 0 when the stored status is SUCCESS (sticky, as in Celery's _store_result). The fast path reads
 * the first key of the map: msgpack (fixmap/map16/map32, then "status" as fixstr or str8) or
 * JSON text; other layouts are decoded only when the bytes contain "SUCCESS" at all. */
static const char put_lua[] =
    "local function decoded_success(dec, v)\n"
    "  local ok, t = pcall(dec, v)\n"
    "  return ok and type(t) == 'table' and t.status == 'SUCCESS'\n"
    "end\n"
    "local function is_success(v)\n"
    "  if not string.find(v, 'SUCCESS', 1, true) then return false end\n"
    "  local b = string.byte(v, 1)\n"
    "  if b == 123 then\n"
    "    if string.find(v, '^{%s*\"status\"%s*:%s*\"SUCCESS\"') then return true end\n"
    "    return decoded_success(cjson.decode, v)\n"
    "  end\n"
    "  local off\n"
    "  if b >= 128 and b <= 143 then off = 2\n"
    "  elseif b == 222 then off = 4\n"
    "  elseif b == 223 then off = 6\n"
    "  else return false end\n"
    "  if string.sub(v, off, off + 6) == '\\166status' then off = off + 7\n"
    "  elseif string.sub(v, off, off + 7) == '\\217\\6status' then off = off + 8\n"
    "  else return decoded_success(cmsgpack.unpack, v) end\n"
    "  return string.sub(v, off, off + 7) == '\\167SUCCESS' or\n"
    "         string.sub(v, off, off + 8) == '\\217\\7SUCCESS'\n"
    "end\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur and is_success(cur) then return 0 end\n"
    "redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])\n"
    "redis.call('PUBLISH', KEYS[1], ARGV[1])\n"
    "return 1\n";

/* KEYS[1] celeriac-idem-<key>; ARGV token, lease_ms. Returns {0} claimed, {1} running
 * elsewhere, {2, meta} done. The key's PEXPIRE is the lease: a dead claimer's key vanishes. */
static const char idem_claim_lua[] =
    "local h = redis.call('HMGET', KEYS[1], 'state', 'token', 'meta')\n"
    "if h[1] == 'done' then return {2, h[3]} end\n"
    "if h[1] and h[2] ~= ARGV[1] then return {1} end\n"
    "redis.call('HSET', KEYS[1], 'state', 'running', 'token', ARGV[1])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return {0}\n";

/* ARGV token, meta, ttl_s. 1 = done (also when the lease had lapsed and nobody took it over, and
 * again for the same token), 0 = another token holds the key. */
static const char idem_complete_lua[] =
    "local h = redis.call('HMGET', KEYS[1], 'state', 'token')\n"
    "if h[1] and h[2] ~= ARGV[1] then return 0 end\n"
    "if h[1] == 'done' then return 1 end\n"
    "redis.call('HSET', KEYS[1], 'state', 'done', 'token', ARGV[1], 'meta', ARGV[2])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "return 1\n";

/* ARGV token. 1 = released or absent, 0 = held by another token or already done. */
static const char idem_release_lua[] = "local h = redis.call('HMGET', KEYS[1], 'state', 'token')\n"
                                       "if not h[1] then return 1 end\n"
                                       "if h[1] ~= 'running' or h[2] ~= ARGV[1] then return 0 end\n"
                                       "redis.call('DEL', KEYS[1])\n"
                                       "return 1\n";

/* ARGV token, lease_ms. 1 = extended, 0 = lease lost. */
static const char idem_renew_lua[] = "local h = redis.call('HMGET', KEYS[1], 'state', 'token')\n"
                                     "if h[1] ~= 'running' or h[2] ~= ARGV[1] then return 0 end\n"
                                     "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                     "return 1\n";

/* KEYS[1] celeriac-attempts-<id>; ARGV ttl_s. Returns the new count. */
static const char attempt_lua[] = "local n = redis.call('INCR', KEYS[1])\n"
                                  "redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
                                  "return n\n";

/* KEYS[1] celeriac-revoked; ARGV member, ttl_s. Scores are the server's clock in ms, so
 * producers with skewed clocks cannot hide a revocation from incremental polling. */
static const char revoke_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now - "
    "tonumber(ARGV[2]) * 1000))\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "return now\n";

const struct cel__script cel__scripts[CEL__SCRIPT_COUNT] = {
    [CEL__SCRIPT_PUT] = {"put_result", put_lua},
    [CEL__SCRIPT_IDEM_CLAIM] = {"idem_claim", idem_claim_lua},
    [CEL__SCRIPT_IDEM_COMPLETE] = {"idem_complete", idem_complete_lua},
    [CEL__SCRIPT_IDEM_RELEASE] = {"idem_release", idem_release_lua},
    [CEL__SCRIPT_IDEM_RENEW] = {"idem_renew", idem_renew_lua},
    [CEL__SCRIPT_ATTEMPT] = {"attempt_incr", attempt_lua},
    [CEL__SCRIPT_REVOKE] = {"revoke", revoke_lua},
};
