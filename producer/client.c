/* client.c: libceleriac's core: configuration, lazy connections, and the publishing path.
 * Messages are encoded into one batch (an arena for headers and properties, one buffer for all
 * bodies) that is reused from batch to batch, so steady-state publishing does not allocate per
 * message; a flush is one confirmed publish of the whole batch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "celeriac/broker.h"
#include "common/clock.h"
#include "common/message.h"
#include "common/store.h"
#include "common/uuid.h"
#include "producer/client_priv.h"

#define CEL__BATCH_ARENA (4u << 20)

static char *dup_or_env(const char *v, const char *env, const char *def)
{
    if (!v)
        v = getenv(env);
    if (!v || !*v)
        v = def;
    return v ? strdup(v) : NULL;
}

static void make_origin(struct cel_client *c)
{
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(c->origin, sizeof c->origin, "gen%ld@%s", (long)getpid(), host);
}

static int config_copy(struct cel_client *c, const struct cel_client_config *cfg)
{
    const char *env_url = getenv("CELERIAC_BROKER_URL");
    const char *env_file = getenv("CELERIAC_BROKER_URL_FILE");
    /* NULL lets the adapter read the environment (URL file, password) itself */
    bool from_env = !cfg->broker_url && ((env_url && *env_url) || (env_file && *env_file));
    c->broker_url =
        from_env ? NULL : strdup(cfg->broker_url ? cfg->broker_url : CEL_CLIENT_DEFAULT_BROKER);
    c->broker_shown = strdup(cfg->broker_url         ? cfg->broker_url
                             : env_file && *env_file ? env_file
                             : env_url && *env_url   ? env_url
                                                     : CEL_CLIENT_DEFAULT_BROKER);
    c->backend_url =
        dup_or_env(cfg->backend_url, "CELERIAC_RESULT_BACKEND", CEL_CLIENT_DEFAULT_BACKEND);
    c->tls_ca = dup_or_env(cfg->tls_ca, "CELERIAC_TLS_CA", NULL);
    c->tls_cert = dup_or_env(cfg->tls_cert, "CELERIAC_TLS_CERT", NULL);
    c->tls_key = dup_or_env(cfg->tls_key, "CELERIAC_TLS_KEY", NULL);
    c->queue_type = dup_or_env(cfg->queue_type, "CELERIAC_QUEUE_TYPE", NULL);
    if ((!from_env && !c->broker_url) || !c->broker_shown || !c->backend_url)
        return CEL_ENOMEM;
    c->tls_insecure = cfg->tls_insecure;
    const char *mp = getenv("CELERIAC_MAX_PRIORITY");
    c->max_priority = cfg->max_priority ? cfg->max_priority : mp ? atoi(mp) : 0;
    c->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 5000;
    c->reconnect_timeout_ms = cfg->reconnect_timeout_ms > 0 ? cfg->reconnect_timeout_ms : 60000;
    c->batch_max = cfg->batch_max ? cfg->batch_max : 500;
    c->format = cfg->format == CEL_CLIENT_FMT_JSON ? CEL_FMT_JSON : CEL_FMT_MSGPACK;
    return 0;
}

static int load_signing_key(struct cel_client *c, const char *file, char *err, size_t errlen)
{
    if (!file)
        file = getenv("CELERIAC_SIGNING_KEY_FILE");
    if (!file || !*file)
        return 0;
    size_t len = sizeof c->signing_key;
    int rc = cel_sign_load_key(file, c->signing_key, &len, err, errlen);
    c->signing_key_len = rc ? 0 : len;
    return rc;
}

int cel_client_open(struct cel_client **out, const struct cel_client_config *cfg, char *err,
                    size_t errlen)
{
    static const struct cel_client_config defaults;
    struct cel_client *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return CEL_ENOMEM;
    }
    int rc = config_copy(c, cfg ? cfg : &defaults);
    if (rc) {
        snprintf(err, errlen, "out of memory");
        cel_client_free(c);
        return rc;
    }
    if ((rc = load_signing_key(c, cfg ? cfg->signing_key_file : NULL, err, errlen)) != 0) {
        cel_client_free(c);
        return rc;
    }
    cel_arena_init(&c->batch_arena, CEL__BATCH_ARENA);
    cel_arena_init(&c->res_arena, 16384);
    cel_arena_init(&c->tmp_arena, 16384);
    cel_uuid4(c->oid);
    make_origin(c);
    *out = c;
    return 0;
}

