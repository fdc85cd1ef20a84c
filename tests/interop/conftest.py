"""Fixtures for the interop suite: real Python Celery 5.2 against celeriac's worker and producer.

Everything runs against the stack named by CELERIAC_BROKER_URL / CELERIAC_RESULT_BACKEND
(`eval "$(scripts/stack.sh env)"`). Every test gets its own queue names, its own
CELERIAC_DATA_DIR and its own processes, and stops and deletes all of them afterwards.
"""

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CELERIAC_BUILD", ROOT / "build"))
PYTHON = "/usr/bin/python3"
START_TIMEOUT = 60  # seconds a process may take to start consuming
RESULT_TIMEOUT = float(os.environ.get("CELERIAC_INTEROP_TIMEOUT", "60"))  # seconds per result


def uniq(prefix):
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def stack():
    broker = os.environ.get("CELERIAC_BROKER_URL")
    backend = os.environ.get("CELERIAC_RESULT_BACKEND")
    if not broker or not backend:
        pytest.fail(
            "CELERIAC_BROKER_URL and CELERIAC_RESULT_BACKEND are not set: run "
            "`eval \"$(scripts/stack.sh env)\"` (or `make test`) first"
        )
    return {"broker": broker, "backend": backend}


def binary(name):
    path = BUILD / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} does not exist: run `make` first")
    return path


# ---- Celery configuration ----

CONFIGS = {
    # What the spec (section 0) asks a Python app to set to talk msgpack to celeriac.
    "msgpack": dict(
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack", "json"],
        result_accept_content=["msgpack", "json"],
    ),
    # Celery's defaults: JSON bodies and JSON results.
    "json": dict(),
}


def make_app(stack, config, name="interop"):
    app = Celery(name, broker=stack["broker"], backend=stack["backend"])
    app.conf.update(CONFIGS[config])
    app.conf.update(
        broker_connection_retry_on_startup=True,
        result_expires=3600,
        task_default_queue=uniq("interop-default"),  # never the shared 'celery' queue
    )
    return app


@pytest.fixture(params=sorted(CONFIGS))
def config(request):
    return request.param


@pytest.fixture
def app(stack, config):
    a = make_app(stack, config)
    yield a
    a.close()


@pytest.fixture
def msgpack_app(stack):
    a = make_app(stack, "msgpack")
    yield a
    a.close()


# ---- broker helpers ----


def consumer_count(stack, queue):
    """Consumers on queue, or -1 while it does not exist yet."""
    with Connection(stack["broker"]) as conn:
        try:
            ch = conn.channel()
            _, _, consumers = ch.queue_declare(queue=queue, passive=True)
            return consumers
        except Exception:  # NOT_FOUND closes the channel: the queue is not declared yet
            return -1


def wait_consumers(stack, queue, n, procs):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        if consumer_count(stack, queue) >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"queue {queue}: fewer than {n} consumers after {START_TIMEOUT} s\n"
                + "\n".join(p.tail() for p in procs))


def delete_queues(stack, names):
    with Connection(stack["broker"]) as conn:
        for name in names:
            for what in ("queue", "exchange"):
                try:
                    ch = conn.channel()
                    if what == "queue":
                        ch.queue_delete(queue=name)
                    else:
                        ch.exchange_delete(exchange=name)
                    ch.close()
                except Exception:
                    pass


@pytest.fixture
def queues(stack):
    """queues() returns a fresh queue name; all of them are deleted after the test."""
    made = []

    def new(prefix="interop"):
        q = uniq(prefix)
        made.append(q)
        return q

    yield new
    names = []
    for q in made:
        names += [q, q + ".dead"]
    delete_queues(stack, names)


# ---- processes ----


class Proc:
    def __init__(self, name, argv, env, cwd, logdir):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = Path(logdir) / f"{name}.log"
        self._f = open(self.log, "wb")
        self.p = subprocess.Popen(self.argv, env=env, cwd=cwd, stdout=self._f,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, n=60):
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            lines = []
        return f"--- {self.name} ({' '.join(self.argv)}) ---\n" + "\n".join(lines)

    def alive(self):
        return self.p.poll() is None

    def check_alive(self):
        if not self.alive():
            pytest.fail(f"{self.name} exited with {self.p.returncode}\n{self.tail()}")

    def stop(self, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self._f.close()


@pytest.fixture
def procs(request):
    started = []
    yield started
    for p in reversed(started):
        p.stop()
    if getattr(request.node, "rep_call_failed", False):
        for p in started:
            sys.stderr.write(p.tail() + "\n")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed


@pytest.fixture
def cworker(stack, procs, tmp_path):
    """cworker(queue, ...) starts build/bin/worker consuming queue and waits until it consumes."""

    def start(queue, concurrency=2, pool="prefork", extra=(), wait=True, data_dir=None):
        env = dict(os.environ)
        env["CELERIAC_DATA_DIR"] = str(data_dir or tmp_path / "data")
        env["CELERIAC_SERVICES"] = str(BUILD / "services")
        argv = [binary("worker"), "--queue", queue, "--concurrency", concurrency, "--pool", pool,
                "--broker", stack["broker"], "--backend", stack["backend"],
                "--hostname", uniq("cworker") + "@localhost", *extra]
        p = Proc(uniq("cworker"), argv, env, ROOT, tmp_path)
        procs.append(p)
        if wait:
            wait_consumers(stack, queue, 1, [p])
        return p

    return start


PYWORKER_MODULE = """
from celery import Celery
from celery.exceptions import Ignore

app = Celery({name!r}, broker={broker!r}, backend={backend!r})
app.conf.update({conf!r})
app.conf.update(broker_connection_retry_on_startup=True, result_expires=3600,
                worker_hijack_root_logger=False)


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="tasks.tag")
def tag(x):
    return ["py", x]


@app.task(name="tasks.slow")
def slow(x, seconds=1.0):
    import time
    time.sleep(seconds)
    return x


@app.task(name="bench.noop")
def noop(x=None):
    # the same name as the C task, to show which kind of worker ran a job
    return ["py", x]
"""


@pytest.fixture
def pyworker(stack, procs, tmp_path):
    """pyworker(queue, config) starts a real Celery worker (solo pool) in a subprocess."""

    def start(queue, config="msgpack", wait=True, extra_code=""):
        mod = "pyw_" + secrets.token_hex(4)
        code = PYWORKER_MODULE.format(name=mod, broker=stack["broker"],
                                      backend=stack["backend"], conf=CONFIGS[config])
        (tmp_path / f"{mod}.py").write_text(code + textwrap.dedent(extra_code))
        node = uniq("pyworker")
        argv = [PYTHON, "-m", "celery", "-A", mod, "worker", "-Q", queue, "-c", "1",
                "--pool", "solo", "-n", f"{node}@%h", "--without-heartbeat",
                "--without-mingle", "--without-gossip", "-l", "info"]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(tmp_path)
        p = Proc(node, argv, env, tmp_path, tmp_path)
        procs.append(p)
        if wait:
            wait_consumers(stack, queue, 1, [p])
        return p

    return start


@pytest.fixture
def redis_client(stack):
    import redis

    r = redis.Redis.from_url(stack["backend"])
    yield r
    r.close()
