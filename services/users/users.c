/* users.c: the users service: create (validated, unique username and email), get and list
 * users stored in users.db. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "celeriac/service.h"
#include "services/lib/svcdb.h"

#define USERNAME_MAX 64
#define EMAIL_MAX 254
#define LOCAL_MAX 64

struct users {
    sqlite3 *db;
    sqlite3_stmt *insert, *taken, *get, *count, *list;
};

/* ---- arguments, checked the way Python checks a call ---- */

static const char *type_name(const msgpack_object *o)
{
    static const char *const names[] = {
        [MSGPACK_OBJECT_NIL] = "NoneType",
        [MSGPACK_OBJECT_BOOLEAN] = "bool",
        [MSGPACK_OBJECT_POSITIVE_INTEGER] = "int",
        [MSGPACK_OBJECT_NEGATIVE_INTEGER] = "int",
        [MSGPACK_OBJECT_FLOAT32] = "float",
        [MSGPACK_OBJECT_FLOAT64] = "float",
        [MSGPACK_OBJECT_STR] = "str",
        [MSGPACK_OBJECT_ARRAY] = "list",
        [MSGPACK_OBJECT_MAP] = "dict",
        [MSGPACK_OBJECT_BIN] = "bytes",
        [MSGPACK_OBJECT_EXT] = "ext",
    };
    return (unsigned)o->type < sizeof names / sizeof names[0] && names[o->type] ? names[o->type]
                                                                                : "object";
}

