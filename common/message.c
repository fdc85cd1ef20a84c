/* message.c: Celery protocol v2 task messages: the msgpack cursor and writer shared by the codec,
 * the validating one-pass decoder and the encoder that reproduces Celery 5.2 byte for byte. */
#include "common/message.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/json.h"

const struct cel_limits cel_default_limits = {
    .max_body = 16u << 20,
    .max_depth = 64,
    .max_items = 1000000,
    .max_str = 8u << 20,
};

void cel__errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- reading msgpack ---- */

static uint64_t load_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Payload of n bytes (str/bin/ext) after the header. */
static int take(const unsigned char **p, const unsigned char *e, uint64_t n, struct cel__mp_tok *t)
{
    if (n > (uint64_t)(e - *p))
        return CEL_EDECODE;
    t->ptr = (const char *)*p;
    t->len = (uint32_t)n;
    *p += n;
    return 0;
}

/* How the tokens c0..df are read: the kind, the width of the field after the type byte, and
 * what that field is. */
enum long_how {
    H_NIL,
    H_BAD,
    H_BOOL,
    H_PAYLOAD,
    H_EXT,
    H_FIXEXT,
    H_F32,
    H_F64,
    H_UINT,
    H_INT,
    H_COUNT
};

static const struct {
    unsigned char kind, width, how;
} long_tokens[32] = {
    {CEL__MP_NIL, 0, H_NIL},     {CEL__MP_NIL, 0, H_BAD},     {CEL__MP_BOOL, 0, H_BOOL},
    {CEL__MP_BOOL, 0, H_BOOL},   {CEL__MP_BIN, 1, H_PAYLOAD}, {CEL__MP_BIN, 2, H_PAYLOAD},
    {CEL__MP_BIN, 4, H_PAYLOAD}, {CEL__MP_EXT, 1, H_EXT},     {CEL__MP_EXT, 2, H_EXT},
    {CEL__MP_EXT, 4, H_EXT},     {CEL__MP_FLOAT, 4, H_F32},   {CEL__MP_FLOAT, 8, H_F64},
    {CEL__MP_UINT, 1, H_UINT},   {CEL__MP_UINT, 2, H_UINT},   {CEL__MP_UINT, 4, H_UINT},
    {CEL__MP_UINT, 8, H_UINT},   {CEL__MP_INT, 1, H_INT},     {CEL__MP_INT, 2, H_INT},
    {CEL__MP_INT, 4, H_INT},     {CEL__MP_INT, 8, H_INT},     {CEL__MP_EXT, 0, H_FIXEXT},
    {CEL__MP_EXT, 0, H_FIXEXT},  {CEL__MP_EXT, 0, H_FIXEXT},  {CEL__MP_EXT, 0, H_FIXEXT},
    {CEL__MP_EXT, 0, H_FIXEXT},  {CEL__MP_STR, 1, H_PAYLOAD}, {CEL__MP_STR, 2, H_PAYLOAD},
    {CEL__MP_STR, 4, H_PAYLOAD}, {CEL__MP_ARRAY, 2, H_COUNT}, {CEL__MP_ARRAY, 4, H_COUNT},
    {CEL__MP_MAP, 2, H_COUNT},   {CEL__MP_MAP, 4, H_COUNT},
};

/* A signed integer of `width` bytes; non-negative ones are reported as UINT. */
static void set_signed(struct cel__mp_tok *t, uint64_t x, int width)
{
    int64_t v = (int64_t)x;
    if (width < 8) {
        uint64_t sign = UINT64_C(1) << (8 * width - 1);
        v = (int64_t)(x ^ sign) - (int64_t)sign;
    }
    t->kind = v < 0 ? CEL__MP_INT : CEL__MP_UINT;
    if (v < 0)
        t->v.i = v;
    else
        t->v.u = (uint64_t)v;
}

static int next_long(unsigned c, const unsigned char **p, const unsigned char *e,
                     struct cel__mp_tok *t)
{
    int w = long_tokens[c - 0xc0].width, how = long_tokens[c - 0xc0].how;
    if (how == H_BAD || w > e - *p)
        return CEL_EDECODE;
    uint64_t x = load_be(*p, w);
    uint32_t x32 = (uint32_t)x;
    float f;
    *p += w;
    t->kind = long_tokens[c - 0xc0].kind;
    switch (how) {
    case H_BOOL:
        t->v.b = c == 0xc3;
        return 0;
    case H_PAYLOAD:
        return take(p, e, x, t);
    case H_EXT:
        return take(p, e, x + 1, t); /* the type byte, then the data */
    case H_FIXEXT:
        return take(p, e, 1 + (1u << (c - 0xd4)), t);
    case H_F32:
        memcpy(&f, &x32, 4);
        t->v.d = f;
        return 0;
    case H_F64:
        memcpy(&t->v.d, &x, 8);
        return 0;
    case H_UINT:
        t->v.u = x;
        return 0;
    case H_INT:
        set_signed(t, x, w);
        return 0;
    case H_COUNT:
        t->len = (uint32_t)x;
        return 0;
    default:
        return 0;
    }
}

int cel__mp_next(const char **pp, const char *end, struct cel__mp_tok *t)
{
    const unsigned char *p = (const unsigned char *)*pp, *e = (const unsigned char *)end;
    if (p >= e)
        return CEL_EDECODE;
    unsigned c = *p++;
    int rc = 0;
    t->ptr = NULL;
    t->len = 0;
    if (c <= 0x7f) {
        t->kind = CEL__MP_UINT;
        t->v.u = c;
    } else if (c <= 0x8f) {
        t->kind = CEL__MP_MAP;
        t->len = c & 0x0f;
    } else if (c <= 0x9f) {
        t->kind = CEL__MP_ARRAY;
        t->len = c & 0x0f;
    } else if (c <= 0xbf) {
        t->kind = CEL__MP_STR;
        rc = take(&p, e, c & 0x1f, t);
    } else if (c >= 0xe0) {
        t->kind = CEL__MP_INT;
        t->v.i = (int8_t)c;
    } else {
        rc = next_long(c, &p, e, t);
    }
    if (rc == 0)
        *pp = (const char *)p;
    return rc;
}

