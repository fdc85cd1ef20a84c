/* canvas.c: Celery 5.2 canvas semantics for a finished job (spec section 4): builds the chain,
 * link, link_error and chord body messages from the signatures carried in a task's embed.
 * Signatures come from the network, so they are read with a small bounded msgpack reader that
 * never trusts a type or a length, and copied into new messages as raw msgpack slices. */
#include "worker/canvas.h"

#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/uuid.h"

/* ---- a bounded msgpack reader ---- */

enum mp_kind {
    MP_BAD,
    MP_NIL,
    MP_BOOL,
    MP_INT,
    MP_UINT,
    MP_F32,
    MP_F64,
    MP_STR,
    MP_BIN,
    MP_EXT,
    MP_ARRAY,
    MP_MAP
};

struct mp_item {
    enum mp_kind k;
    bool b;
    int64_t i;
    uint64_t u;
    double d;
    uint32_t n;    /* str/bin/ext length, array/map count */
    const char *s; /* str/bin payload */
};

struct mpr {
    const unsigned char *p;
    const unsigned char *end;
};

/* Formats 0xc0..0xdf: kind, width of the length or value that follows, fixed payload size. */
struct mp_fmt {
    uint8_t kind;
    uint8_t width;
    uint8_t fixed;
};

static const struct mp_fmt mp_fmts[32] = {
    {MP_NIL, 0, 0},  {MP_BAD, 0, 0}, {MP_BOOL, 0, 0}, {MP_BOOL, 0, 1},  {MP_BIN, 1, 0},
    {MP_BIN, 2, 0},  {MP_BIN, 4, 0}, {MP_EXT, 1, 0},  {MP_EXT, 2, 0},   {MP_EXT, 4, 0},
    {MP_F32, 4, 0},  {MP_F64, 8, 0}, {MP_UINT, 1, 0}, {MP_UINT, 2, 0},  {MP_UINT, 4, 0},
    {MP_UINT, 8, 0}, {MP_INT, 1, 0}, {MP_INT, 2, 0},  {MP_INT, 4, 0},   {MP_INT, 8, 0},
    {MP_EXT, 0, 1},  {MP_EXT, 0, 2}, {MP_EXT, 0, 4},  {MP_EXT, 0, 8},   {MP_EXT, 0, 16},
    {MP_STR, 1, 0},  {MP_STR, 2, 0}, {MP_STR, 4, 0},  {MP_ARRAY, 2, 0}, {MP_ARRAY, 4, 0},
    {MP_MAP, 2, 0},  {MP_MAP, 4, 0},
};

static struct mpr mpr_of(struct cel_span s)
{
    const unsigned char *p = (const unsigned char *)s.ptr;
    return (struct mpr){p, p + s.len};
}

static int mpr_take(struct mpr *r, size_t width, uint64_t *x)
{
    if ((size_t)(r->end - r->p) < width)
        return CEL_EBODY;
    *x = 0;
    for (size_t k = 0; k < width; k++)
        *x = (*x << 8) | r->p[k];
    r->p += width;
    return 0;
}

static int mpr_payload(struct mpr *r, struct mp_item *it, uint64_t n)
{
    if (n > (uint64_t)(r->end - r->p))
        return CEL_EBODY;
    it->n = (uint32_t)n;
    it->s = (const char *)r->p;
    r->p += n;
    return 0;
}

static void mp_scalar(struct mp_item *it, const struct mp_fmt *f, uint64_t x)
{
    if (f->kind == MP_INT) {
        unsigned shift = 64 - 8 * f->width;
        it->i = (int64_t)(x << shift) >> shift;
    } else if (f->kind == MP_F32) {
        uint32_t b32 = (uint32_t)x;
        float fl;
        memcpy(&fl, &b32, sizeof fl);
        it->d = fl;
    } else if (f->kind == MP_F64) {
        memcpy(&it->d, &x, sizeof it->d);
    }
    it->u = x;
    it->b = f->fixed;
}

static int mpr_ext(struct mpr *r, struct mp_item *it, const struct mp_fmt *f, uint64_t x)
{
    uint64_t n = f->width ? x : f->fixed;
    return mpr_payload(r, it, n + 1);
}

static int mpr_typed(struct mpr *r, struct mp_item *it, unsigned c)
{
    const struct mp_fmt *f = &mp_fmts[c - 0xc0];
    uint64_t x = 0;
    it->k = (enum mp_kind)f->kind;
    if (f->kind == MP_BAD || mpr_take(r, f->width, &x) < 0)
        return CEL_EBODY;
    switch (f->kind) {
    case MP_STR:
    case MP_BIN:
        return mpr_payload(r, it, x);
    case MP_EXT:
        return mpr_ext(r, it, f, x);
    case MP_ARRAY:
    case MP_MAP:
        it->n = (uint32_t)x;
        return 0;
    default:
        mp_scalar(it, f, x);
        return 0;
    }
}

/* Reads one value's header; str/bin/ext payloads are consumed, container items are not. */
static int mpr_next(struct mpr *r, struct mp_item *it)
{
    memset(it, 0, sizeof *it);
    if (r->p >= r->end)
        return CEL_EBODY;
    unsigned c = *r->p++;
    if (c <= 0x7f || c >= 0xe0) {
        it->k = c <= 0x7f ? MP_UINT : MP_INT;
        it->u = c;
        it->i = (int8_t)c;
        return 0;
    }
    if (c <= 0x9f) {
        it->k = c <= 0x8f ? MP_MAP : MP_ARRAY;
        it->n = c & 0x0f;
        return 0;
    }
    if (c <= 0xbf) {
        it->k = MP_STR;
        return mpr_payload(r, it, c & 0x1f);
    }
    return mpr_typed(r, it, c);
}

/* Skips one whole value without recursion: every pending item needs at least one byte. */
static int mpr_skip(struct mpr *r)
{
    uint64_t left = 1;
    while (left > 0) {
        struct mp_item it;
        int rc = mpr_next(r, &it);
        if (rc < 0)
            return rc;
        left--;
        if (it.k == MP_ARRAY)
            left += it.n;
        else if (it.k == MP_MAP)
            left += 2 * (uint64_t)it.n;
        if (left > (uint64_t)(r->end - r->p))
            return CEL_EBODY;
    }
    return 0;
}

/* The bytes of the next value. */
static int mpr_value(struct mpr *r, struct cel_span *v)
{
    const unsigned char *start = r->p;
    int rc = mpr_skip(r);
    if (rc < 0)
        return rc;
    *v = (struct cel_span){(const char *)start, (size_t)(r->p - start)};
    return 0;
}

/* Reads an array header from a span holding exactly that array: count and element bytes. */
static int mp_array_of(struct cel_span s, uint32_t *n, struct cel_span *items)
{
    struct mpr r = mpr_of(s);
    struct mp_item it;
    if (mpr_next(&r, &it) < 0 || it.k != MP_ARRAY)
        return CEL_EBODY;
    *n = it.n;
    *items = (struct cel_span){(const char *)r.p, (size_t)(r.end - r.p)};
    return 0;
}

