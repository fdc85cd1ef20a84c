/* log.h: one-line logs for the worker and the producer: text on a TTY, JSON lines otherwise.
 * Each record is written with a single write(2) so lines from several processes (prefork
 * children share stderr) never interleave. Never pass a secret: redact URLs first
 * (cel_url_redact). */
#ifndef CEL_COMMON_LOG_H
#define CEL_COMMON_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "celeriac/service.h" /* enum cel_log_level */

enum cel_log_format { CEL_LOG_AUTO = 0, CEL_LOG_TEXT = 1, CEL_LOG_JSON = 2 };

/* Optional structured fields of a record; NULL strings and negative durations are omitted. */
struct cel_log_fields {
    const char *task;
    const char *id;
    const char *queue;
    const char *outcome;
    double duration_ms; /* < 0 = absent; write CEL_LOG_NO_DURATION */
};
#define CEL_LOG_NO_DURATION (-1.0)

/* Process-wide setup: minimum level, format (AUTO = text when fd is a TTY), the "worker"
 * field (copied; NULL = none), and the fd to write to (normally 2). */
void cel_log_setup(enum cel_log_level min, enum cel_log_format fmt, const char *worker, int fd);
/* Changes only the process name shown (e.g. "child-3" after fork); copied. */
void cel_log_set_proc(const char *proc);
bool cel_log_enabled(enum cel_log_level level);
/* Parses "debug|info|warning|error" (also "warn"); 0 or CEL_EINVAL. */
int cel_log_level_parse(const char *s, enum cel_log_level *out);
const char *cel_log_level_name(enum cel_log_level level);

/* Writes one record. f may be NULL. */
void cel_log(enum cel_log_level level, const struct cel_log_fields *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cel_logv(enum cel_log_level level, const struct cel_log_fields *f, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define cel_log_debug(...) cel_log(CEL_LOG_DEBUG, NULL, __VA_ARGS__)
#define cel_log_info(...) cel_log(CEL_LOG_INFO, NULL, __VA_ARGS__)
#define cel_log_warning(...) cel_log(CEL_LOG_WARNING, NULL, __VA_ARGS__)
#define cel_log_error(...) cel_log(CEL_LOG_ERROR, NULL, __VA_ARGS__)

#endif
