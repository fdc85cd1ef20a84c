/* client_result.c: reading results (celery-task-meta-<id>, either serializer) into a view, and
 * rendering them as JSON for the CLI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/result.h"
#include "producer/client_priv.h"

static void pending_view(const char *task_id, struct cel_client_result *r)
{
    memset(r, 0, sizeof *r);
    r->task_id = task_id;
    r->status = CEL_STATE_PENDING;
}

/* Redis holds no marker of the serializer: a JSON meta is an object, a msgpack one a map. */
static enum cel_format meta_format(struct cel_span m)
{
    size_t i = 0;
    while (i < m.len && (m.ptr[i] == ' ' || m.ptr[i] == '\n' || m.ptr[i] == '\t'))
        i++;
    return i < m.len && m.ptr[i] == '{' ? CEL_FMT_JSON : CEL_FMT_MSGPACK;
}

static int fill_view(struct cel_client *c, const char *task_id, struct cel_client_result *r)
{
    struct cel_result_view v;
    char err[256] = "";
    struct cel_span m = cel_buf_span(&c->res_buf);
    int rc = cel_result_decode(&v, &c->res_arena, m.ptr, m.len, meta_format(m), err, sizeof err);
    if (rc)
        return cel__client_err(c, rc, "result of %s is malformed: %s", task_id, err);
    memset(r, 0, sizeof *r);
    r->task_id = v.r.task_id ? v.r.task_id : cel_arena_strdup(&c->res_arena, task_id);
    r->status = v.r.status;
    r->result = v.r.result;
    r->traceback = v.r.traceback;
    r->date_done_us = v.r.date_done;
    if (!v.r.exc)
        return 0;
    r->exc_type = v.exc.type;
    r->exc_module = v.exc.module;
    r->exc_args = v.exc.args;
    struct cel_buf s = CEL_BUF_INIT;
    rc = v.exc.args.len ? cel__exc_str(v.exc.args, &s)
                        : cel_buf_puts(&s, v.exc.message ? v.exc.message : "");
    r->exc_message = rc ? "" : cel_arena_strndup(&c->res_arena, s.data ? s.data : "", s.len);
    cel_buf_free(&s);
    return r->exc_message ? 0 : CEL_ENOMEM;
}

static int result_begin(struct cel_client *c, const char *task_id)
{
    if (!task_id || !*task_id)
        return cel__client_err(c, CEL_EINVAL, "empty task id");
    cel_buf_clear(&c->res_buf);
    cel_arena_reset(&c->res_arena);
    return cel__client_store(c);
}

int cel_client_result_get(struct cel_client *c, const char *task_id, struct cel_client_result *r)
{
    int rc = result_begin(c, task_id);
    if (rc)
        return rc;
    rc = cel_store_get_result(c->store, task_id, &c->res_buf);
    if (rc == CEL_ENOTFOUND) {
        pending_view(cel_arena_strdup(&c->res_arena, task_id), r);
        return 0;
    }
    return rc ? cel__client_store_err(c, rc, "get result") : fill_view(c, task_id, r);
}

int cel_client_result_wait(struct cel_client *c, const char *task_id, int timeout_ms,
                           struct cel_client_result *r)
{
    int rc = result_begin(c, task_id);
    if (rc)
        return rc;
    rc = cel_store_wait_result(c->store, task_id, timeout_ms, &c->res_buf);
    if (rc == CEL_ETIMEDOUT)
        return cel__client_err(c, rc, "no result for %s within %d ms", task_id, timeout_ms);
    return rc ? cel__client_store_err(c, rc, "wait for result") : fill_view(c, task_id, r);
}

/* ---- JSON rendering ---- */

/* A msgpack value as a jansson value; text that is not valid JSON-able becomes its repr. */
static json_t *mp_json(struct cel_span mp)
{
    if (!mp.len)
        return json_null();
    struct cel_buf b = CEL_BUF_INIT;
    json_t *v = NULL;
    if (!cel_msgpack_to_json(mp, &b))
        v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!v) {
        cel_buf_clear(&b);
        v = cel_msgpack_repr(mp, 1 << 20, &b) ? json_null() : json_stringn(b.data, b.len);
    }
    cel_buf_free(&b);
    return v;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static const char *dump(struct cel_client *c, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    cel_buf_clear(&c->res_json);
    if (!s || cel_buf_puts(&c->res_json, s)) {
        free(s);
        return "null";
    }
    free(s);
    return c->res_json.data;
}

const char *cel_client_result_json(struct cel_client *c, const struct cel_client_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", str_or_null(r->task_id));
    json_object_set_new(o, "status", str_or_null(r->status));
    json_object_set_new(o, "result", r->exc_type ? json_null() : mp_json(r->result));
    if (r->exc_type) {
        json_t *e = json_object();
        json_object_set_new(e, "type", str_or_null(r->exc_type));
        json_object_set_new(e, "module", str_or_null(r->exc_module));
        json_object_set_new(e, "message", str_or_null(r->exc_message));
        json_object_set_new(e, "args", mp_json(r->exc_args));
        json_object_set_new(o, "exception", e);
    }
    if (r->traceback)
        json_object_set_new(o, "traceback", json_string(r->traceback));
    return dump(c, o);
}

const char *cel_client_value_json(struct cel_client *c, const struct cel_client_result *r)
{
    return dump(c, mp_json(r->result));
}
