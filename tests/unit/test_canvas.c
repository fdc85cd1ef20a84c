/* test_canvas.c: chain, link, link_error and chord semantics (worker/canvas.c) against the
 * Celery 5.2 behaviour in spec section 4. Signatures are written as JSON and converted to
 * msgpack; outputs are compared as JSON (Python json.dumps separators). canvas.c belongs to the
 * worker binary, not the library, so it is compiled into this test directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "worker/canvas.c"

static struct cel_arena A;

static int setup(void **state)
{
    cel_arena_init(&A, 4096);
    return 0;
}

static int teardown(void **state)
{
    cel_arena_free(&A);
    return 0;
}

/* msgpack of a JSON text, in the arena. */
static struct cel_span mp(const char *json)
{
    struct cel_buf b = CEL_BUF_INIT;
    struct cel_span s;
    char err[128];
    assert_int_equal(
        cel_json_to_msgpack(json, strlen(json), &cel_default_limits, &b, err, sizeof err), 0);
    assert_int_equal(span_dup(&A, &b, &s), 0);
    cel_buf_free(&b);
    return s;
}

/* JSON text of a msgpack value, in the arena. */
static const char *js(struct cel_span s)
{
    struct cel_buf b = CEL_BUF_INIT;
    const char *out;
    assert_int_equal(cel_msgpack_to_json(s, &b), 0);
    out = cel_arena_strdup(&A, b.data);
    cel_buf_free(&b);
    return out;
}

#define SIG(task, args, opts)                                                                      \
    "{\"task\": \"" task "\", \"args\": " args ", \"kwargs\": {}, \"options\": " opts              \
    ", \"subtask_type\": null, \"immutable\": false}"

static void done_init(struct cel_task *t, const char *id)
{
    cel_task_init(t);
    t->task = "m.add";
    t->id = id;
    t->root_id = id;
    t->args = mp("[1, 2]");
    t->kwargs = mp("{}");
}

static void chain_of_three_forwards(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    done_init(&done, "t1");
    done.chain = mp("[" SIG("m.add", "[30]", "{\"task_id\": \"c3\"}") ", " SIG(
        "m.mul", "[20]", "{\"task_id\": \"c2\", \"reply_to\": \"r\"}") "]");
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_success(&done, mp("3"), "gen1@h", &A, &out, &children), 0);
    assert_int_equal(out.n, 1);
    struct cel_task *t = &out.items[0].task;
    assert_string_equal(out.items[0].queue, "m");
    assert_string_equal(t->task, "m.mul");
    assert_string_equal(t->id, "c2");
    assert_string_equal(t->parent_id, "t1");
    assert_string_equal(t->root_id, "t1");
    assert_string_equal(t->origin, "gen1@h");
    assert_string_equal(t->props.reply_to, "r");
    assert_string_equal(js(t->args), "[3, 20]");
    assert_string_equal(js(t->kwargs), "{}");
    assert_string_equal(js(t->chain), "[" SIG("m.add", "[30]", "{\"task_id\": \"c3\"}") "]");
    assert_int_equal(t->callbacks.len, 0);
    assert_int_equal(out.items[0].delay_s, 0);
    assert_string_equal(js(cel_buf_span(&children)), "[[[\"c2\", null], null]]");

    /* the second step: the popped message finishes, the last element gets an empty chain */
    struct cel_task second = *t;
    struct cel__outbox out2;
    cel_buf_clear(&children);
    cel__outbox_init(&out2);
    assert_int_equal(cel__canvas_success(&second, mp("60"), "gen1@h", &A, &out2, &children), 0);
    assert_int_equal(out2.n, 1);
    t = &out2.items[0].task;
    assert_string_equal(t->id, "c3");
    assert_string_equal(t->task, "m.add");
    assert_string_equal(t->parent_id, "c2");
    assert_string_equal(t->root_id, "t1");
    assert_string_equal(js(t->args), "[60, 30]");
    assert_int_equal(t->chain.len, 1);
    assert_string_equal(js(t->chain), "[]");

    /* the last step produces nothing */
    struct cel_task third = *t;
    struct cel__outbox out3;
    cel_buf_clear(&children);
    cel__outbox_init(&out3);
    assert_int_equal(cel__canvas_success(&third, mp("90"), "gen1@h", &A, &out3, &children), 0);
    assert_int_equal(out3.n, 0);
    assert_string_equal(js(cel_buf_span(&children)), "[]");
    cel_buf_free(&children);
}

