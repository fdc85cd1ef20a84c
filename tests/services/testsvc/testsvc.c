/* testsvc.c: a small valid service for worker tests: testsvc.echo(x) returns x (scalars, strings
 * and flat containers of them) and testsvc.version() returns TESTSVC_VERSION.
 *
 * The hot-reload test (SIGHUP) builds a second copy of this file with a different version and
 * swaps it in, e.g.
 *     cc -shared -fPIC -Iinclude $(pkg-config --cflags msgpack) -DTESTSVC_VERSION=2 \
 *        tests/services/testsvc/testsvc.c -o <services dir>/testsvc.so
 * then checks that jobs started after the reload report 2. */
#include <string.h>

#include "celeriac/service.h"

#ifndef TESTSVC_VERSION
#define TESTSVC_VERSION 1
#endif

static int pack_scalar(msgpack_packer *pk, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return msgpack_pack_nil(pk);
    case MSGPACK_OBJECT_BOOLEAN:
        return o->via.boolean ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return msgpack_pack_uint64(pk, o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return msgpack_pack_int64(pk, o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return msgpack_pack_double(pk, o->via.f64);
    case MSGPACK_OBJECT_STR:
        return msgpack_pack_str_with_body(pk, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return msgpack_pack_bin_with_body(pk, o->via.bin.ptr, o->via.bin.size);
    default:
        return -1;
    }
}

static int pack_flat(msgpack_packer *pk, const msgpack_object *o)
{
    int rc = 0;
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        msgpack_pack_array(pk, o->via.array.size);
        for (uint32_t i = 0; rc == 0 && i < o->via.array.size; i++)
            rc = pack_scalar(pk, &o->via.array.ptr[i]);
        return rc;
    }
    if (o->type == MSGPACK_OBJECT_MAP) {
        msgpack_pack_map(pk, o->via.map.size);
        for (uint32_t i = 0; rc == 0 && i < o->via.map.size; i++) {
            rc = pack_scalar(pk, &o->via.map.ptr[i].key);
            if (rc == 0)
                rc = pack_scalar(pk, &o->via.map.ptr[i].val);
        }
        return rc;
    }
    return pack_scalar(pk, o);
}

static int echo(const struct cel_host *host, struct cel_job *job, void *state)
{
    const msgpack_object *x = host->arg(job, 0, "x");
    if (!x)
        return host->fail(job, "TypeError", "testsvc.echo() missing required argument: 'x'");
    if (pack_flat(host->result(job), x) != 0)
        return host->fail(job, "ValueError", "testsvc.echo: value too deeply nested");
    return 0;
}

static int version(const struct cel_host *host, struct cel_job *job, void *state)
{
    return msgpack_pack_int(host->result(job), TESTSVC_VERSION);
}

static const struct cel_task_def tasks[] = {
    {.name = "testsvc.echo", .handler = echo},
    {.name = "testsvc.version", .handler = version},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_service),
    .name = "testsvc",
    .tasks = tasks,
};

CEL_SERVICE_EXPORT(service)
