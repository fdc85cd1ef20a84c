/* control.c: Celery's remote control (spec 6.1). Broadcasts arrive on this node's pidbox queue
 * (no acks) in the sender's serializer (msgpack or JSON); destination and glob/pcre patterns are
 * honoured like kombu's Node.handle_message; commands run from a table and, when the sender
 * waits (reply_to), the answer {nodename: reply} goes to reply_to's exchange and routing key with
 * headers {ticket, clock}, transient, in the request's serializer. */
#include <fnmatch.h>
#include <msgpack.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "worker/control.h"

#define HELLO_MAX_REVOKED 50000 /* Celery's revoked LimitedSet holds at most this many */

struct ctl {
    struct cel__sup *s;
    struct cel_arena *arena;    /* the delivery's: scratch for this command */
    const msgpack_object *args; /* a map, or NULL */
    msgpack_packer *pk;         /* receives the reply value */
};

typedef void (*ctl_fn)(struct ctl *c);

/* ---- msgpack objects ---- */

static bool is_str(const msgpack_object *o)
{
    return o && o->type == MSGPACK_OBJECT_STR;
}

static bool str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return is_str(o) && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (str_eq(&map->via.map.ptr[i].key, key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

static bool truthy(const msgpack_object *o)
{
    if (!o)
        return false;
    switch (o->type) {
    case MSGPACK_OBJECT_BOOLEAN:
        return o->via.boolean;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return o->via.i64 != 0;
    case MSGPACK_OBJECT_STR:
        return o->via.str.size > 0;
    default:
        return false;
    }
}

static char *dup_str(struct ctl *c, const msgpack_object *o)
{
    return is_str(o) ? cel_arena_strndup(c->arena, o->via.str.ptr, o->via.str.size) : NULL;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    pack_str(pk, s, strlen(s));
}

/* {key: text}: Celery's ok() / nok() */
static void pack_status(msgpack_packer *pk, const char *key, const char *text, size_t n)
{
    msgpack_pack_map(pk, 1);
    pack_cstr(pk, key);
    pack_str(pk, text, n);
}

/* ---- commands ---- */

static void revoke_ids(struct ctl *c, bool terminate)
{
    const msgpack_object *id = get(c->args, "task_id");
    const msgpack_object *ids = id;
    uint32_t n = is_str(id) ? 1 : 0;
    if (id && id->type == MSGPACK_OBJECT_ARRAY) {
        ids = id->via.array.ptr;
        n = id->via.array.size;
    }
    struct cel_buf all = CEL_BUF_INIT, killed = CEL_BUF_INIT, text = CEL_BUF_INIT;
    for (uint32_t i = 0; i < n; i++) {
        char *tid = dup_str(c, &ids[i]);
        if (!tid)
            continue;
        int k = cel__revoke_add(c->s, tid, terminate);
        if (k > 0)
            cel_buf_printf(&killed, "%s%s", killed.len ? ", " : "", tid);
        cel_buf_printf(&all, "%s%s", all.len ? ", " : "", tid);
        int rc = cel_store_revoke(c->s->store, tid, terminate, 0);
        if (rc < 0)
            cel_log_warning("revoke %s: not recorded in the result backend: %s", tid,
                            cel_store_errstr(c->s->store));
    }
    cel_log_info("Tasks flagged as revoked: %s", all.len ? all.data : "");
    if (terminate && killed.len)
        cel_buf_printf(&text, "terminate: %s", killed.data);
    else if (terminate)
        cel_buf_puts(&text, "terminate: tasks unknown");
    else
        cel_buf_printf(&text, "tasks %s flagged as revoked", all.len ? all.data : "");
    if (text.data)
        pack_status(c->pk, "ok", text.data, text.len);
    else
        pack_status(c->pk, "error", "out of memory", 13);
    cel_buf_free(&all);
    cel_buf_free(&killed);
    cel_buf_free(&text);
}

/* revoke(task_id, terminate=False, signal=None). A running task is always killed with SIGKILL:
 * children ignore SIGTERM (warm shutdown belongs to the supervisor). */
static void cmd_revoke(struct ctl *c)
{
    revoke_ids(c, truthy(get(c->args, "terminate")));
}

static void cmd_terminate(struct ctl *c)
{
    revoke_ids(c, true);
}

static void cmd_ping(struct ctl *c)
{
    pack_status(c->pk, "ok", "pong", 4);
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const struct cel__task_entry *const *)a)->name,
                  (*(const struct cel__task_entry *const *)b)->name);
}

