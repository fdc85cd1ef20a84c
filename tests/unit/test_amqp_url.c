/* test_amqp_url.c: the broker URL parser (defaults, percent-decoding, lists, errors), password
 * redaction, the adapter table and the backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "celeriac/broker.h"
#include "common/amqp_url.h"

static int parse(const char *s, struct cel_amqp_url *u, char *err)
{
    return cel_amqp_url_parse(s, strlen(s), u, err, 256);
}

static void full_url(void **state)
{
    (void)state;
    struct cel_amqp_url u;
    char err[256];
    assert_int_equal(parse("amqp://alice:s3cret@rabbit.local:5673/prod", &u, err), 0);
    assert_false(u.tls);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.pass, "s3cret");
    assert_string_equal(u.host, "rabbit.local");
    assert_int_equal(u.port, 5673);
    assert_string_equal(u.vhost, "prod");
}

static void defaults(void **state)
{
    (void)state;
    struct cel_amqp_url u;
    char err[256];
    assert_int_equal(parse("amqp://", &u, err), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 5672);
    assert_string_equal(u.user, "guest");
    assert_string_equal(u.pass, "guest");
    assert_string_equal(u.vhost, "/");
    assert_int_equal(parse("amqps://h", &u, err), 0);
    assert_true(u.tls);
    assert_int_equal(u.port, 5671);
    assert_int_equal(parse("AMQP://h/", &u, err), 0);
    assert_string_equal(u.vhost, "/");
    assert_int_equal(parse("amqp://bob@h", &u, err), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.pass, "guest");
    assert_int_equal(parse("amqp://bob:@h", &u, err), 0);
    assert_string_equal(u.pass, "");
}

static void percent_decoding(void **state)
{
    (void)state;
    struct cel_amqp_url u;
    char err[256];
    assert_int_equal(parse("amqp://us%40er:p%3Aa%2Fss%25@h/%2F", &u, err), 0);
    assert_string_equal(u.user, "us@er");
    assert_string_equal(u.pass, "p:a/ss%");
    assert_string_equal(u.vhost, "/");
    assert_int_equal(parse("amqp://h//", &u, err), 0);
    assert_string_equal(u.vhost, "/");
    assert_int_equal(parse("amqp://h/a%2fb", &u, err), 0);
    assert_string_equal(u.vhost, "a/b");
    assert_int_equal(parse("amqp://h/v?heartbeat=10", &u, err), 0);
    assert_string_equal(u.vhost, "v");
    /* the last '@' ends the user info */
    assert_int_equal(parse("amqp://u:p@ss@h:1", &u, err), 0);
    assert_string_equal(u.pass, "p@ss");
    assert_string_equal(u.host, "h");
}

