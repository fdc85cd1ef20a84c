/* fake_host.c: the test host behind fake_host.h (see there). */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tests/lib/fake_host.h"

/* ---- host functions ---- */

static const struct cel_job_info *h_info(struct cel_job *j)
{
    return &j->info;
}

static const msgpack_object *h_args(struct cel_job *j)
{
    return j->args_u.data.type == MSGPACK_OBJECT_ARRAY ? &j->args_u.data : &j->empty_args;
}

static const msgpack_object *h_kwargs(struct cel_job *j)
{
    return j->kwargs_u.data.type == MSGPACK_OBJECT_MAP ? &j->kwargs_u.data : &j->empty_kwargs;
}

static const msgpack_object *h_arg(struct cel_job *j, size_t i, const char *name)
{
    const msgpack_object_array *a = &h_args(j)->via.array;
    const msgpack_object_map *m = &h_kwargs(j)->via.map;
    if (i < a->size)
        return &a->ptr[i];
    for (uint32_t k = 0; name && k < m->size; k++) {
        const msgpack_object *key = &m->ptr[k].key;
        if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == strlen(name) &&
            memcmp(key->via.str.ptr, name, key->via.str.size) == 0)
            return &m->ptr[k].val;
    }
    return NULL;
}

static msgpack_packer *h_result(struct cel_job *j)
{
    return &j->result_pk;
}

static void record_exc(struct cel_job *j, const char *type, const char *fmt, va_list ap)
{
    snprintf(j->exc_type, sizeof j->exc_type, "%s", type);
    vsnprintf(j->exc_message, sizeof j->exc_message, fmt, ap);
}

static int h_fail(struct cel_job *j, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_exc(j, type, fmt, ap);
    va_end(ap);
    j->failed++;
    return CEL_EINVAL;
}

/* Like the worker: past max_retries the retry becomes a failure with the same exception. */
static int h_retry(struct cel_job *j, double countdown, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_exc(j, type, fmt, ap);
    va_end(ap);
    if (j->info.max_retries >= 0 && j->info.retries >= j->info.max_retries) {
        j->failed++;
        return CEL_EINVAL;
    }
    j->retried++;
    j->countdown = countdown;
    return CEL_EAGAIN;
}

static int h_enqueue(struct cel_job *j, const struct cel_enqueue *req)
{
    if (!req || !req->task)
        return CEL_EINVAL;
    j->enqueued++;
    snprintf(j->enqueue_task, sizeof j->enqueue_task, "%s", req->task);
    msgpack_sbuffer_clear(&j->enqueue_args);
    if (req->args.len)
        msgpack_sbuffer_write(&j->enqueue_args, req->args.ptr, req->args.len);
    return 0;
}

static void h_log(struct cel_job *j, enum cel_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->last_log, sizeof j->last_log, fmt, ap);
    va_end(ap);
    j->logged++;
    if (getenv("FAKE_HOST_VERBOSE"))
        fprintf(stderr, "[%s %d] %s\n", j->info.task, (int)level, j->last_log);
}

static int h_deadline_passed(struct cel_job *j)
{
    return j->deadline;
}

static const struct cel_host host = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_host),
    .info = h_info,
    .args = h_args,
    .kwargs = h_kwargs,
    .arg = h_arg,
    .result = h_result,
    .fail = h_fail,
    .retry = h_retry,
    .enqueue = h_enqueue,
    .log = h_log,
    .deadline_passed = h_deadline_passed,
};

const struct cel_host *fake_host(void)
{
    return &host;
}

/* ---- services ---- */

int fake_service_open(struct fake_service *s, const char *path)
{
    memset(s, 0, sizeof *s);
    const struct cel_service *(*fn)(void);
    if (!(s->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
        snprintf(s->errstr, sizeof s->errstr, "dlopen: %s (run make first?)", dlerror());
        return -1;
    }
    *(void **)&fn = dlsym(s->dl, CEL_SERVICE_SYMBOL);
    s->svc = fn ? fn() : NULL;
    if (!s->svc || s->svc->abi != CEL_SERVICE_ABI || s->svc->size < sizeof(struct cel_service)) {
        snprintf(s->errstr, sizeof s->errstr, "%s: no valid %s descriptor", path,
                 CEL_SERVICE_SYMBOL);
        return -1;
    }
    if (s->svc->init && s->svc->init(&host, &s->state) != 0) {
        snprintf(s->errstr, sizeof s->errstr, "%s: init() failed", path);
        s->svc = NULL;
        return -1;
    }
    return 0;
}

void fake_service_close(struct fake_service *s)
{
    if (s->svc && s->svc->fini)
        s->svc->fini(s->state);
    if (s->dl)
        dlclose(s->dl);
    memset(s, 0, sizeof *s);
}

const struct cel_task_def *fake_service_task(const struct fake_service *s, const char *name)
{
    for (const struct cel_task_def *t = s->svc->tasks; t->name; t++)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

/* ---- jobs ---- */

void fake_job_init(struct cel_job *j, const char *task)
{
    static unsigned counter;
    memset(j, 0, sizeof *j);
    snprintf(j->id_buf, sizeof j->id_buf, "fake-%u", ++counter);
    j->info = (struct cel_job_info){.id = j->id_buf,
                                    .task = task,
                                    .queue = "test",
                                    .hostname = "fake@localhost",
                                    .max_retries = 3};
    msgpack_sbuffer_init(&j->args_buf);
    msgpack_sbuffer_init(&j->kwargs_buf);
    msgpack_sbuffer_init(&j->result_buf);
    msgpack_sbuffer_init(&j->enqueue_args);
    msgpack_packer_init(&j->args_pk, &j->args_buf, msgpack_sbuffer_write);
    msgpack_packer_init(&j->kwargs_pk, &j->kwargs_buf, msgpack_sbuffer_write);
    msgpack_packer_init(&j->result_pk, &j->result_buf, msgpack_sbuffer_write);
    j->empty_args.type = MSGPACK_OBJECT_ARRAY;
    j->empty_kwargs.type = MSGPACK_OBJECT_MAP;
}

void fake_job_free(struct cel_job *j)
{
    msgpack_sbuffer_destroy(&j->args_buf);
    msgpack_sbuffer_destroy(&j->kwargs_buf);
    msgpack_sbuffer_destroy(&j->result_buf);
    msgpack_sbuffer_destroy(&j->enqueue_args);
    msgpack_unpacked_destroy(&j->args_u);
    msgpack_unpacked_destroy(&j->kwargs_u);
    free(j->result_json);
    memset(j, 0, sizeof *j);
}

static int pack_json(msgpack_packer *pk, const json_t *v)
{
    const char *key;
    json_t *item;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(v));
        json_object_foreach((json_t *)v, key, item)
        {
            msgpack_pack_str_with_body(pk, key, strlen(key));
            pack_json(pk, item);
        }
        return 0;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        json_array_foreach(v, i, item) pack_json(pk, item);
        return 0;
    case JSON_STRING:
        return msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, json_integer_value(v));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    }
    return -1;
}