/* A caller that only sets n = 0 (items and cap left as garbage) still gets a working outbox. */
static void outbox_with_only_n_set(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    const char **ids;
    size_t n_ids;
    memset(&out, 0xa5, sizeof out);
    out.n = 0;
    done_init(&done, "t1");
    done.callbacks = mp("[" SIG("m.a", "[]", "{}") ", " SIG("m.b", "[]", "{}") "]");
    done.errbacks = done.callbacks;
    assert_int_equal(cel__canvas_success(&done, mp("1"), "o", &A, &out, &children), 0);
    assert_int_equal(out.n, 2);
    memset(&out, 0x5a, sizeof out);
    out.n = 0;
    assert_int_equal(cel__canvas_failure(&done, NULL, "o", &A, &out, &ids, &n_ids), 0);
    assert_int_equal(out.n, 2);
    cel_buf_free(&children);
}

static void immutable_keeps_args(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    done_init(&done, "t1");
    done.chain = mp("[{\"task\": \"m.log\", \"args\": [\"x\"], \"kwargs\": {\"k\": 1}, "
                    "\"options\": {\"task_id\": \"c2\"}, \"subtask_type\": null, "
                    "\"immutable\": true}]");
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_success(&done, mp("{\"a\": [1]}"), "o", &A, &out, &children), 0);
    assert_int_equal(out.n, 1);
    assert_string_equal(js(out.items[0].task.args), "[\"x\"]");
    assert_string_equal(js(out.items[0].task.kwargs), "{\"k\": 1}");
    cel_buf_free(&children);
}

static void callbacks_get_retval_then_chain(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    done_init(&done, "t1");
    done.root_id = "root";
    done.callbacks = mp("[" SIG("email.send", "[\"a\"]",
                                "{\"task_id\": \"cb1\"}") ", " SIG("audit.log", "[]", "{}") "]");
    done.chain = mp("[" SIG("m.next", "[]", "{\"task_id\": \"n1\"}") "]");
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_success(&done, mp("{\"id\": 7}"), "o", &A, &out, &children), 0);
    assert_int_equal(out.n, 3);
    assert_string_equal(out.items[0].task.id, "cb1");
    assert_string_equal(out.items[0].queue, "email");
    assert_string_equal(js(out.items[0].task.args), "[{\"id\": 7}, \"a\"]");
    assert_string_equal(out.items[0].task.parent_id, "t1");
    assert_string_equal(out.items[0].task.root_id, "root");
    assert_int_equal(out.items[0].task.chain.len, 0);
    assert_string_equal(out.items[1].queue, "audit");
    assert_int_equal(strlen(out.items[1].task.id), 36); /* a fresh uuid4 */
    assert_string_equal(js(out.items[1].task.args), "[{\"id\": 7}]");
    assert_string_equal(out.items[2].task.id, "n1");
    assert_string_equal(js(out.items[2].task.chain), "[]");
    char want[256];
    snprintf(want, sizeof want,
             "[[[\"cb1\", null], null], [[\"%s\", null], null], [[\"n1\", null], null]]",
             out.items[1].task.id);
    assert_string_equal(js(cel_buf_span(&children)), want);
    cel_buf_free(&children);
}

static void nil_retval_is_prepended_as_none(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    done_init(&done, "t1");
    done.callbacks = mp("[" SIG("m.cb", "[1]", "{}") "]");
    cel__outbox_init(&out);
    assert_int_equal(
        cel__canvas_success(&done, (struct cel_span){NULL, 0}, "o", &A, &out, &children), 0);
    assert_string_equal(js(out.items[0].task.args), "[null, 1]");
    cel_buf_free(&children);
}

