"""test_hostile.py: messages that are wrong in every way, published straight to a worker's queue
with a plain AMQP client (py-amqp). For each one: the worker stays up, still serves a valid
bench.noop round trip, and the bad message ends in <q>.dead, unchanged, with x-celeriac-error-*
headers giving a reason. At the end a SIGTERM must give a clean exit and, under a sanitizer
build, no AddressSanitizer/LeakSanitizer/UBSan report on stderr.
With --require-signature (issue 8; skipped, with the reason shown, while the worker lacks the
flag), unsigned and forged jobs must be dead-lettered without running; the signature is computed
here independently from the layout documented in common/sign.h.

Env: CELERIAC_BROKER_URL, CELERIAC_RESULT_BACKEND (required; see scripts/stack.sh env);
CELERIAC_WORKER_BIN selects the worker binary (default build/bin/worker; e.g. build/asan/bin/worker
after `make check`), its services are taken from <bin>/../../services unless CELERIAC_SERVICES
is set.
"""
import hashlib
import hmac
import os
import random
import signal
import struct
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import amqp
import msgpack
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
MAX_MESSAGE_SIZE = 65536
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def need_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run `eval \"$(scripts/stack.sh env)\"` or `make test`")
    return value


def worker_bin():
    path = Path(os.environ.get("CELERIAC_WORKER_BIN") or ROOT / "build/bin/worker")
    if not path.is_absolute():
        path = ROOT / path
    if not os.access(path, os.X_OK):
        pytest.fail(f"worker binary {path} not found: build it (make) or set CELERIAC_WORKER_BIN")
    return path


def services_dir(bin_path):
    env = os.environ.get("CELERIAC_SERVICES")
    return Path(env) if env else bin_path.parent.parent / "services"


def amqp_connect(url):
    u = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
    conn = amqp.Connection(host=f"{u.hostname}:{u.port or 5672}", userid=urllib.parse.unquote(u.username or "guest"),
                           password=urllib.parse.unquote(u.password or "guest"), virtual_host=vhost,
                           confirm_publish=True, connect_timeout=10)
    conn.connect()
    return conn


def celery_headers(name, task_id, override=None):
    h = {
        "lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
        "root_id": task_id, "parent_id": None, "argsrepr": "()", "kwargsrepr": "{}",
        "origin": "gen0@hostile", "ignore_result": False,
    }
    for k, v in (override or {}).items():
        if v is DROP:
            h.pop(k, None)
        else:
            h[k] = v
    return h


DROP = object()


def body(args, kwargs, embed=EMBED):
    return msgpack.packb([args, kwargs, embed], use_bin_type=True)


# ---- the hostile cases: name -> (body bytes, header overrides, properties overrides) ----

def _deep(levels):
    return b"\x93" + b"\x91" * levels + b"\xc0" + b"\x80\x80"


def _nest(levels):
    v = []
    for _ in range(levels):
        v = [v]
    return v