int cel__mp_skip(const char **pp, const char *end)
{
    uint64_t left = 1;
    const char *p = *pp;
    while (left) {
        struct cel__mp_tok t;
        if (cel__mp_next(&p, end, &t))
            return CEL_EDECODE;
        left--;
        if (t.kind == CEL__MP_ARRAY || t.kind == CEL__MP_MAP) {
            uint64_t n = (uint64_t)t.len << (t.kind == CEL__MP_MAP);
            uint64_t room = (uint64_t)(end - p);
            if (left > room || n > room - left)
                return CEL_EDECODE; /* every element needs at least one byte */
            left += n;
        }
    }
    *pp = p;
    return 0;
}

/* ---- UTF-8 ---- */

bool cel__utf8_valid(const char *str, size_t n)
{
    if (n == 0)
        return true; /* also for (NULL, 0) */
    const unsigned char *s = (const unsigned char *)str, *e = s + n;
    while (s < e) {
        if (e - s >= 8) {
            uint64_t w;
            memcpy(&w, s, 8);
            if (!(w & UINT64_C(0x8080808080808080))) {
                s += 8;
                continue;
            }
        }
        unsigned c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        int len = c >= 0xc2 && c <= 0xdf   ? 2
                  : c >= 0xe0 && c <= 0xef ? 3
                  : c >= 0xf0 && c <= 0xf4 ? 4
                                           : 0;
        if (!len || e - s < len)
            return false;
        for (int i = 1; i < len; i++)
            if ((s[i] & 0xc0) != 0x80)
                return false;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) ||
            (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
            return false; /* overlong, surrogate, beyond U+10FFFF */
        s += len;
    }
    return true;
}

/* ---- validating walk: explicit stack, so depth costs memory not recursion ---- */

struct frame {
    uint64_t left; /* elements still to read; for maps keys and values both count */
    uint64_t n;
    bool map;
};

struct walk {
    struct frame inl[32];
    struct frame *stack;
    size_t cap, depth;
};

static int push(struct walk *w, struct frame f)
{
    if (w->depth == w->cap) {
        size_t cap = w->cap * 2;
        struct frame *s = malloc(cap * sizeof *s);
        if (!s)
            return CEL_ENOMEM;
        memcpy(s, w->stack, w->depth * sizeof *s);
        if (w->stack != w->inl)
            free(w->stack);
        w->stack = s;
        w->cap = cap;
    }
    w->stack[w->depth++] = f;
    return 0;
}

static int check_scalar(const struct cel__mp_tok *t, const struct cel_limits *lim, const char *what,
                        char *err, size_t errlen)
{
    if (t->kind == CEL__MP_EXT) {
        cel__errf(err, errlen, "%s: msgpack ext types are not supported", what);
        return CEL_EBODY;
    }
    if ((t->kind == CEL__MP_STR || t->kind == CEL__MP_BIN) && t->len > lim->max_str) {
        cel__errf(err, errlen, "%s: string of %u bytes exceeds the limit of %zu", what, t->len,
                  lim->max_str);
        return CEL_ETOOBIG;
    }
    if (t->kind == CEL__MP_STR && !cel__utf8_valid(t->ptr, t->len)) {
        cel__errf(err, errlen, "%s: string is not valid UTF-8", what);
        return CEL_EUTF8;
    }
    return 0;
}

static int check_container(struct walk *w, const struct cel__mp_tok *t, uint64_t avail,
                           const struct cel_limits *lim, size_t depth, const char *what, char *err,
                           size_t errlen)
{
    if (t->len > lim->max_items) {
        cel__errf(err, errlen, "%s: %u elements exceed the limit of %zu", what, t->len,
                  lim->max_items);
        return CEL_ETOOBIG;
    }
    uint64_t n = (uint64_t)t->len << (t->kind == CEL__MP_MAP);
    if (n > avail) {
        cel__errf(err, errlen, "%s: truncated msgpack (%u elements announced)", what, t->len);
        return CEL_EDECODE;
    }
    if (depth + w->depth + 1 > lim->max_depth) {
        cel__errf(err, errlen, "%s: nesting deeper than %zu", what, lim->max_depth);
        return CEL_ETOODEEP;
    }
    if (n == 0)
        return 0;
    int rc = push(w, (struct frame){n, n, t->kind == CEL__MP_MAP});
    if (rc)
        cel__errf(err, errlen, "%s: out of memory", what);
    return rc;
}

static int check_loop(struct walk *w, const char **pp, const char *end,
                      const struct cel_limits *lim, size_t depth, const char *what, char *err,
                      size_t errlen)
{
    const char *p = *pp;
    do {
        struct frame *f = w->depth ? &w->stack[w->depth - 1] : NULL;
        bool key = f && f->map && f->left % 2 == 0;
        struct cel__mp_tok t;
        if (cel__mp_next(&p, end, &t)) {
            cel__errf(err, errlen, "%s: malformed or truncated msgpack", what);
            return CEL_EDECODE;
        }
        if (f)
            f->left--;
        if (key && t.kind != CEL__MP_STR) {
            cel__errf(err, errlen, "%s: map key %llu is not a string", what,
                      (unsigned long long)((f->n - f->left - 1) / 2));
            return CEL_EBODY;
        }
        int rc = t.kind == CEL__MP_ARRAY || t.kind == CEL__MP_MAP
                     ? check_container(w, &t, (uint64_t)(end - p), lim, depth, what, err, errlen)
                     : check_scalar(&t, lim, what, err, errlen);
        if (rc)
            return rc;
        while (w->depth && w->stack[w->depth - 1].left == 0)
            w->depth--;
    } while (w->depth);
    *pp = p;
    return 0;
}

