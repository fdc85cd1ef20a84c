/* test_amqp_table.c: header tables between cel_table and rabbitmq-c: the spec 7.2 vector byte
 * for byte through amqp_encode_table, the reverse through amqp_decode_table, the py-amqp type
 * rules (S, I/L, d, t, V, A, F, x; never 's' or 'l'), every kind on input, depth limits, and
 * the delay-level routing keys and patterns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker-adapters/amqp/amqp_internal.h"
#include "common/message.h"

#define ID "11111111-2222-3333-4444-555555555555"
#define HEX_7_2                                                                                    \
    "00000137046c616e6753000000027079047461736b530000000c75736572732e637265617465026964530000002"  \
    "431313131313131312d323232322d333333332d343434342d35353535353535353535353506736861646f775603"  \
    "657461560765787069726573560567726f7570560b67726f75705f696e6465785607726574726965734900000000" \
    "0974696d656c696d69744100000002565607726f6f745f6964530000002431313131313131312d323232322d3333" \
    "33332d343434342d35353535353535353535353509706172656e745f69645608617267737265707253000000095b" \
    "27616c696365275d0a6b77617267737265707253000000137b27656d61696c273a20276140782e696f277d066f72" \
    "6967696e530000000f67656e3132333435406d79686f73740d69676e6f72655f726573756c747400"

static size_t unhex(const char *h, unsigned char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n;
}

static void assert_encodes_to_hex(const struct cel_table *t, const char *want)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_t at;
    assert_int_equal(cel__amqp_table_from_cel(t, &at, &pool), 0);
    unsigned char buf[4096];
    size_t off = 0;
    amqp_bytes_t out = {sizeof buf, buf};
    assert_int_equal(amqp_encode_table(out, &at, &off), AMQP_STATUS_OK);
    char got[2 * sizeof buf + 1];
    for (size_t i = 0; i < off; i++)
        sprintf(got + 2 * i, "%02x", buf[i]);
    got[2 * off] = 0;
    assert_string_equal(got, want);
    empty_amqp_pool(&pool);
}

static struct cel_value v_void(void)
{
    struct cel_value v = {.type = CEL_V_VOID};
    return v;
}

#define S(x) cel_value_str(x, sizeof(x) - 1)
#define F(k, val)                                                                                  \
    {                                                                                              \
        CEL_SPAN_LIT(k), val                                                                       \
    }

static void spec_7_2_by_hand(void **state)
{
    (void)state;
    struct cel_value tl[2] = {v_void(), v_void()};
    struct cel_value timelimit = {.type = CEL_V_ARRAY};
    timelimit.u.a.items = tl;
    timelimit.u.a.n = 2;
    struct cel_value no = {.type = CEL_V_BOOL};
    struct cel_field f[16] = {
        F("lang", S("py")),
        F("task", S("users.create")),
        F("id", S(ID)),
        F("shadow", v_void()),
        F("eta", v_void()),
        F("expires", v_void()),
        F("group", v_void()),
        F("group_index", v_void()),
        F("retries", cel_value_int(0)),
        F("timelimit", timelimit),
        F("root_id", S(ID)),
        F("parent_id", v_void()),
        F("argsrepr", S("['alice']")),
        F("kwargsrepr", S("{'email': 'a@x.io'}")),
        F("origin", S("gen12345@myhost")),
        F("ignore_result", no),
    };
    struct cel_table t = {f, 16};
    assert_encodes_to_hex(&t, HEX_7_2);
}

static void spec_7_2_from_the_codec(void **state)
{
    (void)state;
    unsigned char args[] = {0x91, 0xa5, 'a', 'l', 'i', 'c', 'e'};
    unsigned char kwargs[] = {0x81, 0xa5, 'e', 'm', 'a', 'i', 'l',
                              0xa6, 'a',  '@', 'x', '.', 'i', 'o'};
    struct cel_task t;
    cel_task_init(&t);
    t.task = "users.create";
    t.id = ID;
    t.origin = "gen12345@myhost";
    t.args = (struct cel_span){(const char *)args, sizeof args};
    t.kwargs = (struct cel_span){(const char *)kwargs, sizeof kwargs};
    struct cel_arena a;
    cel_arena_init(&a, 0);
    struct cel_props p;
    struct cel_table h;
    struct cel_buf body = CEL_BUF_INIT;
    assert_int_equal(cel_task_encode(&t, &a, &p, &h, &body), 0);
    assert_encodes_to_hex(&h, HEX_7_2);
    cel_buf_free(&body);
    cel_arena_free(&a);
}

static void spec_7_2_decodes_back(void **state)
{
    (void)state;
    unsigned char raw[1024];
    size_t n = unhex(HEX_7_2, raw), off = 0;
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_t at;
    assert_int_equal(amqp_decode_table((amqp_bytes_t){n, raw}, &pool, &at, &off), AMQP_STATUS_OK);
    assert_int_equal(off, n);
    struct cel_arena a;
    cel_arena_init(&a, 0);
    struct cel_table t;
    assert_int_equal(cel__amqp_table_to_cel(&at, &t, &a, NULL), 0);
    assert_int_equal(t.n, 16);
    const struct cel_value *v = cel_table_get(&t, "task");
    assert_int_equal(v->type, CEL_V_STR);
    assert_memory_equal(v->u.s.ptr, "users.create", 12);
    assert_int_equal(cel_table_get(&t, "shadow")->type, CEL_V_VOID);
    assert_int_equal(cel_table_get(&t, "retries")->type, CEL_V_INT);
    assert_int_equal(cel_table_get(&t, "retries")->u.i, 0);
    v = cel_table_get(&t, "timelimit");
    assert_int_equal(v->type, CEL_V_ARRAY);
    assert_int_equal(v->u.a.n, 2);
    assert_int_equal(v->u.a.items[1].type, CEL_V_VOID);
    v = cel_table_get(&t, "ignore_result");
    assert_int_equal(v->type, CEL_V_BOOL);
    assert_false(v->u.b);
    /* and the codec accepts it as the task it is */
    struct cel_props p = {.content_type = CEL_CT_MSGPACK, .content_encoding = "binary"};
    unsigned char body[64];
    size_t blen =
        unhex("9391a5616c69636581a5656d61696ca66140782e696f84a963616c6c6261636b73c0a865727262"
              "61636b73c0a5636861696ec0a563686f7264c0",
              body);
    struct cel_task task;
    char err[256];
    assert_int_equal(
        cel_task_decode(&task, &a, &p, &t, body, blen, &cel_default_limits, err, sizeof err), 0);
    assert_string_equal(task.id, ID);
    assert_string_equal(task.origin, "gen12345@myhost");
    assert_encodes_to_hex(&t, HEX_7_2);
    cel_arena_free(&a);
    empty_amqp_pool(&pool);
}

