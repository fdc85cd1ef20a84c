/* cmd_admin.c: producer revoke / inspect / dead: thin printing layers over libceleriac. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "producer/cli.h"

static int open_client(struct cel_cli *c)
{
    return cel_cli_client(c);
}

int cel_cmd_revoke(struct cel_cli *c)
{
    int code = open_client(c);
    if (code)
        return code;
    bool notified = false;
    int rc = cel_client_revoke(c->client, c->pos[0], c->terminate, &notified);
    if (rc)
        return cel_cli_client_fail(c, rc);
    printf("revoked %s%s%s\n", c->pos[0], c->terminate ? " (terminate)" : "",
           notified ? "" : " (no Celery pidbox exchange: only celeriac workers notified)");
    return CEL_EXIT_OK;
}

/* ---- inspect workers ---- */

struct workers {
    bool json;
    size_t n;
    json_t *list;
};

/* The registry document's fields shown as table columns (the rest is in --json). */
static const struct {
    const char *key, *title;
    int width;
} worker_cols[] = {
    {"pid", "PID", 8},         {"pool", "POOL", 8},     {"concurrency", "CONC", 5},
    {"running", "RUNNING", 8}, {"queued", "QUEUED", 7}, {"processed", "PROCESSED", 10},
    {"failed", "FAILED", 7},   {"queues", "QUEUES", 0},
};
#define NCOLS (sizeof worker_cols / sizeof worker_cols[0])

static void worker_header(void)
{
    printf("%-32s", "HOSTNAME");
    for (size_t i = 0; i < NCOLS; i++)
        printf(" %-*s", worker_cols[i].width, worker_cols[i].title);
    printf("\n");
}

/* One cell: text as is, arrays comma-joined, other values as JSON, "-" when absent. */
static void cell_text(json_t *v, char *out, size_t n)
{
    size_t used = 0, k;
    json_t *item;
    snprintf(out, n, "-");
    if (json_is_string(v)) {
        snprintf(out, n, "%s", json_string_value(v));
    } else if (json_is_array(v)) {
        out[0] = 0;
        json_array_foreach(v, k, item)
        {
            int w = snprintf(out + used, n - used, "%s%s", k ? "," : "",
                             json_is_string(item) ? json_string_value(item) : "?");
            if (w < 0 || (size_t)w >= n - used)
                break;
            used += (size_t)w;
        }
    } else if (v) {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        snprintf(out, n, "%s", s ? s : "?");
        free(s);
    }
}

static void worker_row(const char *hostname, json_t *doc)
{
    char cell[512];
    printf("%-32s", hostname);
    for (size_t i = 0; i < NCOLS; i++) {
        cell_text(json_object_get(doc, worker_cols[i].key), cell, sizeof cell);
        printf(" %-*s", worker_cols[i].width, cell);
    }
    printf("\n");
}

static void on_worker(void *ctx, const char *hostname, const char *json, size_t len)
{
    struct workers *w = ctx;
    json_t *doc = json_loadb(json, len, 0, NULL);
    if (!doc || !json_is_object(doc)) {
        json_decref(doc);
        doc = json_pack("{s:s#}", "raw", json, len);
    }
    if (w->json) {
        json_object_set_new(doc, "hostname", json_string(hostname));
        json_array_append(w->list, doc);
    } else {
        worker_row(hostname, doc);
    }
    json_decref(doc);
    w->n++;
}

