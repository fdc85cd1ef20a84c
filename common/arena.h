/* arena.h: a bump allocator. A job's memory comes from one arena, released in one place. */
#ifndef CEL_COMMON_ARENA_H
#define CEL_COMMON_ARENA_H

#include <stddef.h>

struct cel__arena_chunk;

struct cel_arena {
    struct cel__arena_chunk *head; /* current chunk, most recent first */
    size_t chunk_size;             /* default size of new chunks */
};

/* Initialise an empty arena; no memory is taken until the first allocation. */
void cel_arena_init(struct cel_arena *a, size_t chunk_size);
/* 16-byte aligned memory valid until reset/free; NULL only on OOM. */
void *cel_arena_alloc(struct cel_arena *a, size_t n);
void *cel_arena_calloc(struct cel_arena *a, size_t n);
/* A NUL-terminated copy of s[0..n) in the arena; NULL only on OOM. */
char *cel_arena_strndup(struct cel_arena *a, const char *s, size_t n);
char *cel_arena_strdup(struct cel_arena *a, const char *s);
/* Release every allocation but keep the first chunk for reuse (per-job reset). */
void cel_arena_reset(struct cel_arena *a);
/* Release everything. The arena may be reused after cel_arena_init. */
void cel_arena_free(struct cel_arena *a);

#endif
