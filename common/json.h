/* json.h: JSON <-> msgpack conversion with Python json semantics, for JSON bodies and results. */
#ifndef CEL_COMMON_JSON_H
#define CEL_COMMON_JSON_H

#include "common/buf.h"
#include "common/message.h"

/* Appends the msgpack encoding of the JSON text to out (text as str, integers as the smallest
 * int, reals as float64, objects as maps). CEL_EJSON with a reason ("line 1 col 7: ...") in err. */
int cel_json_to_msgpack(const char *json, size_t len, const struct cel_limits *lim,
                        struct cel_buf *out, char *err, size_t errlen);

/* Appends compact JSON for one msgpack value, using Python json.dumps separators (", ", ": ")
 * so the output matches what kombu writes. bin becomes a string when valid UTF-8, else
 * CEL_EUNSUPPORTED; map keys must be strings. */
int cel_msgpack_to_json(struct cel_span mp, struct cel_buf *out);

#endif
