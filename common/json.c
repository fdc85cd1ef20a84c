/* json.c: JSON <-> msgpack. JSON text is read the way Python's json.loads reads it, straight into
 * msgpack with the limits checked before any allocation; msgpack is written out as JSON the way
 * Python's json.dumps writes it (kombu's serializer): separators ", " and ": ", ensure_ascii
 * escapes, float repr, NaN/Infinity. (Not jansson: its tree costs an allocation per element
 * before any limit can be checked, and it cannot hold integers above INT64_MAX.) */
#include "common/json.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON -> msgpack, without a tree: a first pass validates the text and counts the
 * elements of every container (so every limit holds before anything is allocated per element),
 * a second pass writes msgpack with those counts. It reads what Python's json.loads reads:
 * NaN, Infinity and -Infinity are numbers, "\u0000" is allowed, raw control characters in
 * strings are not, integers keep full precision (int64 and uint64 here; beyond that
 * CEL_EUNSUPPORTED rather than a rounded float), lone surrogates cannot become UTF-8
 * (CEL_EUTF8). Duplicate keys are kept as they come (Python keeps the last value). ---- */

struct jpframe {
    size_t idx; /* into counts */
    bool obj;
};

struct jp {
    const char *start, *p, *end;
    const struct cel_limits *lim;
    struct cel_buf *out; /* NULL in the first pass */
    uint32_t *counts;    /* elements of each container, in order of opening */
    size_t ncounts, capcounts, next;
    struct jpframe inl[32], *stack;
    size_t depth, cap;
    char *err;
    size_t errlen;
};

static int jp_fail(struct jp *j, int rc, const char *why)
{
    int line = 1, col = 1;
    for (const char *q = j->start; q < j->p && q < j->end; q++, col++) {
        if (*q == '\n') {
            line++;
            col = 0;
        }
    }
    cel__errf(j->err, j->errlen, "line %d col %d: %s", line, col, why);
    return rc;
}

static void jp_ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static bool jp_lit(struct jp *j, const char *lit, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return false;
    j->p += n;
    return true;
}

static bool is_digit(const struct jp *j)
{
    return j->p < j->end && *j->p >= '0' && *j->p <= '9';
}

static int hexdigit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static int hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hexdigit(p[i]);
        if (d < 0)
            return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

/* One \uXXXX escape (p just after "\u"), joining a surrogate pair. */
static int jp_unicode(struct jp *j, const char **pp, uint32_t *cp)
{
    const char *p = *pp;
    j->p = p;
    if (j->end - p < 4 || hex4(p, cp))
        return jp_fail(j, CEL_EJSON, "invalid \\u escape");
    p += 4;
    if (*cp >= 0xdc00 && *cp <= 0xdfff)
        return jp_fail(j, CEL_EUTF8, "lone low surrogate");
    if (*cp >= 0xd800 && *cp <= 0xdbff) {
        uint32_t lo;
        if (j->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) || lo < 0xdc00 ||
            lo > 0xdfff)
            return jp_fail(j, CEL_EUTF8, "lone high surrogate");
        *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
    }
    *pp = p;
    return 0;
}

