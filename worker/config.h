/* config.h: the worker's settings and their command-line/environment parser. Every option is
 * one row of a table ({name, env, type, offset, help}); flags override CELERIAC_* environment
 * variables, which override the defaults. */
#ifndef CEL_WORKER_CONFIG_H
#define CEL_WORKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/log.h"
#include "common/sign.h"

enum cel__pool { CEL__POOL_PREFORK = 0, CEL__POOL_SOLO = 1 };
enum cel__queue_type { CEL__QUEUE_CLASSIC = 0, CEL__QUEUE_QUORUM = 1 };
enum cel__result_fmt { CEL__RESFMT_AUTO = 0, CEL__RESFMT_MSGPACK = 1, CEL__RESFMT_JSON = 2 };

struct cel__wcfg {
    char *queues; /* comma-separated list as given */
    int concurrency;
    int pool; /* enum cel__pool */
    char *services;
    char *broker;
    char *backend;
    int prefetch_multiplier;
    char *hostname;
    int loglevel;              /* enum cel_log_level */
    int log_format;            /* enum cel_log_format */
    int max_tasks_per_child;   /* 0 = unlimited */
    long max_memory_per_child; /* KB; 0 = unlimited */
    int max_crashes;
    double time_limit;      /* 0 = none */
    double soft_time_limit; /* 0 = none */
    double shutdown_timeout;
    int result_expires;
    int result_format; /* enum cel__result_fmt */
    bool strict;
    long max_message_size; /* bytes; 0 = the codec's default */
    long max_nesting;      /* arrays/maps in a message; 0 = the codec's default (64) */
    long max_items;        /* elements of one array/map; 0 = the codec's default */
    long max_string;       /* bytes of one string; 0 = the codec's default */
    long max_result_size;  /* bytes of a handler's packed result; 0 = unlimited */
    char *signing_key_file;
    bool require_signature;
    char *tls_ca, *tls_cert, *tls_key;
    bool tls_insecure;
    int metrics_port;   /* 0 = no metrics server */
    char *metrics_bind; /* NULL = 127.0.0.1 */
    int queue_type;     /* enum cel__queue_type */
    int delivery_limit; /* quorum queues: x-delivery-limit; 0 = none */
    int max_priority;   /* > 0: x-max-priority on declared queues */

    /* derived by cel__config_parse */
    char **queue_list;
    size_t n_queues;
    unsigned char signing_key[CEL_SIGN_KEY_MAX]; /* loaded from signing_key_file */
    size_t signing_key_len;                      /* 0 = no key: nothing is signed */
};

/* Fills cfg from defaults, the environment and argv. Returns 0 to run, 1 when --help or
 * --version was printed (exit 0), or CEL_EINVAL with one line in err (exit 2). */
int cel__config_parse(struct cel__wcfg *cfg, int argc, char **argv, char *err, size_t errlen);
void cel__config_free(struct cel__wcfg *cfg);
/* Writes the option reference (worker --help). */
void cel__config_usage(FILE *out);

#endif
