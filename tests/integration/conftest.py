"""Shared fixtures for the Python integration tests (tests/integration/test_*.py).

Everything runs against the stack named by CELERIAC_BROKER_URL and CELERIAC_RESULT_BACKEND
(`eval "$(scripts/stack.sh env)"`); a missing variable fails the test loudly. Each test gets
unique queue names, its own CELERIAC_DATA_DIR (under tmp_path) and its own worker processes with
unique --hostname values; teardown stops the workers, prints their logs when the test failed,
and deletes the queues and exchanges the test used.

Main fixtures:
  stack       -> Stack(broker, backend, rabbitmqctl)
  queue       -> a fresh unique queue name (call `new_queue()` for more)
  data_dir    -> a per-test CELERIAC_DATA_DIR
  workers     -> Workers: `workers.start(queue, "-c", "2", ...)` returns a Worker
  celery_app  -> a Celery client (msgpack tasks and results) on the stack
  redis_client-> redis.Redis on the result backend
  amqp        -> Amqp helper: publish_raw(), get(), count(), purge(); deletes test queues
"""

import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CELERIAC_BUILD", ROOT / "build"))
WORKER_BIN = BUILD / "bin" / "worker"
SERVICES_DIR = BUILD / "services"
TEST_SERVICES_DIR = BUILD / "tests" / "services"
START_TIMEOUT = 30
RESULT_TIMEOUT = 60


def uniq(prefix="t"):
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"


