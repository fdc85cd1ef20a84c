/* clock.c: time sources and the ISO-8601 subset Celery writes (isoformat) and reads
 * (celery.utils.iso8601.parse_iso8601), in proleptic Gregorian UTC. */
#include "common/clock.h"

#include <stdbool.h>
#include <time.h>

#include "celeriac/celeriac.h"

#define US_PER_DAY (INT64_C(86400) * CEL_USEC_PER_SEC)
/* 0001-01-01T00:00:00 and 9999-12-31T23:59:59.999999 */
#define MIN_US (INT64_C(-62135596800) * CEL_USEC_PER_SEC)
#define MAX_US (INT64_C(253402300800) * CEL_USEC_PER_SEC - 1)

static int64_t ts_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * CEL_USEC_PER_SEC + ts.tv_nsec / 1000;
}

int64_t cel_now_us(void)
{
    return ts_us(CLOCK_REALTIME);
}

int64_t cel_mono_us(void)
{
    return ts_us(CLOCK_MONOTONIC);
}

/* Howard Hinnant's days_from_civil / civil_from_days. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static char *put_digits(char *o, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

size_t cel_iso8601_format(int64_t us, int aware, char out[static 33])
{
    us = us < MIN_US ? MIN_US : us > MAX_US ? MAX_US : us;
    int64_t days = us / US_PER_DAY, rem = us % US_PER_DAY;
    if (rem < 0) {
        rem += US_PER_DAY;
        days--;
    }
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    int64_t secs = rem / CEL_USEC_PER_SEC;
    char *o = put_digits(out, y, 4);
    *o++ = '-';
    o = put_digits(o, m, 2);
    *o++ = '-';
    o = put_digits(o, d, 2);
    *o++ = 'T';
    o = put_digits(o, secs / 3600, 2);
    *o++ = ':';
    o = put_digits(o, secs / 60 % 60, 2);
    *o++ = ':';
    o = put_digits(o, secs % 60, 2);
    *o++ = '.';
    o = put_digits(o, rem % CEL_USEC_PER_SEC, 6);
    if (aware) {
        const char tz[] = "+00:00";
        for (size_t i = 0; i < sizeof tz - 1; i++)
            *o++ = tz[i];
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* ---- parsing ---- */

struct cur {
    const char *p, *end;
};

/* Exactly n decimal digits. */
static bool digits(struct cur *c, int n, int *v)
{
    if (c->end - c->p < n)
        return false;
    int x = 0;
    for (int i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)c->p[i];
        if (ch < '0' || ch > '9')
            return false;
        x = x * 10 + (ch - '0');
    }
    c->p += n;
    *v = x;
    return true;
}

static bool lit(struct cur *c, char ch)
{
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : dim[m - 1];
}

/* ".f{1,6}" read as an integer count of microseconds, like Celery. */
static bool fraction(struct cur *c, int *us)
{
    *us = 0;
    if (!lit(c, '.'))
        return true;
    int n = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (++n > 6)
            return false;
        *us = *us * 10 + (*c->p++ - '0');
    }
    return n > 0;
}

/* Z, +HH:MM, -HH:MM, +HHMM, -HHMM or nothing (naive = UTC); offset in seconds east. */
static bool tz_offset(struct cur *c, int *off)
{
    *off = 0;
    if (c->p == c->end || lit(c, 'Z'))
        return true;
    int sign = *c->p == '+' ? 1 : *c->p == '-' ? -1 : 0;
    if (!sign)
        return false;
    c->p++;
    int hh, mm;
    if (!digits(c, 2, &hh))
        return false;
    lit(c, ':');
    if (!digits(c, 2, &mm) || hh > 23 || mm > 59)
        return false;
    *off = sign * (hh * 3600 + mm * 60);
    return true;
}

int cel_iso8601_parse(const char *s, size_t len, int64_t *us)
{
    struct cur c = {s, s + len};
    int y, mo, d, h, mi, sec = 0, frac = 0, off = 0;
    if (!digits(&c, 4, &y) || !lit(&c, '-') || !digits(&c, 2, &mo) || !lit(&c, '-') ||
        !digits(&c, 2, &d))
        return CEL_ETIME;
    if (!lit(&c, 'T') && !lit(&c, ' '))
        return CEL_ETIME;
    if (!digits(&c, 2, &h) || !lit(&c, ':') || !digits(&c, 2, &mi))
        return CEL_ETIME;
    if (lit(&c, ':') && (!digits(&c, 2, &sec) || !fraction(&c, &frac)))
        return CEL_ETIME;
    if (!tz_offset(&c, &off) || c.p != c.end)
        return CEL_ETIME;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 ||
        sec > 59)
        return CEL_ETIME;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
    *us = secs * CEL_USEC_PER_SEC + frac;
    return 0;
}
