/* test_services.c: the built services (users, email, bench) and the loader test services,
 * called through the fake host, each test with its own temporary CELERIAC_DATA_DIR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/lib/fake_host.h"

struct fixture {
    char dir[64];
    char outbox_file[128];
    struct fake_service svc;
    struct fake_service svc2;
    struct cel_job job;
};

static void service_path(char *buf, size_t size, const char *sub, const char *name)
{
    snprintf(buf, size, "%s/%s/%s.so", CEL_BUILD_DIR, sub, name);
}

static void open_service(struct fake_service *s, const char *name)
{
    char path[PATH_MAX];
    service_path(path, sizeof path, "services", name);
    if (fake_service_open(s, path) != 0)
        fail_msg("%s", s->errstr);
}

static int make_fixture(void **state, const char *service)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/celeriac-services-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->outbox_file, sizeof f->outbox_file, "%s/outbox.jsonl", f->dir);
    setenv("CELERIAC_DATA_DIR", f->dir, 1);
    setenv("CELERIAC_EMAIL_OUTBOX_FILE", f->outbox_file, 1);
    if (service)
        open_service(&f->svc, service);
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    fake_job_free(&f->job);
    fake_service_close(&f->svc);
    fake_service_close(&f->svc2);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    unsetenv("CELERIAC_DATA_DIR");
    unsetenv("CELERIAC_EMAIL_OUTBOX_FILE");
    free(f);
    return 0;
}

static int setup_users(void **state)
{
    return make_fixture(state, "users");
}

static int setup_email(void **state)
{
    return make_fixture(state, "email");
}

static int setup_bench(void **state)
{
    return make_fixture(state, "bench");
}

static int setup_none(void **state)
{
    return make_fixture(state, NULL);
}

/* Runs task and returns the result as JSON; the job stays in f->job for further checks. */
static const char *call(struct fixture *f, const char *task, const char *args, const char *kwargs)
{
    fake_job_free(&f->job);
    int rc = fake_call(&f->svc, &f->job, task, args, kwargs);
    assert_int_not_equal(rc, FAKE_EPROTOCOL);
    return fake_job_result_json(&f->job);
}

static void expect_ok(struct fixture *f, const char *task, const char *args, const char *kwargs,
                      const char *want)
{
    const char *got = call(f, task, args, kwargs);
    if (f->job.failed || f->job.retried)
        fail_msg("%s failed: %s: %s", task, f->job.exc_type, f->job.exc_message);
    assert_string_equal(got, want);
}

static void expect_exc(struct fixture *f, const char *task, const char *args, const char *kwargs,
                       const char *type, const char *message)
{
    call(f, task, args, kwargs);
    if (!f->job.failed)
        fail_msg("%s(%s, %s) did not fail", task, args ? args : "", kwargs ? kwargs : "");
    assert_string_equal(f->job.exc_type, type);
    assert_string_equal(f->job.exc_message, message);
}

/* ---- users ---- */

static void users_create_returns_the_user(void **state)
{
    struct fixture *f = *state;
    expect_ok(f, "users.create", "[\"alice\", \"a@x.io\"]", NULL,
              "{\"id\":1,\"username\":\"alice\",\"email\":\"a@x.io\"}");
    expect_ok(f, "users.create", NULL, "{\"email\": \"b@x.io\", \"username\": \"bob\"}",
              "{\"id\":2,\"username\":\"bob\",\"email\":\"b@x.io\"}");
    expect_ok(f, "users.create", "[\"carol.c-1_x\"]", "{\"email\": \"first.last+tag@mail.x.io\"}",
              "{\"id\":3,\"username\":\"carol.c-1_x\",\"email\":\"first.last+tag@mail.x.io\"}");
}

static void users_create_refuses_a_duplicate_username(void **state)
{
    struct fixture *f = *state;
    expect_ok(f, "users.create", "[\"alice\", \"a@x.io\"]", NULL,
              "{\"id\":1,\"username\":\"alice\",\"email\":\"a@x.io\"}");
    expect_exc(f, "users.create", "[\"alice\", \"other@x.io\"]", NULL, "ValueError",
               "username 'alice' already exists");
    expect_exc(f, "users.create", "[\"ALICE\", \"other@x.io\"]", NULL, "ValueError",
               "username 'ALICE' already exists");
}

