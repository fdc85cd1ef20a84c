/* amqp_url.c: broker URL parsing (pure) and the lookup of the URL in options, file or env. */
#include "common/amqp_url.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "celeriac/celeriac.h"

static int url_err(char *err, size_t errlen, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "broker URL: %s", what);
    return CEL_EURL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) into out (a CEL_AMQP_URL_FIELD buffer); rejects %00 and bad escapes. */
static int pct_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi | lo) == 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= CEL_AMQP_URL_FIELD)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = 0;
    return 0;
}

static int parse_port(const char *s, size_t n, int *port)
{
    if (n == 0 || n > 5)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = v;
    return 0;
}

static int copy_field(const char *s, size_t n, char *out)
{
    if (n >= CEL_AMQP_URL_FIELD)
        return -1;
    memcpy(out, s, n);
    out[n] = 0;
    return 0;
}

static int parse_userinfo(const char *s, size_t n, struct cel_amqp_url *u, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    size_t ulen = colon ? (size_t)(colon - s) : n;
    if (pct_decode(s, ulen, u->user) != 0)
        return url_err(err, errlen, "bad user name (percent escape or length)");
    if (colon && pct_decode(colon + 1, n - ulen - 1, u->pass) != 0)
        return url_err(err, errlen, "bad password (percent escape or length)");
    return 0;
}

static int parse_hostport(const char *s, size_t n, struct cel_amqp_url *u, char *err, size_t errlen)
{
    const char *port = NULL;
    size_t hlen = n;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return url_err(err, errlen, "unterminated IPv6 address");
        hlen = (size_t)(close - s) + 1;
        if (hlen < n && s[hlen] != ':')
            return url_err(err, errlen, "junk after IPv6 address");
        port = hlen < n ? s + hlen + 1 : NULL;
        if (copy_field(s + 1, hlen - 2, u->host) != 0)
            return url_err(err, errlen, "host too long");
    } else {
        const char *colon = memchr(s, ':', n);
        hlen = colon ? (size_t)(colon - s) : n;
        port = colon ? colon + 1 : NULL;
        if (hlen > 0 && copy_field(s, hlen, u->host) != 0)
            return url_err(err, errlen, "host too long");
    }
    if (port && parse_port(port, (size_t)(s + n - port), &u->port) != 0)
        return url_err(err, errlen, "bad port");
    return 0;
}

static int parse_vhost(const char *s, size_t n, struct cel_amqp_url *u, char *err, size_t errlen)
{
    const char *q = memchr(s, '?', n); /* query options are not used */
    if (q)
        n = (size_t)(q - s);
    if (n > 0 && s[0] == '/') {
        s++;
        n--;
    }
    if (n == 0)
        return 0; /* default "/" */
    if (pct_decode(s, n, u->vhost) != 0)
        return url_err(err, errlen, "bad vhost (percent escape or length)");
    return 0;
}

static void url_defaults(struct cel_amqp_url *u, bool tls)
{
    memset(u, 0, sizeof *u);
    u->tls = tls;
    u->port = tls ? 5671 : 5672;
    strcpy(u->host, "localhost");
    strcpy(u->user, "guest");
    strcpy(u->pass, "guest");
    strcpy(u->vhost, "/");
}

int cel_amqp_url_parse(const char *s, size_t len, struct cel_amqp_url *u, char *err, size_t errlen)
{
    bool tls;
    if (len >= 7 && strncasecmp(s, "amqp://", 7) == 0)
        tls = false;
    else if (len >= 8 && strncasecmp(s, "amqps://", 8) == 0)
        tls = true;
    else
        return url_err(err, errlen, "scheme must be amqp:// or amqps://");
    url_defaults(u, tls);
    const char *p = s + (tls ? 8 : 7), *end = s + len;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash ? slash : end;
    const char *at = NULL;
    for (const char *c = p; c < auth_end; c++)
        if (*c == '@')
            at = c;
    int rc;
    if (at && (rc = parse_userinfo(p, (size_t)(at - p), u, err, errlen)) != 0)
        return rc;
    const char *hp = at ? at + 1 : p;
    if ((rc = parse_hostport(hp, (size_t)(auth_end - hp), u, err, errlen)) != 0)
        return rc;
    return slash ? parse_vhost(slash, (size_t)(end - slash), u, err, errlen) : 0;
}

static int is_sep_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int cel_amqp_url_parse_list(const char *list, struct cel_amqp_url *out, size_t max, size_t *n,
                            char *err, size_t errlen)
{
    *n = 0;
    const char *p = list ? list : "";
    while (*p) {
        size_t len = strcspn(p, ",\n");
        const char *b = p, *e = p + len;
        while (b < e && is_sep_space(*b))
            b++;
        while (e > b && is_sep_space(e[-1]))
            e--;
        if (e > b) {
            if (*n == max)
                return url_err(err, errlen, "too many URLs in the list");
            int rc = cel_amqp_url_parse(b, (size_t)(e - b), &out[*n], err, errlen);
            if (rc != 0)
                return rc;
            ++*n;
        }
        p += len;
        if (*p)
            p++;
    }
    return *n ? 0 : url_err(err, errlen, "empty");
}

static int read_file(const char *path, char **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "CELERIAC_BROKER_URL_FILE %s: %s", path, strerror(errno));
        return CEL_ESYS;
    }
    char *buf = malloc(65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (!buf)
        return CEL_ENOMEM;
    buf[n] = 0;
    *out = buf;
    return 0;
}

int cel_broker_url_load(const char *url, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!url) {
        const char *file = getenv("CELERIAC_BROKER_URL_FILE");
        if (file && *file)
            return read_file(file, out, err, errlen);
        url = getenv("CELERIAC_BROKER_URL");
    }
    if (!url || !*url) {
        snprintf(err, errlen, "no broker URL (CELERIAC_BROKER_URL, CELERIAC_BROKER_URL_FILE)");
        return CEL_ECONFIG;
    }
    *out = strdup(url);
    return *out ? 0 : CEL_ENOMEM;
}

void cel_amqp_url_env_password(struct cel_amqp_url *urls, size_t n)
{
    const char *pw = getenv("CELERIAC_BROKER_PASSWORD");
    if (!pw || strlen(pw) >= CEL_AMQP_URL_FIELD)
        return;
    for (size_t i = 0; i < n; i++)
        strcpy(urls[i].pass, pw);
}