static size_t utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* One escape sequence (p after the backslash) as a code point. */
static int jp_escape(struct jp *j, const char **pp, uint32_t *cp)
{
    static const char unesc[128] = {['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b',
                                    ['f'] = '\f', ['n'] = '\n',  ['r'] = '\r', ['t'] = '\t'};
    unsigned char c = *pp < j->end ? (unsigned char)**pp : 0;
    if (c == 'u') {
        ++*pp;
        return jp_unicode(j, pp, cp);
    }
    if (c >= 128 || !unesc[c]) {
        j->p = *pp;
        return jp_fail(j, CEL_EJSON, "invalid escape");
    }
    ++*pp;
    *cp = (unsigned char)unesc[c];
    return 0;
}

/* Decodes (or, with o == NULL, only measures) a string; j->p is just after the opening quote
 * and ends after the closing one. The whole text was checked to be UTF-8 beforehand. */
static int jp_strbody(struct jp *j, char *o, size_t *n)
{
    const char *p = j->p;
    size_t len = 0;
    for (;;) {
        const char *run = p;
        while (p < j->end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
            p++;
        if (o && p > run)
            memcpy(o + len, run, (size_t)(p - run));
        len += (size_t)(p - run);
        if (p == j->end || (unsigned char)*p < 0x20) {
            j->p = p;
            return jp_fail(j, CEL_EJSON,
                           p == j->end ? "unterminated string" : "control character in string");
        }
        if (*p++ == '"')
            break;
        uint32_t cp;
        char tmp[4];
        int rc = jp_escape(j, &p, &cp);
        if (rc)
            return rc;
        len += utf8_put(o ? o + len : tmp, cp);
    }
    j->p = p;
    *n = len;
    return 0;
}

static int jp_string(struct jp *j)
{
    const char *open = ++j->p;
    size_t n;
    int rc = jp_strbody(j, NULL, &n);
    if (rc)
        return rc;
    if (n > j->lim->max_str) {
        j->p = open;
        return jp_fail(j, CEL_ETOOBIG, "string exceeds the size limit");
    }
    if (!j->out)
        return 0;
    struct cel_buf *b = j->out;
    if ((rc = cel__mp_put_str_hdr(b, n)) || (rc = cel_buf_reserve(b, n)))
        return rc;
    j->p = open;
    rc = jp_strbody(j, b->data + b->len, &n);
    b->len += n;
    b->data[b->len] = '\0';
    return rc;
}

static int jp_double(struct jp *j, const char *s, size_t n)
{
    char small[64], *text = n < sizeof small ? small : malloc(n + 1);
    if (!text)
        return CEL_ENOMEM;
    memcpy(text, s, n);
    text[n] = '\0';
    double d = strtod(text, NULL); /* correctly rounded, as Python's float(); 1e400 -> inf */
    if (text != small)
        free(text);
    return cel__mp_put_double(j->out, d);
}

static void jp_digits(struct jp *j, uint64_t *mag, bool *overflow)
{
    for (; is_digit(j); j->p++) {
        unsigned d = (unsigned)(*j->p - '0');
        if (*mag > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            *mag = *mag * 10 + d;
    }
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)? as Python's scanner reads it. */
static int jp_number(struct jp *j)
{
    const char *s = j->p;
    bool neg = *j->p == '-', overflow = false, integer = true;
    uint64_t mag = 0;
    j->p += neg;
    if (neg && jp_lit(j, "Infinity", 8))
        return j->out ? cel__mp_put_double(j->out, -INFINITY) : 0;
    if (!is_digit(j))
        return jp_fail(j, CEL_EJSON, "invalid number");
    if (*j->p == '0')
        j->p++;
    else
        jp_digits(j, &mag, &overflow);
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        integer = false;
        if (!is_digit(j))
            return jp_fail(j, CEL_EJSON, "invalid number");
        while (is_digit(j))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        integer = false;
        j->p += j->p < j->end && (*j->p == '+' || *j->p == '-');
        if (!is_digit(j))
            return jp_fail(j, CEL_EJSON, "invalid number");
        while (is_digit(j))
            j->p++;
    }
    if (!integer)
        return j->out ? jp_double(j, s, (size_t)(j->p - s)) : 0;
    if (overflow || (neg && mag > (uint64_t)INT64_MAX + 1)) {
        j->p = s;
        return jp_fail(j, CEL_EUNSUPPORTED, "integer outside the 64-bit range");
    }
    if (!j->out)
        return 0;
    if (!neg)
        return cel__mp_put_uint(j->out, mag);
    return cel__mp_put_int(j->out, mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag);
}

/* true, false, null, NaN, Infinity */
static int jp_word(struct jp *j)
{
    static const struct {
        const char *text;
        size_t len;
        int kind; /* 0 nil, 1 true, 2 false, 3 NaN, 4 Infinity */
    } words[] = {
        {"null", 4, 0}, {"true", 4, 1}, {"false", 5, 2}, {"NaN", 3, 3}, {"Infinity", 8, 4}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (!jp_lit(j, words[i].text, words[i].len))
            continue;
        if (!j->out)
            return 0;
        switch (words[i].kind) {
        case 0:
            return cel__mp_put_nil(j->out);
        case 1:
            return cel__mp_put_bool(j->out, true);
        case 2:
            return cel__mp_put_bool(j->out, false);
        case 3:
            return cel__mp_put_double(j->out, NAN);
        default:
            return cel__mp_put_double(j->out, INFINITY);
        }
    }
    return jp_fail(j, CEL_EJSON, "expected a value");
}

static int jp_push(struct jp *j, struct jpframe f)
{
    if (j->depth == j->cap) {
        struct jpframe *s = malloc(j->cap * 2 * sizeof *s);
        if (!s)
            return CEL_ENOMEM;
        memcpy(s, j->stack, j->depth * sizeof *s);
        if (j->stack != j->inl)
            free(j->stack);
        j->stack = s;
        j->cap *= 2;
    }
    j->stack[j->depth++] = f;
    return 0;
}

/* A new container's slot in counts (first pass) or its counted header (second pass). */
static int jp_open(struct jp *j, bool obj)
{
    if (j->depth + 1 > j->lim->max_depth)
        return jp_fail(j, CEL_ETOODEEP, "nesting deeper than the limit");
    j->p++;
    size_t idx = j->out ? j->next++ : j->ncounts;
    if (!j->out) {
        if (j->ncounts == j->capcounts) {
            size_t cap = j->capcounts ? j->capcounts * 2 : 64;
            uint32_t *c = realloc(j->counts, cap * sizeof *c);
            if (!c)
                return CEL_ENOMEM;
            j->counts = c;
            j->capcounts = cap;
        }
        j->counts[j->ncounts++] = 0;
    }
    int rc = jp_push(j, (struct jpframe){idx, obj});
    if (rc || !j->out)
        return rc;
    return obj ? cel__mp_put_map(j->out, j->counts[idx])
               : cel__mp_put_array(j->out, j->counts[idx]);
}

/* One more element in the innermost container (first pass: counted against the limit). */
static int jp_count(struct jp *j)
{
    if (j->out)
        return 0;
    uint32_t *c = &j->counts[j->stack[j->depth - 1].idx];
    if (*c >= j->lim->max_items || *c == UINT32_MAX)
        return jp_fail(j, CEL_ETOOBIG, "container exceeds the element limit");
    ++*c;
    return 0;
}

/* "key": of an object member. */
static int jp_key(struct jp *j)
{
    jp_ws(j);
    if (j->p == j->end || *j->p != '"')
        return jp_fail(j, CEL_EJSON, "expected a string key");
    int rc = jp_string(j);
    if (rc)
        return rc;
    jp_ws(j);
    if (j->p == j->end || *j->p != ':')
        return jp_fail(j, CEL_EJSON, "expected ':'");
    j->p++;
    return 0;
}

/* A value: scalars entirely; a container is opened, and its first key read. *more tells
 * whether a value must follow (a non-empty container was opened). */
static int jp_value(struct jp *j, bool *more)
{
    *more = false;
    if (j->p == j->end)
        return jp_fail(j, CEL_EJSON, "expected a value");
    char c = *j->p;
    if (c == '"')
        return jp_string(j);
    if (c == '-' || (c >= '0' && c <= '9'))
        return jp_number(j);
    if (c != '[' && c != '{')
        return jp_word(j);
    int rc = jp_open(j, c == '{');
    if (rc)
        return rc;
    jp_ws(j);
    if (j->p < j->end && *j->p == (c == '{' ? '}' : ']')) {
        j->p++; /* empty: its count stays 0 */
        j->depth--;
        return 0;
    }
    *more = true;
    if ((rc = jp_count(j)))
        return rc;
    return c == '{' ? jp_key(j) : 0;
}

/* After a value inside a container: ',' and the next member, or the closer. */
static int jp_next(struct jp *j, bool *more)
{
    struct jpframe *f = &j->stack[j->depth - 1];
    *more = false;
    if (j->p < j->end && *j->p == ',') {
        j->p++;
        int rc = jp_count(j);
        *more = true;
        return rc ? rc : f->obj ? jp_key(j) : 0;
    }
    if (j->p < j->end && *j->p == (f->obj ? '}' : ']')) {
        j->p++;
        j->depth--;
        return 0;
    }
    return jp_fail(j, CEL_EJSON, f->obj ? "expected ',' or '}'" : "expected ',' or ']'");
}

static int jp_run(struct jp *j)
{
    bool more = true;
    int rc = 0;
    j->p = j->start;
    j->depth = 0;
    while (rc == 0 && (more || j->depth)) {
        jp_ws(j);
        rc = more ? jp_value(j, &more) : jp_next(j, &more);
    }
    jp_ws(j);
    if (rc == 0 && j->p != j->end)
        rc = jp_fail(j, CEL_EJSON, "extra data after the value");
    return rc;
}

int cel_json_to_msgpack(const char *json, size_t len, const struct cel_limits *lim,
                        struct cel_buf *out, char *err, size_t errlen)
{
    if (!lim)
        lim = &cel_default_limits;
    if (!json)
        json = "";
    if (len > lim->max_body) {
        cel__errf(err, errlen, "JSON text of %zu bytes exceeds the limit of %zu", len,
                  lim->max_body);
        return CEL_ETOOBIG;
    }
    if (!cel__utf8_valid(json, len)) {
        cel__errf(err, errlen, "JSON text is not valid UTF-8");
        return CEL_EUTF8;
    }
    struct jp j = {
        .start = json, .end = json + len, .lim = lim, .cap = 32, .err = err, .errlen = errlen};
    j.stack = j.inl;
    size_t start = out->len;
    int rc = jp_run(&j);
    if (rc == 0) {
        j.out = out;
        rc = jp_run(&j);
    }
    free(j.counts);
    if (j.stack != j.inl)
        free(j.stack);
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
