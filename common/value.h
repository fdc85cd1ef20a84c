/* value.h: a neutral model of message header values (AMQP field tables, msgpack maps),
 * so the codec does not depend on one broker's types. */
#ifndef CEL_COMMON_VALUE_H
#define CEL_COMMON_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "celeriac/celeriac.h"

enum cel_vtype {
    CEL_V_VOID, /* AMQP 'V', msgpack nil */
    CEL_V_BOOL, /* 't' */
    CEL_V_INT,  /* 'b','s','I','L' (signed) -> encoded as 'I' when it fits in int32, else 'L' */
    CEL_V_UINT, /* 'B','u','i','l' (unsigned, from AMQP input only); encoded as 'L' if <= INT64_MAX
                 */
    CEL_V_DOUBLE, /* 'f','d' */
    CEL_V_STR,    /* 'S' (UTF-8 text) */
    CEL_V_BYTES,  /* 'x' */
    CEL_V_ARRAY,  /* 'A' */
    CEL_V_TABLE,  /* 'F' */
};

struct cel_field;

struct cel_value {
    enum cel_vtype type;
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double d;
        struct cel_span s; /* STR and BYTES; borrowed */
        struct {
            struct cel_value *items;
            size_t n;
        } a;
        struct {
            struct cel_field *items;
            size_t n;
        } t;
    } u;
};

struct cel_field {
    struct cel_span key;
    struct cel_value v;
};

/* A header table: an ordered list of fields; memory borrowed (usually from an arena). */
struct cel_table {
    struct cel_field *items;
    size_t n;
};

/* First field with this key, or NULL. */
const struct cel_value *cel_table_get(const struct cel_table *t, const char *key);

static inline struct cel_value cel_value_str(const char *s, size_t n)
{
    struct cel_value v = {.type = CEL_V_STR};
    v.u.s.ptr = s;
    v.u.s.len = n;
    return v;
}
static inline struct cel_value cel_value_int(int64_t i)
{
    struct cel_value v = {.type = CEL_V_INT};
    v.u.i = i;
    return v;
}

#endif
