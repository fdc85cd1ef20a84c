#!/usr/bin/python3
"""make bench: throughput, latency and cost of celeriac against the broker's own ceiling and
against Debian's Celery 5.2.6, all measured in one run on the same RabbitMQ and Redis so the
ratios hold on a noisy machine. Each measurement runs REPEAT times (median and spread).

Writes a table to the terminal, build/bench/results.json and build/bench/throughput.png."""
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
OUT = os.path.join(BUILD, "bench")
REPEAT = int(os.environ.get("REPEAT", "3"))
N = int(os.environ.get("BENCH_JOBS", "100000"))
N_CELERY = int(os.environ.get("BENCH_CELERY_JOBS", "20000"))
N_RTT = int(os.environ.get("BENCH_RTT", "2000"))
BROKER = os.environ["CELERIAC_BROKER_URL"]
BACKEND_BASE = os.environ["CELERIAC_RESULT_BACKEND"].rsplit("/", 1)[0]
RESULT_DB = 7
BACKEND = f"{BACKEND_BASE}/{RESULT_DB}"
R = redis.Redis.from_url(BACKEND)
PRODUCER = os.path.join(BUILD, "bin", "producer")
WORKER = os.path.join(BUILD, "bin", "worker")
TMP = tempfile.mkdtemp(prefix="celeriac-bench-")
ENV = dict(os.environ, CELERIAC_RESULT_BACKEND=BACKEND, CELERIAC_DATA_DIR=TMP)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stats(values):
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0], "max": values[-1],
            "runs": values}


