"""test_producer_worker.py: the producer driving the C worker (build/bin/worker) with the users,
email and bench services: send --wait, failures, a link to the email service, revoke, the
worker registry and idempotency keys. Queues are unique per test, so the link's signature names
the test's email queue explicitly."""
import json
import os
import uuid

import pytest

from producer_fixtures import *  # noqa: F401,F403  (fixtures)
from producer_fixtures import WORKER, Broker, WorkerProc, wait_for


class CWorker(WorkerProc):
    def __init__(self, tmp_path, queues):
        if not os.access(WORKER, os.X_OK):
            pytest.fail("%s not built: run make" % WORKER)
        self.hostname = "ptest-%s@test" % uuid.uuid4().hex[:8]
        env = dict(os.environ, CELERIAC_DATA_DIR=str(tmp_path / "data"))
        super().__init__([WORKER, "--queue", ",".join(queues), "-c", "2", "-n", self.hostname,
                          "--log-format", "text"], env, tmp_path / "cworker.log", queues)


@pytest.fixture
def queues(stack_env):
    tag = "%d_%s" % (os.getpid(), uuid.uuid4().hex[:6])
    qs = ("ptu_" + tag, "pte_" + tag)
    yield qs
    b = Broker()
    for q in qs:
        b.delete(q)
        b.delete(q + ".dead")
    b.close()


@pytest.fixture
def cworker(stack_env, tmp_path, queues):
    w = CWorker(tmp_path, queues)
    yield w
    w.stop()


def test_users_create_waits_for_the_result(producer, queues, cworker):
    users, _ = queues
    r = producer("send", "users.create", '["alice", "alice@x.io"]', "--queue", users, "--wait",
                 "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"id": 1, "username": "alice", "email": "alice@x.io"}
    r = producer("call", "users.create", '["alice", "other@x.io"]', "--queue", users,
                 "--timeout", "60")
    assert r.returncode == 1
    assert r.stderr.strip() == "ValueError: username 'alice' already exists"


def test_link_sends_the_welcome_mail_through_the_email_queue(producer, queues, cworker):
    users, email = queues
    link = json.dumps({"task": "email.send_welcome", "options": {"queue": email}})
    r = producer("call", "users.create", '["bob", "bob@x.io"]', "--queue", users, "--link", link,
                 "--timeout", "60", "--json")
    assert r.returncode == 0, r.stderr
    parent = json.loads(r.stdout)["id"]

    def outbox():
        o = producer("call", "email.outbox", "--queue", email, "--timeout", "60")
        assert o.returncode == 0, o.stderr
        rows = json.loads(o.stdout)
        return rows if any(m["to"] == "bob@x.io" for m in rows) else None

    rows = wait_for(outbox, 60, "the welcome mail")
    mail = [m for m in rows if m["to"] == "bob@x.io"][0]
    assert mail["subject"] == "Welcome, bob!" and mail["job_id"] != parent


def test_bulk_to_the_worker(producer, queues, cworker, tmp_path):
    users, _ = queues
    f = tmp_path / "jobs.jsonl"
    f.write_text("".join('{"task": "bench.noop", "args": [%d], "queue": "%s"}\n' % (i, users)
                         for i in range(200)))
    ids = tmp_path / "ids.txt"
    producer.ok("bulk", str(f), "--ids", str(ids))
    last = ids.read_text().split()[-1]
    r = producer("result", last, "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr


def test_revoke_stops_a_delayed_job_on_the_c_worker(producer, queues, cworker):
    users, _ = queues
    tid = producer.ok("send", "bench.noop", "[1]", "--queue", users, "--countdown", "3").strip()
    producer.ok("revoke", tid)
    r = producer("result", tid, "--wait", "--timeout", "60")
    assert r.returncode == 1 and r.stderr.strip() == "TaskRevokedError: revoked"


def test_inspect_workers_lists_the_c_worker(producer, queues, cworker):
    out = wait_for(lambda: (lambda o: o if cworker.hostname in o else None)(
        producer.ok("inspect", "workers")), 30, "the worker in the registry")
    assert out.splitlines()[0].split()[:3] == ["HOSTNAME", "PID", "POOL"]
    row = [line for line in out.splitlines() if line.startswith(cworker.hostname)][0]
    assert "prefork" in row and ",".join(queues) in row
    docs = json.loads(producer.ok("inspect", "workers", "--json"))
    mine = [d for d in docs if d.get("hostname") == cworker.hostname]
    assert mine and mine[0]["queues"] == list(queues) and mine[0]["pid"] == cworker.proc.pid


def test_idempotency_key_returns_the_first_result(producer, queues, cworker):
    users, _ = queues
    key = "signup-" + uuid.uuid4().hex
    a = producer("call", "users.create", '["carol", "c@x.io"]', "--queue", users,
                 "--idempotency-key", key, "--timeout", "60", "--json")
    b = producer("call", "users.create", '["carol", "c@x.io"]', "--queue", users,
                 "--idempotency-key", key, "--timeout", "60", "--json")
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert json.loads(a.stdout)["result"] == json.loads(b.stdout)["result"]


def test_crashing_job_is_dead_lettered_listed_and_replayed(producer, broker, queues, cworker):
    users, _ = queues
    r = producer("call", "bench.crash", "--queue", users, "--timeout", "60", "--json")
    assert r.returncode == 1
    tid = json.loads(r.stdout)["id"]
    assert json.loads(r.stdout)["exception"]["type"] == "WorkerLostError"
    dead = json.loads(producer.ok("dead", "ls", users, "--json"))
    assert [d["id"] for d in dead] == [tid] and dead[0]["task"] == "bench.crash"
    h = dead[0]["headers"]
    assert h["x-celeriac-error-type"] == "WorkerLostError" and h["x-celeriac-error-signal"] == "11"
    assert h["x-celeriac-error-attempts"] == "3"
    assert broker.depth(users + ".dead")[0] == 1  # listing lost nothing

    # replay clears the crash counter: the job runs (and crashes) three more times
    assert "replayed 1 dead letter" in producer.ok("dead", "replay", users, "--id", tid)

    def dead_again():
        d = json.loads(producer.ok("dead", "ls", users, "--json"))
        return d if d and d[0]["headers"]["x-celeriac-error-time"] != h[
            "x-celeriac-error-time"] else None

    again = wait_for(dead_again, 60, "the replayed job to be dead-lettered again")
    assert again[0]["id"] == tid and again[0]["headers"]["x-celeriac-error-attempts"] == "3"
    assert "purged 1 dead letter" in producer.ok("dead", "purge", users)
