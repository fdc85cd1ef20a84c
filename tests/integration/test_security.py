"""test_security.py: issue 8 end to end against the stack in the environment.

- Signed messages: a --require-signature worker runs what the producer signed, including the
  messages the worker itself republishes (retries, chain and link follow-ups, delays), and
  dead-letters unsigned jobs unrun with one log line naming the task id and the reason.
- Resource bounds: --max-message-size, --max-nesting, --max-items, --max-string (the job is
  dead-lettered before it is used) and --max-result-size (the job fails ResultTooLarge).
- TLS: a job over amqps:// with certificate verification; a wrong CA is refused, clearly.
- Secrets: passwords and keys given through the environment or files never show in logs,
  errors or /proc/<pid>/cmdline.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import BUILD, uniq, wait_for, wait_meta, result_meta

PRODUCER = BUILD / "bin" / "producer"
KEY = b"security-test-key-" + secrets.token_hex(16).encode()


def need_env(name):
    v = os.environ.get(name)
    if not v:
        pytest.fail(f"{name} not set: eval \"$(scripts/stack.sh env)\"", pytrace=False)
    return v


def write_key(path, key=KEY, mode=0o600):
    path.write_bytes(key + b"\n")
    path.chmod(mode)
    return path


def producer(*args, env=None, timeout=120):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([str(PRODUCER), *args], capture_output=True, text=True, env=full,
                          timeout=timeout)


def dead_letters(amqp, queue):
    out = []
    while True:
        m = amqp.get(queue + ".dead")
        if m is None:
            return out
        out.append(m)


def hdr(v):
    return v.decode() if isinstance(v, bytes) else v


# ---- signed messages ----


@pytest.fixture
def keyfile(tmp_path):
    return write_key(tmp_path / "signing.key")


@pytest.fixture
def signed_worker(workers, queue, keyfile):
    return workers.start(queue, "--require-signature", "--signing-key-file", str(keyfile),
                         "-c", "2")


def test_signed_retries_and_canvas_run(signed_worker, queue, keyfile, redis_client):
    """The worker signs what it republishes: bench.flaky retries twice (retries and eta change,
    so each retry needs a new signature), a chain and a link follow-up run, all on a worker
    that refuses anything unsigned."""
    key = ["--signing-key-file", str(keyfile)]
    r = producer("call", "bench.flaky", "[2]", "--queue", queue, "--timeout", "60", "--json", *key)
    assert r.returncode == 0, r.stdout + r.stderr + signed_worker.log_text()
    out = json.loads(r.stdout)
    assert out["status"] == "SUCCESS" and out["result"] == 2, out

    chained, linked = str(uuid.uuid4()), str(uuid.uuid4())
    chain = json.dumps({"task": "bench.noop", "options": {"queue": queue, "task_id": chained}})
    link = json.dumps({"task": "bench.noop", "options": {"queue": queue, "task_id": linked}})
    r = producer("send", "bench.noop", '["canvas"]', "--queue", queue, "--chain", chain, *key)
    assert r.returncode == 0, r.stdout + r.stderr
    r = producer("send", "bench.noop", '["linked"]', "--queue", queue, "--link", link,
                 "--countdown", "1", *key)
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_meta(redis_client, chained)["result"] == "canvas"
    assert wait_meta(redis_client, linked)["result"] == "linked"
    log = signed_worker.log_text()
    assert "refused" not in log, log
    assert KEY.decode() not in log


def test_unsigned_job_is_dead_lettered_with_one_log_line(signed_worker, queue, amqp,
                                                         redis_client, tmp_path):
    tid = str(uuid.uuid4())
    other = write_key(tmp_path / "other.key", b"another-key-" + secrets.token_hex(16).encode())
    wrong = str(uuid.uuid4())
    for task_id, extra in ((tid, []), (wrong, ["--signing-key-file", str(other)])):
        r = producer("send", "bench.noop", '["x"]', "--queue", queue, "--task-id", task_id, *extra)
        assert r.returncode == 0, r.stdout + r.stderr
    for task_id in (tid, wrong):
        signed_worker.wait_log(task_id)
    wait_for(lambda: amqp.count(queue + ".dead") >= 2, what="two dead letters")
    dead = dead_letters(amqp, queue)
    by_id = {hdr(m.headers["id"]): m.headers for m in dead}
    assert set(by_id) == {tid, wrong}
    assert hdr(by_id[tid]["x-celeriac-error-type"]) == "celeriac.SignatureError"
    assert "not signed" in hdr(by_id[tid]["x-celeriac-error-message"])
    assert "does not match" in hdr(by_id[wrong]["x-celeriac-error-message"])
    for task_id in (tid, wrong):
        lines = [r for r in signed_worker.log_records() if task_id in json.dumps(r)]
        assert len(lines) == 1, lines
        assert "refused" in lines[0]["msg"] and lines[0]["level"] == "error", lines
        assert result_meta(redis_client, task_id) is None  # nothing stored, nothing ran
    assert KEY.decode() not in signed_worker.log_text()


def test_signing_options_are_checked(tmp_path, stack):
    worker = BUILD / "bin" / "worker"
    base = [str(worker), "--queue", "unused", "--broker", stack.broker, "--backend", stack.backend]
    r = subprocess.run([*base, "--require-signature"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--signing-key-file" in r.stderr, r.stderr
    short = write_key(tmp_path / "short.key", b"short")
    r = subprocess.run([*base, "--signing-key-file", str(short)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "shorter than 16 bytes" in r.stderr, r.stderr
    open_key = write_key(tmp_path / "open.key", KEY, 0o640)
    r = producer("send", "bench.noop", "--signing-key-file", str(open_key))
    assert r.returncode != 0 and "chmod 600" in r.stderr, r.stderr
    assert KEY.decode() not in r.stderr
    r = producer("send", "bench.noop", env={"CELERIAC_SIGNING_KEY_FILE": str(open_key)})
    assert r.returncode != 0 and "chmod 600" in r.stderr, r.stderr


# ---- resource bounds ----


def nested(depth):
    v = "leaf"
    for _ in range(depth):
        v = [v]
    return v


BOUNDS = {
    # option, value, a payload within it, a payload over it, what the dead letter says
    "max-message-size": ("2000", "x" * 100, "x" * 4000, "size limit"),
    "max-nesting": ("10", nested(3), nested(20), "nesting"),
    "max-items": ("50", list(range(10)), list(range(100)), "elements"),
    "max-string": ("100", "y" * 50, "y" * 200, "bytes"),
}


@pytest.mark.parametrize("option", sorted(BOUNDS))
def test_message_bounds(workers, queue, amqp, redis_client, option):
    value, ok, too_big, _ = BOUNDS[option]
    w = workers.start(queue, f"--{option}", value, "--pool", "solo")
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    for tid, payload in ((bad, too_big), (good, ok)):
        r = producer("send", "bench.noop", json.dumps([payload]), "--queue", queue,
                     "--task-id", tid)
        assert r.returncode == 0, r.stdout + r.stderr
    assert wait_meta(redis_client, good)["result"] == ok
    wait_for(lambda: amqp.count(queue + ".dead") >= 1, what="the dead letter")
    (msg,) = dead_letters(amqp, queue)
    why = hdr(msg.headers["x-celeriac-error-message"])
    assert hdr(msg.headers["x-celeriac-error-type"]) == "celeriac.DecodeError", msg.headers
    print(f"--{option} {value}: {why}")
    assert result_meta(redis_client, bad) is None, "the oversized job ran"
    assert "dead-letter" in w.log_text()


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_max_result_size(workers, queue, redis_client, pool):
    workers.start(queue, "--max-result-size", "1000", "--pool", pool)
    small, big = str(uuid.uuid4()), str(uuid.uuid4())
    for tid, payload in ((big, "z" * 2000), (small, "z" * 100)):
        r = producer("send", "bench.noop", json.dumps([payload]), "--queue", queue,
                     "--task-id", tid)
        assert r.returncode == 0, r.stdout + r.stderr
    assert wait_meta(redis_client, small)["result"] == "z" * 100
    meta = wait_meta(redis_client, big)
    assert meta["status"] == "FAILURE", meta
    assert "ResultTooLarge" in meta["result"]["exc_type"], meta
    assert "--max-result-size" in str(meta["result"]["exc_message"]), meta


def test_max_result_size_default_is_one_mib(workers, queue, redis_client, celery_app):
    workers.start(queue, "--pool", "solo")
    tid = celery_app.send_task("bench.noop", args=["m" * (1 << 20)], queue=queue).id
    meta = wait_meta(redis_client, tid)
    assert meta["status"] == "FAILURE" and "ResultTooLarge" in meta["result"]["exc_type"], meta


# ---- TLS ----


def tls_env():
    url = need_env("CELERIAC_TEST_AMQPS_URL")
    ca = Path(need_env("CELERIAC_TEST_TLS_DIR")) / "ca.pem"
    return url, ca


def test_job_runs_over_tls(workers, queue, redis_client):
    url, ca = tls_env()
    w = workers.start(queue, "--broker", url, "--tls-ca", str(ca), "--pool", "solo")
    assert "amqps://" in w.log_text()
    r = producer("call", "bench.noop", '["over tls"]', "--queue", queue, "--timeout", "60",
                 env={"CELERIAC_BROKER_URL": url, "CELERIAC_TLS_CA": str(ca)})
    assert r.returncode == 0 and "over tls" in r.stdout, r.stdout + r.stderr


def make_wrong_ca(tmp_path):
    if not shutil.which("openssl"):
        pytest.fail("openssl not found (needed to make a CA the broker does not use)")
    ca = tmp_path / "wrong-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=not-the-stack-ca", "-keyout", str(tmp_path / "wrong-ca.key"),
                    "-out", str(ca)], check=True, capture_output=True, timeout=60)
    return ca


def test_wrong_ca_is_refused(workers, queue, tmp_path):
    url, _ = tls_env()
    wrong = make_wrong_ca(tmp_path)
    for ca_args in (["--tls-ca", str(wrong)], []):  # [] = the system store, which lacks the CA
        w = workers.start(queue, "--broker", url, *ca_args, ready=False)
        assert w.wait(60) != 0
        log = w.log_text()
        assert "verif" in log and "amqps://" in log, log
        assert " ready: " not in log
    r = producer("send", "bench.noop", "--queue", queue,
                 env={"CELERIAC_BROKER_URL": url, "CELERIAC_TLS_CA": str(wrong)})
    assert r.returncode == 3 and "verification failed" in r.stderr, r.stderr


# ---- no secret in argv, logs or errors ----


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of our own with a password (the shared one has none)."""
    password = "redis-secret-" + secrets.token_hex(8)
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
                             "--requirepass", password],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    wait_for(lambda: _pings(client), 30, what="the private redis-server")
    yield f"redis://127.0.0.1:{port}/0", password, client
    client.close()
    proc.terminate()
    proc.wait(30)


