/* result.c: Celery task meta (celery-task-meta-<id>) as the Redis backend writes and reads it,
 * in msgpack or JSON, with exceptions as {exc_type, exc_message, exc_module}. */
#include "common/result.h"

#include <string.h>

#include "common/clock.h"
#include "common/json.h"

int cel_state_ready(const char *status)
{
    return status && (!strcmp(status, CEL_STATE_SUCCESS) || !strcmp(status, CEL_STATE_FAILURE) ||
                      !strcmp(status, CEL_STATE_REVOKED));
}

static int exception_state(const char *status)
{
    return status && (!strcmp(status, CEL_STATE_RETRY) || !strcmp(status, CEL_STATE_FAILURE) ||
                      !strcmp(status, CEL_STATE_REVOKED));
}

static int put_key(struct cel_buf *b, const char *k)
{
    return cel__mp_put_str(b, k, strlen(k));
}

static int put_raw_or(struct cel_buf *b, struct cel_span s, int (*dflt)(struct cel_buf *))
{
    return s.len ? cel_buf_append(b, s.ptr, s.len) : dflt(b);
}

static int put_empty_array(struct cel_buf *b)
{
    return cel__mp_put_array(b, 0);
}

int cel_exc_pack(const struct cel_exc *e, struct cel_buf *out)
{
    int rc = cel__mp_put_map(out, 3);
    if (rc || (rc = put_key(out, "exc_type")) ||
        (rc = cel__mp_put_cstr(out, e->type ? e->type : "Exception")) ||
        (rc = put_key(out, "exc_message")))
        return rc;
    if (e->args.len)
        rc = cel_buf_append(out, e->args.ptr, e->args.len);
    else if (e->message)
        rc = cel__mp_put_array(out, 1) ? CEL_ENOMEM : cel__mp_put_cstr(out, e->message);
    else
        rc = cel__mp_put_array(out, 0);
    if (rc || (rc = put_key(out, "exc_module")))
        return rc;
    return cel__mp_put_cstr(out, e->module);
}

/* The extra map's element count and the bytes of its elements. */
static int extra_items(struct cel_span extra, uint32_t *n, struct cel_span *items)
{
    *n = 0;
    *items = (struct cel_span){NULL, 0};
    if (!extra.len)
        return 0;
    const char *p = extra.ptr, *end = extra.ptr + extra.len;
    struct cel__mp_tok t;
    if (cel__mp_next(&p, end, &t) || t.kind != CEL__MP_MAP)
        return CEL_EINVAL;
    *n = t.len;
    *items = (struct cel_span){p, (size_t)(end - p)};
    return 0;
}

static int put_result(struct cel_buf *b, const struct cel_result *r)
{
    if (r->exc)
        return cel_exc_pack(r->exc, b);
    return put_raw_or(b, r->result, cel__mp_put_nil);
}

static int put_date(struct cel_buf *b, int64_t us)
{
    char iso[33];
    return us ? cel__mp_put_str(b, iso, cel_iso8601_format(us, 0, iso)) : cel__mp_put_nil(b);
}

static int encode_msgpack(const struct cel_result *r, struct cel_buf *b)
{
    uint32_t nx;
    struct cel_span xitems;
    if (!r->status || !r->task_id || extra_items(r->extra, &nx, &xitems))
        return CEL_EINVAL;
    size_t n = 6 + (r->group_id != NULL) + (r->parent_id != NULL) + nx;
    int rc = cel__mp_put_map(b, n);
    if (rc || (rc = put_key(b, "status")) || (rc = cel__mp_put_cstr(b, r->status)) ||
        (rc = put_key(b, "result")) || (rc = put_result(b, r)) || (rc = put_key(b, "traceback")) ||
        (rc = cel__mp_put_cstr(b, r->traceback)) || (rc = put_key(b, "children")) ||
        (rc = put_raw_or(b, r->children, put_empty_array)) || (rc = put_key(b, "date_done")) ||
        (rc = put_date(b, r->date_done)))
        return rc;
    if (r->group_id && ((rc = put_key(b, "group_id")) || (rc = cel__mp_put_cstr(b, r->group_id))))
        return rc;
    if (r->parent_id &&
        ((rc = put_key(b, "parent_id")) || (rc = cel__mp_put_cstr(b, r->parent_id))))
        return rc;
    if ((rc = put_key(b, "task_id")) || (rc = cel__mp_put_cstr(b, r->task_id)))
        return rc;
    return xitems.len ? cel_buf_append(b, xitems.ptr, xitems.len) : 0;
}

