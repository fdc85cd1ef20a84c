"""A Python Celery 5.2 client driving celeriac's worker, with the msgpack configuration the spec
recommends and with Celery's default JSON configuration (every test runs with both)."""

import math
from datetime import datetime, timedelta, timezone

import pytest
from celery.exceptions import TaskRevokedError, TimeLimitExceeded

from conftest import RESULT_TIMEOUT, uniq


def test_users_create_returns_the_user(app, config, queues, cworker):
    q = queues()
    cworker(q)
    name = uniq("alice")
    res = app.send_task("users.create", args=[name], kwargs={"email": f"{name}@x.io"}, queue=q)
    user = res.get(timeout=RESULT_TIMEOUT)
    assert user["username"] == name
    assert user["email"] == f"{name}@x.io"
    assert isinstance(user["id"], int)
    assert res.state == "SUCCESS"
    assert res.date_done is not None
    # and it can be read back by id from a fresh AsyncResult
    assert app.AsyncResult(res.id).get(timeout=RESULT_TIMEOUT) == user


def test_failure_raises_the_handlers_exception(app, queues, cworker):
    q = queues()
    cworker(q)
    name = uniq("bob")
    app.send_task("users.create", args=[name, f"{name}@x.io"], queue=q).get(timeout=RESULT_TIMEOUT)
    dup = app.send_task("users.create", args=[name, f"other-{name}@x.io"], queue=q)
    with pytest.raises(ValueError) as e:
        dup.get(timeout=RESULT_TIMEOUT)
    assert str(e.value) == f"username '{name}' already exists"
    assert dup.state == "FAILURE"
    assert isinstance(dup.result, ValueError)

    boom = app.send_task("bench.fail", args=["it broke"], queue=q)
    with pytest.raises(RuntimeError) as e:
        boom.get(timeout=RESULT_TIMEOUT)
    assert e.value.args == ("it broke",)

    missing = app.send_task("users.get", args=[987654], queue=q)
    with pytest.raises(KeyError):
        missing.get(timeout=RESULT_TIMEOUT)


COMMON_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    127,
    128,
    255,
    256,
    -32,
    -33,
    65535,
    65536,
    2**31 - 1,
    -(2**31),
    2**32,
    2**63 - 1,
    -(2**63),
    0.0,
    -0.0,
    1.5,
    -2.25,
    1e300,
    5e-324,
    float(2**53),
    "",
    "plain ascii",
    "h\u00e9llo w\u00f6rld",
    "\u4e2d\u6587",
    "\U0001F600 non-BMP \U0001F4A9",
    "line\nbreak\ttab \"quote\" \\backslash",
    "x" * 70000,
    [],
    {},
    [[]],
    [{}],
    {"": ""},
    [1, [2, [3, [4, [5]]]]],
    {"a": {"b": {"c": [1, {"d": None}]}}},
    {"list": [1, "two", 3.0, None, True], "nested": {"k\u00e9y": "\U0001F600"}},
    list(range(100)),
    {f"k{i}": i for i in range(40)},
]
MSGPACK_ONLY = [
    2**64 - 1,
    b"",
    b"\x00\xff binary",
    "nul\x00inside",
]


