/* test_status.c: every status code has a distinct name and a real message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "celeriac/celeriac.h"

static const int codes[] = {
#define X(name, code, str) CEL_##name,
    CEL_ERRNO_MAP(X)
#undef X
};

static void every_code_has_a_string(void **state)
{
    (void)state;
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        assert_true(codes[i] < 0);
        assert_non_null(cel_errname(codes[i]));
        assert_string_not_equal(cel_strerror(codes[i]), "unknown error");
        for (size_t j = i + 1; j < n; j++)
            assert_int_not_equal(codes[i], codes[j]);
    }
    assert_string_equal(cel_strerror(0), "success");
    assert_string_equal(cel_strerror(-9999), "unknown error");
    assert_null(cel_errname(-9999));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_code_has_a_string),
    };
    return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}