int cel_cmd_inspect_workers(struct cel_cli *c)
{
    int code = open_client(c);
    if (code)
        return code;
    struct workers w = {.json = c->json, .list = json_array()};
    if (!w.json)
        worker_header();
    int rc = cel_client_list_workers(c->client, on_worker, &w);
    if (!rc && w.json) {
        char *s = json_dumps(w.list, JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
    } else if (!rc && !w.n) {
        printf("(no live workers)\n");
    }
    json_decref(w.list);
    return rc ? cel_cli_client_fail(c, rc) : CEL_EXIT_OK;
}

/* ---- inspect queues ---- */

static int queue_row(struct cel_cli *c, const char *q, json_t *list)
{
    struct cel_client_queue_info qi = {0, 0};
    int rc = cel_client_queue_info(c->client, q, &qi);
    if (rc && rc != CEL_ENOTFOUND)
        return rc;
    if (list) {
        json_array_append_new(list, rc ? json_pack("{s:s,s:b}", "queue", q, "exists", 0)
                                       : json_pack("{s:s,s:b,s:i,s:i}", "queue", q, "exists", 1,
                                                   "messages", (json_int_t)qi.messages, "consumers",
                                                   (json_int_t)qi.consumers));
    } else if (rc) {
        printf("%-40s %10s %10s\n", q, "-", "(missing)");
    } else {
        printf("%-40s %10u %10u\n", q, qi.messages, qi.consumers);
    }
    return 0;
}

int cel_cmd_inspect_queues(struct cel_cli *c)
{
    int code = open_client(c);
    if (code)
        return code;
    json_t *list = c->json ? json_array() : NULL;
    if (!list)
        printf("%-40s %10s %10s\n", "QUEUE", "MESSAGES", "CONSUMERS");
    int rc = 0;
    for (int i = 0; !rc && i < c->npos; i++) {
        char dead[512];
        snprintf(dead, sizeof dead, "%s.dead", c->pos[i]);
        rc = queue_row(c, c->pos[i], list);
        if (!rc)
            rc = queue_row(c, dead, list);
    }
    if (!rc && list) {
        char *s = json_dumps(list, JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
    }
    json_decref(list);
    return rc ? cel_cli_client_fail(c, rc) : CEL_EXIT_OK;
}

/* ---- dead letters ---- */

struct dead_ls {
    bool json;
    size_t n;
    json_t *list;
};

static void on_dead(void *ctx, const struct cel_dead_letter *d)
{
    struct dead_ls *l = ctx;
    l->n++;
    if (l->json) {
        json_t *h = json_object();
        for (size_t i = 0; i < d->n_headers; i++)
            json_object_set_new(h, d->headers[i].key, json_string(d->headers[i].value));
        json_array_append_new(l->list,
                              json_pack("{s:s,s:s,s:o,s:i}", "id", d->id, "task", d->task,
                                        "headers", h, "body_bytes", (json_int_t)d->body_len));
        return;
    }
    printf("%s  %s\n", d->id, d->task);
    for (size_t i = 0; i < d->n_headers; i++)
        printf("    %s: %s\n", d->headers[i].key, d->headers[i].value);
}

int cel_cmd_dead_ls(struct cel_cli *c)
{
    size_t limit = 0;
    if (c->limit && !cel_cli_size(c, "limit", c->limit, &limit))
        return CEL_EXIT_USAGE;
    int code = open_client(c);
    if (code)
        return code;
    struct dead_ls l = {.json = c->json, .list = c->json ? json_array() : NULL};
    int rc = cel_client_dead_list(c->client, c->pos[0], limit, on_dead, &l);
    if (!rc && l.json) {
        char *s = json_dumps(l.list, JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
    } else if (!rc) {
        printf("%zu dead letter%s in %s.dead\n", l.n, l.n == 1 ? "" : "s", c->pos[0]);
    }
    json_decref(l.list);
    return rc ? cel_cli_client_fail(c, rc) : CEL_EXIT_OK;
}

int cel_cmd_dead_replay(struct cel_cli *c)
{
    if (!c->id == !c->all)
        return cel_cli_fail(c, CEL_EXIT_USAGE, "give exactly one of --id ID or --all");
    int code = open_client(c);
    if (code)
        return code;
    size_t n = 0;
    int rc = cel_client_dead_replay(c->client, c->pos[0], c->id, &n);
    if (rc)
        return cel_cli_client_fail(c, rc);
    printf("replayed %zu dead letter%s to %s\n", n, n == 1 ? "" : "s", c->pos[0]);
    return CEL_EXIT_OK;
}

int cel_cmd_dead_purge(struct cel_cli *c)
{
    int code = open_client(c);
    if (code)
        return code;
    uint32_t n = 0;
    int rc = cel_client_dead_purge(c->client, c->pos[0], &n);
    if (rc)
        return cel_cli_client_fail(c, rc);
    printf("purged %u dead letter%s from %s.dead\n", n, n == 1 ? "" : "s", c->pos[0]);
    return CEL_EXIT_OK;
}
