"""test_producer_dead.py: dead ls / replay / purge on a dead-letter queue filled by the test, and
the 50,000-job bulk publish confirmed completely."""
import json
import os
import uuid

import msgpack

from producer_fixtures import *  # noqa: F401,F403  (fixtures)
from producer_fixtures import wait_for


def fill_dead(producer, broker, queue, n):
    """Declares the topology (send + drain), then publishes n dead letters with error headers."""
    producer.ok("send", "svc.warmup", "--queue", queue)
    wait_for(lambda: broker.get(queue), 10, "the warm-up message")
    ids = []
    for i in range(n):
        tid = str(uuid.uuid4())
        ids.append(tid)
        body = msgpack.packb([[i], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                        "chord": None}], use_bin_type=True)
        broker.publish(queue + ".dead", body,
                       {"lang": "py", "task": "svc.broken", "id": tid, "retries": 0,
                        "x-celeriac-error-type": "ValueError",
                        "x-celeriac-error-message": "broken %d" % i,
                        "x-celeriac-error-attempts": 3, "x-celeriac-attempts": 3,
                        "x-tenant": "keep-me"},
                       content_type="application/x-msgpack", content_encoding="binary",
                       correlation_id=tid)
    wait_for(lambda: broker.depth(queue + ".dead")[0] == n, 10, "the dead letters")
    return ids


def test_dead_ls_lists_without_losing(producer, broker, queue):
    ids = fill_dead(producer, broker, queue, 3)
    out = producer.ok("dead", "ls", queue)
    for i, tid in enumerate(ids):
        assert tid in out
    assert "x-celeriac-error-type: ValueError" in out and "broken 2" in out
    assert "3 dead letters" in out
    assert out.index(ids[0]) < out.index(ids[1]) < out.index(ids[2])
    assert broker.depth(queue + ".dead")[0] == 3
    listed = json.loads(producer.ok("dead", "ls", queue, "--json", "--limit", "2"))
    assert [d["id"] for d in listed] == ids[:2]
    assert listed[0]["task"] == "svc.broken"
    assert listed[0]["headers"]["x-celeriac-error-message"] == "broken 0"
    assert broker.depth(queue + ".dead")[0] == 3
    # the order survives listing
    again = json.loads(producer.ok("dead", "ls", queue, "--json"))
    assert [d["id"] for d in again] == ids


def test_dead_replay_one_then_all(producer, broker, queue):
    ids = fill_dead(producer, broker, queue, 3)
    out = producer.ok("dead", "replay", queue, "--id", ids[1])
    assert "replayed 1 dead letter" in out
    assert broker.depth(queue + ".dead")[0] == 2
    m = wait_for(lambda: broker.get(queue), 10, "the replayed message")
    h = m.properties["application_headers"]
    assert h["id"] == ids[1] and h["task"] == "svc.broken" and h["x-tenant"] == "keep-me"
    assert not [k for k in h if k.startswith("x-celeriac-error-") or k == "x-celeriac-attempts"]
    assert m.properties["correlation_id"] == ids[1]
    assert msgpack.unpackb(m.body, raw=False)[0] == [1]
    remaining = [d["id"] for d in json.loads(producer.ok("dead", "ls", queue, "--json"))]
    assert remaining == [ids[0], ids[2]]

    r = producer("dead", "replay", queue, "--id", "no-such-id")
    assert r.returncode == 1 and "no dead letter" in r.stderr
    assert broker.depth(queue + ".dead")[0] == 2

    assert "replayed 2 dead letters" in producer.ok("dead", "replay", queue, "--all")
    assert broker.depth(queue + ".dead")[0] == 0
    wait_for(lambda: broker.depth(queue)[0] == 2, 10, "both replayed messages")


def test_dead_purge(producer, broker, queue):
    fill_dead(producer, broker, queue, 4)
    assert "purged 4 dead letters" in producer.ok("dead", "purge", queue)
    assert broker.depth(queue + ".dead")[0] == 0
    r = producer("dead", "purge", "ptest_missing_%s" % uuid.uuid4().hex[:6])
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_bulk_50000_jobs_are_all_confirmed(producer, broker, queue, tmp_path):
    n = 50000
    f = tmp_path / "jobs.jsonl"
    with open(f, "w") as out:
        for i in range(n):
            out.write('{"task": "bench.noop", "args": [%d], "queue": "%s"}\n' % (i, queue))
    ids = tmp_path / "ids.txt"
    r = producer("bulk", str(f), "--ids", str(ids), timeout=600)
    assert r.returncode == 0, r.stderr
    assert ("published %d jobs" % n) in r.stdout
    print("\nbulk: " + r.stdout.strip())
    got = ids.read_text().split()
    assert len(got) == n and len(set(got)) == n
    info = json.loads(producer.ok("inspect", "queues", queue, "--json"))
    assert info[0]["messages"] == n
    if os.environ.get("CELERIAC_BULK_REPORT"):
        with open(os.environ["CELERIAC_BULK_REPORT"], "a") as rep:
            rep.write(r.stdout)
