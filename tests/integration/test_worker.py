"""The worker runtime against the real stack: results readable by Python Celery, prefork
parallelism, crash isolation and dead letters, no loss on SIGKILL, warm shutdown, the service
loader, and the refusal paths (unknown task, undecodable message, expired, ignore_result)."""

import datetime
import os
import shutil
import signal
import sqlite3
import subprocess
import uuid

import pytest

from conftest import (SERVICES_DIR, TEST_SERVICES_DIR, WORKER_BIN, result_meta, uniq, wait_for,
                      wait_meta)


def test_users_create_result_is_readable_by_the_store_and_by_celery(workers, queue, celery_app,
                                                                    redis_client):
    workers.start(queue, "-c", "2")
    name = uniq("alice")
    r = celery_app.send_task("users.create", args=[name, f"{name}@x.io"], queue=queue)
    value = r.get(timeout=30)
    assert value["username"] == name and value["email"] == f"{name}@x.io"
    assert isinstance(value["id"], int)
    meta = result_meta(redis_client, r.id)
    assert meta["status"] == "SUCCESS" and meta["task_id"] == r.id
    assert meta["result"] == value and meta["children"] == []
    assert 0 < redis_client.ttl(f"celery-task-meta-{r.id}") <= 86400

    dup = celery_app.send_task("users.create", args=[name, f"{name}@x.io"], queue=queue)
    with pytest.raises(ValueError, match=f"username '{name}' already exists"):
        dup.get(timeout=30)
    assert result_meta(redis_client, dup.id)["result"]["exc_module"] == "builtins"


def test_json_task_gets_a_json_result(workers, queue, stack, redis_client):
    from celery import Celery

    app = Celery("json-client", broker=stack.broker, backend=stack.backend)  # Celery's defaults
    try:
        workers.start(queue, "-c", "1")
        r = app.send_task("bench.noop", args=[{"a": [1, 2.5, "x"]}], queue=queue)
        assert r.get(timeout=30) == {"a": [1, 2.5, "x"]}
        assert redis_client.get(f"celery-task-meta-{r.id}").startswith(b'{"status": "SUCCESS"')
    finally:
        app.close()


def events(worker, outcome):
    return [rec for rec in worker.log_records() if rec.get("outcome") == outcome]


def test_concurrency_two_runs_two_slow_jobs_in_parallel(workers, queue, celery_app):
    w = workers.start(queue, "--concurrency", "2")
    a = celery_app.send_task("bench.sleep", args=[1.5], queue=queue)
    b = celery_app.send_task("bench.sleep", args=[1.5], queue=queue)
    a.get(timeout=30)
    b.get(timeout=30)
    # Ordering, not timing: in the supervisor's own log both jobs started before either ended.
    order = [(rec["outcome"], rec["id"]) for rec in w.log_records()
             if rec.get("id") in (a.id, b.id) and rec.get("outcome") in ("started", "success")]
    assert [o for o, _ in order] == ["started", "started", "success", "success"], order


def dead_letters(amqp, queue):
    out = []
    while True:
        m = amqp.get(queue + ".dead")
        if m is None:
            return out
        out.append(m)


def test_segfaulting_handler_fails_after_max_crashes_and_is_dead_lettered(
        workers, queue, celery_app, redis_client, amqp):
    w = workers.start(queue, "-c", "2", "--max-crashes", "3")
    r = celery_app.send_task("bench.crash", queue=queue)
    meta = wait_meta(redis_client, r.id)
    assert meta["status"] == "FAILURE"
    exc = meta["result"]
    assert exc["exc_type"] == "WorkerLostError" and exc["exc_module"] == "billiard.exceptions"
    assert exc["exc_message"] == [
        f"Worker exited prematurely: signal 11 (SIGSEGV) Job: {r.id}."]
    assert int(redis_client.get(f"celeriac-attempts-{r.id}")) == 3
    assert len(events(w, "crash")) == 2  # two requeues, the third crash is final

    dead = wait_for(lambda: dead_letters(amqp, queue), what="a dead letter")
    assert len(dead) == 1
    h = dead[0].headers
    assert h["id"] == r.id and h["task"] == "bench.crash"
    assert h["x-celeriac-error-type"] == "WorkerLostError"
    assert h["x-celeriac-error-attempts"] == 3 and h["x-celeriac-error-signal"] == 11
    assert h["x-celeriac-error-worker"] == w.hostname

    # the worker keeps serving
    assert celery_app.send_task("bench.noop", args=["after"], queue=queue).get(timeout=30) == "after"
    assert w.proc.poll() is None


