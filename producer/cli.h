/* cli.h: the producer CLI's shared state: parsed options, the command table, exit codes. */
#ifndef CEL_PRODUCER_CLI_H
#define CEL_PRODUCER_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "celeriac/client.h"
#include "common/arena.h"

enum cel_cli_exit {
    CEL_EXIT_OK = 0,
    CEL_EXIT_FAILED = 1,  /* the job failed (or an operation failed) */
    CEL_EXIT_USAGE = 2,   /* bad arguments, bad JSON, unknown option; bulk: a bad line */
    CEL_EXIT_CONN = 3,    /* broker or Redis unreachable */
    CEL_EXIT_TIMEOUT = 4, /* --wait ran out of --timeout */
};

struct cel_cli {
    const char *cmd;     /* "send", "dead replay", ... for messages */
    const char *pos[16]; /* positional arguments after the command */
    int npos;

    /* CLI-only options (the send options go straight into send) */
    const char *broker, *backend, *format;
    const char *tls_ca, *tls_cert, *tls_key;
    const char *signing_key_file;
    const char *queue_type, *max_priority;
    bool tls_insecure;
    bool wait, json, terminate, all, help;
    const char *timeout; /* seconds, parsed by the command */
    const char *batch, *limit, *id, *ids;
    size_t batch_max; /* client auto-flush threshold; 0 = default */

    struct cel_send_opts send;
    struct cel_arena arena; /* option strings and signatures */
    struct cel_client *client;
};

/* Prints "producer <cmd>: <message>" as one line on stderr and returns code. */
int cel_cli_fail(const struct cel_cli *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reports a client error (cel_client_errstr) and maps the status to an exit code. */
int cel_cli_client_fail(const struct cel_cli *c, int rc);
/* Opens the client from the options; exit code on failure. */
int cel_cli_client(struct cel_cli *c);
/* "--timeout" in ms (-1 = forever); -2 = invalid (reported). */
int cel_cli_timeout_ms(const struct cel_cli *c);
/* Parses a non-negative integer option; false (reported) when bad. */
bool cel_cli_size(const struct cel_cli *c, const char *name, const char *text, size_t *out);
/* Prints a result per the options (value, --json, or the exception on stderr); exit code. */
int cel_cli_print_result(struct cel_cli *c, const struct cel_client_result *r);

int cel_cmd_send(struct cel_cli *c);
int cel_cmd_call(struct cel_cli *c);
int cel_cmd_result(struct cel_cli *c);
int cel_cmd_bulk(struct cel_cli *c);
int cel_cmd_revoke(struct cel_cli *c);
int cel_cmd_inspect_workers(struct cel_cli *c);
int cel_cmd_inspect_queues(struct cel_cli *c);
int cel_cmd_dead_ls(struct cel_cli *c);
int cel_cmd_dead_replay(struct cel_cli *c);
int cel_cmd_dead_purge(struct cel_cli *c);

#endif
