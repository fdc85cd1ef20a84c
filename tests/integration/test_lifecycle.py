"""Job lifecycle in the worker: retries, countdown/eta through the broker's delay levels, hard
and soft time limits, and hot reload of services on SIGHUP."""

import datetime
import shutil
import signal
import subprocess
import time

import pytest

from conftest import (ROOT, SERVICES_DIR, TEST_SERVICES_DIR, result_meta, uniq, wait_for,
                      wait_meta)


def parse_date(s):
    return datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc)


def test_flaky_succeeds_on_the_third_attempt_with_retry_states_in_between(
        workers, queue, celery_app, redis_client):
    w = workers.start(queue, "-c", "2")
    r = celery_app.send_task("bench.flaky", args=[2], queue=queue)
    seen = []

    def finished():
        m = result_meta(redis_client, r.id)
        if m and (not seen or seen[-1]["status"] != m["status"]):
            seen.append(m)
        return m and m["status"] == "SUCCESS"

    wait_for(finished, interval=0.01, what="bench.flaky to succeed")
    assert r.get(timeout=5) == 2
    statuses = [m["status"] for m in seen]
    assert "RETRY" in statuses and statuses[-1] == "SUCCESS"
    retry = next(m for m in seen if m["status"] == "RETRY")
    assert retry["result"]["exc_type"] == "RuntimeError"
    assert retry["result"]["exc_message"][0].startswith("bench.flaky: attempt ")
    assert retry["date_done"] is None
    retries = [rec for rec in w.log_records() if rec.get("outcome") == "retry"]
    assert len(retries) == 2  # attempts 1 and 2 retried, attempt 3 succeeded


def test_retry_limit_turns_into_failure(workers, queue, celery_app, redis_client):
    workers.start(queue)
    r = celery_app.send_task("bench.flaky", args=[20], queue=queue)  # max_retries = 10
    meta = wait_meta(redis_client, r.id, timeout=90)
    assert meta["status"] == "FAILURE"
    assert meta["result"]["exc_type"] == "RuntimeError"
    assert meta["result"]["exc_message"] == ["bench.flaky: attempt 11 of 21 failed"]


def test_countdown_runs_through_the_delay_levels_not_before_its_eta(workers, queue, celery_app,
                                                                   redis_client, amqp):
    w = workers.start(queue)
    sent = datetime.datetime.now(datetime.timezone.utc)
    r = celery_app.send_task("bench.noop", args=["later"], queue=queue, countdown=3)
    meta = wait_meta(redis_client, r.id)
    assert meta["status"] == "SUCCESS" and meta["result"] == "later"
    assert parse_date(meta["date_done"]) >= sent + datetime.timedelta(seconds=3)
    # the worker moved it into the broker (acked, not held in memory)
    assert [rec for rec in w.log_records() if rec.get("outcome") == "delayed"]


def test_hard_time_limit_kills_the_child_and_the_worker_continues(workers, queue, celery_app,
                                                                 redis_client):
    from celery.exceptions import TimeLimitExceeded

    w = workers.start(queue, "-c", "1")
    r = celery_app.send_task("bench.spin", args=[30], queue=queue, time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=30)
    assert result_meta(redis_client, r.id)["result"] == {
        "exc_type": "TimeLimitExceeded", "exc_message": [1.0], "exc_module": "celery.exceptions"}
    assert celery_app.send_task("bench.noop", args=[3], queue=queue).get(timeout=30) == 3
    # a time limit is a failure, not a crash: no crash attempts were counted
    assert redis_client.get(f"celeriac-attempts-{r.id}") is None
    assert w.proc.poll() is None


def test_worker_time_limit_flag(workers, queue, celery_app, redis_client):
    workers.start(queue, "-c", "1", "--time-limit", "1")
    r = celery_app.send_task("bench.spin", args=[30], queue=queue)
    meta = wait_meta(redis_client, r.id)
    assert meta["result"]["exc_type"] == "TimeLimitExceeded"


def test_soft_time_limit_lets_the_handler_return(workers, queue, celery_app):
    workers.start(queue, "-c", "1", "--soft-time-limit", "0.5")
    assert celery_app.send_task("bench.spin", args=[30], queue=queue).get(timeout=30) == \
        "soft-timeout"
    # and from the message's timelimit header
    r = celery_app.send_task("bench.spin", args=[30], queue=queue, soft_time_limit=0.3)
    assert r.get(timeout=30) == "soft-timeout"


def build_testsvc(version, out):
    cflags = subprocess.run(["pkg-config", "--cflags", "msgpack"], capture_output=True,
                            text=True, check=True).stdout.split()
    subprocess.run(["cc", "-shared", "-fPIC", f"-I{ROOT / 'include'}", *cflags,
                    f"-DTESTSVC_VERSION={version}", str(ROOT / "tests/services/testsvc/testsvc.c"),
                    "-o", str(out)], check=True)


def test_sighup_reloads_services_and_a_broken_file_keeps_the_old_version(
        workers, queue, celery_app, tmp_path):
    d = tmp_path / "services"
    d.mkdir()
    shutil.copy(TEST_SERVICES_DIR / "testsvc.so", d / "testsvc.so")
    shutil.copy(SERVICES_DIR / "bench.so", d / "bench.so")
    w = workers.start(queue, "-c", "2", services=d)
    assert celery_app.send_task("testsvc.version", queue=queue).get(timeout=30) == 1
    slow = celery_app.send_task("bench.sleep", args=[2], queue=queue)
    w.wait_log('"outcome":"started"')

    build_testsvc(2, tmp_path / "testsvc.so")
    shutil.move(tmp_path / "testsvc.so", d / "testsvc.so")  # rename: atomic for the loader
    w.signal(signal.SIGHUP)
    w.wait_log("services generation 2 loaded")
    assert celery_app.send_task("testsvc.version", queue=queue).get(timeout=30) == 2
    assert slow.get(timeout=30) is None  # the job running during the reload finished

    (tmp_path / "broken.so").write_bytes(b"not an ELF file")
    shutil.move(tmp_path / "broken.so", d / "testsvc.so")
    w.signal(signal.SIGHUP)
    w.wait_log("services generation 3 loaded")
    assert f"{d / 'testsvc.so'}: keeping the previously loaded version" in w.log_text()
    assert celery_app.send_task("testsvc.version", queue=queue).get(timeout=30) == 2


