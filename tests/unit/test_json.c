/* test_json.c: JSON <-> msgpack as Python's json and msgpack modules see it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

/* msgpack.packb(v) and json.dumps(v) of the same Python value (generated with Python 3). */
#define MP_MIXED                                                                                   \
    "86a173b668c3a96c6c6f20f09f988020227122205c200a09017fa1699800ff7fcc80d0dfcf7fffffffffffffffd3" \
    "8000000000000000cfffffffffffffffffa16695cb3ff0000000000000cb3fb999999999999acb4341c37937e080" \
    "00cbbe90c6f7a0b5ed8dcb3fd5555555555555a16293c3c2c0a165929080a16e81a16181a162920181a163c0"
#define JSON_MIXED                                                                                 \
    "{\"s\": \"h\\u00e9llo \\ud83d\\ude00 \\\"q\\\" \\\\ \\n\\t\\u0001\\u007f\", \"i\": [0, -1, "  \
    "127, 128, -33, 9223372036854775807, -9223372036854775808, 18446744073709551615], \"f\": "     \
    "[1.0, 0.1, 1e+16, -2.5e-07, 0.3333333333333333], \"b\": [true, false, null], \"e\": [[], "    \
    "{}], \"n\": {\"a\": {\"b\": [1, {\"c\": null}]}}}"

static struct cel_span hex(const char *h)
{
    static char bufs[4][4096];
    static int which;
    char *out = bufs[which++ % 4];
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return (struct cel_span){out, n};
}

static char *to_hex(const struct cel_buf *b)
{
    char *s = malloc(2 * b->len + 1);
    for (size_t i = 0; i < b->len; i++)
        sprintf(s + 2 * i, "%02x", (unsigned char)b->data[i]);
    s[2 * b->len] = '\0';
    return s;
}

static void assert_buf_hex(const struct cel_buf *b, const char *want)
{
    char *got = to_hex(b);
    assert_string_equal(got, want);
    free(got);
}

static int j2m(const char *json, struct cel_buf *out, const struct cel_limits *lim)
{
    char err[128];
    cel_buf_clear(out);
    return cel_json_to_msgpack(json, strlen(json), lim, out, err, sizeof err);
}

static void python_output(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    assert_int_equal(cel_msgpack_to_json(hex(MP_MIXED), &b), 0);
    assert_string_equal(b.data, JSON_MIXED);
    cel_buf_free(&b);
}

static void json_to_msgpack_is_what_python_packs(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    /* everything but uint64 above INT64_MAX, which jansson cannot hold */
    const char *j = "{\"s\": \"h\\u00e9llo \\ud83d\\ude00 \\\"q\\\" \\\\ \\n\\t\\u0001\\u007f\", "
                    "\"i\": [0, -1, 127, 128, -33, 9223372036854775807, -9223372036854775808]}";
    assert_int_equal(j2m(j, &b, NULL), 0);
    assert_buf_hex(&b, "82a173b668c3a96c6c6f20f09f988020227122205c200a09017fa1699700ff7fcc80d0dfcf"
                       "7fffffffffffffffd38000000000000000");
    /* raw UTF-8 in the input is kept as is, and \u0000 is allowed as Python allows it */
    assert_int_equal(j2m("[\"\xf0\x9f\x98\x80\", \"a\\u0000b\"]", &b, NULL), 0);
    assert_buf_hex(&b, "92a4f09f9880a3610062");
    cel_buf_free(&b);
}

static void round_trips(void **state)
{
    (void)state;
    static const char *const values[] = {
        "90",
        "80",
        "c0",
        "c3",
        "c2",
        "00",
        "7f",
        "ff",
        "e0",
        "d0df",
        "cc80",
        "cdffff",
        "ceffffffff",
        "cf7fffffffffffffff",
        "d38000000000000000",
        "d2ffff7fff",
        "cb3fb999999999999a",
        "cb0000000000000001",
        "cbc3e0000000000000",
        "a0",
        "a4f09f9880", /* non-BMP */
        "d920"
        "6161616161616161616161616161616161616161616161616161616161616161", /* str8 */
        "9690808091c09291c381a090a0", /* nested, with empties */
        "81a16183a16290a16380a164929191a0c0",
        "dc0010000102030405060708090a0b0c0d0e0f", /* array16 */
        "cfffffffffffffffff",
        "cb7ff8000000000000",
        "cbfff0000000000000",
        "cb8000000000000000",
        "81a100a0", /* NUL in a key */
    };
    struct cel_buf js = CEL_BUF_INIT, mp = CEL_BUF_INIT;
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        struct cel_span in = hex(values[i]);
        char err[128];
        cel_buf_clear(&js);
        cel_buf_clear(&mp);
        int rc = cel_msgpack_validate(in, NULL, err, sizeof err);
        if (rc)
            fail_msg("vector %zu invalid: %s", i, err);
        assert_int_equal(cel_msgpack_to_json(in, &js), 0);
        assert_int_equal(cel_json_to_msgpack(js.data, js.len, NULL, &mp, err, sizeof err), 0);
        if (mp.len != in.len || memcmp(mp.data, in.ptr, in.len) != 0)
            fail_msg("vector %zu: %s -> %s -> %s", i, values[i], js.data, to_hex(&mp));
    }
    cel_buf_free(&js);
    cel_buf_free(&mp);
}

