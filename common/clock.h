/* clock.h: wall and monotonic time, and ISO-8601 as Celery writes and reads it. */
#ifndef CEL_COMMON_CLOCK_H
#define CEL_COMMON_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#define CEL_USEC_PER_SEC INT64_C(1000000)

/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t cel_now_us(void);
/* Monotonic microseconds (CLOCK_MONOTONIC), for timeouts and durations. */
int64_t cel_mono_us(void);

/* Formats us as "YYYY-MM-DDTHH:MM:SS.ffffff" (always 6 fractional digits, Celery's date_done)
 * and, when aware, with "+00:00" appended (eta/expires). out needs 33 bytes. Returns length. */
size_t cel_iso8601_format(int64_t us, int aware, char out[static 33]);

/* Parses Celery's accepted forms: YYYY-MM-DD[T ]HH:MM[:SS[.f{1,6}]][Z|+HH:MM|-HH:MM|+HHMM].
 * Naive values are UTC. As in Celery's parse_iso8601 the fraction is read as an integer number
 * of microseconds (".5" is 5 us) and more than 6 digits is an error. Returns 0 or CEL_ETIME. */
int cel_iso8601_parse(const char *s, size_t len, int64_t *us);

#endif
