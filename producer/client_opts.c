/* client_opts.c: send options by name, one table shared by the CLI's flags and the keys of bulk
 * JSONL lines, and the JSONL job parser. Pure: values are checked here, nothing is sent. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "producer/client_internal.h"

typedef int (*cel__opt_fn)(struct cel_send_opts *o, struct cel_arena *a, const json_t *v, char *err,
                           size_t errlen);

static int bad(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s", what);
    return CEL_EINVAL;
}

static int get_str(struct cel_arena *a, const json_t *v, const char **out)
{
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v))
        return CEL_EINVAL;
    *out = cel_arena_strndup(a, json_string_value(v), json_string_length(v));
    return *out ? 0 : CEL_ENOMEM;
}

/* A number, or text holding one. */
static int get_num(const json_t *v, double *d)
{
    if (json_is_number(v)) {
        *d = json_number_value(v);
    } else if (json_is_string(v)) {
        char *end;
        const char *s = json_string_value(v);
        errno = 0;
        *d = strtod(s, &end);
        if (end == s || *end || errno)
            return CEL_EINVAL;
    } else {
        return CEL_EINVAL;
    }
    return isfinite(*d) && *d >= 0 ? 0 : CEL_EINVAL;
}

static int get_time(const json_t *v, double *secs, int64_t *abs_us)
{
    if (json_is_number(v)) {
        *abs_us = 0;
        return get_num(v, secs);
    }
    return json_is_string(v) ? cel__parse_time(json_string_value(v), secs, abs_us) : CEL_EINVAL;
}

#define STR_SETTER(field)                                                                          \
    static int set_##field(struct cel_send_opts *o, struct cel_arena *a, const json_t *v,          \
                           char *err, size_t errlen)                                               \
    {                                                                                              \
        int rc = get_str(a, v, &o->field);                                                         \
        return rc == CEL_EINVAL ? bad(err, errlen, #field ": expected a non-empty string") : rc;   \
    }
STR_SETTER(queue)
STR_SETTER(task_id)
STR_SETTER(idempotency_key)
STR_SETTER(parent_id)
STR_SETTER(root_id)

static int set_countdown(struct cel_send_opts *o, struct cel_arena *a, const json_t *v, char *err,
                         size_t errlen)
{
    if (get_num(v, &o->countdown))
        return bad(err, errlen, "countdown: expected seconds (a number >= 0)");
    return 0;
}

static int set_eta(struct cel_send_opts *o, struct cel_arena *a, const json_t *v, char *err,
                   size_t errlen)
{
    double secs = 0;
    int64_t us = 0;
    if (!json_is_string(v) || cel__parse_time(json_string_value(v), &secs, &us) || !us)
        return bad(err, errlen, "eta: expected an ISO-8601 time (e.g. 2030-01-01T12:00:00Z)");
    o->eta_us = us;
    return 0;
}

static int set_expires(struct cel_send_opts *o, struct cel_arena *a, const json_t *v, char *err,
                       size_t errlen)
{
    double secs = 0;
    int64_t us = 0;
    if (get_time(v, &secs, &us) || (!us && secs <= 0))
        return bad(err, errlen, "expires: expected seconds (> 0) or an ISO-8601 time");
    o->expires_in = secs;
    o->expires_us = us;
    return 0;
}

static int set_priority(struct cel_send_opts *o, struct cel_arena *a, const json_t *v, char *err,
                        size_t errlen)
{
    double d;
    if (get_num(v, &d) || d > 255 || d != floor(d))
        return bad(err, errlen, "priority: expected an integer from 0 to 255");
    o->priority = (int)d;
    return 0;
}

static int set_limit(double *field, const json_t *v, const char *name, char *err, size_t errlen)
{
    if (get_num(v, field)) {
        snprintf(err, errlen, "%s: expected seconds (a number >= 0)", name);
        return CEL_EINVAL;
    }
    return 0;
}

static int set_time_limit(struct cel_send_opts *o, struct cel_arena *a, const json_t *v, char *err,
                          size_t errlen)
{
    return set_limit(&o->time_limit, v, "time_limit", err, errlen);
}

static int set_soft_time_limit(struct cel_send_opts *o, struct cel_arena *a, const json_t *v,
                               char *err, size_t errlen)
{
    return set_limit(&o->soft_time_limit, v, "soft_time_limit", err, errlen);
}

static int set_ignore_result(struct cel_send_opts *o, struct cel_arena *a, const json_t *v,
                             char *err, size_t errlen)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no",
                                                                                "off"};
    if (json_is_boolean(v)) {
        o->ignore_result = json_is_true(v);
        return 0;
    }
    for (size_t i = 0; json_is_string(v) && i < 4; i++) {
        if (!strcmp(json_string_value(v), yes[i]) || !strcmp(json_string_value(v), no[i])) {
            o->ignore_result = !strcmp(json_string_value(v), yes[i]);
            return 0;
        }
    }
    return bad(err, errlen, "ignore_result: expected true or false");
}