/* The type octet of the single field "k" of t. */
static char type_of(const struct cel_value *v, int *rc)
{
    struct cel_field f = {CEL_SPAN_LIT("k"), *v};
    struct cel_table t = {&f, 1};
    amqp_pool_t pool;
    init_amqp_pool(&pool, 1024);
    amqp_table_t at;
    *rc = cel__amqp_table_from_cel(&t, &at, &pool);
    unsigned char buf[256];
    size_t off = 0;
    if (*rc == 0)
        assert_int_equal(amqp_encode_table((amqp_bytes_t){sizeof buf, buf}, &at, &off), 0);
    empty_amqp_pool(&pool);
    return *rc == 0 ? (char)buf[6] : 0; /* 4 length + 1 key length + "k" */
}

static void write_types_follow_py_amqp(void **state)
{
    (void)state;
    int rc;
    struct cel_value v = cel_value_int(INT32_MAX);
    assert_int_equal(type_of(&v, &rc), 'I');
    v = cel_value_int(INT32_MIN);
    assert_int_equal(type_of(&v, &rc), 'I');
    v = cel_value_int((int64_t)INT32_MAX + 1);
    assert_int_equal(type_of(&v, &rc), 'L');
    v = cel_value_int((int64_t)INT32_MIN - 1);
    assert_int_equal(type_of(&v, &rc), 'L');
    v.type = CEL_V_UINT;
    v.u.u = 7;
    assert_int_equal(type_of(&v, &rc), 'I');
    v.u.u = (uint64_t)INT64_MAX + 1;
    assert_int_equal(type_of(&v, &rc), 0);
    assert_int_equal(rc, CEL_EUNSUPPORTED);
    v = S("text");
    assert_int_equal(type_of(&v, &rc), 'S');
    v.type = CEL_V_BYTES;
    assert_int_equal(type_of(&v, &rc), 'x');
    v.type = CEL_V_DOUBLE;
    v.u.d = 1.5;
    assert_int_equal(type_of(&v, &rc), 'd');
    v.type = CEL_V_BOOL;
    assert_int_equal(type_of(&v, &rc), 't');
    v = v_void();
    assert_int_equal(type_of(&v, &rc), 'V');
    v.type = CEL_V_TABLE;
    v.u.t.items = NULL;
    v.u.t.n = 0;
    assert_int_equal(type_of(&v, &rc), 'F');
    v.type = CEL_V_ARRAY;
    v.u.a.items = NULL;
    v.u.a.n = 0;
    assert_int_equal(type_of(&v, &rc), 'A');
}

