/* bad_abi.c: a test service built for a future ABI (999); the loader must refuse it. */
#include "celeriac/service.h"

static int noop(const struct cel_host *host, struct cel_job *job, void *state)
{
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "bad_abi.noop", .handler = noop},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = 999,
    .size = sizeof(struct cel_service),
    .name = "bad_abi",
    .tasks = tasks,
};

CEL_SERVICE_EXPORT(service)
