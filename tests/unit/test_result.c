/* test_result.c: task meta exactly as Celery's Redis backend stores it (spec 3.2, 3.3, 7.3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/result.h"

#define ID "11111111-2222-3333-4444-555555555555"
#define META_7_3                                                                                   \
    "86a6737461747573a753554343455353a6726573756c7481a2696401a974726163656261636bc0a86368696c6472" \
    "656e90a9646174655f646f6e65ba323032362d31312d32315432333a35323a34392e363133353633a77461736b5f" \
    "6964d92431313131313131312d323232322d333333332d343434342d353535353535353535353535"
#define JSON_7_3                                                                                   \
    "{\"status\": \"SUCCESS\", \"result\": {\"id\": 1}, \"traceback\": null, \"children\": [], "   \
    "\"date_done\": \"2026-11-21T23:52:49.613563\", \"task_id\": \"" ID "\"}"

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

static void assert_hex(const char *p, size_t n, const char *want)
{
    char *got = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++)
        sprintf(got + 2 * i, "%02x", (unsigned char)p[i]);
    got[2 * n] = '\0';
    assert_string_equal(got, want);
    free(got);
}

static int64_t date_7_3(void)
{
    int64_t us;
    assert_int_equal(cel_iso8601_parse("2026-11-21T23:52:49.613563", 26, &us), 0);
    return us;
}

static void success_golden(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    struct cel_result r = {.status = CEL_STATE_SUCCESS, .task_id = ID, .date_done = date_7_3()};
    r.result = hex("81a2696401");
    assert_int_equal(cel_result_encode(&r, CEL_FMT_MSGPACK, &b), 0);
    assert_int_equal(b.len, 132);
    assert_hex(b.data, b.len, META_7_3);
    cel_buf_clear(&b);
    assert_int_equal(cel_result_encode(&r, CEL_FMT_JSON, &b), 0);
    assert_string_equal(b.data, JSON_7_3);
    cel_buf_free(&b);
}

static void failure_with_ids_and_extras(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    struct cel_exc e = {.type = "ValueError", .module = "builtins"};
    e.args = hex("92a4626f6f6d2a"); /* ['boom', 42] */
    struct cel_result r = {.status = CEL_STATE_FAILURE,
                           .task_id = "t1",
                           .exc = &e,
                           .traceback = "Traceback...",
                           .group_id = "g",
                           .parent_id = "p",
                           .date_done = 1};
    r.extra = hex("81a6776f726b6572a177"); /* {'worker': 'w'} */
    assert_int_equal(cel_result_encode(&r, CEL_FMT_JSON, &b), 0);
    assert_string_equal(b.data,
                        "{\"status\": \"FAILURE\", \"result\": {\"exc_type\": \"ValueError\", "
                        "\"exc_message\": [\"boom\", 42], \"exc_module\": \"builtins\"}, "
                        "\"traceback\": \"Traceback...\", \"children\": [], \"date_done\": "
                        "\"1970-01-01T00:00:00.000001\", \"group_id\": \"g\", \"parent_id\": "
                        "\"p\", \"task_id\": \"t1\", \"worker\": \"w\"}");
    /* a message instead of args, and no module */
    struct cel_exc e2 = {.type = "TaskRevokedError", .message = "expired"};
    cel_buf_clear(&b);
    assert_int_equal(cel_exc_pack(&e2, &b), 0);
    assert_hex(b.data, b.len,
               "83a86578635f74797065b05461736b5265766f6b65644572726f72ab6578635f6d657373616765"
               "91a765787069726564aa6578635f6d6f64756c65c0");
    cel_buf_free(&b);
}

static void pending_state_has_nil_date(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    struct cel_result r = {.status = CEL_STATE_STARTED, .task_id = "x"};
    assert_int_equal(cel_result_encode(&r, CEL_FMT_JSON, &b), 0);
    assert_string_equal(b.data, "{\"status\": \"STARTED\", \"result\": null, \"traceback\": null, "
                                "\"children\": [], \"date_done\": null, \"task_id\": \"x\"}");
    r.task_id = NULL;
    cel_buf_clear(&b);
    assert_int_equal(cel_result_encode(&r, CEL_FMT_MSGPACK, &b), CEL_EINVAL);
    assert_int_equal(b.len, 0);
    cel_buf_free(&b);
}

static void decode_both_formats(void **state)
{
    (void)state;
    struct cel_arena a;
    struct cel_result_view v;
    char err[128];
    cel_arena_init(&a, 0);
    struct cel_span mp = hex(META_7_3);
    assert_int_equal(cel_result_decode(&v, &a, mp.ptr, mp.len, CEL_FMT_MSGPACK, err, sizeof err),
                     0);
    assert_string_equal(v.r.status, "SUCCESS");
    assert_string_equal(v.r.task_id, ID);
    assert_hex(v.r.result.ptr, v.r.result.len, "81a2696401");
    assert_int_equal(v.r.children.len, 1);
    assert_null(v.r.traceback);
    assert_null(v.r.exc);
    assert_true(v.r.date_done == date_7_3());
    assert_int_equal(
        cel_result_decode(&v, &a, JSON_7_3, strlen(JSON_7_3), CEL_FMT_JSON, err, sizeof err), 0);
    assert_string_equal(v.r.task_id, ID);
    assert_hex(v.r.result.ptr, v.r.result.len, "81a2696401");
    cel_arena_free(&a);
}