VALID = body([1], {})
CASES = {
    "not_msgpack": (b"\xc1\xc1 this is not msgpack at all", {}, {}),
    "empty_body": (b"", {}, {}),
    "truncated_msgpack": (body(["hello world"], {"k": "v"})[:-5], {}, {}),
    "trailing_garbage": (VALID + b"\x01\x02", {}, {}),
    "top_level_map": (msgpack.packb({"args": [], "kwargs": {}}, use_bin_type=True), {}, {}),
    "top_level_int": (msgpack.packb(7), {}, {}),
    "body_two_elements": (msgpack.packb([[], {}], use_bin_type=True), {}, {}),
    "body_four_elements": (msgpack.packb([[], {}, {}, 1], use_bin_type=True), {}, {}),
    "args_is_map": (body({"a": 1}, {}), {}, {}),
    "kwargs_is_array": (body([], [1, 2]), {}, {}),
    "kwargs_int_key": (body([], {1: "x"}), {}, {}),
    "kwargs_bin_key": (msgpack.packb([[], {b"k": 1}, EMBED], use_bin_type=True), {}, {}),
    "embed_is_str": (body([], {}, "embed"), {}, {}),
    "deep_nesting_10000": (_deep(10000), {}, {}),
    "oversize_body": (body(["x" * (4 * MAX_MESSAGE_SIZE)], {}), {}, {}),
    "huge_str_header": (b"\x93\x91\xdb\x7f\xff\xff\xff" + b"abc", {}, {}),
    "huge_array_header": (b"\x93\xdd\xff\xff\xff\xff\x01\x02", {}, {}),
    "huge_map_header": (b"\x93\x90\xdf\xff\xff\xff\xff\xa1k\x01", {}, {}),
    "invalid_utf8_str": (b"\x93\x91\xa2\xff\xfe\x80\x80", {}, {}),
    "invalid_utf8_key": (b"\x93\x90\x81\xa1\xff\x01\x80", {}, {}),
    "ext_type": (b"\x93\x91\xd6\xff\x00\x00\x00\x01\x80\x80", {}, {}),
    "content_type_pickle": (VALID, {}, {"content_type": "application/x-python-serialize"}),
    "content_type_unknown": (VALID, {}, {"content_type": "text/x-hostile"}),
    "content_encoding_unknown": (VALID, {}, {"content_encoding": "x-hostile-zip"}),
    "json_truncated": (b'[[1], {"a": ', {}, {"content_type": "application/json", "content_encoding": "utf-8"}),
    "json_not_list": (b'{"not": "a list"}', {}, {"content_type": "application/json", "content_encoding": "utf-8"}),
    "missing_task": (VALID, {"task": DROP}, {}),
    "missing_id": (VALID, {"id": DROP}, {}),
    "no_headers": (VALID, None, {}),
    "task_is_int": (VALID, {"task": 42}, {}),
    "id_is_int": (VALID, {"id": 12345}, {}),
    "task_invalid_utf8": (VALID, {"task": b"bench.\xff\xfe"}, {}),
    "retries_is_str": (VALID, {"retries": "three"}, {}),
    "timelimit_is_str": (VALID, {"timelimit": "10"}, {}),
    "timelimit_three_items": (VALID, {"timelimit": [1, 2, 3]}, {}),
    "timelimit_of_strings": (VALID, {"timelimit": ["a", "b"]}, {}),
    "eta_nonsense": (VALID, {"eta": "not a date"}, {}),
    "eta_out_of_range": (VALID, {"eta": "2026-13-45T99:99:99+00:00"}, {}),
    "eta_is_int": (VALID, {"eta": 12345}, {}),
    "expires_nonsense": (VALID, {"expires": "yesterday"}, {}),
    "unknown_task": (VALID, {"task": "bench.does_not_exist"}, {}),
    "group_index_is_str": (VALID, {"group_index": "first"}, {}),
    "ignore_result_is_str": (VALID, {"ignore_result": "no"}, {}),
    "parent_id_is_list": (VALID, {"parent_id": ["a", "b"]}, {}),
    "idempotency_key_is_int": (VALID, {"x-celeriac-idempotency-key": 7}, {}),
    "signature_is_table": (VALID, {"x-celeriac-signature": {"alg": "none"}}, {}),
    "header_nested_300_deep": (VALID, {"task": 1, "x-deep": _nest(300)}, {}),
    "headers_5000_keys": (VALID, {"task": 1, **{f"x-k{i}": i for i in range(5000)}}, {}),
}


def _field(v):
    if v is None:
        return b"\x00"
    b = v.encode() if isinstance(v, str) else v
    return b"\x01" + struct.pack(">Q", len(b)) + b


def sign_v1(key, headers, data, fmt=0):
    """The x-celeriac-signature of a message, written from the layout in common/sign.h (not from
    the C code): HMAC-SHA256 over the canonical bytes, lower-case hex. eta/expires are unset."""
    assert headers.get("eta") is None and headers.get("expires") is None
    canon = (b"celeriac-sign-v1" + _field(headers["task"]) + _field(headers["id"])
             + struct.pack(">qqq", 0, 0, headers.get("retries") or 0)
             + _field(headers.get("root_id") or headers["id"]) + _field(headers.get("parent_id"))
             + _field(headers.get("group")) + _field(headers.get("x-celeriac-idempotency-key"))
             + bytes([fmt]) + struct.pack(">Q", len(data)) + data)
    return hmac.new(key, canon, hashlib.sha256).hexdigest()


