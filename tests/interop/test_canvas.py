"""Celery canvas (chain, link, link_error, group, chord) built by a Python client and run by
celeriac's worker, alone and together with a Python Celery worker (spec section 4)."""

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError

from conftest import RESULT_TIMEOUT, uniq


def sig(app, name, *args, queue, **options):
    return app.signature(name, args=args, queue=queue, **options)


def test_chain_of_c_tasks(app, queues, cworker):
    q = queues()
    cworker(q)
    name = uniq("carol")
    # users.create returns the user map, which email.send_welcome receives as its argument
    c = chain(
        sig(app, "users.create", name, f"{name}@x.io", queue=q),
        sig(app, "email.send_welcome", queue=q),
        sig(app, "bench.noop", queue=q),
    )
    res = c.apply_async()
    mail = res.get(timeout=RESULT_TIMEOUT)
    assert mail["to"] == f"{name}@x.io"
    user = res.parent.parent.get(timeout=RESULT_TIMEOUT)
    assert user["username"] == name
    assert res.parent.get(timeout=RESULT_TIMEOUT) == mail
    # children as Celery's worker writes them: each step lists the next one
    first, second = res.parent.parent, res.parent
    assert [c.id for c in first.children] == [second.id]
    assert [c.id for c in second.children] == [res.id]
    assert res.children == []
    # and parent_id in the stored meta, as Celery's Redis backend writes it (spec 3.2)
    assert app.backend.get_task_meta(second.id).get("parent_id") == first.id
    assert app.backend.get_task_meta(res.id).get("parent_id") == second.id


def test_chain_args_are_prepended_and_immutable_kept(app, queues, cworker):
    q = queues()
    cworker(q)
    c = chain(
        sig(app, "bench.noop", 7, queue=q),
        sig(app, "bench.noop", queue=q),  # receives 7
        app.signature("bench.noop", args=("fixed",), queue=q, immutable=True),
        sig(app, "bench.noop", queue=q),  # receives "fixed"
    )
    assert c.apply_async().get(timeout=RESULT_TIMEOUT) == "fixed"


def test_chain_failure_fails_the_rest(app, queues, cworker):
    q = queues()
    cworker(q)
    c = chain(
        sig(app, "bench.noop", 1, queue=q),
        sig(app, "bench.fail", queue=q),  # fail(1): message is not a str
        sig(app, "bench.noop", queue=q),
    )
    res = c.apply_async()
    # the client waits on the last id: the worker marks it FAILURE with the same exception
    with pytest.raises(RuntimeError):
        res.get(timeout=RESULT_TIMEOUT)
    assert res.state == "FAILURE"


def test_chain_mixed_with_a_python_worker(app, config, queues, cworker, pyworker):
    cq, pq = queues("interop-c"), queues("interop-py")
    cworker(cq)
    pyworker(pq, config)
    c = chain(
        sig(app, "bench.noop", 2, queue=cq),
        sig(app, "tasks.add", 3, queue=pq),  # Python: add(2, 3)
        sig(app, "bench.noop", queue=cq),  # C again
        sig(app, "tasks.mul", 10, queue=pq),  # Python: mul(5, 10)
    )
    assert c.apply_async().get(timeout=RESULT_TIMEOUT) == 50


def test_link_and_link_error(app, queues, cworker):
    q = queues()
    cworker(q)
    cb_id, eb_id = uniq("cb"), uniq("eb")
    ok = app.send_task("bench.noop", args=[{"v": 1}], queue=q,
                       link=sig(app, "bench.noop", queue=q, task_id=cb_id))
    assert ok.get(timeout=RESULT_TIMEOUT) == {"v": 1}
    assert app.AsyncResult(cb_id).get(timeout=RESULT_TIMEOUT) == {"v": 1}

    bad = app.send_task("bench.fail", args=["nope"], queue=q,
                        link_error=sig(app, "bench.noop", queue=q, task_id=eb_id))
    with pytest.raises(RuntimeError):
        bad.get(timeout=RESULT_TIMEOUT)
    # the errback is sent as Celery sends errbacks it cannot call inline: (failed id,) + args
    assert app.AsyncResult(eb_id).get(timeout=RESULT_TIMEOUT) == bad.id