int cel__mp_check(const char **pp, const char *end, const struct cel_limits *lim, size_t depth,
                  const char *what, char *err, size_t errlen)
{
    struct walk w;
    w.stack = w.inl;
    w.cap = sizeof w.inl / sizeof w.inl[0];
    w.depth = 0;
    int rc = check_loop(&w, pp, end, lim, depth, what, err, errlen);
    if (w.stack != w.inl)
        free(w.stack);
    return rc;
}

int cel_msgpack_validate(struct cel_span mp, const struct cel_limits *lim, char *err, size_t errlen)
{
    if (!lim)
        lim = &cel_default_limits;
    if (!mp.ptr)
        mp.ptr = ""; /* (NULL, 0): no arithmetic on NULL */
    const char *p = mp.ptr, *end = mp.ptr + mp.len;
    int rc = cel__mp_check(&p, end, lim, 0, "value", err, errlen);
    if (rc == 0 && p != end) {
        cel__errf(err, errlen, "value: %zu trailing bytes", (size_t)(end - p));
        rc = CEL_EDECODE;
    }
    return rc;
}

/* ---- writing msgpack ---- */

static int put_hdr(struct cel_buf *b, unsigned char type, uint64_t v, int width)
{
    int rc = cel_buf_reserve(b, 9);
    if (rc)
        return rc;
    unsigned char *o = (unsigned char *)b->data + b->len;
    *o++ = type;
    for (int i = width - 1; i >= 0; i--)
        *o++ = (unsigned char)(v >> (8 * i));
    b->len += 1 + (size_t)width;
    b->data[b->len] = '\0';
    return 0;
}

int cel__mp_put_nil(struct cel_buf *b)
{
    return put_hdr(b, 0xc0, 0, 0);
}

int cel__mp_put_bool(struct cel_buf *b, bool v)
{
    return put_hdr(b, v ? 0xc3 : 0xc2, 0, 0);
}

int cel__mp_put_uint(struct cel_buf *b, uint64_t v)
{
    if (v < 0x80)
        return put_hdr(b, (unsigned char)v, 0, 0);
    if (v <= 0xff)
        return put_hdr(b, 0xcc, v, 1);
    if (v <= 0xffff)
        return put_hdr(b, 0xcd, v, 2);
    if (v <= 0xffffffffu)
        return put_hdr(b, 0xce, v, 4);
    return put_hdr(b, 0xcf, v, 8);
}

int cel__mp_put_int(struct cel_buf *b, int64_t v)
{
    if (v >= 0)
        return cel__mp_put_uint(b, (uint64_t)v);
    if (v >= -32)
        return put_hdr(b, (unsigned char)(int8_t)v, 0, 0);
    if (v >= INT8_MIN)
        return put_hdr(b, 0xd0, (uint64_t)v, 1);
    if (v >= INT16_MIN)
        return put_hdr(b, 0xd1, (uint64_t)v, 2);
    if (v >= INT32_MIN)
        return put_hdr(b, 0xd2, (uint64_t)v, 4);
    return put_hdr(b, 0xd3, (uint64_t)v, 8);
}

int cel__mp_put_double(struct cel_buf *b, double v)
{
    uint64_t x;
    memcpy(&x, &v, 8);
    return put_hdr(b, 0xcb, x, 8);
}

static int put_sized(struct cel_buf *b, const unsigned char types[3], uint64_t n)
{
    if (n > 0xffffffffu)
        return CEL_ETOOBIG;
    if (n <= 0xff && types[0])
        return put_hdr(b, types[0], n, 1);
    if (n <= 0xffff)
        return put_hdr(b, types[1], n, 2);
    return put_hdr(b, types[2], n, 4);
}

int cel__mp_put_str_hdr(struct cel_buf *b, size_t n)
{
    static const unsigned char types[3] = {0xd9, 0xda, 0xdb};
    return n < 32 ? put_hdr(b, (unsigned char)(0xa0 | n), 0, 0) : put_sized(b, types, n);
}

int cel__mp_put_str(struct cel_buf *b, const char *s, size_t n)
{
    int rc = cel__mp_put_str_hdr(b, n);
    return rc ? rc : cel_buf_append(b, s, n);
}

int cel__mp_put_cstr(struct cel_buf *b, const char *s)
{
    return s ? cel__mp_put_str(b, s, strlen(s)) : cel__mp_put_nil(b);
}

int cel__mp_put_bin(struct cel_buf *b, const void *s, size_t n)
{
    static const unsigned char types[3] = {0xc4, 0xc5, 0xc6};
    int rc = put_sized(b, types, n);
    return rc ? rc : cel_buf_append(b, s, n);
}

int cel__mp_put_array(struct cel_buf *b, size_t n)
{
    static const unsigned char types[3] = {0, 0xdc, 0xdd};
    return n < 16 ? put_hdr(b, (unsigned char)(0x90 | n), 0, 0) : put_sized(b, types, n);
}

int cel__mp_put_map(struct cel_buf *b, size_t n)
{
    static const unsigned char types[3] = {0, 0xde, 0xdf};
    return n < 16 ? put_hdr(b, (unsigned char)(0x80 | n), 0, 0) : put_sized(b, types, n);
}

/* ---- Python float repr ---- */

