"""test_producer_lib.py: libceleriac's C API (build/lib/libceleriac.so through ctypes) against the
stack and a Python Celery worker: send_json, batches with automatic and explicit flushes, a chain
run by Celery, results, and errors."""
import ctypes as C
import os
import uuid

import msgpack

from producer_fixtures import *  # noqa: F401,F403  (fixtures)
from producer_fixtures import ROOT, wait_for

# The sanitizer build cannot be dlopen()ed into Python: always the regular build.
LIB = os.path.join(os.environ.get("CELERIAC_LIB_DIR", os.path.join(ROOT, "build", "lib")),
                   "libceleriac.so")

CEL_EJSON = -101
CEL_ETIMEDOUT = -4


class Span(C.Structure):
    _fields_ = [("ptr", C.c_char_p), ("len", C.c_size_t)]


def span(b):
    return Span(b, len(b)) if b else Span(None, 0)


class Sig(C.Structure):
    _fields_ = [("task", C.c_char_p), ("args", Span), ("kwargs", Span), ("options", Span),
                ("immutable", C.c_bool)]


class SendOpts(C.Structure):
    _fields_ = [("queue", C.c_char_p), ("task_id", C.c_char_p), ("countdown", C.c_double),
                ("eta_us", C.c_int64), ("expires_us", C.c_int64), ("expires_in", C.c_double),
                ("priority", C.c_int), ("idempotency_key", C.c_char_p),
                ("link", C.POINTER(Sig)), ("n_link", C.c_size_t),
                ("link_error", C.POINTER(Sig)), ("n_link_error", C.c_size_t),
                ("chain", C.POINTER(Sig)), ("n_chain", C.c_size_t),
                ("ignore_result", C.c_bool), ("time_limit", C.c_double),
                ("soft_time_limit", C.c_double), ("headers", Span), ("format", C.c_int),
                ("parent_id", C.c_char_p), ("root_id", C.c_char_p)]


class Result(C.Structure):
    _fields_ = [("task_id", C.c_char_p), ("status", C.c_char_p), ("result", Span),
                ("exc_type", C.c_char_p), ("exc_module", C.c_char_p), ("exc_args", Span),
                ("exc_message", C.c_char_p), ("traceback", C.c_char_p),
                ("date_done_us", C.c_int64)]


def load():
    lib = C.CDLL(LIB)
    lib.cel_client_open.argtypes = [C.POINTER(C.c_void_p), C.c_void_p, C.c_char_p, C.c_size_t]
    lib.cel_client_free.argtypes = [C.c_void_p]
    lib.cel_client_errstr.argtypes = [C.c_void_p]
    lib.cel_client_errstr.restype = C.c_char_p
    lib.cel_client_send_json.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.c_char_p,
                                         C.POINTER(SendOpts), C.c_char_p]
    lib.cel_client_add.argtypes = [C.c_void_p, C.c_char_p, Span, Span, C.POINTER(SendOpts),
                                   C.c_char_p]
    lib.cel_client_flush.argtypes = [C.c_void_p]
    lib.cel_client_pending.argtypes = [C.c_void_p]
    lib.cel_client_pending.restype = C.c_size_t
    lib.cel_client_confirmed.argtypes = [C.c_void_p]
    lib.cel_client_confirmed.restype = C.c_uint64
    lib.cel_client_result_get.argtypes = [C.c_void_p, C.c_char_p, C.POINTER(Result)]
    lib.cel_client_result_wait.argtypes = [C.c_void_p, C.c_char_p, C.c_int, C.POINTER(Result)]
    return lib


class Client:
    def __init__(self):
        self.lib = load()
        self.c = C.c_void_p()
        err = C.create_string_buffer(512)
        assert self.lib.cel_client_open(C.byref(self.c), None, err, 512) == 0, err.value

    def err(self):
        return self.lib.cel_client_errstr(self.c).decode()

    def close(self):
        self.lib.cel_client_free(self.c)


def result_value(r):
    return msgpack.unpackb(C.string_at(r.result.ptr, r.result.len), raw=False)