def test_link_runs_on_a_python_worker(app, config, queues, cworker, pyworker):
    cq, pq = queues("interop-c"), queues("interop-py")
    cworker(cq)
    pyworker(pq, config)
    cb_id = uniq("cb")
    res = app.send_task("bench.noop", args=[4], queue=cq,
                        link=sig(app, "tasks.add", 1, queue=pq, task_id=cb_id))
    assert res.get(timeout=RESULT_TIMEOUT) == 4
    assert app.AsyncResult(cb_id).get(timeout=RESULT_TIMEOUT) == 5


def test_group_result_get(app, queues, cworker):
    q = queues()
    cworker(q)
    g = group(sig(app, "bench.noop", i, queue=q) for i in range(8))
    res = g.apply_async()
    assert res.get(timeout=RESULT_TIMEOUT) == list(range(8))
    assert res.successful()


def test_chord_runs_the_body_with_ordered_results(app, queues, cworker, redis_client):
    q = queues()
    cworker(q, concurrency=4)
    header = [sig(app, "bench.noop", i, queue=q) for i in range(6)]
    res = chord(header)(sig(app, "bench.noop", queue=q))
    assert res.get(timeout=RESULT_TIMEOUT) == list(range(6))
    gid = res.parent.id
    # the .j/.s/.t keys are deleted once the body is published (spec 4.2)
    for suffix in (".j", ".s", ".t"):
        assert redis_client.exists(f"celery-taskset-meta-{gid}{suffix}") == 0


def test_chord_body_args_follow_the_results(app, config, queues, cworker, pyworker):
    cq, pq = queues("interop-c"), queues("interop-py")
    cworker(cq)
    pyworker(pq, config)
    # header on the C worker, which publishes the body: add(results, ["z"]) on the Python worker
    header = [sig(app, "bench.noop", "a", queue=cq), sig(app, "bench.noop", "b", queue=cq)]
    res = chord(header)(sig(app, "tasks.add", ["z"], queue=pq))
    assert res.get(timeout=RESULT_TIMEOUT) == ["a", "b", "z"]


def test_chord_part_failure_is_a_chord_error(app, queues, cworker):
    q = queues()
    cworker(q)
    header = [sig(app, "bench.noop", 1, queue=q), sig(app, "bench.fail", "boom", queue=q)]
    res = chord(header)(sig(app, "bench.noop", queue=q))
    # Celery's client re-raises the failed header part first (result.py
    # _maybe_reraise_parent_error), exactly as with a Python worker
    with pytest.raises(RuntimeError):
        res.get(timeout=RESULT_TIMEOUT)
    # the body itself is stored as FAILURE with the ChordError the Redis backend writes
    body = app.AsyncResult(res.id)
    with pytest.raises(ChordError) as e:
        body.get(timeout=RESULT_TIMEOUT)
    assert body.state == "FAILURE"
    failed_id = res.parent.results[1].id
    assert str(e.value) == f"Dependency {failed_id} raised RuntimeError('boom')"


def test_chord_error_calls_the_body_link_error(app, queues, cworker):
    # Celery's chord_error_from_stack: the body's link_error runs with the body's id
    q = queues()
    cworker(q)
    eb_id = uniq("eb")
    header = [sig(app, "bench.noop", 1, queue=q), sig(app, "bench.fail", "boom", queue=q)]
    body = sig(app, "bench.noop", queue=q)
    body.link_error(sig(app, "bench.noop", queue=q, task_id=eb_id))
    res = chord(header)(body)
    assert app.AsyncResult(eb_id).get(timeout=RESULT_TIMEOUT) == res.id