static int set_json(msgpack_sbuffer *buf, msgpack_packer *pk, const char *text, json_type want)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v || json_typeof(v) != want) {
        fprintf(stderr, "fake_host: bad JSON %s: %s\n", text, v ? "wrong type" : err.text);
        json_decref(v);
        return -1;
    }
    msgpack_sbuffer_clear(buf);
    pack_json(pk, v);
    json_decref(v);
    return 0;
}

int fake_job_args_json(struct cel_job *j, const char *json)
{
    return set_json(&j->args_buf, &j->args_pk, json, JSON_ARRAY);
}

int fake_job_kwargs_json(struct cel_job *j, const char *json)
{
    return set_json(&j->kwargs_buf, &j->kwargs_pk, json, JSON_OBJECT);
}

/* Exactly one msgpack value of the given type fills buf. */
static int unpack_one(msgpack_unpacked *u, const msgpack_sbuffer *buf, msgpack_object_type type)
{
    size_t off = 0;
    msgpack_unpacked_init(u);
    if (buf->size == 0)
        return 0;
    if (msgpack_unpack_next(u, buf->data, buf->size, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != buf->size || u->data.type != type)
        return -1;
    return 0;
}

static int violation(struct cel_job *j, const char *why)
{
    j->violation = why;
    fprintf(stderr, "fake_host: %s broke the handler contract: %s\n", j->info.task, why);
    return FAKE_EPROTOCOL;
}

static int check_outcome(struct cel_job *j, int rc)
{
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    int bad = j->result_buf.size && (msgpack_unpack_next(&u, j->result_buf.data, j->result_buf.size,
                                                         &off) != MSGPACK_UNPACK_SUCCESS ||
                                     off != j->result_buf.size);
    msgpack_unpacked_destroy(&u);
    if (rc == 0 && (j->failed || j->retried))
        return violation(j, "returned 0 after fail() or retry()");
    if (rc < 0 && !j->failed && !j->retried)
        return violation(j, "returned < 0 without fail() or retry()");
    if (rc > 0)
        return violation(j, "returned a positive value");
    if (rc == 0 && bad)
        return violation(j, "packed something other than exactly one value");
    return rc;
}

int fake_job_run(struct fake_service *s, struct cel_job *j)
{
    const struct cel_task_def *t = fake_service_task(s, j->info.task);
    if (!t)
        return violation(j, "no such task");
    if (unpack_one(&j->args_u, &j->args_buf, MSGPACK_OBJECT_ARRAY) != 0 ||
        unpack_one(&j->kwargs_u, &j->kwargs_buf, MSGPACK_OBJECT_MAP) != 0)
        return violation(j, "the test packed bad arguments");
    return check_outcome(j, t->handler(&host, j, s->state));
}

int fake_call(struct fake_service *s, struct cel_job *j, const char *task, const char *args,
              const char *kwargs)
{
    fake_job_init(j, task);
    if ((args && fake_job_args_json(j, args) != 0) ||
        (kwargs && fake_job_kwargs_json(j, kwargs) != 0))
        return violation(j, "the test passed bad JSON");
    return fake_job_run(s, j);
}

/* ---- results as JSON ---- */

static json_t *to_json(const msgpack_object *o)
{
    json_t *v;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return json_stringn_nocheck(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY:
        v = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(v, to_json(&o->via.array.ptr[i]));
        return v;
    case MSGPACK_OBJECT_MAP:
        v = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR)
                json_object_setn_new_nocheck(v, k->via.str.ptr, k->via.str.size,
                                             to_json(&o->via.map.ptr[i].val));
        }
        return v;
    default:
        return json_string("<ext>");
    }
}

const char *fake_job_result_json(struct cel_job *j)
{
    msgpack_unpacked u;
    size_t off = 0;
    free(j->result_json);
    j->result_json = NULL;
    msgpack_unpacked_init(&u);
    if (j->result_buf.size == 0)
        j->result_json = strdup("null");
    else if (msgpack_unpack_next(&u, j->result_buf.data, j->result_buf.size, &off) ==
             MSGPACK_UNPACK_SUCCESS) {
        json_t *v = to_json(&u.data);
        j->result_json = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(v);
    }
    msgpack_unpacked_destroy(&u);
    return j->result_json ? j->result_json : "<unparsable result>";
}