static void errbacks_and_remaining_chain_ids(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    const char **ids;
    size_t n_ids;
    struct cel_exc exc = {"ValueError", "builtins",
                          CEL_SPAN_LIT("\x91\xa4"
                                       "boom"),
                          NULL};
    done_init(&done, "t1");
    done.root_id = "r0";
    done.errbacks = mp("[" SIG("m.on_err", "[\"x\"]", "{\"queue\": \"cworker2\"}") ", " SIG(
        "m.on_err2", "[]", "{\"task_id\": \"e2\"}") "]");
    done.chain = mp("[" SIG("m.c", "[]", "{\"task_id\": \"c3\"}") ", " SIG(
        "m.b", "[]", "{}") ", " SIG("m.a", "[]", "{\"task_id\": \"c2\"}") "]");
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_failure(&done, &exc, "o", &A, &out, &ids, &n_ids), 0);
    assert_int_equal(out.n, 2);
    assert_string_equal(out.items[0].queue, "cworker2");
    assert_string_equal(js(out.items[0].task.args), "[\"t1\", \"x\"]");
    assert_string_equal(out.items[0].task.parent_id, "t1");
    assert_string_equal(out.items[0].task.root_id, "r0");
    assert_non_null(out.items[0].task.group);
    assert_int_equal(strlen(out.items[0].task.group), 36);
    assert_int_equal(out.items[0].task.group_index, -1);
    assert_string_equal(out.items[1].task.id, "e2");
    assert_string_equal(out.items[1].task.group, out.items[0].task.group);
    assert_string_equal(js(out.items[1].task.args), "[\"t1\"]");
    assert_int_equal(n_ids, 2);
    assert_string_equal(ids[0], "c3");
    assert_string_equal(ids[1], "c2");
}

static void failure_without_canvas_is_empty(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    const char **ids;
    size_t n_ids;
    struct cel_exc exc = {"KeyError", "builtins", {NULL, 0}, "k"};
    done_init(&done, "t1");
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_failure(&done, &exc, "o", &A, &out, &ids, &n_ids), 0);
    assert_int_equal(out.n, 0);
    assert_int_equal(n_ids, 0);
}

static void chord_entry_matches_redis_backend(void **state)
{
    const char *tid = "9a0e9b8c-1d2e-4f30-8a4b-5c6d7e8f9012";
    struct cel_buf b = CEL_BUF_INIT;
    char want[64];
    size_t n = 0;
    memcpy(want, "\x94\x01\xd9$", 4);
    n = 4;
    memcpy(want + n, tid, 36);
    n += 36;
    memcpy(want + n, "\xa7SUCCESS\x04", 9);
    n += 9;
    assert_int_equal(cel__canvas_chord_entry(tid, "SUCCESS", CEL_SPAN_LIT("\x04"), &b), 0);
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, want, n);
    cel_buf_free(&b);
}

/* parts as the ZRANGE returns them: an array of bin members, each an encoded entry. */
static struct cel_span parts_of(const char *const *tids, const char *const *states,
                                const char *const *results, size_t n)
{
    struct cel_buf p = CEL_BUF_INIT;
    struct cel_span s;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &p, cel_buf_msgpack_write);
    msgpack_pack_array(&pk, n);
    for (size_t k = 0; k < n; k++) {
        struct cel_buf e = CEL_BUF_INIT;
        assert_int_equal(cel__canvas_chord_entry(tids[k], states[k], mp(results[k]), &e), 0);
        msgpack_pack_bin(&pk, e.len);
        msgpack_pack_bin_body(&pk, e.data, e.len);
        cel_buf_free(&e);
    }
    assert_int_equal(span_dup(&A, &p, &s), 0);
    cel_buf_free(&p);
    return s;
}

static void chord_body_gets_results_in_order(void **state)
{
    const char *tids[] = {"p0", "p1", "p2"};
    const char *states[] = {"SUCCESS", "SUCCESS", "SUCCESS"};
    const char *results[] = {"2", "{\"x\": [4]}", "null"};
    struct cel_task done;
    struct cel__outmsg *body;
    const char *body_id;
    struct cel_exc *err;
    done_init(&done, "p1");
    done.root_id = "root";
    done.group = "g1";
    done.group_index = 1;
    done.chord = mp(SIG("m.tsum", "[\"extra\"]", "{\"task_id\": \"body1\", \"queue\": \"sums\"}"));
    assert_int_equal(cel__canvas_chord_body(&done, parts_of(tids, states, results, 3), "o", &A,
                                            &body, &body_id, &err),
                     0);
    assert_non_null(body);
    assert_null(err);
    assert_string_equal(body_id, "body1");
    assert_string_equal(body->task.id, "body1");
    assert_string_equal(body->queue, "sums");
    assert_string_equal(body->task.parent_id, "p1");
    assert_string_equal(body->task.root_id, "root");
    assert_null(body->task.group);
    assert_string_equal(js(body->task.args), "[[2, {\"x\": [4]}, null], \"extra\"]");
}

