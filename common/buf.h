/* buf.h: a growable byte buffer, also usable as a msgpack-c write target. */
#ifndef CEL_COMMON_BUF_H
#define CEL_COMMON_BUF_H

#include <stddef.h>

#include "celeriac/celeriac.h"

struct cel_buf {
    char *data; /* owned; NUL-terminated after every append (data[len] == 0) when cap > 0 */
    size_t len;
    size_t cap;
};

#define CEL_BUF_INIT                                                                               \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

int cel_buf_reserve(struct cel_buf *b, size_t extra);
int cel_buf_append(struct cel_buf *b, const void *p, size_t n);
int cel_buf_puts(struct cel_buf *b, const char *s);
int cel_buf_printf(struct cel_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* msgpack_packer_write callback: msgpack_packer_init(&pk, buf, cel_buf_msgpack_write). */
int cel_buf_msgpack_write(void *buf, const char *p, size_t n);
void cel_buf_clear(struct cel_buf *b); /* len = 0, keeps memory */
void cel_buf_free(struct cel_buf *b);  /* frees memory, back to CEL_BUF_INIT */
static inline struct cel_span cel_buf_span(const struct cel_buf *b)
{
    return (struct cel_span){b->data, b->len};
}

#endif
