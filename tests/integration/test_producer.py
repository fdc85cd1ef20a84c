"""test_producer.py: the producer CLI against the real stack: what it publishes (Celery v2 on the
wire), its options, and every command's error paths and exit codes."""
import datetime
import json
import os
import re

from producer_fixtures import *  # noqa: F401,F403  (fixtures)
from producer_fixtures import closed_port, decode_body, wait_for

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_send_publishes_a_celery_v2_message(producer, broker, queue):
    out = producer.ok("send", "users.create", '["alice"]', '{"email": "a@x.io"}', "--queue", queue,
                      "--idempotency-key", "signup-alice", "--priority", "3")
    tid = out.strip()
    assert UUID.match(tid)
    m = wait_for(lambda: broker.get(queue), 10, "the message")
    h = m.properties["application_headers"]
    assert h["task"] == "users.create" and h["id"] == tid and h["root_id"] == tid
    assert h["lang"] == "py" and h["retries"] == 0 and h["timelimit"] == [None, None]
    assert h["argsrepr"] == "['alice']" and h["kwargsrepr"] == "{'email': 'a@x.io'}"
    assert h["eta"] is None and h["expires"] is None and h["ignore_result"] is False
    assert h["origin"].startswith("gen")
    assert h["x-celeriac-idempotency-key"] == "signup-alice"
    p = m.properties
    assert p["content_type"] == "application/x-msgpack" and p["content_encoding"] == "binary"
    assert p["correlation_id"] == tid and p["delivery_mode"] == 2 and p["priority"] == 3
    args, kwargs, embed = decode_body(m)
    assert args == ["alice"] and kwargs == {"email": "a@x.io"}
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_default_queue_is_the_task_names_first_part(producer, broker, queue):
    task = queue + ".do_it"
    tid = producer.ok("send", task).strip()
    m = wait_for(lambda: broker.get(queue), 10, "the message in the default queue")
    assert m.properties["application_headers"]["id"] == tid
    assert decode_body(m)[0] == [] and decode_body(m)[1] == {}


def test_json_format_and_options_in_headers(producer, broker, queue):
    tid = producer.ok("send", "svc.t", "[1, 2.5, null]", "--queue", queue, "--format", "json",
                      "--expires", "600", "--time-limit", "30", "--soft-time-limit", "20",
                      "--ignore-result", "--task-id", "fixed-id-1",
                      "--headers", '{"x-tenant": "acme"}').strip()
    assert tid == "fixed-id-1"
    m = wait_for(lambda: broker.get(queue), 10, "the message")
    p, h = m.properties, m.properties["application_headers"]
    assert p["content_type"] == "application/json" and p["content_encoding"] == "utf-8"
    assert int(p["expiration"]) > 590000
    assert h["timelimit"] == [30, 20] and h["ignore_result"] is True and h["x-tenant"] == "acme"
    exp = datetime.datetime.fromisoformat(h["expires"])
    assert exp.tzinfo is not None
    assert decode_body(m)[0] == [1, 2.5, None]


def test_link_and_link_error_are_celery_signatures(producer, broker, queue):
    producer.ok("send", "users.create", '["bob", "bob@x.io"]', "--queue", queue,
                "--link", "email.send_welcome",
                "--link", '{"task": "audit.log", "args": ["signup"], "immutable": true}',
                "--link-error", "users.cleanup")
    m = wait_for(lambda: broker.get(queue), 10, "the message")
    _, _, embed = decode_body(m)
    cb = embed["callbacks"]
    assert list(cb[0].keys()) == ["task", "args", "kwargs", "options", "subtask_type", "immutable"]
    assert cb[0] == {"task": "email.send_welcome", "args": [], "kwargs": {},
                     "options": {"queue": "email"}, "subtask_type": None, "immutable": False}
    assert cb[1]["task"] == "audit.log" and cb[1]["args"] == ["signup"] and cb[1]["immutable"]
    assert embed["errbacks"][0]["task"] == "users.cleanup"
    assert embed["errbacks"][0]["options"] == {"queue": "users"}


def test_countdown_goes_through_the_delay_levels_with_an_eta(producer, broker, queue):
    before = datetime.datetime.now(datetime.timezone.utc)
    tid = producer.ok("send", "svc.later", "--queue", queue, "--countdown", "2").strip()
    m = wait_for(lambda: broker.get(queue), 60, "the delayed message")
    h = m.properties["application_headers"]
    assert h["id"] == tid
    eta = datetime.datetime.fromisoformat(h["eta"])
    assert eta - before >= datetime.timedelta(seconds=1.5)
    assert "expiration" not in m.properties