def test_sigkill_with_1000_jobs_in_flight_loses_none(workers, queue, celery_app, redis_client,
                                                     data_dir):
    """Every id ends SUCCESS (stored once: SUCCESS is never overwritten) and ran at least once.
    A job can run twice only if the killed worker had received it and not acked it, so the
    number of extra executions (counted by bench.count in bench.db) is at most its prefetch."""
    prefetch = 2 * 100
    # a fresh child per job slows the first worker down enough to be killed mid-stream
    a = workers.start(queue, "-c", "2", "--prefetch-multiplier", "100", "--max-tasks-per-child",
                      "1")
    names = [uniq("job") for _ in range(1000)]
    results = [celery_app.send_task("bench.count", args=[n], queue=queue) for n in names]

    def stored():
        p = redis_client.pipeline(transaction=False)
        for r in results:
            p.exists(f"celery-task-meta-{r.id}")
        return sum(p.execute())

    wait_for(lambda: stored() >= 20, what="the first results")
    a.kill()
    assert stored() < 1000, "the first worker finished everything before it was killed"

    workers.start(queue, "-c", "2")
    for r in results:
        meta = wait_meta(redis_client, r.id)
        assert meta["status"] == "SUCCESS", meta
    db = sqlite3.connect(data_dir / "bench.db")
    try:
        counts = dict(db.execute("SELECT name, value FROM counters"))
    finally:
        db.close()
    runs = [counts.get(n, 0) for n in names]
    assert min(runs) >= 1
    assert sum(runs) - len(names) <= prefetch


def test_sigterm_lets_a_slow_job_finish_and_acks_it(workers, queue, celery_app, redis_client,
                                                     amqp):
    w = workers.start(queue, "-c", "1")
    r = celery_app.send_task("bench.sleep", args=[2], queue=queue)
    w.wait_log('"outcome":"started"')
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert result_meta(redis_client, r.id)["status"] == "SUCCESS"
    assert amqp.count(queue) == 0  # acked: nothing came back to the queue
    assert "warm shutdown complete" in w.log_text()


def bad_services_dir(tmp_path):
    d = tmp_path / "services"
    d.mkdir()
    for so in TEST_SERVICES_DIR.glob("*.so"):
        shutil.copy(so, d / so.name)
    shutil.copy(SERVICES_DIR / "bench.so", d / "bench.so")
    return d


EXPECTED_REFUSALS = {
    "bad_abi.so": "wrong ABI 999",
    "bad_size.so": "wrong size",
    "no_symbol.so": "missing symbol celeriac_service",
    "dup_task.so": "duplicate task name 'dup_task.same'",
    "bad_name.so": "invalid task name 'bad_name.bad name!'",
    "bad_prefix.so": "invalid task name 'other.task'",
    "dup_across.so": "duplicate task name 'bench.noop' (also in ",
}


def test_loader_refuses_each_bad_service_and_keeps_the_good_ones(workers, queue, tmp_path,
                                                                 celery_app):
    d = bad_services_dir(tmp_path)
    w = workers.start(queue, services=d)
    log = w.log_text()
    for name, reason in EXPECTED_REFUSALS.items():
        assert f"{d / name}: {reason}" in log, (name, reason)
    assert "service testsvc loaded" in log and "service bench loaded" in log
    assert celery_app.send_task("testsvc.echo", args=[7], queue=queue).get(timeout=30) == 7


