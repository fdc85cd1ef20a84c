/* test_sha1.c: cel__sha1_hex against the FIPS 180 examples and lengths around the padding
 * boundary (checked against OpenSSL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/sha1.h"

static void known_vectors(void **state)
{
    (void)state;
    char out[41];
    cel__sha1_hex("abc", 3, out);
    assert_string_equal(out, "a9993e364706816aba3e25717850c26c9cd0d89d");
    cel__sha1_hex("", 0, out);
    assert_string_equal(out, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    cel__sha1_hex(two, strlen(two), out);
    assert_string_equal(out, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
}

static void every_length_matches_openssl(void **state)
{
    (void)state;
    unsigned char buf[300];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof buf; len++) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        EVP_Digest(buf, len, md, &mdlen, EVP_sha1(), NULL);
        char want[41], got[41];
        for (unsigned i = 0; i < mdlen; i++) {
            static const char hex[] = "0123456789abcdef";
            want[2 * i] = hex[md[i] >> 4];
            want[2 * i + 1] = hex[md[i] & 15];
        }
        want[40] = '\0';
        cel__sha1_hex(buf, len, got);
        assert_string_equal(got, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_vectors),
        cmocka_unit_test(every_length_matches_openssl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
