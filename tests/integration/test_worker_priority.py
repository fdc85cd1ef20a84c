"""Priority queues: a worker and a producer that both ask for x-max-priority declare the same
queue (no 406 PRECONDITION_FAILED), and higher-priority jobs waiting in the queue run first."""
import json
import os
import subprocess

from conftest import ROOT, result_meta, uniq, wait_for

PRODUCER = os.path.join(ROOT, "build", "bin", "producer")


def produce(stack, *args):
    env = dict(os.environ, CELERIAC_BROKER_URL=stack.broker,
               CELERIAC_RESULT_BACKEND=stack.backend)
    out = subprocess.run([PRODUCER, *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_priority_queue_runs_high_priority_first(stack, workers, amqp, redis_client):
    q = uniq("prio")
    amqp.track(q, q + ".dead")
    # declare the queue with priorities and fill it before any worker consumes
    low = [produce(stack, "send", "bench.count", json.dumps([q]), "--queue", q,
                   "--max-priority", "10", "--priority", "1") for _ in range(20)]
    high = produce(stack, "send", "bench.count", json.dumps([q]), "--queue", q,
                   "--max-priority", "10", "--priority", "9")
    workers.start(q, "--max-priority", "10", "--pool", "solo", "--prefetch-multiplier", "1",
                  "--concurrency", "1")
    ids = low + [high]
    wait_for(lambda: all(result_meta(redis_client, i) for i in ids), what="all results")
    metas = {i: result_meta(redis_client, i) for i in ids}
    assert all(m["status"] == "SUCCESS" for m in metas.values())
    # bench.count returns the counter's new value: the high-priority job ran among the first
    assert metas[high]["result"] <= 2, metas[high]