static void users_create_refuses_a_duplicate_email(void **state)
{
    struct fixture *f = *state;
    expect_ok(f, "users.create", "[\"alice\", \"a@x.io\"]", NULL,
              "{\"id\":1,\"username\":\"alice\",\"email\":\"a@x.io\"}");
    expect_exc(f, "users.create", "[\"bob\", \"a@x.io\"]", NULL, "ValueError",
               "email 'a@x.io' already registered");
    expect_exc(f, "users.create", "[\"bob\", \"A@X.IO\"]", NULL, "ValueError",
               "email 'A@X.IO' already registered");
    expect_exc(f, "users.create", "[\"alice\", \"a@x.io\"]", NULL, "ValueError",
               "username 'alice' already exists");
    /* A failed insert does not use up an id. */
    expect_ok(f, "users.create", "[\"bob\", \"b@x.io\"]", NULL,
              "{\"id\":2,\"username\":\"bob\",\"email\":\"b@x.io\"}");
}

static void users_create_validates_the_email(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {
        "",      "no-at-sign", "a@b",     "a@@x.io", "a@b@x.io",  "a b@x.io",
        "@x.io", "a@x.",       "a@.x.io", "a@x..io", "a@x.io\\t", "a@",
    };
    char args[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "[\"user%zu\", \"%s\"]", i, bad[i]);
        call(f, "users.create", args, NULL);
        assert_true(f->job.failed);
        assert_string_equal(f->job.exc_type, "ValueError");
        assert_ptr_equal(strstr(f->job.exc_message, "invalid email '"), f->job.exc_message);
    }
    char long_email[300];
    memset(long_email, 'a', 250);
    memcpy(long_email + 250, "@x.io", 6);
    snprintf(args, sizeof args, "[\"user\", \"%s\"]", long_email);
    call(f, "users.create", args, NULL);
    assert_string_equal(f->job.exc_type, "ValueError");
    expect_exc(f, "users.create", "[\"bob\", \"bob at x.io\"]", NULL, "ValueError",
               "invalid email 'bob at x.io': must contain exactly one '@'");
    expect_ok(f, "users.list", NULL, NULL, "[]");
}

static void users_create_validates_the_username(void **state)
{
    struct fixture *f = *state;
    expect_exc(f, "users.create", "[\"bad name!\", \"a@x.io\"]", NULL, "ValueError",
               "invalid username 'bad name!': may contain only letters, digits, '_', '.' and '-'");
    expect_exc(f, "users.create", "[\"\", \"a@x.io\"]", NULL, "ValueError",
               "invalid username '': must be 1 to 64 characters long");
    char args[256] = "[\"";
    memset(args + 2, 'u', 65);
    strcpy(args + 67, "\", \"a@x.io\"]");
    call(f, "users.create", args, NULL);
    assert_string_equal(f->job.exc_type, "ValueError");
    args[66] = '"';
    strcpy(args + 67, ", \"a@x.io\"]"); /* exactly 64 characters is fine */
    call(f, "users.create", args, NULL);
    assert_false(f->job.failed);
}

static void users_create_checks_arguments_like_python(void **state)
{
    struct fixture *f = *state;
    expect_exc(f, "users.create", "[\"alice\"]", NULL, "TypeError",
               "users.create() missing required argument: 'email'");
    expect_exc(f, "users.create", NULL, NULL, "TypeError",
               "users.create() missing required argument: 'username'");
    expect_exc(f, "users.create", "[1, \"a@x.io\"]", NULL, "TypeError",
               "users.create() argument 'username' must be str, not int");
    expect_exc(f, "users.create", "[\"alice\", null]", NULL, "TypeError",
               "users.create() argument 'email' must be str, not NoneType");
    expect_exc(f, "users.create", "[\"a\", \"a@x.io\", 3]", NULL, "TypeError",
               "users.create() takes 2 positional arguments but 3 were given");
    expect_exc(f, "users.create", "[\"a\", \"a@x.io\"]", "{\"age\": 3}", "TypeError",
               "users.create() got an unexpected keyword argument 'age'");
    expect_exc(f, "users.create", "[\"a\", \"a@x.io\"]", "{\"username\": \"b\"}", "TypeError",
               "users.create() got multiple values for argument 'username'");
}

