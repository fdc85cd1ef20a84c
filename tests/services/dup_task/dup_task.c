/* dup_task.c: a test service declaring the same task name twice; the loader must refuse it. */
#include "celeriac/service.h"

static int noop(const struct cel_host *host, struct cel_job *job, void *state)
{
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "dup_task.same", .handler = noop},
    {.name = "dup_task.other", .handler = noop},
    {.name = "dup_task.same", .handler = noop},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_service),
    .name = "dup_task",
    .tasks = tasks,
};

CEL_SERVICE_EXPORT(service)
