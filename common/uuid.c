/* uuid.c: uuid4 from getrandom(2), with a non-blocking fallback if the kernel refuses. */
#include "common/uuid.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Only used when getrandom fails (e.g. seccomp): time, pid and a counter, well mixed. */
static void fallback_bytes(unsigned char b[16])
{
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    s ^= (uint64_t)getpid() << 32 ^ counter++;
    uint64_t a = splitmix64(&s), c = splitmix64(&s);
    memcpy(b, &a, 8);
    memcpy(b + 8, &c, 8);
}

static void random_bytes(unsigned char b[16])
{
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom(b + got, 16 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fallback_bytes(b);
            return;
        }
        got += (size_t)n;
    }
}

void cel_uuid4(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    random_bytes(b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}