static int str_is(const msgpack_object *o, const char *s)
{
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static int index_of(const msgpack_object *key, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (str_is(key, names[i]))
            return (int)i;
    return -1;
}

/* Binds positional and keyword arguments to names (all required), like a Python signature
 * f(name0, name1, ...): TypeError for too many, unknown, repeated or missing arguments. */
static int bind_args(const struct cel_host *host, struct cel_job *job, const char *const *names,
                     size_t n, const msgpack_object **out)
{
    const char *task = host->info(job)->task;
    const msgpack_object_array *args = &host->args(job)->via.array;
    const msgpack_object_map *kwargs = &host->kwargs(job)->via.map;
    if (args->size > n)
        return host->fail(job, "TypeError", "%s() takes %zu positional arguments but %u were given",
                          task, n, (unsigned)args->size);
    for (size_t i = 0; i < n; i++)
        out[i] = i < args->size ? &args->ptr[i] : NULL;
    for (uint32_t k = 0; k < kwargs->size; k++) {
        const msgpack_object *key = &kwargs->ptr[k].key;
        int i = index_of(key, names, n);
        if (key->type != MSGPACK_OBJECT_STR)
            return host->fail(job, "TypeError", "%s() keywords must be strings", task);
        if (i < 0)
            return host->fail(job, "TypeError", "%s() got an unexpected keyword argument '%.*s'",
                              task, (int)key->via.str.size, key->via.str.ptr);
        if (out[i])
            return host->fail(job, "TypeError", "%s() got multiple values for argument '%s'", task,
                              names[i]);
        out[i] = &kwargs->ptr[k].val;
    }
    for (size_t i = 0; i < n; i++)
        if (!out[i])
            return host->fail(job, "TypeError", "%s() missing required argument: '%s'", task,
                              names[i]);
    return 0;
}

static int need_type(const struct cel_host *host, struct cel_job *job, const char *name,
                     const msgpack_object *o, msgpack_object_type type, const char *want)
{
    if (o->type == type)
        return 0;
    return host->fail(job, "TypeError", "%s() argument '%s' must be %s, not %s",
                      host->info(job)->task, name, want, type_name(o));
}

/* ---- validation ---- */

static int username_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static const char *check_username(const char *s, size_t n)
{
    if (n == 0 || n > USERNAME_MAX)
        return "must be 1 to 64 characters long";
    for (size_t i = 0; i < n; i++)
        if (!username_char(s[i]))
            return "may contain only letters, digits, '_', '.' and '-'";
    return NULL;
}

/* A deliberately plain check: one '@', a non-empty local part, a dotted domain with non-empty
 * labels, no spaces or control characters, at most 254 bytes. */
static const char *check_email(const char *s, size_t n)
{
    if (n > EMAIL_MAX)
        return "is longer than 254 characters";
    const char *at = memchr(s, '@', n);
    if (!at || memchr(at + 1, '@', n - (size_t)(at - s) - 1))
        return "must contain exactly one '@'";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return "must not contain spaces or control characters";
    size_t local = (size_t)(at - s), dn = n - local - 1;
    const char *d = at + 1;
    if (local == 0 || local > LOCAL_MAX)
        return "must have a local part of 1 to 64 characters before the '@'";
    if (!memchr(d, '.', dn) || d[0] == '.' || d[dn - 1] == '.' || memmem(d, dn, "..", 2))
        return "must have a domain like example.com after the '@'";
    return NULL;
}

/* ---- results ---- */

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Packs the current row of stmt (id, username, email) as {id, username, email}. */
static void pack_user(msgpack_packer *pk, sqlite3_stmt *stmt)
{
    msgpack_pack_map(pk, 3);
    pack_str(pk, "id");
    msgpack_pack_int64(pk, sqlite3_column_int64(stmt, 0));
    pack_str(pk, "username");
    msgpack_pack_str_with_body(pk, sqlite3_column_text(stmt, 1),
                               (size_t)sqlite3_column_bytes(stmt, 1));
    pack_str(pk, "email");
    msgpack_pack_str_with_body(pk, sqlite3_column_text(stmt, 2),
                               (size_t)sqlite3_column_bytes(stmt, 2));
}

/* ---- tasks ---- */

static int username_taken(struct users *u, const msgpack_object_str *name)
{
    sqlite3_bind_text(u->taken, 1, name->ptr, (int)name->size, SQLITE_STATIC);
    int taken = sqlite3_step(u->taken) == SQLITE_ROW;
    sqlite3_reset(u->taken);
    sqlite3_clear_bindings(u->taken);
    return taken;
}

/* The insert failed: a taken username (reported first when both are taken), a taken email, or
 * a database error. */
static int create_failed(const struct cel_host *host, struct cel_job *job, struct users *u, int rc,
                         const msgpack_object_str *name, const msgpack_object_str *email)
{
    if (sqlite3_extended_errcode(u->db) != SQLITE_CONSTRAINT_UNIQUE)
        return svc_db_error(host, job, u->db, "users.db", rc);
    if (username_taken(u, name))
        return host->fail(job, "ValueError", "username '%.*s' already exists", (int)name->size,
                          name->ptr);
    return host->fail(job, "ValueError", "email '%.*s' already registered", (int)email->size,
                      email->ptr);
}

/* users.create(username, email) -> {id, username, email} */
static int create(const struct cel_host *host, struct cel_job *job, void *state)
{
    static const char *const names[] = {"username", "email"};
    struct users *u = state;
    const msgpack_object *a[2];
    const char *why;
    int rc = bind_args(host, job, names, 2, a);
    if (rc == 0)
        rc = need_type(host, job, "username", a[0], MSGPACK_OBJECT_STR, "str");
    if (rc == 0)
        rc = need_type(host, job, "email", a[1], MSGPACK_OBJECT_STR, "str");
    if (rc != 0)
        return rc;
    const msgpack_object_str *name = &a[0]->via.str, *email = &a[1]->via.str;
    if ((why = check_username(name->ptr, name->size)))
        return host->fail(job, "ValueError", "invalid username '%.*s': %s", (int)name->size,
                          name->ptr, why);
    if ((why = check_email(email->ptr, email->size)))
        return host->fail(job, "ValueError", "invalid email '%.*s': %s", (int)email->size,
                          email->ptr, why);
    sqlite3_bind_text(u->insert, 1, name->ptr, (int)name->size, SQLITE_STATIC);
    sqlite3_bind_text(u->insert, 2, email->ptr, (int)email->size, SQLITE_STATIC);
    rc = sqlite3_step(u->insert);
    if (rc == SQLITE_ROW)
        pack_user(host->result(job), u->insert);
    else
        rc = create_failed(host, job, u, rc, name, email);
    sqlite3_reset(u->insert);
    sqlite3_clear_bindings(u->insert);
    return rc == SQLITE_ROW ? 0 : rc;
}

/* users.get(id) -> {id, username, email} or KeyError */
static int get(const struct cel_host *host, struct cel_job *job, void *state)
{
    static const char *const names[] = {"id"};
    struct users *u = state;
    const msgpack_object *id;
    int rc = bind_args(host, job, names, 1, &id);
    if (rc == 0 && id->type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
        rc = need_type(host, job, "id", id, MSGPACK_OBJECT_POSITIVE_INTEGER, "int");
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(u->get, 1, id->via.i64);
    rc = sqlite3_step(u->get);
    if (rc == SQLITE_ROW)
        pack_user(host->result(job), u->get);
    else if (rc == SQLITE_DONE)
        rc = host->fail(job, "KeyError", "user %lld not found", (long long)id->via.i64);
    else
        rc = svc_db_error(host, job, u->db, "users.db", rc);
    sqlite3_reset(u->get);
    return rc == SQLITE_ROW ? 0 : rc;
}

/* users.list() -> [{id, username, email}, ...] ordered by id. The count and the rows are read
 * in one transaction, so the array length matches the rows packed. */
static int list(const struct cel_host *host, struct cel_job *job, void *state)
{
    struct users *u = state;
    const msgpack_object *none;
    int rc = bind_args(host, job, NULL, 0, &none);
    if (rc != 0)
        return rc;
    if ((rc = sqlite3_exec(u->db, "BEGIN", NULL, NULL, NULL)) != SQLITE_OK)
        return svc_db_error(host, job, u->db, "users.db", rc);
    rc = sqlite3_step(u->count);
    if (rc == SQLITE_ROW) {
        msgpack_packer *pk = host->result(job);
        msgpack_pack_array(pk, (size_t)sqlite3_column_int64(u->count, 0));
        while ((rc = sqlite3_step(u->list)) == SQLITE_ROW)
            pack_user(pk, u->list);
    }
    sqlite3_reset(u->count);
    sqlite3_reset(u->list);
    sqlite3_exec(u->db, "COMMIT", NULL, NULL, NULL);
    return rc == SQLITE_DONE ? 0 : svc_db_error(host, job, u->db, "users.db", rc);
}

/* ---- database ---- */

static void users_fini(void *state)
{
    struct users *u = state;
    if (!u)
        return;
    sqlite3_finalize(u->insert);
    sqlite3_finalize(u->taken);
    sqlite3_finalize(u->get);
    sqlite3_finalize(u->count);
    sqlite3_finalize(u->list);
    sqlite3_close(u->db);
    free(u);
}

/* Usernames and emails are unique regardless of case (Alice and alice are one user). */
static const char schema[] = "CREATE TABLE IF NOT EXISTS users("
                             "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             "  username TEXT NOT NULL UNIQUE COLLATE NOCASE,"
                             "  email TEXT NOT NULL UNIQUE COLLATE NOCASE,"
                             "  created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')))";

static int users_init(const struct cel_host *host, void **state)
{
    struct users *u = calloc(1, sizeof *u);
    if (!u)
        return CEL_ENOMEM;
    if (svc_db_open("users.db", &u->db) != 0 ||
        sqlite3_exec(u->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        svc_db_prepare(
            u->db,
            "INSERT INTO users(username, email) VALUES(?1, ?2) RETURNING id, username, email",
            &u->insert) != SQLITE_OK ||
        svc_db_prepare(u->db, "SELECT 1 FROM users WHERE username = ?1", &u->taken) ||
        svc_db_prepare(u->db, "SELECT id, username, email FROM users WHERE id = ?1", &u->get) ||
        svc_db_prepare(u->db, "SELECT count(*) FROM users", &u->count) ||
        svc_db_prepare(u->db, "SELECT id, username, email FROM users ORDER BY id", &u->list)) {
        users_fini(u);
        return CEL_EIO;
    }
    *state = u;
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "users.create", .handler = create},
    {.name = "users.get", .handler = get},
    {.name = "users.list", .handler = list},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_service),
    .name = "users",
    .tasks = tasks,
    .init = users_init,
    .fini = users_fini,
};

CEL_SERVICE_EXPORT(service)
