/* amqp_table.c: header values between celeriac's neutral model (common/value.h) and rabbitmq-c
 * field tables, with the py-amqp type traps of spec 1.3 in mind: we write only S, I, L, d, t,
 * V, A, F, x; we read every kind. 'L' is rabbitmq-c's "U64" but py-amqp writes and reads it as
 * signed, so it is read back as a signed INT (value.h). */
#include <string.h>

#include "broker-adapters/amqp/amqp_internal.h"

static int value_from_cel(const struct cel_value *v, amqp_field_value_t *out, amqp_pool_t *pool,
                          int depth);

static int array_from_cel(const struct cel_value *v, amqp_array_t *out, amqp_pool_t *pool,
                          int depth)
{
    out->num_entries = (int)v->u.a.n;
    out->entries = NULL;
    if (v->u.a.n == 0)
        return 0;
    out->entries = amqp_pool_alloc(pool, v->u.a.n * sizeof *out->entries);
    if (!out->entries)
        return CEL_ENOMEM;
    for (size_t i = 0; i < v->u.a.n; i++) {
        int rc = value_from_cel(&v->u.a.items[i], &out->entries[i], pool, depth + 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int table_from_cel(const struct cel_field *items, size_t n, amqp_table_t *out,
                          amqp_pool_t *pool, int depth)
{
    if (depth > CEL_AMQP_MAX_DEPTH)
        return CEL_ETOODEEP;
    out->num_entries = (int)n;
    out->entries = NULL;
    if (n == 0)
        return 0;
    out->entries = amqp_pool_alloc(pool, n * sizeof *out->entries);
    if (!out->entries)
        return CEL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (items[i].key.len > 255)
            return CEL_ETOOBIG; /* a field name is a shortstr */
        out->entries[i].key.bytes = (void *)items[i].key.ptr;
        out->entries[i].key.len = items[i].key.len;
        int rc = value_from_cel(&items[i].v, &out->entries[i].value, pool, depth + 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void int_from_cel(int64_t i, amqp_field_value_t *out)
{
    if (i >= INT32_MIN && i <= INT32_MAX) {
        out->kind = AMQP_FIELD_KIND_I32;
        out->value.i32 = (int32_t)i;
    } else {
        out->kind = AMQP_FIELD_KIND_U64; /* 'L', signed for py-amqp */
        out->value.u64 = (uint64_t)i;
    }
}

static void span_from_cel(uint8_t kind, struct cel_span s, amqp_field_value_t *out)
{
    out->kind = kind;
    out->value.bytes.bytes = (void *)s.ptr;
    out->value.bytes.len = s.len;
}

static int value_from_cel(const struct cel_value *v, amqp_field_value_t *out, amqp_pool_t *pool,
                          int depth)
{
    if (depth > CEL_AMQP_MAX_DEPTH)
        return CEL_ETOODEEP;
    switch (v->type) {
    case CEL_V_VOID:
        out->kind = AMQP_FIELD_KIND_VOID;
        return 0;
    case CEL_V_BOOL:
        out->kind = AMQP_FIELD_KIND_BOOLEAN;
        out->value.boolean = v->u.b;
        return 0;
    case CEL_V_INT:
        int_from_cel(v->u.i, out);
        return 0;
    case CEL_V_UINT:
        if (v->u.u > INT64_MAX)
            return CEL_EUNSUPPORTED;
        int_from_cel((int64_t)v->u.u, out);
        return 0;
    case CEL_V_DOUBLE:
        out->kind = AMQP_FIELD_KIND_F64;
        out->value.f64 = v->u.d;
        return 0;
    case CEL_V_STR:
        span_from_cel(AMQP_FIELD_KIND_UTF8, v->u.s, out);
        return 0;
    case CEL_V_BYTES:
        span_from_cel(AMQP_FIELD_KIND_BYTES, v->u.s, out);
        return 0;
    case CEL_V_ARRAY:
        out->kind = AMQP_FIELD_KIND_ARRAY;
        return array_from_cel(v, &out->value.array, pool, depth);
    case CEL_V_TABLE:
        out->kind = AMQP_FIELD_KIND_TABLE;
        return table_from_cel(v->u.t.items, v->u.t.n, &out->value.table, pool, depth);
    }
    return CEL_EUNSUPPORTED;
}

int cel__amqp_table_from_cel(const struct cel_table *in, amqp_table_t *out, amqp_pool_t *pool)
{
    if (!in)
        return table_from_cel(NULL, 0, out, pool, 0);
    return table_from_cel(in->items, in->n, out, pool, 0);
}

/* ---- amqp_table_t -> cel_table ---- */

static int value_to_cel(const amqp_field_value_t *in, struct cel_value *v, struct cel_arena *a,
                        int depth);

static int span_to_cel(enum cel_vtype t, amqp_bytes_t b, struct cel_value *v, struct cel_arena *a)
{
    char *s = cel_arena_strndup(a, b.len ? b.bytes : "", b.len);
    if (!s)
        return CEL_ENOMEM;
    v->type = t;
    v->u.s.ptr = s;
    v->u.s.len = b.len;
    return 0;
}

static int array_to_cel(const amqp_array_t *in, struct cel_value *v, struct cel_arena *a, int depth)
{
    v->type = CEL_V_ARRAY;
    v->u.a.n = in->num_entries > 0 ? (size_t)in->num_entries : 0;
    v->u.a.items = NULL;
    if (v->u.a.n == 0)
        return 0;
    v->u.a.items = cel_arena_calloc(a, v->u.a.n * sizeof *v->u.a.items);
    if (!v->u.a.items)
        return CEL_ENOMEM;
    for (size_t i = 0; i < v->u.a.n; i++) {
        int rc = value_to_cel(&in->entries[i], &v->u.a.items[i], a, depth + 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int table_to_cel(const amqp_table_t *in, struct cel_field **items, size_t *n,
                        struct cel_arena *a, int depth, const char **deep_key)
{
    if (depth > CEL_AMQP_MAX_DEPTH)
        return CEL_ETOODEEP;
    *n = in->num_entries > 0 ? (size_t)in->num_entries : 0;
    *items = NULL;
    if (*n == 0)
        return 0;
    *items = cel_arena_calloc(a, *n * sizeof **items);
    if (!*items)
        return CEL_ENOMEM;
    for (size_t i = 0; i < *n; i++) {
        const amqp_table_entry_t *e = &in->entries[i];
        char *key = cel_arena_strndup(a, e->key.len ? e->key.bytes : "", e->key.len);
        if (!key)
            return CEL_ENOMEM;
        (*items)[i].key.ptr = key;
        (*items)[i].key.len = e->key.len;
        int rc = value_to_cel(&e->value, &(*items)[i].v, a, depth + 1);
        if (rc == CEL_ETOODEEP && depth == 0 && deep_key && !*deep_key) {
            /* keep the other headers (so a dead letter still carries them) and report */
            (*items)[i].v.type = CEL_V_VOID;
            *deep_key = key;
            continue;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void set_int(struct cel_value *v, int64_t i)
{
    v->type = CEL_V_INT;
    v->u.i = i;
}

static void set_double(struct cel_value *v, double d)
{
    v->type = CEL_V_DOUBLE;
    v->u.d = d;
}

static double decimal_to_double(amqp_decimal_t d)
{
    double x = (double)(int32_t)d.value; /* rabbitmq-c keeps it unsigned; AMQP says signed */
    for (int i = 0; i < d.decimals; i++)
        x /= 10.0;
    return x;
}

static int scalar_to_cel(const amqp_field_value_t *in, struct cel_value *v)
{
    switch (in->kind) {
    case AMQP_FIELD_KIND_VOID:
        v->type = CEL_V_VOID;
        return 0;
    case AMQP_FIELD_KIND_BOOLEAN:
        v->type = CEL_V_BOOL;
        v->u.b = in->value.boolean != 0;
        return 0;
    case AMQP_FIELD_KIND_I8:
        set_int(v, in->value.i8);
        return 0;
    case AMQP_FIELD_KIND_U8:
        set_int(v, in->value.u8);
        return 0;
    case AMQP_FIELD_KIND_I16:
        set_int(v, in->value.i16);
        return 0;
    case AMQP_FIELD_KIND_U16:
        set_int(v, in->value.u16);
        return 0;
    case AMQP_FIELD_KIND_I32:
        set_int(v, in->value.i32);
        return 0;
    case AMQP_FIELD_KIND_U32:
        set_int(v, in->value.u32);
        return 0;
    case AMQP_FIELD_KIND_I64:
        set_int(v, in->value.i64);
        return 0;
    case AMQP_FIELD_KIND_U64: /* 'L': signed 64 as py-amqp writes it */
        set_int(v, (int64_t)in->value.u64);
        return 0;
    case AMQP_FIELD_KIND_TIMESTAMP:
        if (in->value.u64 > INT64_MAX) {
            v->type = CEL_V_UINT;
            v->u.u = in->value.u64;
        } else {
            set_int(v, (int64_t)in->value.u64);
        }
        return 0;
    case AMQP_FIELD_KIND_F32:
        set_double(v, in->value.f32);
        return 0;
    case AMQP_FIELD_KIND_F64:
        set_double(v, in->value.f64);
        return 0;
    case AMQP_FIELD_KIND_DECIMAL:
        set_double(v, decimal_to_double(in->value.decimal));
        return 0;
    }
    return CEL_EHEADER;
}

static int value_to_cel(const amqp_field_value_t *in, struct cel_value *v, struct cel_arena *a,
                        int depth)
{
    if (depth > CEL_AMQP_MAX_DEPTH)
        return CEL_ETOODEEP;
    switch (in->kind) {
    case AMQP_FIELD_KIND_UTF8:
        return span_to_cel(CEL_V_STR, in->value.bytes, v, a);
    case AMQP_FIELD_KIND_BYTES:
        return span_to_cel(CEL_V_BYTES, in->value.bytes, v, a);
    case AMQP_FIELD_KIND_ARRAY:
        return array_to_cel(&in->value.array, v, a, depth);
    case AMQP_FIELD_KIND_TABLE:
        v->type = CEL_V_TABLE;
        return table_to_cel(&in->value.table, &v->u.t.items, &v->u.t.n, a, depth, NULL);
    default:
        return scalar_to_cel(in, v);
    }
}

int cel__amqp_table_to_cel(const amqp_table_t *in, struct cel_table *out, struct cel_arena *a,
                           const char **deep_key)
{
    if (deep_key)
        *deep_key = NULL;
    return table_to_cel(in, &out->items, &out->n, a, 0, deep_key);
}
