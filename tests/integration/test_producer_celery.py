"""test_producer_celery.py: the producer feeding real Python Celery 5.2 workers: msgpack and
Celery's default JSON, failures as exit code 1, countdown and revoke understood by Celery."""
import json

from producer_fixtures import *  # noqa: F401,F403  (fixtures)


def test_send_wait_to_a_python_worker(producer, queue, celery_worker):
    r = producer("send", "tasks.add", "[2, 3]", "--queue", queue, "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "5"


def test_python_exception_is_exit_1(producer, queue, celery_worker):
    r = producer("call", "tasks.fail", '["username \'alice\' already exists"]', "--queue", queue,
                 "--timeout", "60")
    assert r.returncode == 1
    assert r.stderr.strip() == "ValueError: username 'alice' already exists"
    r = producer("call", "tasks.fail", '["boom"]', "--queue", queue, "--timeout", "60", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["status"] == "FAILURE"
    assert out["exception"] == {"type": "ValueError", "module": "builtins", "message": "boom",
                                "args": ["boom"]}
    assert "Traceback" in out["traceback"]


def test_json_output_and_kwargs(producer, queue, celery_worker):
    r = producer("call", "tasks.echo", '[1, "two"]', '{"three": [3.5, null, true]}', "--queue",
                 queue, "--timeout", "60", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "SUCCESS" and len(out["id"]) == 36
    assert out["result"] == {"args": [1, "two"], "kwargs": {"three": [3.5, None, True]}}
    tid = out["id"]
    assert json.loads(producer.ok("result", tid)) == out["result"]


def test_json_format_to_a_default_json_worker(producer, queue, celery_json_worker):
    r = producer("call", "tasks.add", "[20, 22]", "--queue", queue, "--format", "json",
                 "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"


def test_countdown_is_understood_by_celery(producer, queue, celery_worker):
    r = producer("call", "tasks.add", "[1, 1]", "--queue", queue, "--countdown", "1",
                 "--timeout", "90")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"


def test_revoke_reaches_python_workers_through_the_pidbox(producer, queue, celery_worker):
    tid = producer.ok("send", "tasks.add", "[1, 2]", "--queue", queue, "--countdown", "3").strip()
    out = producer.ok("revoke", tid)
    assert "no Celery pidbox" not in out
    r = producer("result", tid, "--wait", "--timeout", "90")
    assert r.returncode == 1
    assert r.stderr.strip() == "TaskRevokedError: revoked"


def test_revoke_in_json_reaches_a_default_json_worker(producer, queue, celery_json_worker):
    tid = producer.ok("send", "tasks.add", "[1, 2]", "--queue", queue, "--countdown", "3",
                      "--format", "json").strip()
    producer.ok("revoke", tid, "--format", "json")
    r = producer("result", tid, "--wait", "--timeout", "90")
    assert r.returncode == 1
    assert r.stderr.strip() == "TaskRevokedError: revoked"
