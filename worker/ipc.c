/* ipc.c: packing and unpacking of the job and reply frames (format in ipc.h). */
#include "worker/ipc.h"

#include <string.h>

#include "celeriac/celeriac.h"

size_t cel__frame_begin(struct cel_buf *out)
{
    size_t start = out->len;
    uint32_t zero = 0;
    cel_buf_append(out, &zero, sizeof zero);
    return start;
}

void cel__frame_end(struct cel_buf *out, size_t start)
{
    uint32_t n = (uint32_t)(out->len - start - sizeof n);
    memcpy(out->data + start, &n, sizeof n);
}

int cel__frame_next(const char *data, size_t len, struct cel_span *payload, size_t *used)
{
    uint32_t n;
    if (len < sizeof n)
        return 0;
    memcpy(&n, data, sizeof n);
    if (n > CEL__FRAME_MAX)
        return CEL_ETOOBIG;
    if (len - sizeof n < n)
        return 0;
    *payload = (struct cel_span){data + sizeof n, n};
    *used = sizeof n + n;
    return 1;
}

static void pack_span(msgpack_packer *pk, struct cel_span s)
{
    if (!s.ptr) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_str(pk, s.len);
    msgpack_pack_str_body(pk, s.ptr, s.len);
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    pack_span(pk, (struct cel_span){s, s ? strlen(s) : 0});
}

static void pack_bin(msgpack_packer *pk, struct cel_span s)
{
    if (!s.len) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_bin(pk, s.len);
    msgpack_pack_bin_body(pk, s.ptr, s.len);
}

int cel__ipc_pack_job(struct cel_buf *out, const struct cel__ipc_job *j)
{
    size_t start = cel__frame_begin(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, cel_buf_msgpack_write);
    msgpack_pack_array(&pk, 13);
    msgpack_pack_uint64(&pk, j->seq);
    pack_span(&pk, j->task);
    pack_span(&pk, j->id);
    pack_span(&pk, j->root_id);
    pack_span(&pk, j->parent_id);
    pack_span(&pk, j->group);
    pack_span(&pk, j->queue);
    msgpack_pack_int64(&pk, j->retries);
    msgpack_pack_int64(&pk, j->max_retries);
    if (j->redelivered)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    msgpack_pack_int64(&pk, j->soft_deadline_us);
    if (cel_buf_append(out, j->args.ptr, j->args.len) < 0 ||
        cel_buf_append(out, j->kwargs.ptr, j->kwargs.len) < 0)
        return CEL_ENOMEM;
    cel__frame_end(out, start);
    return 0;
}

static struct cel_span obj_str(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_STR)
        return (struct cel_span){o->via.str.ptr ? o->via.str.ptr : "", o->via.str.size};
    return (struct cel_span){NULL, 0};
}

static int64_t obj_int(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    return 0;
}

static double obj_num(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
        return o->via.f64;
    return (double)obj_int(o);
}

static int unpack(struct cel_span payload, msgpack_zone *z, msgpack_object *root, uint32_t n)
{
    size_t off = 0;
    msgpack_zone_clear(z);
    if (msgpack_unpack(payload.ptr, payload.len, &off, z, root) != MSGPACK_UNPACK_SUCCESS ||
        root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size != n)
        return CEL_EDECODE;
    return 0;
}

int cel__ipc_unpack_job(struct cel_span payload, msgpack_zone *z, struct cel__ipc_job *j)
{
    msgpack_object root;
    if (unpack(payload, z, &root, 13) < 0)
        return CEL_EDECODE;
    const msgpack_object *o = root.via.array.ptr;
    j->seq = (uint64_t)obj_int(&o[0]);
    j->task = obj_str(&o[1]);
    j->id = obj_str(&o[2]);
    j->root_id = obj_str(&o[3]);
    j->parent_id = obj_str(&o[4]);
    j->group = obj_str(&o[5]);
    j->queue = obj_str(&o[6]);
    j->retries = obj_int(&o[7]);
    j->max_retries = obj_int(&o[8]);
    j->redelivered = o[9].type == MSGPACK_OBJECT_BOOLEAN && o[9].via.boolean;
    j->soft_deadline_us = obj_int(&o[10]);
    j->args_obj = &o[11];
    j->kwargs_obj = &o[12];
    if (!j->task.ptr || !j->id.ptr || o[11].type != MSGPACK_OBJECT_ARRAY ||
        o[12].type != MSGPACK_OBJECT_MAP)
        return CEL_EDECODE;
    return 0;
}

static void pack_exc(msgpack_packer *pk, const struct cel__reply *r, bool retry)
{
    msgpack_pack_array(pk, retry ? 4 : 3);
    pack_cstr(pk, r->exc_type ? r->exc_type : "RuntimeError");
    pack_cstr(pk, r->exc_module ? r->exc_module : "builtins");
    pack_cstr(pk, r->message ? r->message : "");
    if (retry)
        msgpack_pack_double(pk, r->countdown);
}

