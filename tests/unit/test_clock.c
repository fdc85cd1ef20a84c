/* test_clock.c: ISO-8601 as Celery writes it and reads it, including parse_iso8601's traps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "celeriac/celeriac.h"
#include "common/clock.h"

#define T_7_3 INT64_C(1795305169613563) /* 2026-11-21T23:52:49.613563 */

static int64_t parse(const char *s)
{
    int64_t us = -1;
    int rc = cel_iso8601_parse(s, strlen(s), &us);
    if (rc)
        fail_msg("'%s' did not parse: %s", s, cel_errname(rc));
    return us;
}

static void refuse(const char *s)
{
    int64_t us;
    if (cel_iso8601_parse(s, strlen(s), &us) != CEL_ETIME)
        fail_msg("'%s' parsed", s);
}

static void format(void **state)
{
    (void)state;
    char out[33];
    assert_int_equal(cel_iso8601_format(0, 0, out), 26);
    assert_string_equal(out, "1970-01-01T00:00:00.000000");
    assert_int_equal(cel_iso8601_format(T_7_3, 0, out), 26);
    assert_string_equal(out, "2026-11-21T23:52:49.613563");
    assert_int_equal(cel_iso8601_format(T_7_3, 1, out), 32);
    assert_string_equal(out, "2026-11-21T23:52:49.613563+00:00");
    cel_iso8601_format(-1, 0, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999999");
    cel_iso8601_format(INT64_C(951782400000000), 0, out); /* leap day 2000 */
    assert_string_equal(out, "2000-02-29T00:00:00.000000");
    cel_iso8601_format(INT64_MAX, 1, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999999+00:00");
    cel_iso8601_format(INT64_MIN, 0, out);
    assert_string_equal(out, "0001-01-01T00:00:00.000000");
}

static void parse_forms(void **state)
{
    (void)state;
    assert_true(parse("2026-11-21T23:52:49.613563") == T_7_3);
    assert_true(parse("2026-11-21T23:52:49.613563+00:00") == T_7_3);
    assert_true(parse("2026-11-21T23:52:49.613563Z") == T_7_3);
    assert_true(parse("2026-11-21 23:52:49.613563") == T_7_3);
    assert_true(parse("2026-11-22T01:52:49.613563+02:00") == T_7_3);
    assert_true(parse("2026-11-21T22:22:49.613563-0130") == T_7_3);
    assert_true(parse("2026-11-22T00:22:49.613563+0030") == T_7_3);
    assert_true(parse("2026-11-21T23:52:49") == T_7_3 - 613563);
    assert_true(parse("2026-11-21T23:52") == T_7_3 - 49613563);
    assert_true(parse("1970-01-01T00:00:00") == 0);
    assert_true(parse("2000-02-29T00:00:00") == INT64_C(951782400000000));
}

static void parse_fraction_trap(void **state)
{
    (void)state;
    /* Celery reads the fraction as an integer number of microseconds */
    assert_true(parse("1970-01-01T00:00:00.5") == 5);
    assert_true(parse("1970-01-01T00:00:00.000005") == 5);
    assert_true(parse("1970-01-01T00:00:00.123") == 123);
    assert_true(parse("1970-01-01T00:00:00.999999") == 999999);
    refuse("1970-01-01T00:00:00.1234567");
    refuse("1970-01-01T00:00:00.");
}

static void parse_ranges_and_garbage(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026",
        "2026-11-21",
        "2026-11-21T",
        "2026-11-21X23:52:49",
        "2026-13-01T00:00:00",
        "2026-00-01T00:00:00",
        "2026-11-31T00:00:00",
        "2026-02-29T00:00:00",
        "1900-02-29T00:00:00",
        "2026-11-00T00:00:00",
        "2026-11-21T24:00:00",
        "2026-11-21T23:60:00",
        "2026-11-21T23:59:60",
        "0000-01-01T00:00:00",
        "2026-11-21T23:52:49+24:00",
        "2026-11-21T23:52:49+01:60",
        "2026-11-21T23:52:49+1",
        "2026-11-21T23:52:49 junk",
        "2026-11-21T23:52:49Zjunk",
        "2026-1-21T23:52:49",
        "+026-11-21T23:52:49",
        "2026-11-21T23:5a:49",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        refuse(bad[i]);
    int64_t us;
    /* the length is honoured: no read past it */
    assert_int_equal(cel_iso8601_parse("2026-11-21T23:52:49.613563", 19, &us), 0);
    assert_true(us == T_7_3 - 613563);
}

static void extremes_round_trip(void **state)
{
    (void)state;
    char out[33];
    int64_t lo = parse("0001-01-01T00:00:00"), hi = parse("9999-12-31T23:59:59.999999");
    cel_iso8601_format(lo, 0, out);
    assert_string_equal(out, "0001-01-01T00:00:00.000000");
    cel_iso8601_format(hi, 0, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999999");
    assert_true(parse("0001-01-01T00:00:00+00:01") == lo - 60 * CEL_USEC_PER_SEC);
    for (int64_t us = -86400 * CEL_USEC_PER_SEC * 400; us < 86400 * CEL_USEC_PER_SEC * 800000;
         us += INT64_C(7777777777777)) {
        cel_iso8601_format(us, 1, out);
        assert_true(parse(out) == us);
    }
}

static void clocks(void **state)
{
    (void)state;
    int64_t a = cel_mono_us(), b = cel_mono_us();
    assert_true(b >= a);
    assert_true(cel_now_us() > INT64_C(1600000000) * CEL_USEC_PER_SEC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format),
        cmocka_unit_test(parse_forms),
        cmocka_unit_test(parse_fraction_trap),
        cmocka_unit_test(parse_ranges_and_garbage),
        cmocka_unit_test(extremes_round_trip),
        cmocka_unit_test(clocks),
    };
    return cmocka_run_group_tests_name("clock", tests, NULL, NULL);
}
