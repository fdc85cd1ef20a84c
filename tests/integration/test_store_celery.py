"""Results written by the C store (build/tests/integration/test_store in writer mode) read back
by real Python Celery: msgpack SUCCESS and FAILURE with a msgpack-configured client, JSON SUCCESS
with a default (JSON) client, and a get() that is already waiting when the write happens."""
import os
import subprocess
import threading
import uuid

import pytest
from celery import Celery
from celery.result import AsyncResult

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CELERIAC_BUILD_DIR", os.path.join(ROOT, "build"))
WRITER = os.path.join(BUILD, "tests", "integration", "test_store")


def backend():
    url = os.environ.get("CELERIAC_RESULT_BACKEND")
    if not url:
        pytest.fail("CELERIAC_RESULT_BACKEND is not set: start the stack (scripts/stack.sh up)")
    if not os.access(WRITER, os.X_OK):
        pytest.fail(f"{WRITER} is missing: run make first")
    return url


def app(serializer):
    a = Celery("store-interop", broker="memory://", backend=backend())
    a.conf.result_serializer = serializer
    a.conf.accept_content = ["msgpack", "json"]
    a.conf.result_accept_content = ["msgpack", "json"]
    return a


def ids():
    tag = uuid.uuid4().hex[:8]
    return [f"store-celery-{tag}-{kind}" for kind in ("ok", "fail", "json")]


def write(task_ids, delay_ms=0):
    env = dict(os.environ, CEL_STORE_CELERY_IDS=",".join(task_ids))
    if delay_ms:
        env["CEL_STORE_CELERY_DELAY_MS"] = str(delay_ms)
    return subprocess.Popen([WRITER], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc):
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")


def check_all(task_ids):
    ok_id, fail_id, json_id = task_ids
    mp = app("msgpack")
    r = AsyncResult(ok_id, app=mp)
    assert r.get(timeout=10) == {"id": 1}
    assert r.state == "SUCCESS"
    assert r.date_done is not None
    with pytest.raises(ValueError) as e:
        AsyncResult(fail_id, app=mp).get(timeout=10)
    assert e.value.args == ("email taken",)
    assert AsyncResult(fail_id, app=mp).state == "FAILURE"
    assert AsyncResult(json_id, app=app("json")).get(timeout=10) == {"id": 1}


def test_celery_reads_stored_results():
    task_ids = ids()
    finish(write(task_ids))
    check_all(task_ids)


def test_celery_get_wakes_on_publish():
    """get() is already subscribed when the C side writes: the PUBLISH must wake it."""
    task_ids = ids()
    mp = app("msgpack")
    got = {}

    def wait():
        try:
            got["value"] = AsyncResult(task_ids[0], app=mp).get(timeout=20)
        except Exception as exc:  # reported by the assertion below
            got["error"] = exc

    t = threading.Thread(target=wait)
    t.start()
    proc = write(task_ids, delay_ms=1500)
    finish(proc)
    t.join(30)
    assert not t.is_alive()
    assert got == {"value": {"id": 1}}
    check_all(task_ids)
