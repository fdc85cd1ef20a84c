/* cmd_send.c: producer send / call / result / bulk. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "producer/cli.h"
#include "producer/client_internal.h"

/* Packs positional argument idx (0-based; the task is 0) as JSON of type want into b. */
static int json_arg(struct cel_cli *c, int idx, int want, const char *what, struct cel_buf *b)
{
    char err[512], label[64];
    if (c->npos <= idx)
        return 0;
    snprintf(label, sizeof label, "%s (argument %d)", what, idx + 1);
    if (cel__json_text_pack(c->pos[idx], want, label, b, err, sizeof err))
        return cel_cli_fail(c, CEL_EXIT_USAGE, "%s", err);
    return 0;
}

static int wait_and_print(struct cel_cli *c, const char *id)
{
    int tmo = cel_cli_timeout_ms(c);
    if (tmo == -2)
        return CEL_EXIT_USAGE;
    struct cel_client_result r;
    int rc = cel_client_result_wait(c->client, id, tmo, &r);
    if (rc == CEL_ETIMEDOUT)
        return cel_cli_fail(c, CEL_EXIT_TIMEOUT, "timed out after %s s waiting for %s", c->timeout,
                            id);
    return rc ? cel_cli_client_fail(c, rc) : cel_cli_print_result(c, &r);
}

static int do_send(struct cel_cli *c)
{
    struct cel_buf args = CEL_BUF_INIT, kwargs = CEL_BUF_INIT;
    char id[37];
    int code = json_arg(c, 1, JSON_ARRAY, "args", &args);
    if (!code)
        code = json_arg(c, 2, JSON_OBJECT, "kwargs", &kwargs);
    if (!code && c->wait && c->send.ignore_result)
        code =
            cel_cli_fail(c, CEL_EXIT_USAGE, "--wait with --ignore-result would never see a result");
    if (!code && c->wait && cel_cli_timeout_ms(c) == -2)
        code = CEL_EXIT_USAGE;
    if (!code)
        code = cel_cli_client(c);
    /* with --wait, make sure the result can be read before publishing anything */
    int rc = code ? 0 : cel_client_connect(c->client, true, c->wait);
    if (!code && !rc)
        rc = cel_client_send(c->client, c->pos[0], cel_buf_span(&args), cel_buf_span(&kwargs),
                             &c->send, id);
    cel_buf_free(&args);
    cel_buf_free(&kwargs);
    if (code || rc)
        return code ? code : cel_cli_client_fail(c, rc);
    if (!c->wait) {
        printf(c->json ? "{\"id\": \"%s\", \"status\": \"PENDING\", \"result\": null}\n" : "%s\n",
               id);
        return CEL_EXIT_OK;
    }
    return wait_and_print(c, id);
}

int cel_cmd_send(struct cel_cli *c)
{
    return do_send(c);
}

int cel_cmd_call(struct cel_cli *c)
{
    c->wait = true;
    return do_send(c);
}

int cel_cmd_result(struct cel_cli *c)
{
    int code = cel_cli_client(c);
    if (code)
        return code;
    if (c->wait)
        return wait_and_print(c, c->pos[0]);
    struct cel_client_result r;
    int rc = cel_client_result_get(c->client, c->pos[0], &r);
    return rc ? cel_cli_client_fail(c, rc) : cel_cli_print_result(c, &r);
}

/* ---- bulk ---- */

struct bulk {
    struct cel_cli *c;
    FILE *in, *ids;
    size_t batch;
    long long total_bytes; /* -1 when unknown (a pipe) */
    long long read_bytes;
    size_t lineno, published, bad;
    char *pending_ids; /* batch x 37 */
    size_t npending;
    bool tty;
    int64_t start_us, last_draw_us;
};

static void progress(struct bulk *b, bool final)
{
    int64_t now = cel_mono_us();
    if (!b->tty || (!final && now - b->last_draw_us < 100000))
        return;
    b->last_draw_us = now;
    double secs = (double)(now - b->start_us) / 1e6, rate = secs > 0 ? b->published / secs : 0;
    if (b->total_bytes > 0) {
        double frac = (double)b->read_bytes / (double)b->total_bytes;
        int width = 30, fill = (int)(frac * width);
        double eta = frac > 0 ? secs / frac - secs : 0;
        fprintf(stderr, "\r[%.*s%*s] %3d%% %zu jobs %.0f/s ETA %.0fs ", fill,
                "##############################", width - fill, "", (int)(frac * 100), b->published,
                rate, eta);
    } else {
        fprintf(stderr, "\r%zu jobs %.0f/s ", b->published, rate);
    }
    if (final)
        fputc('\n', stderr);
}