static void ipv6(void **state)
{
    (void)state;
    struct cel_amqp_url u;
    char err[256];
    assert_int_equal(parse("amqp://[::1]:5700/v", &u, err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 5700);
    assert_int_equal(parse("amqp://[::1]/", &u, err), 0);
    assert_int_equal(u.port, 5672);
    assert_int_equal(parse("amqp://[::1", &u, err), CEL_EURL);
}

static void errors_never_show_the_password(void **state)
{
    (void)state;
    struct cel_amqp_url u;
    char err[256];
    const char *bad[] = {
        "http://u:topsecret@h/",       "amqp://u:topsecret@h:0/",
        "amqp://u:topsecret@h:65536/", "amqp://u:topsecret@h:x/",
        "amqp://u:topsecret%zz@h/",    "amqp://u:topsecret@h/%",
        "amqp://u:top%00secret@h",     "amqp://u:topsecret@h/v%2",
        "amqp:/u:topsecret@h",         "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_equal(parse(bad[i], &u, err), CEL_EURL);
        assert_true(err[0] != 0);
        assert_null(strstr(err, "topsecret"));
    }
    char longhost[400] = "amqp://";
    memset(longhost + 7, 'h', 300);
    longhost[307] = 0;
    assert_int_equal(parse(longhost, &u, err), CEL_EURL);
}

static void lists(void **state)
{
    (void)state;
    struct cel_amqp_url u[CEL_AMQP_URL_MAX];
    size_t n;
    char err[256];
    assert_int_equal(cel_amqp_url_parse_list(" amqp://a:1@h1:1/ , amqps://h2,\namqp://h3\n", u,
                                             CEL_AMQP_URL_MAX, &n, err, sizeof err),
                     0);
    assert_int_equal(n, 3);
    assert_string_equal(u[0].host, "h1");
    assert_true(u[1].tls);
    assert_string_equal(u[2].host, "h3");
    assert_int_equal(cel_amqp_url_parse_list("amqp://h1,,amqp://h2,", u, 2, &n, err, sizeof err),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(
        cel_amqp_url_parse_list("amqp://h1,amqp://h2,amqp://h3", u, 2, &n, err, sizeof err),
        CEL_EURL);
    assert_int_equal(cel_amqp_url_parse_list(" , ", u, 2, &n, err, sizeof err), CEL_EURL);
    assert_int_equal(cel_amqp_url_parse_list("amqp://h1,redis://h2", u, 2, &n, err, sizeof err),
                     CEL_EURL);
}

static void password_from_the_environment(void **state)
{
    (void)state;
    struct cel_amqp_url u[2];
    size_t n;
    char err[256];
    assert_int_equal(
        cel_amqp_url_parse_list("amqp://a:x@h1,amqp://b@h2", u, 2, &n, err, sizeof err), 0);
    setenv("CELERIAC_BROKER_PASSWORD", "fromenv", 1);
    cel_amqp_url_env_password(u, n);
    unsetenv("CELERIAC_BROKER_PASSWORD");
    assert_string_equal(u[0].pass, "fromenv");
    assert_string_equal(u[1].pass, "fromenv");
    assert_string_equal(u[1].user, "b");
}

static void url_sources(void **state)
{
    (void)state;
    char *s, err[256];
    unsetenv("CELERIAC_BROKER_URL_FILE");
    setenv("CELERIAC_BROKER_URL", "amqp://env", 1);
    assert_int_equal(cel_broker_url_load("amqp://given", &s, err, sizeof err), 0);
    assert_string_equal(s, "amqp://given");
    free(s);
    assert_int_equal(cel_broker_url_load(NULL, &s, err, sizeof err), 0);
    assert_string_equal(s, "amqp://env");
    free(s);
    char path[] = "/tmp/celeriac-url-unit-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "amqp://file1,\namqp://file2\n", 27), 27);
    close(fd);
    setenv("CELERIAC_BROKER_URL_FILE", path, 1);
    assert_int_equal(cel_broker_url_load(NULL, &s, err, sizeof err), 0);
    assert_string_equal(s, "amqp://file1,\namqp://file2\n");
    free(s);
    unlink(path);
    assert_int_equal(cel_broker_url_load(NULL, &s, err, sizeof err), CEL_ESYS);
    unsetenv("CELERIAC_BROKER_URL_FILE");
    unsetenv("CELERIAC_BROKER_URL");
    assert_int_equal(cel_broker_url_load(NULL, &s, err, sizeof err), CEL_ECONFIG);
}

static void redaction(void **state)
{
    (void)state;
    char out[256];
    cel_url_redact("amqp://u:secret@h:5672/v", out, sizeof out);
    assert_string_equal(out, "amqp://u:***@h:5672/v");
    cel_url_redact("amqp://u@h/v", out, sizeof out);
    assert_string_equal(out, "amqp://u@h/v");
    cel_url_redact("amqps://a:b@c@h/x@y,amqp://h2,redis://:pw@r:6379/0", out, sizeof out);
    assert_string_equal(out, "amqps://a:***@h/x@y,amqp://h2,redis://:***@r:6379/0");
    cel_url_redact("amqp://u:secret@h", out, 13);
    assert_string_equal(out, "amqp://u:***");
    cel_url_redact("amqp://u:secret@h", out, 10);
    assert_null(strstr(out, "secret"));
    cel_url_redact(NULL, out, sizeof out);
    assert_string_equal(out, "");
    cel_url_redact("no scheme", out, sizeof out);
    assert_string_equal(out, "no scheme");
}

static void adapter_table(void **state)
{
    (void)state;
    const struct cel_broker_class *c = cel_broker_class_for("amqp://h");
    assert_non_null(c);
    assert_string_equal(c->scheme, "amqp");
    assert_ptr_equal(cel_broker_class_for("AMQPS://h,amqp://g"), c);
    assert_ptr_equal(cel_broker_class_for(" amqp://h"), c);
    assert_null(cel_broker_class_for("redis://h"));
    assert_null(cel_broker_class_for("amqp"));
    assert_null(cel_broker_class_for(NULL));
    struct cel_broker *b = (struct cel_broker *)1;
    struct cel_broker_opts o = {.url = "kafka://u:pw@h"};
    char err[256];
    assert_int_equal(cel_broker_open(&b, &o, err, sizeof err), CEL_EURL);
    assert_null(b);
    assert_null(strstr(err, "pw@"));
}

static void backoff(void **state)
{
    (void)state;
    for (unsigned attempt = 0; attempt < 40; attempt++) {
        int lim = 100;
        for (unsigned i = 0; i < attempt && lim < 5000; i++)
            lim *= 2;
        lim = lim > 5000 ? 5000 : lim;
        for (int k = 0; k < 50; k++) {
            int d = cel_backoff_ms(attempt, 100, 5000);
            assert_true(d >= 0 && d < lim);
        }
    }
    assert_int_equal(cel_backoff_ms(3, 0, 100), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_url),
        cmocka_unit_test(defaults),
        cmocka_unit_test(percent_decoding),
        cmocka_unit_test(ipv6),
        cmocka_unit_test(errors_never_show_the_password),
        cmocka_unit_test(lists),
        cmocka_unit_test(password_from_the_environment),
        cmocka_unit_test(url_sources),
        cmocka_unit_test(redaction),
        cmocka_unit_test(adapter_table),
        cmocka_unit_test(backoff),
    };
    return cmocka_run_group_tests_name("amqp_url", tests, NULL, NULL);
}
