/* repr.c: argsrepr/kwargsrepr as Celery 5.2 computes them (celery.utils.saferepr.saferepr with
 * maxlen and maxlevels=3), from msgpack bytes. saferepr is not quite repr(): strings are quoted
 * with ' and only ' is escaped; bytes show as b'<utf-8 text or hex>'; containers nested 3 deep
 * print as [...]; once maxlen characters are spent the output ends with ", ..." and the closing
 * brackets. Lengths count code points, as Python does. */
#include <stdio.h>
#include <string.h>

#include "common/message.h"

#define MAXLEVELS 3

struct rframe {
    uint32_t n, i;
    bool map;
};

struct repr {
    struct cel_buf *out;
    const char *p, *end;
    bool limited;
    long long left; /* maxlen still available, in code points */
    bool done;
    size_t depth;
    struct rframe stack[MAXLEVELS];
};

static size_t cp_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* Byte offset of the first `cps` code points of s. */
static size_t cp_prefix(const char *s, size_t n, long long cps)
{
    size_t i = 0;
    for (long long c = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80 && c++ == cps)
            break;
    }
    return i;
}

static int emit(struct repr *r, const char *s, size_t n)
{
    r->left -= (long long)cp_count(s, n);
    return cel_buf_append(r->out, s, n);
}

/* The check saferepr makes before each token: out of room -> ", ..." and the closers. */
static int out_of_room(struct repr *r, int *rc)
{
    if (!r->limited || r->left > 0)
        return 0;
    *rc = cel_buf_puts(r->out, ", ...");
    while (*rc == 0 && r->depth)
        *rc = cel_buf_puts(r->out, r->stack[--r->depth].map ? "}" : "]");
    r->done = true;
    return 1;
}

/* celery.utils.text.truncate: s[:maxlen].rsplit(' ', 1)[0] + '...' when len(s) >= maxlen. */
static size_t truncated_len(const struct repr *r, const char *s, size_t n, bool *cut)
{
    *cut = r->limited && (long long)cp_count(s, n) >= r->left;
    if (!*cut)
        return n;
    size_t k = cp_prefix(s, n, r->left);
    const char *sp = memrchr(s, ' ', k);
    return sp ? (size_t)(sp - s) : k;
}

/* A plain token (number, None, "[...]"): str(x) passed through truncate. */
static int emit_plain(struct repr *r, const char *s, size_t n)
{
    bool cut;
    size_t k = truncated_len(r, s, n, &cut);
    size_t start = r->out->len;
    int rc = cel_buf_append(r->out, s, k);
    if (rc == 0 && cut)
        rc = cel_buf_puts(r->out, "...");
    r->left -= (long long)cp_count(r->out->data + start, r->out->len - start);
    return rc;
}

/* _format_chars for str: "'" + truncate(s).replace("'", "\\'") + "'". */
static int emit_str(struct repr *r, const char *s, size_t n)
{
    bool cut;
    size_t k = truncated_len(r, s, n, &cut);
    size_t start = r->out->len;
    int rc = cel_buf_puts(r->out, "'");
    for (size_t i = 0; i < k && rc == 0;) {
        const char *q = memchr(s + i, '\'', k - i);
        size_t run = q ? (size_t)(q - s) - i : k - i;
        rc = cel_buf_append(r->out, s + i, run);
        i += run;
        if (rc == 0 && q) {
            rc = cel_buf_puts(r->out, "\\'");
            i++;
        }
    }
    if (rc == 0 && cut)
        rc = cel_buf_puts(r->out, "...");
    if (rc == 0)
        rc = cel_buf_puts(r->out, "'");
    r->left -= (long long)cp_count(r->out->data + start, r->out->len - start);
    return rc;
}

/* _format_binary_bytes: b'<utf-8 text>' or b'<hex>', cut to maxlen bytes first. */
static int emit_bin(struct repr *r, const char *s, size_t n)
{
    bool cut = r->limited && (long long)n > r->left;
    size_t k = cut ? (size_t)r->left : n;
    size_t start = r->out->len;
    bool text = cel__utf8_valid(s, k);
    int rc = cel_buf_puts(r->out, "b'");
    if (rc == 0 && text)
        rc = cel_buf_append(r->out, s, k);
    for (size_t i = 0; rc == 0 && !text && i < k; i++)
        rc = cel_buf_printf(r->out, "%02x", (unsigned char)s[i]);
    if (rc == 0)
        rc = cel_buf_puts(r->out, cut ? "...'" : "'");
    r->left -= (long long)cp_count(r->out->data + start, r->out->len - start);
    return rc;
}

