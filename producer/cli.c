/* cli.c: the producer command line: one option table shared by every command, one command
 * table, --help generated from both, and the mapping of client errors to exit codes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celeriac/broker.h"
#include "producer/cli.h"
#include "producer/client_internal.h"

enum {
    C_SEND = 1 << 0, /* send, call */
    C_RESULT = 1 << 1,
    C_BULK = 1 << 2,
    C_REVOKE = 1 << 3,
    C_INSPECT = 1 << 4,
    C_DEAD_LS = 1 << 5,
    C_DEAD_REPLAY = 1 << 6,
    C_DEAD_PURGE = 1 << 7,
    C_PUB = C_SEND | C_BULK,
    C_ALL = 0xff,
};

enum { O_SEND, O_STR, O_FLAG };

#define F(x) offsetof(struct cel_cli, x)

static const struct cli_opt {
    const char *name;
    int has_arg;
    int kind;     /* O_SEND: a send option of the same name (libceleriac's table) */
    size_t field; /* O_STR / O_FLAG: where it goes in struct cel_cli */
    unsigned cmds;
    const char *help;
} opts[] = {
    {"queue", 1, O_SEND, 0, C_PUB, "queue to publish to (default: the task name's first part)"},
    {"task-id", 1, O_SEND, 0, C_SEND, "task id to use (default: a new uuid4)"},
    {"countdown", 1, O_SEND, 0, C_PUB, "run after this many seconds (through the delay queues)"},
    {"eta", 1, O_SEND, 0, C_PUB, "run at this ISO-8601 time, e.g. 2030-01-01T12:00:00Z"},
    {"expires", 1, O_SEND, 0, C_PUB, "discard if not started within SECONDS or by an ISO time"},
    {"priority", 1, O_SEND, 0, C_PUB, "AMQP priority 0-255"},
    {"idempotency-key", 1, O_SEND, 0, C_SEND,
     "run at most once per key (x-celeriac-idempotency-key)"},
    {"link", 1, O_SEND, 0, C_PUB, "task (or JSON signature) to call with the result; repeatable"},
    {"link-error", 1, O_SEND, 0, C_PUB, "task (or JSON signature) to call on failure; repeatable"},
    {"chain", 1, O_SEND, 0, C_SEND, "task or JSON signature(s) to run after this one; repeatable"},
    {"ignore-result", 0, O_SEND, 0, C_PUB, "do not store a SUCCESS result"},
    {"time-limit", 1, O_SEND, 0, C_PUB, "hard time limit in seconds"},
    {"soft-time-limit", 1, O_SEND, 0, C_PUB, "soft time limit in seconds"},
    {"headers", 1, O_SEND, 0, C_PUB, "extra message headers as a JSON object"},
    {"wait", 0, O_FLAG, F(wait), C_SEND | C_RESULT, "wait for the result and print it"},
    {"timeout", 1, O_STR, F(timeout), C_SEND | C_RESULT, "seconds to wait (default: forever)"},
    {"json", 0, O_FLAG, F(json), C_SEND | C_RESULT | C_INSPECT | C_DEAD_LS,
     "machine-readable JSON output"},
    {"format", 1, O_STR, F(format), C_PUB | C_REVOKE, "body format: msgpack (default) or json"},
    {"batch", 1, O_STR, F(batch), C_BULK, "messages per confirmed batch (default 500)"},
    {"ids", 1, O_STR, F(ids), C_BULK, "write the task ids to FILE, one per line"},
    {"terminate", 0, O_FLAG, F(terminate), C_REVOKE, "also kill the task if it is running"},
    {"limit", 1, O_STR, F(limit), C_DEAD_LS, "list at most N dead letters"},
    {"id", 1, O_STR, F(id), C_DEAD_REPLAY, "replay only the dead letter of this task id"},
    {"all", 0, O_FLAG, F(all), C_DEAD_REPLAY, "replay every dead letter"},
    {"broker", 1, O_STR, F(broker), C_ALL, "broker URL(s) (env CELERIAC_BROKER_URL)"},
    {"backend", 1, O_STR, F(backend), C_ALL, "result backend URL (env CELERIAC_RESULT_BACKEND)"},
    {"queue-type", 1, O_STR, F(queue_type), C_ALL,
     "declare queues as classic or quorum, like the workers (env CELERIAC_QUEUE_TYPE)"},
    {"max-priority", 1, O_STR, F(max_priority), C_ALL,
     "declare queues with x-max-priority N, like the workers (env CELERIAC_MAX_PRIORITY)"},
    {"tls-ca", 1, O_STR, F(tls_ca), C_ALL, "amqps: CA bundle file"},
    {"tls-cert", 1, O_STR, F(tls_cert), C_ALL, "amqps: client certificate (PEM)"},
    {"tls-key", 1, O_STR, F(tls_key), C_ALL, "amqps: client key (PEM)"},
    {"tls-insecure", 0, O_FLAG, F(tls_insecure), C_ALL, "amqps: skip peer verification"},
    {"signing-key-file", 1, O_STR, F(signing_key_file), C_PUB | C_DEAD_REPLAY,
     "sign messages with this HMAC key file, mode 0600 (env CELERIAC_SIGNING_KEY_FILE)"},
    {"help", 0, O_FLAG, F(help), C_ALL, "show this help"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const struct cli_cmd {
    const char *name;
    int (*fn)(struct cel_cli *c);
    unsigned mask;
    int min_pos, max_pos;
    const char *args;
    const char *help;
} cmds[] = {
    {"send", cel_cmd_send, C_SEND, 1, 3, "<task> [args-json] [kwargs-json]",
     "publish a task and print its id (or its result with --wait)"},
    {"call", cel_cmd_call, C_SEND, 1, 3, "<task> [args-json] [kwargs-json]",
     "publish a task, wait for its result and print it (send --wait)"},
    {"result", cel_cmd_result, C_RESULT, 1, 1, "<task-id>", "print a task's result or state"},
    {"bulk", cel_cmd_bulk, C_BULK, 1, 1, "<file.jsonl|->",
     "publish one task per JSON line {\"task\", \"args\", \"kwargs\", options...}"},
    {"revoke", cel_cmd_revoke, C_REVOKE, 1, 1, "<task-id>",
     "revoke a task (Redis, and Celery's pidbox broadcast)"},
    {"inspect workers", cel_cmd_inspect_workers, C_INSPECT, 0, 0, "",
     "list live workers from the registry"},
    {"inspect queues", cel_cmd_inspect_queues, C_INSPECT, 1, 16, "<queue>...",
     "show depth and consumers of queues and their dead-letter queues"},
    {"dead ls", cel_cmd_dead_ls, C_DEAD_LS, 1, 1, "<queue>",
     "list the dead letters of <queue> (they stay in <queue>.dead)"},
    {"dead replay", cel_cmd_dead_replay, C_DEAD_REPLAY, 1, 1, "<queue> --id ID | --all",
     "publish dead letters back to <queue> and remove them from <queue>.dead"},
    {"dead purge", cel_cmd_dead_purge, C_DEAD_PURGE, 1, 1, "<queue>",
     "delete every dead letter of <queue>"},
};
#define NCMDS (sizeof cmds / sizeof cmds[0])

static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

int cel_cli_fail(const struct cel_cli *c, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    one_line(msg);
    fprintf(stderr, "producer%s%s: %s\n", c->cmd ? " " : "", c->cmd ? c->cmd : "", msg);
    return code;
}

static int exit_code(int rc)
{
    switch (rc) {
    case CEL_ECONN:
    case CEL_EAUTH:
    case CEL_ETLS:
        return CEL_EXIT_CONN;
    case CEL_ETIMEDOUT:
        return CEL_EXIT_TIMEOUT;
    case CEL_EINVAL:
    case CEL_EJSON:
    case CEL_EURL:
    case CEL_ECONFIG:
    case CEL_ETOODEEP:
    case CEL_EUTF8:
        return CEL_EXIT_USAGE;
    default:
        return CEL_EXIT_FAILED;
    }
}

int cel_cli_client_fail(const struct cel_cli *c, int rc)
{
    const char *e = c->client ? cel_client_errstr(c->client) : "";
    return cel_cli_fail(c, exit_code(rc), "%s", e && *e ? e : cel_strerror(rc));
}

int cel_cli_client(struct cel_cli *c)
{
    struct cel_client_config cfg = {
        .broker_url = c->broker,
        .backend_url = c->backend,
        .tls_ca = c->tls_ca,
        .tls_cert = c->tls_cert,
        .tls_key = c->tls_key,
        .tls_insecure = c->tls_insecure,
        .format = c->send.format,
        .batch_max = c->batch_max,
        .queue_type = c->queue_type,
        .signing_key_file = c->signing_key_file,
    };
    size_t prio = 0;
    if (c->max_priority && (!cel_cli_size(c, "max-priority", c->max_priority, &prio) || prio > 255))
        return prio > 255 ? cel_cli_fail(c, CEL_EXIT_USAGE, "--max-priority: at most 255")
                          : CEL_EXIT_USAGE;
    cfg.max_priority = (int)prio;
    char err[512];
    int rc = cel_client_open(&c->client, &cfg, err, sizeof err);
    return rc ? cel_cli_fail(c, exit_code(rc), "%s", err) : 0;
}

int cel_cli_timeout_ms(const struct cel_cli *c)
{
    if (!c->timeout)
        return -1;
    char *end;
    double s = strtod(c->timeout, &end);
    if (end == c->timeout || *end || !(s >= 0) || s > 2e6) {
        cel_cli_fail(c, CEL_EXIT_USAGE, "--timeout: expected seconds, got '%s'", c->timeout);
        return -2;
    }
    return (int)(s * 1000);
}

bool cel_cli_size(const struct cel_cli *c, const char *name, const char *text, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end || *text == '-' || v > (1ull << 31)) {
        cel_cli_fail(c, CEL_EXIT_USAGE, "--%s: expected a positive integer, got '%s'", name, text);
        return false;
    }
    *out = (size_t)v;
    return true;
}

int cel_cli_print_result(struct cel_cli *c, const struct cel_client_result *r)
{
    bool failed = r->exc_type && (!strcmp(r->status, "FAILURE") || !strcmp(r->status, "REVOKED"));
    if (c->json)
        printf("%s\n", cel_client_result_json(c->client, r));
    else if (!strcmp(r->status, "SUCCESS"))
        printf("%s\n", cel_client_value_json(c->client, r));
    else if (!failed)
        printf("%s\n", r->status);
    if (failed) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s%s%s", r->exc_type, *r->exc_message ? ": " : "",
                 r->exc_message);
        one_line(msg);
        fprintf(stderr, "%s\n", msg);
    }
    fflush(stdout);
    return failed ? CEL_EXIT_FAILED : CEL_EXIT_OK;
}