static void chord_error_names_the_failed_dependency(void **state)
{
    const char *tids[] = {"p0", "p1", "p2"};
    const char *states[] = {"SUCCESS", "FAILURE", "SUCCESS"};
    const char *results[] = {
        "1",
        "{\"exc_type\": \"ValueError\", \"exc_message\": [\"boom\", 42], \"exc_module\": "
        "\"builtins\"}",
        "3"};
    struct cel_task done;
    struct cel__outmsg *body;
    const char *body_id;
    struct cel_exc *err;
    done_init(&done, "p2");
    done.chord = mp(SIG("m.tsum", "[]", "{\"task_id\": \"body1\"}"));
    assert_int_equal(cel__canvas_chord_body(&done, parts_of(tids, states, results, 3), "o", &A,
                                            &body, &body_id, &err),
                     0);
    assert_null(body);
    assert_non_null(err);
    assert_string_equal(body_id, "body1");
    assert_string_equal(err->type, "ChordError");
    assert_string_equal(err->module, "celery.exceptions");
    assert_string_equal(js(err->args), "[\"Dependency p1 raised ValueError('boom', 42)\"]");
    assert_string_equal(err->message, "Dependency p1 raised ValueError('boom', 42)");
}

static void chord_error_calls_the_body_errbacks(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    done_init(&done, "p2");
    done.root_id = "root";
    done.chord = mp(SIG("m.tsum", "[]",
                        "{\"task_id\": \"body1\", \"link_error\": " SIG(
                            "m.on_err", "[\"x\"]", "{\"queue\": \"errs\"}") "}"));
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_chord_errbacks(&done, "o", &A, &out), 0);
    assert_int_equal(out.n, 1);
    assert_string_equal(out.items[0].queue, "errs");
    assert_string_equal(out.items[0].task.task, "m.on_err");
    assert_string_equal(js(out.items[0].task.args), "[\"body1\", \"x\"]");
    assert_string_equal(out.items[0].task.parent_id, "body1");
    assert_string_equal(out.items[0].task.root_id, "root");
    assert_non_null(out.items[0].task.group);
    /* a body without link_error: nothing */
    done.chord = mp(SIG("m.tsum", "[]", "{\"task_id\": \"body1\"}"));
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_chord_errbacks(&done, "o", &A, &out), 0);
    assert_int_equal(out.n, 0);
}

static void chord_error_on_revoked_part(void **state)
{
    const char *tids[] = {"p0"};
    const char *states[] = {"REVOKED"};
    const char *results[] = {"{\"exc_type\": \"TaskRevokedError\", \"exc_message\": "
                             "[\"revoked\"], \"exc_module\": \"celery.exceptions\"}"};
    struct cel_task done;
    struct cel__outmsg *body;
    const char *body_id;
    struct cel_exc *err;
    done_init(&done, "p0");
    done.chord = mp(SIG("m.tsum", "[]", "{\"task_id\": \"b\"}"));
    assert_int_equal(cel__canvas_chord_body(&done, parts_of(tids, states, results, 1), "o", &A,
                                            &body, &body_id, &err),
                     0);
    assert_null(body);
    assert_string_equal(err->message, "Dependency p0 raised TaskRevokedError('revoked')");
}

static void chord_entry_json(void **state)
{
    struct cel_buf b = CEL_BUF_INIT;
    assert_int_equal(
        cel__canvas_chord_entry_fmt("p0", "SUCCESS", mp("[1, \"a\"]"), CEL_FMT_JSON, &b), 0);
    assert_string_equal(b.data, "[1, \"p0\", \"SUCCESS\", [1, \"a\"]]");
    cel_buf_clear(&b);
    assert_int_equal(
        cel__canvas_chord_entry_fmt("p0", "SUCCESS", CEL_SPAN_LIT("\x04"), CEL_FMT_MSGPACK, &b), 0);
    assert_memory_equal(b.data, "\x94\x01\xa2p0\xa7SUCCESS\x04", 13);
    cel_buf_free(&b);
}