void cel_client_free(struct cel_client *c)
{
    if (!c)
        return;
    if (c->broker)
        CEL_BROKER_CLASS(c->broker)->free(c->broker);
    cel_store_free(c->store);
    free(c->broker_url);
    free(c->broker_shown);
    free(c->backend_url);
    free(c->tls_ca);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->queue_type);
    for (size_t i = 0; i < c->ndeclared; i++)
        free(c->declared[i]);
    free(c->declared);
    free(c->pend);
    free(c->pubs);
    cel_arena_free(&c->batch_arena);
    cel_arena_free(&c->res_arena);
    cel_arena_free(&c->tmp_arena);
    cel_buf_free(&c->bodies);
    cel_buf_free(&c->scratch);
    cel_buf_free(&c->res_buf);
    cel_buf_free(&c->res_json);
    OPENSSL_cleanse(c->signing_key, sizeof c->signing_key);
    free(c);
}

const char *cel_client_errstr(const struct cel_client *c)
{
    return c->errstr;
}

int cel__client_err(struct cel_client *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
    va_end(ap);
    return rc;
}

/* Connection failures of any kind are CEL_ECONN to the caller; the detail is in errstr. */
static int conn_rc(int rc)
{
    return rc == CEL_ENOMEM || rc == CEL_EURL || rc == CEL_ECONFIG || rc == CEL_EAUTH ||
                   rc == CEL_ETLS
               ? rc
               : CEL_ECONN;
}

int cel__client_broker(struct cel_client *c)
{
    if (c->broker)
        return 0;
    struct cel_broker_opts o = {
        .url = c->broker_url,
        .tls_ca = c->tls_ca,
        .tls_cert = c->tls_cert,
        .tls_key = c->tls_key,
        .tls_insecure = c->tls_insecure,
        .connect_timeout_ms = c->connect_timeout_ms,
        .queue_type = c->queue_type,
        .max_priority = c->max_priority,
    };
    char err[512] = "", shown[512];
    int rc = cel_broker_open(&c->broker, &o, err, sizeof err);
    if (rc) {
        c->broker = NULL;
        cel_url_redact(c->broker_shown, shown, sizeof shown);
        return cel__client_err(c, conn_rc(rc), "broker %s unreachable: %s", shown, err);
    }
    return 0;
}

int cel__client_store(struct cel_client *c)
{
    if (c->store)
        return 0;
    struct cel_store_opts o = {.url = c->backend_url, .connect_timeout_ms = c->connect_timeout_ms};
    char err[512] = "", shown[512];
    int rc = cel_store_open(&c->store, &o, err, sizeof err);
    if (rc) {
        c->store = NULL;
        cel_url_redact(c->backend_url, shown, sizeof shown);
        return cel__client_err(c, conn_rc(rc), "result backend %s unreachable: %s", shown, err);
    }
    return 0;
}

int cel__client_broker_err(struct cel_client *c, int rc, const char *what)
{
    const char *detail = c->broker ? CEL_BROKER_CLASS(c->broker)->errstr(c->broker) : "";
    char shown[512];
    cel_url_redact(c->broker_shown, shown, sizeof shown);
    if (rc == CEL_ECONN)
        return cel__client_err(c, rc, "broker %s: connection lost: %s: %s", shown, what,
                               detail && *detail ? detail : cel_strerror(rc));
    return cel__client_err(c, rc, "%s: %s", what, detail && *detail ? detail : cel_strerror(rc));
}

