/* loader.c: dlopen every service .so in a directory, validate its descriptor, and index its
 * tasks in an open-addressing hash table (task lookup is on the per-job hot path). */
#include "worker/loader.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

#define MAX_TASKS_PER_SERVICE 10000
/* The descriptor fields the worker reads: everything before the reserved slots. */
#define SERVICE_SIZE_NEEDED offsetof(struct cel_service, reserved)

bool cel__task_name_valid(const char *service, const char *name)
{
    size_t sl = strlen(service), n = strlen(name);
    if (n >= 200 || n <= sl + 1 || strncmp(name, service, sl) != 0 || name[sl] != '.')
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
            return false;
    return true;
}

static bool service_name_valid(const char *s)
{
    if (!s || !*s || strlen(s) >= 100)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return false;
    return true;
}

int cel__rate_parse(const char *s, double *per_s)
{
    char *end;
    errno = 0;
    double n = strtod(s, &end);
    if (errno || end == s || n < 0)
        return CEL_EINVAL;
    static const struct {
        const char *unit;
        double secs;
    } units[] = {{"", 1}, {"/s", 1}, {"/m", 60}, {"/h", 3600}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].unit) == 0) {
            *per_s = n / units[i].secs;
            return 0;
        }
    return CEL_EINVAL;
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

const struct cel__task_entry *cel__registry_find(const struct cel__registry *r, const char *name)
{
    if (!r || !r->table)
        return NULL;
    for (uint32_t i = (uint32_t)hash_name(name) & r->mask;; i = (i + 1) & r->mask) {
        uint32_t v = r->table[i];
        if (!v)
            return NULL;
        if (strcmp(r->tasks[v - 1].name, name) == 0)
            return &r->tasks[v - 1];
    }
}

static int build_table(struct cel__registry *r)
{
    if (r->n_tasks && (!(r->buckets = calloc(r->n_tasks, sizeof *r->buckets)) ||
                       !(r->stats = calloc(r->n_tasks, sizeof *r->stats))))
        return CEL_ENOMEM;
    for (size_t t = 0; t < r->n_tasks; t++)
        r->tasks[t].stat = &r->stats[t];
    for (size_t t = 0; t < r->n_tasks; t++)
        if (r->tasks[t].rate_per_s > 0) {
            r->tasks[t].bucket = &r->buckets[t];
            r->buckets[t].tokens = r->tasks[t].rate_per_s < 1 ? 1 : r->tasks[t].rate_per_s;
        }
    uint32_t cap = 16;
    while (cap < r->n_tasks * 2 + 1)
        cap <<= 1;
    if (!(r->table = calloc(cap, sizeof *r->table)))
        return CEL_ENOMEM;
    r->mask = cap - 1;
    for (size_t t = 0; t < r->n_tasks; t++) {
        uint32_t i = (uint32_t)hash_name(r->tasks[t].name) & r->mask;
        while (r->table[i])
            i = (i + 1) & r->mask;
        r->table[i] = (uint32_t)t + 1;
    }
    return 0;
}

/* ---- loading one file ---- */

struct loading {
    struct cel__registry *r;
    size_t cap_slots, cap_tasks;
    char *err;
    size_t errlen;
};

