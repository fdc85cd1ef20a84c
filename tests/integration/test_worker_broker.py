"""The worker across a RabbitMQ restart, on a private stack (the shared one is never
restarted): deliveries in flight when the connection dies are void (never acked on the new
connection), running jobs still finish and store their results, the worker reconnects with
backoff and keeps serving."""

import os
import shutil
import subprocess

import pytest

from conftest import ROOT, result_meta, uniq, wait_for, wait_meta


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory):
    run = ROOT / ".run" / uniq("wstack")
    cwd = tmp_path_factory.mktemp("stack-cwd")  # Erlang tools drop erl_crash.dump in the cwd
    env = dict(os.environ, CELERIAC_RUN_DIR=str(run))
    env.pop("STACK_TLS", None)
    up = subprocess.run([str(ROOT / "scripts" / "stack.sh"), "up"], env=env, capture_output=True,
                        text=True, timeout=180, cwd=cwd)
    if up.returncode != 0:
        pytest.fail(f"cannot start a private stack: {up.stderr}")
    values = {}
    for line in up.stdout.splitlines():
        line = line.removeprefix("export ")
        if "=" in line:
            k, v = line.split("=", 1)
            values[k] = v.strip("'\"")
    yield env, values, cwd
    subprocess.run([str(ROOT / "scripts" / "stack.sh"), "down"], env=env, timeout=120, cwd=cwd)
    shutil.rmtree(run, ignore_errors=True)


def test_worker_survives_a_rabbitmq_restart(private_stack, workers, tmp_path):
    import redis
    from celery import Celery

    env, values, cwd = private_stack
    broker, backend = values["CELERIAC_BROKER_URL"], values["CELERIAC_RESULT_BACKEND"]
    app = Celery("restart", broker=broker, backend=backend)
    app.conf.update(task_serializer="msgpack", result_serializer="msgpack",
                    accept_content=["msgpack", "json"])
    store = redis.Redis.from_url(backend)
    q = uniq("restart")
    try:
        w = workers.start(q, "-c", "2", env={"CELERIAC_BROKER_URL": broker,
                                             "CELERIAC_RESULT_BACKEND": backend})
        slow = app.send_task("bench.sleep", args=[3], queue=q)
        w.wait_log('"outcome":"started"')
        subprocess.run([str(ROOT / "scripts" / "stack.sh"), "restart-rabbitmq"], env=env,
                       check=True, capture_output=True, timeout=180, cwd=cwd)
        # the running job finished during the outage: its result is stored all the same
        assert wait_meta(store, slow.id)["status"] == "SUCCESS"
        w.wait_log("broker reconnected", timeout=120)
        after = app.send_task("bench.noop", args=["after"], queue=q)
        assert after.get(timeout=60) == "after"
        assert w.proc.poll() is None
    finally:
        app.close()
        store.close()
