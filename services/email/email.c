/* email.c: the email service. send_welcome(user) "sends" a welcome mail by appending it to the
 * outbox table in email.db (and, when CELERIAC_EMAIL_OUTBOX_FILE is set, one JSON line to that
 * file). It does no deduplication itself: the worker's idempotency keys do, and each row keeps
 * the job id so a duplicate is visible. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "celeriac/service.h"
#include "services/lib/svcdb.h"

struct email {
    sqlite3 *db;
    sqlite3_stmt *insert, *count, *list;
    char *outbox_file; /* NULL when CELERIAC_EMAIL_OUTBOX_FILE is unset */
};

struct str {
    const char *ptr;
    size_t len;
};

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void pack_column(msgpack_packer *pk, sqlite3_stmt *stmt, int col)
{
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_str_with_body(pk, sqlite3_column_text(stmt, col),
                                   (size_t)sqlite3_column_bytes(stmt, col));
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* The user's field key as a non-empty string, or a ValueError. */
static int user_field(const struct cel_host *host, struct cel_job *job, const msgpack_object *user,
                      const char *key, struct str *out)
{
    const msgpack_object *o = map_get(user, key);
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0)
        return host->fail(job, "ValueError",
                          "email.send_welcome(): user has no '%s' (a non-empty str)", key);
    *out = (struct str){o->via.str.ptr, o->via.str.size};
    return 0;
}

static void welcome_text(char *body, size_t size, const msgpack_object *user, struct str name)
{
    const msgpack_object *id = map_get(user, "id");
    int n = snprintf(body, size, "Hello %.*s,\n\nwelcome to celeriac!", (int)name.len, name.ptr);
    if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER && n > 0 && (size_t)n < size)
        n += snprintf(body + n, size - (size_t)n, " Your user id is %llu.",
                      (unsigned long long)id->via.u64);
    if (n > 0 && (size_t)n < size)
        snprintf(body + n, size - (size_t)n, "\n");
}

/* Appends one line with a single write on an O_APPEND descriptor, so lines from concurrent
 * processes never interleave. */
static int append_line(const char *path, const unsigned char *json, int len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    char *line = malloc((size_t)len + 1);
    ssize_t w = -1;
    if (line) {
        memcpy(line, json, (size_t)len);
        line[len] = '\n';
        w = write(fd, line, (size_t)len + 1);
    }
    free(line);
    close(fd);
    return w == len + 1 ? 0 : -1;
}

/* Packs {to, subject, outbox_id} from the insert's RETURNING row and mirrors it to the file. */
static void sent(const struct cel_host *host, struct cel_job *job, struct email *e)
{
    sqlite3_stmt *s = e->insert;
    msgpack_packer *pk = host->result(job);
    msgpack_pack_map(pk, 3);
    pack_str(pk, "to");
    pack_column(pk, s, 1);
    pack_str(pk, "subject");
    pack_column(pk, s, 2);
    pack_str(pk, "outbox_id");
    msgpack_pack_int64(pk, sqlite3_column_int64(s, 0));
    if (e->outbox_file &&
        append_line(e->outbox_file, sqlite3_column_text(s, 3), sqlite3_column_bytes(s, 3)) != 0)
        host->log(job, CEL_LOG_WARNING, "email: cannot append to %s: %s", e->outbox_file,
                  strerror(errno));
}

