/* client_json.c: JSON (jansson) to msgpack for arguments and signatures, signature maps, and
 * the small text helpers of the client. Pure. */
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/message.h"
#include "producer/client_priv.h"

#define CEL__JSON_MAX_DEPTH 64

static int pack_value(msgpack_packer *pk, const json_t *v, int depth);

static int pack_object(msgpack_packer *pk, const json_t *v, int depth)
{
    const char *key;
    json_t *item;
    if (msgpack_pack_map(pk, json_object_size(v)))
        return CEL_ENOMEM;
    json_object_foreach((json_t *)v, key, item)
    {
        size_t n = strlen(key);
        if (msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, key, n))
            return CEL_ENOMEM;
        int rc = pack_value(pk, item, depth + 1);
        if (rc)
            return rc;
    }
    return 0;
}

static int pack_array(msgpack_packer *pk, const json_t *v, int depth)
{
    size_t i;
    json_t *item;
    if (msgpack_pack_array(pk, json_array_size(v)))
        return CEL_ENOMEM;
    json_array_foreach((json_t *)v, i, item)
    {
        int rc = pack_value(pk, item, depth + 1);
        if (rc)
            return rc;
    }
    return 0;
}

static int pack_value(msgpack_packer *pk, const json_t *v, int depth)
{
    if (depth > CEL__JSON_MAX_DEPTH)
        return CEL_ETOODEEP;
    int bad = 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return pack_object(pk, v, depth);
    case JSON_ARRAY:
        return pack_array(pk, v, depth);
    case JSON_STRING: {
        size_t n = json_string_length(v);
        bad = msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, json_string_value(v), n);
        break;
    }
    case JSON_INTEGER:
        bad = msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        bad = msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        bad = msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        bad = msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        bad = msgpack_pack_nil(pk);
        break;
    }
    return bad ? CEL_ENOMEM : 0;
}

int cel__json_pack(const json_t *v, struct cel_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, cel_buf_msgpack_write);
    return pack_value(&pk, v, 0);
}

int cel__json_text_pack(const char *text, int want, const char *what, struct cel_buf *out,
                        char *err, size_t errlen)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        snprintf(err, errlen, "%s: invalid JSON at line %d column %d: %s", what, je.line, je.column,
                 je.text);
        return CEL_EJSON;
    }
    int rc = 0;
    if (want >= 0 && (int)json_typeof(v) != want) {
        snprintf(err, errlen, "%s: must be a JSON %s", what,
                 want == JSON_ARRAY ? "array" : "object");
        rc = CEL_EJSON;
    } else if ((rc = cel__json_pack(v, out)) != 0) {
        snprintf(err, errlen, "%s: %s", what, cel_strerror(rc));
    }
    json_decref(v);
    return rc;
}

int cel__parse_time(const char *s, double *secs, int64_t *abs_us)
{
    char *end;
    *secs = 0;
    *abs_us = 0;
    if (!*s)
        return CEL_EINVAL;
    double d = strtod(s, &end);
    if (*end == '\0' && end != s) {
        if (!isfinite(d) || d < 0)
            return CEL_EINVAL;
        *secs = d;
        return 0;
    }
    int64_t us;
    if (cel_iso8601_parse(s, strlen(s), &us))
        return CEL_EINVAL;
    *abs_us = us;
    return 0;
}

size_t cel__default_queue_len(const char *task)
{
    const char *dot = strchr(task, '.');
    return dot && dot != task ? (size_t)(dot - task) : strlen(task);
}

static int pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n) ? CEL_ENOMEM : 0;
}