static int refuse(struct loading *L, const char *path, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(struct loading *L, const char *path, int code, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(L->err, L->errlen, "%s: %s", path, why);
    cel_log_error("service refused: %s: %s", path, why);
    return code;
}

static const struct cel__task_entry *find_linear(const struct cel__registry *r, const char *name)
{
    for (size_t i = 0; i < r->n_tasks; i++)
        if (strcmp(r->tasks[i].name, name) == 0)
            return &r->tasks[i];
    return NULL;
}

static int check_tasks(struct loading *L, const char *path, const struct cel_service *svc,
                       size_t *count)
{
    size_t n = 0;
    for (const struct cel_task_def *t = svc->tasks; t && t->name; t++, n++) {
        double rate;
        if (n >= MAX_TASKS_PER_SERVICE)
            return refuse(L, path, CEL_ETASKNAME, "more than %d tasks", MAX_TASKS_PER_SERVICE);
        if (!cel__task_name_valid(svc->name, t->name))
            return refuse(L, path, CEL_ETASKNAME,
                          "invalid task name '%.200s' (want '%s.<name>'"
                          ", [A-Za-z0-9_.-], < 200 bytes)",
                          t->name, svc->name);
        if (!t->handler)
            return refuse(L, path, CEL_ETASKNAME, "task '%s' has no handler", t->name);
        if (t->rate_limit && cel__rate_parse(t->rate_limit, &rate) < 0)
            return refuse(L, path, CEL_ETASKNAME, "task '%s': invalid rate limit '%s'", t->name,
                          t->rate_limit);
        const struct cel__task_entry *dup = find_linear(L->r, t->name);
        if (dup)
            return refuse(L, path, CEL_EDUPTASK, "duplicate task name '%s' (also in %s)", t->name,
                          L->r->slots[(uintptr_t)dup->slot].path);
        for (const struct cel_task_def *u = svc->tasks; u != t; u++)
            if (strcmp(u->name, t->name) == 0)
                return refuse(L, path, CEL_EDUPTASK, "duplicate task name '%s'", t->name);
    }
    if (!n)
        return refuse(L, path, CEL_ETASKNAME, "service '%s' has no tasks", svc->name);
    *count = n;
    return 0;
}

static int check_descriptor(struct loading *L, const char *path, const struct cel_service *svc,
                            size_t *count)
{
    if (!svc)
        return refuse(L, path, CEL_ESYMBOL, "%s() returned NULL", CEL_SERVICE_SYMBOL);
    if (svc->abi != CEL_SERVICE_ABI)
        return refuse(L, path, CEL_EABI, "wrong ABI %u (this worker speaks %d)", svc->abi,
                      CEL_SERVICE_ABI);
    if (svc->size < SERVICE_SIZE_NEEDED)
        return refuse(L, path, CEL_EABI, "wrong size %u (struct cel_service needs at least %zu)",
                      svc->size, (size_t)SERVICE_SIZE_NEEDED);
    if (!service_name_valid(svc->name))
        return refuse(L, path, CEL_ETASKNAME, "invalid service name");
    return check_tasks(L, path, svc, count);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 8;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return CEL_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

/* Adds an accepted service and its tasks; slots and tasks are re-linked by add_done(). */
static int add_service(struct loading *L, const char *path, void *dl, const struct cel_service *svc,
                       size_t n_tasks)
{
    struct cel__registry *r = L->r;
    if (grow((void **)&r->slots, &L->cap_slots, r->n_slots + 1, sizeof *r->slots) ||
        grow((void **)&r->tasks, &L->cap_tasks, r->n_tasks + n_tasks, sizeof *r->tasks))
        return CEL_ENOMEM;
    struct cel__service_slot *s = &r->slots[r->n_slots];
    *s = (struct cel__service_slot){strdup(path), dl, svc, NULL, 1};
    if (!s->path)
        return CEL_ENOMEM;
    for (size_t i = 0; i < n_tasks; i++) {
        const struct cel_task_def *d = &svc->tasks[i];
        struct cel__task_entry *e = &r->tasks[r->n_tasks++];
        *e = (struct cel__task_entry){d->name, d, (void *)(uintptr_t)r->n_slots, 0, NULL};
        if (d->rate_limit)
            cel__rate_parse(d->rate_limit, &e->rate_per_s);
    }
    r->n_slots++;
    return 0;
}

/* dlopen of a private copy, so a reload gets the new file even though glibc caches by name. */
static void *dlopen_copy(const char *path, uint64_t gen, char *why, size_t whylen)
{
    const char *tmp = getenv("TMPDIR");
    const char *base = strrchr(path, '/');
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s/celeriac-%ld-g%llu-%s", tmp && *tmp ? tmp : "/tmp",
             (long)getpid(), (unsigned long long)gen, base ? base + 1 : path);
    int in = open(path, O_RDONLY | O_CLOEXEC), out = -1;
    struct stat st;
    void *dl = NULL;
    if (in >= 0 && fstat(in, &st) == 0 &&
        (out = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700)) >= 0 &&
        sendfile(out, in, NULL, (size_t)st.st_size) == st.st_size) {
        close(out);
        out = -1;
        if (!(dl = dlopen(copy, RTLD_NOW | RTLD_LOCAL)))
            snprintf(why, whylen, "%s", dlerror());
    } else {
        snprintf(why, whylen, "cannot copy for loading: %s", strerror(errno));
    }
    if (out >= 0)
        close(out);
    if (in >= 0)
        close(in);
    unlink(copy);
    return dl;
}

static int load_file(struct loading *L, const char *path)
{
    char why[512] = "";
    void *dl = L->r->generation > 1 ? dlopen_copy(path, L->r->generation, why, sizeof why)
                                    : dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl)
        return refuse(L, path, CEL_ELOAD, "dlopen error: %s", *why ? why : dlerror());
    const struct cel_service *(*fn)(void);
    *(void **)&fn = dlsym(dl, CEL_SERVICE_SYMBOL);
    size_t n_tasks = 0;
    int rc = fn ? check_descriptor(L, path, fn(), &n_tasks)
                : refuse(L, path, CEL_ESYMBOL, "missing symbol %s", CEL_SERVICE_SYMBOL);
    if (rc == 0 && (rc = add_service(L, path, dl, fn(), n_tasks)) == 0) {
        cel_log_info("service %s loaded from %s (%zu tasks)", fn()->name, path, n_tasks);
        return 0;
    }
    dlclose(dl);
    return rc;
}

