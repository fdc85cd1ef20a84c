/* fuzz_message.c: the task decoder (and the result decoder) on arbitrary bodies. The first byte
 * selects the content type (bit 0: JSON) and tight limits (bit 1); the rest is the body, decoded
 * with a fixed valid header set. Whatever decodes must re-encode and decode to the same parts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/message.h"
#include "common/result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct cel_limits tight = {
    .max_body = 4096, .max_depth = 6, .max_items = 64, .max_str = 256};

static void check(int cond)
{
    if (!cond)
        abort();
}

static void same(struct cel_span a, struct cel_span b)
{
    check(a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0));
}

/* Re-encode a decoded task in both formats and decode it again: the parts must survive. */
static void reencode(const struct cel_task *t, const struct cel_limits *lim)
{
    for (int fmt = 0; fmt < 2; fmt++) {
        struct cel_arena a;
        struct cel_task t2 = *t, back;
        struct cel_props p;
        struct cel_table h;
        struct cel_buf b = CEL_BUF_INIT;
        char err[256];
        t2.format = (enum cel_format)fmt;
        t2.argsrepr = t2.kwargsrepr = NULL;
        cel_arena_init(&a, 0);
        check(cel_task_encode(&t2, &a, &p, &h, &b) == 0 || fmt == CEL_FMT_JSON);
        if (b.len && cel_task_decode(&back, &a, &p, &h, b.data, b.len, lim, err, sizeof err) == 0) {
            check(!strcmp(back.task, t->task) && !strcmp(back.id, t->id));
            if (fmt == CEL_FMT_MSGPACK) {
                same(back.args, t->args);
                same(back.kwargs, t->kwargs);
                same(back.chain, t->chain);
            }
        } else {
            check(fmt == CEL_FMT_JSON); /* JSON may refuse bin that is not text, or deep nesting */
        }
        cel_buf_free(&b);
        cel_arena_free(&a);
    }
}

static void decode_task(const uint8_t *body, size_t len, int json, const struct cel_limits *lim)
{
    struct cel_value tl[2] = {{.type = CEL_V_VOID}, {.type = CEL_V_VOID}};
    struct cel_field f[4] = {
        {CEL_SPAN_LIT("task"), {.type = CEL_V_STR}},
        {CEL_SPAN_LIT("id"), {.type = CEL_V_STR}},
        {CEL_SPAN_LIT("timelimit"), {.type = CEL_V_ARRAY}},
        {CEL_SPAN_LIT("x-other"), {.type = CEL_V_VOID}},
    };
    f[0].v = cel_value_str("fuzz.task", 9);
    f[1].v = cel_value_str("id-1", 4);
    f[2].v.u.a.items = tl;
    f[2].v.u.a.n = 2;
    struct cel_table h = {f, 4};
    struct cel_props p = {.content_type = json ? CEL_CT_JSON : CEL_CT_MSGPACK};
    struct cel_arena a;
    struct cel_task t;
    char err[256];
    cel_arena_init(&a, 0);
    int rc = cel_task_decode(&t, &a, &p, &h, body, len, lim, err, sizeof err);
    if (rc == 0) {
        check(t.args.len > 0 && t.kwargs.len > 0);
        reencode(&t, lim);
    } else {
        check(err[0] != '\0' && strchr(err, '\n') == NULL);
    }
    cel_arena_free(&a);
}

static void decode_result(const uint8_t *data, size_t len, int json)
{
    struct cel_arena a;
    struct cel_result_view v;
    char err[256];
    cel_arena_init(&a, 0);
    if (cel_result_decode(&v, &a, data, len, json ? CEL_FMT_JSON : CEL_FMT_MSGPACK, err,
                          sizeof err) == 0) {
        struct cel_buf b = CEL_BUF_INIT;
        check(v.r.status && v.r.task_id);
        cel_result_encode(&v.r, CEL_FMT_MSGPACK, &b);
        cel_buf_free(&b);
    }
    cel_arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int json = data[0] & 1;
    const struct cel_limits *lim = data[0] & 2 ? &tight : &cel_default_limits;
    decode_task(data + 1, size - 1, json, lim);
    decode_task(data, size, 0, &cel_default_limits);
    decode_result(data + 1, size - 1, json);
    return 0;
}