/* The options map: the caller's entries, then queue and task_id when absent. */
static int pack_sig_options(msgpack_packer *pk, const struct cel_sig *s, const char *task_id)
{
    msgpack_zone z;
    msgpack_object obj = {.type = MSGPACK_OBJECT_MAP};
    size_t off = 0;
    if (!msgpack_zone_init(&z, 1024))
        return CEL_ENOMEM;
    if (s->options.len &&
        (msgpack_unpack(s->options.ptr, s->options.len, &off, &z, &obj) != MSGPACK_UNPACK_SUCCESS ||
         obj.type != MSGPACK_OBJECT_MAP)) {
        msgpack_zone_destroy(&z);
        return CEL_EINVAL;
    }
    bool has_queue = false, has_id = false;
    const msgpack_object_map *m = s->options.len ? &obj.via.map : NULL;
    for (uint32_t i = 0; m && i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            continue;
        has_queue |= k->via.str.size == 5 && !memcmp(k->via.str.ptr, "queue", 5);
        has_id |= k->via.str.size == 7 && !memcmp(k->via.str.ptr, "task_id", 7);
    }
    bool add_id = task_id && !has_id;
    size_t n = (m ? m->size : 0) + !has_queue + add_id;
    int rc = msgpack_pack_map(pk, n) ? CEL_ENOMEM : 0;
    for (uint32_t i = 0; !rc && m && i < m->size; i++)
        rc = msgpack_pack_object(pk, m->ptr[i].key) || msgpack_pack_object(pk, m->ptr[i].val)
                 ? CEL_ENOMEM
                 : 0;
    if (!rc && !has_queue)
        rc = pack_str(pk, "queue", 5) || pack_str(pk, s->task, cel__default_queue_len(s->task));
    if (!rc && add_id)
        rc = pack_str(pk, "task_id", 7) || pack_str(pk, task_id, strlen(task_id));
    msgpack_zone_destroy(&z);
    return rc ? CEL_ENOMEM : 0;
}

static int pack_part(msgpack_packer *pk, const char *key, struct cel_span mp, bool map)
{
    if (pack_str(pk, key, strlen(key)))
        return CEL_ENOMEM;
    if (!mp.len)
        return (map ? msgpack_pack_map(pk, 0) : msgpack_pack_array(pk, 0)) ? CEL_ENOMEM : 0;
    return cel_buf_msgpack_write(pk->data, mp.ptr, mp.len) ? CEL_ENOMEM : 0;
}

int cel__sig_pack(const struct cel_sig *s, const char *task_id, struct cel_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, cel_buf_msgpack_write);
    if (!s->task || !*s->task)
        return CEL_EINVAL;
    int rc = msgpack_pack_map(&pk, 6) || pack_str(&pk, "task", 4) ||
                     pack_str(&pk, s->task, strlen(s->task))
                 ? CEL_ENOMEM
                 : 0;
    if (!rc)
        rc = pack_part(&pk, "args", s->args, false);
    if (!rc)
        rc = pack_part(&pk, "kwargs", s->kwargs, true);
    if (!rc)
        rc = pack_str(&pk, "options", 7) ? CEL_ENOMEM : pack_sig_options(&pk, s, task_id);
    if (!rc)
        rc = pack_str(&pk, "subtask_type", 12) || msgpack_pack_nil(&pk) ||
                     pack_str(&pk, "immutable", 9) ||
                     (s->immutable ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk))
                 ? CEL_ENOMEM
                 : 0;
    return rc;
}

/* str(exc): no args -> "", one str arg -> the string, one other -> its repr, else the tuple. */
int cel__exc_str(struct cel_span args, struct cel_buf *out)
{
    msgpack_zone z;
    msgpack_object obj;
    size_t off = 0;
    if (!msgpack_zone_init(&z, 1024))
        return CEL_ENOMEM;
    int rc = 0;
    if (!args.len || msgpack_unpack(args.ptr, args.len, &off, &z, &obj) != MSGPACK_UNPACK_SUCCESS) {
        rc = args.len ? cel_msgpack_repr(args, 4096, out) : 0;
    } else if (obj.type != MSGPACK_OBJECT_ARRAY) {
        rc = obj.type == MSGPACK_OBJECT_STR ? cel_buf_append(out, obj.via.str.ptr, obj.via.str.size)
                                            : cel_msgpack_repr(args, 4096, out);
    } else if (obj.via.array.size == 1 && obj.via.array.ptr[0].type == MSGPACK_OBJECT_STR) {
        rc = cel_buf_append(out, obj.via.array.ptr[0].via.str.ptr,
                            obj.via.array.ptr[0].via.str.size);
    } else if (obj.via.array.size == 1) {
        /* repr of the single element: skip the array header byte(s) */
        size_t hdr = (unsigned char)args.ptr[0] == 0x91   ? 1
                     : (unsigned char)args.ptr[0] == 0xdc ? 3
                                                          : 5;
        rc = cel_msgpack_repr((struct cel_span){args.ptr + hdr, args.len - hdr}, 4096, out);
    } else if (obj.via.array.size > 1) {
        size_t start = out->len;
        rc = cel_msgpack_repr(args, 4096, out);
        if (!rc && out->len - start >= 2 && out->data[start] == '[' &&
            out->data[out->len - 1] == ']') {
            out->data[start] = '(';
            out->data[out->len - 1] = ')';
        }
    }
    msgpack_zone_destroy(&z);
    return rc;
}