def outbox_rows(data_dir):
    import sqlite3

    db = sqlite3.connect(data_dir / "email.db")
    try:
        return db.execute("SELECT job_id, to_addr FROM outbox").fetchall()
    finally:
        db.close()


def send_welcome_5_times(celery_app, queue, key):
    user = {"id": 1, "username": "dora", "email": f"{key}@x.io"}
    return [celery_app.send_task("email.send_welcome", args=[user], queue=queue,
                                 headers={"x-celeriac-idempotency-key": key})
            for _ in range(5)]


def test_same_idempotency_key_5_times_sends_one_mail(workers, queue, celery_app, redis_client,
                                                     data_dir):
    workers.start(queue, "-c", "2")
    key = uniq("welcome")
    sent = send_welcome_5_times(celery_app, queue, key)
    values = [r.get(timeout=60) for r in sent]
    assert all(v == values[0] for v in values)  # the same outbox_id for every duplicate
    assert len(outbox_rows(data_dir)) == 1
    assert redis_client.hget(f"celeriac-idem-{key}", "state") == b"done"
    assert 0 < redis_client.ttl(f"celeriac-idem-{key}") <= 86400


def test_idempotency_key_survives_a_kill_between_store_and_ack(workers, queue, celery_app,
                                                               data_dir):
    a = workers.start(queue, "-c", "1",
                      env={"CELERIAC_FAULT_KILL_BEFORE_ACK": "email.send_welcome"})
    key = uniq("welcome")
    sent = send_welcome_5_times(celery_app, queue, key)
    assert a.wait() == -signal.SIGKILL  # the handler ran and stored, the ack never happened
    workers.start(queue, "-c", "2")
    values = [r.get(timeout=60) for r in sent]
    assert all(v == values[0] for v in values)
    assert len(outbox_rows(data_dir)) == 1


def producer_revoke(stack, task_id, *extra):
    from conftest import BUILD

    p = subprocess.run([str(BUILD / "bin" / "producer"), "revoke", task_id, *extra,
                        "--broker", stack.broker, "--backend", stack.backend],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


def test_revoked_before_start_is_not_run_even_by_a_worker_started_later(
        workers, queue, celery_app, redis_client, stack, data_dir):
    import uuid

    tid = str(uuid.uuid4())
    producer_revoke(stack, tid)
    name = uniq("never")
    workers.start(queue)  # started after the revoke: it learns it from Redis
    r = celery_app.send_task("bench.count", args=[name], queue=queue, task_id=tid)
    meta = wait_meta(redis_client, r.id)
    assert meta["status"] == "REVOKED"
    assert meta["result"]["exc_message"] == ["revoked"]
    assert celery_app.send_task("bench.count", args=[name], queue=queue).get(timeout=30) == 1


def test_revoke_terminate_kills_the_running_child(workers, queue, celery_app, redis_client,
                                                  stack):
    w = workers.start(queue, "-c", "1")
    r = celery_app.send_task("bench.sleep", args=[60], queue=queue)
    w.wait_log('"outcome":"started"')
    producer_revoke(stack, r.id, "--terminate")
    meta = wait_meta(redis_client, r.id)
    assert meta["status"] == "REVOKED"
    assert meta["result"] == {"exc_type": "TaskRevokedError", "exc_message": ["terminated"],
                              "exc_module": "celery.exceptions"}
    assert celery_app.send_task("bench.noop", args=[5], queue=queue).get(timeout=30) == 5


RATESVC = r"""
#include <time.h>
#include "celeriac/service.h"
static int tick(const struct cel_host *host, struct cel_job *job, void *state)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return msgpack_pack_double(host->result(job), (double)ts.tv_sec + ts.tv_nsec / 1e9);
}
static const struct cel_task_def tasks[] = {
    {.name = "ratesvc.tick", .handler = tick, .rate_limit = "4/s"},
    {.name = NULL},
};
static const struct cel_service svc = {
    .abi = CEL_SERVICE_ABI, .size = sizeof(struct cel_service), .name = "ratesvc", .tasks = tasks,
};
CEL_SERVICE_EXPORT(svc)
"""


def test_rate_limit_is_a_token_bucket_per_worker(workers, queue, celery_app, tmp_path):
    d = tmp_path / "services"
    d.mkdir()
    src = tmp_path / "ratesvc.c"
    src.write_text(RATESVC)
    cflags = subprocess.run(["pkg-config", "--cflags", "msgpack"], capture_output=True,
                            text=True, check=True).stdout.split()
    subprocess.run(["cc", "-shared", "-fPIC", f"-I{ROOT / 'include'}", *cflags, str(src), "-o",
                    str(d / "ratesvc.so")], check=True)
    workers.start(queue, "-c", "2", services=d)
    sent = [celery_app.send_task("ratesvc.tick", queue=queue) for _ in range(16)]
    times = sorted(r.get(timeout=60) for r in sent)
    # 4/s with a burst of 4: any window of one second holds at most 4 + 4 runs
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 1.0) <= 8
    # 16 runs need at least (16 - 4) / 4 = 3 s of refill after the burst
    assert times[-1] - times[0] >= 2.9
