/* test_client_opts.c: the pure parts of libceleriac: send options by name (CLI text and JSONL
 * values), bulk JSONL lines, JSON argument conversion, signatures and exception text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <msgpack.h>
#include <string.h>

#include "common/clock.h"
#include "producer/client_internal.h"

struct fx {
    struct cel_arena a;
    struct cel_buf b;
    struct cel_send_opts o;
    char err[512];
};

static int setup(void **state)
{
    static struct fx f;
    memset(&f, 0, sizeof f);
    cel_arena_init(&f.a, 4096);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    cel_arena_free(&f->a);
    cel_buf_free(&f->b);
    return 0;
}

static int text(struct fx *f, const char *name, const char *val)
{
    f->err[0] = 0;
    return cel__sendopt_set_text(&f->o, &f->a, name, val, f->err, sizeof f->err);
}

static void numbers_and_times_from_text(void **state)
{
    struct fx *f = *state;
    assert_int_equal(text(f, "countdown", "10"), 0);
    assert_true(f->o.countdown == 10.0);
    assert_int_equal(text(f, "countdown", "1.5"), 0);
    assert_true(f->o.countdown == 1.5);
    assert_int_equal(text(f, "countdown", "ten"), CEL_EINVAL);
    assert_non_null(strstr(f->err, "countdown"));
    assert_int_equal(text(f, "countdown", "-1"), CEL_EINVAL);
    assert_int_equal(text(f, "priority", "9"), 0);
    assert_int_equal(f->o.priority, 9);
    assert_int_equal(text(f, "priority", "256"), CEL_EINVAL);
    assert_int_equal(text(f, "priority", "1.5"), CEL_EINVAL);
    assert_int_equal(text(f, "eta", "2030-01-01T00:00:00Z"), 0);
    assert_true(f->o.eta_us == INT64_C(1893456000) * CEL_USEC_PER_SEC);
    assert_int_equal(text(f, "eta", "tomorrow"), CEL_EINVAL);
    assert_int_equal(text(f, "expires", "60"), 0);
    assert_true(f->o.expires_in == 60.0 && f->o.expires_us == 0);
    assert_int_equal(text(f, "expires", "2030-01-01T00:00:00+00:00"), 0);
    assert_true(f->o.expires_us == INT64_C(1893456000) * CEL_USEC_PER_SEC);
    assert_true(f->o.expires_in == 0);
    assert_int_equal(text(f, "expires", "0"), CEL_EINVAL);
    assert_int_equal(text(f, "time-limit", "30"), 0);
    assert_true(f->o.time_limit == 30.0);
    assert_int_equal(text(f, "soft_time_limit", "20"), 0);
    assert_true(f->o.soft_time_limit == 20.0);
}

static void strings_flags_and_unknown(void **state)
{
    struct fx *f = *state;
    assert_int_equal(text(f, "queue", "users"), 0);
    assert_string_equal(f->o.queue, "users");
    assert_int_equal(text(f, "idempotency-key", "k1"), 0);
    assert_string_equal(f->o.idempotency_key, "k1");
    assert_int_equal(text(f, "queue", ""), CEL_EINVAL);
    assert_int_equal(text(f, "ignore-result", "true"), 0);
    assert_true(f->o.ignore_result);
    assert_int_equal(text(f, "ignore_result", "no"), 0);
    assert_false(f->o.ignore_result);
    assert_int_equal(text(f, "ignore_result", "maybe"), CEL_EINVAL);
    assert_int_equal(text(f, "format", "json"), 0);
    assert_int_equal(f->o.format, CEL_CLIENT_FMT_JSON);
    assert_int_equal(text(f, "format", "xml"), CEL_EINVAL);
    assert_int_equal(text(f, "bogus", "1"), CEL_EINVAL);
    assert_string_equal(f->err, "unknown option 'bogus'");
    assert_true(cel__sendopt_known("link-error"));
    assert_false(cel__sendopt_known("wait"));
}

static void links_are_names_or_signatures(void **state)
{
    struct fx *f = *state;
    assert_int_equal(text(f, "link", "email.send_welcome"), 0);
    assert_int_equal(
        text(f, "link", "{\"task\": \"audit.log\", \"args\": [1], \"immutable\": true}"), 0);
    assert_int_equal(f->o.n_link, 2);
    assert_string_equal(f->o.link[0].task, "email.send_welcome");
    assert_int_equal(f->o.link[0].args.len, 0);
    assert_string_equal(f->o.link[1].task, "audit.log");
    assert_int_equal(f->o.link[1].args.len, 2);
    assert_memory_equal(f->o.link[1].args.ptr, "\x91\x01", 2);
    assert_true(f->o.link[1].immutable);
    assert_int_equal(text(f, "link-error", "[\"a.b\", {\"task\": \"c.d\"}]"), 0);
    assert_int_equal(f->o.n_link_error, 2);
    assert_string_equal(f->o.link_error[1].task, "c.d");
    assert_int_equal(text(f, "link", "{\"task\": \"x\", \"nope\": 1}"), CEL_EINVAL);
    assert_int_equal(text(f, "link", "{\"task\": 1}"), CEL_EINVAL);
    assert_int_equal(text(f, "link", "{\"task\": "), CEL_EJSON);
    assert_non_null(strstr(f->err, "column"));
    assert_int_equal(f->o.n_link, 2);
}

/* Unpacks mp and checks it is a map whose key i is keys[i]. */
static void assert_map_keys(struct cel_span mp, const char *const *keys, size_t n,
                            msgpack_object *out, msgpack_zone *z)
{
    size_t off = 0;
    assert_int_equal(msgpack_unpack(mp.ptr, mp.len, &off, z, out), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, mp.len);
    assert_int_equal(out->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(out->via.map.size, n);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *k = &out->via.map.ptr[i].key;
        assert_int_equal(k->type, MSGPACK_OBJECT_STR);
        assert_int_equal(k->via.str.size, strlen(keys[i]));
        assert_memory_equal(k->via.str.ptr, keys[i], k->via.str.size);
    }
}