size_t cel__py_float_repr(double d, char out[32])
{
    if (isnan(d))
        return (size_t)snprintf(out, 32, "nan");
    if (isinf(d))
        return (size_t)snprintf(out, 32, d < 0 ? "-inf" : "inf");
    if (d == 0)
        return (size_t)snprintf(out, 32, signbit(d) ? "-0.0" : "0.0");
    char e[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, d);
        if (strtod(e, NULL) == d)
            break;
    }
    /* e is [-]D.DDDDe[+-]XX: collect the digits and the decimal exponent */
    char dig[20];
    int nd = 0;
    const char *p = e;
    bool neg = *p == '-';
    p += neg;
    for (; *p != 'e'; p++)
        if (*p != '.')
            dig[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    char *o = out;
    if (neg)
        *o++ = '-';
    if (exp10 < -4 || exp10 >= 16) {
        *o++ = dig[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, dig + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        o += snprintf(o, 8, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = -1; i > exp10; i--)
            *o++ = '0';
        memcpy(o, dig, (size_t)nd);
        o += nd;
    } else {
        for (int i = 0; i <= exp10; i++)
            *o++ = i < nd ? dig[i] : '0';
        *o++ = '.';
        if (nd > exp10 + 1) {
            memcpy(o, dig + exp10 + 1, (size_t)(nd - exp10 - 1));
            o += nd - exp10 - 1;
        } else {
            *o++ = '0';
        }
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* ---- the task model ---- */

void cel_task_init(struct cel_task *t)
{
    memset(t, 0, sizeof *t);
    t->lang = "py";
    t->group_index = -1;
    t->format = CEL_FMT_MSGPACK;
}

/* ---- decoding headers ---- */

struct hdr_ctx {
    struct cel_task *t;
    struct cel_arena *a;
    const struct cel_limits *lim;
    const char *name;
    char *err;
    size_t errlen;
};

static int hdr_err(const struct hdr_ctx *c, int rc, const char *why)
{
    cel__errf(c->err, c->errlen, "header '%s' %s", c->name, why);
    return rc;
}

static int copy_str(const struct hdr_ctx *c, const struct cel_value *v, const char **out)
{
    if (v->u.s.len && memchr(v->u.s.ptr, 0, v->u.s.len))
        return hdr_err(c, CEL_EHEADER, "contains a NUL byte");
    if (!cel__utf8_valid(v->u.s.ptr, v->u.s.len))
        return hdr_err(c, CEL_EUTF8, "is not valid UTF-8");
    *out = cel_arena_strndup(c->a, v->u.s.ptr, v->u.s.len);
    return *out ? 0 : hdr_err(c, CEL_ENOMEM, "out of memory");
}

static int h_str(const struct hdr_ctx *c, const struct cel_value *v, size_t off)
{
    const char **out = (const char **)((char *)c->t + off);
    if (v->type == CEL_V_VOID) {
        *out = NULL;
        return 0;
    }
    if (v->type != CEL_V_STR)
        return hdr_err(c, CEL_EHEADER, "is not a string");
    return copy_str(c, v, out);
}

/* argsrepr/kwargsrepr are display-only, and Celery's saferepr leaves control characters raw:
 * a NUL byte in one is shown as "\x00" rather than rejecting a job Celery would run. */
static int h_repr(const struct hdr_ctx *c, const struct cel_value *v, size_t off)
{
    if (v->type != CEL_V_STR || !v->u.s.len || !memchr(v->u.s.ptr, 0, v->u.s.len))
        return h_str(c, v, off);
    if (!cel__utf8_valid(v->u.s.ptr, v->u.s.len))
        return hdr_err(c, CEL_EUTF8, "is not valid UTF-8");
    if (v->u.s.len > SIZE_MAX / 4 - 1)
        return hdr_err(c, CEL_ETOOBIG, "is too long");
    char *out = cel_arena_alloc(c->a, v->u.s.len * 4 + 1), *o = out;
    if (!out)
        return hdr_err(c, CEL_ENOMEM, "out of memory");
    for (size_t i = 0; i < v->u.s.len; i++) {
        if (v->u.s.ptr[i]) {
            *o++ = v->u.s.ptr[i];
        } else {
            memcpy(o, "\\x00", 4);
            o += 4;
        }
    }
    *o = '\0';
    *(const char **)((char *)c->t + off) = out;
    return 0;
}

static int h_required(const struct hdr_ctx *c, const struct cel_value *v, size_t off)
{
    if (v->type != CEL_V_STR || v->u.s.len == 0)
        return hdr_err(c, CEL_EHEADER, "is not a non-empty string");
    return copy_str(c, v, (const char **)((char *)c->t + off));
}

static int h_time(const struct hdr_ctx *c, const struct cel_value *v, size_t off)
{
    int64_t *out = (int64_t *)((char *)c->t + off);
    *out = 0;
    if (v->type == CEL_V_VOID)
        return 0;
    if (v->type != CEL_V_STR || cel_iso8601_parse(v->u.s.ptr, v->u.s.len, out))
        return hdr_err(c, CEL_ETIME, "is not an ISO-8601 timestamp");
    if (*out == 0)
        *out = 1; /* the epoch itself: keep it distinct from "none" */
    return 0;
}

/* INT or UINT that fits in int64 and is >= 0. */
static int get_count(const struct cel_value *v, int64_t *out)
{
    if (v->type == CEL_V_INT && v->u.i >= 0)
        *out = v->u.i;
    else if (v->type == CEL_V_UINT && v->u.u <= INT64_MAX)
        *out = (int64_t)v->u.u;
    else
        return -1;
    return 0;
}

static int h_count(const struct hdr_ctx *c, const struct cel_value *v, size_t off)
{
    int64_t *out = (int64_t *)((char *)c->t + off);
    if (v->type == CEL_V_VOID) {
        *out = off == offsetof(struct cel_task, group_index) ? -1 : 0;
        return 0;
    }
    return get_count(v, out) ? hdr_err(c, CEL_EHEADER, "is not a non-negative integer") : 0;
}

static int h_bool(const struct hdr_ctx *c, const struct cel_value *v, size_t off)
{
    bool *out = (bool *)((char *)c->t + off);
    if (v->type == CEL_V_VOID || v->type == CEL_V_BOOL)
        *out = v->type == CEL_V_BOOL && v->u.b;
    else if (v->type == CEL_V_INT || v->type == CEL_V_UINT)
        *out = v->u.u != 0;
    else
        return hdr_err(c, CEL_EHEADER, "is not a boolean");
    return 0;
}

static int limit_value(const struct cel_value *v, double *out)
{
    switch (v->type) {
    case CEL_V_VOID:
        *out = 0;
        return 0;
    case CEL_V_INT:
        *out = (double)v->u.i;
        break;
    case CEL_V_UINT:
        *out = (double)v->u.u;
        break;
    case CEL_V_DOUBLE:
        *out = v->u.d;
        break;
    default:
        return -1;
    }
    return isfinite(*out) && *out >= 0 ? 0 : -1;
}

static int h_timelimit(const struct hdr_ctx *c, const struct cel_value *v, size_t off)
{
    (void)off;
    c->t->time_limit = c->t->soft_time_limit = 0;
    if (v->type == CEL_V_VOID)
        return 0;
    if (v->type != CEL_V_ARRAY || v->u.a.n != 2 ||
        limit_value(&v->u.a.items[0], &c->t->time_limit) ||
        limit_value(&v->u.a.items[1], &c->t->soft_time_limit))
        return hdr_err(c, CEL_EHEADER, "is not [hard, soft] (numbers or None)");
    return 0;
}

struct hdr_rule {
    const char *name;
    size_t len;
    int (*fn)(const struct hdr_ctx *c, const struct cel_value *v, size_t off);
    size_t off;
};

#define RULE(n, fn, field)                                                                         \
    {                                                                                              \
        n, sizeof(n) - 1, fn, offsetof(struct cel_task, field)                                     \
    }
static const struct hdr_rule hdr_rules[] = {
    RULE("lang", h_str, lang),
    RULE("task", h_required, task),
    RULE("id", h_required, id),
    RULE("shadow", h_str, shadow),
    RULE("eta", h_time, eta),
    RULE("expires", h_time, expires),
    RULE("group", h_str, group),
    RULE("group_index", h_count, group_index),
    RULE("retries", h_count, retries),
    RULE("timelimit", h_timelimit, time_limit),
    RULE("root_id", h_str, root_id),
    RULE("parent_id", h_str, parent_id),
    RULE("argsrepr", h_repr, argsrepr),
    RULE("kwargsrepr", h_repr, kwargsrepr),
    RULE("origin", h_str, origin),
    RULE("ignore_result", h_bool, ignore_result),
    RULE("x-celeriac-idempotency-key", h_str, idempotency_key),
    RULE("x-celeriac-signature", h_str, signature),
};
#undef RULE
#define N_RULES (sizeof hdr_rules / sizeof hdr_rules[0])

static const struct hdr_rule *find_rule(struct cel_span key)
{
    for (size_t i = 0; i < N_RULES; i++)
        if (hdr_rules[i].len == key.len && memcmp(hdr_rules[i].name, key.ptr, key.len) == 0)
            return &hdr_rules[i];
    return NULL;
}

static int copy_value(struct cel_arena *a, const struct cel_value *in, struct cel_value *out,
                      size_t depth, size_t max_depth);

static int copy_span(struct cel_arena *a, struct cel_span in, struct cel_span *out)
{
    char *p = cel_arena_strndup(a, in.ptr ? in.ptr : "", in.len);
    if (!p)
        return CEL_ENOMEM;
    *out = (struct cel_span){p, in.len};
    return 0;
}

static int copy_fields(struct cel_arena *a, const struct cel_field *in, size_t n,
                       struct cel_field **out, size_t depth, size_t max_depth)
{
    *out = NULL;
    if (n == 0)
        return 0;
    if (n > SIZE_MAX / sizeof **out || !(*out = cel_arena_alloc(a, n * sizeof **out)))
        return CEL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = copy_span(a, in[i].key, &(*out)[i].key);
        if (rc || (rc = copy_value(a, &in[i].v, &(*out)[i].v, depth, max_depth)))
            return rc;
    }
    return 0;
}

static int copy_value(struct cel_arena *a, const struct cel_value *in, struct cel_value *out,
                      size_t depth, size_t max_depth)
{
    *out = *in;
    if (in->type == CEL_V_STR || in->type == CEL_V_BYTES)
        return copy_span(a, in->u.s, &out->u.s);
    if (in->type != CEL_V_ARRAY && in->type != CEL_V_TABLE)
        return 0;
    if (depth >= max_depth)
        return CEL_ETOODEEP;
    if (in->type == CEL_V_TABLE)
        return copy_fields(a, in->u.t.items, in->u.t.n, &out->u.t.items, depth + 1, max_depth);
    size_t n = in->u.a.n;
    out->u.a.items = NULL;
    if (n == 0)
        return 0;
    if (n > SIZE_MAX / sizeof *out->u.a.items ||
        !(out->u.a.items = cel_arena_alloc(a, n * sizeof *out->u.a.items)))
        return CEL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = copy_value(a, &in->u.a.items[i], &out->u.a.items[i], depth + 1, max_depth);
        if (rc)
            return rc;
    }
    return 0;
}

/* Unknown headers go to t->extra in order, deep-copied. */
static int keep_extra(struct hdr_ctx *c, const struct cel_field *f, size_t left)
{
    struct cel_table *x = &c->t->extra;
    if (!x->items) {
        x->items = cel_arena_alloc(c->a, left * sizeof *x->items);
        if (!x->items)
            return hdr_err(c, CEL_ENOMEM, "out of memory");
    }
    struct cel_field *out = &x->items[x->n];
    int rc = copy_span(c->a, f->key, &out->key);
    if (rc == 0)
        rc = copy_value(c->a, &f->v, &out->v, 0, c->lim->max_depth);
    if (rc)
        return hdr_err(c, rc, rc == CEL_ETOODEEP ? "is nested too deeply" : "out of memory");
    x->n++;
    return 0;
}

static int decode_headers(struct hdr_ctx *c, const struct cel_table *h)
{
    for (size_t i = 0; h && i < h->n; i++) {
        const struct cel_field *f = &h->items[i];
        const struct hdr_rule *r = find_rule(f->key);
        c->name = r ? r->name : "";
        int rc = r ? r->fn(c, &f->v, r->off) : keep_extra(c, f, h->n - i);
        if (rc)
            return rc;
    }
    c->name = !c->t->task ? "task" : !c->t->id ? "id" : NULL;
    return c->name ? hdr_err(c, CEL_EHEADER, "missing") : 0;
}

/* ---- decoding the body: one pass over [args, kwargs, embed] ---- */

struct body_ctx {
    const char *p, *end;
    const struct cel_limits *lim;
    char *err;
    size_t errlen;
};

static int body_err(struct body_ctx *b, int rc, const char *what, const char *why)
{
    cel__errf(b->err, b->errlen, "%s %s", what, why);
    return rc;
}

static enum cel__mp_kind peek(const struct body_ctx *b)
{
    const char *q = b->p;
    struct cel__mp_tok t;
    return cel__mp_next(&q, b->end, &t) ? CEL__MP_EXT : t.kind;
}

/* One validated value of the expected kind (or nil when allowed) as a span. */
static int body_part(struct body_ctx *b, const char *what, enum cel__mp_kind kind, bool nil_ok,
                     size_t depth, struct cel_span *out)
{
    enum cel__mp_kind k = peek(b);
    static const char *const kind_names[] = {[CEL__MP_ARRAY] = "an array", [CEL__MP_MAP] = "a map"};
    if (k == CEL__MP_NIL && nil_ok) {
        b->p++;
        *out = (struct cel_span){NULL, 0};
        return 0;
    }
    if (k != kind) {
        char why[48];
        snprintf(why, sizeof why, "is not %s%s", kind_names[kind], nil_ok ? " or nil" : "");
        return body_err(b, CEL_EBODY, what, why);
    }
    const char *start = b->p;
    int rc = cel__mp_check(&b->p, b->end, b->lim, depth, what, b->err, b->errlen);
    *out = (struct cel_span){start, (size_t)(b->p - start)};
    return rc;
}

static int embed_member(struct body_ctx *b, struct cel_task *t, struct cel__mp_tok *key)
{
    static const struct {
        const char *what; /* "embed." + the member's name */
        size_t len;
        size_t off;
        enum cel__mp_kind kind;
    } members[] = {
        {"embed.callbacks", 9, offsetof(struct cel_task, callbacks), CEL__MP_ARRAY},
        {"embed.errbacks", 8, offsetof(struct cel_task, errbacks), CEL__MP_ARRAY},
        {"embed.chain", 5, offsetof(struct cel_task, chain), CEL__MP_ARRAY},
        {"embed.chord", 5, offsetof(struct cel_task, chord), CEL__MP_MAP},
    };
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        if (members[i].len == key->len && !memcmp(members[i].what + 6, key->ptr, key->len)) {
            struct cel_span *out = (struct cel_span *)((char *)t + members[i].off);
            return body_part(b, members[i].what, members[i].kind, true, 2, out);
        }
    }
    return cel__mp_check(&b->p, b->end, b->lim, 2, "embed", b->err, b->errlen);
}

