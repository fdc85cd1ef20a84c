/* redis_url.c: the Redis URL parser (see redis_url.h). */
#include "common/redis_url.h"

#include <stdio.h>
#include <string.h>

#include "celeriac/celeriac.h"

struct scheme {
    const char *prefix;
    bool is_unix;
    int status; /* 0 = supported, else the error to return */
};

static const struct scheme schemes[] = {
    {"redis://", false, 0},
    {"unix://", true, 0},
    {"redis+socket://", true, 0},
    {"socket://", true, 0},
    {"rediss://", false, CEL_EUNSUPPORTED},
};

static int fail(char *err, size_t errlen, int status, const char *msg)
{
    if (errlen)
        snprintf(err, errlen, "redis URL: %s", msg);
    return status;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [p, end) into out (NUL-terminated). -1 if malformed, NUL inside or too long. */
static int pct_decode(const char *p, const char *end, char *out, size_t outlen)
{
    size_t o = 0;
    while (p < end) {
        int c = (unsigned char)*p++;
        if (c == '%') {
            if (end - p < 2 || hexval(p[0]) < 0 || hexval(p[1]) < 0)
                return -1;
            c = hexval(p[0]) * 16 + hexval(p[1]);
            p += 2;
        }
        if (c == 0 || o + 1 >= outlen)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = 0;
    return 0;
}

/* A decimal integer in [0, max] spanning exactly [p, end). */
static int parse_uint(const char *p, const char *end, int max, int *v)
{
    if (p == end || end - p > 9)
        return -1;
    int x = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        x = x * 10 + (*p - '0');
    }
    if (x > max)
        return -1;
    *v = x;
    return 0;
}

static const struct scheme *find_scheme(const char *url)
{
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(url, schemes[i].prefix, strlen(schemes[i].prefix)) == 0)
            return &schemes[i];
    return NULL;
}

static int parse_userinfo(const char *p, const char *end, struct cel_redis_url *u, char *err,
                          size_t errlen)
{
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (!colon)
        return fail(err, errlen, CEL_EURL,
                    "user without password (write redis://:password@host or user:password@)");
    if (pct_decode(p, colon, u->user, sizeof u->user) < 0 ||
        pct_decode(colon + 1, end, u->password, sizeof u->password) < 0)
        return fail(err, errlen, CEL_EURL, "malformed or too long user or password");
    return 0;
}

/* host, [v6], host:port or [v6]:port in [p, end); an empty host is localhost. */
static int parse_hostport(const char *p, const char *end, struct cel_redis_url *u, char *err,
                          size_t errlen)
{
    const char *hend = end, *port = NULL;
    if (p < end && *p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close || (close + 1 < end && close[1] != ':'))
            return fail(err, errlen, CEL_EURL, "malformed IPv6 host");
        port = close + 1 < end ? close + 2 : NULL;
        p++;
        hend = close;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        if (colon) {
            hend = colon;
            port = colon + 1;
        }
    }
    if (port && (parse_uint(port, end, 65535, &u->port) < 0 || u->port == 0))
        return fail(err, errlen, CEL_EURL, "invalid port");
    size_t hlen = (size_t)(hend - p);
    if (hlen >= sizeof u->host)
        return fail(err, errlen, CEL_EURL, "host too long");
    if (hlen == 0 && port)
        return fail(err, errlen, CEL_EURL, "empty host");
    memcpy(u->host, hlen ? p : "localhost", hlen ? hlen : 9);
    u->host[hlen ? hlen : 9] = 0;
    return 0;
}

/* The query string [p, end): db=N is used, other redis-py options are ignored. */
static int parse_query(const char *p, const char *end, struct cel_redis_url *u, char *err,
                       size_t errlen)
{
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pend = amp ? amp : end;
        if (pend - p >= 3 && memcmp(p, "db=", 3) == 0 &&
            parse_uint(p + 3, pend, 1 << 20, &u->db) < 0)
            return fail(err, errlen, CEL_EURL, "invalid db in query");
        p = amp ? amp + 1 : end;
    }
    return 0;
}

/* Splits off userinfo (up to the last '@' of the authority) and parses it. */
static int parse_auth(const char **p, const char *aend, struct cel_redis_url *u, char *err,
                      size_t errlen)
{
    const char *at = NULL;
    for (const char *q = *p; q < aend; q++)
        if (*q == '@')
            at = q;
    if (!at)
        return 0;
    int rc = parse_userinfo(*p, at, u, err, errlen);
    *p = at + 1;
    return rc;
}

static int parse_tcp(const char *p, struct cel_redis_url *u, char *err, size_t errlen)
{
    const char *aend = p + strcspn(p, "/?#");
    int rc = parse_auth(&p, aend, u, err, errlen);
    if (rc == 0)
        rc = parse_hostport(p, aend, u, err, errlen);
    if (rc < 0)
        return rc;
    const char *q = aend + strcspn(aend, "?#");
    if (*aend == '/' && q > aend + 1 && parse_uint(aend + 1, q, 1 << 20, &u->db) < 0)
        return fail(err, errlen, CEL_EURL, "invalid db in path (expected /N)");
    return *q == '?' ? parse_query(q + 1, q + strcspn(q, "#"), u, err, errlen) : 0;
}

static int parse_unix(const char *p, struct cel_redis_url *u, char *err, size_t errlen)
{
    const char *aend = p + strcspn(p, "/?#");
    int rc = parse_auth(&p, aend, u, err, errlen);
    if (rc < 0)
        return rc;
    if (p != aend)
        return fail(err, errlen, CEL_EURL, "unix socket URL with a host (write unix:///path)");
    const char *q = aend + strcspn(aend, "?#");
    if (q == aend)
        return fail(err, errlen, CEL_EURL, "unix socket URL without a path");
    if (pct_decode(aend, q, u->path, sizeof u->path) < 0)
        return fail(err, errlen, CEL_EURL, "malformed or too long socket path");
    return *q == '?' ? parse_query(q + 1, q + strcspn(q, "#"), u, err, errlen) : 0;
}

int cel_redis_url_parse(const char *url, struct cel_redis_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->port = CEL_REDIS_DEFAULT_PORT;
    if (!url || !*url)
        return fail(err, errlen, CEL_EURL, "empty");
    const struct scheme *sc = find_scheme(url);
    if (!sc)
        return fail(err, errlen, CEL_EURL, "unknown scheme (expected redis:// or unix://)");
    if (sc->status)
        return fail(err, errlen, sc->status,
                    "rediss:// (TLS) is not supported: hiredis 0.14 has no TLS; use redis:// "
                    "or a unix socket, or a local TLS tunnel");
    u->is_unix = sc->is_unix;
    const char *p = url + strlen(sc->prefix);
    return sc->is_unix ? parse_unix(p, u, err, errlen) : parse_tcp(p, u, err, errlen);
}

void cel_redis_url_describe(const struct cel_redis_url *u, char *out, size_t outlen)
{
    if (u->is_unix)
        snprintf(out, outlen, "%s", u->path);
    else if (strchr(u->host, ':'))
        snprintf(out, outlen, "[%s]:%d", u->host, u->port);
    else
        snprintf(out, outlen, "%s:%d", u->host, u->port);
}
