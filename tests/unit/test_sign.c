/* test_sign.c: task signatures against fixed vectors, tamper detection, and key file rules.
 *
 * The expected values were computed once, independently of this code, with Python's hmac
 * module over the layout written in common/sign.h:
 *
 *   import hmac, hashlib, struct
 *   def s(v): return b'\0' if v is None else b'\1' + struct.pack('>Q', len(v)) + v
 *   def canon(task, id, eta=0, expires=0, retries=0, root=None, parent=None, group=None,
 *             ikey=None, fmt=0, body=b''):
 *       return (b'celeriac-sign-v1' + s(task) + s(id) + struct.pack('>qqq', eta, expires, retries)
 *               + s(root if root is not None else id) + s(parent) + s(group) + s(ikey)
 *               + bytes([fmt])
 *               + struct.pack('>Q', len(body)) + body)
 *   hmac.new(key, canon(...), hashlib.sha256).hexdigest()
 *
 * and VEC1 was cross-checked with: echo <CANON1> | xxd -r -p | openssl dgst -sha256 -hmac <KEY>. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/sign.h"

static const unsigned char KEY[] = "0123456789abcdef0123456789abcdef";
#define KEYLEN (sizeof KEY - 1)
static const char BODY1[] = "\x93\x91\x01\x80\x80"; /* msgpack [[1], {}, {}] */
static const char CANON1[] =
    "63656c65726961632d7369676e2d763101000000000000000a62656e63682e6e6f6f7001000000000000002430"
    "303030303030302d303030302d303030302d303030302d30303030303030303030303100000000000000000000"
    "000000000000000000000000000001000000000000002430303030303030302d303030302d303030302d303030"
    "302d3030303030303030303030310000000000000000000000059391018080";
static const char VEC1[] = "2dbe09b0c29f71978a90a908b180681a43cda6e6f0b8d3d3d8793ed3f4d360fd";
static const char VEC2[] = "8e213298ad0a124f1deb7dd6f48121c4779a7330c75588650aee39e136905583";
static const char VEC3[] = "0b4823d87bd5fde50696394821ac26209baa20d8a1b07a38ab7508fc43ab9c86";

static struct cel_task task1(void)
{
    return (struct cel_task){.task = "bench.noop", .id = "00000000-0000-0000-0000-000000000001"};
}

static struct cel_task task2(void)
{
    return (struct cel_task){.task = "email.send_welcome",
                             .id = "7d4c2a9e-5b1f-4f0e-9a61-3c2d1e0f9b88",
                             .eta = 1795000000123456,
                             .expires = 1795000060000000,
                             .retries = 3,
                             .root_id = "root-1",
                             .parent_id = "parent-2",
                             .group = "group-3",
                             .idempotency_key = "welcome:42",
                             .format = CEL_FMT_JSON,
                             .lang = "py",           /* not signed */
                             .origin = "gen1@host"}; /* not signed */
}

static const struct cel_span BODY2 = CEL_SPAN_LIT("[[], {\"user\": {\"id\": 42}}, {}]");

static void canonical_bytes_match_layout(void **state)
{
    struct cel_task t = task1();
    struct cel_buf b = CEL_BUF_INIT, hex = CEL_BUF_INIT;
    assert_int_equal(cel_sign_canonical(&t, (struct cel_span){BODY1, 5}, &b), 0);
    for (size_t i = 0; i < b.len; i++)
        assert_int_equal(cel_buf_printf(&hex, "%02x", (unsigned char)b.data[i]), 0);
    assert_string_equal(hex.data, CANON1);
    cel_buf_free(&b);
    cel_buf_free(&hex);
}

static void fixed_vectors(void **state)
{
    char out[CEL_SIGN_HEX_LEN + 1];
    struct cel_task t = task1();
    assert_int_equal(cel_sign_task(&t, (struct cel_span){BODY1, 5}, KEY, KEYLEN, out), 0);
    assert_string_equal(out, VEC1);

    t = task2();
    assert_int_equal(cel_sign_task(&t, BODY2, KEY, KEYLEN, out), 0);
    assert_string_equal(out, VEC2);

    size_t big = (size_t)1 << 20;
    char *body = malloc(big);
    assert_non_null(body);
    memset(body, 'x', big);
    static const unsigned char key3[] = "another key, 23 bytes!!";
    t = task1();
    assert_int_equal(cel_sign_task(&t, (struct cel_span){body, big}, key3, 23, out), 0);
    assert_string_equal(out, VEC3);
    free(body);
}