static int decode_embed(struct body_ctx *b, struct cel_task *t)
{
    enum cel__mp_kind k = peek(b);
    if (k == CEL__MP_NIL) {
        b->p++;
        return 0;
    }
    if (k != CEL__MP_MAP)
        return body_err(b, CEL_EBODY, "embed", "is not a map or nil");
    struct cel__mp_tok m, key;
    cel__mp_next(&b->p, b->end, &m);
    if (m.len > b->lim->max_items)
        return body_err(b, CEL_ETOOBIG, "embed", "has too many members");
    for (uint32_t i = 0; i < m.len; i++) {
        if (cel__mp_next(&b->p, b->end, &key))
            return body_err(b, CEL_EDECODE, "embed", "is truncated");
        if (key.kind != CEL__MP_STR)
            return body_err(b, CEL_EBODY, "embed:", "map key is not a string");
        int rc = check_scalar(&key, b->lim, "embed", b->err, b->errlen);
        if (rc == 0)
            rc = embed_member(b, t, &key);
        if (rc)
            return rc;
    }
    return 0;
}

static int decode_parts(struct body_ctx *b, struct cel_task *t)
{
    struct cel__mp_tok top;
    if (cel__mp_next(&b->p, b->end, &top) || top.kind != CEL__MP_ARRAY || top.len != 3)
        return body_err(b, CEL_EBODY, "body", "is not an array of 3 [args, kwargs, embed]");
    if (b->lim->max_depth < 2)
        return body_err(b, CEL_ETOODEEP, "body", "is nested deeper than the limit");
    int rc = body_part(b, "args", CEL__MP_ARRAY, false, 1, &t->args);
    if (rc || (rc = body_part(b, "kwargs", CEL__MP_MAP, false, 1, &t->kwargs)) ||
        (rc = decode_embed(b, t)))
        return rc;
    if (b->p != b->end)
        return body_err(b, CEL_EDECODE, "body", "has trailing bytes after [args, kwargs, embed]");
    return 0;
}

