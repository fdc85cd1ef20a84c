"""celeriac's producer feeding a Python Celery worker, and a Python Celery worker and celeriac's
worker consuming the same queue."""

import json
import os
import subprocess

import pytest
from celery.exceptions import TaskRevokedError

from conftest import RESULT_TIMEOUT, binary, uniq

EXTRA_TASKS = """

@app.task(name="tasks.boom")
def boom(message):
    raise ValueError(message)


@app.task(name="bench.sleep")
def sleep(seconds):
    import time
    time.sleep(seconds)
    return "py"
"""


def producer(stack, *args, timeout=RESULT_TIMEOUT + 30):
    env = dict(os.environ)
    env["CELERIAC_BROKER_URL"] = stack["broker"]
    env["CELERIAC_RESULT_BACKEND"] = stack["backend"]
    return subprocess.run([str(binary("producer")), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_producer_to_python_worker(stack, queues, pyworker, fmt):
    q = queues()
    pyworker(q, fmt, extra_code=EXTRA_TASKS)
    r = producer(stack, "send", "tasks.add", "[2, 3]", "--queue", q, "--wait",
                 "--timeout", str(RESULT_TIMEOUT), "--format", fmt)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "5"

    r = producer(stack, "send", "tasks.add", "[]", '{"x": "a", "y": "\\u00e9\\ud83d\\ude00"}',
                 "--queue", q, "--wait", "--timeout", str(RESULT_TIMEOUT), "--format", fmt)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "a\u00e9\U0001F600"


def test_producer_sees_a_python_failure(stack, queues, pyworker):
    q = queues()
    pyworker(q, "msgpack", extra_code=EXTRA_TASKS)
    r = producer(stack, "send", "tasks.boom", '["bad input"]', "--queue", q, "--wait",
                 "--timeout", str(RESULT_TIMEOUT))
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = r.stdout + r.stderr
    assert "ValueError" in out and "bad input" in out


def test_producer_countdown_to_python_worker(stack, queues, pyworker, msgpack_app):
    q = queues()
    pyworker(q, "msgpack")
    r = producer(stack, "send", "tasks.mul", "[6, 7]", "--queue", q, "--countdown", "2")
    assert r.returncode == 0, r.stderr
    task_id = r.stdout.strip()
    assert msgpack_app.AsyncResult(task_id).get(timeout=RESULT_TIMEOUT) == 42


def test_producer_link_to_python_worker(stack, queues, pyworker, msgpack_app):
    q = queues()
    pyworker(q, "msgpack")
    cb = uniq("cb")
    link = ('{"task": "tasks.add", "args": [100], "kwargs": {}, "options": {"queue": "%s", '
            '"task_id": "%s"}, "subtask_type": null, "immutable": false}' % (q, cb))
    r = producer(stack, "send", "tasks.add", "[1, 2]", "--queue", q, "--link", link, "--wait",
                 "--timeout", str(RESULT_TIMEOUT))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"
    assert msgpack_app.AsyncResult(cb).get(timeout=RESULT_TIMEOUT) == 103


def test_producer_revoke_stops_a_c_job(stack, queues, cworker, msgpack_app):
    q = queues()
    cworker(q)
    counter = uniq("rev")
    res = msgpack_app.send_task("bench.count", args=[counter], countdown=4, queue=q)
    r = producer(stack, "revoke", res.id)
    assert r.returncode == 0, r.stderr
    with pytest.raises(TaskRevokedError):
        res.get(timeout=RESULT_TIMEOUT)
    assert res.state == "REVOKED"
    # it never ran: the counter starts at 1
    again = msgpack_app.send_task("bench.count", args=[counter], queue=q)
    assert again.get(timeout=RESULT_TIMEOUT) == 1


def test_python_and_c_workers_share_a_queue(stack, queues, cworker, pyworker, msgpack_app):
    q = queues()
    # either may declare first: the declarations must be identical (spec 1.1)
    py = pyworker(q, "msgpack", extra_code=EXTRA_TASKS)
    c = cworker(q, concurrency=1)
    from conftest import wait_consumers

    wait_consumers(stack, q, 2, [py, c])
    # each job takes a while, so neither worker can take them all: prefetch is bounded
    results = [msgpack_app.send_task("bench.sleep", args=[0.3], queue=q) for _ in range(24)]
    values = [r.get(timeout=RESULT_TIMEOUT) for r in results]
    assert set(values) == {None, "py"}, values  # the C task returns None, the Python one "py"
    assert py.alive() and c.alive()
    for p in (py, c):
        assert "PRECONDITION_FAILED" not in p.log.read_text(errors="replace")