int cel_result_encode(const struct cel_result *r, enum cel_format fmt, struct cel_buf *out)
{
    size_t start = out->len;
    int rc;
    if (fmt == CEL_FMT_JSON) {
        struct cel_buf mp = CEL_BUF_INIT;
        rc = encode_msgpack(r, &mp);
        if (rc == 0)
            rc = cel_msgpack_to_json(cel_buf_span(&mp), out);
        cel_buf_free(&mp);
    } else {
        rc = encode_msgpack(r, out);
    }
    if (rc && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return rc;
}

/* ---- decoding ---- */

struct rdec {
    struct cel_result_view *v;
    struct cel_arena *a;
    const char *p, *end;
    char *err;
    size_t errlen;
    uint32_t n_extra;
    size_t extra_bytes;
};

static int rd_err(struct rdec *d, int rc, const char *field, const char *why)
{
    cel__errf(d->err, d->errlen, "result meta: '%s' %s", field, why);
    return rc;
}

/* A str or nil field as a NUL-terminated arena string (NULL for nil). */
static int rd_str(struct rdec *d, const char *field, const char **out)
{
    struct cel__mp_tok t;
    cel__mp_next(&d->p, d->end, &t);
    *out = NULL;
    if (t.kind == CEL__MP_NIL)
        return 0;
    if (t.kind != CEL__MP_STR)
        return rd_err(d, CEL_EDECODE, field, "is not a string");
    *out = cel_arena_strndup(d->a, t.ptr, t.len);
    return *out ? 0 : CEL_ENOMEM;
}

static int rd_span(struct rdec *d, struct cel_span *out)
{
    const char *s = d->p;
    cel__mp_skip(&d->p, d->end);
    *out = (struct cel_span){s, (size_t)(d->p - s)};
    if (out->len == 1 && (unsigned char)*s == 0xc0)
        *out = (struct cel_span){NULL, 0};
    return 0;
}

static int f_status(struct rdec *d)
{
    return rd_str(d, "status", &d->v->r.status);
}
static int f_result(struct rdec *d)
{
    return rd_span(d, &d->v->r.result);
}
static int f_traceback(struct rdec *d)
{
    return rd_str(d, "traceback", &d->v->r.traceback);
}
static int f_children(struct rdec *d)
{
    return rd_span(d, &d->v->r.children);
}
static int f_group_id(struct rdec *d)
{
    return rd_str(d, "group_id", &d->v->r.group_id);
}
static int f_parent_id(struct rdec *d)
{
    return rd_str(d, "parent_id", &d->v->r.parent_id);
}
static int f_task_id(struct rdec *d)
{
    return rd_str(d, "task_id", &d->v->r.task_id);
}

static int f_date_done(struct rdec *d)
{
    const char *s;
    int rc = rd_str(d, "date_done", &s);
    d->v->r.date_done = 0;
    if (rc || !s)
        return rc;
    if (cel_iso8601_parse(s, strlen(s), &d->v->r.date_done))
        return rd_err(d, CEL_ETIME, "date_done", "is not an ISO-8601 timestamp");
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(struct rdec *d);
} fields[] = {
    {"status", f_status},       {"result", f_result},       {"traceback", f_traceback},
    {"children", f_children},   {"date_done", f_date_done}, {"group_id", f_group_id},
    {"parent_id", f_parent_id}, {"task_id", f_task_id},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static size_t field_index(const struct cel__mp_tok *k)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (strlen(fields[i].name) == k->len && !memcmp(fields[i].name, k->ptr, k->len))
            return i;
    return N_FIELDS;
}

/* Pass 1: known fields, and the size of the extras. */
static int rd_fields(struct rdec *d, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct cel__mp_tok k;
        const char *kstart = d->p;
        cel__mp_next(&d->p, d->end, &k); /* validated: a str key */
        size_t f = field_index(&k);
        if (f < N_FIELDS) {
            int rc = fields[f].fn(d);
            if (rc)
                return rc;
            continue;
        }
        cel__mp_skip(&d->p, d->end);
        d->n_extra++;
        d->extra_bytes += (size_t)(d->p - kstart);
    }
    return 0;
}