/* email.send_welcome(user) -> {to, subject, outbox_id}; user is what users.create returns. */
static int send_welcome(const struct cel_host *host, struct cel_job *job, void *state)
{
    struct email *e = state;
    const msgpack_object *user = host->arg(job, 0, "user");
    struct str name, to;
    char subject[128], body[512];
    if (!user)
        return host->fail(job, "TypeError",
                          "email.send_welcome() missing required argument: 'user'");
    if (user->type != MSGPACK_OBJECT_MAP)
        return host->fail(job, "TypeError",
                          "email.send_welcome() argument 'user' must be dict (as returned by "
                          "users.create)");
    int rc = user_field(host, job, user, "username", &name);
    if (rc == 0)
        rc = user_field(host, job, user, "email", &to);
    if (rc != 0)
        return rc;
    snprintf(subject, sizeof subject, "Welcome, %.*s!", (int)name.len, name.ptr);
    welcome_text(body, sizeof body, user, name);
    const struct cel_job_info *info = host->info(job);
    sqlite3_bind_text(e->insert, 1, info->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(e->insert, 2, to.ptr, (int)to.len, SQLITE_STATIC);
    sqlite3_bind_text(e->insert, 3, subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(e->insert, 4, body, -1, SQLITE_STATIC);
    rc = sqlite3_step(e->insert);
    if (rc == SQLITE_ROW)
        sent(host, job, e);
    else
        rc = svc_db_error(host, job, e->db, "email.db", rc);
    sqlite3_reset(e->insert);
    sqlite3_clear_bindings(e->insert);
    return rc == SQLITE_ROW ? 0 : rc;
}

static void pack_row(msgpack_packer *pk, sqlite3_stmt *s)
{
    static const char *const keys[] = {"outbox_id", "job_id", "to", "subject", "body", "created"};
    msgpack_pack_map(pk, 6);
    pack_str(pk, keys[0]);
    msgpack_pack_int64(pk, sqlite3_column_int64(s, 0));
    for (int i = 1; i < 6; i++) {
        pack_str(pk, keys[i]);
        pack_column(pk, s, i);
    }
}

/* email.outbox() -> every mail, oldest first: [{outbox_id, job_id, to, subject, body,
 * created}, ...]. Count and rows come from one read transaction. */
static int outbox(const struct cel_host *host, struct cel_job *job, void *state)
{
    struct email *e = state;
    int rc = sqlite3_exec(e->db, "BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return svc_db_error(host, job, e->db, "email.db", rc);
    rc = sqlite3_step(e->count);
    if (rc == SQLITE_ROW) {
        msgpack_packer *pk = host->result(job);
        msgpack_pack_array(pk, (size_t)sqlite3_column_int64(e->count, 0));
        while ((rc = sqlite3_step(e->list)) == SQLITE_ROW)
            pack_row(pk, e->list);
    }
    sqlite3_reset(e->count);
    sqlite3_reset(e->list);
    sqlite3_exec(e->db, "COMMIT", NULL, NULL, NULL);
    return rc == SQLITE_DONE ? 0 : svc_db_error(host, job, e->db, "email.db", rc);
}

/* ---- database ---- */

static void email_fini(void *state)
{
    struct email *e = state;
    if (!e)
        return;
    sqlite3_finalize(e->insert);
    sqlite3_finalize(e->count);
    sqlite3_finalize(e->list);
    sqlite3_close(e->db);
    free(e->outbox_file);
    free(e);
}

static const char schema[] = "CREATE TABLE IF NOT EXISTS outbox("
                             "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             "  job_id TEXT,"
                             "  to_addr TEXT NOT NULL,"
                             "  subject TEXT NOT NULL,"
                             "  body TEXT NOT NULL,"
                             "  created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')));"
                             "CREATE INDEX IF NOT EXISTS outbox_job ON outbox(job_id)";

/* The JSON line for the outbox file is built by SQLite, which escapes it correctly. */
static const char insert_sql[] =
    "INSERT INTO outbox(job_id, to_addr, subject, body) VALUES(?1, ?2, ?3, ?4) "
    "RETURNING id, to_addr, subject, json_object('outbox_id', id, 'job_id', job_id, 'to', "
    "to_addr, 'subject', subject, 'body', body, 'created', created)";

static int email_init(const struct cel_host *host, void **state)
{
    struct email *e = calloc(1, sizeof *e);
    const char *file = getenv("CELERIAC_EMAIL_OUTBOX_FILE");
    if (!e)
        return CEL_ENOMEM;
    if ((file && *file && !(e->outbox_file = strdup(file))) ||
        svc_db_open("email.db", &e->db) != 0 ||
        sqlite3_exec(e->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        svc_db_prepare(e->db, insert_sql, &e->insert) != SQLITE_OK ||
        svc_db_prepare(e->db, "SELECT count(*) FROM outbox", &e->count) != SQLITE_OK ||
        svc_db_prepare(e->db,
                       "SELECT id, job_id, to_addr, subject, body, created FROM outbox ORDER BY id",
                       &e->list) != SQLITE_OK) {
        email_fini(e);
        return CEL_EIO;
    }
    *state = e;
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "email.send_welcome", .handler = send_welcome, .max_retries = 5, .retry_backoff = 2},
    {.name = "email.outbox", .handler = outbox},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_service),
    .name = "email",
    .tasks = tasks,
    .init = email_init,
    .fini = email_fini,
};

CEL_SERVICE_EXPORT(service)