@pytest.mark.parametrize("last", ["python", "c"])
def test_chord_header_on_both_kinds_of_worker(app, config, queues, cworker, pyworker, last):
    # the worker that completes the last part reads every entry of the .j key, written by both
    # kinds of worker in the result serializer, and publishes the body
    cq, pq = queues("interop-c"), queues("interop-py")
    cworker(cq)
    pyworker(pq, config)
    if last == "python":
        slow, want = sig(app, "tasks.slow", 4, queue=pq), 4
    else:
        slow, want = sig(app, "bench.sleep", 1, queue=cq), None
    header = [sig(app, "bench.noop", 1, queue=cq), sig(app, "tasks.add", 2, 3, queue=pq), slow]
    res = chord(header)(sig(app, "tasks.tag", queue=pq))
    assert res.get(timeout=RESULT_TIMEOUT) == ["py", [1, 5, want]]


def test_group_as_link_is_a_stored_failure(stack, queues, cworker):
    # Only with JSON: Celery 5.2.6 itself cannot serialize a group with msgpack (spec 4.5).
    # celeriac does not run a group as a callback; the job must end as a stored FAILURE rather
    # than run again and again.
    from conftest import make_app

    app = make_app(stack, "json")
    q = queues()
    cworker(q)
    g = group(sig(app, "bench.noop", queue=q), sig(app, "bench.noop", queue=q))
    res = app.send_task("bench.noop", args=[1], queue=q, link=g)
    with pytest.raises(Exception):
        res.get(timeout=RESULT_TIMEOUT)
    assert res.state == "FAILURE"
    app.close()


def test_chain_link_and_on_error(app, queues, cworker):
    q = queues()
    cworker(q)
    cb_id, eb_id = uniq("cb"), uniq("eb")
    ok = chain(sig(app, "bench.noop", 3, queue=q), sig(app, "bench.noop", queue=q))
    ok.link(sig(app, "bench.noop", queue=q, task_id=cb_id))  # Celery puts it on the last task
    assert ok.apply_async().get(timeout=RESULT_TIMEOUT) == 3
    assert app.AsyncResult(cb_id).get(timeout=RESULT_TIMEOUT) == 3

    bad = chain(sig(app, "bench.noop", 1, queue=q), sig(app, "bench.fail", queue=q),
                sig(app, "bench.noop", queue=q))
    bad.on_error(sig(app, "bench.noop", queue=q, task_id=eb_id))  # link_error on every task
    res = bad.apply_async()
    with pytest.raises(RuntimeError):
        res.get(timeout=RESULT_TIMEOUT)
    # the errback of the task that failed (the second) receives its id
    assert app.AsyncResult(eb_id).get(timeout=RESULT_TIMEOUT) == res.parent.id


def test_chain_as_link(app, queues, cworker):
    q = queues()
    cworker(q)
    last = uniq("last")
    inner = chain(sig(app, "bench.noop", queue=q), sig(app, "bench.noop", queue=q, task_id=last))
    res = app.send_task("bench.noop", args=[["x", 2]], queue=q, link=inner)
    assert res.get(timeout=RESULT_TIMEOUT) == ["x", 2]
    assert app.AsyncResult(last).get(timeout=RESULT_TIMEOUT) == ["x", 2]


def test_chain_step_options_are_honoured(app, queues, cworker):
    from datetime import datetime, timedelta

    q, other = queues(), queues("interop-other")
    cworker(q)
    cworker(other)
    c = chain(sig(app, "bench.noop", 5, queue=q),
              sig(app, "bench.noop", queue=other, countdown=2),  # another queue, later
              sig(app, "bench.noop", queue=q))
    sent = datetime.utcnow()
    res = c.apply_async()
    assert res.get(timeout=RESULT_TIMEOUT) == 5
    # a step stores its own result after publishing the next one (as Celery does): wait for it
    assert res.parent.get(timeout=RESULT_TIMEOUT) == 5
    assert res.parent.date_done >= sent + timedelta(seconds=2)