static void users_get_finds_a_user_or_raises_key_error(void **state)
{
    struct fixture *f = *state;
    expect_ok(f, "users.create", "[\"alice\", \"a@x.io\"]", NULL,
              "{\"id\":1,\"username\":\"alice\",\"email\":\"a@x.io\"}");
    expect_ok(f, "users.get", "[1]", NULL,
              "{\"id\":1,\"username\":\"alice\",\"email\":\"a@x.io\"}");
    expect_ok(f, "users.get", NULL, "{\"id\": 1}",
              "{\"id\":1,\"username\":\"alice\",\"email\":\"a@x.io\"}");
    expect_exc(f, "users.get", "[42]", NULL, "KeyError", "user 42 not found");
    expect_exc(f, "users.get", "[-3]", NULL, "KeyError", "user -3 not found");
    expect_exc(f, "users.get", "[\"1\"]", NULL, "TypeError",
               "users.get() argument 'id' must be int, not str");
}

static void users_list_returns_users_in_id_order(void **state)
{
    struct fixture *f = *state;
    expect_ok(f, "users.list", NULL, NULL, "[]");
    expect_ok(f, "users.create", "[\"zed\", \"z@x.io\"]", NULL,
              "{\"id\":1,\"username\":\"zed\",\"email\":\"z@x.io\"}");
    expect_ok(f, "users.create", "[\"amy\", \"a@x.io\"]", NULL,
              "{\"id\":2,\"username\":\"amy\",\"email\":\"a@x.io\"}");
    expect_ok(f, "users.list", "[]", "{}",
              "[{\"id\":1,\"username\":\"zed\",\"email\":\"z@x.io\"},"
              "{\"id\":2,\"username\":\"amy\",\"email\":\"a@x.io\"}]");
    expect_exc(f, "users.list", "[1]", NULL, "TypeError",
               "users.list() takes 0 positional arguments but 1 were given");
}

static void users_data_survives_a_restart(void **state)
{
    struct fixture *f = *state;
    expect_ok(f, "users.create", "[\"alice\", \"a@x.io\"]", NULL,
              "{\"id\":1,\"username\":\"alice\",\"email\":\"a@x.io\"}");
    fake_service_close(&f->svc);
    open_service(&f->svc, "users");
    expect_ok(f, "users.get", "[1]", NULL,
              "{\"id\":1,\"username\":\"alice\",\"email\":\"a@x.io\"}");
    char path[128];
    snprintf(path, sizeof path, "%s/users.db", f->dir);
    assert_int_equal(access(path, R_OK | W_OK), 0);
}

/* ---- email ---- */

static json_t *read_json_lines(const char *path)
{
    json_t *lines = json_array();
    char line[4096];
    FILE *fp = fopen(path, "r");
    if (!fp)
        return lines;
    while (fgets(line, sizeof line, fp))
        json_array_append_new(lines, json_loads(line, 0, NULL));
    fclose(fp);
    return lines;
}

