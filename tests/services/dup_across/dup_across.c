/* dup_across.c: a test service that is valid on its own but declares "bench.noop", which
 * services/bench declares too. Its service name is "bench" so that the name is well-formed
 * ("<service>.<name>"); loading it next to bench.so must fail as a duplicate (of the task, and
 * of the service name), naming both files. */
#include "celeriac/service.h"

static int noop(const struct cel_host *host, struct cel_job *job, void *state)
{
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "bench.noop", .handler = noop},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_service),
    .name = "bench",
    .tasks = tasks,
};

CEL_SERVICE_EXPORT(service)