int cel__client_store_err(struct cel_client *c, int rc, const char *what)
{
    const char *detail = c->store ? cel_store_errstr(c->store) : "";
    if (rc == CEL_ECONN || rc == CEL_EREDIS) {
        char shown[512];
        cel_url_redact(c->backend_url, shown, sizeof shown);
        return cel__client_err(c, rc == CEL_ECONN ? rc : CEL_EREDIS, "result backend %s: %s: %s",
                               shown, what, detail && *detail ? detail : cel_strerror(rc));
    }
    return cel__client_err(c, rc, "%s: %s", what, detail && *detail ? detail : cel_strerror(rc));
}

int cel_client_connect(struct cel_client *c, bool broker, bool backend)
{
    int rc = broker ? cel__client_broker(c) : 0;
    return rc ? rc : backend ? cel__client_store(c) : 0;
}

/* ---- encoding one message into the batch ---- */

static const char *adup(struct cel_client *c, const char *s)
{
    return s ? cel_arena_strdup(&c->batch_arena, s) : NULL;
}

static struct cel_span acopy(struct cel_client *c, const char *p, size_t n)
{
    char *d = n ? cel_arena_alloc(&c->batch_arena, n) : NULL;
    if (d)
        memcpy(d, p, n);
    return (struct cel_span){d, d ? n : 0};
}

/* A msgpack array of signatures in the arena; reverse for chains (next task last), each chain
 * element with its own frozen task id. */
static int pack_sigs(struct cel_client *c, const struct cel_sig *s, size_t n, bool chain,
                     struct cel_span *out)
{
    if (!n)
        return 0;
    cel_buf_clear(&c->scratch);
    int rc = 0;
    char hdr[5] = {(char)0xdd, (char)(n >> 24), (char)(n >> 16), (char)(n >> 8), (char)n};
    rc = n < 16 ? cel_buf_append(&c->scratch, (char[]){(char)(0x90 | n)}, 1)
                : cel_buf_append(&c->scratch, hdr, 5);
    for (size_t i = 0; !rc && i < n; i++) {
        char id[37];
        const struct cel_sig *sig = chain ? &s[n - 1 - i] : &s[i];
        if (chain)
            cel_uuid4(id);
        rc = cel__sig_pack(sig, chain ? id : NULL, &c->scratch);
    }
    if (rc)
        return rc;
    *out = acopy(c, c->scratch.data, c->scratch.len);
    return out->ptr ? 0 : CEL_ENOMEM;
}

static int set_times(struct cel_client *c, struct cel_task *t, const struct cel_send_opts *o,
                     uint32_t *delay_s)
{
    int64_t now = cel_now_us();
    int64_t eta = o->countdown > 0 ? now + (int64_t)llround(o->countdown * 1e6) : o->eta_us;
    *delay_s = 0;
    if (eta > 0) {
        t->eta = eta;
        if (eta > now) {
            double d = ceil((double)(eta - now) / 1e6);
            if (d >= (double)(1u << 28))
                return cel__client_err(c, CEL_EINVAL,
                                       "countdown/eta is %.0f s ahead: the delay levels hold at "
                                       "most %u s",
                                       d, (1u << 28) - 1);
            *delay_s = (uint32_t)d;
        }
    }
    if (o->expires_us > 0)
        t->expires = o->expires_us;
    else if (o->expires_in > 0)
        t->expires = now + (int64_t)llround(o->expires_in * 1e6);
    return 0;
}

/* Extra headers may not replace the ones the encoder writes. */
static int extra_headers(struct cel_client *c, struct cel_span map, struct cel_table *out)
{
    static const char *const reserved[] = {"lang",
                                           "task",
                                           "id",
                                           "shadow",
                                           "eta",
                                           "expires",
                                           "group",
                                           "group_index",
                                           "retries",
                                           "timelimit",
                                           "root_id",
                                           "parent_id",
                                           "argsrepr",
                                           "kwargsrepr",
                                           "origin",
                                           "ignore_result",
                                           "x-celeriac-idempotency-key",
                                           "x-celeriac-signature"};
    int rc = cel__headers_table(&c->batch_arena, map, out);
    for (size_t i = 0; !rc && i < out->n; i++)
        for (size_t k = 0; k < sizeof reserved / sizeof reserved[0]; k++)
            if (out->items[i].key.len == strlen(reserved[k]) &&
                !memcmp(out->items[i].key.ptr, reserved[k], out->items[i].key.len))
                return cel__client_err(c, CEL_EINVAL, "header '%s' is set by celeriac itself",
                                       reserved[k]);
    return rc;
}