static void chord_json_entries_are_read(void **state)
{
    struct cel_task done;
    struct cel__outmsg *body;
    const char *body_id;
    struct cel_exc *err;
    struct cel_buf p = CEL_BUF_INIT;
    msgpack_packer pk;
    const char *e0 = "[1, \"p0\", \"SUCCESS\", 5]", *e1 = "[1, \"p1\", \"SUCCESS\", \"s\"]";
    msgpack_packer_init(&pk, &p, cel_buf_msgpack_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str(&pk, strlen(e0));
    msgpack_pack_str_body(&pk, e0, strlen(e0));
    msgpack_pack_bin(&pk, strlen(e1));
    msgpack_pack_bin_body(&pk, e1, strlen(e1));
    done_init(&done, "p1");
    done.chord = mp(SIG("m.tsum", "[]", "{\"task_id\": \"b\"}"));
    assert_int_equal(
        cel__canvas_chord_body(&done, cel_buf_span(&p), "o", &A, &body, &body_id, &err), 0);
    assert_non_null(body);
    assert_string_equal(js(body->task.args), "[[5, \"s\"]]");
    cel_buf_free(&p);
}

static void options_are_honoured(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    done_init(&done, "t1");
    done.format = CEL_FMT_JSON;
    done.callbacks = mp("[" SIG(
        "m.cb", "[]",
        "{\"queue\": \"other\", \"countdown\": 10, \"priority\": 5, "
        "\"expires\": 60, \"time_limit\": 30, \"soft_time_limit\": 20.5, "
        "\"group_id\": \"g\", \"group_index\": 2, \"shadow\": \"sh\", "
        "\"link\": " SIG("m.after", "[]",
                         "{}") ", "
                               "\"link_error\": [" SIG(
                                   "m.err", "[]",
                                   "{}") "], "
                                         "\"chord\": " SIG(
                                             "m.body", "[]",
                                             "{}") ", "
                                                   "\"headers\": {\"x-trace\": \"abc\", \"n\": 3, "
                                                   "\"task\": \"evil\"}, "
                                                   "\"unknown_option\": [1, {\"a\": 2}]}") "]");
    cel__outbox_init(&out);
    int64_t before = cel_now_us();
    assert_int_equal(cel__canvas_success(&done, mp("1"), "o", &A, &out, &children), 0);
    int64_t after = cel_now_us();
    assert_int_equal(out.n, 1);
    struct cel__outmsg *m = &out.items[0];
    struct cel_task *t = &m->task;
    assert_string_equal(m->queue, "other");
    assert_int_equal(m->delay_s, 10);
    assert_true(t->eta >= before + 10 * CEL_USEC_PER_SEC &&
                t->eta <= after + 10 * CEL_USEC_PER_SEC);
    assert_true(t->expires >= before + 60 * CEL_USEC_PER_SEC);
    assert_true(t->props.has_priority);
    assert_int_equal(t->props.priority, 5);
    assert_true(t->time_limit == 30.0);
    assert_true(t->soft_time_limit == 20.5);
    assert_string_equal(t->group, "g");
    assert_int_equal(t->group_index, 2);
    assert_string_equal(t->shadow, "sh");
    assert_int_equal(t->format, CEL_FMT_JSON);
    assert_string_equal(js(t->callbacks), "[" SIG("m.after", "[]", "{}") "]");
    assert_string_equal(js(t->errbacks), "[" SIG("m.err", "[]", "{}") "]");
    assert_string_equal(js(t->chord), SIG("m.body", "[]", "{}"));
    assert_int_equal(t->extra.n, 2);
    assert_int_equal(t->extra.items[0].key.len, 7);
    assert_memory_equal(t->extra.items[0].key.ptr, "x-trace", 7);
    assert_int_equal(t->extra.items[0].v.type, CEL_V_STR);
    assert_int_equal(t->extra.items[1].v.type, CEL_V_INT);
    assert_int_equal(t->extra.items[1].v.u.i, 3);
    cel_buf_free(&children);
}

static void eta_option_delays(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    char iso[33], sig[512];
    cel_iso8601_format(cel_now_us() + 100 * CEL_USEC_PER_SEC, 1, iso);
    snprintf(sig, sizeof sig, "[" SIG("m.cb", "[]", "{\"eta\": \"%s\"}") "]", iso);
    done_init(&done, "t1");
    done.callbacks = mp(sig);
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_success(&done, mp("1"), "o", &A, &out, &children), 0);
    assert_true(out.items[0].delay_s >= 99 && out.items[0].delay_s <= 100);
    assert_true(out.items[0].task.eta > 0);
    cel_buf_free(&children);
}