static void email_send_welcome_writes_the_outbox(void **state)
{
    struct fixture *f = *state;
    expect_ok(f, "email.send_welcome",
              "[{\"id\": 7, \"username\": \"al\\\"ice\", \"email\": "
              "\"a@x.io\"}]",
              NULL, "{\"to\":\"a@x.io\",\"subject\":\"Welcome, al\\\"ice!\",\"outbox_id\":1}");
    char job_id[64];
    snprintf(job_id, sizeof job_id, "%s", f->job.info.id);

    json_t *rows = json_loads(call(f, "email.outbox", NULL, NULL), 0, NULL);
    assert_int_equal(json_array_size(rows), 1);
    json_t *row = json_array_get(rows, 0);
    assert_int_equal(json_integer_value(json_object_get(row, "outbox_id")), 1);
    assert_string_equal(json_string_value(json_object_get(row, "job_id")), job_id);
    assert_string_equal(json_string_value(json_object_get(row, "to")), "a@x.io");
    assert_string_equal(json_string_value(json_object_get(row, "body")),
                        "Hello al\"ice,\n\nwelcome to celeriac! Your user id is 7.\n");
    assert_non_null(strstr(json_string_value(json_object_get(row, "created")), "T"));

    json_t *lines = read_json_lines(f->outbox_file);
    assert_int_equal(json_array_size(lines), 1);
    json_t *line = json_array_get(lines, 0);
    assert_string_equal(json_string_value(json_object_get(line, "job_id")), job_id);
    assert_string_equal(json_string_value(json_object_get(line, "subject")), "Welcome, al\"ice!");
    assert_true(json_equal(json_object_get(line, "body"), json_object_get(row, "body")));
    json_decref(lines);
    json_decref(rows);
}

/* Celery's link prepends the parent's result: users.create's return value is the argument. */
static void email_send_welcome_takes_what_users_create_returns(void **state)
{
    struct fixture *f = *state;
    open_service(&f->svc2, "users");
    struct cel_job created;
    assert_int_equal(fake_call(&f->svc2, &created, "users.create", "[\"bob\", \"b@x.io\"]", NULL),
                     0);
    fake_job_free(&f->job);
    fake_job_init(&f->job, "email.send_welcome");
    msgpack_pack_array(&f->job.args_pk, 1);
    msgpack_sbuffer_write(&f->job.args_buf, created.result_buf.data, created.result_buf.size);
    fake_job_free(&created);
    assert_int_equal(fake_job_run(&f->svc, &f->job), 0);
    assert_string_equal(fake_job_result_json(&f->job),
                        "{\"to\":\"b@x.io\",\"subject\":\"Welcome, bob!\",\"outbox_id\":1}");
    /* No dedup in the service: a second delivery is a second mail, with its job id. */
    expect_ok(f, "email.send_welcome", "[{\"username\": \"bob\", \"email\": \"b@x.io\"}]", NULL,
              "{\"to\":\"b@x.io\",\"subject\":\"Welcome, bob!\",\"outbox_id\":2}");
    json_t *lines = read_json_lines(f->outbox_file);
    assert_int_equal(json_array_size(lines), 2);
    json_decref(lines);
}

static void email_send_welcome_checks_the_user(void **state)
{
    struct fixture *f = *state;
    expect_exc(f, "email.send_welcome", NULL, NULL, "TypeError",
               "email.send_welcome() missing required argument: 'user'");
    expect_exc(f, "email.send_welcome", "[\"bob\"]", NULL, "TypeError",
               "email.send_welcome() argument 'user' must be dict (as returned by users.create)");
    expect_exc(f, "email.send_welcome", "[{\"username\": \"bob\"}]", NULL, "ValueError",
               "email.send_welcome(): user has no 'email' (a non-empty str)");
    expect_ok(f, "email.outbox", NULL, NULL, "[]");
}

static void email_without_outbox_file_writes_only_the_table(void **state)
{
    struct fixture *f = *state;
    fake_service_close(&f->svc);
    unsetenv("CELERIAC_EMAIL_OUTBOX_FILE");
    open_service(&f->svc, "email");
    expect_ok(f, "email.send_welcome", NULL,
              "{\"user\": {\"username\": \"c\", \"email\": \"c@x.io\"}}",
              "{\"to\":\"c@x.io\",\"subject\":\"Welcome, c!\",\"outbox_id\":1}");
    assert_int_not_equal(access(f->outbox_file, F_OK), 0);
}

/* ---- bench ---- */