class Worker:
    """One worker process on a private queue; its stderr goes to a file we read at the end."""

    def __init__(self, tmp, extra_args=(), key=None):
        self.broker = need_env("CELERIAC_BROKER_URL")
        self.backend = need_env("CELERIAC_RESULT_BACKEND")
        self.bin = worker_bin()
        self.queue = f"hostile-{os.getpid()}-{random.randrange(1 << 30):x}"
        self.tmp = Path(tmp)
        self.stderr_path = self.tmp / "worker.stderr"
        self.redis = redis.Redis.from_url(self.backend)
        self.ids = []
        self.extra_args = list(extra_args)
        self.key = key  # when set, valid jobs are signed (x-celeriac-signature)
        self.proc = None
        self.conn = None
        self.ch = None

    def start(self):
        env = dict(os.environ, CELERIAC_DATA_DIR=str(self.tmp / "data"),
                   ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "detect_leaks=1"))
        cmd = [str(self.bin), "--queue", self.queue, "--concurrency", "2", "--pool", "prefork",
               "--services", str(services_dir(self.bin)), "--broker", self.broker,
               "--backend", self.backend, "--hostname", f"{self.queue}@localhost",
               "--loglevel", "info", "--log-format", "json",
               "--max-message-size", str(MAX_MESSAGE_SIZE), "--time-limit", "30", *self.extra_args]
        self.err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.err, stderr=subprocess.STDOUT)
        self.conn = amqp_connect(self.broker)
        self.ch = self.conn.channel()
        self.wait_consuming()

    def log_tail(self, n=4000):
        self.err.flush()
        return self.stderr_path.read_bytes()[-n:].decode("utf-8", "replace")

    def wait_consuming(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited with {self.proc.returncode}:\n{self.log_tail()}"
            ch = self.conn.channel()
            try:
                _, _, consumers = ch.queue_declare(self.queue, passive=True)
                ch.close()
                if consumers > 0:
                    return
            except amqp.exceptions.NotFound:
                pass
            time.sleep(0.2)
        pytest.fail(f"worker did not start consuming {self.queue} in {timeout} s:\n{self.log_tail()}")

    def publish(self, data, headers, props):
        p = {"content_type": "application/x-msgpack", "content_encoding": "binary", "delivery_mode": 2}
        p.update(props)
        if headers is not None:
            p["application_headers"] = headers
        self.ch.basic_publish(amqp.Message(data, **p), exchange="", routing_key=self.queue)

    def noop_round_trip(self, timeout=30):
        tid = str(uuid.uuid4())
        value = f"alive-{tid}"
        self.ids.append(tid)
        data = body([value], {})
        headers = celery_headers("bench.noop", tid, {"argsrepr": repr([value])})
        if self.key:
            headers["x-celeriac-signature"] = sign_v1(self.key, headers, data)
        self.publish(data, headers, {"correlation_id": tid})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = self.redis.get(f"celery-task-meta-{tid}")
            if raw is not None:
                meta = msgpack.unpackb(raw, raw=False)
                assert meta["status"] == "SUCCESS", meta
                assert meta["result"] == value and meta["task_id"] == tid, meta
                return
            assert self.proc.poll() is None, f"worker died ({self.proc.returncode}):\n{self.log_tail()}"
            time.sleep(0.02)
        pytest.fail(f"bench.noop {tid} got no result in {timeout} s:\n{self.log_tail()}")

    def get_dead(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.ch.basic_get(queue=self.queue + ".dead", no_ack=True)
            except amqp.exceptions.NotFound:
                self.ch = self.conn.channel()
                msg = None
            if msg is not None:
                return msg
            time.sleep(0.05)
        return None

    def stop(self, timeout=60):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"worker did not exit {timeout} s after SIGTERM:\n{self.log_tail()}")

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.conn:
            try:
                ch = self.conn.channel()
                for q in (self.queue, self.queue + ".dead"):
                    ch.queue_delete(q)
                ch.exchange_delete(self.queue)
                self.conn.close()
            except Exception:
                pass
        if self.ids:
            self.redis.delete(*[f"celery-task-meta-{i}" for i in self.ids])
        self.err.close()


@pytest.fixture(scope="module")
def worker():
    with tempfile.TemporaryDirectory(prefix="celeriac-hostile-") as tmp:
        w = Worker(tmp)
        try:
            w.start()
            w.noop_round_trip()
            yield w
        finally:
            w.cleanup()


def raw_body(msg):
    """py-amqp decodes a body whose content_encoding names a codec (and returns '' for an empty
    one); encode it back to compare bytes."""
    b = msg.body
    if isinstance(b, str):
        try:
            return b.encode(msg.properties.get("content_encoding") or "utf-8")
        except LookupError:  # 'binary' and other non-codecs: only '' comes back as str
            return b.encode("latin-1")
    return bytes(b)


def header_text(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_message_is_dead_lettered(worker, case):
    data, overrides, props = CASES[case]
    marker = f"{case}-{uuid.uuid4()}"
    bad_id = str(uuid.uuid4())
    worker.ids.append(bad_id)
    if overrides is None:
        headers = None
        props = dict(props, correlation_id=marker)
    else:
        headers = celery_headers("bench.noop", bad_id, overrides)
        headers["x-hostile-case"] = marker
    worker.publish(data, headers, props)
    worker.noop_round_trip()

    msg = worker.get_dead()
    assert msg is not None, f"{case}: nothing arrived in {worker.queue}.dead:\n{worker.log_tail()}"
    got = msg.headers or {}
    if headers is None:
        assert msg.properties.get("correlation_id") == marker, (case, msg.properties)
    else:
        assert header_text(got.get("x-hostile-case")) == marker, f"{case}: wrong dead letter {got}"
    assert raw_body(msg) == data, f"{case}: dead letter body differs from what was sent"
    errors = {k: header_text(v) for k, v in got.items() if k.startswith("x-celeriac-error-")}
    assert errors, f"{case}: no x-celeriac-error-* headers in {sorted(got)}"
    assert any(v.strip() for v in errors.values()), f"{case}: empty error headers {errors}"
    print(f"hostile {case}: {errors}")
    # a result the worker chose to store for it (e.g. NotRegistered) must be readable by Celery
    stored = worker.redis.get(f"celery-task-meta-{bad_id}")
    if stored is not None:
        try:
            meta = msgpack.unpackb(stored, raw=False)
        except Exception as e:
            pytest.fail(f"{case}: stored result is not readable by Python msgpack (raw=False): {e!r}")
        assert meta.get("status") in ("FAILURE", "REVOKED"), f"{case}: stored {meta}"
    assert worker.proc.poll() is None, f"{case}: worker exited:\n{worker.log_tail()}"


def test_nothing_else_dead_and_clean_shutdown(worker):
    worker.noop_round_trip()
    extra = worker.get_dead(timeout=2)
    assert extra is None, f"unexpected extra dead letter: {extra.headers if extra else None}"
    rc = worker.stop()
    log = worker.log_tail(1 << 20)
    assert rc == 0, f"worker exit status {rc} after SIGTERM:\n{log[-4000:]}"
    found = sorted({line.strip()[:300] for line in log.splitlines()
                    if any(m in line for m in SANITIZER_MARKS)})
    assert not found, "sanitizer reports in worker stderr:\n" + "\n".join(found[:20])


# ---- signed jobs (issue 8): --require-signature --signing-key-file ----

SIGNING_KEY = b"hostile-test-signing-key-0123456789"


def worker_supports_signing():
    out = subprocess.run([str(worker_bin()), "--help"], capture_output=True, text=True, timeout=30)
    return "--require-signature" in out.stdout + out.stderr


@pytest.fixture(scope="module")
def signed_worker():
    if not worker_supports_signing():
        pytest.skip("the worker has no --require-signature/--signing-key-file yet (issue 8; "
                    "the HMAC is common/sign.h)")
    with tempfile.TemporaryDirectory(prefix="celeriac-signed-") as tmp:
        keyfile = Path(tmp) / "signing.key"
        keyfile.write_bytes(SIGNING_KEY + b"\n")
        keyfile.chmod(0o600)
        w = Worker(tmp, ["--require-signature", "--signing-key-file", str(keyfile)], key=SIGNING_KEY)
        try:
            w.start()
            w.noop_round_trip()
            yield w
        finally:
            w.cleanup()


def _tamper(case, headers, data):
    """Returns (headers, body) of a forged variant of a valid signed message."""
    sig = sign_v1(SIGNING_KEY, headers, data)
    if case == "unsigned":
        return headers, data
    if case == "wrong_key":
        return dict(headers, **{"x-celeriac-signature": sign_v1(b"not-the-key-but-long-enough", headers, data)}), data
    if case == "tampered_body":
        return dict(headers, **{"x-celeriac-signature": sig}), body(["forged"], {})
    if case == "tampered_retries":
        return dict(headers, retries=1, **{"x-celeriac-signature": sig}), data
    if case == "tampered_task":
        return dict(headers, task="bench.fail", **{"x-celeriac-signature": sig}), data
    if case == "truncated_signature":
        return dict(headers, **{"x-celeriac-signature": sig[:-1]}), data
    if case == "uppercase_signature":
        return dict(headers, **{"x-celeriac-signature": sig.upper()}), data
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unsigned", "wrong_key", "tampered_body", "tampered_retries",
                                  "tampered_task", "truncated_signature", "uppercase_signature"])