static int mp_is_nil(struct cel_span s)
{
    return s.len == 0 || (s.len == 1 && (unsigned char)s.ptr[0] == 0xc0);
}

static bool mp_key_is(const struct mp_item *k, const char *name)
{
    size_t n = strlen(name);
    return k->k == MP_STR && k->n == n && memcmp(k->s, name, n) == 0;
}

static int mp_number(const struct mp_item *it, double *d)
{
    switch (it->k) {
    case MP_INT:
        *d = (double)it->i;
        return 0;
    case MP_UINT:
        *d = (double)it->u;
        return 0;
    case MP_F32:
    case MP_F64:
        *d = it->d;
        return isfinite(it->d) ? 0 : CEL_EBODY;
    default:
        return CEL_EBODY;
    }
}

static int mp_int64(const struct mp_item *it, int64_t *v)
{
    if (it->k == MP_INT) {
        *v = it->i;
        return 0;
    }
    if (it->k == MP_UINT && it->u <= INT64_MAX) {
        *v = (int64_t)it->u;
        return 0;
    }
    return CEL_EBODY;
}

/* A NUL-terminated arena copy of a msgpack str; an embedded NUL is refused. */
static int mp_str_dup(const struct mp_item *it, struct cel_arena *a, const char **out)
{
    if (it->k != MP_STR || memchr(it->s, 0, it->n) != NULL)
        return CEL_EBODY;
    *out = cel_arena_strndup(a, it->s, it->n);
    return *out ? 0 : CEL_ENOMEM;
}

static int span_dup(struct cel_arena *a, const struct cel_buf *b, struct cel_span *out)
{
    char *p = cel_arena_alloc(a, b->len ? b->len : 1);
    if (p == NULL)
        return CEL_ENOMEM;
    memcpy(p, b->data, b->len);
    *out = (struct cel_span){p, b->len};
    return 0;
}

/* ---- signatures ---- */

struct sig {
    const char *task;
    struct cel_span args;    /* msgpack array */
    struct cel_span kwargs;  /* msgpack map, len 0 = none */
    struct cel_span options; /* msgpack map, len 0 = none */
    const char *subtask_type;
    bool immutable;
};

struct opts {
    const char *task_id, *reply_to, *queue, *group_id, *shadow;
    struct cel_span link, link_error, chain, chord, headers;
    int64_t group_index; /* -1 = none */
    int64_t priority;    /* -1 = none */
    double countdown, time_limit, soft_time_limit;
    int64_t eta, expires; /* us since epoch, 0 = none */
    bool has_countdown, ignore_result;
};

typedef int (*sig_field_fn)(struct mpr *r, struct sig *s, struct cel_arena *a);

static int sig_task(struct mpr *r, struct sig *s, struct cel_arena *a)
{
    struct mp_item it;
    int rc = mpr_next(r, &it);
    return rc < 0 ? rc : mp_str_dup(&it, a, &s->task);
}

/* Reads a value of the given container kind (nil allowed, meaning absent). */
static int mp_container(struct mpr *r, enum mp_kind kind, struct cel_span *out)
{
    struct cel_span v;
    struct mpr peek;
    struct mp_item it;
    int rc = mpr_value(r, &v);
    if (rc < 0)
        return rc;
    peek = mpr_of(v);
    if (mpr_next(&peek, &it) < 0 || (it.k != kind && it.k != MP_NIL))
        return CEL_EBODY;
    *out = it.k == MP_NIL ? (struct cel_span){NULL, 0} : v;
    return 0;
}

static int sig_args(struct mpr *r, struct sig *s, struct cel_arena *a)
{
    return mp_container(r, MP_ARRAY, &s->args);
}

static int sig_kwargs(struct mpr *r, struct sig *s, struct cel_arena *a)
{
    return mp_container(r, MP_MAP, &s->kwargs);
}

static int sig_options(struct mpr *r, struct sig *s, struct cel_arena *a)
{
    return mp_container(r, MP_MAP, &s->options);
}

static int sig_subtask_type(struct mpr *r, struct sig *s, struct cel_arena *a)
{
    struct mp_item it;
    int rc = mpr_next(r, &it);
    if (rc < 0 || it.k == MP_NIL)
        return rc;
    return mp_str_dup(&it, a, &s->subtask_type);
}

static int sig_immutable(struct mpr *r, struct sig *s, struct cel_arena *a)
{
    struct mp_item it;
    int rc = mpr_next(r, &it);
    if (rc < 0 || it.k == MP_NIL)
        return rc;
    if (it.k != MP_BOOL)
        return CEL_EBODY;
    s->immutable = it.b;
    return 0;
}

static const struct {
    const char *key;
    sig_field_fn fn;
} sig_fields[] = {
    {"task", sig_task},
    {"args", sig_args},
    {"kwargs", sig_kwargs},
    {"options", sig_options},
    {"subtask_type", sig_subtask_type},
    {"immutable", sig_immutable},
};

static int sig_field(struct mpr *r, const struct mp_item *key, struct sig *s, struct cel_arena *a)
{
    if (key->k != MP_STR)
        return CEL_EBODY;
    for (size_t k = 0; k < sizeof sig_fields / sizeof sig_fields[0]; k++)
        if (mp_key_is(key, sig_fields[k].key))
            return sig_fields[k].fn(r, s, a);
    return mpr_skip(r);
}

static int sig_parse(struct cel_span raw, struct cel_arena *a, struct sig *s)
{
    struct mpr r = mpr_of(raw);
    struct mp_item it;
    memset(s, 0, sizeof *s);
    if (mpr_next(&r, &it) < 0 || it.k != MP_MAP)
        return CEL_EBODY;
    for (uint32_t k = 0; k < it.n; k++) {
        struct mp_item key;
        int rc = mpr_next(&r, &key);
        if (rc < 0 || (rc = sig_field(&r, &key, s, a)) < 0)
            return rc < 0 ? rc : CEL_EBODY;
    }
    if (s->task == NULL)
        return CEL_EBODY;
    if (s->args.len == 0)
        s->args = CEL_SPAN_LIT("\x90");
    return 0;
}

/* ---- signature options ---- */

/* v is the value's header (scalars complete), raw the whole value's bytes. */
typedef int (*opt_fn)(const struct mp_item *v, struct cel_span raw, struct opts *o,
                      struct cel_arena *a);

static int opt_task_id(const struct mp_item *v, struct cel_span raw, struct opts *o,
                       struct cel_arena *a)
{
    return mp_str_dup(v, a, &o->task_id);
}

static int opt_reply_to(const struct mp_item *v, struct cel_span raw, struct opts *o,
                        struct cel_arena *a)
{
    return mp_str_dup(v, a, &o->reply_to);
}

static int opt_queue(const struct mp_item *v, struct cel_span raw, struct opts *o,
                     struct cel_arena *a)
{
    return mp_str_dup(v, a, &o->queue);
}

