/* options.c: the worker's option table, parsed from defaults, CELERIAC_* environment variables
 * and argv (in that order of increasing precedence). */
#include "worker/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "celeriac/celeriac.h"
#include "common/amqp_url.h"

enum opt_type { OPT_STR, OPT_INT, OPT_LONG, OPT_DOUBLE, OPT_BOOL, OPT_CHOICE, OPT_LEVEL };

struct opt {
    const char *name; /* long flag without "--" */
    char short_name;  /* 0 = none */
    const char *env;
    enum opt_type type;
    size_t offset;
    double min;          /* numeric lower bound */
    const char *choices; /* OPT_CHOICE: "a|b|c", stored as the index */
    const char *arg;     /* placeholder in --help */
    const char *help;
};

#define OFF(f) offsetof(struct cel__wcfg, f)

static const struct opt opts[] = {
    {"queue", 'Q', "CELERIAC_QUEUE", OPT_STR, OFF(queues), 0, NULL, "Q[,Q...]",
     "queues to consume (required); a task 'svc.x' is sent to queue 'svc' by default"},
    {"concurrency", 'c', "CELERIAC_CONCURRENCY", OPT_INT, OFF(concurrency), 1, NULL, "N",
     "child processes (default: number of CPUs)"},
    {"pool", 'P', "CELERIAC_POOL", OPT_CHOICE, OFF(pool), 0, "prefork|solo", "POOL",
     "prefork: forked, crash-isolated children (default); solo: run handlers in the worker "
     "process (fastest; a crash kills the worker; hard time limits cannot be enforced)"},
    {"services", 0, "CELERIAC_SERVICES", OPT_STR, OFF(services), 0, NULL, "DIR",
     "directory of service .so files (default: <exe dir>/../services)"},
    {"broker", 'b', "CELERIAC_BROKER_URL", OPT_STR, OFF(broker), 0, NULL, "URL",
     "broker URL, e.g. amqp://guest:guest@127.0.0.1:5672// (comma-separated list = failover); "
     "keep passwords out of argv: CELERIAC_BROKER_URL_FILE or CELERIAC_BROKER_PASSWORD"},
    {"backend", 0, "CELERIAC_RESULT_BACKEND", OPT_STR, OFF(backend), 0, NULL, "URL",
     "result backend URL, redis://host:port/db (password: CELERIAC_REDIS_PASSWORD)"},
    {"prefetch-multiplier", 0, "CELERIAC_PREFETCH_MULTIPLIER", OPT_INT, OFF(prefetch_multiplier), 1,
     NULL, "M",
     "prefetch = concurrency x M (default 4, and then at least 64 so a batch of finished jobs "
     "being stored does not starve the children); solo: 64 x M, as it runs jobs in batches"},
    {"hostname", 'n', "CELERIAC_HOSTNAME", OPT_STR, OFF(hostname), 0, NULL, "NAME",
     "node name (default celeriac@<host>)"},
    {"loglevel", 'l', "CELERIAC_LOGLEVEL", OPT_LEVEL, OFF(loglevel), 0, NULL, "LEVEL",
     "debug|info|warning|error (default info)"},
    {"log-format", 0, "CELERIAC_LOG_FORMAT", OPT_CHOICE, OFF(log_format), 0, "auto|text|json",
     "FMT", "text|json (default: text on a TTY, JSON lines otherwise)"},
    {"max-tasks-per-child", 0, "CELERIAC_MAX_TASKS_PER_CHILD", OPT_INT, OFF(max_tasks_per_child), 0,
     NULL, "N", "replace a child after N jobs (0 = never)"},
    {"max-memory-per-child", 0, "CELERIAC_MAX_MEMORY_PER_CHILD", OPT_LONG,
     OFF(max_memory_per_child), 0, NULL, "KB",
     "address-space limit of each child (RLIMIT_AS); exceeding it is a crash (0 = none)"},
    {"max-crashes", 0, "CELERIAC_MAX_CRASHES", OPT_INT, OFF(max_crashes), 1, NULL, "N",
     "crashes of one task id before it fails with WorkerLostError and is dead-lettered "
     "(default 3)"},
    {"time-limit", 0, "CELERIAC_TIME_LIMIT", OPT_DOUBLE, OFF(time_limit), 0, NULL, "S",
     "hard time limit: the child is killed, the job fails TimeLimitExceeded (0 = none)"},
    {"soft-time-limit", 0, "CELERIAC_SOFT_TIME_LIMIT", OPT_DOUBLE, OFF(soft_time_limit), 0, NULL,
     "S", "soft time limit: the handler sees deadline_passed() (0 = none)"},
    {"shutdown-timeout", 0, "CELERIAC_SHUTDOWN_TIMEOUT", OPT_DOUBLE, OFF(shutdown_timeout), 0, NULL,
     "S", "warm shutdown: seconds to let running jobs finish (default 60)"},
    {"result-expires", 0, "CELERIAC_RESULT_EXPIRES", OPT_INT, OFF(result_expires), 1, NULL, "S",
     "TTL of stored results in seconds (default 86400)"},
    {"result-format", 0, "CELERIAC_RESULT_FORMAT", OPT_CHOICE, OFF(result_format), 0,
     "auto|msgpack|json", "FMT",
     "serializer of stored results; auto = the format the task arrived in (default)"},
    {"strict", 0, "CELERIAC_STRICT", OPT_BOOL, OFF(strict), 0, NULL, NULL,
     "a service that fails to load aborts startup"},
    {"max-message-size", 0, "CELERIAC_MAX_MESSAGE_SIZE", OPT_LONG, OFF(max_message_size), 0, NULL,
     "B", "largest accepted message body in bytes (default 16 MiB)"},
    {"max-nesting", 0, "CELERIAC_MAX_NESTING", OPT_LONG, OFF(max_nesting), 1, NULL, "N",
     "deepest nesting of arrays/maps accepted in a message (default 64)"},
    {"max-items", 0, "CELERIAC_MAX_ITEMS", OPT_LONG, OFF(max_items), 1, NULL, "N",
     "most elements of one array or map accepted in a message (default 1000000)"},
    {"max-string", 0, "CELERIAC_MAX_STRING", OPT_LONG, OFF(max_string), 1, NULL, "B",
     "longest string accepted in a message, in bytes (default 8 MiB)"},
    {"max-result-size", 0, "CELERIAC_MAX_RESULT_SIZE", OPT_LONG, OFF(max_result_size), 0, NULL, "B",
     "largest handler result in bytes (packed); a larger one fails the job with "
     "celeriac.ResultTooLarge instead of being stored (default 1 MiB; 0 = unlimited)"},
    {"signing-key-file", 0, "CELERIAC_SIGNING_KEY_FILE", OPT_STR, OFF(signing_key_file), 0, NULL,
     "FILE",
     "HMAC-SHA256 key (mode 0600, >= 16 bytes): messages this worker publishes (retries, "
     "canvas follow-ups, enqueues) are signed with it"},
    {"require-signature", 0, "CELERIAC_REQUIRE_SIGNATURE", OPT_BOOL, OFF(require_signature), 0,
     NULL, NULL,
     "dead-letter, unrun, every job without a valid x-celeriac-signature (needs "
     "--signing-key-file)"},
    {"tls-ca", 0, "CELERIAC_TLS_CA", OPT_STR, OFF(tls_ca), 0, NULL, "FILE",
     "amqps: CA bundle that signs the broker's certificate (default: the system's)"},
    {"tls-cert", 0, "CELERIAC_TLS_CERT", OPT_STR, OFF(tls_cert), 0, NULL, "FILE",
     "amqps: client certificate (PEM)"},
    {"tls-key", 0, "CELERIAC_TLS_KEY", OPT_STR, OFF(tls_key), 0, NULL, "FILE",
     "amqps: client private key (PEM)"},
    {"tls-insecure", 0, "CELERIAC_TLS_INSECURE", OPT_BOOL, OFF(tls_insecure), 0, NULL, NULL,
     "amqps: do not verify the broker's certificate and host name (testing only)"},
    {"queue-type", 0, "CELERIAC_QUEUE_TYPE", OPT_CHOICE, OFF(queue_type), 0, "classic|quorum", "T",
     "declare the queues classic (default) or quorum (replicated; every client declaring them "
     "must agree, e.g. producer --queue-type)"},
    {"delivery-limit", 0, "CELERIAC_DELIVERY_LIMIT", OPT_INT, OFF(delivery_limit), 0, NULL, "N",
     "quorum queues: x-delivery-limit, deliveries of one message before RabbitMQ drops it "
     "(0 = none, the default)"},
    {"max-priority", 0, "CELERIAC_MAX_PRIORITY", OPT_INT, OFF(max_priority), 0, NULL, "N",
     "declare the queues with x-max-priority N so AMQP priorities apply (0 = none, the default; "
     "every client declaring them must agree, e.g. producer --max-priority)"},
    {"metrics-port", 0, "CELERIAC_METRICS_PORT", OPT_INT, OFF(metrics_port), 0, NULL, "P",
     "serve Prometheus /metrics, /healthz and /readyz on this port (0 = off, the default)"},
    {"metrics-bind", 0, "CELERIAC_METRICS_BIND", OPT_STR, OFF(metrics_bind), 0, NULL, "ADDR",
     "IPv4 address the metrics server listens on (default 127.0.0.1; 0.0.0.0 = all)"},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return CEL_EINVAL;
}

