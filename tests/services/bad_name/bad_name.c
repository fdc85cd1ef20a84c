/* bad_name.c: a test service with a task name outside the allowed alphabet ("<service>.<name>"
 * of letters, digits, '_', '.', '-'): it has the right prefix, so only the characters are
 * wrong. The loader must refuse it. */
#include "celeriac/service.h"

static int noop(const struct cel_host *host, struct cel_job *job, void *state)
{
    return 0;
}

static const struct cel_task_def tasks[] = {
    {.name = "bad_name.ok", .handler = noop},
    {.name = "bad_name.bad name!", .handler = noop},
    {.name = NULL},
};

static const struct cel_service service = {
    .abi = CEL_SERVICE_ABI,
    .size = sizeof(struct cel_service),
    .name = "bad_name",
    .tasks = tasks,
};

CEL_SERVICE_EXPORT(service)