def wait_for(pred, timeout=RESULT_TIMEOUT, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or fails the test at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---- the stack ----


@dataclass
class Stack:
    broker: str
    backend: str
    rabbitmqctl: str


@pytest.fixture(scope="session")
def stack():
    missing = [v for v in ("CELERIAC_BROKER_URL", "CELERIAC_RESULT_BACKEND") if not os.environ.get(v)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: start a stack and export its env, e.g. "
            'eval "$(scripts/stack.sh env)"',
            pytrace=False,
        )
    if not WORKER_BIN.exists():
        pytest.fail(f"{WORKER_BIN} missing: run make first", pytrace=False)
    return Stack(
        os.environ["CELERIAC_BROKER_URL"],
        os.environ["CELERIAC_RESULT_BACKEND"],
        os.environ.get("CELERIAC_RABBITMQCTL", ""),
    )


@pytest.fixture(scope="session")
def celery_app(stack):
    from celery import Celery

    app = Celery("celeriac-tests", broker=stack.broker, backend=stack.backend)
    app.conf.update(
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack", "json"],
        result_accept_content=["msgpack", "json"],
        broker_connection_retry_on_startup=True,
    )
    yield app
    app.close()


@pytest.fixture(scope="session")
def redis_client(stack):
    import redis

    r = redis.Redis.from_url(stack.backend)
    yield r
    r.close()


# ---- AMQP helper (py-amqp through kombu) ----


class Amqp:
    def __init__(self, url):
        from kombu import Connection

        self.conn = Connection(url)
        self.conn.connect()
        self.queues = set()

    @property
    def channel(self):
        return self.conn.default_channel

    def track(self, *names):
        self.queues.update(names)

    def count(self, queue):
        """Ready messages in queue (0 when the queue does not exist)."""
        try:
            _, n, _ = self.channel.queue_declare(queue=queue, passive=True)
            return n
        except Exception:
            self._reopen()
            return 0

    def get(self, queue):
        """basic.get with auto-ack: an amqp.Message or None."""
        try:
            return self.channel.basic_get(queue=queue, no_ack=True)
        except Exception:
            self._reopen()
            return None

    def publish_raw(self, queue, body, headers=None, content_type="application/x-msgpack",
                    content_encoding="binary", **props):
        """Publishes bytes exactly as given to queue through the default exchange."""
        from amqp import Message

        msg = Message(body=body, content_type=content_type, content_encoding=content_encoding,
                      application_headers=headers or {}, delivery_mode=2, **props)
        self.channel.basic_publish(msg, exchange="", routing_key=queue)

    def purge(self, queue):
        try:
            self.channel.queue_purge(queue)
        except Exception:
            self._reopen()

    def _reopen(self):
        self.conn.close()
        from kombu import Connection

        self.conn = Connection(self.conn.as_uri(include_password=True))
        self.conn.connect()

    def cleanup(self):
        for q in self.queues:
            for name in (q, q + ".dead"):
                try:
                    self.channel.queue_delete(name)
                except Exception:
                    self._reopen()
            try:
                self.channel.exchange_delete(q)
            except Exception:
                self._reopen()
        self.conn.close()


@pytest.fixture
def amqp(stack):
    a = Amqp(stack.broker)
    yield a
    a.cleanup()


@pytest.fixture
def new_queue(amqp, request):
    """A factory of unique queue names, deleted (with <q>.dead) after the test."""

    def make(prefix=None):
        name = uniq(prefix or "q-" + request.node.name[:24].replace("[", "-").replace("]", ""))
        amqp.track(name)
        return name

    return make


@pytest.fixture
def queue(new_queue):
    return new_queue()


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


# ---- workers ----


class Worker:
    def __init__(self, args, env, log_path, hostname):
        self.args = args
        self.log_path = log_path
        self.hostname = hostname
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        return Path(self.log_path).read_text(errors="replace")

    def log_records(self):
        """The JSON log lines as dicts (other lines are skipped)."""
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_log(self, needle, timeout=START_TIMEOUT):
        def seen():
            if needle in self.log_text():
                return True
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode} before logging "
                            f"{needle!r}:\n{self.log_text()}")
            return False

        wait_for(seen, timeout, what=f"{needle!r} in the worker log")

    def wait_ready(self, timeout=START_TIMEOUT):
        self.wait_log(" ready: queues ", timeout)
        return self

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout=RESULT_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.hostname} did not exit within {timeout} s")

    def stop(self, timeout=RESULT_TIMEOUT):
        """Warm shutdown (SIGTERM) and wait; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Workers:
    def __init__(self, stack, tmp_path, data_dir):
        self.stack = stack
        self.tmp_path = tmp_path
        self.data_dir = data_dir
        self.started = []

    def start(self, queues, *args, env=None, services=None, hostname=None, ready=True,
              loglevel="debug"):
        """Starts build/bin/worker consuming queues (str or list) with JSON logs in tmp_path."""
        if not isinstance(queues, str):
            queues = ",".join(queues)
        hostname = hostname or f"{uniq('w')}@test"
        full_env = dict(os.environ)
        full_env.update({
            "CELERIAC_BROKER_URL": self.stack.broker,
            "CELERIAC_RESULT_BACKEND": self.stack.backend,
            "CELERIAC_DATA_DIR": str(self.data_dir),
        })
        full_env.pop("CELERIAC_SERVICES", None)
        full_env.update(env or {})
        argv = [str(WORKER_BIN), "--queue", queues, "--hostname", hostname,
                "--services", str(services or SERVICES_DIR), "--log-format", "json",
                "--loglevel", loglevel, *args]
        log = self.tmp_path / f"worker-{len(self.started)}-{hostname.split('@')[0]}.log"
        w = Worker(argv, full_env, log, hostname)
        self.started.append(w)
        if ready:
            w.wait_ready()
        return w

    def close(self, failed):
        for w in self.started:
            w.close()
            if failed:
                print(f"\n---- log of worker {w.hostname} ({' '.join(w.args)}) ----")
                print(w.log_text())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def workers(stack, tmp_path, data_dir, request):
    ws = Workers(stack, tmp_path, data_dir)
    yield ws
    rep = getattr(request.node, "rep_call", None)
    ws.close(failed=rep is None or rep.failed)


# ---- results ----


def result_meta(redis_client, task_id, serializer="msgpack"):
    """The stored celery-task-meta-<id> decoded, or None when absent."""
    raw = redis_client.get(f"celery-task-meta-{task_id}")
    if raw is None:
        return None
    if serializer == "json":
        return json.loads(raw)
    import msgpack

    return msgpack.unpackb(raw, raw=False)


def wait_meta(redis_client, task_id, states=("SUCCESS", "FAILURE", "REVOKED"),
              timeout=RESULT_TIMEOUT):
    """Waits until the stored meta of task_id has one of states; returns it."""

    def ready():
        m = result_meta(redis_client, task_id)
        return m if m and m.get("status") in states else None

    return wait_for(ready, timeout, what=f"task {task_id} in {states}")