/* ---- extra headers: msgpack map -> header table ---- */

static int obj_to_value(struct cel_arena *a, const msgpack_object *o, struct cel_value *v,
                        int depth);

static int obj_str(struct cel_arena *a, const char *p, size_t n, struct cel_span *out)
{
    char *d = cel_arena_strndup(a, p, n);
    *out = (struct cel_span){d, n};
    return d ? 0 : CEL_ENOMEM;
}

static int obj_array(struct cel_arena *a, const msgpack_object_array *arr, struct cel_value *v,
                     int depth)
{
    v->type = CEL_V_ARRAY;
    v->u.a.n = arr->size;
    v->u.a.items = cel_arena_calloc(a, (arr->size ? arr->size : 1) * sizeof *v->u.a.items);
    if (!v->u.a.items)
        return CEL_ENOMEM;
    for (uint32_t i = 0; i < arr->size; i++) {
        int rc = obj_to_value(a, &arr->ptr[i], &v->u.a.items[i], depth + 1);
        if (rc)
            return rc;
    }
    return 0;
}

static int obj_map(struct cel_arena *a, const msgpack_object_map *m, struct cel_table *t, int depth)
{
    t->n = m->size;
    t->items = cel_arena_calloc(a, (m->size ? m->size : 1) * sizeof *t->items);
    if (!t->items)
        return CEL_ENOMEM;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return CEL_EINVAL;
        int rc = obj_str(a, k->via.str.ptr, k->via.str.size, &t->items[i].key);
        if (!rc)
            rc = obj_to_value(a, &m->ptr[i].val, &t->items[i].v, depth + 1);
        if (rc)
            return rc;
    }
    return 0;
}

static int obj_to_value(struct cel_arena *a, const msgpack_object *o, struct cel_value *v,
                        int depth)
{
    memset(v, 0, sizeof *v);
    if (depth > CEL__JSON_MAX_DEPTH)
        return CEL_ETOODEEP;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        v->type = CEL_V_VOID;
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        v->type = CEL_V_BOOL;
        v->u.b = o->via.boolean;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            return CEL_EUNSUPPORTED;
        *v = cel_value_int((int64_t)o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = cel_value_int(o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        v->type = CEL_V_DOUBLE;
        v->u.d = o->via.f64;
        return 0;
    case MSGPACK_OBJECT_STR:
        v->type = CEL_V_STR;
        return obj_str(a, o->via.str.ptr, o->via.str.size, &v->u.s);
    case MSGPACK_OBJECT_BIN:
        v->type = CEL_V_BYTES;
        return obj_str(a, o->via.bin.ptr, o->via.bin.size, &v->u.s);
    case MSGPACK_OBJECT_ARRAY:
        return obj_array(a, &o->via.array, v, depth);
    case MSGPACK_OBJECT_MAP: {
        struct cel_table t = {NULL, 0};
        int rc = obj_map(a, &o->via.map, &t, depth);
        v->type = CEL_V_TABLE;
        v->u.t.items = t.items;
        v->u.t.n = t.n;
        return rc;
    }
    default:
        return CEL_EUNSUPPORTED;
    }
}

int cel__headers_table(struct cel_arena *a, struct cel_span map, struct cel_table *out)
{
    msgpack_zone z;
    msgpack_object obj;
    size_t off = 0;
    if (!msgpack_zone_init(&z, 2048))
        return CEL_ENOMEM;
    int rc = CEL_EINVAL;
    if (msgpack_unpack(map.ptr, map.len, &off, &z, &obj) == MSGPACK_UNPACK_SUCCESS &&
        obj.type == MSGPACK_OBJECT_MAP)
        rc = obj_map(a, &obj.via.map, out, 0);
    msgpack_zone_destroy(&z);
    return rc;
}
