/* amqp_url.h: the pure parser for broker URLs (amqp://user:pass@host:port/vhost, amqps://,
 * comma-separated failover lists) and where the URL comes from (options, file, environment). */
#ifndef CEL_COMMON_AMQP_URL_H
#define CEL_COMMON_AMQP_URL_H

#include <stdbool.h>
#include <stddef.h>

#define CEL_AMQP_URL_MAX 16    /* URLs in one failover list */
#define CEL_AMQP_URL_FIELD 256 /* bytes of host, user, password, vhost (with the NUL) */

struct cel_amqp_url {
    bool tls;                       /* amqps */
    int port;                       /* 5672, or 5671 with TLS, unless given */
    char host[CEL_AMQP_URL_FIELD];  /* "localhost" when empty; IPv6 without brackets */
    char user[CEL_AMQP_URL_FIELD];  /* percent-decoded; "guest" when absent */
    char pass[CEL_AMQP_URL_FIELD];  /* percent-decoded; "guest" when absent */
    char vhost[CEL_AMQP_URL_FIELD]; /* percent-decoded; "/" when the path is empty or "/" */
};

/* Parses one URL of len bytes. On error returns CEL_EURL and writes a reason that never
 * contains the password. */
int cel_amqp_url_parse(const char *s, size_t len, struct cel_amqp_url *u, char *err, size_t errlen);

/* Parses a comma-separated list (spaces and newlines around items are ignored) into out[0..max),
 * setting *n. An empty list or more than max URLs is CEL_EURL. */
int cel_amqp_url_parse_list(const char *list, struct cel_amqp_url *out, size_t max, size_t *n,
                            char *err, size_t errlen);

/* The URL list to use: url when non-NULL, else the contents of the file named by
 * CELERIAC_BROKER_URL_FILE, else $CELERIAC_BROKER_URL. Returns a malloc'd string the caller
 * frees in *out; CEL_ECONFIG when there is none, CEL_ESYS when the file cannot be read. */
int cel_broker_url_load(const char *url, char **out, char *err, size_t errlen);

/* Applies CELERIAC_BROKER_PASSWORD, when set, to every URL of the list. */
void cel_amqp_url_env_password(struct cel_amqp_url *urls, size_t n);

#endif