def test_forged_job_is_dead_lettered_unrun(signed_worker, case):
    tid = str(uuid.uuid4())
    signed_worker.ids.append(tid)
    marker = f"signed-{case}-{tid}"
    headers = celery_headers("bench.noop", tid)
    headers["x-hostile-case"] = marker
    headers, data = _tamper(case, headers, body([marker], {}))
    signed_worker.publish(data, headers, {"correlation_id": tid})
    signed_worker.noop_round_trip()
    msg = signed_worker.get_dead()
    assert msg is not None, f"{case}: nothing in {signed_worker.queue}.dead:\n{signed_worker.log_tail()}"
    got = msg.headers or {}
    assert header_text(got.get("x-hostile-case")) == marker, f"{case}: wrong dead letter {got}"
    assert raw_body(msg) == data
    errors = {k: header_text(v) for k, v in got.items() if k.startswith("x-celeriac-error-")}
    assert any(v.strip() for v in errors.values()), f"{case}: no reason in {errors}"
    stored = signed_worker.redis.get(f"celery-task-meta-{tid}")
    meta = msgpack.unpackb(stored, raw=False) if stored is not None else {}
    assert meta.get("status") != "SUCCESS", f"{case}: the forged job ran: {meta}"
    print(f"signed {case}: {errors}")


