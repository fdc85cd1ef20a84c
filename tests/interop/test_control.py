"""Celery's remote control (spec 6.1) from a real Celery 5.2 client against celeriac's worker:
revoke, revoke(terminate=True), ping, inspect().registered(), destination and pattern
filtering, unknown commands. Every test runs with the msgpack and the JSON configuration (the
broadcast uses the client's task_serializer)."""

import os
import shlex
import subprocess
import time

import pytest
from celery.exceptions import TaskRevokedError

from conftest import RESULT_TIMEOUT, START_TIMEOUT, uniq

REPLY_TIMEOUT = 10  # seconds a client waits for our node's reply (returns at once when it comes)
BENCH = {"bench.noop", "bench.sleep", "bench.count", "bench.fail"}


def node_of(proc):
    """The --hostname the conftest's cworker gave the worker: its pidbox node name."""
    return proc.argv[proc.argv.index("--hostname") + 1]


def assert_revoked(res, reason):
    with pytest.raises(TaskRevokedError):
        res.get(timeout=RESULT_TIMEOUT)
    assert res.state == "REVOKED"
    assert str(res.result) == reason


def test_ping_is_answered_by_our_node(app, queues, cworker):
    node = node_of(cworker(queues()))
    assert app.control.ping(destination=[node], timeout=REPLY_TIMEOUT) == [{node: {"ok": "pong"}}]


def test_ping_by_glob_pattern(app, queues, cworker):
    node = node_of(cworker(queues()))
    prefix = node.split("@")[0]
    replies = app.control.broadcast("ping", reply=True, pattern=prefix + "@*", matcher="glob",
                                    timeout=2, limit=1)
    assert replies == [{node: {"ok": "pong"}}]


def test_registered_lists_our_tasks(app, queues, cworker):
    node = node_of(cworker(queues()))
    got = app.control.inspect(destination=[node], timeout=REPLY_TIMEOUT).registered()
    assert list(got) == [node]
    names = [entry.split(" [")[0] for entry in got[node]]
    assert names == sorted(names)
    assert BENCH | {"users.create", "email.send_welcome"} <= set(names)


def test_unknown_command_is_an_error_reply(app, queues, cworker):
    node = node_of(cworker(queues()))
    replies = app.control.broadcast("no_such_command", destination=[node], reply=True,
                                    timeout=REPLY_TIMEOUT)
    assert replies == [{node: {"error": "No such control command: no_such_command"}}]
    # and the worker goes on serving
    assert node_ping(app, node)


def node_ping(app, node):
    return app.control.ping(destination=[node], timeout=REPLY_TIMEOUT) == [{node: {"ok": "pong"}}]


def test_revoke_of_a_queued_job(app, queues, cworker):
    q = queues()
    node = node_of(cworker(q, concurrency=1))
    counter = uniq("rev")
    # holds the only child; a job with a hard time limit goes to a child alone, so the next one
    # waits in the worker (a job already handed to a busy child in a batch would still run)
    blocker = app.send_task("bench.sleep", args=[5], time_limit=60, queue=q)
    res = app.send_task("bench.count", args=[counter], queue=q)
    replies = app.control.revoke(res.id, reply=True, destination=[node], timeout=REPLY_TIMEOUT)
    assert replies == [{node: {"ok": f"tasks {res.id} flagged as revoked"}}]
    assert blocker.get(timeout=RESULT_TIMEOUT) is None
    assert_revoked(res, "revoked")
    # the revoked job never ran: the counter starts at 1
    assert app.send_task("bench.count", args=[counter], queue=q).get(timeout=RESULT_TIMEOUT) == 1


def test_revoke_of_a_delayed_job_and_a_list_of_ids(app, queues, cworker):
    q = queues()
    cworker(q)
    assert app.send_task("bench.noop", args=[0], queue=q).get(timeout=RESULT_TIMEOUT) == 0
    counter = uniq("rev")
    first = app.send_task("bench.count", args=[counter], countdown=3, queue=q)
    second = app.send_task("bench.count", args=[counter], countdown=3, queue=q)
    app.control.revoke([first.id, second.id])  # no reply asked: a plain broadcast
    assert_revoked(first, "revoked")
    assert_revoked(second, "revoked")
    assert app.send_task("bench.count", args=[counter], queue=q).get(timeout=RESULT_TIMEOUT) == 1


def test_revoke_terminate_kills_the_running_job(app, queues, cworker):
    q = queues()
    node = node_of(cworker(q, concurrency=2))
    res = app.send_task("bench.sleep", args=[30], time_limit=120, queue=q)  # alone on a child
    # jobs go to idle children first in first out: once the next one is done, the sleep runs
    assert app.send_task("bench.noop", args=[1], queue=q).get(timeout=RESULT_TIMEOUT) == 1
    replies = app.control.revoke(res.id, terminate=True, reply=True, destination=[node],
                                 timeout=REPLY_TIMEOUT)
    assert replies == [{node: {"ok": f"terminate: {res.id}"}}]
    assert_revoked(res, "terminated")
    # the worker keeps serving, on a fresh child
    assert app.send_task("bench.noop", args=[2], queue=q).get(timeout=RESULT_TIMEOUT) == 2
    assert app.send_task("bench.noop", args=[3], queue=q).get(timeout=RESULT_TIMEOUT) == 3