/* Pass 2: the extra fields, copied into one new map. */
static int rd_extra(struct rdec *d, const char *items, uint32_t n)
{
    if (!d->n_extra)
        return 0;
    struct cel_buf b = CEL_BUF_INIT;
    int rc = cel__mp_put_map(&b, d->n_extra);
    const char *p = items;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        struct cel__mp_tok k;
        const char *kstart = p;
        cel__mp_next(&p, d->end, &k);
        cel__mp_skip(&p, d->end);
        if (field_index(&k) == N_FIELDS)
            rc = cel_buf_append(&b, kstart, (size_t)(p - kstart));
    }
    char *copy = rc ? NULL : cel_arena_alloc(d->a, b.len);
    if (copy) {
        memcpy(copy, b.data, b.len);
        d->v->r.extra = (struct cel_span){copy, b.len};
    }
    cel_buf_free(&b);
    return copy ? 0 : CEL_ENOMEM;
}

static int rd_exc(struct rdec *d)
{
    struct cel_exc *e = &d->v->exc;
    struct cel_span res = d->v->r.result;
    if (!res.len || !res.ptr)
        return 0;
    const char *p = res.ptr, *end = res.ptr + res.len;
    struct cel__mp_tok m, k, t;
    if (!exception_state(d->v->r.status) || cel__mp_next(&p, end, &m) || m.kind != CEL__MP_MAP)
        return 0;
    memset(e, 0, sizeof *e);
    for (uint32_t i = 0; i < m.len; i++) {
        cel__mp_next(&p, end, &k);
        const char *vstart = p, **out = NULL;
        cel__mp_skip(&p, end);
        struct cel_span val = {vstart, (size_t)(p - vstart)};
        const char *q = vstart;
        cel__mp_next(&q, end, &t);
        if (k.len == 8 && !memcmp(k.ptr, "exc_type", 8))
            out = &e->type;
        else if (k.len == 10 && !memcmp(k.ptr, "exc_module", 10))
            out = &e->module;
        else if (k.len == 11 && !memcmp(k.ptr, "exc_message", 11)) {
            if (t.kind == CEL__MP_STR)
                out = &e->message;
            else if (t.kind == CEL__MP_ARRAY)
                e->args = val;
            else if (t.kind != CEL__MP_NIL) {
                char *w = cel_arena_alloc(d->a, val.len + 1);
                if (!w)
                    return CEL_ENOMEM;
                w[0] = (char)0x91; /* [scalar] */
                memcpy(w + 1, val.ptr, val.len);
                e->args = (struct cel_span){w, val.len + 1};
            }
        }
        if (out && t.kind == CEL__MP_STR && !(*out = cel_arena_strndup(d->a, t.ptr, t.len)))
            return CEL_ENOMEM;
    }
    if (e->type)
        d->v->r.exc = e;
    return 0;
}

static int decode_meta(struct rdec *d)
{
    struct cel__mp_tok m;
    const char *items;
    cel__mp_next(&d->p, d->end, &m);
    if (m.kind != CEL__MP_MAP) {
        cel__errf(d->err, d->errlen, "result meta is not a map");
        return CEL_EDECODE;
    }
    items = d->p;
    int rc = rd_fields(d, m.len);
    if (rc == 0 && !d->v->r.status)
        rc = rd_err(d, CEL_EDECODE, "status", "missing");
    if (rc == 0 && !d->v->r.task_id)
        rc = rd_err(d, CEL_EDECODE, "task_id", "missing");
    if (rc == 0)
        rc = rd_extra(d, items, m.len);
    if (rc == 0)
        rc = rd_exc(d);
    if (rc == CEL_ENOMEM)
        cel__errf(d->err, d->errlen, "out of memory");
    return rc;
}

static int decode_mp(struct cel_result_view *v, struct cel_arena *a, const char *data, size_t len,
                     char *err, size_t errlen)
{
    int rc = cel_msgpack_validate((struct cel_span){data, len}, NULL, err, errlen);
    if (rc)
        return rc;
    char *copy = cel_arena_alloc(a, len);
    if (!copy)
        return CEL_ENOMEM;
    memcpy(copy, data, len);
    struct rdec d = {v, a, copy, copy + len, err, errlen, 0, 0};
    return decode_meta(&d);
}

int cel_result_decode(struct cel_result_view *v, struct cel_arena *a, const void *data, size_t len,
                      enum cel_format fmt, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    if (!data)
        data = "";
    if (fmt != CEL_FMT_JSON)
        return decode_mp(v, a, data, len, err, errlen);
    struct cel_buf mp = CEL_BUF_INIT;
    int rc = cel_json_to_msgpack(data, len, NULL, &mp, err, errlen);
    if (rc == 0)
        rc = decode_mp(v, a, mp.data, mp.len, err, errlen);
    cel_buf_free(&mp);
    return rc;
}