static void unsigned_fields_do_not_matter(void **state)
{
    char a[CEL_SIGN_HEX_LEN + 1], b[CEL_SIGN_HEX_LEN + 1];
    struct cel_task t = task2();
    assert_int_equal(cel_sign_task(&t, BODY2, KEY, KEYLEN, a), 0);
    t.lang = NULL;
    t.argsrepr = "[]";
    t.time_limit = 5;
    t.signature = "ignored";
    assert_int_equal(cel_sign_task(&t, BODY2, KEY, KEYLEN, b), 0);
    assert_string_equal(a, b);
}

/* cel_task_encode() sends root_id = id when unset, so the two must sign alike. */
static void unset_root_id_is_the_id(void **state)
{
    char a[CEL_SIGN_HEX_LEN + 1], b[CEL_SIGN_HEX_LEN + 1];
    struct cel_task t = task1();
    assert_int_equal(cel_sign_task(&t, (struct cel_span){BODY1, 5}, KEY, KEYLEN, a), 0);
    t.root_id = t.id;
    assert_int_equal(cel_sign_task(&t, (struct cel_span){BODY1, 5}, KEY, KEYLEN, b), 0);
    assert_string_equal(a, b);
}

/* Each signed field, changed alone, changes the signature; so do absent-vs-empty and
 * moving bytes from one field to its neighbour. */
static void every_signed_field_counts(void **state)
{
    char base[CEL_SIGN_HEX_LEN + 1], other[CEL_SIGN_HEX_LEN + 1];
    struct cel_task t0 = task2();
    assert_int_equal(cel_sign_task(&t0, BODY2, KEY, KEYLEN, base), 0);
    struct cel_task v[12];
    for (size_t i = 0; i < 12; i++)
        v[i] = task2();
    v[0].task = "email.send_welcomE";
    v[1].id = "7d4c2a9e-5b1f-4f0e-9a61-3c2d1e0f9b89";
    v[2].eta = 1795000000123457;
    v[3].expires = 0;
    v[4].retries = 4;
    v[5].root_id = NULL;
    v[6].parent_id = "";
    v[7].group = NULL;
    v[8].idempotency_key = "welcome:43";
    v[9].format = CEL_FMT_MSGPACK;
    v[10].task = "email.send_welcom"; /* shift one byte from task to id */
    v[10].id = "e7d4c2a9e-5b1f-4f0e-9a61-3c2d1e0f9b88";
    v[11].root_id = "root-1p"; /* shift one byte from parent_id to root_id */
    v[11].parent_id = "arent-2";
    for (size_t i = 0; i < 12; i++) {
        assert_int_equal(cel_sign_task(&v[i], BODY2, KEY, KEYLEN, other), 0);
        assert_string_not_equal(base, other);
    }
    struct cel_span body = BODY2;
    body.len--;
    assert_int_equal(cel_sign_task(&t0, body, KEY, KEYLEN, other), 0);
    assert_string_not_equal(base, other);
    assert_int_equal(cel_sign_task(&t0, BODY2, KEY, KEYLEN - 1, other), 0);
    assert_string_not_equal(base, other);
}

static void verify_accepts_and_rejects(void **state)
{
    char err[256];
    struct cel_task t = task2();
    assert_int_equal(cel_sign_verify(&t, BODY2, KEY, KEYLEN, err, sizeof err), CEL_ESIGNATURE);
    assert_non_null(strstr(err, "not signed"));

    t.signature = VEC2;
    assert_int_equal(cel_sign_verify(&t, BODY2, KEY, KEYLEN, err, sizeof err), 0);

    t.retries = 0; /* a replay with reset retries */
    assert_int_equal(cel_sign_verify(&t, BODY2, KEY, KEYLEN, err, sizeof err), CEL_ESIGNATURE);
    assert_non_null(strstr(err, "does not match"));

    t = task2();
    t.signature = "8E213298AD0A124F1DEB7DD6F48121C4779A7330C75588650AEE39E136905583";
    assert_int_equal(cel_sign_verify(&t, BODY2, KEY, KEYLEN, err, sizeof err), CEL_ESIGNATURE);
    t.signature = "8e213298ad0a124f1deb7dd6f48121c4779a7330c75588650aee39e13690558";
    assert_int_equal(cel_sign_verify(&t, BODY2, KEY, KEYLEN, err, sizeof err), CEL_ESIGNATURE);
    assert_non_null(strstr(err, "64 hex"));
    t.signature = "";
    assert_int_equal(cel_sign_verify(&t, BODY2, KEY, KEYLEN, NULL, 0), CEL_ESIGNATURE);

    t = task1();
    t.signature = VEC1;
    assert_int_equal(cel_sign_verify(&t, (struct cel_span){BODY1, 5}, KEY, KEYLEN, NULL, 0), 0);
    assert_int_equal(
        cel_sign_verify(&t, (struct cel_span){"\x93\x91\x02\x80\x80", 5}, KEY, KEYLEN, NULL, 0),
        CEL_ESIGNATURE);
}

