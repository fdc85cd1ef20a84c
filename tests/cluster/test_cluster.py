"""Beyond one machine: 20,000 jobs through a quorum queue on a three-node RabbitMQ cluster, two
workers and a producer that know all three URLs; the node they are connected to is stopped in
the middle. Every job must end SUCCESS, and run exactly once: each job is bench.count of its own
name with an idempotency key, so a redelivered or republished copy is recognised and not run
again (the counters live in the workers' shared bench.db). Timings are printed (pytest -s) and
written to <tmp>/timings.json."""

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request

import pytest
import redis

from conftest import BUILD

JOBS = int(os.environ.get("CELERIAC_CLUSTER_JOBS", "20000"))
DEADLINE = 900  # seconds for the whole run: a hang fails instead of blocking the suite


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_reconnects(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("celeriac_broker_reconnects_total "):
                return float(line.split()[1])
    return None


def start_worker(cluster, queue, tmp_path, data_dir, name, *extra):
    log = open(tmp_path / f"{name}.log", "wb")
    env = dict(os.environ, CELERIAC_DATA_DIR=str(data_dir))
    env.pop("CELERIAC_SERVICES", None)
    argv = [str(BUILD / "bin" / "worker"), "--queue", queue, "--broker", ",".join(cluster.urls),
            "--backend", cluster.backend, "--hostname", f"{name}@cluster", "--log-format", "json",
            "--services", str(BUILD / "services"), "-c", "4", "--queue-type", "quorum", *extra]
    p = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    p.log_path = tmp_path / f"{name}.log"
    return p


def wait_log(p, needle, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in p.log_path.read_text(errors="replace"):
            return
        if p.poll() is not None:
            pytest.fail(f"worker exited {p.returncode}:\n{p.log_path.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"{needle!r} not logged in {timeout} s:\n{p.log_path.read_text()}")


def states(r, ids):
    """{status: count} over the stored metas of ids."""
    out = {}
    for i in range(0, len(ids), 1000):
        for raw in r.mget([f"celery-task-meta-{x}" for x in ids[i:i + 1000]]):
            s = "MISSING" if raw is None else json.loads(raw)["status"] if raw[:1] == b"{" else \
                __import__("msgpack").unpackb(raw)["status"]
            out[s] = out.get(s, 0) + 1
    return out


def queue_type(cluster, node, queue):
    rows = cluster.ctl(node, "-q", "list_queues", "name", "type", "arguments", "--formatter", "json")
    return next((q for q in json.loads(rows) if q["name"] == queue), None)


def test_quorum_queue_survives_a_node_stop(cluster, tmp_path):
    queue = f"cluster-{os.getpid()}-{secrets.token_hex(3)}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    r = redis.Redis.from_url(cluster.backend)
    ports = [free_port(), free_port()]
    workers = [start_worker(cluster, queue, tmp_path, data_dir, f"w{i}", "--metrics-port",
                            str(ports[i - 1])) for i in (1, 2)]
    producer = None
    t = {"jobs": JOBS}
    try:
        for w in workers:
            wait_log(w, " ready: queues ")
        q = queue_type(cluster, 2, queue)
        assert q and q["type"] == "quorum", q

        lines = tmp_path / "jobs.jsonl"
        names = [f"{queue}-{i}" for i in range(JOBS)]
        lines.write_text("".join(json.dumps({"task": "bench.count", "args": [n],
                                             "idempotency_key": f"k-{n}"}) + "\n" for n in names))
        ids_file = tmp_path / "ids.txt"
        t0 = time.monotonic()
        producer = subprocess.Popen(
            [str(BUILD / "bin" / "producer"), "bulk", str(lines), "--queue", queue,
             "--queue-type", "quorum", "--ids", str(ids_file), "--broker", ",".join(cluster.urls),
             "--backend", cluster.backend], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        # stop node 1 (the first URL: every client is connected to it) an eighth of the way in,
        # while the producer is normally still publishing
        def done_count():
            try:
                db = sqlite3.connect(data_dir / "bench.db", timeout=5)
                try:
                    return db.execute("SELECT count(*) FROM counters WHERE name LIKE ?",
                                      (queue + "-%",)).fetchone()[0]
                finally:
                    db.close()
            except sqlite3.OperationalError:  # not created yet
                return 0

        while done_count() < JOBS // 8:
            assert time.monotonic() - t0 < DEADLINE, "no progress before the node stop"
            assert producer.poll() in (None, 0), producer.stderr.read().decode()
            time.sleep(0.2)
        t["done_at_stop"] = done_count()
        t["stop_at_s"] = round(time.monotonic() - t0, 2)
        t["producer_running_at_stop"] = producer.poll() is None
        cluster.script("stop-node", "1")
        t["node_stopped_after_s"] = round(time.monotonic() - t0, 2)

        out, err = producer.communicate(timeout=DEADLINE)
        assert producer.returncode == 0, err.decode()
        t["producer_stderr"] = err.decode()[-300:]
        t["published_s"] = round(time.monotonic() - t0, 2)
        ids = ids_file.read_text().split()
        assert len(ids) == JOBS and len(set(ids)) == JOBS

        while True:
            s = states(r, ids)
            if s.get("SUCCESS") == JOBS:
                break
            assert time.monotonic() - t0 < DEADLINE, f"not all jobs finished: {s}"
            time.sleep(1)
        t["all_success_s"] = round(time.monotonic() - t0, 2)
        t["jobs_per_s"] = round(JOBS / t["all_success_s"])

        # exactly once: every job's counter is 1 in the shared bench.db
        db = sqlite3.connect(data_dir / "bench.db")
        counts = dict(db.execute("SELECT name, value FROM counters WHERE name LIKE ?",
                                 (queue + "-%",)).fetchall())
        db.close()
        assert len(counts) == JOBS, f"{JOBS - len(counts)} jobs never ran"
        twice = {n: v for n, v in counts.items() if v != 1}
        assert not twice, f"{len(twice)} jobs ran more than once, e.g. {list(twice.items())[:5]}"

        for w, port in zip(workers, ports):  # both moved to another node
            wait_log(w, "broker reconnected", timeout=5)
            assert broker_reconnects(port) >= 1
        q = queue_type(cluster, 2, queue)
        assert q and q["type"] == "quorum"
    finally:
        if producer and producer.poll() is None:
            producer.kill()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(60)
            except subprocess.TimeoutExpired:
                w.kill()
        print("\ncluster timings:", json.dumps(t))
        (tmp_path / "timings.json").write_text(json.dumps(t))
        cluster.script("start-node", "1", timeout=300)  # back to three nodes for the next test
        try:
            cluster.ctl(2, "-q", "delete_queue", queue)
            cluster.ctl(2, "-q", "delete_queue", queue + ".dead")
        except AssertionError:
            pass
        r.close()


def test_worker_declares_quorum_with_delivery_limit(cluster, tmp_path):
    queue = f"cluster-dl-{os.getpid()}-{secrets.token_hex(3)}"
    w = start_worker(cluster, queue, tmp_path, tmp_path, "dl", "--delivery-limit", "5")
    try:
        wait_log(w, " ready: queues ")
        q = queue_type(cluster, 2, queue)
        assert q and q["type"] == "quorum", q
        args = {a[0]: a[-1] for a in q["arguments"]}  # [[key, type, value], ...]
        assert args.get("x-delivery-limit") == 5, q
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(60)
        cluster.ctl(2, "-q", "delete_queue", queue)
        cluster.ctl(2, "-q", "delete_queue", queue + ".dead")