static void decode_tolerant(void **state)
{
    (void)state;
    struct cel_arena a;
    struct cel_result_view v;
    char err[128];
    cel_arena_init(&a, 0);
    /* any field order, no traceback/children/date_done, extras kept, Celery's date w/o micros */
    const char *j = "{\"task_id\": \"t\", \"x\": [1], \"result\": {\"exc_type\": \"KeyError\", "
                    "\"exc_message\": \"k\", \"exc_module\": \"builtins\"}, \"status\": "
                    "\"FAILURE\", \"date_done\": \"2026-11-21T23:52:49\", \"y\": null}";
    assert_int_equal(cel_result_decode(&v, &a, j, strlen(j), CEL_FMT_JSON, err, sizeof err), 0);
    assert_string_equal(v.r.status, "FAILURE");
    assert_non_null(v.r.exc);
    assert_string_equal(v.exc.type, "KeyError");
    assert_string_equal(v.exc.module, "builtins");
    assert_string_equal(v.exc.message, "k");
    assert_int_equal(v.exc.args.len, 0);
    assert_int_equal(v.r.children.len, 0);
    assert_hex(v.r.extra.ptr, v.r.extra.len, "82a1789101a179c0");
    /* exc_message as a list, and a scalar wrapped into a list */
    j = "{\"status\": \"RETRY\", \"result\": {\"exc_type\": \"E\", \"exc_message\": [\"a\", 2]}, "
        "\"task_id\": \"t\"}";
    assert_int_equal(cel_result_decode(&v, &a, j, strlen(j), CEL_FMT_JSON, err, sizeof err), 0);
    assert_hex(v.exc.args.ptr, v.exc.args.len, "92a16102");
    assert_null(v.exc.module);
    j = "{\"status\": \"REVOKED\", \"result\": {\"exc_type\": \"E\", \"exc_message\": 7}, "
        "\"task_id\": \"t\"}";
    assert_int_equal(cel_result_decode(&v, &a, j, strlen(j), CEL_FMT_JSON, err, sizeof err), 0);
    assert_hex(v.exc.args.ptr, v.exc.args.len, "9107");
    /* a SUCCESS whose value looks like an exception is just a value */
    j = "{\"status\": \"SUCCESS\", \"result\": {\"exc_type\": \"E\"}, \"task_id\": \"t\"}";
    assert_int_equal(cel_result_decode(&v, &a, j, strlen(j), CEL_FMT_JSON, err, sizeof err), 0);
    assert_null(v.r.exc);
    cel_arena_free(&a);
}

static void decode_errors(void **state)
{
    (void)state;
    struct cel_arena a;
    struct cel_result_view v;
    char err[128];
    cel_arena_init(&a, 0);
    static const struct {
        const char *json;
        int code;
    } cases[] = {
        {"{\"status\": \"SUCCESS\", \"result\": 1}", CEL_EDECODE},
        {"{\"result\": 1, \"task_id\": \"t\"}", CEL_EDECODE},
        {"{\"status\": 1, \"task_id\": \"t\"}", CEL_EDECODE},
        {"{\"status\": \"SUCCESS\", \"task_id\": \"t\", \"date_done\": \"yesterday\"}", CEL_ETIME},
        {"[1, 2]", CEL_EDECODE},
        {"{\"status\": ", CEL_EJSON},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        int rc = cel_result_decode(&v, &a, cases[i].json, strlen(cases[i].json), CEL_FMT_JSON, err,
                                   sizeof err);
        if (rc != cases[i].code)
            fail_msg("case %zu: got %s (%s)", i, cel_errname(rc), err);
        assert_true(err[0] != '\0');
    }
    struct cel_span bad = hex("81a6737461747573");
    assert_int_equal(cel_result_decode(&v, &a, bad.ptr, bad.len, CEL_FMT_MSGPACK, err, sizeof err),
                     CEL_EDECODE);
    bad = hex("820101a17802");
    assert_int_equal(cel_result_decode(&v, &a, bad.ptr, bad.len, CEL_FMT_MSGPACK, err, sizeof err),
                     CEL_EBODY);
    cel_arena_free(&a);
}

static void ready_states(void **state)
{
    (void)state;
    assert_true(cel_state_ready("SUCCESS"));
    assert_true(cel_state_ready("FAILURE"));
    assert_true(cel_state_ready("REVOKED"));
    assert_false(cel_state_ready("RETRY"));
    assert_false(cel_state_ready("STARTED"));
    assert_false(cel_state_ready("PENDING"));
    assert_false(cel_state_ready(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(success_golden),
        cmocka_unit_test(failure_with_ids_and_extras),
        cmocka_unit_test(pending_state_has_nil_date),
        cmocka_unit_test(decode_both_formats),
        cmocka_unit_test(decode_tolerant),
        cmocka_unit_test(decode_errors),
        cmocka_unit_test(ready_states),
    };
    return cmocka_run_group_tests_name("result", tests, NULL, NULL);
}