static void nested_chain_callback(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    done_init(&done, "t1");
    done.callbacks = mp("[{\"task\": \"celery.chain\", \"args\": [], \"kwargs\": {\"tasks\": [" SIG(
        "a.one", "[1]",
        "{}") ", " SIG("b.two", "[2]",
                       "{}") ", " SIG("c.three", "[3]",
                                      "{\"queue\": \"q3\"}") "]}, \"options\": {\"task_id\": "
                                                             "\"last\"}, \"subtask_type\": "
                                                             "\"chain\", "
                                                             "\"immutable\": false}]");
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_success(&done, mp("9"), "o", &A, &out, &children), 0);
    assert_int_equal(out.n, 1);
    struct cel_task *t = &out.items[0].task;
    assert_string_equal(t->task, "a.one");
    assert_string_equal(out.items[0].queue, "a");
    assert_string_equal(js(t->args), "[9, 1]");
    /* the rest, reversed, every element frozen with an id; the last has the chain's id */
    struct cel_span *items;
    uint32_t n;
    assert_int_equal(array_items(&A, t->chain, &items, &n), 0);
    assert_int_equal(n, 2);
    struct sig s0, s1;
    struct opts o0, o1;
    assert_int_equal(sig_parse(items[0], &A, &s0), 0);
    assert_int_equal(opts_parse(s0.options, &A, &o0), 0);
    assert_int_equal(sig_parse(items[1], &A, &s1), 0);
    assert_int_equal(opts_parse(s1.options, &A, &o1), 0);
    assert_string_equal(s0.task, "c.three");
    assert_string_equal(o0.task_id, "last");
    assert_string_equal(o0.queue, "q3");
    assert_string_equal(s1.task, "b.two");
    assert_int_equal(strlen(o1.task_id), 36);
    cel_buf_free(&children);
}

static void group_callback_is_unsupported(void **state)
{
    struct cel_task done;
    struct cel__outbox out;
    struct cel_buf children = CEL_BUF_INIT;
    done_init(&done, "t1");
    done.callbacks = mp("[{\"task\": \"celery.group\", \"args\": [], \"kwargs\": {\"tasks\": []}, "
                        "\"options\": {}, \"subtask_type\": \"group\", \"immutable\": false}]");
    cel__outbox_init(&out);
    assert_int_equal(cel__canvas_success(&done, mp("1"), "o", &A, &out, &children),
                     CEL_EUNSUPPORTED);
    cel_buf_free(&children);
}