/* Packs a value of every kind; noop must return the same bytes. */
static void pack_every_kind(msgpack_packer *pk)
{
    static const char music[] = "G clef \xf0\x9d\x84\x9e and \xe2\x82\xac";
    static const char bytes[] = {0, 1, (char)0xff, 'b'};
    msgpack_pack_array(pk, 16);
    msgpack_pack_uint64(pk, UINT64_MAX);
    msgpack_pack_int64(pk, INT64_MIN);
    msgpack_pack_int64(pk, -1);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_str_with_body(pk, music, sizeof music - 1);
    msgpack_pack_bin_with_body(pk, bytes, sizeof bytes);
    msgpack_pack_float(pk, 1.5f);
    msgpack_pack_double(pk, 0.1);
    msgpack_pack_nil(pk);
    msgpack_pack_true(pk);
    msgpack_pack_false(pk);
    msgpack_pack_array(pk, 0);
    msgpack_pack_map(pk, 0);
    msgpack_pack_str(pk, 0);
    msgpack_pack_ext_with_body(pk, "xy", 2, 5);
    msgpack_pack_map(pk, 2);
    msgpack_pack_str_with_body(pk, "nested", 6);
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 1);
    msgpack_pack_int64(pk, 3);
    msgpack_pack_bin(pk, 0);
    msgpack_pack_nil(pk);
    msgpack_pack_float(pk, -0.0f);
}

static void bench_noop_returns_its_argument_byte_for_byte(void **state)
{
    struct fixture *f = *state;
    struct cel_job *j = &f->job;
    fake_job_init(j, "bench.noop");
    msgpack_pack_array(&j->args_pk, 1);
    size_t header = j->args_buf.size;
    pack_every_kind(&j->args_pk);
    assert_int_equal(fake_job_run(&f->svc, j), 0);
    assert_int_equal(j->result_buf.size, j->args_buf.size - header);
    assert_memory_equal(j->result_buf.data, j->args_buf.data + header, j->result_buf.size);

    expect_ok(f, "bench.noop", NULL, NULL, "null");
    expect_ok(f, "bench.noop", NULL, "{\"x\": {\"a\": [1, 2.5]}}", "{\"a\":[1,2.5]}");
}

static void bench_flaky_retries_until_n(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(fake_service_task(&f->svc, "bench.flaky")->max_retries, 10);
    for (int retries = 0; retries < 3; retries++) {
        fake_job_free(&f->job);
        fake_job_init(&f->job, "bench.flaky");
        f->job.info.retries = retries;
        f->job.info.max_retries = 10;
        assert_int_equal(fake_job_args_json(&f->job, "[3]"), 0);
        assert_true(fake_job_run(&f->svc, &f->job) < 0);
        assert_int_equal(f->job.retried, 1);
        assert_true(f->job.countdown == 1.0);
        assert_string_equal(f->job.exc_type, "RuntimeError");
    }
    f->job.info.retries = 3;
    fake_job_free(&f->job);
    fake_job_init(&f->job, "bench.flaky");
    f->job.info.retries = 3;
    assert_int_equal(fake_job_args_json(&f->job, "[3]"), 0);
    assert_int_equal(fake_job_run(&f->svc, &f->job), 0);
    assert_string_equal(fake_job_result_json(&f->job), "3");
    expect_ok(f, "bench.flaky", "[0]", NULL, "0");
}

static void bench_count_increments_a_named_counter(void **state)
{
    struct fixture *f = *state;
    expect_ok(f, "bench.count", "[\"a\"]", NULL, "1");
    expect_ok(f, "bench.count", "[\"a\"]", NULL, "2");
    expect_ok(f, "bench.count", NULL, "{\"name\": \"b\"}", "1");
    fake_service_close(&f->svc);
    open_service(&f->svc, "bench");
    expect_ok(f, "bench.count", "[\"a\"]", NULL, "3");
    expect_exc(f, "bench.count", "[1]", NULL, "TypeError",
               "bench.count() argument 'name' must be str");
}

static void bench_spin_stops_at_the_soft_deadline(void **state)
{
    struct fixture *f = *state;
    fake_job_init(&f->job, "bench.spin");
    f->job.deadline = 1;
    assert_int_equal(fake_job_args_json(&f->job, "[3600]"), 0);
    assert_int_equal(fake_job_run(&f->svc, &f->job), 0);
    assert_string_equal(fake_job_result_json(&f->job), "\"soft-timeout\"");
    expect_ok(f, "bench.spin", "[0]", NULL, "1");
    expect_exc(f, "bench.spin", NULL, NULL, "TypeError",
               "bench.spin() missing required argument: 'seconds'");
}