static bool wants_item(const msgpack_object *items, const char *name)
{
    if (!items || items->type != MSGPACK_OBJECT_ARRAY || items->via.array.size == 0)
        return true; /* Celery's default: exchange, routing_key, rate_limit */
    for (uint32_t i = 0; i < items->via.array.size; i++)
        if (str_eq(&items->via.array.ptr[i], name))
            return true;
    return false;
}

/* Sorted task names, "name [rate_limit=10/s]" when the task has one, as Celery lists them. */
static void cmd_registered(struct ctl *c)
{
    const struct cel__registry *r = c->s->reg;
    const struct cel__task_entry **v = malloc((r->n_tasks ? r->n_tasks : 1) * sizeof *v);
    if (!v) {
        pack_status(c->pk, "error", "out of memory", 13);
        return;
    }
    for (size_t i = 0; i < r->n_tasks; i++)
        v[i] = &r->tasks[i];
    qsort(v, r->n_tasks, sizeof *v, by_name);
    bool rate = wants_item(get(c->args, "taskinfoitems"), "rate_limit");
    msgpack_pack_array(c->pk, r->n_tasks);
    for (size_t i = 0; i < r->n_tasks; i++) {
        const char *rl = v[i]->def ? v[i]->def->rate_limit : NULL;
        if (!rate || !rl || !*rl) {
            pack_cstr(c->pk, v[i]->name);
            continue;
        }
        struct cel_buf b = CEL_BUF_INIT;
        cel_buf_printf(&b, "%s [rate_limit=%s]", v[i]->name, rl);
        pack_str(c->pk, b.data ? b.data : v[i]->name, b.data ? b.len : strlen(v[i]->name));
        cel_buf_free(&b);
    }
    free(v);
}

/* mingle: learn the sender's revoked ids, answer with ours (timestamps are "now": the set does
 * not keep when an id was revoked) and the clock. Our own hello gets None. */
static void cmd_hello(struct ctl *c)
{
    struct cel__sup *s = c->s;
    if (str_eq(get(c->args, "from_node"), s->cfg->hostname)) {
        msgpack_pack_nil(c->pk);
        return;
    }
    const msgpack_object *theirs = get(c->args, "revoked");
    for (uint32_t i = 0; theirs && theirs->type == MSGPACK_OBJECT_MAP && i < theirs->via.map.size;
         i++) {
        char *tid = dup_str(c, &theirs->via.map.ptr[i].key);
        if (tid)
            cel__revoke_add(s, tid, false);
    }
    double now = (double)cel_now_us() / 1e6;
    size_t n = s->revoked.n < HELLO_MAX_REVOKED ? s->revoked.n : HELLO_MAX_REVOKED;
    msgpack_pack_map(c->pk, 2);
    pack_cstr(c->pk, "revoked");
    msgpack_pack_map(c->pk, n);
    for (size_t i = 0; i < s->revoked.cap && n > 0; i++) {
        if (!s->revoked.ids[i])
            continue;
        n--;
        pack_cstr(c->pk, s->revoked.ids[i]);
        msgpack_pack_double(c->pk, now);
    }
    pack_cstr(c->pk, "clock");
    msgpack_pack_uint64(c->pk, ++s->control_clock);
}

static const struct {
    const char *name;
    ctl_fn fn;
} commands[] = {
    {"revoke", cmd_revoke},         {"terminate", cmd_terminate}, {"ping", cmd_ping},
    {"registered", cmd_registered}, {"hello", cmd_hello},
};

static ctl_fn command(const msgpack_object *method)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (str_eq(method, commands[i].name))
            return commands[i].fn;
    return NULL;
}

/* ---- the message ---- */

