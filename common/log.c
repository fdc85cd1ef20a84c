/* log.c: formats one record into a stack buffer (text or JSON) and writes it in one write(2). */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define CEL__LOG_LINE 8192

static struct {
    enum cel_log_level min;
    bool json;
    int fd;
    char worker[256];
    char proc[32];
} g_log = {CEL_LOG_INFO, false, 2, "", ""};

static const char *const level_names[] = {"debug", "info", "warning", "error"};

void cel_log_setup(enum cel_log_level min, enum cel_log_format fmt, const char *worker, int fd)
{
    g_log.min = min;
    g_log.fd = fd;
    g_log.json = fmt == CEL_LOG_JSON || (fmt == CEL_LOG_AUTO && !isatty(fd));
    snprintf(g_log.worker, sizeof g_log.worker, "%s", worker ? worker : "");
}

void cel_log_set_proc(const char *proc)
{
    snprintf(g_log.proc, sizeof g_log.proc, "%s", proc ? proc : "");
}

bool cel_log_enabled(enum cel_log_level level)
{
    return level >= g_log.min;
}

int cel_log_level_parse(const char *s, enum cel_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum cel_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warn") == 0) {
        *out = CEL_LOG_WARNING;
        return 0;
    }
    return CEL_EINVAL;
}

const char *cel_log_level_name(enum cel_log_level level)
{
    return level >= CEL_LOG_DEBUG && level <= CEL_LOG_ERROR ? level_names[level] : "info";
}

/* A bounded writer over the line buffer; output past the end is dropped (truncated line). */
struct line {
    char *p;
    size_t len, cap;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len)
        n = l->cap - l->len;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void putf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct line *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->p + l->len, l->cap - l->len + 1, fmt, ap);
    va_end(ap);
    if (n > 0)
        l->len += (size_t)n > l->cap - l->len ? l->cap - l->len : (size_t)n;
}

static void put_json_str(struct line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(l, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char e[2] = {'\\', (char)*c};
            put(l, e, 2);
        } else if (*c == '\n') {
            put(l, "\\n", 2);
        } else if (*c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
            put(l, e, 6);
        } else {
            put(l, (const char *)c, 1);
        }
    }
    put(l, "\"", 1);
}

static void put_ts(struct line *l, bool json)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    putf(l, "%s%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ%s", json ? "{\"ts\":\"" : "", tm.tm_year + 1900,
         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
         json ? "\"" : "");
}

static void json_field(struct line *l, const char *key, const char *val)
{
    if (!val || !*val)
        return;
    putf(l, ",\"%s\":", key);
    put_json_str(l, val);
}

static void format_json(struct line *l, enum cel_log_level level, const struct cel_log_fields *f,
                        const char *msg)
{
    put_ts(l, true);
    putf(l, ",\"level\":\"%s\"", cel_log_level_name(level));
    json_field(l, "worker", g_log.worker);
    putf(l, ",\"pid\":%ld", (long)getpid());
    json_field(l, "proc", g_log.proc);
    if (f) {
        json_field(l, "task", f->task);
        json_field(l, "id", f->id);
        json_field(l, "queue", f->queue);
        json_field(l, "outcome", f->outcome);
        if (f->duration_ms >= 0)
            putf(l, ",\"duration_ms\":%.3f", f->duration_ms);
    }
    puts_(l, ",\"msg\":");
    put_json_str(l, msg);
    puts_(l, "}");
}

static void text_field(struct line *l, const char *key, const char *val)
{
    if (val && *val)
        putf(l, " %s=%s", key, val);
}

static void format_text(struct line *l, enum cel_log_level level, const struct cel_log_fields *f,
                        const char *msg)
{
    static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    put_ts(l, false);
    putf(l, " %s [%ld%s%s] %s", tags[level], (long)getpid(), *g_log.proc ? " " : "", g_log.proc,
         msg);
    if (f) {
        text_field(l, "task", f->task);
        text_field(l, "id", f->id);
        text_field(l, "queue", f->queue);
        text_field(l, "outcome", f->outcome);
        if (f->duration_ms >= 0)
            putf(l, " duration_ms=%.3f", f->duration_ms);
    }
}

void cel_logv(enum cel_log_level level, const struct cel_log_fields *f, const char *fmt, va_list ap)
{
    if (level < g_log.min)
        return;
    if (level > CEL_LOG_ERROR)
        level = CEL_LOG_ERROR;
    int saved = errno;
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    char buf[CEL__LOG_LINE + 1];
    struct line l = {buf, 0, CEL__LOG_LINE - 1};
    if (g_log.json)
        format_json(&l, level, f, msg);
    else
        format_text(&l, level, f, msg);
    buf[l.len++] = '\n';
    ssize_t w;
    do
        w = write(g_log.fd, buf, l.len);
    while (w < 0 && errno == EINTR);
    errno = saved;
}

void cel_log(enum cel_log_level level, const struct cel_log_fields *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cel_logv(level, f, fmt, ap);
    va_end(ap);
}
