/* test_url_scrub.c: cel_url_scrub() masks passwords in place (argv), keeping the length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "celeriac/broker.h"

static void check(const char *in, const char *want)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", in);
    cel_url_scrub(buf);
    assert_string_equal(buf, want);
    assert_int_equal(strlen(buf), strlen(in));
}

static void masks_passwords(void **state)
{
    check("amqp://guest:s3cret@host:5672/vh", "amqp://guest:******@host:5672/vh");
    check("--broker=amqps://u:p%40ss@h/", "--broker=amqps://u:******@h/");
    check("redis://:pw@127.0.0.1:6379/0", "redis://:**@127.0.0.1:6379/0");
    check("amqp://a:one@h1/,amqp://b:two@h2/", "amqp://a:***@h1/,amqp://b:***@h2/");
    check("amqp://u:p@ss@h/", "amqp://u:****@h/"); /* the last '@' ends the userinfo */
}

static void leaves_the_rest(void **state)
{
    check("amqp://user@host/", "amqp://user@host/");
    check("amqp://host:5672/", "amqp://host:5672/");
    check("users.create", "users.create");
    check("[\"a:b@c\"]", "[\"a:b@c\"]");
    check("", "");
    cel_url_scrub(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(masks_passwords),
        cmocka_unit_test(leaves_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
