"""test_chaos.py: N jobs (CHAOS_JOBS, default 20000) through bench.noop, 2% of them through
email.send_welcome with idempotency keys, while something breaks; then every job must end in its
expected state exactly once (see chaoslib.py for exactly what is checked). The producer is fed
through a FIFO over CHAOS_SEND_SECONDS (default 15), so the breakage happens while jobs are
being both sent and run. With the defaults the seven scenarios take about 2.8 minutes on a 2-core
machine (RabbitMQ's own restart is most of the extra), so 20000 fits the 5-minute budget.
An ASan build can be run the same way: CELERIAC_WORKER_BIN / CELERIAC_PRODUCER_BIN select the
binaries and every process log is scanned for sanitizer reports."""
import time

import pytest

from chaoslib import Run, env_int

N = env_int("CHAOS_JOBS", 20000)
KILL_INTERVAL = float(env_int("CHAOS_KILL_INTERVAL", 3))


def settle_and_verify(run, problems):
    """Waits for the producer and the results, checks them, then stops the workers with SIGTERM
    (each must still be running and exit 0, with no sanitizer report in its log)."""
    try:
        run.finish_sending()
    except AssertionError as e:
        problems.append(str(e))
    run.wait_settled()
    problems.extend(run.verify())
    problems.extend(run.stop_workers())
    assert not problems, "\n".join(problems)


@pytest.fixture
def make_run(stack, tmp_run_dir):
    runs = []

    def make(scenario, **kw):
        r = Run(stack, scenario, tmp_run_dir, N, **kw)
        runs.append(r)
        return r

    yield make
    for r in runs:
        r.close()


def test_sigkill_workers(make_run):
    """SIGKILL one of three workers every few seconds (round robin) and start it again at once;
    RabbitMQ redelivers what it had not acked. Children of a killed supervisor must go too."""
    run = make_run("sigkill")
    for _ in range(3):
        run.add_worker()
    run.wait_consumers(3)
    run.start_sending()
    k = 0
    while run.sending():
        time.sleep(KILL_INTERVAL)
        run.kill_and_restart(run.workers[k % 3])
        k += 1
    print(f"sigkill: {k} kills")
    problems = [] if k else ["no kill happened while sending"]
    run.wait_orphans()
    settle_and_verify(run, problems)


def test_rabbitmq_restart(make_run, stack):
    """RabbitMQ goes down for a few seconds while jobs are being sent and run: the producer
    republishes what was not confirmed, the workers reconnect and re-consume."""
    run = make_run("rabbitmq-restart")
    for _ in range(2):
        run.add_worker()
    run.wait_consumers(2)
    run.start_sending()
    run.wait_sent(0.3)
    problems = [] if run.sending() else ["sending ended before the restart"]
    stack.restart_rabbitmq(pause=2)
    settle_and_verify(run, problems)


def test_rabbitmq_crash(make_run, stack):
    """RabbitMQ's VM is SIGKILLed mid-run (no connection.close, nothing flushed beyond what it
    confirmed) and started again: only confirmed messages may be relied on, so the producer must
    republish the rest and the workers must re-consume."""
    run = make_run("rabbitmq-crash")
    for _ in range(2):
        run.add_worker()
    run.wait_consumers(2)
    run.start_sending()
    run.wait_sent(0.3)
    problems = [] if run.sending() else ["sending ended before the crash"]
    stack.crash_rabbitmq(pause=2)
    settle_and_verify(run, problems)


def test_redis_restart(make_run, stack):
    """Redis goes down for a few seconds mid-run: workers must not ack what they could not
    record, and record it once Redis is back."""
    run = make_run("redis-restart")
    for _ in range(2):
        run.add_worker()
    run.wait_consumers(2)
    run.start_sending()
    run.wait_sent(0.3)
    problems = [] if run.sending() else ["sending ended before the restart"]
    run.redis_restarted = True
    stack.restart_redis(pause=2)
    settle_and_verify(run, problems)


def test_crash_and_hang(make_run):
    """1% of jobs segfault their child (bench.crash) and 1% spin past the 1 s hard time limit
    (bench.spin 3600): with --max-crashes 2 each of those is tried twice, then ends FAILURE and
    in <q>.dead exactly once; every other job ends SUCCESS."""
    run = make_run("crash-hang", crash_every=100, hang_every=100)
    for _ in range(2):
        run.add_worker("--time-limit", "1", "--max-crashes", "2", concurrency=4)
    run.wait_consumers(2)
    run.start_sending()
    problems = []
    settle_and_verify(run, problems)


def test_rolling_restart(make_run):
    """Each of three workers in turn gets SIGTERM (warm shutdown: finish in-flight jobs, exit 0)
    and a new worker takes its place, while jobs keep coming: nothing lost, nothing failed."""
    run = make_run("rolling-restart")
    for _ in range(3):
        run.add_worker()
    run.wait_consumers(3)
    run.start_sending()
    problems, k = [], 0
    while run.sending() and k < 6:
        time.sleep(KILL_INTERVAL)
        old = run.workers[k % 3]
        rc = old.terminate()
        if rc != 0:
            problems.append(f"{old.name} exited with {rc} after SIGTERM: {run.log_tail(old)}")
        old.start()
        k += 1
    if not k:
        problems.append("no restart happened while sending")
    settle_and_verify(run, problems)


def test_kill_before_ack(make_run):
    """The worst moment to die: the worker's fault hook (CELERIAC_FAULT_KILL_BEFORE_ACK) SIGKILLs
    it right after a welcome mail's result and idempotency record are stored, before the ack.
    RabbitMQ redelivers; the next worker must find the key done and not mail again. Dead workers
    are restarted at once; one job in 500 is a mail here, so the workers die ~40 times."""
    run = make_run("kill-before-ack", email_every=500)
    run.proc_env["CELERIAC_FAULT_KILL_BEFORE_ACK"] = "email.send_welcome"
    for _ in range(2):
        run.add_worker()
    run.wait_consumers(2)
    run.start_sending()
    deaths = 0
    while run.sending():
        time.sleep(0.1)
        deaths += run.restart_dead()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not run.settled(run.fetch()):
        time.sleep(0.1)
        deaths += run.restart_dead()
    print(f"kill-before-ack: {deaths} worker deaths")
    problems = [] if deaths else ["the fault hook never killed a worker: the test proved nothing"]
    settle_and_verify(run, problems)
