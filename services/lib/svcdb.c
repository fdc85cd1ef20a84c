/* svcdb.c: the SQLite set-up shared by the example services (see svcdb.h). */
#include "services/lib/svcdb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Switching to WAL needs an exclusive lock and does not wait in the busy handler, so a process
 * racing another one's switch on a new file retries for up to 5 s. */
static int set_wal(sqlite3 *db)
{
    int rc = SQLITE_BUSY;
    for (int i = 0; i < 500 && rc == SQLITE_BUSY; i++)
        if ((rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL)) == SQLITE_BUSY)
            sqlite3_sleep(10);
    return rc;
}

int svc_db_open(const char *file, sqlite3 **out)
{
    const char *dir = getenv("CELERIAC_DATA_DIR");
    char path[4096];
    *out = NULL;
    if (!dir || !*dir)
        dir = ".run/data";
    if (mkdir_p(dir) != 0 || snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path)
        return -1;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, out, flags, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(*out, 5000) != SQLITE_OK || set_wal(*out) != SQLITE_OK) {
        sqlite3_close(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int svc_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **stmt)
{
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
}

int svc_db_error(const struct cel_host *host, struct cel_job *job, sqlite3 *db, const char *name,
                 int rc)
{
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return host->retry(job, -1, "RuntimeError", "%s is busy", name);
    return host->fail(job, "RuntimeError", "%s: %s", name, sqlite3_errmsg(db));
}