static void rebase(struct cel_span *s, const char *from, const char *to)
{
    if (s->len)
        s->ptr = to + (s->ptr - from);
}

/* Validates the msgpack body and copies it into the arena once; the parts point into the copy. */
static int decode_body(struct cel_task *t, struct cel_arena *a, const char *body, size_t len,
                       const struct cel_limits *lim, char *err, size_t errlen)
{
    struct body_ctx b = {body, body + len, lim, err, errlen};
    int rc = decode_parts(&b, t);
    if (rc)
        return rc;
    char *copy = cel_arena_alloc(a, len);
    if (!copy)
        return body_err(&b, CEL_ENOMEM, "body", "out of memory");
    memcpy(copy, body, len);
    struct cel_span *parts[] = {&t->args,     &t->kwargs, &t->callbacks,
                                &t->errbacks, &t->chain,  &t->chord};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        rebase(parts[i], body, copy);
    return 0;
}

static int decode_json_body(struct cel_task *t, struct cel_arena *a, const char *body, size_t len,
                            const struct cel_limits *lim, char *err, size_t errlen)
{
    struct cel_buf mp = CEL_BUF_INIT;
    int rc = cel_json_to_msgpack(body, len, lim, &mp, err, errlen);
    if (rc == 0)
        rc = decode_body(t, a, mp.data, mp.len, lim, err, errlen);
    cel_buf_free(&mp);
    return rc;
}