static int fill_task(struct cel_client *c, struct cel_task *t, const char *task,
                     struct cel_span args, struct cel_span kwargs, const struct cel_send_opts *o,
                     uint32_t *delay_s)
{
    cel_task_init(t);
    t->task = adup(c, task);
    if (o->task_id) {
        t->id = adup(c, o->task_id);
    } else {
        char *id = cel_arena_alloc(&c->batch_arena, 37);
        if (id)
            cel_uuid4(id);
        t->id = id;
    }
    if (!t->task || !t->id)
        return CEL_ENOMEM;
    t->format = o->format == CEL_CLIENT_FMT_JSON      ? CEL_FMT_JSON
                : o->format == CEL_CLIENT_FMT_MSGPACK ? CEL_FMT_MSGPACK
                                                      : c->format;
    t->props.reply_to = c->oid;
    t->props.priority = (uint8_t)o->priority;
    t->props.has_priority = true;
    t->origin = c->origin;
    t->idempotency_key = adup(c, o->idempotency_key);
    t->parent_id = adup(c, o->parent_id);
    t->root_id = adup(c, o->root_id);
    t->ignore_result = o->ignore_result;
    t->time_limit = o->time_limit;
    t->soft_time_limit = o->soft_time_limit;
    t->args = args.len ? args : CEL_SPAN_LIT("\x90");
    t->kwargs = kwargs.len ? kwargs : CEL_SPAN_LIT("\x80");
    int rc = set_times(c, t, o, delay_s);
    if (!rc)
        rc = pack_sigs(c, o->link, o->n_link, false, &t->callbacks);
    if (!rc)
        rc = pack_sigs(c, o->link_error, o->n_link_error, false, &t->errbacks);
    if (!rc)
        rc = pack_sigs(c, o->chain, o->n_chain, true, &t->chain);
    if (!rc && o->headers.len)
        rc = extra_headers(c, o->headers, &t->extra);
    return rc;
}

static int check_parts(struct cel_client *c, const char *task, struct cel_span args,
                       struct cel_span kwargs, const struct cel_send_opts *o)
{
    char err[256];
    if (!task || !*task)
        return cel__client_err(c, CEL_EINVAL, "task name is empty");
    if (args.len && ((unsigned char)args.ptr[0] & 0xf0) != 0x90 &&
        (unsigned char)args.ptr[0] != 0xdc && (unsigned char)args.ptr[0] != 0xdd)
        return cel__client_err(c, CEL_EINVAL, "args must be a msgpack array");
    if (kwargs.len && ((unsigned char)kwargs.ptr[0] & 0xf0) != 0x80 &&
        (unsigned char)kwargs.ptr[0] != 0xde && (unsigned char)kwargs.ptr[0] != 0xdf)
        return cel__client_err(c, CEL_EINVAL, "kwargs must be a msgpack map");
    int rc = args.len ? cel_msgpack_validate(args, &cel_default_limits, err, sizeof err) : 0;
    if (rc)
        return cel__client_err(c, rc, "args: %s", err);
    rc = kwargs.len ? cel_msgpack_validate(kwargs, &cel_default_limits, err, sizeof err) : 0;
    if (rc)
        return cel__client_err(c, rc, "kwargs: %s", err);
    if (o->priority < 0 || o->priority > 255)
        return cel__client_err(c, CEL_EINVAL, "priority %d out of range 0..255", o->priority);
    return 0;
}

static int grow_pending(struct cel_client *c)
{
    if (c->npend < c->cappend)
        return 0;
    size_t cap = c->cappend ? c->cappend * 2 : 64;
    struct cel__pending *p = realloc(c->pend, cap * sizeof *p);
    if (!p)
        return CEL_ENOMEM;
    c->pend = p;
    c->cappend = cap;
    return 0;
}

