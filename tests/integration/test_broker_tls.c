/* test_broker_tls.c: amqps against the stack's TLS listener ($CELERIAC_TEST_AMQPS_URL): works
 * with the right CA (with and without a client certificate), is refused with a throwaway CA made
 * here, and tls_insecure turns verification off. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_broker_util.h"

static const char *amqps_url, *tls_dir;
static char wrong_ca[512];

static int open_tls(struct cel_broker **b, const char *ca, const char *cert, const char *key,
                    bool insecure, char *err, size_t errlen)
{
    struct cel_broker_opts o = {
        .url = amqps_url, .tls_ca = ca, .tls_cert = cert, .tls_key = key, .tls_insecure = insecure};
    return cel_broker_open(b, &o, err, errlen);
}

static void path_in(char *out, size_t n, const char *dir, const char *file)
{
    snprintf(out, n, "%s/%s", dir, file);
}

static void round_trip_with_the_right_ca(void **state)
{
    (void)state;
    char ca[512], cert[512], key[512], err[512], q[200];
    path_in(ca, sizeof ca, tls_dir, "ca.pem");
    path_in(cert, sizeof cert, tls_dir, "client.pem");
    path_in(key, sizeof key, tls_dir, "client.key");
    struct cel_broker *b;
    int rc = open_tls(&b, ca, NULL, NULL, false, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "amqps open: %s\n", err);
    assert_int_equal(rc, 0);
    const struct cel_broker_class *c = CEL_BROKER_CLASS(b);
    test_name(q, sizeof q, "tls");
    assert_int_equal(c->declare(b, q), 0);
    struct cel_props p = {.content_type = "application/x-msgpack", .delivery_mode = 2};
    struct cel_publish m = {.exchange = "", .routing_key = q, .props = &p, .body = {"tls", 3}};
    assert_int_equal(c->publish(b, &m, 1, NULL), 0);
    assert_int_equal(c->consume(b, q, 1), 0);
    struct cel_arena a;
    cel_arena_init(&a, 0);
    struct cel_delivery d;
    assert_int_equal(c->next(b, &d, &a, 10000), 0);
    assert_int_equal(d.body.len, 3);
    assert_int_equal(c->ack(b, d.conn_gen, d.tag, false), 0);
    assert_int_equal(c->reconnect(b), 0);
    c->free(b);

    assert_int_equal(open_tls(&b, ca, cert, key, false, err, sizeof err), 0);
    c->free(b);
    const char *plain = getenv("CELERIAC_BROKER_URL");
    if (plain)
        test_cleanup_queue(plain, q);
    cel_arena_free(&a);
}

static void refused_with_a_wrong_ca(void **state)
{
    (void)state;
    struct cel_broker *b = NULL;
    char err[512];
    int rc = open_tls(&b, wrong_ca, NULL, NULL, false, err, sizeof err);
    printf("# wrong CA: %s (%s)\n", cel_errname(rc), err);
    assert_int_equal(rc, CEL_ETLS);
    assert_null(b);
    assert_null(strstr(err, ":guest@"));
    /* verification off: the same wrong CA is accepted */
    assert_int_equal(open_tls(&b, wrong_ca, NULL, NULL, true, err, sizeof err), 0);
    CEL_BROKER_CLASS(b)->free(b);
}

static void missing_ca_file_is_a_tls_error(void **state)
{
    (void)state;
    struct cel_broker *b = NULL;
    char err[512];
    assert_int_equal(open_tls(&b, "/nonexistent/ca.pem", NULL, NULL, false, err, sizeof err),
                     CEL_ETLS);
    assert_non_null(strstr(err, "/nonexistent/ca.pem"));
}

static int make_wrong_ca(char *dir_out, size_t n)
{
    char tmpl[] = "/tmp/celeriac-wrong-ca-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    snprintf(dir_out, n, "%s", tmpl);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=wrong test CA' "
             "-keyout %s/ca.key -out %s/ca.pem 2>/dev/null",
             tmpl, tmpl);
    return system(cmd);
}

int main(void)
{
    amqps_url = test_env("CELERIAC_TEST_AMQPS_URL");
    tls_dir = test_env("CELERIAC_TEST_TLS_DIR");
    char dir[256];
    if (make_wrong_ca(dir, sizeof dir) != 0) {
        fprintf(stderr, "cannot make a throwaway CA with openssl\n");
        return 1;
    }
    snprintf(wrong_ca, sizeof wrong_ca, "%s/ca.pem", dir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_with_the_right_ca),
        cmocka_unit_test(refused_with_a_wrong_ca),
        cmocka_unit_test(missing_ca_file_is_a_tls_error),
    };
    int rc = cmocka_run_group_tests_name("broker_tls", tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