static int emit_scalar(struct repr *r, const struct cel__mp_tok *t)
{
    char num[32];
    switch (t->kind) {
    case CEL__MP_NIL:
        return emit_plain(r, "None", 4);
    case CEL__MP_BOOL:
        return t->v.b ? emit_plain(r, "True", 4) : emit_plain(r, "False", 5);
    case CEL__MP_INT:
        return emit_plain(r, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)t->v.i));
    case CEL__MP_UINT:
        return emit_plain(r, num,
                          (size_t)snprintf(num, sizeof num, "%llu", (unsigned long long)t->v.u));
    case CEL__MP_FLOAT:
        return emit_plain(r, num, cel__py_float_repr(t->v.d, num));
    case CEL__MP_STR:
        return emit_str(r, t->ptr, t->len);
    case CEL__MP_BIN:
        return emit_bin(r, t->ptr, t->len);
    default:
        return CEL_EUNSUPPORTED; /* ext */
    }
}

static int skip_items(struct repr *r, const struct cel__mp_tok *t)
{
    uint64_t n = (uint64_t)t->len << (t->kind == CEL__MP_MAP);
    for (uint64_t i = 0; i < n; i++)
        if (cel__mp_skip(&r->p, r->end))
            return CEL_EDECODE;
    return 0;
}

/* One value: a scalar token, "[...]" past maxlevels, or an opened container. */
static int value(struct repr *r)
{
    struct cel__mp_tok t;
    int rc = 0;
    if (cel__mp_next(&r->p, r->end, &t))
        return CEL_EDECODE;
    bool container = t.kind == CEL__MP_ARRAY || t.kind == CEL__MP_MAP;
    if (container && r->depth >= MAXLEVELS) {
        if ((rc = skip_items(r, &t)) || out_of_room(r, &rc))
            return rc;
        return emit_plain(r, t.kind == CEL__MP_MAP ? "{...}" : "[...]", 5);
    }
    if (!container)
        return out_of_room(r, &rc) ? rc : emit_scalar(r, &t);
    r->stack[r->depth++] = (struct rframe){t.len, 0, t.kind == CEL__MP_MAP};
    if (out_of_room(r, &rc))
        return rc;
    return emit(r, t.kind == CEL__MP_MAP ? "{" : "[", 1);
}

/* A map key is repr'd on its own (saferepr(key, maxlen)); keys are strings in practice. */
static int key(struct repr *r)
{
    struct cel__mp_tok t;
    int rc = 0;
    if (cel__mp_next(&r->p, r->end, &t))
        return CEL_EDECODE;
    if (t.kind == CEL__MP_ARRAY || t.kind == CEL__MP_MAP)
        return (rc = skip_items(r, &t)) ? rc : emit_plain(r, "?", 1);
    if (out_of_room(r, &rc))
        return rc;
    return emit_scalar(r, &t);
}

static int step(struct repr *r)
{
    struct rframe *f = &r->stack[r->depth - 1];
    int rc = 0;
    if (f->i == f->n) {
        r->depth--; /* the closer is consumed even when it is not printed, as in saferepr */
        if (out_of_room(r, &rc))
            return rc;
        return emit(r, f->map ? "}" : "]", 1);
    }
    if (f->i++ > 0 && (out_of_room(r, &rc) || (rc = emit(r, ", ", 2))))
        return rc;
    if (f->map) {
        if ((rc = key(r)) || r->done || out_of_room(r, &rc) || (rc = emit(r, ": ", 2)))
            return rc;
    }
    return value(r);
}

int cel_msgpack_repr(struct cel_span mp, size_t maxlen, struct cel_buf *out)
{
    if (!mp.ptr)
        mp.ptr = "";
    struct repr r = {.out = out, .p = mp.ptr, .end = mp.ptr + mp.len};
    r.limited = maxlen > 0;
    r.left = (long long)maxlen;
    size_t start = out->len;
    int rc = value(&r);
    while (rc == 0 && r.depth && !r.done)
        rc = step(&r);
    if (rc && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return rc;
}