def _pings(client):
    try:
        return client.ping()
    except Exception:
        return False


@pytest.fixture
def broker_user(stack):
    """A RabbitMQ user with a random password on the shared broker, deleted afterwards."""
    ctl = os.environ.get("CELERIAC_RABBITMQCTL")
    if not ctl:
        pytest.fail("CELERIAC_RABBITMQCTL not set", pytrace=False)
    import shlex

    user, password = uniq("secuser"), "amqp-secret-" + secrets.token_hex(8)
    ctl = shlex.split(ctl)
    subprocess.run([*ctl, "add_user", user, password], check=True, capture_output=True,
                   timeout=60)
    try:
        subprocess.run([*ctl, "set_permissions", "-p", "/", user, ".*", ".*", ".*"], check=True,
                       capture_output=True, timeout=60)
        from urllib.parse import urlsplit

        u = urlsplit(stack.broker)
        yield user, password, f"{u.hostname}:{u.port}"
    finally:
        subprocess.run([*ctl, "delete_user", user], capture_output=True, timeout=60)


def cmdline(pid):
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_secrets_stay_out_of_argv_and_logs(workers, queue, tmp_path, private_redis, broker_user,
                                           keyfile):
    backend, redis_pw, redis_client = private_redis
    user, amqp_pw, hostport = broker_user
    url_file = tmp_path / "broker.url"
    url_file.write_text(f"amqp://{user}:{amqp_pw}@{hostport}/\n")
    url_file.chmod(0o600)
    worker_env = {"CELERIAC_BROKER_URL": "", "CELERIAC_BROKER_URL_FILE": str(url_file),
                  "CELERIAC_RESULT_BACKEND": backend, "CELERIAC_REDIS_PASSWORD": redis_pw,
                  "CELERIAC_SIGNING_KEY_FILE": str(keyfile), "CELERIAC_REQUIRE_SIGNATURE": "1"}
    w = workers.start(queue, env=worker_env)
    prod_env = {"CELERIAC_BROKER_URL": f"amqp://{user}@{hostport}/",
                "CELERIAC_BROKER_PASSWORD": amqp_pw, "CELERIAC_RESULT_BACKEND": backend,
                "CELERIAC_REDIS_PASSWORD": redis_pw, "CELERIAC_SIGNING_KEY_FILE": str(keyfile)}
    full = dict(os.environ, **prod_env)
    p = subprocess.Popen([str(PRODUCER), "call", "bench.sleep", "[1.5]", "--queue", queue,
                          "--timeout", "60"], env=full, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    prod_cmd = cmdline(p.pid)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 0, out + err + w.log_text()
    found = {"worker argv": cmdline(w.pid), "producer argv": prod_cmd, "producer output": out + err}
    # the worker's children too
    kids = subprocess.run(["pgrep", "-P", str(w.pid)], capture_output=True, text=True).stdout
    for kid in kids.split():
        found[f"child {kid} argv"] = cmdline(int(kid))

    # connection errors: a dead port, a wrong password, each with the secret in the env/file
    dead = free_port()
    url_file.write_text(f"amqp://{user}:{amqp_pw}@127.0.0.1:{dead}/\n")
    down = workers.start(uniq("q-down"), env=worker_env, ready=False)
    assert down.wait(60) != 0
    bad_redis = workers.start(uniq("q-down"), env=dict(
        worker_env, CELERIAC_RESULT_BACKEND=f"redis://:{redis_pw}@127.0.0.1:{dead}/0"),
        ready=False)
    assert bad_redis.wait(60) != 0
    errors = [
        producer("send", "bench.noop", "--queue", queue, env=dict(prod_env, CELERIAC_BROKER_URL=
                 f"amqp://{user}@127.0.0.1:{dead}/")),
        producer("send", "bench.noop", "--queue", queue, env=dict(prod_env, CELERIAC_BROKER_URL=
                 f"amqp://{user}:{amqp_pw}x@{hostport}/", CELERIAC_BROKER_PASSWORD="")),
        producer("result", str(uuid.uuid4()), env=dict(prod_env, CELERIAC_RESULT_BACKEND=
                 f"redis://:{redis_pw}@127.0.0.1:{dead}/0")),
        producer("result", str(uuid.uuid4()), env=dict(prod_env, CELERIAC_REDIS_PASSWORD=
                 redis_pw + "x")),
        producer("send", "--help", env=prod_env),
        subprocess.run([str(BUILD / "bin" / "worker"), "--help"], capture_output=True, text=True,
                       env=dict(os.environ, **worker_env), timeout=30),
    ]
    assert all(e.returncode != 0 for e in errors[:4]), [e.stderr for e in errors]
    for i, e in enumerate(errors):
        found[f"error {i}"] = e.stdout + e.stderr
    w.stop()
    found["worker log"] = w.log_text()
    found["unreachable broker log"] = down.log_text()
    found["unreachable redis log"] = bad_redis.log_text()
    assert "unreachable" in found["error 0"] or "connect" in found["error 0"], found["error 0"]
    for secret in (amqp_pw, redis_pw, KEY.decode()):
        for where, text in found.items():
            assert secret not in text, f"{secret} in {where}:\n{text}"
    print("\n".join(f"{k}: {v.strip().splitlines()[-1] if v.strip() else ''}"
                    for k, v in found.items() if k.startswith("error") or "log" in k))


def test_dead_letter_replay_is_signed_by_the_producer(signed_worker, queue, keyfile, amqp,
                                                      redis_client):
    """An unsigned job is dead-lettered; `producer dead replay` with the key re-signs it (the
    operator vouches for it), so the same worker now runs it."""
    tid = str(uuid.uuid4())
    r = producer("send", "bench.noop", '["replayed"]', "--queue", queue, "--task-id", tid)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: amqp.count(queue + ".dead") >= 1, what="the dead letter")
    r = producer("dead", "replay", queue, "--id", tid, "--signing-key-file", str(keyfile))
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_meta(redis_client, tid)["result"] == "replayed"