/* ---- help ---- */

static void usage_cmd(FILE *f, const struct cli_cmd *cmd)
{
    fprintf(f, "usage: producer %s %s [options]\n\n%s\n\noptions:\n", cmd->name, cmd->args,
            cmd->help);
    for (size_t i = 0; i < NOPTS; i++) {
        if (!(opts[i].cmds & cmd->mask))
            continue;
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s%s", opts[i].name, opts[i].has_arg ? " VALUE" : "");
        fprintf(f, "  %-26s %s\n", lhs, opts[i].help);
    }
}

static void usage_all(FILE *f)
{
    fprintf(f, "usage: producer <command> [arguments] [options]\n\n"
               "Enqueue Celery tasks (protocol v2, msgpack) on RabbitMQ and read their results "
               "from Redis.\n\ncommands:\n");
    for (size_t i = 0; i < NCMDS; i++)
        fprintf(f, "  %-16s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f,
            "\n`producer <command> --help` lists a command's options.\n"
            "exit codes: 0 ok, 1 job failed, 2 usage, 3 connection, 4 timeout\n"
            "environment: CELERIAC_BROKER_URL (default %s),\n"
            "  CELERIAC_RESULT_BACKEND (default %s), CELERIAC_BROKER_PASSWORD,\n"
            "  CELERIAC_BROKER_URL_FILE, CELERIAC_TLS_CA/CERT/KEY\n",
            CEL_CLIENT_DEFAULT_BROKER, CEL_CLIENT_DEFAULT_BACKEND);
}

