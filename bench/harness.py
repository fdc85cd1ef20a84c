#!/usr/bin/python3
"""make bench: throughput, latency and cost of celeriac against the broker's own ceiling and
against Debian's Celery 5.2.6, all measured in one run on the same RabbitMQ and Redis so the
ratios hold on a noisy machine. Each measurement runs REPEAT times (median and spread).

Writes a table to the terminal, build/bench/results.json and build/bench/throughput.png.
Environment: REPEAT (3), BENCH_JOBS (50000), BENCH_CELERY_JOBS (10000), BENCH_RTT (2000),
BENCH_DELAYED (100000);
BENCH_LONG=1 runs only the long check instead: BENCH_LONG_JOBS (1000000) jobs through one
prefork -c 2 worker, its memory sampled after every tenth (build/bench/long.json).

Drain rates are timed from the first stored result to the last, so the workers' startup (about
1 s for Celery) is not counted. Memory is reported as the sum of RSS over the supervisor and its
children and as the sum of PSS (shared pages split between the processes that map them: the
memory the tree really costs, as forked children share the supervisor's pages)."""
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
N = int(os.environ.get("BENCH_JOBS", "50000"))
LONG = os.environ.get("BENCH_LONG") == "1"
N_LONG = int(os.environ.get("BENCH_LONG_JOBS", "1000000"))
N_CELERY = int(os.environ.get("BENCH_CELERY_JOBS", "10000"))
N_RTT = int(os.environ.get("BENCH_RTT", "2000"))
N_DELAYED = int(os.environ.get("BENCH_DELAYED", "100000"))
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


def tree_kb(pid, path, field):
    """Sum of one /proc/<p>/<path> field (kB) over the worker and its children."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/{path}") as f:
                for line in f:
                    if line.startswith(field):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree_rss_kb(pid):
    return tree_kb(pid, "status", "VmRSS:")


def tree_pss_kb(pid):
    """Proportional set size: shared pages counted once across the tree."""
    return tree_kb(pid, "smaps_rollup", "Pss:")


def drain(kind, pool, conc, n):
    queue = f"bench-{kind}-{pool}-{conc}-{os.getpid()}"
    R.flushdb()
    bulk(jobs_file(queue, n))
    proc = start_worker(kind, queue, pool, conc)
    peak = 0
    deadline = time.monotonic() + 600
    t0 = None
    while True:
        done = R.dbsize()
        if t0 is None and done:
            t0, first = time.monotonic(), done
        if done >= n:
            break
        peak = max(peak, tree_rss_kb(proc.pid))
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{kind} drain stalled at {done}/{n}")
        time.sleep(0.005)
    elapsed = time.monotonic() - t0
    cpu = stop_worker(proc)
    return {"rate": (n - first) / elapsed, "cpu_us_per_job": cpu / n * 1e6, "peak_rss_kb": peak}


def end_to_end(kind, pool, conc, n):
    queue = f"bench-e2e-{kind}-{os.getpid()}"
    R.flushdb()
    path = jobs_file(queue, n)
    proc = start_worker(kind, queue, pool, conc)
    time.sleep(1.0 if kind == "celeriac" else 3.0)  # consumers up before the clock starts
    t0 = time.monotonic()
    bulk(path)
    t1 = wait_results(n)
    cpu = stop_worker(proc)
    return {"rate": n / (t1 - t0), "cpu_us_per_job": cpu / n * 1e6}


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
    """Delayed jobs wait in the broker's delay queues, not in the worker: its memory must not
    move while they are published."""
    queue = f"bench-delay-{os.getpid()}"
    proc = start_worker("celeriac", queue, "prefork", 2)
    time.sleep(1.0)
    idle, idle_pss = tree_rss_kb(proc.pid), tree_pss_kb(proc.pid)
    bulk(jobs_file(queue, n, {"countdown": 3600}))
    time.sleep(2.0)
    after, after_pss = tree_rss_kb(proc.pid), tree_pss_kb(proc.pid)
    stop_worker(proc)
    return {"idle_rss_kb": idle, "idle_pss_kb": idle_pss, "rss_after_delayed_kb": after,
            "pss_after_delayed_kb": after_pss, "delayed_jobs": n}


def long_run(n, chunk=100000):
    """n jobs through one prefork -c 2 worker in chunks published while it consumes; the
    worker's memory after each chunk (the results DB is emptied between chunks)."""
    queue = f"bench-long-{os.getpid()}"
    proc = start_worker("celeriac", queue, "prefork", 2)
    time.sleep(1.0)
    samples = [{"jobs": 0, "rss_kb": tree_rss_kb(proc.pid), "pss_kb": tree_pss_kb(proc.pid)}]
    path = jobs_file(queue, chunk)
    t0 = time.monotonic()
    for done in range(chunk, n + 1, chunk):
        R.flushdb()
        bulk(path)
        wait_results(chunk)
        samples.append({"jobs": done, "rss_kb": tree_rss_kb(proc.pid),
                        "pss_kb": tree_pss_kb(proc.pid), "seconds": time.monotonic() - t0})
        log(f"  {done} jobs: RSS {samples[-1]['rss_kb']} KB, PSS {samples[-1]['pss_kb']} KB")
    cpu = stop_worker(proc)
    return {"jobs": n, "samples": samples, "cpu_us_per_job": cpu / n * 1e6,
            "growth_after_first_chunk_kb": samples[-1]["rss_kb"] - samples[1]["rss_kb"]}