static void bench_fail_sleep_and_alloc(void **state)
{
    struct fixture *f = *state;
    expect_exc(f, "bench.fail", "[\"boom: 100%\"]", NULL, "RuntimeError", "boom: 100%");
    expect_exc(f, "bench.fail", NULL, NULL, "RuntimeError", "bench.fail called");
    expect_ok(f, "bench.sleep", "[0.001]", NULL, "null");
    expect_ok(f, "bench.sleep", "[0]", NULL, "null");
    expect_exc(f, "bench.sleep", "[\"1\"]", NULL, "TypeError",
               "bench.sleep() argument 'seconds' must be a number");
    expect_exc(f, "bench.sleep", "[-1]", NULL, "ValueError",
               "bench.sleep() argument 'seconds' must be non-negative");
    expect_exc(f, "bench.sleep", "[1e300]", NULL, "OverflowError",
               "bench.sleep() argument 'seconds' is too large");
    expect_ok(f, "bench.alloc", "[1048576]", NULL, "1048576");
    expect_ok(f, "bench.alloc", "[0]", NULL, "0");
}

/* Runs task in a child process and returns the signal that killed it (0 if none). */
static int killing_signal(struct fixture *f, const char *task)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would turn the crash into abort() */
        signal(SIGABRT, SIG_DFL);
        struct cel_job j;
        fake_call(&f->svc, &j, task, NULL, NULL);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void bench_crash_and_abort_kill_the_process(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(killing_signal(f, "bench.crash"), SIGSEGV);
    assert_int_equal(killing_signal(f, "bench.abort"), SIGABRT);
}

/* open_service() for a forked child: no cmocka failure (it would unwind into the test runner). */
static void child_open(struct fake_service *s, const char *name)
{
    char path[PATH_MAX];
    service_path(path, sizeof path, "services", name);
    if (fake_service_open(s, path) != 0) {
        fprintf(stderr, "%s\n", s->errstr);
        _exit(2);
    }
}

/* Several processes open the same fresh files at once and write concurrently: WAL and the busy
 * timeout must make every write count, and the unique constraints hold across processes. */
static void concurrent_processes_share_the_databases(void **state)
{
    enum { CHILDREN = 4, COUNTS = 25 };
    struct fixture *f = *state;
    pid_t pids[CHILDREN];
    fflush(NULL);
    for (int c = 0; c < CHILDREN; c++) {
        assert_true((pids[c] = fork()) >= 0);
        if (pids[c] > 0)
            continue;
        struct fake_service bench, users;
        struct cel_job j;
        int bad = 0;
        child_open(&bench, "bench");
        child_open(&users, "users");
        for (int i = 0; i < COUNTS; i++) {
            bad |= fake_call(&bench, &j, "bench.count", "[\"shared\"]", NULL) != 0;
            fake_job_free(&j);
        }
        fake_call(&users, &j, "users.create", "[\"same\", \"same@x.io\"]", NULL);
        bad |= j.failed && strcmp(j.exc_message, "username 'same' already exists") != 0;
        fake_job_free(&j);
        fake_service_close(&bench);
        fake_service_close(&users);
        _exit(bad);
    }
    for (int c = 0; c < CHILDREN; c++) {
        int status;
        assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    open_service(&f->svc, "bench");
    expect_ok(f, "bench.count", "[\"shared\"]", NULL, "101");
    fake_service_close(&f->svc);
    open_service(&f->svc, "users");
    expect_ok(f, "users.list", NULL, NULL,
              "[{\"id\":1,\"username\":\"same\",\"email\":\"same@x.io\"}]");
}

static void services_land_in_the_data_dir_from_the_environment(void **state)
{
    struct fixture *f = *state;
    char nested[128], path[160];
    snprintf(nested, sizeof nested, "%s/a/b/c", f->dir);
    setenv("CELERIAC_DATA_DIR", nested, 1);
    open_service(&f->svc, "bench");
    open_service(&f->svc2, "email");
    snprintf(path, sizeof path, "%s/bench.db", nested);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/email.db", nested);
    assert_int_equal(access(path, F_OK), 0);
}

/* ---- the loader's test services have exactly the defect they are named for ---- */

static const struct cel_service *descriptor(void *dl)
{
    const struct cel_service *(*fn)(void);
    *(void **)&fn = dlsym(dl, CEL_SERVICE_SYMBOL);
    return fn ? fn() : NULL;
}

static void *open_test_service(const char *name)
{
    char path[PATH_MAX];
    service_path(path, sizeof path, "tests/services", name);
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl)
        fail_msg("%s", dlerror());
    return dl;
}