/* On reload: keep the previous generation's version of a service whose file failed. */
static int keep_previous(struct loading *L, const char *path, struct cel__registry *prev)
{
    for (size_t i = 0; prev && i < prev->n_slots; i++) {
        const struct cel__service_slot *s = &prev->slots[i];
        size_t n = 0;
        if (strcmp(s->path, path) != 0 || check_tasks(L, path, s->svc, &n) < 0)
            continue;
        if (add_service(L, path, NULL, s->svc, n) < 0)
            return CEL_ENOMEM;
        cel_log_warning("%s: keeping the previously loaded version of service %s", path,
                        s->svc->name);
        return 1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_dir(const char *dir, char ***names, size_t *n, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: cannot open services directory: %s", dir, strerror(errno));
        return CEL_ESYS;
    }
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 3, ".so") != 0 || e->d_name[0] == '.')
            continue;
        size_t pl = strlen(dir) + l + 2;
        char *p = malloc(pl);
        if (!p || grow((void **)names, &cap, *n + 1, sizeof **names)) {
            free(p);
            closedir(d);
            return CEL_ENOMEM;
        }
        snprintf(p, pl, "%s/%s", dir, e->d_name);
        (*names)[(*n)++] = p;
    }
    closedir(d);
    if (*n)
        qsort(*names, *n, sizeof **names, cmp_str);
    return 0;
}

static void link_slots(struct cel__registry *r)
{
    for (size_t i = 0; i < r->n_tasks; i++)
        r->tasks[i].slot = &r->slots[(uintptr_t)r->tasks[i].slot];
}

static int load_all(struct loading *L, char **files, size_t n, bool strict,
                    struct cel__registry *prev)
{
    for (size_t i = 0; i < n; i++) {
        /* while loading, an entry's slot field holds the slot index (see link_slots) */
        int rc = load_file(L, files[i]);
        if (rc == CEL_ENOMEM)
            return rc;
        if (rc < 0 && strict)
            return rc;
        if (rc < 0 && (rc = keep_previous(L, files[i], prev)) < 0)
            return rc;
        if (rc == 1 && !L->r->prev)
            L->r->prev = cel__registry_ref(prev);
    }
    return 0;
}

int cel__registry_load(struct cel__registry **out, const char *dir, bool strict,
                       struct cel__registry *prev, char *err, size_t errlen)
{
    struct cel__registry *r = calloc(1, sizeof *r);
    char **files = NULL;
    size_t n = 0;
    *out = NULL;
    if (!r)
        return CEL_ENOMEM;
    r->refs = 1;
    r->generation = prev ? prev->generation + 1 : 1;
    struct loading L = {r, 0, 0, err, errlen};
    int rc = list_dir(dir, &files, &n, err, errlen);
    if (rc == 0)
        rc = load_all(&L, files, n, strict, prev);
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
    link_slots(r);
    if (rc == 0)
        rc = build_table(r);
    if (rc < 0) {
        cel__registry_unref(r);
        return rc;
    }
    *out = r;
    return 0;
}

struct cel__registry *cel__registry_ref(struct cel__registry *r)
{
    if (r)
        r->refs++;
    return r;
}

void cel__registry_init_services(struct cel__registry *r, const struct cel_host *host)
{
    for (size_t i = 0; i < r->n_slots; i++) {
        struct cel__service_slot *s = &r->slots[i];
        s->init_rc = s->svc->init ? s->svc->init(host, &s->state) : 0;
        if (s->init_rc < 0)
            cel_log_error("service %s: init() failed: %s", s->svc->name, cel_strerror(s->init_rc));
    }
}

void cel__registry_fini_services(struct cel__registry *r)
{
    for (size_t i = 0; i < r->n_slots; i++) {
        struct cel__service_slot *s = &r->slots[i];
        if (s->init_rc == 0 && s->svc->fini)
            s->svc->fini(s->state);
        s->init_rc = 1;
    }
}

void cel__registry_unref(struct cel__registry *r)
{
    if (!r || --r->refs > 0)
        return;
    for (size_t i = 0; i < r->n_slots; i++) {
        if (r->slots[i].dl)
            dlclose(r->slots[i].dl);
        free(r->slots[i].path);
    }
    cel__registry_unref(r->prev);
    free(r->slots);
    free(r->tasks);
    free(r->table);
    free(r->buckets);
    free(r->stats);
    free(r);
}