static void malformed_signatures_are_ebody(void **state)
{
    static const char *const bad[] = {
        "[1]",                                                /* not a map */
        "[\"m.x\"]",                                          /* a string */
        "[{\"args\": []}]",                                   /* no task */
        "[{\"task\": 5}]",                                    /* task not a string */
        "[{\"task\": \"m.x\", \"args\": {}}]",                /* args not an array */
        "[{\"task\": \"m.x\", \"args\": \"ab\"}]",            /* args a string */
        "[{\"task\": \"m.x\", \"kwargs\": []}]",              /* kwargs not a map */
        "[{\"task\": \"m.x\", \"options\": 3}]",              /* options not a map */
        "[{\"task\": \"m.x\", \"immutable\": \"yes\"}]",      /* immutable not a bool */
        "[{\"task\": \"m.x\", \"subtask_type\": 1}]",         /* subtask_type */
        "[{\"task\": \"m.x\", \"options\": {\"queue\": 1}}]", /* queue not a string */
        "[{\"task\": \"m.x\", \"options\": {\"countdown\": \"s\"}}]",
        "[{\"task\": \"m.x\", \"options\": {\"eta\": \"tomorrow\"}}]",
        "[{\"task\": \"m.x\", \"options\": {\"priority\": 300}}]",
        "[{\"task\": \"m.x\", \"options\": {\"link\": 5}}]",
        "[{\"task\": \"m.x\", \"options\": {\"task_id\": [1]}}]",
        "[{\"task\": \"m.x\", \"options\": {\"headers\": [1]}}]",
        "[{\"task\": \"m.x\", \"subtask_type\": \"chain\", \"kwargs\": {}}]", /* no tasks */
        "[{\"task\": \"m.x\", \"subtask_type\": \"chain\", \"kwargs\": {\"tasks\": [3]}}]",
        "{\"task\": \"m.x\"}", /* callbacks not a list */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        struct cel_task done;
        struct cel__outbox out;
        struct cel_buf children = CEL_BUF_INIT;
        done_init(&done, "t1");
        done.callbacks = mp(bad[k]);
        cel__outbox_init(&out);
        int rc = cel__canvas_success(&done, mp("1"), "o", &A, &out, &children);
        if (rc != CEL_EBODY)
            fail_msg("signature %zu (%s): %d", k, bad[k], rc);
        /* the same garbage as a chain element */
        done.callbacks = (struct cel_span){NULL, 0};
        done.chain = mp(bad[k]);
        cel__outbox_init(&out);
        cel_buf_clear(&children);
        rc = cel__canvas_success(&done, mp("1"), "o", &A, &out, &children);
        if (k + 1 < sizeof bad / sizeof bad[0] && rc != CEL_EBODY)
            fail_msg("chain element %zu (%s): %d", k, bad[k], rc);
        cel_buf_free(&children);
    }
}

/* Every truncation of a valid signature list must fail cleanly, never read past the end. */
static void truncated_bytes_are_ebody(void **state)
{
    struct cel_span full =
        mp("[" SIG("m.cb", "[1, [2, {\"a\": \"b\"}]]",
                   "{\"queue\": \"q\", \"link\": [" SIG("m.x", "[]", "{}") "]}") "]");
    for (size_t len = 0; len < full.len; len++) {
        char *copy = malloc(len ? len : 1); /* exact size so ASan sees any overread */
        memcpy(copy, full.ptr, len);
        struct cel_task done;
        struct cel__outbox out;
        struct cel_buf children = CEL_BUF_INIT;
        const char **ids;
        size_t n_ids;
        done_init(&done, "t1");
        done.callbacks = (struct cel_span){copy, len};
        done.chain = (struct cel_span){copy, len};
        cel__outbox_init(&out);
        int rc = cel__canvas_success(&done, mp("1"), "o", &A, &out, &children);
        assert_true(len == 0 ? rc == 0 : rc == CEL_EBODY);
        done.errbacks = (struct cel_span){copy, len};
        rc = cel__canvas_failure(&done, NULL, "o", &A, &out, &ids, &n_ids);
        assert_true(len == 0 ? rc == 0 : rc == CEL_EBODY);
        cel_buf_free(&children);
        free(copy);
    }
}

static bool clean_rc(int rc)
{
    return rc == 0 || rc == CEL_EBODY || rc == CEL_EUNSUPPORTED;
}