def machine():
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "loadavg": [float(x) for x in load], "cpus": os.cpu_count()}


def section(res, name, fn, *args):
    t = time.monotonic()
    res[name] = fn(*args)
    res["seconds"][name] = round(time.monotonic() - t, 1)


def main():
    os.makedirs(OUT, exist_ok=True)
    if LONG:
        log(f"long run: {N_LONG} jobs through one prefork -c 2 worker")
        res = {"start": machine(), "long": long_run(N_LONG)}
        res["end"] = machine()
        with open(os.path.join(OUT, "long.json"), "w") as f:
            json.dump(res, f, indent=2)
        first, last = res["long"]["samples"][1], res["long"]["samples"][-1]
        print(f"{N_LONG} jobs: RSS {first['rss_kb'] / 1024:.1f} MiB after {first['jobs']}, "
              f"{last['rss_kb'] / 1024:.1f} MiB after {last['jobs']} (PSS {first['pss_kb'] / 1024:.1f}"
              f" -> {last['pss_kb'] / 1024:.1f} MiB), {res['long']['cpu_us_per_job']:.1f} us CPU/job")
        return
    res = {"repeat": REPEAT, "jobs": N, "celery_jobs": N_CELERY, "rtt_jobs": N_RTT,
           "start": machine(), "seconds": {}}
    # Every measurement once per round, in this order, so that each ratio compares runs made
    # minutes apart at most (the load on a shared machine drifts); the round trips are measured
    # back to back, as a persistent publish's confirm is slow for a while after a heavy run.
    plan = [("ceiling_drain", lambda: ceiling("drain", N, 256)),
            ("ceiling_single", lambda: ceiling("single", N // 5)),
            ("ceiling_publish", lambda: ceiling("publish", N, 500)),
            ("ceiling_duplex", lambda: ceiling("duplex", N, 500))]
    plan += [(f"celeriac_drain_{pool}_{conc}", lambda pool=pool, conc=conc:
              drain("celeriac", pool, conc, N))
             for pool, conc in (("solo", 1), ("prefork", 1), ("prefork", 2))]
    plan += [("celeriac_e2e", lambda: end_to_end("celeriac", "prefork", 2, N)),
             ("celery_drain_prefork_2", lambda: drain("celery", "prefork", 2, N_CELERY)),
             ("celery_e2e", lambda: end_to_end("celery", "prefork", 2, N_CELERY)),
             ("ceiling_rtt", lambda: ceiling("rtt", N_RTT)),
             ("celeriac_rtt", lambda: latency("celeriac", N_RTT)),
             ("celery_rtt", lambda: latency("celery", N_RTT // 4))]
    runs = {key: [] for key, _ in plan}
    for r in range(REPEAT):
        for key, fn in plan:
            log(f"round {r + 1}/{REPEAT}: {key}")
            t = time.monotonic()
            runs[key].append(fn())
            res["seconds"][key] = res["seconds"].get(key, 0) + round(time.monotonic() - t, 1)
    for key, rs in runs.items():
        res[key] = {k: stats([x[k] for x in rs]) for k in rs[0] if k not in ("mode", "messages")}
    log("celeriac memory with delayed jobs")
    section(res, "celeriac_delayed", delayed_rss, N_DELAYED)
    res["end"] = machine()
    res["targets"] = targets(res)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    report(res)
    chart(res)


def targets(res):
    """Issue 9's targets, each as [measured, target, met]."""
    ceil = med(res, "ceiling_drain")
    d = res["celeriac_delayed"]
    t = {k: [v[0], v[1], v[0] >= v[1]] for k, v in
         {"prefork -c2 drain >= 70% of ceiling": (med(res, "celeriac_drain_prefork_2") / ceil, 0.70),
          "solo drain >= 80% of ceiling": (med(res, "celeriac_drain_solo_1") / ceil, 0.80),
          "end to end >= 80% of duplex ceiling":
              (med(res, "celeriac_e2e") / med(res, "ceiling_duplex"), 0.80),
          "drain >= 10x Celery's (prefork -c2 both)":
              (med(res, "celeriac_drain_prefork_2") / med(res, "celery_drain_prefork_2"), 10.0),
          "p50 3x lower than Celery's":
              (med(res, "celery_rtt", "p50_ms") / med(res, "celeriac_rtt", "p50_ms"), 3.0)}.items()}
    for k, v, lim in (("round trip p50 < 0.5 ms", med(res, "celeriac_rtt", "p50_ms"), 0.5),
                      ("round trip p99 < 2 ms", med(res, "celeriac_rtt", "p99_ms"), 2.0),
                      ("round trip p50 <= 1.5x the floor's",
                       med(res, "celeriac_rtt", "p50_ms") / med(res, "ceiling_rtt", "p50_ms"), 1.5),
                      ("worker CPU per job (prefork -c2) < 20 us",
                       med(res, "celeriac_drain_prefork_2", "cpu_us_per_job"), 20.0),
                      ("idle worker with 2 children < 10 MB (PSS)", d["idle_pss_kb"] / 1024, 10.0),
                      ("idle worker with 2 children < 10 MB (RSS sum)", d["idle_rss_kb"] / 1024,
                       10.0)):
        t[k] = [v, lim, v < lim or (k.endswith("floor's") and v <= lim)]
    t["no growth with delayed jobs (RSS)"] = [d["rss_after_delayed_kb"] - d["idle_rss_kb"], 0,
                                               d["rss_after_delayed_kb"] <= d["idle_rss_kb"] + 256]
    return t


def med(res, key, field="rate"):
    return res[key][field]["median"]


def spread(res, key, field="rate"):
    r = res[key][field]
    return f"{r['min']:.0f}-{r['max']:.0f}" if field == "rate" else f"{r['min']:.2f}-{r['max']:.2f}"


def report(res):
    """The results as markdown: printed, and written to build/bench/results.md."""
    ceil = med(res, "ceiling_drain")
    rows = [("ceiling: consume + store + ack, batched (rabbitmq-c + hiredis)", "ceiling_drain", ""),
            ("ceiling: one message at a time", "ceiling_single", ""),
            ("ceiling: confirming publisher", "ceiling_publish", ""),
            ("ceiling: publisher + consumer at once", "ceiling_duplex", "")]
    for pool, conc in (("solo", 1), ("prefork", 1), ("prefork", 2)):
        key = f"celeriac_drain_{pool}_{conc}"
        rows.append((f"celeriac drain, {pool} -c {conc}", key,
                     f"{med(res, key) / ceil:.0%} of ceiling, "
                     f"{med(res, key, 'cpu_us_per_job'):.1f} us CPU/job"))
    rows.append(("celeriac end to end (producer bulk + prefork -c 2 worker)", "celeriac_e2e",
                 f"{med(res, 'celeriac_e2e') / med(res, 'ceiling_duplex'):.0%} of duplex ceiling"))
    rows.append(("Celery 5.2.6 drain, prefork -c 2, acks_late", "celery_drain_prefork_2",
                 f"celeriac prefork -c 2 is "
                 f"{med(res, 'celeriac_drain_prefork_2') / med(res, 'celery_drain_prefork_2'):.1f}x, "
                 f"{med(res, 'celery_drain_prefork_2', 'cpu_us_per_job'):.0f} us CPU/job"))
    rows.append(("Celery 5.2.6 end to end", "celery_e2e", ""))
    st, en = res["start"], res["end"]
    out = [f"Run {st['date']}, {st['cpus']} CPUs, load average {st['loadavg'][0]:.2f} at the start "
           f"and {en['loadavg'][0]:.2f} at the end; median of {res['repeat']} runs "
           f"({res['jobs']} jobs per celeriac run, {res['celery_jobs']} per Celery run).", "",
           "| measurement | jobs/s | min-max | notes |", "|---|---:|---:|---|"]
    for name, key, note in rows:
        out.append(f"| {name} | {med(res, key):.0f} | {spread(res, key)} | {note} |")
    out += ["", "| round trip (send, run, wait for the result) | p50 ms | p90 ms | p99 ms |",
            "|---|---:|---:|---:|"]
    for name, key in (("floor: rabbitmq-c + hiredis (bench/ceiling rtt)", "ceiling_rtt"),
                      ("celeriac (libceleriac client, prefork -c 1 worker)", "celeriac_rtt"),
                      ("Celery 5.2.6 (send_task().get(), prefork -c 1)", "celery_rtt")):
        out.append(f"| {name} | {med(res, key, 'p50_ms'):.3f} | {med(res, key, 'p90_ms'):.3f} | "
                   f"{med(res, key, 'p99_ms'):.3f} |")
    d = res["celeriac_delayed"]
    out += ["", f"Worker memory (supervisor + 2 children): idle {d['idle_pss_kb'] / 1024:.1f} MiB "
            f"PSS ({d['idle_rss_kb'] / 1024:.1f} MiB summed RSS); after {d['delayed_jobs']} delayed "
            f"jobs were published {d['pss_after_delayed_kb'] / 1024:.1f} MiB PSS "
            f"({d['rss_after_delayed_kb'] / 1024:.1f} MiB RSS); peak summed RSS while draining "
            f"{med(res, 'celeriac_drain_prefork_2', 'peak_rss_kb') / 1024:.1f} MiB.", "",
            "| target (issue 9) | measured | target | met |", "|---|---:|---:|---|"]
    for name, (v, lim, ok) in res["targets"].items():
        out.append(f"| {name} | {v:.2f} | {lim:g} | {'yes' if ok else 'NO'} |")
    text = "\n".join(out) + "\n"
    print("\n" + text)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)


def chart(res):
    data = os.path.join(OUT, "throughput.dat")
    names = [("ceiling", "ceiling_drain"), ("solo", "celeriac_drain_solo_1"),
             ("prefork-1", "celeriac_drain_prefork_1"), ("prefork-2", "celeriac_drain_prefork_2"),
             ("duplex-ceiling", "ceiling_duplex"), ("e2e", "celeriac_e2e"), ("celery-2", "celery_drain_prefork_2"),
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
