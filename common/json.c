/* json.c: JSON <-> msgpack. JSON text is parsed by jansson and converted with the limits checked;
 * msgpack is written out as JSON the way Python's json.dumps does it (kombu's serializer):
 * separators ", " and ": ", ensure_ascii escapes, float repr, NaN/Infinity. */
#include "common/json.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON -> msgpack ---- */

struct j2m {
    const struct cel_limits *lim;
    struct cel_buf *out;
    char *err;
    size_t errlen;
};

static int j2m_value(struct j2m *c, json_t *v, size_t depth);

static int j2m_container(struct j2m *c, json_t *v, size_t depth)
{
    size_t n = json_is_object(v) ? json_object_size(v) : json_array_size(v);
    if (depth >= c->lim->max_depth) {
        cel__errf(c->err, c->errlen, "JSON nested deeper than %zu", c->lim->max_depth);
        return CEL_ETOODEEP;
    }
    if (n > c->lim->max_items) {
        cel__errf(c->err, c->errlen, "JSON container of %zu elements exceeds the limit", n);
        return CEL_ETOOBIG;
    }
    if (json_is_array(v)) {
        int rc = cel__mp_put_array(c->out, n);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = j2m_value(c, json_array_get(v, i), depth + 1);
        return rc;
    }
    int rc = cel__mp_put_map(c->out, n);
    for (void *it = json_object_iter(v); rc == 0 && it; it = json_object_iter_next(v, it)) {
        rc = cel__mp_put_str(c->out, json_object_iter_key(it), json_object_iter_key_len(it));
        if (rc == 0)
            rc = j2m_value(c, json_object_iter_value(it), depth + 1);
    }
    return rc;
}

static int j2m_value(struct j2m *c, json_t *v, size_t depth)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        return j2m_container(c, v, depth);
    case JSON_STRING:
        if (json_string_length(v) > c->lim->max_str) {
            cel__errf(c->err, c->errlen, "JSON string of %zu bytes exceeds the limit",
                      json_string_length(v));
            return CEL_ETOOBIG;
        }
        return cel__mp_put_str(c->out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return cel__mp_put_int(c->out, json_integer_value(v));
    case JSON_REAL:
        return cel__mp_put_double(c->out, json_real_value(v));
    case JSON_TRUE:
        return cel__mp_put_bool(c->out, true);
    case JSON_FALSE:
        return cel__mp_put_bool(c->out, false);
    default:
        return cel__mp_put_nil(c->out);
    }
}

static int jansson_status(const json_error_t *e)
{
    switch (json_error_code(e)) {
    case json_error_invalid_utf8:
        return CEL_EUTF8;
    case json_error_numeric_overflow:
        return CEL_EUNSUPPORTED;
    case json_error_stack_overflow:
        return CEL_ETOODEEP;
    case json_error_out_of_memory:
        return CEL_ENOMEM;
    default:
        return CEL_EJSON;
    }
}