def test_signing_key_readable_by_others_is_refused():
    if not worker_supports_signing():
        pytest.skip("the worker has no --signing-key-file yet (issue 8)")
    with tempfile.TemporaryDirectory(prefix="celeriac-signed-") as tmp:
        keyfile = Path(tmp) / "signing.key"
        keyfile.write_bytes(SIGNING_KEY)
        keyfile.chmod(0o644)
        r = subprocess.run([str(worker_bin()), "--queue", "unused", "--broker", need_env("CELERIAC_BROKER_URL"),
                            "--backend", need_env("CELERIAC_RESULT_BACKEND"), "--require-signature",
                            "--signing-key-file", str(keyfile)],
                           capture_output=True, text=True, timeout=30, cwd=tmp)
        assert r.returncode != 0, "the worker started with a world-readable signing key"
        assert "chmod 600" in r.stdout + r.stderr, r.stdout + r.stderr


def producer_bin():
    p = Path(os.environ.get("CELERIAC_PRODUCER_BIN") or ROOT / "build/bin/producer")
    return p if p.is_absolute() else ROOT / p


def test_producer_signed_jobs_run(signed_worker):
    """End to end through the C producer: `producer call --signing-key-file` (with a countdown,
    so eta is signed too, and an idempotency key) runs on the --require-signature worker."""
    help_text = subprocess.run([str(producer_bin()), "send", "--help"], capture_output=True,
                               text=True, timeout=30)
    if "--signing-key-file" not in help_text.stdout + help_text.stderr:
        pytest.skip("the producer has no --signing-key-file yet (issue 8)")
    keyfile = signed_worker.tmp / "signing.key"
    for extra in ([], ["--countdown", "1", "--idempotency-key", f"k-{uuid.uuid4()}"]):
        tid = str(uuid.uuid4())
        signed_worker.ids.append(tid)
        r = subprocess.run([str(producer_bin()), "call", "bench.noop", '["signed"]', "--queue",
                            signed_worker.queue, "--task-id", tid, "--signing-key-file", str(keyfile),
                            "--timeout", "60", "--json", *extra],
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, f"producer call {extra} exited {r.returncode}: {r.stdout}{r.stderr}\n{signed_worker.log_tail()}"
        meta = msgpack.unpackb(signed_worker.redis.get(f"celery-task-meta-{tid}"), raw=False)
        assert meta["status"] == "SUCCESS" and meta["result"] == "signed", meta