static void every_kind_is_read(void **state)
{
    (void)state;
    amqp_table_entry_t e[16];
    int n = 0;
#define E(k, kind_, field, val)                                                                    \
    e[n].key = amqp_cstring_bytes(k);                                                              \
    e[n].value.kind = kind_;                                                                       \
    e[n++].value.value.field = val
    E("i8", AMQP_FIELD_KIND_I8, i8, -8);
    E("u8", AMQP_FIELD_KIND_U8, u8, 200);
    E("i16", AMQP_FIELD_KIND_I16, i16, -300);
    E("u16", AMQP_FIELD_KIND_U16, u16, 60000);
    E("i32", AMQP_FIELD_KIND_I32, i32, -70000);
    E("u32", AMQP_FIELD_KIND_U32, u32, 4000000000u);
    E("i64", AMQP_FIELD_KIND_I64, i64, -5000000000LL);
    E("L", AMQP_FIELD_KIND_U64, u64, (uint64_t)-5000000000LL); /* py-amqp's signed 'L' */
    E("f32", AMQP_FIELD_KIND_F32, f32, 0.5f);
    E("f64", AMQP_FIELD_KIND_F64, f64, 2.25);
    E("ts", AMQP_FIELD_KIND_TIMESTAMP, u64, 1700000000);
    E("t", AMQP_FIELD_KIND_BOOLEAN, boolean, 1);
    E("x", AMQP_FIELD_KIND_BYTES, bytes, amqp_cstring_bytes("ab"));
    E("S", AMQP_FIELD_KIND_UTF8, bytes, amqp_cstring_bytes("cd"));
    e[n].key = amqp_cstring_bytes("dec");
    e[n].value.kind = AMQP_FIELD_KIND_DECIMAL;
    e[n].value.value.decimal.decimals = 2;
    e[n++].value.value.decimal.value = 1234;
    e[n].key = amqp_cstring_bytes("V");
    e[n++].value.kind = AMQP_FIELD_KIND_VOID;
#undef E
    amqp_table_t at = {n, e};
    struct cel_arena a;
    cel_arena_init(&a, 0);
    struct cel_table t;
    assert_int_equal(cel__amqp_table_to_cel(&at, &t, &a, NULL), 0);
    const int64_t ints[] = {-8,     200,          -300,          60000,
                            -70000, 4000000000LL, -5000000000LL, -5000000000LL};
    for (int i = 0; i < 8; i++) {
        assert_int_equal(t.items[i].v.type, CEL_V_INT);
        assert_int_equal(t.items[i].v.u.i, ints[i]);
    }
    assert_true(cel_table_get(&t, "f32")->u.d == 0.5);
    assert_true(cel_table_get(&t, "f64")->u.d == 2.25);
    assert_int_equal(cel_table_get(&t, "ts")->u.i, 1700000000);
    assert_true(cel_table_get(&t, "t")->u.b);
    assert_int_equal(cel_table_get(&t, "x")->type, CEL_V_BYTES);
    assert_int_equal(cel_table_get(&t, "S")->type, CEL_V_STR);
    assert_memory_equal(cel_table_get(&t, "S")->u.s.ptr, "cd", 3); /* NUL-terminated copy */
    assert_true(cel_table_get(&t, "dec")->u.d > 12.339 && cel_table_get(&t, "dec")->u.d < 12.341);
    assert_int_equal(cel_table_get(&t, "V")->type, CEL_V_VOID);
    cel_arena_free(&a);
}

