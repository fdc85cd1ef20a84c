/* bad_size.c: a test service whose descriptor claims to be smaller than struct cel_service
 * (as an older, truncated layout would); the loader must refuse it. */
#include <stddef.h>

#include "celeriac/service.h"

static int noop(const struct cel_host *host, struct cel_job *job, void *state)
{
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "bad_size.noop", .handler = noop},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = offsetof(struct cel_service, tasks),
    .name = "bad_size",
    .tasks = tasks,
};

CEL_SERVICE_EXPORT(service)
