/* latency.c: sequential send-and-wait round trips through libceleriac (publish with confirm,
 * the worker runs bench.noop, the result is stored and published, the client wakes up).
 *   latency QUEUE N     prints {"p50_ms", "p90_ms", "p99_ms"} as JSON */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "celeriac/client.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: latency QUEUE N\n");
        return 2;
    }
    long n = atol(argv[2]);
    if (n <= 0)
        return 2;
    char err[256];
    struct cel_client *c;
    struct cel_client_config cfg = {0};
    if (cel_client_open(&c, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "latency: %s\n", err);
        return 3;
    }
    double *lat = calloc((size_t)n, sizeof *lat);
    struct cel_send_opts o = {.queue = argv[1]};
    for (long i = 0; i < n; i++) {
        char id[37], args[32];
        snprintf(args, sizeof args, "[%ld]", i);
        double t0 = now_s();
        struct cel_client_result r;
        if (cel_client_send_json(c, "bench.noop", args, NULL, &o, id) != 0 ||
            cel_client_result_wait(c, id, 30000, &r) != 0) {
            fprintf(stderr, "latency: %s\n", cel_client_errstr(c));
            return 1;
        }
        lat[i] = now_s() - t0;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("{\"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f}\n", lat[n / 2] * 1e3,
           lat[n * 9 / 10] * 1e3, lat[n * 99 / 100] * 1e3);
    free(lat);
    cel_client_free(c);
    return 0;
}
