"""Prefork batching never lets a slow job hold fast ones back: only tasks measured to run in
under 1 ms are batched, so jobs queued behind a slow one go to the other, idle child."""
from conftest import result_meta, uniq, wait_for


def test_slow_job_is_not_batched_with_fast_ones(celery_app, workers, amqp, redis_client):
    q = uniq("batch")
    amqp.track(q, q + ".dead")
    # the queue is deep before the worker starts: noops (fast once measured), one slow job, noops
    before = [celery_app.send_task("bench.noop", args=[i], queue=q).id for i in range(40)]
    slow = celery_app.send_task("bench.sleep", args=[2.0], queue=q).id
    after = [celery_app.send_task("bench.noop", args=[i], queue=q).id for i in range(60)]
    workers.start(q, "--concurrency", "2")
    ids = before + [slow] + after
    wait_for(lambda: all(result_meta(redis_client, i) for i in ids), what="all results")
    metas = {i: result_meta(redis_client, i) for i in ids}
    assert all(m["status"] == "SUCCESS" for m in metas.values())
    slow_done = metas[slow]["date_done"]
    late = [i for i in after if metas[i]["date_done"] > slow_done]
    # every job queued behind the slow one ran on the other child while it slept
    assert late == [], f"{len(late)} of {len(after)} fast jobs waited for the slow one"
