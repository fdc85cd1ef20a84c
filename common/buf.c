/* buf.c: growable byte buffer. */
#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cel_buf_reserve(struct cel_buf *b, size_t extra)
{
    if (extra >= SIZE_MAX - b->len)
        return CEL_ENOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return CEL_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int cel_buf_append(struct cel_buf *b, const void *p, size_t n)
{
    int rc = cel_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int cel_buf_puts(struct cel_buf *b, const char *s)
{
    return cel_buf_append(b, s, strlen(s));
}

int cel_buf_printf(struct cel_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return CEL_EINVAL;
    int rc = cel_buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int cel_buf_msgpack_write(void *buf, const char *p, size_t n)
{
    return cel_buf_append(buf, p, n) ? -1 : 0;
}

void cel_buf_clear(struct cel_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void cel_buf_free(struct cel_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