static int set_format(struct cel_send_opts *o, struct cel_arena *a, const json_t *v, char *err,
                      size_t errlen)
{
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    if (!strcmp(s, "msgpack"))
        o->format = CEL_CLIENT_FMT_MSGPACK;
    else if (!strcmp(s, "json"))
        o->format = CEL_CLIENT_FMT_JSON;
    else
        return bad(err, errlen, "format: expected msgpack or json");
    return 0;
}

/* msgpack of v copied into the arena. */
static int arena_pack(struct cel_arena *a, const json_t *v, struct cel_span *out)
{
    struct cel_buf b = CEL_BUF_INIT;
    int rc = cel__json_pack(v, &b);
    char *p = rc ? NULL : cel_arena_alloc(a, b.len);
    if (!rc && !p)
        rc = CEL_ENOMEM;
    if (!rc) {
        memcpy(p, b.data, b.len);
        *out = (struct cel_span){p, b.len};
    }
    cel_buf_free(&b);
    return rc;
}

static int set_headers(struct cel_send_opts *o, struct cel_arena *a, const json_t *v, char *err,
                       size_t errlen)
{
    if (!json_is_object(v))
        return bad(err, errlen, "headers: expected a JSON object");
    return arena_pack(a, v, &o->headers);
}

static int sig_part(struct cel_arena *a, const json_t *sig, const char *key, int type,
                    struct cel_span *out)
{
    const json_t *v = json_object_get(sig, key);
    if (!v || json_is_null(v))
        return 0;
    if ((int)json_typeof(v) != type)
        return CEL_EINVAL;
    return arena_pack(a, v, out);
}

static int sig_from_object(struct cel_arena *a, const json_t *v, struct cel_sig *s)
{
    static const char *const keys[] = {"task",    "args",      "kwargs",
                                       "options", "immutable", "subtask_type"};
    const char *key;
    json_t *item;
    json_object_foreach((json_t *)v, key, item)
    {
        size_t i = 0;
        while (i < 6 && strcmp(key, keys[i]))
            i++;
        if (i == 6 || (i == 5 && !json_is_null(item)))
            return CEL_EINVAL;
    }
    const json_t *imm = json_object_get(v, "immutable");
    if (get_str(a, json_object_get(v, "task"), &s->task) || (imm && !json_is_boolean(imm)))
        return CEL_EINVAL;
    s->immutable = imm && json_is_true(imm);
    int rc = sig_part(a, v, "args", JSON_ARRAY, &s->args);
    if (!rc)
        rc = sig_part(a, v, "kwargs", JSON_OBJECT, &s->kwargs);
    if (!rc)
        rc = sig_part(a, v, "options", JSON_OBJECT, &s->options);
    return rc;
}

static int sig_from_json(struct cel_arena *a, const json_t *v, struct cel_sig *s)
{
    memset(s, 0, sizeof *s);
    if (json_is_string(v))
        return get_str(a, v, &s->task);
    return json_is_object(v) ? sig_from_object(a, v, s) : CEL_EINVAL;
}

/* Appends the signatures in v (one, or an array of them) to *list. */
static int sig_append(struct cel_arena *a, const json_t *v, const struct cel_sig **list, size_t *n)
{
    size_t add = json_is_array(v) ? json_array_size(v) : 1;
    struct cel_sig *nl = cel_arena_alloc(a, (*n + add) * sizeof *nl);
    if (!nl)
        return CEL_ENOMEM;
    if (*n)
        memcpy(nl, *list, *n * sizeof *nl);
    for (size_t i = 0; i < add; i++) {
        int rc = sig_from_json(a, json_is_array(v) ? json_array_get(v, i) : v, &nl[*n + i]);
        if (rc)
            return rc;
    }
    *list = nl;
    *n += add;
    return 0;
}

