/* bad_prefix.c: a test service with a well-formed task name that does not start with its own
 * service name ("other.task" in service "bad_prefix"); the loader must refuse it. */
#include "celeriac/service.h"

static int noop(const struct cel_host *host, struct cel_job *job, void *state)
{
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "other.task", .handler = noop},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_service),
    .name = "bad_prefix",
    .tasks = tasks,
};

CEL_SERVICE_EXPORT(service)