static int encode_one(struct cel_client *c, const char *task, struct cel_span args,
                      struct cel_span kwargs, const struct cel_send_opts *o, char *id_out)
{
    struct cel_task t;
    uint32_t delay_s;
    c->errstr[0] = 0;
    int rc = grow_pending(c);
    if (!rc)
        rc = fill_task(c, &t, task, args, kwargs, o, &delay_s);
    if (rc == CEL_EINVAL && c->errstr[0])
        return rc; /* the reason is already in errstr */
    if (rc)
        return cel__client_err(c, rc, "%s: %s", task,
                               rc == CEL_EINVAL ? "bad options" : cel_strerror(rc));
    struct cel__pending *p = &c->pend[c->npend];
    p->props = cel_arena_calloc(&c->batch_arena, sizeof *p->props);
    p->headers = cel_arena_calloc(&c->batch_arena, sizeof *p->headers);
    p->queue = o->queue ? adup(c, o->queue)
                        : cel_arena_strndup(&c->batch_arena, task, cel__default_queue_len(task));
    if (!p->props || !p->headers || !p->queue)
        return cel__client_err(c, CEL_ENOMEM, "out of memory");
    p->body_off = c->bodies.len;
    rc = cel_task_encode(&t, &c->batch_arena, p->props, p->headers, &c->bodies);
    if (rc) {
        c->bodies.len = p->body_off;
        return cel__client_err(c, rc, "%s: cannot encode: %s", task, cel_strerror(rc));
    }
    p->body_len = c->bodies.len - p->body_off;
    struct cel_span body = {c->bodies.data + p->body_off, p->body_len};
    if (c->signing_key_len && (rc = cel_sign_headers(&t, body, c->signing_key, c->signing_key_len,
                                                     &c->batch_arena, p->headers)) != 0) {
        c->bodies.len = p->body_off;
        return cel__client_err(c, rc, "%s: cannot sign: %s", task, cel_strerror(rc));
    }
    /* A per-message TTL would make the delay levels dead-letter it early: with a delay, expiry
     * is left to the expires header, which every worker checks. */
    if (delay_s)
        p->props->expiration = NULL;
    p->delay_s = delay_s;
    c->npend++;
    if (id_out)
        snprintf(id_out, 37, "%s", t.id);
    return 0;
}

int cel_client_add(struct cel_client *c, const char *task, struct cel_span args,
                   struct cel_span kwargs, const struct cel_send_opts *o, char *id_out)
{
    static const struct cel_send_opts none;
    o = o ? o : &none;
    int rc = check_parts(c, task, args, kwargs, o);
    if (!rc && c->npend >= c->batch_max)
        rc = cel_client_flush(c);
    return rc ? rc : encode_one(c, task, args, kwargs, o, id_out);
}

int cel_client_send(struct cel_client *c, const char *task, struct cel_span args,
                    struct cel_span kwargs, const struct cel_send_opts *o, char *id_out)
{
    int rc = cel_client_flush(c);
    if (!rc)
        rc = cel_client_add(c, task, args, kwargs, o, id_out);
    return rc ? rc : cel_client_flush(c);
}

int cel_client_send_json(struct cel_client *c, const char *task, const char *args_json,
                         const char *kwargs_json, const struct cel_send_opts *o, char *id_out)
{
    struct cel_buf b = CEL_BUF_INIT;
    char err[300];
    int rc = 0;
    size_t alen = 0;
    if (args_json)
        rc = cel__json_text_pack(args_json, JSON_ARRAY, "args", &b, err, sizeof err);
    alen = b.len;
    if (!rc && kwargs_json)
        rc = cel__json_text_pack(kwargs_json, JSON_OBJECT, "kwargs", &b, err, sizeof err);
    if (rc) {
        cel_buf_free(&b);
        return cel__client_err(c, rc, "%s", err);
    }
    rc = cel_client_send(c, task, (struct cel_span){b.data, alen},
                         (struct cel_span){b.data + alen, b.len - alen}, o, id_out);
    cel_buf_free(&b);
    return rc;
}