static void big_and_odd_numbers(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    assert_int_equal(cel_msgpack_to_json(hex("cfffffffffffffffff"), &b), 0);
    assert_string_equal(b.data, "18446744073709551615");
    /* full int64/uint64 precision, as Python keeps it; beyond that refused, never rounded */
    assert_int_equal(j2m("18446744073709551615", &b, NULL), 0);
    assert_buf_hex(&b, "cfffffffffffffffff");
    assert_int_equal(j2m("[-9223372036854775808, -0, 0, -1]", &b, NULL), 0);
    assert_buf_hex(&b, "94d380000000000000000000ff");
    assert_int_equal(j2m("18446744073709551616", &b, NULL), CEL_EUNSUPPORTED);
    assert_int_equal(j2m("-9223372036854775809", &b, NULL), CEL_EUNSUPPORTED);
    assert_int_equal(j2m("[123456789012345678901234567890]", &b, NULL), CEL_EUNSUPPORTED);
    assert_int_equal(b.len, 0);
    /* Python's extensions and float edge cases */
    assert_int_equal(
        j2m("[NaN, Infinity, -Infinity, 1e400, -1e400, 1e-400, -0.0, 5e-324]", &b, NULL), 0);
    assert_buf_hex(&b, "98cb7ff8000000000000cb7ff0000000000000cbfff0000000000000cb7ff0000000000000"
                       "cbfff0000000000000cb0000000000000000cb8000000000000000cb0000000000000001");
    assert_int_equal(j2m("1.5E+3", &b, NULL), 0);
    assert_buf_hex(&b, "cb4097700000000000");
    assert_int_equal(j2m("1.0", &b, NULL), 0);
    assert_buf_hex(&b, "cb3ff0000000000000");
    assert_int_equal(j2m("1e2", &b, NULL), 0);
    assert_buf_hex(&b, "cb4059000000000000");
    cel_buf_clear(&b);
    assert_int_equal(
        cel_msgpack_to_json(hex("93cb7ff0000000000000cbfff0000000000000cb7ff8000000000000"), &b),
        0);
    assert_string_equal(b.data, "[Infinity, -Infinity, NaN]");
    cel_buf_clear(&b);
    assert_int_equal(cel_msgpack_to_json(hex("ca3fc00000"), &b), 0); /* float32 1.5 */
    assert_string_equal(b.data, "1.5");
    cel_buf_free(&b);
}

static void bin_and_keys(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    assert_int_equal(cel_msgpack_to_json(hex("c403616263"), &b), 0);
    assert_string_equal(b.data, "\"abc\"");
    cel_buf_clear(&b);
    assert_int_equal(cel_msgpack_to_json(hex("c402ff00"), &b), CEL_EUNSUPPORTED);
    assert_int_equal(cel_msgpack_to_json(hex("810102"), &b), CEL_EUNSUPPORTED);
    assert_int_equal(cel_msgpack_to_json(hex("d40101"), &b), CEL_EUNSUPPORTED);
    assert_int_equal(cel_msgpack_to_json(hex("a2c328"), &b), CEL_EUTF8);
    assert_int_equal(cel_msgpack_to_json(hex("92c0"), &b), CEL_EDECODE);
    assert_int_equal(cel_msgpack_to_json(hex("c0c0"), &b), CEL_EDECODE);
    assert_int_equal(cel_msgpack_to_json(hex("dd7fffffff"), &b), CEL_EDECODE);
    assert_int_equal(b.len, 0);
    cel_buf_free(&b);
}