int cel_json_to_msgpack(const char *json, size_t len, const struct cel_limits *lim,
                        struct cel_buf *out, char *err, size_t errlen)
{
    if (!lim)
        lim = &cel_default_limits;
    if (len > lim->max_body) {
        cel__errf(err, errlen, "JSON text of %zu bytes exceeds the limit of %zu", len,
                  lim->max_body);
        return CEL_ETOOBIG;
    }
    json_error_t e;
    json_t *root = json_loadb(json ? json : "", len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!root) {
        cel__errf(err, errlen, "line %d col %d: %s", e.line, e.column, e.text);
        return jansson_status(&e);
    }
    size_t start = out->len;
    struct j2m c = {lim, out, err, errlen};
    int rc = j2m_value(&c, root, 0);
    json_decref(root);
    if (rc && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    if (rc == CEL_ENOMEM)
        cel__errf(err, errlen, "out of memory");
    return rc;
}

/* ---- msgpack -> JSON (Python json.dumps style) ---- */

static int put_escape(struct cel_buf *b, uint32_t cp)
{
    static const char short_esc[32] = {
        ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
    if (cp < 32 && short_esc[cp])
        return cel_buf_printf(b, "\\%c", short_esc[cp]);
    if (cp < 0x10000)
        return cel_buf_printf(b, "\\u%04x", cp);
    cp -= 0x10000;
    return cel_buf_printf(b, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
}

/* Decodes one code point of valid UTF-8 (validated by the caller). */
static uint32_t utf8_next(const unsigned char **s)
{
    const unsigned char *p = *s;
    uint32_t c = *p;
    int n = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    c &= n == 3 ? 0x07 : n == 2 ? 0x0f : n == 1 ? 0x1f : 0x7f;
    for (int i = 1; i <= n; i++)
        c = c << 6 | (p[i] & 0x3f);
    *s = p + n + 1;
    return c;
}

static int put_json_str(struct cel_buf *b, const char *str, size_t n)
{
    if (!cel__utf8_valid(str, n))
        return CEL_EUTF8;
    const unsigned char *s = (const unsigned char *)str, *e = s + n;
    int rc = cel_buf_puts(b, "\"");
    while (rc == 0 && s < e) {
        const unsigned char *run = s;
        while (s < e && *s >= 0x20 && *s < 0x7f && *s != '"' && *s != '\\')
            s++;
        rc = cel_buf_append(b, run, (size_t)(s - run));
        if (rc || s == e)
            break;
        if (*s == '"' || *s == '\\') {
            rc = cel_buf_printf(b, "\\%c", *s++);
            continue;
        }
        rc = put_escape(b, utf8_next(&s));
    }
    return rc ? rc : cel_buf_puts(b, "\"");
}

static int put_json_float(struct cel_buf *b, double d)
{
    char num[32];
    if (isnan(d))
        return cel_buf_puts(b, "NaN");
    if (isinf(d))
        return cel_buf_puts(b, d < 0 ? "-Infinity" : "Infinity");
    return cel_buf_append(b, num, cel__py_float_repr(d, num));
}

static int put_json_scalar(struct cel_buf *b, const struct cel__mp_tok *t)
{
    switch (t->kind) {
    case CEL__MP_NIL:
        return cel_buf_puts(b, "null");
    case CEL__MP_BOOL:
        return cel_buf_puts(b, t->v.b ? "true" : "false");
    case CEL__MP_INT:
        return cel_buf_printf(b, "%lld", (long long)t->v.i);
    case CEL__MP_UINT:
        return cel_buf_printf(b, "%llu", (unsigned long long)t->v.u);
    case CEL__MP_FLOAT:
        return put_json_float(b, t->v.d);
    case CEL__MP_STR:
        return put_json_str(b, t->ptr, t->len);
    case CEL__MP_BIN:
        return cel__utf8_valid(t->ptr, t->len) ? put_json_str(b, t->ptr, t->len) : CEL_EUNSUPPORTED;
    default:
        return CEL_EUNSUPPORTED;
    }
}

struct jframe {
    uint32_t n, i;
    bool map;
};

struct m2j {
    struct cel_buf *b;
    const char *p, *end;
    struct jframe inl[32], *stack;
    size_t depth, cap;
};

static int m2j_push(struct m2j *c, struct jframe f)
{
    if (c->depth == c->cap) {
        struct jframe *s = malloc(c->cap * 2 * sizeof *s);
        if (!s)
            return CEL_ENOMEM;
        memcpy(s, c->stack, c->depth * sizeof *s);
        if (c->stack != c->inl)
            free(c->stack);
        c->stack = s;
        c->cap *= 2;
    }
    c->stack[c->depth++] = f;
    return 0;
}

static int m2j_value(struct m2j *c)
{
    struct cel__mp_tok t;
    if (cel__mp_next(&c->p, c->end, &t))
        return CEL_EDECODE;
    if (t.kind != CEL__MP_ARRAY && t.kind != CEL__MP_MAP)
        return put_json_scalar(c->b, &t);
    if (((uint64_t)t.len << (t.kind == CEL__MP_MAP)) > (uint64_t)(c->end - c->p))
        return CEL_EDECODE;
    int rc = cel_buf_puts(c->b, t.kind == CEL__MP_MAP ? "{" : "[");
    return rc ? rc : m2j_push(c, (struct jframe){t.len, 0, t.kind == CEL__MP_MAP});
}

static int m2j_key(struct m2j *c)
{
    struct cel__mp_tok t;
    if (cel__mp_next(&c->p, c->end, &t))
        return CEL_EDECODE;
    if (t.kind != CEL__MP_STR && t.kind != CEL__MP_BIN)
        return CEL_EUNSUPPORTED;
    int rc = put_json_scalar(c->b, &t);
    return rc ? rc : cel_buf_puts(c->b, ": ");
}

static int m2j_step(struct m2j *c)
{
    struct jframe *f = &c->stack[c->depth - 1];
    if (f->i == f->n) {
        c->depth--;
        return cel_buf_puts(c->b, f->map ? "}" : "]");
    }
    int rc = f->i++ ? cel_buf_puts(c->b, ", ") : 0;
    if (rc == 0 && f->map)
        rc = m2j_key(c);
    return rc ? rc : m2j_value(c);
}

int cel_msgpack_to_json(struct cel_span mp, struct cel_buf *out)
{
    if (!mp.ptr)
        mp.ptr = "";
    struct m2j c = {.b = out, .p = mp.ptr, .end = mp.ptr + mp.len, .cap = 32};
    c.stack = c.inl;
    size_t start = out->len;
    int rc = m2j_value(&c);
    while (rc == 0 && c.depth)
        rc = m2j_step(&c);
    if (rc == 0 && c.p != c.end)
        rc = CEL_EDECODE;
    if (c.stack != c.inl)
        free(c.stack);
    if (rc && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return rc;
}
