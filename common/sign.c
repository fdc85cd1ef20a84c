/* sign.c: HMAC-SHA256 task signatures (see sign.h for the canonical byte layout) and key files.
 * The canonical bytes are streamed into the MAC, so a large body is never copied. */
#include "common/sign.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define SIGN_MAGIC "celeriac-sign-v1"

/* Where canonical bytes go: a buffer (cel_sign_canonical) or a MAC context (cel_sign_task). */
struct sink {
    int (*put)(void *ctx, const void *p, size_t n);
    void *ctx;
};

static int put_buf(void *ctx, const void *p, size_t n)
{
    return cel_buf_append(ctx, p, n);
}

static int put_mac(void *ctx, const void *p, size_t n)
{
    return EVP_MAC_update(ctx, p, n) == 1 ? 0 : CEL_ENOMEM;
}

static int put_u64(const struct sink *s, uint64_t v)
{
    unsigned char b[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)(v & 0xff);
    return s->put(s->ctx, b, sizeof b);
}

static int put_bytes(const struct sink *s, const void *p, size_t n)
{
    int rc = put_u64(s, (uint64_t)n);
    return rc ? rc : n ? s->put(s->ctx, p, n) : 0;
}

static int put_str(const struct sink *s, const char *str)
{
    unsigned char present = str != NULL;
    int rc = s->put(s->ctx, &present, 1);
    return rc || !str ? rc : put_bytes(s, str, strlen(str));
}

static int emit(const struct cel_task *t, struct cel_span body, const struct sink *s)
{
    const char *head[] = {t->task, t->id};
    const int64_t nums[] = {t->eta, t->expires, t->retries};
    /* the encoder sends root_id = id when it is unset, so both sides sign it that way */
    const char *root = t->root_id ? t->root_id : t->id;
    const char *tail[] = {root, t->parent_id, t->group, t->idempotency_key};
    unsigned char fmt = (unsigned char)t->format;
    int rc = s->put(s->ctx, SIGN_MAGIC, strlen(SIGN_MAGIC));
    for (size_t i = 0; !rc && i < sizeof head / sizeof head[0]; i++)
        rc = put_str(s, head[i]);
    for (size_t i = 0; !rc && i < sizeof nums / sizeof nums[0]; i++)
        rc = put_u64(s, (uint64_t)nums[i]);
    for (size_t i = 0; !rc && i < sizeof tail / sizeof tail[0]; i++)
        rc = put_str(s, tail[i]);
    if (!rc)
        rc = s->put(s->ctx, &fmt, 1);
    return rc ? rc : put_bytes(s, body.ptr, body.len);
}

int cel_sign_canonical(const struct cel_task *t, struct cel_span body, struct cel_buf *out)
{
    if (!t || !t->task || !t->id || (!body.ptr && body.len))
        return CEL_EINVAL;
    struct sink s = {put_buf, out};
    return emit(t, body, &s);
}

