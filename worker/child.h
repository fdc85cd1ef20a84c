/* child.h: a prefork child: reads one job frame at a time from its socket, runs the handler,
 * writes one reply frame. Never outlives the supervisor (PR_SET_PDEATHSIG). */
#ifndef CEL_WORKER_CHILD_H
#define CEL_WORKER_CHILD_H

#include <sys/types.h>

#include "worker/loader.h"

struct cel__child_opts {
    int index; /* for log lines */
    const char *hostname;
    long max_memory_kb; /* RLIMIT_AS; 0 = none */
    pid_t parent;
    long max_result; /* --max-result-size; 0 = unlimited */
};

/* Runs in the forked child with its end of the socketpair; never returns. */
void cel__child_main(int fd, struct cel__registry *reg, const struct cel__child_opts *o)
    __attribute__((noreturn));

#endif