/* ---- parsing ---- */

static const struct cli_opt *find_opt(const char *name, size_t n, unsigned mask)
{
    for (size_t i = 0; i < NOPTS; i++)
        if ((opts[i].cmds & mask) && strlen(opts[i].name) == n && !strncmp(opts[i].name, name, n))
            return &opts[i];
    return NULL;
}

/* --broker / --backend: kept as a copy, so the password can be scrubbed from argv. */
static bool is_url_opt(const struct cli_opt *o)
{
    return o->kind == O_STR && (o->field == F(broker) || o->field == F(backend));
}

static int set_opt(struct cel_cli *c, const struct cli_opt *o, const char *val)
{
    char err[512];
    if (o->kind == O_SEND) {
        int rc = cel__sendopt_set_text(&c->send, &c->arena, o->name, val ? val : "true", err,
                                       sizeof err);
        return rc ? cel_cli_fail(c, CEL_EXIT_USAGE, "--%s", err) : 0;
    }
    if (is_url_opt(o) && !(val = cel_arena_strdup(&c->arena, val)))
        return cel_cli_fail(c, CEL_EXIT_FAILED, "out of memory");
    if (o->kind == O_FLAG)
        *(bool *)(void *)((char *)c + o->field) = true;
    else
        *(const char **)(void *)((char *)c + o->field) = val;
    if (o->field == F(format)) {
        if (strcmp(val, "json") && strcmp(val, "msgpack"))
            return cel_cli_fail(c, CEL_EXIT_USAGE, "--format: expected msgpack or json, got '%s'",
                                val);
        c->send.format = !strcmp(val, "json") ? CEL_CLIENT_FMT_JSON : CEL_CLIENT_FMT_MSGPACK;
    }
    return 0;
}

