/* redis_url.h: parses Redis URLs as Celery and redis-py accept them. Pure: no I/O, no environment.
 *   redis://[[user]:password@]host[:port][/db][?db=N]   (port 6379, db 0 by default)
 *   unix://[[user]:password@]/path/to/sock[?db=N]
 * User and password are percent-decoded. rediss:// is refused: hiredis 0.14 has no TLS. */
#ifndef CEL_COMMON_REDIS_URL_H
#define CEL_COMMON_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

#define CEL_REDIS_DEFAULT_PORT 6379

struct cel_redis_url {
    bool is_unix;   /* true: path is a socket path; host/port unused */
    char host[256]; /* without the brackets of an IPv6 literal */
    int port;
    char path[256]; /* unix socket path */
    int db;
    char user[128];     /* "" = none (AUTH password) */
    char password[256]; /* "" = none (no AUTH) */
};

/* Fills u from url. On error returns CEL_EURL (or CEL_EUNSUPPORTED for rediss://) with a message
 * in err that never contains the password. */
int cel_redis_url_parse(const char *url, struct cel_redis_url *u, char *err, size_t errlen);

/* "host:port" or the socket path, for messages (never the password). */
void cel_redis_url_describe(const struct cel_redis_url *u, char *out, size_t outlen);

#endif