static int opt_group_id(const struct mp_item *v, struct cel_span raw, struct opts *o,
                        struct cel_arena *a)
{
    return mp_str_dup(v, a, &o->group_id);
}

static int opt_shadow(const struct mp_item *v, struct cel_span raw, struct opts *o,
                      struct cel_arena *a)
{
    return mp_str_dup(v, a, &o->shadow);
}

static int opt_group_index(const struct mp_item *v, struct cel_span raw, struct opts *o,
                           struct cel_arena *a)
{
    return mp_int64(v, &o->group_index) < 0 || o->group_index < 0 ? CEL_EBODY : 0;
}

static int opt_priority(const struct mp_item *v, struct cel_span raw, struct opts *o,
                        struct cel_arena *a)
{
    if (mp_int64(v, &o->priority) < 0 || o->priority < 0 || o->priority > 255)
        return CEL_EBODY;
    return 0;
}

static int opt_countdown(const struct mp_item *v, struct cel_span raw, struct opts *o,
                         struct cel_arena *a)
{
    o->has_countdown = true;
    if (mp_number(v, &o->countdown) < 0 || o->countdown > 1e12 || o->countdown < -1e12)
        return CEL_EBODY;
    return 0;
}

static int opt_time_limit(const struct mp_item *v, struct cel_span raw, struct opts *o,
                          struct cel_arena *a)
{
    return mp_number(v, &o->time_limit) < 0 || o->time_limit < 0 ? CEL_EBODY : 0;
}

static int opt_soft_time_limit(const struct mp_item *v, struct cel_span raw, struct opts *o,
                               struct cel_arena *a)
{
    return mp_number(v, &o->soft_time_limit) < 0 || o->soft_time_limit < 0 ? CEL_EBODY : 0;
}

static int opt_ignore_result(const struct mp_item *v, struct cel_span raw, struct opts *o,
                             struct cel_arena *a)
{
    if (v->k != MP_BOOL)
        return CEL_EBODY;
    o->ignore_result = v->b;
    return 0;
}

/* An ISO-8601 string, as Celery's JSON encoder writes datetimes. */
static int opt_eta(const struct mp_item *v, struct cel_span raw, struct opts *o,
                   struct cel_arena *a)
{
    if (v->k != MP_STR)
        return CEL_EBODY;
    return cel_iso8601_parse(v->s, v->n, &o->eta) < 0 ? CEL_EBODY : 0;
}

/* Seconds from now (number) or an ISO-8601 time (string), as apply_async accepts. */
static int opt_expires(const struct mp_item *v, struct cel_span raw, struct opts *o,
                       struct cel_arena *a)
{
    double sec;
    if (v->k == MP_STR)
        return cel_iso8601_parse(v->s, v->n, &o->expires) < 0 ? CEL_EBODY : 0;
    if (mp_number(v, &sec) < 0 || sec > 1e12 || sec < -1e12)
        return CEL_EBODY;
    o->expires = cel_now_us() + (int64_t)(sec * 1e6);
    return 0;
}

/* link / link_error: one signature (map) or a list of them. */
static int opt_link(const struct mp_item *v, struct cel_span raw, struct opts *o,
                    struct cel_arena *a)
{
    if (v->k != MP_ARRAY && v->k != MP_MAP)
        return CEL_EBODY;
    o->link = raw;
    return 0;
}

static int opt_link_error(const struct mp_item *v, struct cel_span raw, struct opts *o,
                          struct cel_arena *a)
{
    if (v->k != MP_ARRAY && v->k != MP_MAP)
        return CEL_EBODY;
    o->link_error = raw;
    return 0;
}

static int opt_chain(const struct mp_item *v, struct cel_span raw, struct opts *o,
                     struct cel_arena *a)
{
    if (v->k != MP_ARRAY)
        return CEL_EBODY;
    o->chain = raw;
    return 0;
}

static int opt_chord(const struct mp_item *v, struct cel_span raw, struct opts *o,
                     struct cel_arena *a)
{
    if (v->k != MP_MAP)
        return CEL_EBODY;
    o->chord = raw;
    return 0;
}

static int opt_headers(const struct mp_item *v, struct cel_span raw, struct opts *o,
                       struct cel_arena *a)
{
    if (v->k != MP_MAP)
        return CEL_EBODY;
    o->headers = raw;
    return 0;
}

static const struct {
    const char *key;
    opt_fn fn;
} opt_table[] = {
    {"task_id", opt_task_id},
    {"reply_to", opt_reply_to},
    {"queue", opt_queue},
    {"group_id", opt_group_id},
    {"group_index", opt_group_index},
    {"shadow", opt_shadow},
    {"priority", opt_priority},
    {"countdown", opt_countdown},
    {"eta", opt_eta},
    {"expires", opt_expires},
    {"time_limit", opt_time_limit},
    {"soft_time_limit", opt_soft_time_limit},
    {"ignore_result", opt_ignore_result},
    {"link", opt_link},
    {"link_error", opt_link_error},
    {"chain", opt_chain},
    {"chord", opt_chord},
    {"headers", opt_headers},
};
#define OPT_N (sizeof opt_table / sizeof opt_table[0])

/* One option value; nil means absent, unknown options are skipped. */
static int opt_one(struct mpr *r, const struct mp_item *key, struct opts *o, struct cel_arena *a)
{
    struct mpr peek = *r;
    struct mp_item v;
    struct cel_span raw;
    size_t k = 0;
    int rc = mpr_next(&peek, &v);
    if (rc < 0 || (rc = mpr_value(r, &raw)) < 0)
        return rc;
    while (k < OPT_N && !mp_key_is(key, opt_table[k].key))
        k++;
    if (k == OPT_N || v.k == MP_NIL)
        return 0;
    return opt_table[k].fn(&v, raw, o, a);
}

static int opts_parse(struct cel_span raw, struct cel_arena *a, struct opts *o)
{
    struct mpr r = mpr_of(raw);
    struct mp_item it;
    memset(o, 0, sizeof *o);
    o->group_index = -1;
    o->priority = -1;
    if (raw.len == 0)
        return 0;
    if (mpr_next(&r, &it) < 0 || it.k != MP_MAP)
        return CEL_EBODY;
    for (uint32_t n = 0; n < it.n; n++) {
        struct mp_item key;
        int rc = mpr_next(&r, &key);
        if (rc < 0 || key.k != MP_STR)
            return CEL_EBODY;
        if ((rc = opt_one(&r, &key, o, a)) < 0)
            return rc;
    }
    return 0;
}

/* ---- options.headers -> extra AMQP headers ---- */

#define HDR_MAX_DEPTH 16

static const char *const std_headers[] = {
    "lang",     "task",        "id",      "shadow",        "eta",     "expires",
    "group",    "group_index", "retries", "timelimit",     "root_id", "parent_id",
    "argsrepr", "kwargsrepr",  "origin",  "ignore_result",
};