static bool str_is(const char *s, const char *lit)
{
    return s && strcmp(s, lit) == 0;
}

static int content_format(const struct cel_props *p, enum cel_format *fmt, char *err, size_t errlen)
{
    const char *ct = p ? p->content_type : NULL, *ce = p ? p->content_encoding : NULL;
    if (str_is(ct, CEL_CT_MSGPACK))
        *fmt = CEL_FMT_MSGPACK;
    else if (str_is(ct, CEL_CT_JSON))
        *fmt = CEL_FMT_JSON;
    else {
        cel__errf(err, errlen, "unsupported content type '%s'", ct ? ct : "(none)");
        return CEL_ECONTENT;
    }
    if (ce && *ce && !str_is(ce, "binary") && !str_is(ce, "utf-8") && !str_is(ce, "utf8")) {
        cel__errf(err, errlen, "unsupported content encoding '%s'", ce);
        return CEL_ECONTENT;
    }
    return 0;
}

static int copy_props(struct cel_props *out, const struct cel_props *in, struct cel_arena *a)
{
    *out = *in;
    const char **s[] = {&out->content_type, &out->content_encoding, &out->correlation_id,
                        &out->reply_to, &out->expiration};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        if (*s[i] && !(*s[i] = cel_arena_strdup(a, *s[i])))
            return CEL_ENOMEM;
    return 0;
}

int cel_task_decode(struct cel_task *t, struct cel_arena *a, const struct cel_props *props,
                    const struct cel_table *headers, const void *body, size_t len,
                    const struct cel_limits *lim, char *err, size_t errlen)
{
    if (!lim)
        lim = &cel_default_limits;
    if (!body)
        body = "";
    cel_task_init(t);
    t->lang = NULL;
    if (len > lim->max_body) {
        cel__errf(err, errlen, "body of %zu bytes exceeds the limit of %zu", len, lim->max_body);
        return CEL_ETOOBIG;
    }
    int rc = content_format(props, &t->format, err, errlen);
    if (rc)
        return rc;
    struct hdr_ctx hc = {t, a, lim, NULL, err, errlen};
    if ((rc = decode_headers(&hc, headers)))
        return rc;
    if ((rc = copy_props(&t->props, props, a))) {
        cel__errf(err, errlen, "out of memory");
        return rc;
    }
    return t->format == CEL_FMT_JSON ? decode_json_body(t, a, body, len, lim, err, errlen)
                                     : decode_body(t, a, body, len, lim, err, errlen);
}

/* ---- encoding ---- */

static char host_name[256];
static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static _Thread_local char origin_cached[300]; /* per thread: no lock on the hot path */

/* The child of a fork has only the forking thread, whose cache now names the parent. */
static void origin_forget(void)
{
    origin_cached[0] = '\0';
}

static void host_init(void)
{
    if (gethostname(host_name, sizeof host_name - 1) != 0)
        strcpy(host_name, "localhost");
    host_name[sizeof host_name - 1] = '\0';
    pthread_atfork(NULL, NULL, origin_forget);
}

/* anon_nodename(): "gen<pid>@<hostname>". */
static const char *origin_name(struct cel_arena *a)
{
    if (!origin_cached[0]) {
        pthread_once(&host_once, host_init);
        snprintf(origin_cached, sizeof origin_cached, "gen%ld@%s", (long)getpid(), host_name);
    }
    return cel_arena_strdup(a, origin_cached);
}

/* saferepr of a body part, written past the end of `scratch` (the body buffer, still unused
 * there) and copied into the arena, so no temporary allocation is needed. */
static const char *arena_repr(struct cel_arena *a, struct cel_span mp, const char *empty,
                              struct cel_buf *scratch)
{
    if (mp.len == 0)
        return empty;
    size_t start = scratch->len;
    const char *s = NULL;
    if (cel_msgpack_repr(mp, 1024, scratch) == 0)
        s = cel_arena_strndup(a, scratch->data + start, scratch->len - start);
    if (scratch->data) {
        scratch->len = start;
        scratch->data[start] = '\0';
    }
    return s;
}

static const char *iso_or_null(struct cel_arena *a, int64_t us)
{
    char *s = us ? cel_arena_alloc(a, 33) : NULL;
    if (s)
        cel_iso8601_format(us, 1, s);
    return s;
}

static struct cel_value opt_str(const char *s)
{
    return s ? cel_value_str(s, strlen(s)) : (struct cel_value){.type = CEL_V_VOID};
}

/* A time limit as Python would send it: None, an int (I) or a float (d). */
static struct cel_value limit_to_value(double d)
{
    struct cel_value v = {.type = CEL_V_VOID};
    if (d > 0 && d == floor(d) && d < 9.2e18) {
        v.type = CEL_V_INT;
        v.u.i = (int64_t)d;
    } else if (d > 0) {
        v.type = CEL_V_DOUBLE;
        v.u.d = d;
    }
    return v;
}

struct enc_strings {
    const char *eta, *expires, *root_id, *argsrepr, *kwargsrepr, *origin;
};

static int derive_strings(const struct cel_task *t, struct cel_arena *a, struct enc_strings *s,
                          struct cel_buf *scratch)
{
    s->eta = iso_or_null(a, t->eta);
    s->expires = iso_or_null(a, t->expires);
    s->root_id = t->root_id ? t->root_id : t->id;
    s->argsrepr = t->argsrepr ? t->argsrepr : arena_repr(a, t->args, "[]", scratch);
    s->kwargsrepr = t->kwargsrepr ? t->kwargsrepr : arena_repr(a, t->kwargs, "{}", scratch);
    s->origin = t->origin ? t->origin : origin_name(a);
    bool oom = (t->eta && !s->eta) || (t->expires && !s->expires) || !s->argsrepr ||
               !s->kwargsrepr || !s->origin;
    return oom ? CEL_ENOMEM : 0;
}