/* ---- flushing ---- */

static int declare_once(struct cel_client *c, const char *queue)
{
    for (size_t i = 0; i < c->ndeclared; i++)
        if (!strcmp(c->declared[i], queue))
            return 0;
    int rc = CEL_BROKER_CLASS(c->broker)->declare(c->broker, queue);
    if (rc) {
        char what[300];
        snprintf(what, sizeof what, "declare queue %s", queue);
        return cel__client_broker_err(c, rc, what);
    }
    char **d = realloc(c->declared, (c->ndeclared + 1) * sizeof *d);
    if (!d || !(d[c->ndeclared] = strdup(queue))) {
        c->declared = d ? d : c->declared;
        return cel__client_err(c, CEL_ENOMEM, "out of memory");
    }
    c->declared = d;
    c->ndeclared++;
    return 0;
}

static int prepare_publishes(struct cel_client *c)
{
    if (c->cappubs < c->npend) {
        struct cel_publish *p = realloc(c->pubs, c->npend * sizeof *p);
        if (!p)
            return cel__client_err(c, CEL_ENOMEM, "out of memory");
        c->pubs = p;
        c->cappubs = c->npend;
    }
    for (size_t i = 0; i < c->npend; i++) {
        const struct cel__pending *p = &c->pend[i];
        int rc = i && !strcmp(p->queue, c->pend[i - 1].queue) ? 0 : declare_once(c, p->queue);
        if (rc)
            return rc;
        c->pubs[i] = (struct cel_publish){
            .exchange = "",
            .routing_key = p->queue,
            .props = p->props,
            .headers = p->headers,
            .body = {c->bodies.data + p->body_off, p->body_len},
            .delay_s = p->delay_s,
        };
    }
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* After a connection loss: reconnect with backoff until reconnect_timeout_ms has passed. */
int cel__client_reconnect(struct cel_client *c)
{
    const struct cel_broker_class *cls = CEL_BROKER_CLASS(c->broker);
    int64_t deadline = cel_mono_us() + (int64_t)c->reconnect_timeout_ms * 1000;
    int rc = CEL_ECONN;
    for (unsigned attempt = 0; rc && cel_mono_us() < deadline; attempt++) {
        sleep_ms(cel_backoff_ms(attempt, 100, 2000));
        rc = cls->reconnect(c->broker);
    }
    return rc ? cel__client_broker_err(c, CEL_ECONN, "reconnect") : 0;
}

/* Drops the first n pending messages (confirmed ones) and keeps the rest for a later flush. */
static void drop_confirmed(struct cel_client *c, size_t n)
{
    memmove(c->pend, c->pend + n, (c->npend - n) * sizeof *c->pend);
    c->npend -= n;
}

static void batch_reset(struct cel_client *c)
{
    c->npend = 0;
    cel_buf_clear(&c->bodies);
    cel_arena_reset(&c->batch_arena);
}

int cel_client_flush(struct cel_client *c)
{
    if (!c->npend)
        return 0;
    int rc = cel__client_broker(c);
    if (!rc)
        rc = prepare_publishes(c);
    size_t done = 0;
    while (!rc && done < c->npend) {
        size_t conf = 0, left = c->npend - done;
        rc = CEL_BROKER_CLASS(c->broker)->publish(c->broker, c->pubs + done, left, &conf);
        conf = rc ? (conf > left ? left : conf) : left;
        done += conf;
        c->confirmed += conf;
        if (rc == CEL_ECONN)
            rc = cel__client_reconnect(c);
        else if (rc)
            rc = cel__client_broker_err(c, rc, "publish");
    }
    if (rc) {
        drop_confirmed(c, done);
        return rc;
    }
    batch_reset(c);
    return 0;
}

size_t cel_client_pending(const struct cel_client *c)
{
    return c->npend;
}

uint64_t cel_client_confirmed(const struct cel_client *c)
{
    return c->confirmed;
}