def test_eta_option_sets_the_eta_header(producer, broker, queue):
    when = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2))
    producer.ok("send", "svc.at", "--queue", queue, "--eta", when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    m = wait_for(lambda: broker.get(queue), 60, "the message sent with --eta")
    eta = datetime.datetime.fromisoformat(m.properties["application_headers"]["eta"])
    assert abs((eta - when.replace(microsecond=0)).total_seconds()) < 1


def test_result_of_an_unknown_id_is_pending(producer):
    assert producer.ok("result", "no-such-task-id").strip() == "PENDING"
    out = json.loads(producer.ok("result", "no-such-task-id", "--json"))
    assert out == {"id": "no-such-task-id", "status": "PENDING", "result": None}


def test_result_reads_a_stored_failure(producer, rdb):
    tid = "ptest-fail-%d" % os.getpid()
    meta = {"status": "FAILURE", "result": {"exc_type": "ValueError",
                                            "exc_message": ["username 'alice' already exists"],
                                            "exc_module": "builtins"},
            "traceback": None, "children": [], "date_done": "2026-01-01T00:00:00.000000",
            "task_id": tid}
    rdb.setex("celery-task-meta-" + tid, 60, json.dumps(meta))
    try:
        r = producer("result", tid)
        assert r.returncode == 1
        assert r.stderr.strip() == "ValueError: username 'alice' already exists"
        r = producer("result", tid, "--json", "--wait", "--timeout", "5")
        assert r.returncode == 1
        out = json.loads(r.stdout)
        assert out["status"] == "FAILURE" and out["exception"]["type"] == "ValueError"
    finally:
        rdb.delete("celery-task-meta-" + tid)


def test_revoke_is_durable_in_redis(producer, rdb):
    tid = "ptest-revoke-%d" % os.getpid()
    out = producer.ok("revoke", tid, "--terminate")
    assert tid in out
    assert rdb.zscore("celeriac-revoked", "t:" + tid) is not None  # "t:" = revoke + terminate


# ---- errors and exit codes ----

def test_bad_json_is_a_usage_error_naming_the_argument(producer, queue):
    r = producer("send", "svc.t", "[1, 2", "--queue", queue)
    assert r.returncode == 2
    assert "args (argument 2)" in r.stderr and "column" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = producer("send", "svc.t", "[]", '{"a": }', "--queue", queue)
    assert r.returncode == 2 and "kwargs (argument 3)" in r.stderr
    r = producer("send", "svc.t", '{"a": 1}', "--queue", queue)
    assert r.returncode == 2 and "must be a JSON array" in r.stderr


def test_unknown_option_and_bad_values_are_usage_errors(producer):
    for args, needle in ((["send", "svc.t", "--frobnicate"], "unknown option --frobnicate"),
                         (["send", "svc.t", "--countdown", "soon"], "countdown"),
                         (["send", "svc.t", "--priority", "300"], "priority"),
                         (["send", "svc.t", "--eta", "tomorrow"], "eta"),
                         (["send"], "missing argument"),
                         (["result", "a", "--terminate"], "unknown option --terminate"),
                         (["bogus"], "unknown command"),
                         (["dead", "replay", "q"], "--id ID or --all"),
                         (["dead", "frob", "q"], "subcommand"),
                         (["send", "svc.t", "--wait", "--timeout", "x"], "--timeout")):
        r = producer(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)


def test_help_for_every_command(producer):
    out = producer.ok("--help")
    for cmd in ("send", "call", "result", "bulk", "revoke", "inspect workers", "dead ls"):
        assert cmd in out
    for args in (["send"], ["call"], ["result"], ["bulk"], ["revoke"], ["inspect", "workers"],
                 ["inspect", "queues"], ["dead", "ls"], ["dead", "replay"], ["dead", "purge"]):
        out = producer.ok(*args, "--help")
        assert out.startswith("usage: producer " + " ".join(args))
    assert "--countdown" in producer.ok("send", "--help")
    assert "--terminate" not in producer.ok("send", "--help")
    assert "ls" in producer.ok("dead", "--help")


def test_unreachable_broker_is_exit_3_with_the_password_redacted(producer):
    url = "amqp://guest:s3cret@127.0.0.1:%d/" % closed_port()
    for args in (["send", "svc.t"], ["inspect", "queues", "q"], ["dead", "ls", "q"]):
        r = producer(*args, "--broker", url)
        assert r.returncode == 3, (args, r.stderr)
        assert "broker" in r.stderr and "s3cret" not in r.stderr and "***" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_unreachable_redis_is_exit_3(producer):
    url = "redis://:s3cret@127.0.0.1:%d/0" % closed_port()
    r = producer("result", "some-id", "--backend", url)
    assert r.returncode == 3 and "result backend" in r.stderr and "s3cret" not in r.stderr
    r = producer("inspect", "workers", env={"CELERIAC_RESULT_BACKEND": url})
    assert r.returncode == 3


def test_send_wait_checks_redis_before_publishing(producer, broker, queue):
    url = "redis://127.0.0.1:%d/0" % closed_port()
    r = producer("send", "svc.t", "--queue", queue, "--wait", "--backend", url)
    assert r.returncode == 3
    n, _ = broker.depth(queue)
    assert not n


def test_wait_timeout_is_exit_4(producer, queue):
    r = producer("call", "svc.t", "[1]", "--queue", queue, "--timeout", "0.5")
    assert r.returncode == 4 and "timed out" in r.stderr
    tid = "never-%d" % os.getpid()
    r = producer("result", tid, "--wait", "--timeout", "0.3")
    assert r.returncode == 4


def test_bulk_reports_bad_lines_and_publishes_the_rest(producer, broker, queue, tmp_path):
    lines = ['{"task": "svc.a", "args": [1], "queue": "%s"}' % queue,
             '{"task": "svc.b", "args": {"x": 1}, "queue": "%s"}' % queue,
             'not json',
             '',
             '{"task": "svc.c", "kwargs": {"k": 2}, "queue": "%s", "countdown": "x"}' % queue,
             '{"task": "svc.d", "queue": "%s", "idempotency_key": "k", "link": "a.b"}' % queue]
    f = tmp_path / "jobs.jsonl"
    f.write_text("\n".join(lines) + "\n")
    ids = tmp_path / "ids.txt"
    r = producer("bulk", str(f), "--ids", str(ids))
    assert r.returncode == 2
    assert "line 2:" in r.stderr and "line 3:" in r.stderr and "line 5:" in r.stderr
    assert "line 1:" not in r.stderr and "line 6:" not in r.stderr
    assert "published 2 jobs" in r.stdout
    assert len(ids.read_text().split()) == 2
    got = [wait_for(lambda: broker.get(queue), 10, "bulk message") for _ in range(2)]
    assert [m.properties["application_headers"]["task"] for m in got] == ["svc.a", "svc.d"]
    assert got[1].properties["application_headers"]["x-celeriac-idempotency-key"] == "k"


def test_bulk_from_stdin(producer, broker, queue):
    data = "".join('{"task": "svc.s", "args": [%d]}\n' % i for i in range(25))
    out = producer.ok("bulk", "-", "--queue", queue, "--batch", "10", input=data)
    assert "published 25 jobs" in out
    wait_for(lambda: broker.depth(queue)[0] == 25, 10, "25 messages")


def test_inspect_queues_json(producer, queue):
    producer.ok("send", "svc.t", "--queue", queue)
    out = json.loads(producer.ok("inspect", "queues", queue, "--json"))
    assert out[0] == {"queue": queue, "exists": True, "messages": 1, "consumers": 0}
    assert out[1]["queue"] == queue + ".dead" and out[1]["messages"] == 0
    text = producer.ok("inspect", "queues", queue)
    assert queue in text and "MESSAGES" in text


def test_inspect_workers_runs(producer):
    out = producer.ok("inspect", "workers")
    assert out.startswith("HOSTNAME")
    json.loads(producer.ok("inspect", "workers", "--json"))


def test_amqps_with_the_stacks_ca(producer, broker, queue):
    url, tls = os.environ.get("CELERIAC_TEST_AMQPS_URL"), os.environ.get("CELERIAC_TEST_TLS_DIR")
    assert url and tls, "CELERIAC_TEST_AMQPS_URL / CELERIAC_TEST_TLS_DIR not set by the stack"
    tid = producer.ok("send", "svc.tls", "--queue", queue, "--broker", url,
                      "--tls-ca", os.path.join(tls, "ca.pem")).strip()
    m = wait_for(lambda: broker.get(queue), 10, "the message sent over TLS")
    assert m.properties["application_headers"]["id"] == tid
    r = producer("send", "svc.tls", "--queue", queue, "--broker", url)
    assert r.returncode == 3 and "verif" in r.stderr


def test_max_priority_queue_delivers_high_priority_first(producer, broker, queue):
    producer.ok("send", "svc.low", "--queue", queue, "--max-priority", "10", "--priority", "1")
    producer.ok("send", "svc.high", "--queue", queue, "--max-priority", "10", "--priority", "9")
    first = wait_for(lambda: broker.get(queue), 10, "a message")
    assert first.properties["application_headers"]["task"] == "svc.high"
    r = producer("send", "svc.t", "--queue", queue, "--max-priority", "300")
    assert r.returncode == 2


def test_extra_headers_cannot_replace_celery_headers_and_delays_are_bounded(producer, queue):
    r = producer("send", "svc.t", "--queue", queue, "--headers", '{"id": "evil"}')
    assert r.returncode == 2 and "header 'id' is set by celeriac itself" in r.stderr
    r = producer("send", "svc.t", "--queue", queue, "--countdown", "999999999")
    assert r.returncode == 2 and "delay levels" in r.stderr


def test_chain_option_is_a_reversed_list_of_frozen_signatures(producer, broker, queue):
    producer.ok("send", "svc.first", "[1]", "--queue", queue, "--chain", "svc.second",
                "--chain", '{"task": "svc.third", "args": [3], "options": {"queue": "q3"}}')
    m = wait_for(lambda: broker.get(queue), 10, "the message")
    chain = decode_body(m)[2]["chain"]
    assert [s["task"] for s in chain] == ["svc.third", "svc.second"]  # next task last
    assert chain[0]["options"]["queue"] == "q3" and chain[0]["args"] == [3]
    assert chain[1]["options"]["queue"] == "svc"
    ids = [s["options"]["task_id"] for s in chain]
    assert all(UUID.match(i) for i in ids) and ids[0] != ids[1]
