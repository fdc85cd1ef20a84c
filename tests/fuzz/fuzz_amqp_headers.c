/* fuzz_amqp_headers.c: an AMQP field table as the broker would hand it to us: rabbitmq-c's
 * amqp_decode_table, our conversion to cel_table, a re-encode that must be a fixed point, and
 * the task decoder with a fixed valid body (spec 7.1) and these headers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker-adapters/amqp/amqp_internal.h"
#include "common/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t body_7_1[] = {
    0x93, 0x91, 0xa5, 'a',  'l',  'i',  'c',  'e',  0x81, 0xa5, 'e', 'm', 'a', 'i',  'l',
    0xa6, 'a',  '@',  'x',  '.',  'i',  'o',  0x84, 0xa9, 'c',  'a', 'l', 'l', 'b',  'a',
    'c',  'k',  's',  0xc0, 0xa8, 'e',  'r',  'r',  'b',  'a',  'c', 'k', 's', 0xc0, 0xa5,
    'c',  'h',  'a',  'i',  'n',  0xc0, 0xa5, 'c',  'h',  'o',  'r', 'd', 0xc0};

static void check(int cond)
{
    if (!cond)
        abort();
}

/* cel_table -> wire bytes; 0 when the table has a value we refuse to write. */
static size_t encode(const struct cel_table *t, uint8_t *buf, size_t cap)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_t at;
    size_t off = 0;
    int rc = cel__amqp_table_from_cel(t, &at, &pool);
    if (rc == 0)
        check(amqp_encode_table((amqp_bytes_t){cap, buf}, &at, &off) == AMQP_STATUS_OK);
    else
        check(rc == CEL_EUNSUPPORTED);
    empty_amqp_pool(&pool);
    return off;
}

static int decode(const uint8_t *data, size_t size, struct cel_table *t, struct cel_arena *a)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_t at;
    size_t off = 0;
    int rc = amqp_decode_table((amqp_bytes_t){size, (void *)data}, &pool, &at, &off);
    if (rc == AMQP_STATUS_OK)
        rc = cel__amqp_table_to_cel(&at, t, a, NULL);
    empty_amqp_pool(&pool);
    return rc;
}

static void fixed_point(const struct cel_table *t, size_t size)
{
    size_t cap = 4 * size + 64;
    uint8_t *b1 = malloc(cap), *b2 = malloc(cap);
    size_t n1 = encode(t, b1, cap);
    if (n1) {
        struct cel_arena a;
        struct cel_table t2;
        cel_arena_init(&a, 0);
        check(decode(b1, n1, &t2, &a) == 0);
        size_t n2 = encode(&t2, b2, cap);
        check(n2 == n1 && memcmp(b1, b2, n1) == 0);
        cel_arena_free(&a);
    }
    free(b1);
    free(b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    struct cel_arena a;
    struct cel_table t;
    cel_arena_init(&a, 0);
    if (decode(data, size, &t, &a) == 0) {
        fixed_point(&t, size);
        struct cel_props p = {.content_type = CEL_CT_MSGPACK, .content_encoding = "binary"};
        struct cel_task task;
        char err[256];
        cel_task_decode(&task, &a, &p, &t, body_7_1, sizeof body_7_1, &cel_default_limits, err,
                        sizeof err);
    }
    cel_arena_free(&a);
    return 0;
}