/* Byte-flipped signatures (fixed seed): every outcome is a clean status, never a crash (ASan). */
static void mutated_signatures_fail_cleanly(void **state)
{
    struct cel_span full =
        mp("[" SIG("m.cb", "[1, [2, {\"a\": \"b\"}], -5, 1.5]",
                   "{\"queue\": \"q\", \"countdown\": 2, \"headers\": {\"h\": [1, {\"x\": null}]}, "
                   "\"link\": [" SIG("m.x", "[]", "{}") "], \"chord\": " SIG(
                       "m.b", "[]",
                       "{}") "}") ", "
                                  "{\"task\": \"celery.chain\", \"args\": [], \"kwargs\": "
                                  "{\"tasks\": [" SIG("a.one", "[1]", "{}") ", " SIG(
                                      "b.two", "[2]",
                                      "{\"task_id\": \"t\"}") "]}, "
                                                              "\"options\": {\"task_id\": "
                                                              "\"last\"}, \"subtask_type\": "
                                                              "\"chain\", \"immutable\": false}]");
    char *orig = malloc(full.len); /* the arena is reset below */
    memcpy(orig, full.ptr, full.len);
    full.ptr = orig;
    uint32_t seed = 12345;
    for (int round = 0; round < 3000; round++) {
        char *copy = malloc(full.len);
        memcpy(copy, full.ptr, full.len);
        for (int flips = 0; flips < 1 + round % 4; flips++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % full.len;
            seed = seed * 1103515245u + 12345u;
            copy[at] = (char)(seed >> 16);
        }
        struct cel_task done;
        struct cel__outbox out;
        struct cel_buf children = CEL_BUF_INIT;
        const char **ids;
        size_t n_ids;
        struct cel__outmsg *body;
        const char *body_id;
        struct cel_exc *err;
        done_init(&done, "t1");
        done.callbacks = (struct cel_span){copy, full.len};
        done.chain = (struct cel_span){copy, full.len};
        done.errbacks = (struct cel_span){copy, full.len};
        cel__outbox_init(&out);
        assert_true(clean_rc(cel__canvas_success(&done, mp("1"), "o", &A, &out, &children)));
        assert_true(clean_rc(cel__canvas_failure(&done, NULL, "o", &A, &out, &ids, &n_ids)));
        done.chord = (struct cel_span){copy + 1, full.len - 1};
        assert_true(
            clean_rc(cel__canvas_chord_body(&done, mp("[]"), "o", &A, &body, &body_id, &err)));
        cel_buf_free(&children);
        free(copy);
        if (round % 500 == 499)
            cel_arena_reset(&A);
    }
    free(orig);
}

static void malformed_chord_parts_are_ebody(void **state)
{
    static const char *const bad[] = {
        "{}", "[1]", "[[1, \"p\", \"SUCCESS\", 1]]", /* members must be bin/str */
    };
    struct cel_task done;
    struct cel__outmsg *body;
    const char *body_id;
    struct cel_exc *err;
    done_init(&done, "p");
    done.chord = mp(SIG("m.tsum", "[]", "{\"task_id\": \"b\"}"));
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_int_equal(cel__canvas_chord_body(&done, mp(bad[k]), "o", &A, &body, &body_id, &err),
                         CEL_EBODY);
    /* a member that is not an entry */
    struct cel_buf p = CEL_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &p, cel_buf_msgpack_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "\x93\x01\xa1", 3);
    assert_int_equal(
        cel__canvas_chord_body(&done, cel_buf_span(&p), "o", &A, &body, &body_id, &err), CEL_EBODY);
    cel_buf_free(&p);
    done.chord = mp("[1]");
    assert_int_equal(cel__canvas_chord_body(&done, mp("[]"), "o", &A, &body, &body_id, &err),
                     CEL_EBODY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(chain_of_three_forwards, setup, teardown),
        cmocka_unit_test_setup_teardown(outbox_with_only_n_set, setup, teardown),
        cmocka_unit_test_setup_teardown(immutable_keeps_args, setup, teardown),
        cmocka_unit_test_setup_teardown(callbacks_get_retval_then_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(nil_retval_is_prepended_as_none, setup, teardown),
        cmocka_unit_test_setup_teardown(errbacks_and_remaining_chain_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(failure_without_canvas_is_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(chord_entry_matches_redis_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(chord_body_gets_results_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(chord_error_names_the_failed_dependency, setup, teardown),
        cmocka_unit_test_setup_teardown(chord_error_calls_the_body_errbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(chord_error_on_revoked_part, setup, teardown),
        cmocka_unit_test_setup_teardown(chord_entry_json, setup, teardown),
        cmocka_unit_test_setup_teardown(chord_json_entries_are_read, setup, teardown),
        cmocka_unit_test_setup_teardown(options_are_honoured, setup, teardown),
        cmocka_unit_test_setup_teardown(eta_option_delays, setup, teardown),
        cmocka_unit_test_setup_teardown(nested_chain_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(group_callback_is_unsupported, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_signatures_are_ebody, setup, teardown),
        cmocka_unit_test_setup_teardown(truncated_bytes_are_ebody, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_chord_parts_are_ebody, setup, teardown),
        cmocka_unit_test_setup_teardown(mutated_signatures_fail_cleanly, setup, teardown),
    };
    return cmocka_run_group_tests_name("canvas", tests, NULL, NULL);
}
