/* svcdb.h: the SQLite set-up every example service shares, linked statically into each service
 * .so (services link nothing of the worker): the data directory, a WAL database that several
 * processes share, and the busy-means-retry rule. */
#ifndef CEL_SERVICES_SVCDB_H
#define CEL_SERVICES_SVCDB_H

#include <sqlite3.h>

#include "celeriac/service.h"

/* hidden: each service .so still exports only celeriac_service */
#define SVC_INTERNAL __attribute__((visibility("hidden")))

/* Opens $CELERIAC_DATA_DIR/file (default .run/data, created with its parents), in WAL mode with
 * a 5 s busy timeout, so prefork children and several workers share it. 0 or -1 (*out NULL). */
SVC_INTERNAL int svc_db_open(const char *file, sqlite3 **out);

/* A persistent prepared statement. */
SVC_INTERNAL int svc_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **stmt);

/* The handler's answer to a failed SQLite call rc on db (named name in messages): still busy
 * after the timeout -> retry through the task's backoff; anything else -> RuntimeError. */
SVC_INTERNAL int svc_db_error(const struct cel_host *host, struct cel_job *job, sqlite3 *db,
                              const char *name, int rc);

#endif