static void json_errors_and_limits(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    char err[128];
    const char *bad = "[1, 2";
    assert_int_equal(cel_json_to_msgpack(bad, strlen(bad), NULL, &b, err, sizeof err), CEL_EJSON);
    assert_non_null(strstr(err, "line 1 col"));
    assert_int_equal(j2m("[\"\xc3\x28\"]", &b, NULL), CEL_EUTF8);
    assert_int_equal(j2m("\"\\ud800\"", &b, NULL), CEL_EUTF8); /* lone surrogates */
    assert_int_equal(j2m("\"\\udc00\"", &b, NULL), CEL_EUTF8);
    assert_int_equal(j2m("\"\\ud83d\\u0041\"", &b, NULL), CEL_EUTF8);
    assert_int_equal(j2m("\"\\ud83d", &b, NULL), CEL_EUTF8);
    static const char *const syntax[] = {
        "01",       "-",         "1.",          ".5",     "+1",
        "1e",       "1e+",       "-a",          "[1,]",   "[,1]",
        "{,}",      "{\"a\" 1}", "{\"a\": 1,}", "{1: 2}", "[1 2]",
        "\"a\tb\"", "\"\\x\"",   "\"\\u12G4\"", "\"abc",  "\xef\xbb\xbf[]",
        "nul",      "True",      "[",           "{",      "]",
        "NaNa",     "-NaN",      "\"\\u00\"",
    };
    for (size_t i = 0; i < sizeof syntax / sizeof syntax[0]; i++) {
        if (j2m(syntax[i], &b, NULL) != CEL_EJSON)
            fail_msg("'%s' was not refused as bad JSON", syntax[i]);
    }
    assert_int_equal(cel_json_to_msgpack("[1, 2,\n 3,, 4]", 15, NULL, &b, err, sizeof err),
                     CEL_EJSON);
    assert_string_equal(err, "line 2 col 4: expected a value");
    assert_int_equal(j2m("[1] [2]", &b, NULL), CEL_EJSON);
    assert_int_equal(j2m("", &b, NULL), CEL_EJSON);
    struct cel_limits lim = cel_default_limits;
    lim.max_depth = 3;
    assert_int_equal(j2m("[[[1]]]", &b, &lim), 0);
    assert_int_equal(j2m("[[[[1]]]]", &b, &lim), CEL_ETOODEEP);
    lim = cel_default_limits;
    lim.max_items = 2;
    assert_int_equal(j2m("{\"a\": 1, \"b\": 2}", &b, &lim), 0);
    assert_int_equal(j2m("[1, 2, 3]", &b, &lim), CEL_ETOOBIG);
    lim = cel_default_limits;
    lim.max_str = 3;
    assert_int_equal(j2m("\"abcd\"", &b, &lim), CEL_ETOOBIG);
    lim.max_body = 4;
    assert_int_equal(j2m("12345", &b, &lim), CEL_ETOOBIG);
    /* 10,000 levels: refused cleanly, whichever limit trips first */
    char *deep = malloc(20001);
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    deep[20000] = '\0';
    assert_int_equal(j2m(deep, &b, NULL), CEL_ETOODEEP);
    free(deep);
    assert_int_equal(b.len, 0);
    cel_buf_free(&b);
}

static void json_accepted_forms(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    assert_int_equal(j2m(" \t\r\n{ \"a\" :\n[ ] , \"b\":{}}\n ", &b, NULL), 0);
    assert_buf_hex(&b, "82a16190a16280");
    /* NUL in keys and values, every short escape, and duplicate keys kept in order */
    assert_int_equal(
        j2m("{\"\\u0000\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"a\": 1, \"a\": 2}", &b, NULL), 0);
    assert_buf_hex(&b, "83a100a8225c2f080c0a0d09a16101a16102");
    /* strings around the str8/str16 boundaries keep msgpack-python's headers */
    static char text[70000];
    text[0] = '"';
    memset(text + 1, 'x', 65536);
    text[65537] = '"';
    text[65538] = '\0';
    assert_int_equal(j2m(text, &b, NULL), 0);
    assert_int_equal((unsigned char)b.data[0], 0xdb);
    assert_int_equal(b.len, 5 + 65536);
    text[257] = '"';
    text[258] = '\0';
    assert_int_equal(j2m(text, &b, NULL), 0);
    assert_int_equal((unsigned char)b.data[0], 0xda);
    text[33] = '"';
    text[34] = '\0';
    assert_int_equal(j2m(text, &b, NULL), 0);
    assert_int_equal((unsigned char)b.data[0], 0xd9);
    cel_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(python_output),
        cmocka_unit_test(json_to_msgpack_is_what_python_packs),
        cmocka_unit_test(round_trips),
        cmocka_unit_test(big_and_odd_numbers),
        cmocka_unit_test(bin_and_keys),
        cmocka_unit_test(json_errors_and_limits),
        cmocka_unit_test(json_accepted_forms),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