def test_send_json_and_wait(stack_env, queue, celery_worker):
    cl = Client()
    try:
        o = SendOpts(queue=queue.encode())
        tid = C.create_string_buffer(37)
        rc = cl.lib.cel_client_send_json(cl.c, b"tasks.add", b"[40, 2]", None, C.byref(o), tid)
        assert rc == 0, cl.err()
        r = Result()
        assert cl.lib.cel_client_result_wait(cl.c, tid.value, 60000, C.byref(r)) == 0, cl.err()
        assert r.status == b"SUCCESS" and result_value(r) == 42 and r.exc_type is None
        assert r.task_id == tid.value and r.date_done_us > 0
        rc = cl.lib.cel_client_send_json(cl.c, b"tasks.fail", b'["nope"]', None, C.byref(o), tid)
        assert rc == 0
        assert cl.lib.cel_client_result_wait(cl.c, tid.value, 60000, C.byref(r)) == 0
        assert r.status == b"FAILURE" and r.exc_type == b"ValueError"
        assert r.exc_module == b"builtins" and r.exc_message == b"nope"
    finally:
        cl.close()


def test_chain_runs_on_celery(stack_env, queue, celery_worker):
    cl = Client()
    try:
        last = str(uuid.uuid4())
        opts1 = msgpack.packb({"queue": queue}, use_bin_type=True)
        opts2 = msgpack.packb({"queue": queue, "task_id": last}, use_bin_type=True)
        a1, a2 = msgpack.packb([10]), msgpack.packb([100])
        chain = (Sig * 2)(Sig(b"tasks.add", span(a1), span(b""), span(opts1), False),
                          Sig(b"tasks.add", span(a2), span(b""), span(opts2), False))
        o = SendOpts(queue=queue.encode(), chain=chain, n_chain=2)
        tid = C.create_string_buffer(37)
        assert cl.lib.cel_client_send_json(cl.c, b"tasks.add", b"[1, 2]", None, C.byref(o),
                                           tid) == 0, cl.err()
        r = Result()
        assert cl.lib.cel_client_result_wait(cl.c, last.encode(), 60000, C.byref(r)) == 0
        assert r.status == b"SUCCESS" and result_value(r) == 113  # ((1 + 2) + 10) + 100
    finally:
        cl.close()


def test_batches_flush_by_themselves_and_on_request(stack_env, queue, broker):
    cl = Client()
    try:
        o = SendOpts(queue=queue.encode())
        args = msgpack.packb([1, "x"])
        tid = C.create_string_buffer(37)
        for i in range(1200):
            assert cl.lib.cel_client_add(cl.c, b"svc.batch", span(args), span(b""), C.byref(o),
                                         tid) == 0, cl.err()
        assert cl.lib.cel_client_confirmed(cl.c) == 1000  # two automatic flushes of 500
        assert cl.lib.cel_client_pending(cl.c) == 200
        assert cl.lib.cel_client_flush(cl.c) == 0
        assert cl.lib.cel_client_pending(cl.c) == 0 and cl.lib.cel_client_confirmed(cl.c) == 1200
        wait_for(lambda: broker.depth(queue)[0] == 1200, 10, "1200 messages")
    finally:
        cl.close()


def test_errors(stack_env, queue):
    cl = Client()
    try:
        o = SendOpts(queue=queue.encode())
        tid = C.create_string_buffer(37)
        rc = cl.lib.cel_client_send_json(cl.c, b"svc.t", b"[]", b'{"a": ', C.byref(o), tid)
        assert rc == CEL_EJSON and cl.err().startswith("kwargs: invalid JSON at line 1")
        bad = span(b"\x81\x01\x02")  # a map where an array belongs
        assert cl.lib.cel_client_add(cl.c, b"svc.t", bad, span(b""), C.byref(o), tid) < 0
        assert "args" in cl.err()
        assert cl.lib.cel_client_pending(cl.c) == 0
        r = Result()
        assert cl.lib.cel_client_result_get(cl.c, b"no-such-id", C.byref(r)) == 0
        assert r.status == b"PENDING" and r.result.len == 0
        assert cl.lib.cel_client_result_wait(cl.c, b"no-such-id", 200, C.byref(r)) == CEL_ETIMEDOUT
    finally:
        cl.close()
