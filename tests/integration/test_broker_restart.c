/* test_broker_restart.c: the adapter survives a RabbitMQ restart under it. Starts its OWN stack
 * (scripts/stack.sh with a private CELERIAC_RUN_DIR), restarts its RabbitMQ while a delivery is
 * unacked, and checks: the loss is reported as CEL_ECONN, reconnect() succeeds, the old delivery
 * cannot be settled (CEL_ESTALE), consuming and delayed publishing resume, nothing is lost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <limits.h>
#include <sys/stat.h>

#include "test_broker_util.h"

static char run_dir[PATH_MAX + 64], script[PATH_MAX], url[512];

static int stack(const char *cmd, char *out, size_t outlen)
{
    char line[5 * PATH_MAX];
    /* from inside the run dir, so an Erlang crash dump of rabbitmqctl lands there */
    snprintf(line, sizeof line, "mkdir -p '%s' && cd '%s' && CELERIAC_RUN_DIR='%s' '%s' %s",
             run_dir, run_dir, run_dir, script, cmd);
    FILE *p = popen(line, "r");
    if (!p)
        return -1;
    char buf[480];
    while (fgets(buf, sizeof buf, p)) {
        const char *k = "export CELERIAC_BROKER_URL=";
        if (out && strncmp(buf, k, strlen(k)) == 0) {
            snprintf(out, outlen, "%s", buf + strlen(k));
            out[strcspn(out, "\n")] = 0;
        }
    }
    return pclose(p);
}

static int find_script(void)
{
    const char *cands[] = {"scripts/stack.sh", CEL_BUILD_DIR "/../scripts/stack.sh",
                           CEL_BUILD_DIR "/../../scripts/stack.sh"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        if (access(cands[i], X_OK) == 0 && realpath(cands[i], script))
            return 0;
    }
    return -1;
}

static int group_setup(void **state)
{
    (void)state;
    if (find_script() != 0) {
        fprintf(stderr, "scripts/stack.sh not found: run from the repository root\n");
        return -1;
    }
    char root[PATH_MAX];
    memcpy(root, script, sizeof root);
    *strrchr(root, '/') = 0;
    *strrchr(root, '/') = 0;
    snprintf(run_dir, sizeof run_dir, "%.*s/.run/test-broker-restart-%d", PATH_MAX - 1, root,
             (int)getpid());
    fprintf(stderr, "# starting a private stack in %s\n", run_dir);
    if (stack("up", url, sizeof url) != 0 || !url[0]) {
        fprintf(stderr, "could not start a private stack in %s\n", run_dir);
        stack("down", NULL, 0);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    stack("down", NULL, 0);
    char cmd[PATH_MAX + 100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", run_dir);
    return 0;
}

static void publish_n(const struct cel_broker_class *c, struct cel_broker *b, const char *q,
                      int from, int n, uint32_t delay)
{
    static char bodies[64][16];
    struct cel_props p = {.content_type = "application/x-msgpack", .delivery_mode = 2};
    struct cel_publish m[64];
    for (int i = 0; i < n; i++) {
        snprintf(bodies[i], sizeof bodies[i], "%d", from + i);
        m[i] = (struct cel_publish){.exchange = "",
                                    .routing_key = q,
                                    .props = &p,
                                    .body = {bodies[i], strlen(bodies[i])},
                                    .delay_s = delay};
    }
    size_t confirmed = 0;
    assert_int_equal(c->publish(b, m, (size_t)n, &confirmed), 0);
    assert_int_equal(confirmed, (size_t)n);
}

static void survives_a_rabbitmq_restart(void **state)
{
    (void)state;
    char err[512], q[200];
    int rc;
    struct cel_broker_opts o = {.url = url, .heartbeat = 5};
    struct cel_broker *b;
    assert_int_equal(cel_broker_open(&b, &o, err, sizeof err), 0);
    const struct cel_broker_class *c = CEL_BROKER_CLASS(b);
    test_name(q, sizeof q, "restart");
    assert_int_equal(c->declare(b, q), 0);
    assert_int_equal(c->consume(b, q, 1), 0);
    publish_n(c, b, q, 0, 3, 0);
    struct cel_arena a;
    cel_arena_init(&a, 0);
    struct cel_delivery old;
    assert_int_equal(c->next(b, &old, &a, 10000), 0);

    assert_int_equal(stack("restart-rabbitmq", NULL, 0), 0);
    struct cel_delivery d;
    for (int i = 0; i < 30 && (rc = c->next(b, &d, &a, 1000)) == CEL_ETIMEDOUT; i++)
        ;
    assert_int_equal(rc, CEL_ECONN);
    printf("# lost: %s\n", c->errstr(b));
    assert_int_equal(c->fd(b), -1);
    for (unsigned i = 0; i < 60 && (rc = c->reconnect(b)) != 0; i++)
        usleep(1000 * (useconds_t)cel_backoff_ms(i, 200, 2000) + 100000);
    assert_int_equal(rc, 0);
    assert_true(c->fd(b) >= 0);
    assert_int_equal(c->ack(b, old.conn_gen, old.tag, false), CEL_ESTALE);
    assert_int_equal(c->nack(b, old.conn_gen, old.tag, false, true), CEL_ESTALE);

    publish_n(c, b, q, 3, 2, 0);
    publish_n(c, b, q, 5, 1, 1);
    int seen[6] = {0}, got = 0;
    while (got < 6) {
        assert_int_equal(c->next(b, &d, &a, 15000), 0);
        int i = atoi(d.body.ptr);
        assert_true(i >= 0 && i < 6);
        seen[i]++;
        got++;
        assert_int_equal(c->ack(b, d.conn_gen, d.tag, false), 0);
    }
    for (int i = 0; i < 6; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(c->next(b, &d, &a, 300), CEL_ETIMEDOUT);
    c->free(b);
    cel_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(survives_a_rabbitmq_restart),
    };
    return cmocka_run_group_tests_name("broker_restart", tests, group_setup, group_teardown);
}
