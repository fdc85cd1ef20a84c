/* fuzz_json.c: JSON -> msgpack -> JSON -> msgpack must be stable; the raw input, read as msgpack,
 * goes through the JSON writer, the validator and the saferepr writer without harm. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static void json_round_trip(const char *text, size_t len)
{
    struct cel_buf mp = CEL_BUF_INIT, js = CEL_BUF_INIT, mp2 = CEL_BUF_INIT;
    char err[256];
    if (cel_json_to_msgpack(text, len, NULL, &mp, err, sizeof err) == 0) {
        check(cel_msgpack_validate(cel_buf_span(&mp), NULL, err, sizeof err) == 0);
        check(cel_msgpack_to_json(cel_buf_span(&mp), &js) == 0);
        check(cel_json_to_msgpack(js.data, js.len, NULL, &mp2, err, sizeof err) == 0);
        check(mp.len == mp2.len && memcmp(mp.data, mp2.data, mp.len) == 0);
    } else {
        check(err[0] != '\0' && mp.len == 0);
    }
    cel_buf_free(&mp);
    cel_buf_free(&js);
    cel_buf_free(&mp2);
}

static void raw_msgpack(const char *bytes, size_t len)
{
    struct cel_buf js = CEL_BUF_INIT, r = CEL_BUF_INIT, mp = CEL_BUF_INIT;
    struct cel_span s = {bytes, len};
    char err[256];
    int valid = cel_msgpack_validate(s, NULL, err, sizeof err) == 0;
    if (cel_msgpack_to_json(s, &js) == 0 && valid) {
        /* whatever valid msgpack JSON can carry, the JSON written for it reads back */
        check(cel_json_to_msgpack(js.data, js.len, NULL, &mp, err, sizeof err) == 0);
    }
    cel_msgpack_repr(s, 64, &r);
    cel_buf_clear(&r);
    cel_msgpack_repr(s, 0, &r);
    cel_buf_free(&js);
    cel_buf_free(&r);
    cel_buf_free(&mp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_round_trip((const char *)data, size);
    raw_msgpack((const char *)data, size);
    return 0;
}