static bool hdr_is_std(const struct mp_item *key)
{
    for (size_t k = 0; k < sizeof std_headers / sizeof std_headers[0]; k++)
        if (mp_key_is(key, std_headers[k]))
            return true;
    return false;
}

static int hv_convert(struct mpr *r, struct cel_arena *a, struct cel_value *out, int depth);

static int hv_array(struct mpr *r, struct cel_arena *a, uint32_t n, struct cel_value *out,
                    int depth)
{
    if (n > (size_t)(r->end - r->p))
        return CEL_EBODY;
    out->type = CEL_V_ARRAY;
    out->u.a.n = n;
    out->u.a.items = cel_arena_calloc(a, (n ? n : 1) * sizeof(struct cel_value));
    if (out->u.a.items == NULL)
        return CEL_ENOMEM;
    for (uint32_t k = 0; k < n; k++) {
        int rc = hv_convert(r, a, &out->u.a.items[k], depth + 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int hv_table(struct mpr *r, struct cel_arena *a, uint32_t n, struct cel_table *t, int depth,
                    bool skip_std)
{
    if (n > (size_t)(r->end - r->p))
        return CEL_EBODY;
    t->n = 0;
    t->items = cel_arena_calloc(a, (n ? n : 1) * sizeof(struct cel_field));
    if (t->items == NULL)
        return CEL_ENOMEM;
    for (uint32_t k = 0; k < n; k++) {
        struct mp_item key;
        int rc = mpr_next(r, &key);
        if (rc < 0 || key.k != MP_STR)
            return CEL_EBODY;
        if (skip_std && hdr_is_std(&key)) {
            if ((rc = mpr_skip(r)) < 0)
                return rc;
            continue;
        }
        t->items[t->n].key = (struct cel_span){key.s, key.n};
        if ((rc = hv_convert(r, a, &t->items[t->n].v, depth + 1)) < 0)
            return rc;
        t->n++;
    }
    return 0;
}

static int hv_scalar(const struct mp_item *it, struct cel_value *out)
{
    switch (it->k) {
    case MP_NIL:
        out->type = CEL_V_VOID;
        return 0;
    case MP_BOOL:
        out->type = CEL_V_BOOL;
        out->u.b = it->b;
        return 0;
    case MP_INT:
        *out = cel_value_int(it->i);
        return 0;
    case MP_UINT:
        out->type = it->u <= INT64_MAX ? CEL_V_INT : CEL_V_UINT;
        out->u.u = it->u;
        return 0;
    case MP_F32:
    case MP_F64:
        out->type = CEL_V_DOUBLE;
        out->u.d = it->d;
        return 0;
    case MP_STR:
        *out = cel_value_str(it->s, it->n);
        return 0;
    case MP_BIN:
        out->type = CEL_V_BYTES;
        out->u.s = (struct cel_span){it->s, it->n};
        return 0;
    default:
        return CEL_EBODY;
    }
}

static int hv_convert(struct mpr *r, struct cel_arena *a, struct cel_value *out, int depth)
{
    struct mp_item it;
    int rc = mpr_next(r, &it);
    if (rc < 0 || depth > HDR_MAX_DEPTH)
        return CEL_EBODY;
    if (it.k == MP_ARRAY)
        return hv_array(r, a, it.n, out, depth);
    if (it.k == MP_MAP) {
        out->type = CEL_V_TABLE;
        struct cel_table t;
        rc = hv_table(r, a, it.n, &t, depth, false);
        out->u.t.items = t.items;
        out->u.t.n = t.n;
        return rc;
    }
    return hv_scalar(&it, out);
}

static int headers_table(struct cel_span raw, struct cel_arena *a, struct cel_table *t)
{
    struct mpr r = mpr_of(raw);
    struct mp_item it;
    *t = (struct cel_table){NULL, 0};
    if (raw.len == 0)
        return 0;
    if (mpr_next(&r, &it) < 0 || it.k != MP_MAP)
        return CEL_EBODY;
    return hv_table(&r, a, it.n, t, 0, true);
}

/* ---- building messages ---- */

/* n msgpack values concatenated: the arguments prepended to a signature's own. */
struct prefix {
    struct cel_span raw;
    uint32_t n;
};

struct ctx {
    const struct cel_task *done;
    const char *origin;
    struct cel_arena *a;
    const char *root_id;
    const char *group; /* forced group id (errbacks), else NULL */
    struct cel__outbox *out;
};

void cel__outbox_init(struct cel__outbox *o)
{
    *o = (struct cel__outbox){NULL, 0, 0};
}

static int outbox_push(struct cel__outbox *o, struct cel_arena *a, struct cel__outmsg **m)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 4;
        struct cel__outmsg *items = cel_arena_alloc(a, cap * sizeof *items);
        if (items == NULL)
            return CEL_ENOMEM;
        if (o->n)
            memcpy(items, o->items, o->n * sizeof *items);
        o->items = items;
        o->cap = cap;
    }
    *m = &o->items[o->n++];
    memset(*m, 0, sizeof **m);
    return 0;
}

static int pack_array_hdr(struct cel_buf *b, uint64_t n)
{
    msgpack_packer pk;
    if (n > UINT32_MAX)
        return CEL_ETOOBIG;
    msgpack_packer_init(&pk, b, cel_buf_msgpack_write);
    return msgpack_pack_array(&pk, (size_t)n) < 0 ? CEL_ENOMEM : 0;
}

static int pack_str(struct cel_buf *b, const char *s)
{
    msgpack_packer pk;
    size_t n = strlen(s);
    msgpack_packer_init(&pk, b, cel_buf_msgpack_write);
    if (msgpack_pack_str(&pk, n) < 0 || msgpack_pack_str_body(&pk, s, n) < 0)
        return CEL_ENOMEM;
    return 0;
}

/* [pre..., sig args...] unless the signature is immutable. */
static int build_args(struct cel_arena *a, const struct sig *s, struct prefix pre,
                      struct cel_span *out)
{
    struct cel_buf b = CEL_BUF_INIT;
    struct cel_span items;
    uint32_t n;
    int rc = mp_array_of(s->args, &n, &items);
    if (rc < 0 || s->immutable || pre.n == 0) {
        *out = s->args;
        return rc;
    }
    if ((rc = pack_array_hdr(&b, (uint64_t)n + pre.n)) == 0 &&
        (rc = cel_buf_append(&b, pre.raw.ptr, pre.raw.len)) == 0 &&
        (rc = cel_buf_append(&b, items.ptr, items.len)) == 0)
        rc = span_dup(a, &b, out);
    cel_buf_free(&b);
    return rc;
}

/* link/link_error may hold one signature (a map): wrap it into a list. */
static int sig_list(struct cel_arena *a, struct cel_span raw, struct cel_span *out)
{
    struct cel_buf b = CEL_BUF_INIT;
    int rc;
    if (raw.len == 0 || ((unsigned char)raw.ptr[0] & 0xf0) == 0x90 ||
        (unsigned char)raw.ptr[0] == 0xdc || (unsigned char)raw.ptr[0] == 0xdd) {
        *out = raw;
        return 0;
    }
    if ((rc = pack_array_hdr(&b, 1)) == 0 && (rc = cel_buf_append(&b, raw.ptr, raw.len)) == 0)
        rc = span_dup(a, &b, out);
    cel_buf_free(&b);
    return rc;
}

static const char *default_queue(struct cel_arena *a, const char *task)
{
    const char *dot = strchr(task, '.');
    return dot && dot != task ? cel_arena_strndup(a, task, (size_t)(dot - task)) : task;
}

static int new_id(struct cel_arena *a, const char **id)
{
    char *p = cel_arena_alloc(a, 37);
    if (p == NULL)
        return CEL_ENOMEM;
    cel_uuid4(p);
    *id = p;
    return 0;
}

static uint32_t delay_of(int64_t eta, int64_t now)
{
    int64_t d;
    if (eta <= now)
        return 0;
    d = (eta - now + CEL_USEC_PER_SEC - 1) / CEL_USEC_PER_SEC;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

/* eta header and broker delay from countdown (which wins, as in apply_async) or eta. */
static void msg_times(struct cel__outmsg *m, const struct opts *o)
{
    int64_t now = cel_now_us();
    int64_t eta = o->eta;
    if (o->has_countdown)
        eta = o->countdown > 0 ? now + (int64_t)(o->countdown * 1e6) : 0;
    m->task.eta = eta;
    m->task.expires = o->expires;
    m->delay_s = delay_of(eta, now);
}

static int msg_embed(struct ctx *c, struct cel_task *t, const struct opts *o,
                     const struct cel_span *chain)
{
    int rc = sig_list(c->a, o->link, &t->callbacks);
    if (rc == 0)
        rc = sig_list(c->a, o->link_error, &t->errbacks);
    t->chain = chain ? *chain : o->chain;
    t->chord = o->chord;
    return rc;
}

static void msg_headers(struct ctx *c, struct cel_task *t, const struct sig *s,
                        const struct opts *o)
{
    t->task = s->task;
    t->shadow = o->shadow;
    t->group = c->group ? c->group : o->group_id;
    t->group_index = c->group ? -1 : o->group_index;
    t->time_limit = o->time_limit;
    t->soft_time_limit = o->soft_time_limit;
    t->root_id = c->root_id;
    t->parent_id = c->done->id;
    t->origin = c->origin;
    t->ignore_result = o->ignore_result;
    t->kwargs = s->kwargs.len ? s->kwargs : CEL_SPAN_LIT("\x80");
    t->format = c->done->format;
    t->props.reply_to = o->reply_to;
    t->props.has_priority = o->priority >= 0;
    t->props.priority = o->priority >= 0 ? (uint8_t)o->priority : 0;
}

/* One plain signature as a message: chain, when given, replaces options.chain. */
static int emit_plain(struct ctx *c, const struct sig *s, const struct opts *o, struct prefix pre,
                      const struct cel_span *chain)
{
    struct cel__outmsg *m;
    int rc = outbox_push(c->out, c->a, &m);
    if (rc < 0)
        return rc;
    cel_task_init(&m->task);
    msg_headers(c, &m->task, s, o);
    msg_times(m, o);
    m->queue = o->queue ? o->queue : default_queue(c->a, s->task);
    m->task.id = o->task_id;
    if (m->queue == NULL || (m->task.id == NULL && (rc = new_id(c->a, &m->task.id)) < 0))
        return m->queue == NULL ? CEL_ENOMEM : rc;
    if ((rc = build_args(c->a, s, pre, &m->task.args)) < 0 ||
        (rc = msg_embed(c, &m->task, o, chain)) < 0)
        return rc;
    return headers_table(o->headers, c->a, &m->task.extra);
}

/* ---- nested chains ---- */

/* Copies a signature map, adding options.task_id = id when it has none, so every element of
 * a chain has the id the failure path marks and the client may wait on. */
static int freeze_options(struct cel_span raw, const char *id, struct cel_buf *b)
{
    struct mpr r = mpr_of(raw);
    struct mp_item it = {0};
    struct cel_buf body = CEL_BUF_INIT;
    msgpack_packer pk;
    uint32_t kept = 0;
    int rc = 0;
    if (raw.len && (mpr_next(&r, &it) < 0 || it.k != MP_MAP))
        return CEL_EBODY;
    for (uint32_t k = 0; k < it.n && rc == 0; k++) {
        const unsigned char *start = r.p;
        struct mp_item key, v;
        struct mpr peek;
        if (mpr_next(&r, &key) < 0 || (peek = r, mpr_next(&peek, &v)) < 0 || mpr_skip(&r) < 0) {
            rc = CEL_EBODY;
            break;
        }
        if (mp_key_is(&key, "task_id") && v.k == MP_NIL)
            continue; /* replaced below */
        if (mp_key_is(&key, "task_id"))
            id = NULL; /* already frozen */
        rc = cel_buf_append(&body, start, (size_t)(r.p - start));
        kept++;
    }
    msgpack_packer_init(&pk, b, cel_buf_msgpack_write);
    if (rc == 0)
        rc = msgpack_pack_map(&pk, kept + (id != NULL)) < 0 ? CEL_ENOMEM : 0;
    if (rc == 0)
        rc = cel_buf_append(b, body.data ? body.data : "", body.len);
    if (rc == 0 && id && (rc = pack_str(b, "task_id")) == 0)
        rc = pack_str(b, id);
    cel_buf_free(&body);
    return rc;
}

static int freeze_sig(struct cel_span raw, const char *id, struct cel_buf *b)
{
    struct mpr r = mpr_of(raw);
    struct mp_item it, key;
    struct cel_span opt = {NULL, 0};
    struct cel_buf rest = CEL_BUF_INIT;
    uint32_t kept = 0;
    int rc = 0;
    msgpack_packer pk;
    if (mpr_next(&r, &it) < 0 || it.k != MP_MAP)
        return CEL_EBODY;
    for (uint32_t k = 0; k < it.n && rc == 0; k++) {
        const unsigned char *start = r.p;
        struct cel_span v;
        if (mpr_next(&r, &key) < 0 || mpr_value(&r, &v) < 0)
            rc = CEL_EBODY;
        else if (mp_key_is(&key, "options"))
            opt = mp_is_nil(v) ? (struct cel_span){NULL, 0} : v;
        else
            rc = cel_buf_append(&rest, start, (size_t)(r.p - start)), kept++;
    }
    msgpack_packer_init(&pk, b, cel_buf_msgpack_write);
    if (rc == 0 && (rc = msgpack_pack_map(&pk, kept + 1) < 0 ? CEL_ENOMEM : 0) == 0 &&
        (rc = cel_buf_append(b, rest.data, rest.len)) == 0 && (rc = pack_str(b, "options")) == 0)
        rc = freeze_options(opt, id, b);
    cel_buf_free(&rest);
    return rc;
}

/* The value of kwargs["tasks"] of a chain signature. */
static int chain_tasks(const struct sig *s, struct cel_span *tasks)
{
    struct mpr r = mpr_of(s->kwargs);
    struct mp_item it, key;
    if (s->kwargs.len == 0 || mpr_next(&r, &it) < 0 || it.k != MP_MAP)
        return CEL_EBODY;
    for (uint32_t k = 0; k < it.n; k++) {
        struct cel_span v;
        if (mpr_next(&r, &key) < 0 || mpr_value(&r, &v) < 0)
            return CEL_EBODY;
        if (mp_key_is(&key, "tasks")) {
            *tasks = v;
            return 0;
        }
    }
    return CEL_EBODY;
}

/* The spans of an array's n elements, in the arena. */
static int array_items(struct cel_arena *a, struct cel_span arr, struct cel_span **items,
                       uint32_t *n)
{
    struct cel_span body;
    struct mpr r;
    int rc = mp_array_of(arr, n, &body);
    if (rc < 0 || *n > body.len)
        return CEL_EBODY;
    *items = cel_arena_alloc(a, (*n ? *n : 1) * sizeof **items);
    if (*items == NULL)
        return CEL_ENOMEM;
    r = mpr_of(body);
    for (uint32_t k = 0; k < *n; k++)
        if ((rc = mpr_value(&r, &(*items)[k])) < 0)
            return rc;
    return 0;
}

/* [outer remaining..., tasks[n-1]..., tasks[1]] with frozen ids (the last one the chain's). */
static int chain_rest(struct cel_arena *a, const struct cel_span *tasks, uint32_t n,
                      const char *chain_id, const struct cel_span *outer, struct cel_span *out)
{
    struct cel_buf b = CEL_BUF_INIT;
    struct cel_span oitems = {"", 0};
    uint32_t on = 0;
    int rc = outer && outer->len ? mp_array_of(*outer, &on, &oitems) : 0;
    if (rc == 0 && (rc = pack_array_hdr(&b, (uint64_t)on + n - 1)) == 0)
        rc = cel_buf_append(&b, oitems.ptr, oitems.len);
    for (uint32_t k = n - 1; rc == 0 && k >= 1; k--) {
        const char *id = k == n - 1 ? chain_id : NULL;
        char fresh[37];
        if (id == NULL)
            cel_uuid4(fresh);
        rc = freeze_sig(tasks[k], id ? id : fresh, &b);
    }
    if (rc == 0)
        rc = span_dup(a, &b, out);
    cel_buf_free(&b);
    return rc;
}

/* Prefix for the first task of a nested chain: outer prefix (unless immutable) + chain args. */
static int chain_prefix(struct cel_arena *a, const struct sig *s, struct prefix pre,
                        struct prefix *out)
{
    struct cel_buf b = CEL_BUF_INIT;
    struct cel_span items;
    uint32_t n;
    int rc = mp_array_of(s->args, &n, &items);
    if (s->immutable)
        pre = (struct prefix){{"", 0}, 0};
    if (rc == 0 && (rc = cel_buf_append(&b, pre.raw.ptr, pre.raw.len)) == 0 &&
        (rc = cel_buf_append(&b, items.ptr, items.len)) == 0)
        rc = span_dup(a, &b, &out->raw);
    out->n = pre.n + n;
    cel_buf_free(&b);
    return rc;
}

static bool is_canvas_type(const char *t)
{
    static const char *const types[] = {"chain", "group", "chord"};
    for (size_t k = 0; t && k < sizeof types / sizeof types[0]; k++)
        if (strcmp(t, types[k]) == 0)
            return true;
    return false;
}

/* A chain signature (subtask_type 'chain'): its first task is published with the rest as its
 * chain. Options that would need the chain re-shaped (link, link_error, chord, group) and
 * nested canvases inside it are not supported. */
static int emit_chain(struct ctx *c, const struct sig *s, const struct opts *o, struct prefix pre,
                      const struct cel_span *outer)
{
    struct cel_span tasks, *items, rest;
    struct sig first;
    struct opts fo;
    struct prefix fp = {{"", 0}, 0};
    uint32_t n;
    int rc = chain_tasks(s, &tasks);
    if (rc < 0 || (rc = array_items(c->a, tasks, &items, &n)) < 0)
        return rc;
    if (n == 0)
        return CEL_EBODY;
    if (o->link.len || o->link_error.len || o->chord.len || o->group_id)
        return CEL_EUNSUPPORTED;
    if ((rc = sig_parse(items[0], c->a, &first)) < 0 ||
        (rc = opts_parse(first.options, c->a, &fo)) < 0)
        return rc;
    if (is_canvas_type(first.subtask_type))
        return CEL_EUNSUPPORTED;
    if (n == 1 && fo.task_id == NULL)
        fo.task_id = o->task_id;
    if ((rc = chain_rest(c->a, items, n, o->task_id, outer, &rest)) < 0 ||
        (rc = chain_prefix(c->a, s, pre, &fp)) < 0)
        return rc;
    return emit_plain(c, &first, &fo, fp, &rest);
}

/* One signature: plain (including Celery's own tasks like celery.chunks), or a nested chain.
 * Groups and chords as callbacks are not supported (and Celery 5.2.6 cannot even serialize a
 * group with msgpack, spec 4.5). */
static int emit_sig(struct ctx *c, struct cel_span raw, struct prefix pre,
                    const struct cel_span *chain)
{
    struct sig s;
    struct opts o;
    int rc = sig_parse(raw, c->a, &s);
    if (rc < 0 || (rc = opts_parse(s.options, c->a, &o)) < 0)
        return rc;
    if (!is_canvas_type(s.subtask_type))
        return emit_plain(c, &s, &o, pre, chain);
    if (strcmp(s.subtask_type, "chain") == 0)
        return emit_chain(c, &s, &o, pre, chain);
    return CEL_EUNSUPPORTED;
}

static int emit_list(struct ctx *c, struct cel_span list, struct prefix pre)
{
    struct cel_span body;
    struct mpr r;
    uint32_t n;
    int rc;
    if (mp_is_nil(list))
        return 0;
    if ((rc = mp_array_of(list, &n, &body)) < 0)
        return rc;
    r = mpr_of(body);
    for (uint32_t k = 0; k < n; k++) {
        struct cel_span sig;
        if ((rc = mpr_value(&r, &sig)) < 0 || (rc = emit_sig(c, sig, pre, NULL)) < 0)
            return rc;
    }
    return 0;
}

/* Pops the last chain element; the elements before it stay contiguous, so the remaining chain
 * is a new array header followed by their bytes. */
static int emit_chain_next(struct ctx *c, struct prefix pre)
{
    struct cel_span body, last = {NULL, 0}, rest;
    struct cel_buf b = CEL_BUF_INIT;
    struct mpr r;
    uint32_t n;
    int rc;
    if (mp_is_nil(c->done->chain))
        return 0;
    if ((rc = mp_array_of(c->done->chain, &n, &body)) < 0 || n == 0)
        return rc;
    r = mpr_of(body);
    for (uint32_t k = 0; k < n; k++)
        if ((rc = mpr_value(&r, &last)) < 0)
            return rc;
    if ((rc = pack_array_hdr(&b, n - 1)) == 0 &&
        (rc = cel_buf_append(&b, body.ptr, (size_t)(last.ptr - body.ptr))) == 0)
        rc = span_dup(c->a, &b, &rest);
    cel_buf_free(&b);
    return rc < 0 ? rc : emit_sig(c, last, pre, &rest);
}

static int pack_children(const struct cel__outbox *out, size_t first, struct cel_buf *children)
{
    msgpack_packer pk;
    int rc = pack_array_hdr(children, out->n - first);
    msgpack_packer_init(&pk, children, cel_buf_msgpack_write);
    for (size_t k = first; rc == 0 && k < out->n; k++) {
        if (msgpack_pack_array(&pk, 2) < 0 || msgpack_pack_array(&pk, 2) < 0)
            return CEL_ENOMEM;
        if ((rc = pack_str(children, out->items[k].task.id)) == 0 &&
            (msgpack_pack_nil(&pk) < 0 || msgpack_pack_nil(&pk) < 0))
            rc = CEL_ENOMEM;
    }
    return rc;
}

/* An outbox with n == 0 holds nothing yet: it is (re)initialised, so a caller that only set n
 * does not hand us a garbage items/cap. */
static struct ctx ctx_make(const struct cel_task *done, const char *origin, struct cel_arena *a,
                           struct cel__outbox *out)
{
    if (out->n == 0)
        cel__outbox_init(out);
    return (struct ctx){done, origin, a, done->root_id ? done->root_id : done->id, NULL, out};
}

int cel__canvas_success(const struct cel_task *done, struct cel_span retval, const char *origin,
                        struct cel_arena *a, struct cel__outbox *out, struct cel_buf *children)
{
    struct ctx c = ctx_make(done, origin, a, out);
    struct prefix pre = {retval.len ? retval : CEL_SPAN_LIT("\xc0"), 1};
    size_t first = out->n;
    int rc = emit_list(&c, done->callbacks, pre);
    if (rc == 0)
        rc = emit_chain_next(&c, pre);
    return rc < 0 ? rc : pack_children(out, first, children);
}

/* The options.task_id of every remaining chain element. */
static int chain_ids(const struct cel_task *done, struct cel_arena *a, const char ***ids,
                     size_t *n_ids)
{
    struct cel_span *items;
    uint32_t n;
    int rc;
    *ids = NULL;
    *n_ids = 0;
    if (mp_is_nil(done->chain))
        return 0;
    if ((rc = array_items(a, done->chain, &items, &n)) < 0)
        return rc;
    *ids = cel_arena_alloc(a, (n ? n : 1) * sizeof **ids);
    if (*ids == NULL)
        return CEL_ENOMEM;
    for (uint32_t k = 0; k < n; k++) {
        struct sig s;
        struct opts o;
        if ((rc = sig_parse(items[k], a, &s)) < 0 || (rc = opts_parse(s.options, a, &o)) < 0)
            return rc;
        if (o.task_id)
            (*ids)[(*n_ids)++] = o.task_id;
    }
    return 0;
}

int cel__canvas_failure(const struct cel_task *done, const struct cel_exc *exc, const char *origin,
                        struct cel_arena *a, struct cel__outbox *out, const char ***ids,
                        size_t *n_ids)
{
    struct ctx c = ctx_make(done, origin, a, out);
    struct cel_buf b = CEL_BUF_INIT;
    struct prefix pre = {{NULL, 0}, 1};
    int rc = pack_str(&b, done->id);
    if (rc == 0)
        rc = span_dup(a, &b, &pre.raw);
    cel_buf_free(&b);
    if (rc == 0 && !mp_is_nil(done->errbacks))
        rc = new_id(a, &c.group);
    if (rc == 0)
        rc = emit_list(&c, done->errbacks, pre);
    return rc < 0 ? rc : chain_ids(done, a, ids, n_ids);
}

/* ---- chords ---- */

int cel__canvas_chord_entry(const char *task_id, const char *state, struct cel_span result,
                            struct cel_buf *out)
{
    msgpack_packer pk;
    int rc;
    msgpack_packer_init(&pk, out, cel_buf_msgpack_write);
    if (msgpack_pack_array(&pk, 4) < 0 || msgpack_pack_int(&pk, 1) < 0)
        return CEL_ENOMEM;
    if ((rc = pack_str(out, task_id)) < 0 || (rc = pack_str(out, state)) < 0)
        return rc;
    if (result.len == 0)
        return msgpack_pack_nil(&pk) < 0 ? CEL_ENOMEM : 0;
    return cel_buf_append(out, result.ptr, result.len);
}

/* No truncation: the ChordError message carries the whole repr, as Python's {!r} does. */
#define REPR_MAX ((size_t)1 << 30)

/* Appends a ", "-separated repr of each element of an exc_message array (or of a scalar). */
static int repr_args(struct cel_span msg, struct cel_buf *out)
{
    struct cel_span body;
    struct mpr r;
    uint32_t n;
    int rc;
    if (mp_array_of(msg, &n, &body) < 0)
        return cel_msgpack_repr(msg, REPR_MAX, out);
    r = mpr_of(body);
    for (uint32_t k = 0; k < n; k++) {
        struct cel_span v;
        if ((rc = mpr_value(&r, &v)) < 0 || (k && (rc = cel_buf_puts(out, ", ")) < 0) ||
            (rc = cel_msgpack_repr(v, REPR_MAX, out)) < 0)
            return rc;
    }
    return 0;
}

/* Python repr() of the exception an exception dict describes: Type(arg, ...). */
static int exc_repr(struct cel_span v, struct cel_buf *out)
{
    struct mpr r = mpr_of(v);
    struct mp_item it, key, type = {0};
    struct cel_span msg = CEL_SPAN_LIT("\x90");
    int rc;
    if (mpr_next(&r, &it) < 0 || it.k != MP_MAP)
        return cel_msgpack_repr(v, REPR_MAX, out);
    for (uint32_t k = 0; k < it.n; k++) {
        struct mpr peek;
        struct cel_span val;
        if (mpr_next(&r, &key) < 0 || (peek = r, mpr_value(&r, &val)) < 0)
            return CEL_EBODY;
        if (mp_key_is(&key, "exc_type") && mpr_next(&peek, &type) < 0)
            return CEL_EBODY;
        if (mp_key_is(&key, "exc_message"))
            msg = val;
    }
    if (type.k != MP_STR)
        return cel_msgpack_repr(v, REPR_MAX, out);
    if ((rc = cel_buf_append(out, type.s, type.n)) < 0 || (rc = cel_buf_puts(out, "(")) < 0 ||
        (rc = repr_args(msg, out)) < 0)
        return rc;
    return cel_buf_puts(out, ")");
}

struct chord_entry {
    const char *tid;
    const char *state;
    struct cel_span value;
};

/* A JSON entry (a chord whose parts use the JSON result serializer) is converted first. */
static int entry_bytes(struct cel_span member, struct cel_arena *a, struct cel_span *mp)
{
    struct cel_buf b = CEL_BUF_INIT;
    char err[128];
    int rc;
    if (member.len == 0 || member.ptr[0] != '[') {
        *mp = member;
        return 0;
    }
    rc = cel_json_to_msgpack(member.ptr, member.len, &cel_default_limits, &b, err, sizeof err);
    if (rc == 0)
        rc = span_dup(a, &b, mp);
    cel_buf_free(&b);
    return rc < 0 ? CEL_EBODY : 0;
}

static int entry_decode(struct cel_span member, struct cel_arena *a, struct chord_entry *e)
{
    struct mpr r;
    struct mp_item it, tid, state;
    struct cel_span mp = {NULL, 0};
    int rc = entry_bytes(member, a, &mp);
    if (rc < 0)
        return rc;
    r = mpr_of(mp);
    if (mpr_next(&r, &it) < 0 || it.k != MP_ARRAY || it.n != 4 || mpr_skip(&r) < 0 ||
        mpr_next(&r, &tid) < 0 || mpr_next(&r, &state) < 0 || mpr_value(&r, &e->value) < 0 ||
        r.p != r.end)
        return CEL_EBODY;
    if ((rc = mp_str_dup(&tid, a, &e->tid)) < 0)
        return rc;
    return mp_str_dup(&state, a, &e->state);
}

static int chord_error(const struct chord_entry *e, struct cel_arena *a, struct cel_exc **err_exc)
{
    struct cel_buf msg = CEL_BUF_INIT, args = CEL_BUF_INIT;
    struct cel_exc *x = cel_arena_calloc(a, sizeof *x);
    int rc = x ? cel_buf_printf(&msg, "Dependency %s raised ", e->tid) : CEL_ENOMEM;
    if (rc == 0 && (rc = exc_repr(e->value, &msg)) == 0 && (rc = pack_array_hdr(&args, 1)) == 0 &&
        (rc = pack_str(&args, msg.data)) == 0 && (rc = span_dup(a, &args, &x->args)) == 0) {
        x->type = "ChordError";
        x->module = "celery.exceptions";
        x->message = cel_arena_strdup(a, msg.data);
        rc = x->message ? 0 : CEL_ENOMEM;
        *err_exc = x;
    }
    cel_buf_free(&msg);
    cel_buf_free(&args);
    return rc;
}

static bool state_propagates(const char *state)
{
    return strcmp(state, CEL_STATE_FAILURE) == 0 || strcmp(state, CEL_STATE_REVOKED) == 0;
}

/* The part results as one msgpack array, or the first failed entry in *failed. */
static int chord_results(struct cel_span parts, struct cel_arena *a, struct cel_buf *results,
                         struct chord_entry *failed, bool *has_failed)
{
    struct cel_span body;
    struct mpr r;
    uint32_t n;
    int rc = mp_array_of(parts, &n, &body);
    if (rc < 0 || (rc = pack_array_hdr(results, n)) < 0)
        return rc;
    r = mpr_of(body);
    for (uint32_t k = 0; k < n; k++) {
        struct mp_item m;
        struct chord_entry e;
        if (mpr_next(&r, &m) < 0 || (m.k != MP_STR && m.k != MP_BIN))
            return CEL_EBODY;
        if ((rc = entry_decode((struct cel_span){m.s, m.n}, a, &e)) < 0)
            return rc;
        if (state_propagates(e.state)) {
            *failed = e;
            *has_failed = true;
            return 0;
        }
        if ((rc = cel_buf_append(results, e.value.ptr, e.value.len)) < 0)
            return rc;
    }
    return 0;
}

int cel__canvas_chord_body(const struct cel_task *done, struct cel_span parts, const char *origin,
                           struct cel_arena *a, struct cel__outmsg **body, const char **body_id,
                           struct cel_exc **err_exc)
{
    struct cel_buf results = CEL_BUF_INIT;
    struct cel__outbox out = {NULL, 0, 0};
    struct ctx c = ctx_make(done, origin, a, &out);
    struct chord_entry failed;
    bool has_failed = false;
    struct sig s;
    struct opts o;
    int rc;
    *body = NULL;
    *body_id = NULL;
    *err_exc = NULL;
    if (mp_is_nil(done->chord))
        return CEL_EBODY;
    if ((rc = sig_parse(done->chord, a, &s)) < 0 || (rc = opts_parse(s.options, a, &o)) < 0)
        return rc;
    *body_id = o.task_id;
    rc = chord_results(parts, a, &results, &failed, &has_failed);
    if (rc == 0 && has_failed)
        rc = chord_error(&failed, a, err_exc);
    else if (rc == 0) {
        struct prefix pre = {cel_buf_span(&results), 1};
        if ((rc = emit_sig(&c, done->chord, pre, NULL)) == 0 && out.n == 1)
            *body = &out.items[0];
    }
    cel_buf_free(&results);
    return rc;
}

int cel__canvas_chord_entry_fmt(const char *task_id, const char *state, struct cel_span result,
                                enum cel_format fmt, struct cel_buf *out)
{
    struct cel_buf mp = CEL_BUF_INIT;
    int rc;
    if (fmt == CEL_FMT_MSGPACK)
        return cel__canvas_chord_entry(task_id, state, result, out);
    rc = cel__canvas_chord_entry(task_id, state, result, &mp);
    if (rc == 0)
        rc = cel_msgpack_to_json(cel_buf_span(&mp), out);
    cel_buf_free(&mp);
    return rc;
}

/* Celery's chord_error_from_stack: the body's link_error signatures are called as errbacks of
 * the body's id (spec 4.2), i.e. as if the body itself had failed. */
int cel__canvas_chord_errbacks(const struct cel_task *done, const char *origin, struct cel_arena *a,
                               struct cel__outbox *out)
{
    struct cel_task body;
    struct sig s;
    struct opts o;
    const char **ids;
    size_t n_ids;
    int rc;
    if (mp_is_nil(done->chord))
        return CEL_EBODY;
    if ((rc = sig_parse(done->chord, a, &s)) < 0 || (rc = opts_parse(s.options, a, &o)) < 0)
        return rc;
    if (o.task_id == NULL || o.link_error.len == 0)
        return 0;
    cel_task_init(&body);
    body.task = s.task;
    body.id = o.task_id;
    body.root_id = done->root_id ? done->root_id : done->id;
    body.format = done->format;
    if ((rc = sig_list(a, o.link_error, &body.errbacks)) < 0)
        return rc;
    return cel__canvas_failure(&body, NULL, origin, a, out, &ids, &n_ids);
}