static void put_field(struct cel_table *h, const char *key, struct cel_value v)
{
    h->items[h->n].key = (struct cel_span){key, strlen(key)};
    h->items[h->n++].v = v;
}

static int encode_headers(const struct cel_task *t, struct cel_arena *a, struct cel_table *h,
                          struct cel_buf *scratch)
{
    struct enc_strings s;
    struct cel_value *tl = cel_arena_alloc(a, 2 * sizeof *tl);
    h->n = 0;
    h->items = cel_arena_alloc(a, (18 + t->extra.n) * sizeof *h->items);
    if (!tl || !h->items || derive_strings(t, a, &s, scratch))
        return CEL_ENOMEM;
    tl[0] = limit_to_value(t->time_limit);
    tl[1] = limit_to_value(t->soft_time_limit);
    struct cel_value timelimit = {.type = CEL_V_ARRAY, .u.a = {tl, 2}};
    struct cel_value gi = t->group_index >= 0 ? cel_value_int(t->group_index)
                                              : (struct cel_value){.type = CEL_V_VOID};
    struct cel_value ign = {.type = CEL_V_BOOL, .u.b = t->ignore_result};
    put_field(h, "lang", opt_str(t->lang ? t->lang : "py"));
    put_field(h, "task", opt_str(t->task));
    put_field(h, "id", opt_str(t->id));
    put_field(h, "shadow", opt_str(t->shadow));
    put_field(h, "eta", opt_str(s.eta));
    put_field(h, "expires", opt_str(s.expires));
    put_field(h, "group", opt_str(t->group));
    put_field(h, "group_index", gi);
    put_field(h, "retries", cel_value_int(t->retries));
    put_field(h, "timelimit", timelimit);
    put_field(h, "root_id", opt_str(s.root_id));
    put_field(h, "parent_id", opt_str(t->parent_id));
    put_field(h, "argsrepr", opt_str(s.argsrepr));
    put_field(h, "kwargsrepr", opt_str(s.kwargsrepr));
    put_field(h, "origin", opt_str(s.origin));
    put_field(h, "ignore_result", ign);
    if (t->idempotency_key)
        put_field(h, "x-celeriac-idempotency-key", opt_str(t->idempotency_key));
    if (t->signature)
        put_field(h, "x-celeriac-signature", opt_str(t->signature));
    for (size_t i = 0; i < t->extra.n; i++)
        h->items[h->n++] = t->extra.items[i];
    return 0;
}

static int encode_props(const struct cel_task *t, struct cel_arena *a, struct cel_props *p)
{
    *p = (struct cel_props){0};
    bool json = t->format == CEL_FMT_JSON;
    p->content_type = json ? CEL_CT_JSON : CEL_CT_MSGPACK;
    p->content_encoding = json ? "utf-8" : "binary";
    p->delivery_mode = 2;
    p->priority = t->props.has_priority ? t->props.priority : 0;
    p->has_priority = true;
    p->correlation_id = t->id;
    p->reply_to = t->props.reply_to;
    if (t->expires) {
        int64_t ms = (t->expires - cel_now_us()) / 1000;
        char *s = cel_arena_alloc(a, 24);
        if (!s)
            return CEL_ENOMEM;
        snprintf(s, 24, "%lld", (long long)(ms > 0 ? ms : 0));
        p->expiration = s;
    }
    return 0;
}

static const char *const embed_keys[4] = {"callbacks", "errbacks", "chain", "chord"};

static int encode_body_msgpack(const struct cel_task *t, struct cel_buf *b)
{
    const struct cel_span embed[4] = {t->callbacks, t->errbacks, t->chain, t->chord};
    int rc = cel__mp_put_array(b, 3);
    if (rc == 0)
        rc = t->args.len ? cel_buf_append(b, t->args.ptr, t->args.len) : cel__mp_put_array(b, 0);
    if (rc == 0)
        rc =
            t->kwargs.len ? cel_buf_append(b, t->kwargs.ptr, t->kwargs.len) : cel__mp_put_map(b, 0);
    if (rc == 0)
        rc = cel__mp_put_map(b, 4);
    for (int i = 0; i < 4 && rc == 0; i++) {
        rc = cel__mp_put_str(b, embed_keys[i], strlen(embed_keys[i]));
        if (rc == 0)
            rc = embed[i].len ? cel_buf_append(b, embed[i].ptr, embed[i].len) : cel__mp_put_nil(b);
    }
    return rc;
}

static int json_part(struct cel_buf *b, struct cel_span mp, const char *empty)
{
    return mp.len ? cel_msgpack_to_json(mp, b) : cel_buf_puts(b, empty);
}

static int encode_body_json(const struct cel_task *t, struct cel_buf *b)
{
    const struct cel_span embed[4] = {t->callbacks, t->errbacks, t->chain, t->chord};
    int rc = cel_buf_puts(b, "[");
    if (rc == 0 && (rc = json_part(b, t->args, "[]")) == 0 && (rc = cel_buf_puts(b, ", ")) == 0 &&
        (rc = json_part(b, t->kwargs, "{}")) == 0)
        rc = cel_buf_puts(b, ", {");
    for (int i = 0; i < 4 && rc == 0; i++) {
        rc = cel_buf_printf(b, "%s\"%s\": ", i ? ", " : "", embed_keys[i]);
        if (rc == 0)
            rc = json_part(b, embed[i], "null");
    }
    return rc ? rc : cel_buf_puts(b, "}]");
}

int cel_task_encode(const struct cel_task *t, struct cel_arena *a, struct cel_props *props,
                    struct cel_table *headers, struct cel_buf *body)
{
    if (!t->task || !t->id)
        return CEL_EINVAL;
    size_t start = body->len;
    int rc = encode_headers(t, a, headers, body);
    if (rc == 0)
        rc = encode_props(t, a, props);
    if (rc == 0)
        rc = t->format == CEL_FMT_JSON ? encode_body_json(t, body) : encode_body_msgpack(t, body);
    if (rc && body->data) {
        body->len = start;
        body->data[start] = '\0';
    }
    return rc;
}
