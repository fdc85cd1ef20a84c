/* amqp_internal.h: the pieces of the rabbitmq-c adapter that are pure and tested on their own:
 * header table conversion and the delay-level routing. */
#ifndef CEL_BROKER_AMQP_INTERNAL_H
#define CEL_BROKER_AMQP_INTERNAL_H

#include <amqp.h>
#include <stdint.h>

#include "celeriac/broker.h"
#include "common/arena.h"
#include "common/value.h"

extern const struct cel_broker_class cel__amqp_broker_class;

#define CEL_AMQP_MAX_DEPTH 32 /* nesting of arrays/tables in headers, both directions */

/* cel_table -> amqp_table_t following the spec 1.3 type rules (S, I/L, d, t, V, A, F, x).
 * Entries come from pool; strings are borrowed from in. CEL_EUNSUPPORTED for an unsigned
 * value above INT64_MAX, CEL_ETOODEEP past CEL_AMQP_MAX_DEPTH. */
int cel__amqp_table_from_cel(const struct cel_table *in, amqp_table_t *out, amqp_pool_t *pool);

/* amqp_table_t -> cel_table accepting every field kind; everything is copied into a. */
/* With deep_key non-NULL, a top-level header nested past CEL_AMQP_MAX_DEPTH becomes VOID and
 * *deep_key names it (the other headers are kept); otherwise that is CEL_ETOODEEP. */
int cel__amqp_table_to_cel(const amqp_table_t *in, struct cel_table *out, struct cel_arena *a,
                           const char **deep_key);

#define CEL_DELAY_LEVELS 28
#define CEL_DELAY_MAX ((1u << CEL_DELAY_LEVELS) - 1)
#define CEL_DELAY_DELIVER "celeriac.delay.deliver"

/* The exchange ("celeriac.delay.<highest set bit>") and routing key (28 dot-separated bits, most
 * significant first, then ".<queue>") of a delayed message. CEL_EINVAL for 0 or > CEL_DELAY_MAX,
 * CEL_ETOOBIG when the key does not fit. */
int cel__amqp_delay_route(uint32_t delay_s, const char *queue, char *exchange, size_t exlen,
                          char *rk, size_t rklen);

/* The binding pattern selecting messages whose bit `level` is `bit` ('0' or '1'): 28 words,
 * `*` except at that bit, then ".#". */
void cel__amqp_delay_pattern(int level, char bit, char *out, size_t outlen);

/* The binding of a target queue to CEL_DELAY_DELIVER: 28 `*` words then ".<queue>", so that a
 * queue named like the dotted tail of another queue's name does not receive its messages. */
int cel__amqp_delay_queue_pattern(const char *queue, char *out, size_t outlen);

#endif