/* kombu's match(): glob by fnmatch, pcre as re.match (anchored at the start). */
static bool pattern_match(const char *host, const char *pattern, const char *matcher)
{
    if (strcmp(matcher, "glob") == 0)
        return fnmatch(pattern, host, 0) == 0;
    if (strcmp(matcher, "pcre") != 0) {
        cel_log_warning("pidbox: no matcher '%s' (glob and pcre only): message ignored", matcher);
        return false;
    }
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED) != 0) {
        cel_log_warning("pidbox: pattern '%s' does not compile: message ignored", pattern);
        return false;
    }
    regmatch_t m;
    bool ok = regexec(&re, host, 1, &m, 0) == 0 && m.rm_so == 0;
    regfree(&re);
    return ok;
}

static bool for_us(struct ctl *c, const msgpack_object *msg)
{
    const char *host = c->s->cfg->hostname;
    const msgpack_object *dest = get(msg, "destination");
    if (dest && dest->type == MSGPACK_OBJECT_ARRAY && dest->via.array.size > 0) {
        for (uint32_t i = 0; i < dest->via.array.size; i++)
            if (str_eq(&dest->via.array.ptr[i], host))
                return true;
        return false;
    }
    char *pattern = dup_str(c, get(msg, "pattern"));
    char *matcher = dup_str(c, get(msg, "matcher"));
    if (pattern && *pattern && matcher && *matcher)
        return pattern_match(host, pattern, matcher);
    return true;
}

/* The body as msgpack (JSON converted) in out; the format the reply must use in *fmt. */
static int body_msgpack(struct cel__sup *s, const struct cel_delivery *d, struct cel_buf *out,
                        enum cel_format *fmt, char *err, size_t errlen)
{
    const char *ct = d->props.content_type ? d->props.content_type : "";
    if (d->body.len > s->limits.max_body) {
        snprintf(err, errlen, "body of %zu bytes is over the limit", d->body.len);
        return CEL_ETOOBIG;
    }
    if (strcmp(ct, CEL_CT_JSON) == 0) {
        *fmt = CEL_FMT_JSON;
        return cel_json_to_msgpack(d->body.ptr, d->body.len, &s->limits, out, err, errlen);
    }
    if (strcmp(ct, CEL_CT_MSGPACK) == 0) {
        *fmt = CEL_FMT_MSGPACK;
        return cel_buf_append(out, d->body.ptr, d->body.len);
    }
    snprintf(err, errlen, "content type '%s' (msgpack and json only)", ct);
    return CEL_ECONTENT;
}

static void adjust_clock(struct cel__sup *s, const struct cel_delivery *d)
{
    const struct cel_value *v = cel_table_get(&d->headers, "clock");
    uint64_t theirs = 0;
    if (v && v->type == CEL_V_INT && v->u.i > 0)
        theirs = (uint64_t)v->u.i;
    else if (v && v->type == CEL_V_UINT)
        theirs = v->u.u;
    if (theirs > s->control_clock)
        s->control_clock = theirs;
    s->control_clock++;
}

static void send_reply(struct ctl *c, const msgpack_object *msg, struct cel_span reply,
                       enum cel_format fmt)
{
    struct cel__sup *s = c->s;
    const msgpack_object *to = get(msg, "reply_to");
    const msgpack_object *ticket = get(msg, "ticket");
    char *exchange = dup_str(c, get(to, "exchange"));
    char *rkey = dup_str(c, get(to, "routing_key"));
    if (!exchange || !rkey)
        return;
    struct cel_buf json = CEL_BUF_INIT;
    if (fmt == CEL_FMT_JSON) {
        if (cel_msgpack_to_json(reply, &json) < 0) {
            cel_log_warning("pidbox: the reply cannot be written as JSON");
            cel_buf_free(&json);
            return;
        }
        reply = cel_buf_span(&json);
    }
    struct cel_field f[2] = {
        {{"ticket", 6},
         is_str(ticket) ? cel_value_str(ticket->via.str.ptr, ticket->via.str.size)
                        : (struct cel_value){.type = CEL_V_VOID}},
        {{"clock", 5}, cel_value_int((int64_t)++s->control_clock)},
    };
    struct cel_table headers = {f, 2};
    struct cel_props props = {
        .content_type = fmt == CEL_FMT_JSON ? CEL_CT_JSON : CEL_CT_MSGPACK,
        .content_encoding = fmt == CEL_FMT_JSON ? "utf-8" : "binary",
        .delivery_mode = 1,
    };
    struct cel_publish p = {exchange, rkey, &props, &headers, reply, 0, false};
    int rc = s->bc->publish(s->broker, &p, 1, NULL);
    if (rc < 0)
        cel_log_warning("pidbox: reply to %s/%s not sent: %s: %s", exchange, rkey, cel_strerror(rc),
                        s->bc->errstr(s->broker));
    cel_buf_free(&json);
}