static int parse_opt(struct cel_cli *c, const struct cli_cmd *cmd, int argc, char **argv, int *i)
{
    const char *arg = argv[*i] + 2, *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    const struct cli_opt *o = find_opt(arg, n, cmd->mask);
    if (!o)
        return cel_cli_fail(c, CEL_EXIT_USAGE, "unknown option --%.*s (see producer %s --help)",
                            (int)n, arg, cmd->name);
    const char *val = eq ? eq + 1 : NULL;
    if (o->has_arg && !val) {
        if (*i + 1 >= argc)
            return cel_cli_fail(c, CEL_EXIT_USAGE, "option --%s needs a value", o->name);
        val = argv[++*i];
    } else if (!o->has_arg && val) {
        return cel_cli_fail(c, CEL_EXIT_USAGE, "option --%s takes no value", o->name);
    }
    int rc = set_opt(c, o, val);
    if (rc == 0 && is_url_opt(o))
        cel_url_scrub(argv[*i]); /* ps shows amqp://user:****@host */
    return rc;
}

static int parse_args(struct cel_cli *c, const struct cli_cmd *cmd, int argc, char **argv,
                      int first)
{
    bool opts_done = false;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        int rc = 0;
        if (!opts_done && !strcmp(a, "--"))
            opts_done = true;
        else if (!opts_done && a[0] == '-' && a[1] == '-')
            rc = parse_opt(c, cmd, argc, argv, &i);
        else if (!opts_done && a[0] == '-' && a[1] && !strchr("0123456789.[{", a[1]))
            rc = cel_cli_fail(c, CEL_EXIT_USAGE, "unknown option %s (see producer %s --help)", a,
                              cmd->name);
        else if (c->npos >= cmd->max_pos || c->npos >= 16)
            rc = cel_cli_fail(c, CEL_EXIT_USAGE, "unexpected argument '%s' (usage: producer %s %s)",
                              a, cmd->name, cmd->args);
        else
            c->pos[c->npos++] = a;
        if (rc)
            return rc;
    }
    if (!c->help && c->npos < cmd->min_pos)
        return cel_cli_fail(c, CEL_EXIT_USAGE, "missing argument (usage: producer %s %s)",
                            cmd->name, cmd->args);
    return 0;
}

/* The command named by argv[1] (and argv[2] for two-word commands); *used = words consumed. */
static const struct cli_cmd *find_cmd(int argc, char **argv, int *used, bool *group)
{
    *group = false;
    for (size_t i = 0; i < NCMDS; i++) {
        const char *sp = strchr(cmds[i].name, ' ');
        size_t n = sp ? (size_t)(sp - cmds[i].name) : strlen(cmds[i].name);
        if (strlen(argv[1]) != n || strncmp(argv[1], cmds[i].name, n))
            continue;
        *group = sp != NULL;
        if (!sp) {
            *used = 2;
            return &cmds[i];
        }
        if (argc > 2 && !strcmp(argv[2], sp + 1)) {
            *used = 3;
            return &cmds[i];
        }
    }
    return NULL;
}

static int group_help(FILE *f, const char *group)
{
    fprintf(f, "usage: producer %s <subcommand> ...\n\nsubcommands:\n", group);
    for (size_t i = 0; i < NCMDS; i++)
        if (!strncmp(cmds[i].name, group, strlen(group)) && cmds[i].name[strlen(group)] == ' ')
            fprintf(f, "  %-16s %s\n", cmds[i].name, cmds[i].help);
    return 0;
}

static int run(struct cel_cli *c, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage_all(argc < 2 ? stderr : stdout);
        return argc < 2 ? CEL_EXIT_USAGE : CEL_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("producer (celeriac) %s\n", CEL_VERSION_STRING);
        return CEL_EXIT_OK;
    }
    int used = 0;
    bool group = false;
    const struct cli_cmd *cmd = find_cmd(argc, argv, &used, &group);
    if (!cmd && group) {
        bool help = argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"));
        if (help)
            return group_help(stdout, argv[1]);
        group_help(stderr, argv[1]);
        c->cmd = argv[1];
        return cel_cli_fail(c, CEL_EXIT_USAGE, "unknown or missing subcommand '%s'",
                            argc > 2 ? argv[2] : "");
    }
    if (!cmd)
        return cel_cli_fail(c, CEL_EXIT_USAGE, "unknown command '%s' (see producer --help)",
                            argv[1]);
    c->cmd = cmd->name;
    int rc = parse_args(c, cmd, argc, argv, used);
    if (rc)
        return rc;
    if (c->help) {
        usage_cmd(stdout, cmd);
        return CEL_EXIT_OK;
    }
    return cmd->fn(c);
}

int main(int argc, char **argv)
{
    struct cel_cli c;
    memset(&c, 0, sizeof c);
    cel_arena_init(&c.arena, 4096);
    int code = run(&c, argc, argv);
    fflush(stdout);
    cel_client_free(c.client);
    cel_arena_free(&c.arena);
    return code;
}