#define SIG_SETTER(field)                                                                          \
    static int set_##field(struct cel_send_opts *o, struct cel_arena *a, const json_t *v,          \
                           char *err, size_t errlen)                                               \
    {                                                                                              \
        int rc = sig_append(a, v, &o->field, &o->n_##field);                                       \
        return rc == CEL_EINVAL ? bad(err, errlen,                                                 \
                                      #field ": expected a task name or a signature "              \
                                             "{\"task\", \"args\", \"kwargs\", "                   \
                                             "\"options\", \"immutable\"}")                        \
                                : rc;                                                              \
    }
SIG_SETTER(link)
SIG_SETTER(link_error)
SIG_SETTER(chain)

enum { CEL__TEXT_PLAIN, CEL__TEXT_JSON_OBJ, CEL__TEXT_JSON };

static const struct {
    const char *name;
    cel__opt_fn fn;
    int text; /* how command-line text becomes a value */
} opt_table[] = {
    {"queue", set_queue, CEL__TEXT_PLAIN},
    {"task_id", set_task_id, CEL__TEXT_PLAIN},
    {"countdown", set_countdown, CEL__TEXT_PLAIN},
    {"eta", set_eta, CEL__TEXT_PLAIN},
    {"expires", set_expires, CEL__TEXT_PLAIN},
    {"priority", set_priority, CEL__TEXT_PLAIN},
    {"idempotency_key", set_idempotency_key, CEL__TEXT_PLAIN},
    {"link", set_link, CEL__TEXT_JSON_OBJ},
    {"link_error", set_link_error, CEL__TEXT_JSON_OBJ},
    {"chain", set_chain, CEL__TEXT_JSON_OBJ},
    {"ignore_result", set_ignore_result, CEL__TEXT_PLAIN},
    {"time_limit", set_time_limit, CEL__TEXT_PLAIN},
    {"soft_time_limit", set_soft_time_limit, CEL__TEXT_PLAIN},
    {"headers", set_headers, CEL__TEXT_JSON},
    {"format", set_format, CEL__TEXT_PLAIN},
    {"parent_id", set_parent_id, CEL__TEXT_PLAIN},
    {"root_id", set_root_id, CEL__TEXT_PLAIN},
};
#define CEL__NOPTS (sizeof opt_table / sizeof opt_table[0])

static int find_opt(const char *name)
{
    char norm[32];
    size_t n = strlen(name);
    if (n >= sizeof norm)
        return -1;
    for (size_t i = 0; i <= n; i++)
        norm[i] = name[i] == '-' ? '_' : name[i];
    for (size_t i = 0; i < CEL__NOPTS; i++)
        if (!strcmp(opt_table[i].name, norm))
            return (int)i;
    return -1;
}

bool cel__sendopt_known(const char *name)
{
    return find_opt(name) >= 0;
}

int cel__sendopt_set(struct cel_send_opts *o, struct cel_arena *a, const char *name,
                     const json_t *v, char *err, size_t errlen)
{
    int i = find_opt(name);
    if (i < 0) {
        snprintf(err, errlen, "unknown option '%s'", name);
        return CEL_EINVAL;
    }
    return opt_table[i].fn(o, a, v, err, errlen);
}

int cel__sendopt_set_text(struct cel_send_opts *o, struct cel_arena *a, const char *name,
                          const char *text, char *err, size_t errlen)
{
    int i = find_opt(name);
    if (i < 0)
        return cel__sendopt_set(o, a, name, NULL, err, errlen);
    json_t *v;
    bool as_json = opt_table[i].text == CEL__TEXT_JSON ||
                   (opt_table[i].text == CEL__TEXT_JSON_OBJ && (*text == '{' || *text == '['));
    if (as_json) {
        json_error_t je;
        v = json_loads(text, JSON_REJECT_DUPLICATES, &je);
        if (!v) {
            snprintf(err, errlen, "%s: invalid JSON at line %d column %d: %s", opt_table[i].name,
                     je.line, je.column, je.text);
            return CEL_EJSON;
        }
    } else {
        v = json_string(text);
        if (!v)
            return bad(err, errlen, "option value is not valid UTF-8");
    }
    int rc = opt_table[i].fn(o, a, v, err, errlen);
    json_decref(v);
    return rc;
}

/* ---- JSONL job lines ---- */

static int job_part(const json_t *v, int type, const char *what, struct cel_buf *scratch,
                    size_t *off, size_t *len, char *err, size_t errlen)
{
    *off = scratch->len;
    *len = 0;
    if (!v || json_is_null(v))
        return 0;
    if ((int)json_typeof(v) != type) {
        snprintf(err, errlen, "\"%s\" must be a JSON %s", what,
                 type == JSON_ARRAY ? "array" : "object");
        return CEL_EINVAL;
    }
    int rc = cel__json_pack(v, scratch);
    *len = scratch->len - *off;
    return rc;
}

static int job_fields(const json_t *root, struct cel__job *job, struct cel_arena *a,
                      struct cel_buf *scratch, char *err, size_t errlen)
{
    if (get_str(a, json_object_get(root, "task"), &job->task))
        return bad(err, errlen, "\"task\" missing or not a non-empty string");
    size_t ao = 0, al = 0, ko = 0, kl = 0;
    int rc =
        job_part(json_object_get(root, "args"), JSON_ARRAY, "args", scratch, &ao, &al, err, errlen);
    if (!rc)
        rc = job_part(json_object_get(root, "kwargs"), JSON_OBJECT, "kwargs", scratch, &ko, &kl,
                      err, errlen);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)root, key, v)
    {
        if (rc || !strcmp(key, "task") || !strcmp(key, "args") || !strcmp(key, "kwargs"))
            continue;
        rc = cel__sendopt_set(&job->opts, a, key, v, err, errlen);
    }
    if (!rc) {
        job->args = (struct cel_span){al ? scratch->data + ao : NULL, al};
        job->kwargs = (struct cel_span){kl ? scratch->data + ko : NULL, kl};
    }
    return rc;
}

int cel__job_parse(const char *line, size_t len, struct cel__job *job, struct cel_arena *a,
                   struct cel_buf *scratch, char *err, size_t errlen)
{
    json_error_t je;
    memset(job, 0, sizeof *job);
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "invalid JSON at column %d: %s", je.column, je.text);
        return CEL_EJSON;
    }
    int rc = json_is_object(root) ? job_fields(root, job, a, scratch, err, errlen)
                                  : bad(err, errlen, "expected a JSON object");
    json_decref(root);
    return rc;
}
