/* arena.c: chunked bump allocator; one reset frees a whole job. */
#include "common/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct cel__arena_chunk {
    struct cel__arena_chunk *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
};

#define CEL__ALIGN(n) (((n) + 15u) & ~(size_t)15u)

void cel_arena_init(struct cel_arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 8192;
}

static struct cel__arena_chunk *chunk_new(size_t size)
{
    if (size > SIZE_MAX - sizeof(struct cel__arena_chunk))
        return NULL;
    struct cel__arena_chunk *c = malloc(sizeof(*c) + size);
    if (c) {
        c->next = NULL;
        c->size = size;
        c->used = 0;
    }
    return c;
}

void *cel_arena_alloc(struct cel_arena *a, size_t n)
{
    n = CEL__ALIGN(n ? n : 1);
    if (n < n - 15u)
        return NULL; /* overflow in alignment */
    struct cel__arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > a->chunk_size ? n : a->chunk_size;
        struct cel__arena_chunk *nc = chunk_new(size);
        if (!nc)
            return NULL;
        if (c && n > a->chunk_size) {
            /* an oversized block goes behind the current chunk so its free space stays usable */
            nc->next = c->next;
            c->next = nc;
            nc->used = n;
            return nc->data;
        }
        nc->next = c;
        a->head = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void *cel_arena_calloc(struct cel_arena *a, size_t n)
{
    void *p = cel_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *cel_arena_strndup(struct cel_arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = cel_arena_alloc(a, n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *cel_arena_strdup(struct cel_arena *a, const char *s)
{
    return cel_arena_strndup(a, s, strlen(s));
}

void cel_arena_reset(struct cel_arena *a)
{
    struct cel__arena_chunk *c = a->head;
    if (!c)
        return;
    /* keep the last (oldest) standard-size chunk, free the rest */
    struct cel__arena_chunk *keep = NULL;
    while (c) {
        struct cel__arena_chunk *next = c->next;
        if (!keep && !next && c->size == a->chunk_size)
            keep = c;
        else
            free(c);
        c = next;
    }
    if (keep)
        keep->used = 0;
    a->head = keep;
}

void cel_arena_free(struct cel_arena *a)
{
    struct cel__arena_chunk *c = a->head;
    while (c) {
        struct cel__arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}