static void signature_map_as_celery_writes_it(void **state)
{
    struct fx *f = *state;
    static const char *const keys[] = {"task",    "args",         "kwargs",
                                       "options", "subtask_type", "immutable"};
    static const char *const opt_keys[] = {"queue", "task_id"};
    struct cel_sig s = {.task = "email.send_welcome"};
    msgpack_zone z;
    msgpack_object o;
    msgpack_zone_init(&z, 1024);
    assert_int_equal(cel__sig_pack(&s, "id-1", &f->b), 0);
    assert_map_keys(cel_buf_span(&f->b), keys, 6, &o, &z);
    const msgpack_object_kv *kv = o.via.map.ptr;
    assert_int_equal(kv[1].val.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(kv[2].val.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(kv[4].val.type, MSGPACK_OBJECT_NIL);
    assert_int_equal(kv[5].val.type, MSGPACK_OBJECT_BOOLEAN);
    const msgpack_object *opts = &kv[3].val;
    assert_int_equal(opts->via.map.size, 2);
    for (int i = 0; i < 2; i++)
        assert_memory_equal(opts->via.map.ptr[i].key.via.str.ptr, opt_keys[i], strlen(opt_keys[i]));
    assert_memory_equal(opts->via.map.ptr[0].val.via.str.ptr, "email", 5);
    assert_int_equal(opts->via.map.ptr[0].val.via.str.size, 5);

    /* a given queue is kept, not duplicated */
    cel_buf_clear(&f->b);
    struct cel_buf ob = CEL_BUF_INIT;
    assert_int_equal(
        cel__json_text_pack("{\"queue\": \"mail\"}", JSON_OBJECT, "o", &ob, f->err, sizeof f->err),
        0);
    s.options = cel_buf_span(&ob);
    assert_int_equal(cel__sig_pack(&s, NULL, &f->b), 0);
    assert_map_keys(cel_buf_span(&f->b), keys, 6, &o, &z);
    assert_int_equal(o.via.map.ptr[3].val.via.map.size, 1);
    assert_memory_equal(o.via.map.ptr[3].val.via.map.ptr[0].val.via.str.ptr, "mail", 4);
    cel_buf_free(&ob);
    msgpack_zone_destroy(&z);
}

static void json_arguments_and_positions(void **state)
{
    struct fx *f = *state;
    assert_int_equal(
        cel__json_text_pack("[2, 3]", JSON_ARRAY, "args", &f->b, f->err, sizeof f->err), 0);
    assert_int_equal(f->b.len, 3);
    assert_memory_equal(f->b.data, "\x92\x02\x03", 3);
    cel_buf_clear(&f->b);
    assert_int_equal(cel__json_text_pack("{\"a\": 1.5, \"b\": [null, true, \"x\"]}", JSON_OBJECT,
                                         "kwargs", &f->b, f->err, sizeof f->err),
                     0);
    assert_memory_equal(f->b.data, "\x82\xa1\x61\xcb", 4);
    assert_int_equal(
        cel__json_text_pack("[1, 2", JSON_ARRAY, "args (argument 2)", &f->b, f->err, sizeof f->err),
        CEL_EJSON);
    assert_non_null(strstr(f->err, "args (argument 2): invalid JSON at line 1 column"));
    assert_int_equal(cel__json_text_pack("{}", JSON_ARRAY, "args", &f->b, f->err, sizeof f->err),
                     CEL_EJSON);
    assert_string_equal(f->err, "args: must be a JSON array");
}

static void jsonl_lines(void **state)
{
    struct fx *f = *state;
    struct cel__job j;
    const char *line = "{\"task\": \"bench.noop\", \"args\": [1], \"kwargs\": {\"k\": \"v\"}, "
                       "\"queue\": \"q1\", \"countdown\": 5, \"idempotency_key\": \"i\", "
                       "\"link\": \"a.b\"}\n";
    assert_int_equal(cel__job_parse(line, strlen(line), &j, &f->a, &f->b, f->err, sizeof f->err),
                     0);
    assert_string_equal(j.task, "bench.noop");
    assert_memory_equal(j.args.ptr, "\x91\x01", 2);
    assert_memory_equal(j.kwargs.ptr, "\x81\xa1k\xa1v", 5);
    assert_string_equal(j.opts.queue, "q1");
    assert_true(j.opts.countdown == 5.0);
    assert_string_equal(j.opts.idempotency_key, "i");
    assert_int_equal(j.opts.n_link, 1);

    const char *minimal = "{\"task\": \"x.y\"}";
    assert_int_equal(
        cel__job_parse(minimal, strlen(minimal), &j, &f->a, &f->b, f->err, sizeof f->err), 0);
    assert_int_equal(j.args.len, 0);
    assert_int_equal(j.kwargs.len, 0);

    static const char *const bad[] = {
        "{\"task\": \"x\", \"args\": {}}",
        "{\"args\": []}",
        "[1]",
        "{\"task\": \"x\",",
        "{\"task\": \"x\", \"countdown\": \"soon\"}",
        "{\"task\": \"x\", \"frobnicate\": 1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f->err[0] = 0;
        assert_true(
            cel__job_parse(bad[i], strlen(bad[i]), &j, &f->a, &f->b, f->err, sizeof f->err) < 0);
        assert_true(strlen(f->err) > 0);
    }
}

static void exception_text_like_python(void **state)
{
    struct fx *f = *state;
    assert_int_equal(cel__exc_str(CEL_SPAN_LIT("\x91\xa4\x62oom"), &f->b), 0);
    assert_string_equal(f->b.data, "boom");
    cel_buf_clear(&f->b);
    assert_int_equal(cel__exc_str(CEL_SPAN_LIT("\x92\xa4\x62oom\x2a"), &f->b), 0);
    assert_string_equal(f->b.data, "('boom', 42)");
    cel_buf_clear(&f->b);
    assert_int_equal(cel__exc_str(CEL_SPAN_LIT("\x91\x2a"), &f->b), 0);
    assert_string_equal(f->b.data, "42");
}

static void time_parsing(void **state)
{
    double s;
    int64_t us;
    assert_int_equal(cel__parse_time("2.5", &s, &us), 0);
    assert_true(s == 2.5 && us == 0);
    assert_int_equal(cel__parse_time("1970-01-01T00:00:01Z", &s, &us), 0);
    assert_true(s == 0 && us == CEL_USEC_PER_SEC);
    assert_int_equal(cel__parse_time("", &s, &us), CEL_EINVAL);
    assert_int_equal(cel__parse_time("nan", &s, &us), CEL_EINVAL);
    assert_int_equal(cel__default_queue_len("users.create"), 5);
    assert_int_equal(cel__default_queue_len("plain"), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(numbers_and_times_from_text, setup, teardown),
        cmocka_unit_test_setup_teardown(strings_flags_and_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(links_are_names_or_signatures, setup, teardown),
        cmocka_unit_test_setup_teardown(signature_map_as_celery_writes_it, setup, teardown),
        cmocka_unit_test_setup_teardown(json_arguments_and_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(jsonl_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(exception_text_like_python, setup, teardown),
        cmocka_unit_test_setup_teardown(time_parsing, setup, teardown),
    };
    return cmocka_run_group_tests_name("client_opts", tests, NULL, NULL);
}