static int flush_ids(struct bulk *b)
{
    int rc = cel_client_flush(b->c->client);
    if (rc)
        return cel_cli_client_fail(b->c, rc);
    b->published += b->npending;
    for (size_t i = 0; b->ids && i < b->npending; i++)
        fprintf(b->ids, "%s\n", b->pending_ids + i * 37);
    b->npending = 0;
    progress(b, false);
    return 0;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

/* One line: parse (a bad line is reported and skipped), then add to the batch. */
static int bulk_line(struct bulk *b, const char *line, size_t n, struct cel_arena *a,
                     struct cel_buf *scratch)
{
    struct cel__job job;
    char err[512];
    if (blank(line, n))
        return 0;
    int rc = cel__job_parse(line, n, &job, a, scratch, err, sizeof err);
    if (!rc) {
        struct cel_send_opts base = b->c->send;
        /* command-line options are defaults for every line */
        if (!job.opts.queue)
            job.opts.queue = base.queue;
        if (!job.opts.format)
            job.opts.format = base.format;
        rc = cel_client_add(b->c->client, job.task, job.args, job.kwargs, &job.opts,
                            b->pending_ids + b->npending * 37);
        if (rc == CEL_ECONN || rc == CEL_EAUTH || rc == CEL_ETLS || rc == CEL_ENOMEM)
            return cel_cli_client_fail(b->c, rc);
        if (rc)
            snprintf(err, sizeof err, "%s", cel_client_errstr(b->c->client));
    }
    if (rc) {
        b->bad++;
        fprintf(stderr, "%sproducer bulk: line %zu: %s\n", b->tty ? "\r" : "", b->lineno, err);
        return 0;
    }
    return ++b->npending >= b->batch ? flush_ids(b) : 0;
}

static int bulk_loop(struct bulk *b)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct cel_arena a;
    struct cel_buf scratch = CEL_BUF_INIT;
    int code = 0;
    cel_arena_init(&a, 16384);
    while (!code && (n = getline(&line, &cap, b->in)) >= 0) {
        b->lineno++;
        b->read_bytes += n;
        code = bulk_line(b, line, (size_t)n, &a, &scratch);
        cel_arena_reset(&a);
        cel_buf_clear(&scratch);
    }
    if (!code && ferror(b->in))
        code = cel_cli_fail(b->c, CEL_EXIT_USAGE, "read error on %s", b->c->pos[0]);
    if (!code && b->npending)
        code = flush_ids(b);
    free(line);
    cel_arena_free(&a);
    cel_buf_free(&scratch);
    return code;
}

static int bulk_open(struct bulk *b)
{
    struct cel_cli *c = b->c;
    const char *path = c->pos[0];
    b->in = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!b->in)
        return cel_cli_fail(c, CEL_EXIT_USAGE, "cannot open %s: %m", path);
    struct stat st;
    b->total_bytes = fstat(fileno(b->in), &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : -1;
    if (c->ids && !(b->ids = fopen(c->ids, "w")))
        return cel_cli_fail(c, CEL_EXIT_USAGE, "cannot write %s: %m", c->ids);
    b->pending_ids = malloc(b->batch * 37);
    return b->pending_ids ? 0 : cel_cli_fail(c, CEL_EXIT_FAILED, "out of memory");
}

int cel_cmd_bulk(struct cel_cli *c)
{
    struct bulk b = {.c = c, .batch = 500, .tty = isatty(2)};
    if (c->batch && !cel_cli_size(c, "batch", c->batch, &b.batch))
        return CEL_EXIT_USAGE;
    if (!b.batch)
        return cel_cli_fail(c, CEL_EXIT_USAGE, "--batch must be > 0");
    c->batch_max = b.batch + 1; /* the command flushes by itself, to record confirmed ids */
    int code = bulk_open(&b);
    if (!code)
        code = cel_cli_client(c);
    if (!code) {
        int rc = cel_client_connect(c->client, true, false);
        code = rc ? cel_cli_client_fail(c, rc) : 0;
    }
    b.start_us = cel_mono_us();
    if (!code)
        code = bulk_loop(&b);
    progress(&b, true);
    double secs = (double)(cel_mono_us() - b.start_us) / 1e6;
    if (!code || b.published)
        printf("published %zu jobs in %.2f s (%.0f/s)\n", b.published, secs,
               secs > 0 ? b.published / secs : 0.0);
    if (!code && b.bad)
        code =
            cel_cli_fail(c, CEL_EXIT_USAGE, "%zu bad line%s skipped", b.bad, b.bad == 1 ? "" : "s");
    if (b.in && b.in != stdin)
        fclose(b.in);
    if (b.ids && fclose(b.ids) && !code)
        code = cel_cli_fail(c, CEL_EXIT_FAILED, "cannot write %s", c->ids);
    free(b.pending_ids);
    return code;
}