static int choice_index(const char *choices, const char *val)
{
    size_t vl = strlen(val);
    int i = 0;
    for (const char *p = choices; *p; i++) {
        size_t n = strcspn(p, "|");
        if (n == vl && strncasecmp(p, val, n) == 0)
            return i;
        p += n + (p[n] == '|');
    }
    return -1;
}

static int parse_number(const struct opt *o, const char *val, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(d) || d < o->min)
        return CEL_EINVAL;
    if (o->type != OPT_DOUBLE && (d != floor(d) || d > (o->type == OPT_INT ? INT_MAX : LONG_MAX)))
        return CEL_EINVAL;
    *out = d;
    return 0;
}

static int parse_bool(const char *val, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no",
                                                                                "off", ""};
    for (size_t i = 0; i < 4; i++)
        if (strcasecmp(val, yes[i]) == 0)
            return *out = true, 0;
    for (size_t i = 0; i < 5; i++)
        if (strcasecmp(val, no[i]) == 0)
            return *out = false, 0;
    return CEL_EINVAL;
}

/* Stores val into the field of o; `from` names the source for the error line. */
static int set_opt(struct cel__wcfg *cfg, const struct opt *o, const char *val, const char *from,
                   char *err, size_t errlen)
{
    void *field = (char *)cfg + o->offset;
    double d;
    int idx;
    enum cel_log_level lvl;
    switch (o->type) {
    case OPT_STR:
        if (!*val)
            return fail(err, errlen, "%s: empty value for %s", from, o->name);
        free(*(char **)field);
        *(char **)field = strdup(val);
        return *(char **)field ? 0 : CEL_ENOMEM;
    case OPT_INT:
    case OPT_LONG:
    case OPT_DOUBLE:
        if (parse_number(o, val, &d) < 0)
            return fail(err, errlen, "%s: invalid number '%s'", from, val);
        if (o->type == OPT_INT)
            *(int *)field = (int)d;
        else if (o->type == OPT_LONG)
            *(long *)field = (long)d;
        else
            *(double *)field = d;
        return 0;
    case OPT_BOOL:
        return parse_bool(val, (bool *)field) < 0
                   ? fail(err, errlen, "%s: expected true or false, got '%s'", from, val)
                   : 0;
    case OPT_CHOICE:
        if ((idx = choice_index(o->choices, val)) < 0)
            return fail(err, errlen, "%s: invalid value '%s'", from, val);
        *(int *)field = idx;
        return 0;
    case OPT_LEVEL:
        if (cel_log_level_parse(val, &lvl) < 0)
            return fail(err, errlen, "%s: invalid log level '%s'", from, val);
        *(int *)field = (int)lvl;
        return 0;
    }
    return CEL_EINVAL;
}