static EVP_MAC_CTX *mac_start(const unsigned char *key, size_t keylen)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac); /* the context holds its own reference */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (ctx && EVP_MAC_init(ctx, key, keylen, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

static void to_hex(const unsigned char *mac, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[mac[i] >> 4];
        out[2 * i + 1] = digits[mac[i] & 0xf];
    }
    out[2 * n] = '\0';
}

int cel_sign_task(const struct cel_task *t, struct cel_span body, const unsigned char *key,
                  size_t keylen, char out_hex[CEL_SIGN_HEX_LEN + 1])
{
    if (!t || !t->task || !t->id || !key || keylen == 0 || (!body.ptr && body.len))
        return CEL_EINVAL;
    EVP_MAC_CTX *ctx = mac_start(key, keylen);
    if (!ctx)
        return CEL_ENOMEM;
    unsigned char mac[32];
    size_t maclen = 0;
    struct sink s = {put_mac, ctx};
    int rc = emit(t, body, &s);
    if (!rc && (EVP_MAC_final(ctx, mac, &maclen, sizeof mac) != 1 || maclen != sizeof mac))
        rc = CEL_ENOMEM;
    EVP_MAC_CTX_free(ctx);
    if (!rc)
        to_hex(mac, sizeof mac, out_hex);
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

static int sig_fail(char *err, size_t errlen, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", why);
    return CEL_ESIGNATURE;
}

int cel_sign_verify(const struct cel_task *t, struct cel_span body, const unsigned char *key,
                    size_t keylen, char *err, size_t errlen)
{
    char want[CEL_SIGN_HEX_LEN + 1];
    if (!t || !t->signature)
        return sig_fail(err, errlen, "message is not signed (no " CEL_SIGN_HEADER " header)");
    if (strlen(t->signature) != CEL_SIGN_HEX_LEN)
        return sig_fail(err, errlen, CEL_SIGN_HEADER " is not 64 hex digits");
    if (cel_sign_task(t, body, key, keylen, want) != 0)
        return sig_fail(err, errlen, "cannot compute the signature (task or id missing)");
    int bad = CRYPTO_memcmp(want, t->signature, CEL_SIGN_HEX_LEN);
    OPENSSL_cleanse(want, sizeof want);
    return bad ? sig_fail(err, errlen, "signature does not match (forged or altered message)") : 0;
}

int cel_sign_headers(const struct cel_task *t, struct cel_span body, const unsigned char *key,
                     size_t keylen, struct cel_arena *a, struct cel_table *headers)
{
    char hex[CEL_SIGN_HEX_LEN + 1];
    int rc = cel_sign_task(t, body, key, keylen, hex);
    if (rc)
        return rc;
    char *sig = cel_arena_strdup(a, hex);
    struct cel_field *items = cel_arena_alloc(a, (headers->n + 1) * sizeof *items);
    if (!sig || !items)
        return CEL_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < headers->n; i++) {
        const struct cel_span *k = &headers->items[i].key;
        if (k->len != strlen(CEL_SIGN_HEADER) || memcmp(k->ptr, CEL_SIGN_HEADER, k->len) != 0)
            items[n++] = headers->items[i];
    }
    items[n].key = (struct cel_span){CEL_SIGN_HEADER, strlen(CEL_SIGN_HEADER)};
    items[n++].v = cel_value_str(sig, CEL_SIGN_HEX_LEN);
    headers->items = items;
    headers->n = n;
    return 0;
}

/* ---- key files ---- */

static int key_fail(int rc, char *err, size_t errlen, const char *path, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "signing key file %s: %s", path, why);
    return rc;
}

static int key_check_mode(int fd, const char *path, char *err, size_t errlen)
{
    struct stat st;
    char why[128];
    if (fstat(fd, &st) != 0)
        return key_fail(CEL_ESYS, err, errlen, path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return key_fail(CEL_ECONFIG, err, errlen, path, "not a regular file");
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(why, sizeof why, "mode %04o lets group or others access it; chmod 600 it",
                 (unsigned)(st.st_mode & 07777));
        return key_fail(CEL_ECONFIG, err, errlen, path, why);
    }
    return 0;
}

/* Reads at most cap bytes; *n = bytes read. Returns 1 if the file had more than cap bytes. */
static int read_upto(int fd, unsigned char *dst, size_t cap, size_t *n)
{
    *n = 0;
    while (*n < cap) {
        ssize_t r = read(fd, dst + *n, cap - *n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        *n += (size_t)r;
    }
    unsigned char extra;
    ssize_t r;
    while ((r = read(fd, &extra, 1)) < 0 && errno == EINTR)
        ;
    return r < 0 ? -1 : r > 0;
}

static size_t strip_newline(const unsigned char *p, size_t n)
{
    if (n && p[n - 1] == '\n')
        n--;
    if (n && p[n - 1] == '\r')
        n--;
    return n;
}

int cel_sign_load_key(const char *path, unsigned char *key, size_t *len, char *err, size_t errlen)
{
    unsigned char raw[CEL_SIGN_KEY_MAX + 2];
    size_t n = 0;
    if (!path || !key || !len)
        return CEL_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return key_fail(CEL_ESYS, err, errlen, path, strerror(errno));
    int rc = key_check_mode(fd, path, err, errlen);
    int more = rc ? 0 : read_upto(fd, raw, sizeof raw, &n);
    close(fd);
    if (!rc && more < 0)
        rc = key_fail(CEL_ESYS, err, errlen, path, strerror(errno));
    n = strip_newline(raw, n);
    if (!rc && (more > 0 || n > *len || n > CEL_SIGN_KEY_MAX))
        rc = key_fail(CEL_ECONFIG, err, errlen, path, "key too long");
    if (!rc && n < CEL_SIGN_KEY_MIN)
        rc = key_fail(CEL_ECONFIG, err, errlen, path, "key shorter than 16 bytes");
    if (!rc) {
        memcpy(key, raw, n);
        *len = n;
    }
    OPENSSL_cleanse(raw, sizeof raw);
    return rc;
}