def test_terminate_of_an_unknown_task(app, queues, cworker):
    node = node_of(cworker(queues()))
    tid = uniq("never-sent")
    replies = app.control.terminate(tid, reply=True, destination=[node], timeout=REPLY_TIMEOUT)
    assert replies == [{node: {"ok": "terminate: tasks unknown"}}]


def test_another_destination_is_ignored(app, queues, cworker):
    q = queues()
    node = node_of(cworker(q))
    other = uniq("other") + "@nowhere"
    assert app.send_task("bench.noop", args=[0], queue=q).get(timeout=RESULT_TIMEOUT) == 0
    counter = uniq("rev")
    res = app.send_task("bench.count", args=[counter], countdown=2, queue=q)
    app.control.revoke(res.id, destination=[other])
    assert app.control.ping(destination=[other], timeout=1) == []
    # a ping for both names is answered by ours only, which also shows the revoke was read
    assert app.control.ping(destination=[other, node], timeout=2) == [{node: {"ok": "pong"}}]
    assert res.get(timeout=RESULT_TIMEOUT) == 1
    assert res.state == "SUCCESS"


def close_consumer_connection(pid):
    """Makes the broker close the worker's consuming connection (the pidbox queue, auto-delete,
    goes with it): the worker must reconnect, declare it again and consume it again."""
    ctl = os.environ.get("CELERIAC_RABBITMQCTL")
    if not ctl:
        pytest.fail("CELERIAC_RABBITMQCTL is not set: run `eval \"$(scripts/stack.sh env)\"`")
    out = subprocess.run(shlex.split(ctl) + ["list_connections", "-q", "pid", "client_properties"],
                         check=True, capture_output=True, text=True).stdout
    mine = [line.split("\t")[0] for line in out.splitlines()
            if f'"celeriac consumer pid {pid}"' in line]
    assert mine, f"no consumer connection of pid {pid} in:\n{out}"
    for conn in mine:
        subprocess.run(shlex.split(ctl) + ["close_connection", conn, "test_control"], check=True,
                       capture_output=True)


def test_control_survives_a_reconnect(app, queues, cworker):
    q = queues()
    proc = cworker(q)
    node = node_of(proc)
    assert node_ping(app, node)
    close_consumer_connection(proc.p.pid)
    deadline = time.monotonic() + START_TIMEOUT
    while app.control.ping(destination=[node], timeout=1) != [{node: {"ok": "pong"}}]:
        proc.check_alive()
        assert time.monotonic() < deadline, "no pong after the reconnect\n" + proc.tail()
    assert "broker reconnected" in proc.log.read_text()
    assert app.send_task("bench.noop", args=[7], queue=q).get(timeout=RESULT_TIMEOUT) == 7


def test_no_remote_control_when_signatures_are_required(app, queues, cworker, tmp_path):
    """pidbox messages cannot be signed: a worker refusing unsigned jobs does not listen."""
    key = tmp_path / "signing.key"
    key.write_bytes(b"k" * 32 + b"\n")
    key.chmod(0o600)
    q = queues()
    proc = cworker(q, extra=("--require-signature", "--signing-key-file", str(key)))
    node = node_of(proc)
    assert app.control.ping(destination=[node], timeout=2) == []
    assert "remote control off" in proc.log.read_text()


def test_hello_shares_revocations_both_ways(app, queues, cworker):
    """mingle's hello: the sender's revoked ids are learnt, ours come back in the shape Celery's
    LimitedSet.update() takes (id -> float timestamp) with the clock."""
    from celery.utils.collections import LimitedSet

    q = queues()
    node = node_of(cworker(q))
    theirs = uniq("hello-revoked")
    replies = app.control.broadcast(
        "hello", arguments={"from_node": uniq("py") + "@elsewhere", "revoked": {theirs: time.time()}},
        destination=[node], reply=True, timeout=REPLY_TIMEOUT)
    assert len(replies) == 1 and list(replies[0]) == [node]
    answer = replies[0][node]
    assert isinstance(answer["clock"], int)
    assert theirs in answer["revoked"]
    LimitedSet().update(answer["revoked"])  # what mingle does with it
    # our own hello is answered with None, as Celery does
    assert app.control.broadcast("hello", arguments={"from_node": node, "revoked": {}},
                                 destination=[node], reply=True,
                                 timeout=REPLY_TIMEOUT) == [{node: None}]
    # the learnt id is revoked here
    assert_revoked(app.send_task("bench.noop", args=[1], task_id=theirs, queue=q), "revoked")