static const struct opt *find_long(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static const struct opt *find_short(char c)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].short_name == c)
            return &opts[i];
    return NULL;
}

static char *exe_relative(const char *rel)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", exe, rel);
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? strdup(path) : NULL;
}

static char *default_services(void)
{
    char *p = exe_relative("../services");
    if (!p)
        p = exe_relative("../lib/celeriac/services");
    return p ? p : strdup(CEL_BUILD_DIR "/services");
}

static int set_defaults(struct cel__wcfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->concurrency = ncpu > 0 ? (int)ncpu : 1;
    cfg->prefetch_multiplier = 0; /* not set: 4, with a floor on the window (supervisor.c) */
    cfg->loglevel = CEL_LOG_INFO;
    cfg->max_crashes = 3;
    cfg->shutdown_timeout = 60;
    cfg->result_expires = 86400;
    cfg->max_result_size = 1L << 20;
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    size_t n = strlen(host) + 16;
    if (!(cfg->hostname = malloc(n)))
        return CEL_ENOMEM;
    snprintf(cfg->hostname, n, "celeriac@%s", host);
    return 0;
}

static int apply_env(struct cel__wcfg *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (!v || (!*v && opts[i].type != OPT_BOOL))
            continue;
        int rc = set_opt(cfg, &opts[i], v, opts[i].env, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int print_and_stop(int which)
{
    if (which == 'h')
        cel__config_usage(stdout);
    else
        printf("celeriac worker %s\n", CEL_VERSION_STRING);
    return 1;
}

/* One argv entry at *i; advances *i past a separate value. */
static int apply_arg(struct cel__wcfg *cfg, int argc, char **argv, int *i, char *err, size_t errlen)
{
    const char *a = argv[*i], *val = NULL;
    const struct opt *o = NULL;
    char from[96];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
        return print_and_stop('h');
    if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0)
        return print_and_stop('v');
    if (a[0] == '-' && a[1] == '-') {
        const char *eq = strchr(a + 2, '=');
        o = find_long(a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
        val = eq ? eq + 1 : NULL;
    } else if (a[0] == '-' && a[1] && !a[2]) {
        o = find_short(a[1]);
    }
    if (!o)
        return fail(err, errlen, "unknown option '%s' (see worker --help)", a);
    snprintf(from, sizeof from, "--%s", o->name);
    if (!val && o->type == OPT_BOOL)
        val = "true";
    if (!val) {
        if (*i + 1 >= argc)
            return fail(err, errlen, "%s: missing value", from);
        val = argv[++*i];
    }
    return set_opt(cfg, o, val, from, err, errlen);
}

static int split_queues(struct cel__wcfg *cfg, char *err, size_t errlen)
{
    size_t n = 1;
    for (const char *p = cfg->queues; *p; p++)
        n += *p == ',';
    if (!(cfg->queue_list = calloc(n, sizeof *cfg->queue_list)))
        return CEL_ENOMEM;
    char *save = NULL;
    for (char *q = strtok_r(cfg->queues, ",", &save); q; q = strtok_r(NULL, ",", &save)) {
        q += strspn(q, " ");
        if (*q)
            cfg->queue_list[cfg->n_queues++] = q;
    }
    if (!cfg->n_queues)
        return fail(err, errlen, "--queue: no queue name given");
    return 0;
}

static int require(const char *v, const char *flag, const char *env, char *err, size_t errlen)
{
    return v ? 0 : fail(err, errlen, "missing %s (or %s)", flag, env);
}

/* CELERIAC_BROKER_URL_FILE: the URL (with its password) kept out of argv and the environment. */
static int broker_from_file(struct cel__wcfg *cfg, char *err, size_t errlen)
{
    const char *file = getenv("CELERIAC_BROKER_URL_FILE"), *env = getenv("CELERIAC_BROKER_URL");
    if (!file || !*file || (cfg->broker && !(env && strcmp(cfg->broker, env) == 0)))
        return 0; /* --broker wins over the file, which wins over $CELERIAC_BROKER_URL */
    char why[256] = "", *url = NULL;
    int rc = cel_broker_url_load(NULL, &url, why, sizeof why);
    if (rc < 0)
        return fail(err, errlen, "CELERIAC_BROKER_URL_FILE: %s", why);
    size_t n = strlen(url);
    while (n && strchr(" \t\r\n", url[n - 1]))
        url[--n] = '\0';
    free(cfg->broker);
    cfg->broker = url;
    return 0;
}

static int load_signing_key(struct cel__wcfg *cfg, char *err, size_t errlen)
{
    if (cfg->require_signature && !cfg->signing_key_file)
        return fail(err, errlen,
                    "--require-signature needs --signing-key-file (or "
                    "CELERIAC_SIGNING_KEY_FILE)");
    if (!cfg->signing_key_file)
        return 0;
    char why[512] = "";
    size_t len = sizeof cfg->signing_key;
    int rc = cel_sign_load_key(cfg->signing_key_file, cfg->signing_key, &len, why, sizeof why);
    if (rc < 0)
        return fail(err, errlen, "%s", why);
    cfg->signing_key_len = len;
    return 0;
}

int cel__config_parse(struct cel__wcfg *cfg, int argc, char **argv, char *err, size_t errlen)
{
    int rc = set_defaults(cfg);
    if (rc == 0)
        rc = apply_env(cfg, err, errlen);
    for (int i = 1; rc == 0 && i < argc; i++)
        rc = apply_arg(cfg, argc, argv, &i, err, errlen);
    if (rc != 0)
        return rc;
    if ((rc = broker_from_file(cfg, err, errlen)) != 0)
        return rc;
    if ((rc = require(cfg->queues, "--queue", "CELERIAC_QUEUE", err, errlen)) ||
        (rc = require(cfg->broker, "--broker", "CELERIAC_BROKER_URL", err, errlen)) ||
        (rc = require(cfg->backend, "--backend", "CELERIAC_RESULT_BACKEND", err, errlen)))
        return rc;
    if (cfg->metrics_port > 65535)
        return fail(err, errlen, "--metrics-port: %d is not a TCP port", cfg->metrics_port);
#ifndef CEL_HAVE_MHD
    if (cfg->metrics_port > 0)
        return fail(err, errlen,
                    "--metrics-port: this worker was built without libmicrohttpd "
                    "(install libmicrohttpd-dev and rebuild)");
#endif
    if (!cfg->services && !(cfg->services = default_services()))
        return CEL_ENOMEM;
    if ((rc = load_signing_key(cfg, err, errlen)) != 0)
        return rc;
    return split_queues(cfg, err, errlen);
}

void cel__config_free(struct cel__wcfg *cfg)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].type == OPT_STR) {
            char **f = (char **)((char *)cfg + opts[i].offset);
            free(*f);
            *f = NULL;
        }
    free(cfg->queue_list);
    cfg->queue_list = NULL;
    OPENSSL_cleanse(cfg->signing_key, sizeof cfg->signing_key);
    cfg->signing_key_len = 0;
}

void cel__config_usage(FILE *out)
{
    fprintf(out, "usage: worker --queue Q[,Q...] [options]\n\n"
                 "Runs Celery-protocol jobs from RabbitMQ with handlers loaded from service .so "
                 "files.\nEach option may also be set by the environment variable shown; flags "
                 "win.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        char flag[64];
        int n = o->short_name ? snprintf(flag, sizeof flag, "-%c, ", o->short_name)
                              : snprintf(flag, sizeof flag, "    ");
        snprintf(flag + n, sizeof flag - (size_t)n, "--%s%s%s", o->name, o->arg ? " " : "",
                 o->arg ? o->arg : "");
        fprintf(out, "  %-34s %s\n  %-34s [env %s]\n", flag, o->help, "", o->env);
    }
    fprintf(out,
            "  %-34s %s\n  %-34s %s\n\nServices read CELERIAC_DATA_DIR (their data directory, "
            "default .run/data).\nSignals: TERM/INT warm shutdown (twice: cold), HUP "
            "reload services.\nExit codes: 0 clean shutdown, 1 runtime failure, 2 usage.\n",
            "-h, --help", "this text", "-V, --version", "print the version");
}