def assert_same(got, want):
    """Equal and of the same type all the way down (1.0 must not come back as 1)."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, float):
        assert got == want and math.copysign(1, got) == math.copysign(1, want), (got, want)
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert list(got.keys()) == list(want.keys())
        for k in want:
            assert_same(got[k], want[k])
    else:
        assert got == want


def test_values_round_trip_through_noop(app, config, queues, cworker):
    q = queues()
    cworker(q)
    values = COMMON_VALUES + (MSGPACK_ONLY if config == "msgpack" else [])
    sent = [(v, app.send_task("bench.noop", args=[v], queue=q)) for v in values]
    wrong = []
    for v, res in sent:
        try:
            assert_same(res.get(timeout=RESULT_TIMEOUT), v)
        except Exception as e:  # collect every value that does not come back, then fail
            wrong.append(f"{v!r:.60}: {type(e).__name__} {e}"[:200])
    assert not wrong, "\n".join(wrong)
    # the whole list as one value, and as a keyword argument
    res = app.send_task("bench.noop", kwargs={"x": values}, queue=q)
    assert_same(res.get(timeout=RESULT_TIMEOUT), values)


def test_countdown_delays_execution(app, queues, cworker):
    q = queues()
    cworker(q)
    sent = datetime.utcnow()
    res = app.send_task("bench.noop", args=["later"], countdown=3, queue=q)
    assert res.get(timeout=RESULT_TIMEOUT) == "later"
    # date_done is naive UTC; the job must not have run before its countdown was over
    assert res.date_done >= sent + timedelta(seconds=3)


def test_eta_delays_execution(app, queues, cworker):
    q = queues()
    cworker(q)
    eta = datetime.now(timezone.utc) + timedelta(seconds=3)
    res = app.send_task("bench.noop", args=["at eta"], eta=eta, queue=q)
    assert res.get(timeout=RESULT_TIMEOUT) == "at eta"
    assert res.date_done >= eta.replace(tzinfo=None)


def test_eta_in_the_past_runs_now(app, queues, cworker):
    q = queues()
    cworker(q)
    eta = datetime.now(timezone.utc) - timedelta(hours=1)
    res = app.send_task("bench.noop", args=[1], eta=eta, queue=q)
    assert res.get(timeout=RESULT_TIMEOUT) == 1


def test_expired_job_is_revoked_not_run(app, queues, cworker):
    q = queues()
    cworker(q)
    # countdown 3 s, expires after 1 s: when its time comes the job has expired, as a Celery
    # worker would find it (spec 1.5): REVOKED with TaskRevokedError('expired')
    res = app.send_task("bench.count", args=[uniq("expired")], countdown=3, expires=1, queue=q)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=RESULT_TIMEOUT)
    assert res.state == "REVOKED"
    assert "expired" in str(res.result)


def test_unexpired_job_runs(app, queues, cworker):
    q = queues()
    cworker(q)
    res = app.send_task("bench.noop", args=["fresh"], expires=600, queue=q)
    assert res.get(timeout=RESULT_TIMEOUT) == "fresh"


def test_retries_header_and_retry(app, queues, cworker, redis_client):
    q = queues()
    cworker(q)
    # flaky(n) retries (1 s countdown) until it has been retried n times, then returns n
    res = app.send_task("bench.flaky", args=[2], queue=q)
    assert res.get(timeout=RESULT_TIMEOUT) == 2
    # a message that says it was already retried twice succeeds at once
    res = app.send_task("bench.flaky", args=[2], retries=2, queue=q)
    assert res.get(timeout=RESULT_TIMEOUT) == 2


def test_hard_time_limit_fails_the_job(app, queues, cworker):
    q = queues()
    cworker(q)
    res = app.send_task("bench.sleep", args=[30], time_limit=1, queue=q)
    with pytest.raises(TimeLimitExceeded):
        res.get(timeout=RESULT_TIMEOUT)
    assert res.state == "FAILURE"


def test_soft_time_limit_is_seen_by_the_handler(app, queues, cworker):
    q = queues()
    cworker(q)
    res = app.send_task("bench.spin", args=[30], soft_time_limit=1, time_limit=20, queue=q)
    assert res.get(timeout=RESULT_TIMEOUT) == "soft-timeout"


def test_ignore_result_stores_nothing(app, queues, cworker, redis_client):
    q = queues()
    cworker(q, concurrency=1)
    counter = uniq("ign")
    ignored = app.send_task("bench.count", args=[counter], ignore_result=True, queue=q)
    # the second job on the same single-slot worker returns 2: the first one ran
    assert app.send_task("bench.count", args=[counter], queue=q).get(timeout=RESULT_TIMEOUT) == 2
    assert redis_client.get(f"celery-task-meta-{ignored.id}") is None
    # failures are still stored (spec 1.3: ignore_result only skips SUCCESS)
    failed = app.send_task("bench.fail", args=["x"], ignore_result=True, queue=q)
    with pytest.raises(RuntimeError):
        app.AsyncResult(failed.id).get(timeout=RESULT_TIMEOUT)


def test_priority_is_accepted(app, queues, cworker):
    q = queues()
    cworker(q)
    results = [app.send_task("bench.noop", args=[p], priority=p, queue=q) for p in (0, 5, 9)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == [0, 5, 9]


def test_revoke_before_execution(app, queues, cworker):
    q = queues()
    cworker(q)
    # the worker is consuming (and so listening to broadcasts) once a first job comes back
    assert app.send_task("bench.noop", args=[0], queue=q).get(timeout=RESULT_TIMEOUT) == 0
    counter = uniq("rev")
    res = app.send_task("bench.count", args=[counter], countdown=4, queue=q)
    app.control.revoke(res.id)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=RESULT_TIMEOUT)
    assert res.state == "REVOKED"
    # the revoked job never ran: the counter starts at 1
    assert app.send_task("bench.count", args=[counter], queue=q).get(timeout=RESULT_TIMEOUT) == 1


def test_unknown_task_fails_with_not_registered(app, queues, cworker):
    q = queues()
    cworker(q)
    res = app.send_task("bench.no_such_task", args=[1], queue=q)
    with pytest.raises(Exception) as e:
        res.get(timeout=RESULT_TIMEOUT)
    assert type(e.value).__name__ == "NotRegistered"
    assert res.state == "FAILURE"