int cel__ipc_pack_reply(struct cel_buf *out, const struct cel__reply *r)
{
    size_t start = cel__frame_begin(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, cel_buf_msgpack_write);
    msgpack_pack_array(&pk, 8);
    msgpack_pack_uint64(&pk, r->seq);
    msgpack_pack_int(&pk, r->outcome);
    if (r->outcome == CEL__OUT_SUCCESS)
        pack_bin(&pk, r->result);
    else
        pack_exc(&pk, r, r->outcome == CEL__OUT_RETRY);
    msgpack_pack_array(&pk, r->n_enq);
    if (cel_buf_append(out, r->enq_raw.ptr, r->enq_raw.len) < 0)
        return CEL_ENOMEM;
    msgpack_pack_int64(&pk, r->utime_us);
    msgpack_pack_int64(&pk, r->stime_us);
    msgpack_pack_int64(&pk, r->maxrss_kb);
    msgpack_pack_int64(&pk, r->wall_us);
    cel__frame_end(out, start);
    return out->data ? 0 : CEL_ENOMEM;
}

int cel__ipc_pack_enq(struct cel_buf *out, const struct cel__enq *e)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, cel_buf_msgpack_write);
    msgpack_pack_array(&pk, 6);
    pack_cstr(&pk, e->task);
    pack_cstr(&pk, e->queue);
    pack_bin(&pk, e->args);
    pack_bin(&pk, e->kwargs);
    msgpack_pack_double(&pk, e->countdown);
    pack_cstr(&pk, e->idempotency_key);
    return out->data ? 0 : CEL_ENOMEM;
}

static const char *dup_str(struct cel_arena *a, const msgpack_object *o)
{
    struct cel_span s = obj_str(o);
    return s.ptr ? cel_arena_strndup(a, s.ptr, s.len) : NULL;
}

static struct cel_span dup_bin(struct cel_arena *a, const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_BIN || !o->via.bin.size)
        return (struct cel_span){NULL, 0};
    char *p = cel_arena_alloc(a, o->via.bin.size);
    if (!p)
        return (struct cel_span){NULL, 0};
    memcpy(p, o->via.bin.ptr, o->via.bin.size);
    return (struct cel_span){p, o->via.bin.size};
}

static int unpack_enq(const msgpack_object *arr, struct cel_arena *a, struct cel__reply *r)
{
    if (arr->type != MSGPACK_OBJECT_ARRAY)
        return CEL_EDECODE;
    r->n_enq = arr->via.array.size;
    r->enq = r->n_enq ? cel_arena_calloc(a, r->n_enq * sizeof *r->enq) : NULL;
    if (r->n_enq && !r->enq)
        return CEL_ENOMEM;
    for (uint32_t i = 0; i < r->n_enq; i++) {
        const msgpack_object *e = &arr->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 6)
            return CEL_EDECODE;
        const msgpack_object *f = e->via.array.ptr;
        r->enq[i] = (struct cel__enq){dup_str(a, &f[0]), dup_str(a, &f[1]), dup_str(a, &f[5]),
                                      dup_bin(a, &f[2]), dup_bin(a, &f[3]), obj_num(&f[4])};
        if (!r->enq[i].task)
            return CEL_EDECODE;
    }
    return 0;
}

static int unpack_exc(const msgpack_object *p, struct cel_arena *a, struct cel__reply *r)
{
    uint32_t want = r->outcome == CEL__OUT_RETRY ? 4 : 3;
    if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != want)
        return CEL_EDECODE;
    const msgpack_object *f = p->via.array.ptr;
    r->exc_type = dup_str(a, &f[0]);
    r->exc_module = dup_str(a, &f[1]);
    r->message = dup_str(a, &f[2]);
    r->countdown = want == 4 ? obj_num(&f[3]) : 0;
    return r->exc_type && r->exc_module && r->message ? 0 : CEL_EDECODE;
}

int cel__ipc_unpack_reply(struct cel_span payload, msgpack_zone *z, struct cel_arena *a,
                          struct cel__reply *r)
{
    msgpack_object root;
    memset(r, 0, sizeof *r);
    if (unpack(payload, z, &root, 8) < 0)
        return CEL_EDECODE;
    const msgpack_object *o = root.via.array.ptr;
    r->seq = (uint64_t)obj_int(&o[0]);
    r->outcome = (int)obj_int(&o[1]);
    int rc = 0;
    if (r->outcome == CEL__OUT_SUCCESS)
        r->result = dup_bin(a, &o[2]);
    else if (r->outcome == CEL__OUT_FAILURE || r->outcome == CEL__OUT_RETRY)
        rc = unpack_exc(&o[2], a, r);
    else
        rc = CEL_EDECODE;
    if (rc == 0)
        rc = unpack_enq(&o[3], a, r);
    r->utime_us = obj_int(&o[4]);
    r->stime_us = obj_int(&o[5]);
    r->maxrss_kb = obj_int(&o[6]);
    r->wall_us = obj_int(&o[7]);
    return rc;
}