static void dispatch(struct ctl *c, const msgpack_object *msg, enum cel_format fmt)
{
    const msgpack_object *method = get(msg, "method");
    const char *host = c->s->cfg->hostname;
    struct cel_buf out = CEL_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out, cel_buf_msgpack_write);
    c->pk = &pk;
    const msgpack_object *args = get(msg, "arguments");
    c->args = args && args->type == MSGPACK_OBJECT_MAP ? args : NULL;
    msgpack_pack_map(&pk, 1);
    pack_cstr(&pk, host);
    ctl_fn fn = command(method);
    if (fn) {
        cel_log_debug("pidbox: %.*s", (int)method->via.str.size, method->via.str.ptr);
        fn(c);
    } else {
        struct cel_buf e = CEL_BUF_INIT;
        cel_buf_printf(&e, "No such control command: %.*s",
                       is_str(method) ? (int)method->via.str.size : 0,
                       is_str(method) ? method->via.str.ptr : "");
        cel_log_warning("%s", e.data ? e.data : "No such control command");
        pack_status(&pk, "error", e.data ? e.data : "", e.data ? e.len : 0);
        cel_buf_free(&e);
    }
    if (get(msg, "reply_to") && out.data)
        send_reply(c, msg, cel_buf_span(&out), fmt);
    cel_buf_free(&out);
}

void cel__control_handle(struct cel__sup *s, struct cel__job *j)
{
    char err[256] = "";
    struct cel_buf mp = CEL_BUF_INIT;
    enum cel_format fmt = CEL_FMT_MSGPACK;
    adjust_clock(s, &j->d);
    int rc = body_msgpack(s, &j->d, &mp, &fmt, err, sizeof err);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (rc == 0 && msgpack_unpack_next(&u, mp.data, mp.len, &off) != MSGPACK_UNPACK_SUCCESS) {
        snprintf(err, sizeof err, "malformed msgpack");
        rc = CEL_EDECODE;
    }
    if (rc == 0 && u.data.type != MSGPACK_OBJECT_MAP) {
        snprintf(err, sizeof err, "the body is not a map");
        rc = CEL_EBODY;
    }
    struct ctl c = {s, &j->arena, NULL, NULL};
    if (rc < 0)
        cel_log_warning("pidbox: message ignored: %s", err);
    else if (for_us(&c, &u.data))
        dispatch(&c, &u.data, fmt);
    msgpack_unpacked_destroy(&u);
    cel_buf_free(&mp);
}

bool cel__control_owns(const struct cel__sup *s, const struct cel_delivery *d)
{
    return s->control_queue[0] && d->queue && strcmp(d->queue, s->control_queue) == 0;
}

void cel__control_start(struct cel__sup *s)
{
    s->control_queue[0] = 0;
    if (s->cfg->require_signature) { /* anyone on the broker could revoke and terminate */
        cel_log_info("remote control off: pidbox broadcasts cannot carry a signature "
                     "(--require-signature); revoke through the result backend instead");
        return;
    }
    if (!s->bc->control) {
        cel_log_info("remote control: not supported by this broker adapter");
        return;
    }
    char name[sizeof s->control_queue];
    int rc = s->bc->control(s->broker, s->cfg->hostname, name, sizeof name);
    if (rc < 0) {
        cel_log_warning("remote control off: %s: %s", cel_strerror(rc), s->bc->errstr(s->broker));
        return;
    }
    memcpy(s->control_queue, name, sizeof name);
    cel_log_debug("remote control: consuming %s", name);
}
