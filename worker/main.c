/* main.c: `worker`: parse options, set up logging, load services, run the supervisor. */
#include <stdio.h>
#include <stdlib.h>

#include "celeriac/broker.h"
#include "common/log.h"
#include "worker/config.h"
#include "worker/loader.h"
#include "worker/sup.h"

int main(int argc, char **argv)
{
    struct cel__wcfg cfg;
    char err[512] = "";
    int rc = cel__config_parse(&cfg, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "worker: %s\n", err);
        cel__config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    for (int i = 1; i < argc; i++)
        cel_url_scrub(argv[i]); /* the config holds copies; ps shows amqp://user:****@host */
    cel_log_setup((enum cel_log_level)cfg.loglevel, (enum cel_log_format)cfg.log_format,
                  cfg.hostname, 2);
    struct cel__registry *reg = NULL;
    rc = cel__registry_load(&reg, cfg.services, cfg.strict, NULL, err, sizeof err);
    if (rc < 0) {
        cel_log_error("cannot load services: %s", err);
        cel__config_free(&cfg);
        return 1;
    }
    if (reg->n_tasks == 0)
        cel_log_warning("no services loaded from %s: every job will fail NotRegistered",
                        cfg.services);
    rc = cel__supervisor_run(&cfg, reg);
    cel__registry_unref(reg);
    cel__config_free(&cfg);
    return rc;
}
