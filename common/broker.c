/* broker.c: the generic part of broker.h: the table of adapters by URL scheme, opening through
 * it, URL redaction for logs, and reconnection backoff. */
#include "celeriac/broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker-adapters/amqp/amqp_internal.h"
#include "common/amqp_url.h"

static const struct {
    const char *scheme;
    const struct cel_broker_class *cls;
} broker_classes[] = {
    {"amqp", &cel__amqp_broker_class},
    {"amqps", &cel__amqp_broker_class},
};

const struct cel_broker_class *cel_broker_class_for(const char *url)
{
    if (!url)
        return NULL;
    url += strspn(url, " \t\r\n,");
    const char *sep = strstr(url, "://");
    if (!sep)
        return NULL;
    size_t n = (size_t)(sep - url);
    for (size_t i = 0; i < sizeof broker_classes / sizeof broker_classes[0]; i++)
        if (strlen(broker_classes[i].scheme) == n &&
            strncasecmp(url, broker_classes[i].scheme, n) == 0)
            return broker_classes[i].cls;
    return NULL;
}

int cel_broker_open(struct cel_broker **b, const struct cel_broker_opts *o, char *err,
                    size_t errlen)
{
    *b = NULL;
    char *url = NULL;
    int rc = cel_broker_url_load(o->url, &url, err, errlen);
    if (rc != 0)
        return rc;
    const struct cel_broker_class *cls = cel_broker_class_for(url);
    if (!cls) {
        char red[512];
        cel_url_redact(url, red, sizeof red);
        snprintf(err, errlen, "no broker adapter for URL %s", red);
        free(url);
        return CEL_EURL;
    }
    struct cel_broker_opts copy = *o;
    copy.url = url;
    rc = cls->open(b, &copy, err, errlen);
    free(url);
    return rc;
}

/* Appends s[0..n) to out, always NUL-terminating within outlen. */
static void put(char *out, size_t outlen, size_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *o + 1 < outlen; i++)
        out[(*o)++] = s[i];
    out[*o] = 0;
}

/* Redacts one URL item s[0..n): the password between "user:" and the last '@'. */
static void redact_item(const char *s, size_t n, char *out, size_t outlen, size_t *o)
{
    const char *sep = memmem(s, n, "://", 3);
    if (!sep) {
        put(out, outlen, o, s, n);
        return;
    }
    const char *auth = sep + 3, *end = s + n;
    const char *slash = memchr(auth, '/', (size_t)(end - auth));
    const char *auth_end = slash ? slash : end, *at = NULL;
    for (const char *c = auth; c < auth_end; c++)
        if (*c == '@')
            at = c;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon) {
        put(out, outlen, o, s, n);
        return;
    }
    put(out, outlen, o, s, (size_t)(colon + 1 - s));
    put(out, outlen, o, "***", 3);
    put(out, outlen, o, at, (size_t)(end - at));
}

void cel_url_redact(const char *url, char *out, size_t outlen)
{
    if (!out || outlen == 0)
        return;
    size_t o = 0;
    out[0] = 0;
    const char *p = url ? url : "";
    for (;;) {
        size_t n = strcspn(p, ",\n");
        redact_item(p, n, out, outlen, &o);
        p += n;
        if (!*p)
            break;
        put(out, outlen, &o, p, 1);
        p++;
    }
}

void cel_url_scrub(char *s)
{
    for (char *p = s ? strstr(s, "://") : NULL; p; p = strstr(p, "://")) {
        char *auth = p + 3;
        size_t len = strcspn(auth, "/,\n");
        char *at = NULL;
        for (size_t i = 0; i < len; i++)
            if (auth[i] == '@')
                at = auth + i;
        char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        for (char *c = colon ? colon + 1 : at; colon && c < at; c++)
            *c = '*';
        p = auth + len;
    }
}

int cel_backoff_ms(unsigned attempt, int base_ms, int cap_ms)
{
    if (base_ms <= 0 || cap_ms <= 0)
        return 0;
    long long lim = base_ms;
    for (unsigned i = 0; i < attempt && lim < cap_ms; i++)
        lim *= 2;
    if (lim > cap_ms)
        lim = cap_ms;
    return (int)arc4random_uniform((uint32_t)lim);
}