def test_strict_refuses_to_start_with_a_bad_service(tmp_path, stack):
    d = bad_services_dir(tmp_path)
    env = dict(os.environ, CELERIAC_BROKER_URL=stack.broker, CELERIAC_RESULT_BACKEND=stack.backend)
    p = subprocess.run([str(WORKER_BIN), "--queue", uniq("strict"), "--services", str(d),
                        "--strict", "--log-format", "text"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0
    assert f"{d}/bad_abi.so: wrong ABI 999" in p.stderr


def test_bad_option_exits_2_with_one_line(stack):
    p = subprocess.run([str(WORKER_BIN), "--queue", "x", "--concurrency", "zero"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2
    assert p.stderr.strip() == "worker: --concurrency: invalid number 'zero'"
    h = subprocess.run([str(WORKER_BIN), "--help"], capture_output=True, text=True, timeout=10)
    assert h.returncode == 0
    for opt in ("--queue", "--concurrency", "--pool", "--services", "--broker", "--backend",
                "--prefetch-multiplier", "--hostname", "--loglevel", "--log-format",
                "--max-tasks-per-child", "--max-memory-per-child", "--max-crashes",
                "--time-limit", "--soft-time-limit", "--shutdown-timeout", "--result-expires",
                "--result-format", "--strict", "--max-message-size"):
        assert opt in h.stdout


def test_unknown_task_fails_not_registered_and_is_dead_lettered(workers, queue, celery_app,
                                                                redis_client, amqp):
    from celery.exceptions import NotRegistered

    workers.start(queue)
    r = celery_app.send_task("bench.no_such_task", args=[1], queue=queue)
    with pytest.raises(NotRegistered):
        r.get(timeout=30)
    assert result_meta(redis_client, r.id)["result"] == {
        "exc_type": "NotRegistered", "exc_message": ["bench.no_such_task"],
        "exc_module": "celery.exceptions"}
    dead = wait_for(lambda: dead_letters(amqp, queue), what="a dead letter")
    assert dead[0].headers["id"] == r.id
    assert dead[0].headers["x-celeriac-error-type"] == "NotRegistered"


def test_undecodable_message_is_dead_lettered_and_the_worker_goes_on(workers, queue, amqp,
                                                                    celery_app):
    w = workers.start(queue)
    tid = str(uuid.uuid4())
    amqp.publish_raw(queue, b"\xc1 not msgpack", headers={"task": "bench.noop", "id": tid})
    dead = wait_for(lambda: dead_letters(amqp, queue), what="a dead letter")
    assert dead[0].body == b"\xc1 not msgpack"
    h = dead[0].headers
    assert h["id"] == tid and h["x-celeriac-error-type"] == "celeriac.DecodeError"
    assert h["x-celeriac-error-message"]
    assert celery_app.send_task("bench.noop", args=[1], queue=queue).get(timeout=30) == 1
    assert w.proc.poll() is None


def publish_task_message(celery_app, queue, name, args, **options):
    """Publishes a Celery v2 message built by Celery itself, without the AMQP expiration
    property (RabbitMQ would otherwise drop an expired message before a worker sees it)."""
    tid = str(uuid.uuid4())
    msg = celery_app.amqp.as_task_v2(tid, name, args=args, kwargs={}, **options)
    with celery_app.producer_or_acquire() as producer:
        producer.publish(msg.body, exchange="", routing_key=queue, headers=msg.headers,
                         serializer="msgpack", delivery_mode=2, **{
                             k: v for k, v in msg.properties.items()
                             if k in ("correlation_id", "reply_to")})
    return tid


def test_expired_task_is_revoked_not_run(workers, queue, celery_app, redis_client):
    workers.start(queue)
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    tid = publish_task_message(celery_app, queue, "bench.count", [uniq("never")], expires=past)
    meta = wait_meta(redis_client, tid)
    assert meta["status"] == "REVOKED"
    assert meta["result"] == {"exc_type": "TaskRevokedError", "exc_message": ["expired"],
                              "exc_module": "celery.exceptions"}


def test_ignore_result_stores_nothing_on_success(workers, queue, celery_app, redis_client):
    workers.start(queue, "-c", "1")
    ignored = celery_app.send_task("bench.noop", args=[1], queue=queue, ignore_result=True)
    after = celery_app.send_task("bench.noop", args=[2], queue=queue)
    assert after.get(timeout=30) == 2  # one child, FIFO: the ignored job finished first
    assert redis_client.get(f"celery-task-meta-{ignored.id}") is None


def test_worker_registers_itself_and_leaves_on_shutdown(workers, queue, redis_client):
    import json

    w = workers.start(queue, "-c", "2")
    key = f"celeriac-worker-{w.hostname}"
    doc = json.loads(wait_for(lambda: redis_client.get(key), what="the registry entry"))
    assert doc["hostname"] == w.hostname and doc["pid"] == w.pid
    assert doc["queues"] == [queue] and doc["concurrency"] == 2
    assert "bench.noop" in doc["tasks"] and "users.create" in doc["tasks"]
    assert 0 < redis_client.ttl(key) <= 30
    assert w.stop() == 0
    assert redis_client.get(key) is None


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path / "redis"
        self.dir.mkdir()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        import redis

        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind",
                                      "127.0.0.1", "--save", "", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _ping(client), timeout=20, what="redis-server")
        return client

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _ping(client):
    try:
        return client.ping()
    except Exception:
        return False


def test_results_are_held_while_redis_is_down_and_acked_only_once_stored(
        workers, queue, celery_app, amqp, tmp_path):
    rs = PrivateRedis(tmp_path)
    client = rs.start()
    try:
        w = workers.start(queue, "-c", "1", env={"CELERIAC_RESULT_BACKEND": rs.url})
        rs.stop()
        r = celery_app.send_task("bench.noop", args=["held"], queue=queue)
        w.wait_log("storing results failed")
        client = rs.start()  # same port, empty: the worker reconnects and stores
        meta = wait_for(lambda: client.get(f"celery-task-meta-{r.id}"), what="the held result")
        import msgpack

        assert msgpack.unpackb(meta)["result"] == "held"
        assert w.stop() == 0
        assert amqp.count(queue) == 0  # acked after the store, so nothing came back
    finally:
        rs.stop()


def test_warm_shutdown_requeues_jobs_that_had_not_started(workers, queue, celery_app,
                                                          redis_client, amqp):
    w = workers.start(queue, "-c", "1")
    slow = celery_app.send_task("bench.sleep", args=[2], queue=queue)
    w.wait_log('"outcome":"started"')
    waiting = [celery_app.send_task("bench.noop", args=[i], queue=queue) for i in range(3)]
    wait_for(lambda: amqp.count(queue) == 0, what="the worker to prefetch the queued jobs")
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert result_meta(redis_client, slow.id)["status"] == "SUCCESS"
    assert all(result_meta(redis_client, r.id) is None for r in waiting)
    assert amqp.count(queue) == 3  # nacked with requeue, for another worker


def test_second_signal_is_a_cold_shutdown_without_ack(workers, queue, celery_app, redis_client,
                                                      amqp):
    w = workers.start(queue, "-c", "1")
    slow = celery_app.send_task("bench.sleep", args=[30], queue=queue)
    w.wait_log('"outcome":"started"')
    w.signal(signal.SIGTERM)
    w.wait_log("warm shutdown:")
    w.signal(signal.SIGTERM)
    assert w.wait() == 1
    assert result_meta(redis_client, slow.id) is None
    assert wait_for(lambda: amqp.count(queue) == 1, what="the unacked job back in the queue")


def test_solo_pool_runs_jobs_in_process(workers, queue, celery_app):
    workers.start(queue, "--pool", "solo")
    name = uniq("solo")
    assert celery_app.send_task("users.create", args=[name, f"{name}@x.io"],
                                queue=queue).get(timeout=30)["username"] == name
    with pytest.raises(RuntimeError, match="boom"):
        celery_app.send_task("bench.fail", args=["boom"], queue=queue).get(timeout=30)


def test_max_tasks_per_child_replaces_the_child(workers, queue, celery_app):
    w = workers.start(queue, "-c", "1", "--max-tasks-per-child", "2")
    for i in range(5):
        assert celery_app.send_task("bench.noop", args=[i], queue=queue).get(timeout=30) == i
    started = [rec for rec in w.log_records() if rec.get("msg", "").startswith("child 0 started")]
    assert len(started) >= 3  # 5 jobs, 2 per child


def test_max_memory_per_child_limits_the_address_space(workers, queue, celery_app):
    workers.start(queue, "-c", "1", "--max-memory-per-child", str(256 * 1024))
    assert celery_app.send_task("bench.alloc", args=[1 << 20], queue=queue).get(timeout=30) == \
        1 << 20
    with pytest.raises(MemoryError):
        celery_app.send_task("bench.alloc", args=[1 << 30], queue=queue).get(timeout=30)


def test_result_format_flag_overrides_the_task_format(workers, queue, stack, redis_client):
    from celery import Celery

    # a private client: the shared one would choke on a JSON result published to its channel
    app = Celery("fmt-client", broker=stack.broker, backend=stack.backend)
    app.conf.update(task_serializer="msgpack", result_serializer="msgpack",
                    accept_content=["msgpack", "json"])
    try:
        workers.start(queue, "--result-format", "json")
        r = app.send_task("bench.noop", args=[[1, "a"]], queue=queue)  # a msgpack task
        raw = wait_for(lambda: redis_client.get(f"celery-task-meta-{r.id}"), what="the result")
        assert raw.startswith(b'{"status": "SUCCESS", "result": [1, "a"]')
    finally:
        app.close()


def test_oversized_message_is_dead_lettered(workers, queue, celery_app, amqp):
    workers.start(queue, "--max-message-size", "1000")
    big = celery_app.send_task("bench.noop", args=["x" * 5000], queue=queue)
    dead = wait_for(lambda: dead_letters(amqp, queue), what="a dead letter")
    assert dead[0].headers["id"] == big.id
    assert dead[0].headers["x-celeriac-error-type"] == "celeriac.DecodeError"
    assert celery_app.send_task("bench.noop", args=["small"], queue=queue).get(timeout=30) == \
        "small"


def test_expiry_is_checked_again_just_before_the_job_runs(workers, queue, celery_app,
                                                         redis_client):
    w = workers.start(queue, "-c", "1")
    slow = celery_app.send_task("bench.sleep", args=[2.5], queue=queue)
    w.wait_log('"outcome":"started"')
    late = celery_app.send_task("bench.count", args=[uniq("late")], queue=queue, expires=1)
    meta = wait_meta(redis_client, late.id)
    assert meta["status"] == "REVOKED" and meta["result"]["exc_message"] == ["expired"]
    assert result_meta(redis_client, slow.id)["status"] == "SUCCESS"


def test_one_worker_consumes_several_queues(workers, new_queue, celery_app):
    q1, q2 = new_queue("multi-a"), new_queue("multi-b")
    workers.start(f"{q1},{q2}", "-c", "2")
    assert celery_app.send_task("bench.noop", args=["a"], queue=q1).get(timeout=30) == "a"
    assert celery_app.send_task("bench.noop", args=["b"], queue=q2).get(timeout=30) == "b"
