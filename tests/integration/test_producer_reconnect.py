"""test_producer_reconnect.py: at-least-once bulk publishing across a broker outage. Runs its own
RabbitMQ + Redis (scripts/stack.sh with a private run directory), stops RabbitMQ while `producer
bulk` is publishing, starts it again, and checks that every confirmed id is in the queue. Being
fresh, that broker also has no Celery pidbox exchange, which `revoke` must take in its stride."""
import os
import shlex
import subprocess
import time
import uuid

import pytest

from producer_fixtures import PRODUCER, ROOT, Broker, need_env, wait_for

STACK = os.path.join(ROOT, "scripts", "stack.sh")


@pytest.fixture(scope="module")
def private_stack():
    need_env()
    run = os.path.join(ROOT, ".run", "ptest-reconnect-%d-%s" % (os.getpid(), uuid.uuid4().hex[:6]))
    env = dict(os.environ, CELERIAC_RUN_DIR=run)
    up = subprocess.run([STACK, "up"], env=env, capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        subprocess.run([STACK, "down"], env=env, capture_output=True, timeout=120)
        pytest.fail("private stack did not start: " + up.stderr[-2000:])
    out = subprocess.run([STACK, "env"], env=env, capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = shlex.split(v)[0] if v else ""
    yield env
    subprocess.run([STACK, "down"], env=env, capture_output=True, timeout=180)
    subprocess.run(["rm", "-rf", run])


def with_env(env, fn):
    saved = {k: os.environ.get(k) for k in ("CELERIAC_BROKER_URL", "CELERIAC_RESULT_BACKEND")}
    os.environ.update({k: env[k] for k in saved})
    try:
        return fn()
    finally:
        for k, v in saved.items():
            os.environ[k] = v


def test_bulk_survives_a_broker_outage(private_stack, tmp_path):
    env = private_stack
    queue = "ptest_outage_%s" % uuid.uuid4().hex[:8]
    n = 60000
    jobs = tmp_path / "jobs.jsonl"
    with open(jobs, "w") as f:
        for i in range(n):
            f.write('{"task": "bench.noop", "args": [%d], "queue": "%s"}\n' % (i, queue))
    ids = tmp_path / "ids.txt"
    proc = subprocess.Popen([PRODUCER, "bulk", str(jobs), "--ids", str(ids), "--batch", "200"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: ids.exists() and ids.stat().st_size > 37 * 2000 or proc.poll() is not None,
             120, "the first confirmed batches")
    assert proc.poll() is None, "bulk finished before the outage: make n larger"
    subprocess.run([STACK, "stop-rabbitmq"], env=env, check=True, capture_output=True, timeout=120)
    time.sleep(1)
    subprocess.run([STACK, "start-rabbitmq"], env=env, check=True, capture_output=True,
                   timeout=180)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert ("published %d jobs" % n) in out
    confirmed = ids.read_text().split()
    assert len(confirmed) == n and len(set(confirmed)) == n

    def collect():
        b = Broker()
        seen = set()
        total = 0
        try:
            while True:
                m = b.ch.basic_get(queue, no_ack=True)
                if m is None:
                    break
                total += 1
                seen.add(m.properties["application_headers"]["id"])
            b.delete(queue)
            b.delete(queue + ".dead")
        finally:
            b.close()
        return total, seen

    total, seen = with_env(env, collect)
    assert total >= n  # at-least-once: duplicates allowed, losses not
    assert set(confirmed) <= seen


def test_revoke_without_a_celery_pidbox_exchange(private_stack):
    env = private_stack
    tid = "ptest-revoke-%s" % uuid.uuid4().hex
    r = subprocess.run([PRODUCER, "revoke", tid], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "no Celery pidbox exchange" in r.stdout
    import redis
    rdb = redis.Redis.from_url(env["CELERIAC_RESULT_BACKEND"])
    assert rdb.zscore("celeriac-revoked", "r:" + tid) is not None  # "r:" = revoke, no terminate
