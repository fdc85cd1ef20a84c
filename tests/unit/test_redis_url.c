/* test_redis_url.c: the Redis URL parser, valid forms and every refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "celeriac/celeriac.h"
#include "common/redis_url.h"

static struct cel_redis_url parse_ok(const char *url)
{
    struct cel_redis_url u;
    char err[256] = "";
    int rc = cel_redis_url_parse(url, &u, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: %s", url, err);
    return u;
}

static void parse_bad(const char *url, int want, const char *msg_part)
{
    struct cel_redis_url u;
    char err[256] = "";
    assert_int_equal(cel_redis_url_parse(url, &u, err, sizeof err), want);
    if (!strstr(err, msg_part))
        fail_msg("%s: error '%s' does not mention '%s'", url, err, msg_part);
}

static void defaults(void **state)
{
    struct cel_redis_url u = parse_ok("redis://");
    assert_false(u.is_unix);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");

    u = parse_ok("redis://redis.example");
    assert_string_equal(u.host, "redis.example");
    assert_int_equal(u.port, 6379);
    u = parse_ok("redis://127.0.0.1:57813/");
    assert_int_equal(u.port, 57813);
    assert_int_equal(u.db, 0);
}

static void host_port_db(void **state)
{
    struct cel_redis_url u = parse_ok("redis://127.0.0.1:6380/3");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
    u = parse_ok("redis://h:1/15?socket_timeout=3");
    assert_int_equal(u.db, 15);
    u = parse_ok("redis://h?db=7");
    assert_int_equal(u.db, 7);
    u = parse_ok("redis://[::1]:7000/2");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 2);
    u = parse_ok("redis://[::1]");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6379);
}

static void passwords(void **state)
{
    struct cel_redis_url u = parse_ok("redis://:s3cret@h:6379/1");
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.db, 1);
    u = parse_ok("redis://alice:pa%40ss%3Aw%2Fd@h/0");
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "pa@ss:w/d");
    /* the last '@' ends the userinfo, as urlparse does */
    u = parse_ok("redis://:p@ss@h");
    assert_string_equal(u.password, "p@ss");
    assert_string_equal(u.host, "h");
}

static void unix_sockets(void **state)
{
    struct cel_redis_url u = parse_ok("unix:///run/redis/redis.sock");
    assert_true(u.is_unix);
    assert_string_equal(u.path, "/run/redis/redis.sock");
    assert_int_equal(u.db, 0);
    u = parse_ok("unix:///tmp/r.sock?db=4");
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_int_equal(u.db, 4);
    u = parse_ok("unix://:pw@/tmp/r.sock");
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.path, "/tmp/r.sock");
    u = parse_ok("socket:///tmp/s");
    assert_string_equal(u.path, "/tmp/s");
}

static void refusals(void **state)
{
    parse_bad("rediss://h:6380/0", CEL_EUNSUPPORTED, "TLS");
    parse_bad("", CEL_EURL, "empty");
    parse_bad(NULL, CEL_EURL, "empty");
    parse_bad("http://h/", CEL_EURL, "scheme");
    parse_bad("redis://h:0/", CEL_EURL, "port");
    parse_bad("redis://h:65536/", CEL_EURL, "port");
    parse_bad("redis://h:12x/", CEL_EURL, "port");
    parse_bad("redis://h:/", CEL_EURL, "port");
    parse_bad("redis://h/x", CEL_EURL, "db");
    parse_bad("redis://h/1?db=z", CEL_EURL, "db");
    parse_bad("redis://[::1/", CEL_EURL, "IPv6");
    parse_bad("redis://[::1]x/", CEL_EURL, "IPv6");
    parse_bad("redis://:6379/", CEL_EURL, "empty host");
    parse_bad("redis://justuser@h/", CEL_EURL, "password");
    parse_bad("redis://:bad%zz@h/", CEL_EURL, "password");
    parse_bad("redis://:nul%00@h/", CEL_EURL, "password");
    parse_bad("unix://host/tmp/s", CEL_EURL, "host");
    parse_bad("unix://", CEL_EURL, "path");
}

static void password_never_in_errors(void **state)
{
    static const char *const urls[] = {
        "redis://:hunter2@h:0/", "redis://u:hunter2@h/x", "redis://:hunter2@[::1/",
        "unix://:hunter2@h/s",   "rediss://:hunter2@h/",
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        struct cel_redis_url u;
        char err[256] = "";
        assert_true(cel_redis_url_parse(urls[i], &u, err, sizeof err) < 0);
        assert_non_null(strstr(err, "redis URL"));
        assert_null(strstr(err, "hunter2"));
    }
}

static void describe(void **state)
{
    char out[300];
    struct cel_redis_url u = parse_ok("redis://:pw@10.0.0.1:7000/2");
    cel_redis_url_describe(&u, out, sizeof out);
    assert_string_equal(out, "10.0.0.1:7000");
    u = parse_ok("redis://[::1]:7000");
    cel_redis_url_describe(&u, out, sizeof out);
    assert_string_equal(out, "[::1]:7000");
    u = parse_ok("unix:///tmp/r.sock");
    cel_redis_url_describe(&u, out, sizeof out);
    assert_string_equal(out, "/tmp/r.sock");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),  cmocka_unit_test(host_port_db),
        cmocka_unit_test(passwords), cmocka_unit_test(unix_sockets),
        cmocka_unit_test(refusals),  cmocka_unit_test(password_never_in_errors),
        cmocka_unit_test(describe),
    };
    return cmocka_run_group_tests_name("redis_url", tests, NULL, NULL);
}
