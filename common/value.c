/* value.c: lookups in header tables (the neutral model of AMQP field tables). */
#include "common/value.h"

#include <string.h>

const struct cel_value *cel_table_get(const struct cel_table *t, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < t->n; i++) {
        const struct cel_span *k = &t->items[i].key;
        if (k->len == klen && (klen == 0 || memcmp(k->ptr, key, klen) == 0))
            return &t->items[i].v;
    }
    return NULL;
}