def test_passwords_given_in_argv_are_scrubbed(workers, queue, private_redis, broker_user):
    """Discouraged but common: --broker/--backend URLs with passwords on the command line. The
    worker and the producer overwrite them in their argv, so ps shows user:****@host."""
    backend, redis_pw, _ = private_redis
    user, amqp_pw, hostport = broker_user
    broker = f"amqp://{user}:{amqp_pw}@{hostport}/"
    backend_pw = backend.replace("redis://", f"redis://:{redis_pw}@")
    w = workers.start(queue, "--broker", broker, f"--backend={backend_pw}")
    p = subprocess.Popen([str(PRODUCER), "call", "bench.sleep", "[2]", "--queue", queue,
                          "--timeout", "60", "--broker", broker, f"--backend={backend_pw}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: p.poll() is not None or cmdline(p.pid).count("****") >= 2, 30,
             what="the producer to scrub its argv")
    seen = {"producer argv": cmdline(p.pid) if p.poll() is None else "", "worker argv":
            cmdline(w.pid)}
    out, err = p.communicate(timeout=90)
    assert p.returncode == 0, out + err + w.log_text()
    assert seen["producer argv"], "the producer ended before its argv could be read"
    for where, text in seen.items():
        assert f"{user}:{'*' * len(amqp_pw)}@" in text, (where, text)
        assert amqp_pw not in text and redis_pw not in text, (where, text)
    w.stop()
    assert amqp_pw not in w.log_text() and redis_pw not in w.log_text()


def sign_v1(key, headers, data):
    """x-celeriac-signature written from the layout in common/sign.h, for a Python Celery client
    (msgpack bodies; eta/expires unset)."""
    import hashlib
    import hmac
    import struct

    def field(v):
        if v is None:
            return b"\x00"
        b = v.encode() if isinstance(v, str) else v
        return b"\x01" + struct.pack(">Q", len(b)) + b

    assert headers.get("eta") is None and headers.get("expires") is None
    canon = (b"celeriac-sign-v1" + field(headers["task"]) + field(headers["id"])
             + struct.pack(">qqq", 0, 0, headers.get("retries") or 0)
             + field(headers.get("root_id") or headers["id"]) + field(headers.get("parent_id"))
             + field(headers.get("group")) + field(headers.get("x-celeriac-idempotency-key"))
             + b"\x00" + struct.pack(">Q", len(data)) + data)
    return hmac.new(key, canon, hashlib.sha256).hexdigest()


def test_signed_celery_chord(signed_worker, queue, celery_app):
    """A Python Celery client can sign too (before_task_publish); the chord body, which the C
    worker publishes once the header is done, is signed by the worker and runs."""
    import msgpack
    from celery import chord
    from celery.signals import before_task_publish

    def sign(body=None, headers=None, **_):
        headers["x-celeriac-signature"] = sign_v1(KEY, headers,
                                                  msgpack.packb(body, use_bin_type=True))

    before_task_publish.connect(sign, weak=False)
    try:
        header = [celery_app.signature("bench.noop", args=(i,), queue=queue) for i in range(4)]
        res = chord(header)(celery_app.signature("bench.noop", queue=queue))
        assert res.get(timeout=60) == list(range(4))
    finally:
        before_task_publish.disconnect(sign)
    assert "refused" not in signed_worker.log_text()