/* The producer's path (encode, sign the body, encode again with the signature) and the
 * worker's (decode, verify) agree, for both body formats, with eta/expires through ISO text. */
static void survives_encode_and_decode(void **state)
{
    for (int fmt = 0; fmt < 2; fmt++) {
        struct cel_arena a;
        struct cel_props props;
        struct cel_table headers;
        struct cel_buf body = CEL_BUF_INIT;
        char sig[CEL_SIGN_HEX_LEN + 1], err[256];
        cel_arena_init(&a, 0);
        struct cel_task t;
        cel_task_init(&t);
        t.task = "email.send_welcome";
        t.id = "7d4c2a9e-5b1f-4f0e-9a61-3c2d1e0f9b88";
        t.eta = 1795000000123456;
        t.expires = 1795000060000001;
        t.retries = 2;
        t.group = "g";
        t.idempotency_key = "welcome:42";
        t.args = (struct cel_span){"\x91\x01", 2};
        t.kwargs = (struct cel_span){"\x80", 1};
        t.format = (enum cel_format)fmt;
        assert_int_equal(cel_task_encode(&t, &a, &props, &headers, &body), 0);
        assert_int_equal(cel_sign_task(&t, cel_buf_span(&body), KEY, KEYLEN, sig), 0);
        t.signature = sig;
        cel_buf_clear(&body);
        assert_int_equal(cel_task_encode(&t, &a, &props, &headers, &body), 0);

        struct cel_task back;
        assert_int_equal(cel_task_decode(&back, &a, &props, &headers, body.data, body.len,
                                         &cel_default_limits, err, sizeof err),
                         0);
        assert_string_equal(back.signature, sig);
        assert_int_equal(cel_sign_verify(&back, cel_buf_span(&body), KEY, KEYLEN, err, sizeof err),
                         0);
        back.retries++;
        assert_int_equal(cel_sign_verify(&back, cel_buf_span(&body), KEY, KEYLEN, err, sizeof err),
                         CEL_ESIGNATURE);
        cel_buf_free(&body);
        cel_arena_free(&a);
    }
}

static size_t count_sig_headers(const struct cel_table *h, const char **val)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++)
        if (h->items[i].key.len == strlen(CEL_SIGN_HEADER) &&
            memcmp(h->items[i].key.ptr, CEL_SIGN_HEADER, h->items[i].key.len) == 0) {
            *val = h->items[i].v.u.s.ptr;
            n++;
        }
    return n;
}

/* cel_sign_headers: signs an encoded message in place; a stale signature is replaced, not
 * duplicated, and the result verifies after decoding. */
static void sign_headers_replaces(void **state)
{
    struct cel_arena a;
    struct cel_props props;
    struct cel_table headers;
    struct cel_buf body = CEL_BUF_INIT;
    char err[256];
    const char *val = NULL;
    cel_arena_init(&a, 0);
    struct cel_task t;
    cel_task_init(&t);
    t.task = "bench.noop";
    t.id = "00000000-0000-0000-0000-000000000009";
    t.retries = 4;
    t.signature = "stale-signature";
    assert_int_equal(cel_task_encode(&t, &a, &props, &headers, &body), 0);
    size_t before = headers.n;
    assert_int_equal(count_sig_headers(&headers, &val), 1);
    assert_int_equal(cel_sign_headers(&t, cel_buf_span(&body), KEY, KEYLEN, &a, &headers), 0);
    assert_int_equal(headers.n, before);
    assert_int_equal(count_sig_headers(&headers, &val), 1);
    assert_int_equal(strlen(val), CEL_SIGN_HEX_LEN);

    t.signature = NULL;
    cel_buf_clear(&body);
    assert_int_equal(cel_task_encode(&t, &a, &props, &headers, &body), 0);
    assert_int_equal(count_sig_headers(&headers, &val), 0);
    assert_int_equal(cel_sign_headers(&t, cel_buf_span(&body), KEY, KEYLEN, &a, &headers), 0);
    assert_int_equal(count_sig_headers(&headers, &val), 1);

    struct cel_task back;
    assert_int_equal(cel_task_decode(&back, &a, &props, &headers, body.data, body.len,
                                     &cel_default_limits, err, sizeof err),
                     0);
    assert_int_equal(cel_sign_verify(&back, cel_buf_span(&body), KEY, KEYLEN, err, sizeof err), 0);
    assert_int_equal(cel_sign_headers(&t, cel_buf_span(&body), KEY, 0, &a, &headers), CEL_EINVAL);
    cel_buf_free(&body);
    cel_arena_free(&a);
}