def ceiling(mode, *args):
    out = subprocess.run([os.path.join(OUT, "ceiling"), mode, *map(str, args)], env=ENV,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def jobs_file(queue, n, extra=None):
    path = os.path.join(TMP, f"{queue}-{n}.jsonl")
    with open(path, "w") as f:
        for i in range(n):
            job = {"task": "bench.noop", "args": [i], "queue": queue}
            if extra:
                job.update(extra)
            f.write(json.dumps(job) + "\n")
    return path


def bulk(path):
    subprocess.run([PRODUCER, "bulk", path], env=ENV, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def wait_results(n, timeout=300):
    deadline = time.monotonic() + timeout
    while R.dbsize() < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {R.dbsize()} of {n} results after {timeout} s")
        time.sleep(0.005)
    return time.monotonic()


def start_worker(kind, queue, pool, conc):
    if kind == "celeriac":
        cmd = [WORKER, "--queue", queue, "--pool", pool, "--concurrency", str(conc),
               "--hostname", f"bench-{queue}@localhost", "--loglevel", "warning"]
    else:
        cmd = ["/usr/bin/python3", "-m", "celery", "-A", "celery_tasks", "worker", "-Q", queue,
               "-c", str(conc), "--pool", pool, "-n", f"bench-{queue}@%h", "--loglevel", "warning",
               "--without-heartbeat", "--without-mingle", "--without-gossip"]
    return subprocess.Popen(cmd, env=ENV, cwd=os.path.join(ROOT, "bench"),
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(TMP, "w.log"), "a"))


def stop_worker(proc):
    proc.send_signal(signal.SIGTERM)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = status
    return ru.ru_utime + ru.ru_stime


def tree_rss_kb(pid):
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def drain(kind, pool, conc, n):
    queue = f"bench-{kind}-{pool}-{conc}-{os.getpid()}"
    R.flushdb()
    bulk(jobs_file(queue, n))
    t0 = time.monotonic()
    proc = start_worker(kind, queue, pool, conc)
    peak = 0
    deadline = t0 + 600
    while R.dbsize() < n:
        peak = max(peak, tree_rss_kb(proc.pid))
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{kind} drain stalled at {R.dbsize()}/{n}")
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    cpu = stop_worker(proc)
    return {"rate": n / elapsed, "cpu_us_per_job": cpu / n * 1e6, "peak_rss_kb": peak}


def end_to_end(kind, pool, conc, n):
    queue = f"bench-e2e-{kind}-{os.getpid()}"
    R.flushdb()
    path = jobs_file(queue, n)
    proc = start_worker(kind, queue, pool, conc)
    time.sleep(1.0 if kind == "celeriac" else 3.0)  # consumers up before the clock starts
    t0 = time.monotonic()
    bulk(path)
    t1 = wait_results(n)
    stop_worker(proc)
    return {"rate": n / (t1 - t0)}


def latency(kind, n):
    queue = f"bench-rtt-{kind}-{os.getpid()}"
    proc = start_worker(kind, queue, "prefork", 1)
    time.sleep(1.0 if kind == "celeriac" else 3.0)
    try:
        if kind == "celeriac":
            out = subprocess.run([os.path.join(OUT, "latency"), queue, str(n)], env=ENV,
                                 check=True, capture_output=True, text=True).stdout
            return json.loads(out.strip().splitlines()[-1])
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        os.environ["CELERIAC_RESULT_BACKEND"] = BACKEND
        from celery_tasks import app
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            app.send_task("bench.noop", args=[i], queue=queue).get(timeout=30)
            lat.append(time.perf_counter() - t0)
        lat.sort()
        return {"p50_ms": lat[n // 2] * 1e3, "p90_ms": lat[n * 9 // 10] * 1e3,
                "p99_ms": lat[n * 99 // 100] * 1e3}
    finally:
        stop_worker(proc)


def delayed_rss(n):
    queue = f"bench-delay-{os.getpid()}"
    proc = start_worker("celeriac", queue, "prefork", 2)
    time.sleep(1.0)
    idle = tree_rss_kb(proc.pid)
    bulk(jobs_file(queue, n, {"countdown": 3600}))
    time.sleep(2.0)
    after = tree_rss_kb(proc.pid)
    stop_worker(proc)
    return {"idle_rss_kb": idle, "rss_after_delayed_kb": after, "delayed_jobs": n}


def repeat(fn, *args):
    runs = [fn(*args) for _ in range(REPEAT)]
    return {k: stats([r[k] for r in runs]) for k in runs[0]}


def main():
    os.makedirs(OUT, exist_ok=True)
    res = {"repeat": REPEAT, "jobs": N, "celery_jobs": N_CELERY, "host_cpus": os.cpu_count()}
    log("ceiling: rabbitmq-c + hiredis loops")
    res["ceiling_drain"] = repeat(lambda: ceiling("drain", N, 256))
    res["ceiling_single"] = repeat(lambda: ceiling("single", N // 5))
    res["ceiling_publish"] = repeat(lambda: ceiling("publish", N, 500))
    res["ceiling_duplex"] = repeat(lambda: ceiling("duplex", N, 500))
    res["ceiling_rtt"] = repeat(lambda: ceiling("rtt", N_RTT))
    for pool, conc in (("solo", 1), ("prefork", 1), ("prefork", 2)):
        log(f"celeriac drain: {pool} -c {conc}")
        res[f"celeriac_drain_{pool}_{conc}"] = repeat(drain, "celeriac", pool, conc, N)
    log("celeriac end to end (producer bulk while the worker consumes)")
    res["celeriac_e2e"] = repeat(end_to_end, "celeriac", "prefork", 2, N)
    log("celeriac latency")
    res["celeriac_rtt"] = repeat(latency, "celeriac", N_RTT)
    log("celeriac RSS with delayed jobs")
    res["celeriac_delayed"] = delayed_rss(N)
    log("celery drain / end to end / latency")
    res["celery_drain_prefork_2"] = repeat(drain, "celery", "prefork", 2, N_CELERY)
    res["celery_e2e"] = repeat(end_to_end, "celery", "prefork", 2, N_CELERY)
    res["celery_rtt"] = repeat(latency, "celery", N_RTT // 4)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    report(res)
    chart(res)


def med(res, key, field="rate"):
    return res[key][field]["median"]


def report(res):
    ceil = med(res, "ceiling_drain")
    rows = [("ceiling: consume+store+ack, batched", med(res, "ceiling_drain"), ""),
            ("ceiling: one message at a time", med(res, "ceiling_single"), ""),
            ("ceiling: confirming publisher", med(res, "ceiling_publish"), ""),
            ("ceiling: publisher + consumer at once", med(res, "ceiling_duplex"), "")]
    for pool, conc in (("solo", 1), ("prefork", 1), ("prefork", 2)):
        key = f"celeriac_drain_{pool}_{conc}"
        rows.append((f"celeriac drain {pool} -c{conc}", med(res, key),
                     f"{med(res, key) / ceil:.0%} of ceiling, "
                     f"{med(res, key, 'cpu_us_per_job'):.1f} us CPU/job"))
    rows.append(("celeriac end to end (bulk + worker)", med(res, "celeriac_e2e"),
                 f"{med(res, 'celeriac_e2e') / med(res, 'ceiling_duplex'):.0%} of duplex ceiling"))
    rows.append(("celery drain prefork -c2 acks_late", med(res, "celery_drain_prefork_2"),
                 f"celeriac is {med(res, 'celeriac_drain_prefork_2') / med(res, 'celery_drain_prefork_2'):.1f}x"))
    rows.append(("celery end to end", med(res, "celery_e2e"), ""))
    print(f"\n{'measurement':44} {'jobs/s':>10}  notes")
    for name, rate, note in rows:
        print(f"{name:44} {rate:10.0f}  {note}")
    print(f"\n{'round trip (send, run, wait)':44} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for name, key in (("floor: rabbitmq-c + hiredis", "ceiling_rtt"),
                      ("celeriac (libceleriac)", "celeriac_rtt"), ("celery", "celery_rtt")):
        print(f"{name:44} {med(res, key, 'p50_ms'):8.3f} {med(res, key, 'p90_ms'):8.3f} "
              f"{med(res, key, 'p99_ms'):8.3f}")
    d = res["celeriac_delayed"]
    print(f"\nworker RSS (supervisor + 2 children): idle {d['idle_rss_kb'] / 1024:.1f} MiB, "
          f"with {d['delayed_jobs']} delayed jobs {d['rss_after_delayed_kb'] / 1024:.1f} MiB; "
          f"peak under load {med(res, 'celeriac_drain_prefork_2', 'peak_rss_kb') / 1024:.1f} MiB")


def chart(res):
    data = os.path.join(OUT, "throughput.dat")
    names = [("ceiling", "ceiling_drain"), ("solo", "celeriac_drain_solo_1"),
             ("prefork-1", "celeriac_drain_prefork_1"), ("prefork-2", "celeriac_drain_prefork_2"),
             ("e2e", "celeriac_e2e"), ("celery-2", "celery_drain_prefork_2"),
             ("celery-e2e", "celery_e2e")]
    with open(data, "w") as f:
        for label, key in names:
            r = res[key]["rate"]
            f.write(f"{label} {r['median']:.0f} {r['min']:.0f} {r['max']:.0f}\n")
    script = f"""set terminal pngcairo size 900,500
set output '{os.path.join(OUT, "throughput.png")}'
set title 'jobs/s (median of {REPEAT}, bars: min-max)'
set style data histogram
set style histogram errorbars lw 1
set style fill solid 0.6
set boxwidth 0.8
set yrange [0:*]
set grid ytics
plot '{data}' using 2:3:4:xtic(1) notitle lc rgb '#3465a4'
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"chart skipped: {e}")


if __name__ == "__main__":
    main()
