"""producer_fixtures.py: fixtures for the producer CLI tests: the stack's environment, unique
queue names cleaned up afterwards, a runner for build/bin/producer, a raw AMQP channel (py-amqp)
to look at what was published, and a real Python Celery worker."""
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid

import amqp
import msgpack
import pytest
import redis

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("CELERIAC_BUILD_DIR", os.path.join(ROOT, "build"))
PRODUCER = os.path.join(BUILD, "bin", "producer")
WORKER = os.path.join(BUILD, "bin", "worker")
PYTHON = "/usr/bin/python3"


def need_env():
    missing = [k for k in ("CELERIAC_BROKER_URL", "CELERIAC_RESULT_BACKEND") if not os.environ.get(k)]
    if missing:
        pytest.fail("%s not set: run against a stack (eval \"$(scripts/stack.sh env)\")"
                    % ", ".join(missing))
    if not os.access(PRODUCER, os.X_OK):
        pytest.fail("%s not built: run make" % PRODUCER)


@pytest.fixture
def stack_env():
    need_env()
    return dict(os.environ)


class Producer:
    """Runs the producer CLI; returns CompletedProcess with text output."""

    def __init__(self, env):
        self.env = env

    def __call__(self, *args, env=None, input=None, timeout=120):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run([PRODUCER, *map(str, args)], env=e, input=input, text=True,
                              capture_output=True, timeout=timeout)

    def ok(self, *args, **kw):
        r = self(*args, **kw)
        assert r.returncode == 0, "producer %s failed (%d): %s" % (args, r.returncode, r.stderr)
        return r.stdout


@pytest.fixture
def producer(stack_env):
    return Producer(stack_env)


def amqp_connect():
    u = urllib.parse.urlparse(os.environ["CELERIAC_BROKER_URL"])
    vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
    c = amqp.Connection(host="%s:%d" % (u.hostname, u.port or 5672),
                        userid=urllib.parse.unquote(u.username or "guest"),
                        password=urllib.parse.unquote(u.password or "guest"), virtual_host=vhost)
    c.connect()
    return c


class Broker:
    """A raw AMQP view for assertions: depth, get, publish, delete."""

    def __init__(self):
        self.conn = amqp_connect()
        self.ch = self.conn.channel()

    def depth(self, q):
        try:
            ch = self.conn.channel()
            _, n, consumers = ch.queue_declare(q, passive=True)
            ch.close()
            return n, consumers
        except amqp.exceptions.NotFound:
            return None, None

    def get(self, q):
        m = self.ch.basic_get(q, no_ack=True)
        return m

    def publish(self, q, body, headers, **props):
        msg = amqp.Message(body, application_headers=headers, delivery_mode=2, **props)
        self.ch.basic_publish(msg, exchange="", routing_key=q)

    def delete(self, q):
        try:
            ch = self.conn.channel()
            ch.queue_delete(q)
            ch.exchange_delete(q)
            ch.close()
        except amqp.exceptions.AMQPError:
            pass

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


@pytest.fixture
def broker(stack_env):
    b = Broker()
    yield b
    b.close()


@pytest.fixture
def queue(stack_env):
    """A unique queue name; the queue, its exchange and its .dead queue are deleted afterwards."""
    name = "ptest_%d_%s" % (os.getpid(), uuid.uuid4().hex[:8])
    yield name
    b = Broker()
    for q in (name, name + ".dead"):
        b.delete(q)
    b.close()


@pytest.fixture
def rdb(stack_env):
    return redis.Redis.from_url(os.environ["CELERIAC_RESULT_BACKEND"])


def decode_body(msg):
    ct = msg.properties.get("content_type")
    if ct == "application/json":
        import json
        return json.loads(msg.body)
    assert ct == "application/x-msgpack", ct
    return msgpack.unpackb(msg.body, raw=False)


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    pytest.fail("timed out waiting for " + what)


def die_with_parent():
    """preexec_fn: the child gets SIGTERM if the test process dies, so no worker outlives it."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


TASKS = '''
import os
from celery import Celery
app = Celery("ptasks", broker=os.environ["CELERIAC_BROKER_URL"],
             backend=os.environ["CELERIAC_RESULT_BACKEND"])
if os.environ.get("PTASKS_FORMAT", "msgpack") == "msgpack":
    app.conf.task_serializer = "msgpack"
    app.conf.result_serializer = "msgpack"
    app.conf.accept_content = ["msgpack", "json"]
    app.conf.result_accept_content = ["msgpack", "json"]

@app.task(name="tasks.add")
def add(x, y):
    return x + y

@app.task(name="tasks.fail")
def fail(msg):
    raise ValueError(msg)

@app.task(name="tasks.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}
'''


class WorkerProc:
    """A worker subprocess (ours or Celery's) logging to a file; waits until it consumes."""

    stop_timeout = 30

    def __init__(self, argv, env, log_path, queues, cwd=None):
        self.log = open(log_path, "w+")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        b = Broker()
        try:
            for q in queues:
                wait_for(lambda: self.proc.poll() is None and (b.depth(q)[1] or 0) > 0, 60,
                         "a worker to consume " + q)
        finally:
            b.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class CeleryWorker(WorkerProc):
    stop_timeout = 15

    def __init__(self, tmp_path, queue, fmt):
        (tmp_path / "ptasks.py").write_text(TASKS)
        env = dict(os.environ, PTASKS_FORMAT=fmt, PYTHONPATH=str(tmp_path))
        super().__init__(
            [PYTHON, "-m", "celery", "-A", "ptasks", "worker", "-Q", queue, "-c", "1",
             "--pool", "solo", "-n", "%s@%%h" % queue, "--without-heartbeat",
             "--without-mingle", "--without-gossip", "-l", "info"],
            env, tmp_path / "worker.log", [queue], cwd=str(tmp_path))


@pytest.fixture
def celery_worker(stack_env, tmp_path, queue):
    """A Python Celery worker (msgpack) on `queue`."""
    w = CeleryWorker(tmp_path, queue, "msgpack")
    yield w
    w.stop()


@pytest.fixture
def celery_json_worker(stack_env, tmp_path, queue):
    """A Python Celery worker with Celery's default JSON configuration on `queue`."""
    w = CeleryWorker(tmp_path, queue, "json")
    yield w
    w.stop()


def closed_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


__all__ = [n for n in dir(sys.modules[__name__]) if not n.startswith("_")]
