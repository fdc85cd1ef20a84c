/* test_arena_buf.c: the arena (alignment, big blocks, reset) and the byte buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <msgpack.h>
#include <string.h>

#include "common/arena.h"
#include "common/buf.h"

static void arena_basics(void **state)
{
    (void)state;
    struct cel_arena a;
    cel_arena_init(&a, 256);
    char *p[100];
    for (int i = 0; i < 100; i++) {
        p[i] = cel_arena_alloc(&a, (size_t)i + 1);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        memset(p[i], i, (size_t)i + 1);
    }
    for (int i = 0; i < 100; i++)
        for (int j = 0; j <= i; j++)
            assert_int_equal((unsigned char)p[i][j], i);
    char *z = cel_arena_calloc(&a, 40);
    for (int i = 0; i < 40; i++)
        assert_int_equal(z[i], 0);
    assert_string_equal(cel_arena_strdup(&a, "hello"), "hello");
    char *s = cel_arena_strndup(&a, "hello", 3);
    assert_string_equal(s, "hel");
    assert_string_equal(cel_arena_strndup(&a, NULL, 0), "");
    cel_arena_free(&a);
}

static void arena_big_blocks_and_reset(void **state)
{
    (void)state;
    struct cel_arena a;
    cel_arena_init(&a, 1024);
    char *small = cel_arena_alloc(&a, 16);
    char *big = cel_arena_alloc(&a, 100000); /* bigger than a chunk */
    memset(big, 1, 100000);
    char *after = cel_arena_alloc(&a, 16); /* still from the first chunk */
    assert_ptr_equal(after, small + 16);
    assert_null(cel_arena_alloc(&a, SIZE_MAX - 3));
    assert_null(cel_arena_alloc(&a, SIZE_MAX - 31)); /* header + size would wrap */
    assert_null(cel_arena_strndup(&a, "x", SIZE_MAX));
    cel_arena_reset(&a);
    char *again = cel_arena_alloc(&a, 16);
    assert_non_null(again);
    for (int i = 0; i < 1000; i++) {
        cel_arena_reset(&a);
        assert_non_null(cel_arena_alloc(&a, 5000));
        assert_non_null(cel_arena_alloc(&a, 10));
    }
    cel_arena_free(&a);
    cel_arena_free(&a); /* freeing twice is harmless */
}

static void buf_basics(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    assert_int_equal(cel_buf_puts(&b, "abc"), 0);
    assert_int_equal(cel_buf_printf(&b, "-%d-%s", 42, "x"), 0);
    assert_string_equal(b.data, "abc-42-x");
    assert_int_equal(b.len, 8);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(cel_buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(b.len, 100008);
    assert_int_equal(b.data[b.len], '\0');
    cel_buf_clear(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(cel_buf_reserve(&b, SIZE_MAX), CEL_ENOMEM);
    assert_int_equal(cel_buf_append(&b, NULL, 0), 0);
    struct cel_span s = cel_buf_span(&b);
    assert_int_equal(s.len, 0);
    cel_buf_free(&b);
    assert_null(b.data);
    cel_buf_free(&b);
}

static void buf_as_msgpack_target(void **state)
{
    (void)state;
    struct cel_buf b = CEL_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, cel_buf_msgpack_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "hi", 2);
    msgpack_pack_nil(&pk);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "\x92\xa2hi\xc0", 5);
    cel_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arena_basics),
        cmocka_unit_test(arena_big_blocks_and_reset),
        cmocka_unit_test(buf_basics),
        cmocka_unit_test(buf_as_msgpack_target),
    };
    return cmocka_run_group_tests_name("arena_buf", tests, NULL, NULL);
}