static void nesting_is_limited_both_ways(void **state)
{
    (void)state;
    enum { DEPTH = CEL_AMQP_MAX_DEPTH + 4 };
    static amqp_table_entry_t e[DEPTH];
    for (int i = 0; i < DEPTH; i++) {
        e[i].key = amqp_cstring_bytes("n");
        e[i].value.kind = AMQP_FIELD_KIND_TABLE;
        e[i].value.value.table.num_entries = i + 1 < DEPTH ? 1 : 0;
        e[i].value.value.table.entries = i + 1 < DEPTH ? &e[i + 1] : NULL;
    }
    amqp_table_t at = {1, e};
    struct cel_arena a;
    cel_arena_init(&a, 0);
    struct cel_table t;
    assert_int_equal(cel__amqp_table_to_cel(&at, &t, &a, NULL), CEL_ETOODEEP);
    /* lossy mode: the too-deep header becomes VOID and is named, the table is still usable */
    const char *deep = NULL;
    assert_int_equal(cel__amqp_table_to_cel(&at, &t, &a, &deep), 0);
    assert_non_null(deep);
    assert_string_equal(deep, "n");
    assert_int_equal(t.n, 1);
    assert_int_equal(t.items[0].v.type, CEL_V_VOID);

    static struct cel_field f[DEPTH];
    for (int i = 0; i < DEPTH; i++) {
        f[i].key = CEL_SPAN_LIT("n");
        f[i].v.type = CEL_V_TABLE;
        f[i].v.u.t.items = i + 1 < DEPTH ? &f[i + 1] : NULL;
        f[i].v.u.t.n = i + 1 < DEPTH ? 1 : 0;
    }
    struct cel_table ct = {f, 1};
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    assert_int_equal(cel__amqp_table_from_cel(&ct, &at, &pool), CEL_ETOODEEP);
    empty_amqp_pool(&pool);
    cel_arena_free(&a);
}

static void delay_routes(void **state)
{
    (void)state;
    char ex[64], rk[300];
    assert_int_equal(cel__amqp_delay_route(2, "users", ex, sizeof ex, rk, sizeof rk), 0);
    assert_string_equal(ex, "celeriac.delay.1");
    assert_string_equal(rk, "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.users");
    assert_int_equal(cel__amqp_delay_route(5, "a.b", ex, sizeof ex, rk, sizeof rk), 0);
    assert_string_equal(ex, "celeriac.delay.2");
    assert_string_equal(rk, "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.1.a.b");
    assert_int_equal(cel__amqp_delay_route(CEL_DELAY_MAX, "q", ex, sizeof ex, rk, sizeof rk), 0);
    assert_string_equal(ex, "celeriac.delay.27");
    assert_string_equal(rk, "1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.q");
    assert_int_equal(cel__amqp_delay_route(0, "q", ex, sizeof ex, rk, sizeof rk), CEL_EINVAL);
    assert_int_equal(cel__amqp_delay_route(CEL_DELAY_MAX + 1, "q", ex, sizeof ex, rk, sizeof rk),
                     CEL_EINVAL);
    char big[300];
    memset(big, 'q', 250);
    big[250] = 0;
    assert_int_equal(cel__amqp_delay_route(1, big, ex, sizeof ex, rk, sizeof rk), CEL_ETOOBIG);

    char pat[128];
    cel__amqp_delay_pattern(0, '1', pat, sizeof pat);
    assert_string_equal(pat, "*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.1.#");
    cel__amqp_delay_pattern(27, '0', pat, sizeof pat);
    assert_string_equal(pat, "0.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.#");
    assert_int_equal(cel__amqp_delay_queue_pattern("a.b", pat, sizeof pat), 0);
    assert_string_equal(pat, "*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.a.b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_7_2_by_hand),      cmocka_unit_test(spec_7_2_from_the_codec),
        cmocka_unit_test(spec_7_2_decodes_back), cmocka_unit_test(write_types_follow_py_amqp),
        cmocka_unit_test(every_kind_is_read),    cmocka_unit_test(nesting_is_limited_both_ways),
        cmocka_unit_test(delay_routes),
    };
    return cmocka_run_group_tests_name("amqp_table", tests, NULL, NULL);
}