static int has_duplicate(const struct cel_task_def *t)
{
    for (; t->name; t++)
        for (const struct cel_task_def *u = t + 1; u->name; u++)
            if (strcmp(t->name, u->name) == 0)
                return 1;
    return 0;
}

static void test_services_have_their_defects(void **state)
{
    void *dl = open_test_service("no_symbol");
    assert_null(descriptor(dl));
    dlclose(dl);
    dl = open_test_service("bad_abi");
    assert_int_equal(descriptor(dl)->abi, 999);
    dlclose(dl);
    dl = open_test_service("bad_size");
    assert_true(descriptor(dl)->size < sizeof(struct cel_service));
    dlclose(dl);
    dl = open_test_service("dup_task");
    assert_true(has_duplicate(descriptor(dl)->tasks));
    dlclose(dl);
    dl = open_test_service("bad_name");
    assert_string_equal(descriptor(dl)->tasks[1].name, "bad_name.bad name!");
    dlclose(dl);
    dl = open_test_service("bad_prefix");
    assert_string_equal(descriptor(dl)->tasks[0].name, "other.task");
    dlclose(dl);
    dl = open_test_service("dup_across");
    assert_string_equal(descriptor(dl)->tasks[0].name, "bench.noop");
    dlclose(dl);
}

static void testsvc_echoes_and_reports_its_version(void **state)
{
    struct fixture *f = *state;
    char path[PATH_MAX];
    service_path(path, sizeof path, "tests/services", "testsvc");
    if (fake_service_open(&f->svc, path) != 0)
        fail_msg("%s", f->svc.errstr);
    expect_ok(f, "testsvc.echo", "[[1, \"two\", null]]", NULL, "[1,\"two\",null]");
    expect_ok(f, "testsvc.echo", NULL, "{\"x\": {\"k\": -1.5}}", "{\"k\":-1.5}");
    expect_ok(f, "testsvc.version", NULL, NULL, "1");
}

int main(void)
{
#define T(name, setup) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(users_create_returns_the_user, setup_users),
        T(users_create_refuses_a_duplicate_username, setup_users),
        T(users_create_refuses_a_duplicate_email, setup_users),
        T(users_create_validates_the_email, setup_users),
        T(users_create_validates_the_username, setup_users),
        T(users_create_checks_arguments_like_python, setup_users),
        T(users_get_finds_a_user_or_raises_key_error, setup_users),
        T(users_list_returns_users_in_id_order, setup_users),
        T(users_data_survives_a_restart, setup_users),
        T(email_send_welcome_writes_the_outbox, setup_email),
        T(email_send_welcome_takes_what_users_create_returns, setup_email),
        T(email_send_welcome_checks_the_user, setup_email),
        T(email_without_outbox_file_writes_only_the_table, setup_email),
        T(bench_noop_returns_its_argument_byte_for_byte, setup_bench),
        T(bench_flaky_retries_until_n, setup_bench),
        T(bench_count_increments_a_named_counter, setup_bench),
        T(bench_spin_stops_at_the_soft_deadline, setup_bench),
        T(bench_fail_sleep_and_alloc, setup_bench),
        T(bench_crash_and_abort_kill_the_process, setup_bench),
        T(concurrent_processes_share_the_databases, setup_none),
        T(services_land_in_the_data_dir_from_the_environment, setup_none),
        T(testsvc_echoes_and_reports_its_version, setup_none),
        cmocka_unit_test(test_services_have_their_defects),
    };
#undef T
    return cmocka_run_group_tests_name("services", tests, NULL, NULL);
}