static void bad_arguments(void **state)
{
    char out[CEL_SIGN_HEX_LEN + 1];
    struct cel_task t = task1();
    assert_int_equal(cel_sign_task(&t, (struct cel_span){NULL, 0}, KEY, KEYLEN, out), 0);
    assert_int_equal(cel_sign_task(&t, (struct cel_span){NULL, 0}, KEY, 0, out), CEL_EINVAL);
    assert_int_equal(cel_sign_task(&t, (struct cel_span){NULL, 3}, KEY, KEYLEN, out), CEL_EINVAL);
    t.id = NULL;
    assert_int_equal(cel_sign_task(&t, (struct cel_span){NULL, 0}, KEY, KEYLEN, out), CEL_EINVAL);
}

/* ---- key files ---- */

static char keydir[64];

static int make_dir(void **state)
{
    snprintf(keydir, sizeof keydir, "/tmp/celeriac-test-sign-XXXXXX");
    return mkdtemp(keydir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", keydir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_key(const char *name, const char *content, size_t n, mode_t mode)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", keydir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static int load(const char *path, unsigned char *key, size_t cap, size_t *len, char *err)
{
    *len = cap;
    return cel_sign_load_key(path, key, len, err, 256);
}

static void key_file_good(void **state)
{
    unsigned char key[CEL_SIGN_KEY_MAX];
    char err[256];
    size_t len;
    const char *p = write_key("nl", "0123456789abcdef0123456789abcdef\n", 33, 0600);
    assert_int_equal(load(p, key, sizeof key, &len, err), 0);
    assert_int_equal(len, KEYLEN);
    assert_memory_equal(key, KEY, KEYLEN);

    p = write_key("crlf", "0123456789abcdef\r\n", 18, 0400);
    assert_int_equal(load(p, key, sizeof key, &len, err), 0);
    assert_int_equal(len, 16);

    p = write_key("bin", "\0\1\2\3\4\5\6\7\x8\x9\xa\xb\xc\xd\xe\xf\xff", 17, 0600);
    assert_int_equal(load(p, key, sizeof key, &len, err), 0);
    assert_int_equal(len, 17);
    assert_int_equal(key[0], 0);
    assert_int_equal(key[16], 0xff);
}

static void key_file_refused(void **state)
{
    unsigned char key[CEL_SIGN_KEY_MAX];
    char err[256];
    size_t len;
    const char *p = write_key("world", "0123456789abcdef0123456789abcdef\n", 33, 0644);
    assert_int_equal(load(p, key, sizeof key, &len, err), CEL_ECONFIG);
    assert_non_null(strstr(err, "chmod 600"));
    assert_non_null(strstr(err, "0644"));
    p = write_key("group", "0123456789abcdef0123456789abcdef\n", 33, 0640);
    assert_int_equal(load(p, key, sizeof key, &len, err), CEL_ECONFIG);

    p = write_key("short", "0123456789abcde\n", 16, 0600);
    assert_int_equal(load(p, key, sizeof key, &len, err), CEL_ECONFIG);
    assert_non_null(strstr(err, "shorter than 16"));
    p = write_key("empty", "", 0, 0600);
    assert_int_equal(load(p, key, sizeof key, &len, err), CEL_ECONFIG);

    p = write_key("long", "0123456789abcdef0123456789abcdef", 32, 0600);
    assert_int_equal(load(p, key, 20, &len, err), CEL_ECONFIG);
    assert_non_null(strstr(err, "too long"));
    static char huge[CEL_SIGN_KEY_MAX + 10];
    memset(huge, 'k', sizeof huge);
    p = write_key("huge", huge, sizeof huge, 0600);
    assert_int_equal(load(p, key, sizeof key, &len, err), CEL_ECONFIG);

    char missing[300];
    snprintf(missing, sizeof missing, "%s/missing", keydir);
    assert_int_equal(load(missing, key, sizeof key, &len, err), CEL_ESYS);
    assert_non_null(strstr(err, missing));
    assert_int_equal(load(keydir, key, sizeof key, &len, err), CEL_ECONFIG); /* 0700 dir */
    assert_non_null(strstr(err, "regular file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(canonical_bytes_match_layout),
        cmocka_unit_test(fixed_vectors),
        cmocka_unit_test(unsigned_fields_do_not_matter),
        cmocka_unit_test(unset_root_id_is_the_id),
        cmocka_unit_test(every_signed_field_counts),
        cmocka_unit_test(verify_accepts_and_rejects),
        cmocka_unit_test(survives_encode_and_decode),
        cmocka_unit_test(sign_headers_replaces),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test_setup_teardown(key_file_good, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(key_file_refused, make_dir, remove_dir),
    };
    return cmocka_run_group_tests_name("sign", tests, NULL, NULL);
}
