"""Observability: the worker's --metrics-port server (/metrics, /healthz, /readyz), the per-job
resource use in the result meta's extra fields, the JSON log lines of failed jobs and the worker
registry behind `producer inspect workers`."""

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

from conftest import BUILD, result_meta, wait_for, wait_meta

PRODUCER = BUILD / "bin" / "producer"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')


def scrape(port):
    """{(name, frozenset(labels.items())): value} from /metrics (checks the text format)."""
    status, body = get(port, "/metrics")
    assert status == 200
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_metrics_health_and_job_figures(workers, celery_app, redis_client, queue):
    port = free_port()
    w = workers.start(queue, "-c", "2", "--metrics-port", str(port), "--max-crashes", "1")
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ready\n")
    assert get(port, "/nope")[0] == 404

    ok = [celery_app.send_task("bench.noop", args=[i], queue=queue) for i in range(3)]
    failed = celery_app.send_task("bench.fail", args=["boom"], queue=queue)
    crashed = celery_app.send_task("bench.crash", queue=queue)
    for r in ok:
        assert wait_meta(redis_client, r.id)["status"] == "SUCCESS"
    assert wait_meta(redis_client, failed.id)["status"] == "FAILURE"
    assert wait_meta(redis_client, crashed.id)["status"] == "FAILURE"

    # per-job resource use rides in the result meta as extra keys
    extra = result_meta(redis_client, ok[0].id)["celeriac"]
    assert set(extra) == {"cpu_ms", "maxrss_kb", "worker", "duration_ms"}
    assert extra["worker"] == w.hostname and extra["maxrss_kb"] > 0
    assert extra["cpu_ms"] >= 0 and extra["duration_ms"] >= 0
    assert result_meta(redis_client, failed.id)["celeriac"]["worker"] == w.hostname
    # and Celery still reads the meta
    assert celery_app.AsyncResult(ok[1].id).get(timeout=10) == 1

    def scraped():
        s = scrape(port)  # queue depth is refreshed every 5 s, the crash needs a respawn
        return s if value(s, "celeriac_queue_messages", queue=queue) is not None and \
            value(s, "celeriac_children") == 2 else None

    s = wait_for(scraped, timeout=30, interval=0.5, what="queue depth and 2 children")
    assert value(s, "celeriac_jobs_total", task="bench.noop", outcome="success") == 3
    assert value(s, "celeriac_jobs_total", task="bench.fail", outcome="failure") == 1
    assert value(s, "celeriac_jobs_total", task="bench.crash", outcome="failure") == 1
    assert value(s, "celeriac_job_duration_seconds_count", task="bench.noop") == 3
    assert value(s, "celeriac_job_duration_seconds_bucket", task="bench.noop", le="+Inf") == 3
    assert value(s, "celeriac_job_cpu_seconds_total", task="bench.noop") >= 0
    assert value(s, "celeriac_job_maxrss_kilobytes", task="bench.noop") > 0
    crashes = {dict(k[1])["signal"]: v for k, v in s.items() if k[0] == "celeriac_child_crashes_total"}
    # SIGSEGV; under ASan the child catches it and exits 1 instead
    assert crashes in ({"SIGSEGV": 1}, {"exit": 1}), crashes
    assert value(s, "celeriac_child_restarts_total") >= 1
    assert value(s, "celeriac_dead_letters_total") == 1
    assert value(s, "celeriac_jobs_in_flight") == 0
    assert value(s, "celeriac_broker_connected") == 1
    assert value(s, "celeriac_queue_messages", queue=queue) == 0
    assert value(s, "celeriac_queue_consumers", queue=queue) == 1

    # a failed job is logged at warning level with the structured fields
    recs = [r for r in w.log_records() if r.get("id") == failed.id and r.get("outcome") == "failure"]
    assert recs, w.log_text()
    assert recs[0]["task"] == "bench.fail" and recs[0]["queue"] == queue
    assert recs[0]["worker"] == w.hostname and "duration_ms" in recs[0]


def test_readyz_is_503_while_draining(workers, celery_app, redis_client, queue):
    port = free_port()
    w = workers.start(queue, "-c", "1", "--metrics-port", str(port))
    slow = celery_app.send_task("bench.sleep", args=[3], queue=queue)
    wait_for(lambda: value(scrape(port), "celeriac_jobs_in_flight") == 1, timeout=30,
             what="the job to start")
    w.signal(15)
    status, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(get(port, "/readyz")),
                            timeout=10, what="/readyz 503")
    assert body == "draining\n"
    assert get(port, "/healthz")[0] == 200
    assert w.wait() == 0
    assert wait_meta(redis_client, slow.id)["status"] == "SUCCESS"


def test_metrics_off_by_default_and_bad_port_refused(workers, queue, stack):
    w = workers.start(queue, "-c", "1")
    assert "metrics on" not in w.log_text()
    p = subprocess.run([str(BUILD / "bin" / "worker"), "--queue", queue, "--broker", stack.broker,
                        "--backend", stack.backend, "--metrics-port", "70000"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "metrics-port" in p.stderr


def test_registry_lists_the_worker(workers, queue, stack):
    w = workers.start(queue, "-c", "2")

    def listed():
        p = subprocess.run([str(PRODUCER), "inspect", "workers", "--json", "--broker", stack.broker,
                            "--backend", stack.backend], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return next((d for d in json.loads(p.stdout) if d.get("hostname") == w.hostname), None)

    d = wait_for(listed, timeout=30, interval=0.5, what="the worker in the registry")
    assert d["pid"] == w.pid and d["queues"] == [queue] and d["concurrency"] == 2
    assert "bench.noop" in d["tasks"]
    for key in ("started", "heartbeat", "processed"):
        assert key in d
