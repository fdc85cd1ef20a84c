"""chaoslib.py: the machinery behind the chaos scenarios: a private RabbitMQ+Redis stack, worker
processes, a producer fed at a steady pace through a FIFO, and the bookkeeping that decides
whether every job ended exactly once.

What a run checks (Run.verify):
  * every job expected to succeed (bench.noop, email.send_welcome) has a celery-task-meta-<id>
    with status SUCCESS, and for bench.noop the result is the unique value it was sent with;
  * every job expected to fail (bench.crash: the child segfaults; bench.spin past the hard time
    limit) has status FAILURE and is in <q>.dead exactly once; no other job is dead-lettered;
  * no id had SUCCESS published twice (a psubscribe on celery-task-meta-* counts them: SUCCESS is
    sticky, so a second SUCCESS write is a duplicate) and no idempotency key sent mail twice
    (outbox rows per job in $CELERIAC_DATA_DIR/email.db, one job per key).
lost = jobs that did not reach their expected final state; duplicates = the two counts above.
"""
import json
import os
import random
import shlex
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path

import amqp
import msgpack
import redis

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = []
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")  # one line per scenario, printed at the end of the session by conftest.py


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default


def binary(env_name, default):
    p = Path(os.environ.get(env_name) or ROOT / default)
    p = p if p.is_absolute() else ROOT / p
    if not os.access(p, os.X_OK):
        raise AssertionError(f"{p} not found: build it (make) or set {env_name}")
    return p


# ---- the private stack ----

class Stack:
    """RabbitMQ + Redis of our own (scripts/stack.sh with a private CELERIAC_RUN_DIR): the chaos
    scenarios restart servers, which must never happen to the shared stack."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.env = {}

    def _sh(self, *args, timeout=180):
        env = dict(os.environ, CELERIAC_RUN_DIR=str(self.run_dir))
        env.pop("STACK_TLS", None)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # cwd: the Erlang VM drops erl_crash.dump into its working directory
        r = subprocess.run([str(ROOT / "scripts/stack.sh"), *args], env=env, capture_output=True,
                           text=True, timeout=timeout, cwd=self.run_dir)
        if r.returncode != 0:
            raise AssertionError(f"stack.sh {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
        return r.stdout

    def up(self):
        for line in self._sh("up").splitlines():
            if line.startswith("export "):
                k, _, v = line[len("export "):].partition("=")
                self.env[k] = shlex.split(v)[0] if v else ""
        self.broker = self.env["CELERIAC_BROKER_URL"]
        self.backend = self.env["CELERIAC_RESULT_BACKEND"]

    def down(self):
        self._sh("down")

    def restart_rabbitmq(self, pause=2):
        self._sh("restart-rabbitmq", str(pause))

    def restart_redis(self, pause=2):
        self._sh("restart-redis", str(pause))


def amqp_connect(url):
    u = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
    conn = amqp.Connection(host=f"{u.hostname}:{u.port or 5672}",
                           userid=urllib.parse.unquote(u.username or "guest"),
                           password=urllib.parse.unquote(u.password or "guest"),
                           virtual_host=vhost, connect_timeout=10)
    conn.connect()
    return conn


def decode_meta(raw):
    try:
        return msgpack.unpackb(raw, raw=False)
    except Exception:
        return json.loads(raw)


# ---- processes ----

class Worker:
    """One worker supervisor; a restart makes a new incarnation with its own log file."""

    def __init__(self, run, name, args):
        self.run, self.name, self.args = run, name, args
        self.proc = None
        self.incarnation = 0
        self.exit_codes = []

    def start(self):
        self.incarnation += 1
        log = self.run.tmp / f"{self.name}.{self.incarnation}.log"
        cmd = [str(self.run.worker_bin), "--queue", self.run.queue, "--pool", "prefork",
               "--services", str(self.run.services), "--broker", self.run.stack.broker,
               "--backend", self.run.stack.backend, "--hostname", f"{self.name}@chaos",
               "--loglevel", "warning", "--log-format", "json", *self.args]
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.run.tmp, env=self.run.proc_env,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def children(self):
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill(self):
        kids = self.children()
        self.proc.kill()
        self.exit_codes.append(self.proc.wait())
        self.log.close()
        return kids

    def terminate(self, timeout=60):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = f"still running {timeout} s after SIGTERM (killed)"
            self.proc.wait()
        self.exit_codes.append(rc)
        self.log.close()
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def pid_alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class SuccessCounter(threading.Thread):
    """Counts SUCCESS publications per task id on celery-task-meta-*; reconnects after a Redis
    restart (publications while Redis is down cannot happen, so none are missed)."""

    def __init__(self, url, ids):
        super().__init__(daemon=True)
        self.url, self.ids = url, ids
        self.counts = Counter()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.last = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            try:
                ps = redis.Redis.from_url(self.url).pubsub(ignore_subscribe_messages=True)
                ps.psubscribe("celery-task-meta-*")
                self.ready.set()
                while not self.stop.is_set():
                    m = ps.get_message(timeout=0.5)
                    if m and m["type"] == "pmessage":
                        self.last = time.monotonic()
                        self.count(m["data"])
            except redis.exceptions.ConnectionError:
                time.sleep(0.2)

    def drain(self, quiet=1.0, timeout=15):
        """Returns once nothing was published for `quiet` seconds, then stops."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last < quiet and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stop.set()

    def count(self, data):
        try:
            meta = decode_meta(data)
        except Exception:
            return
        if isinstance(meta, dict) and meta.get("status") == "SUCCESS" and meta.get("task_id") in self.ids:
            self.counts[meta["task_id"]] += 1


# ---- one scenario run ----

class Run:
    def __init__(self, stack, scenario, tmp, n_jobs, crash_every=0, hang_every=0, email_every=50,
                 send_seconds=None):
        """crash_every/hang_every: one job in that many is bench.crash / bench.spin."""
        self.stack, self.scenario = stack, scenario
        self.tmp = Path(tmp)
        self.worker_bin = binary("CELERIAC_WORKER_BIN", "build/bin/worker")
        self.producer_bin = binary("CELERIAC_PRODUCER_BIN", "build/bin/producer")
        self.services = Path(os.environ.get("CELERIAC_SERVICES") or self.worker_bin.parent.parent / "services")
        self.queue = f"chaos-{scenario}-{os.getpid()}-{random.randrange(1 << 24):x}"
        self.data = self.tmp / "data"
        self.data.mkdir(exist_ok=True)
        self.proc_env = dict(os.environ, CELERIAC_DATA_DIR=str(self.data),
                             CELERIAC_BROKER_URL=stack.broker, CELERIAC_RESULT_BACKEND=stack.backend)
        if crash_every:
            # under an ASan build, let a deliberate segfault be a real SIGSEGV as in production,
            # not an ASan report followed by exit(1)
            asan = self.proc_env.get("ASAN_OPTIONS", "")
            self.proc_env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "handle_segv=0"
        self.send_seconds = send_seconds if send_seconds is not None else env_int("CHAOS_SEND_SECONDS", 15)
        self.workers = []
        self.plan(n_jobs, crash_every, hang_every, email_every)
        self.sent_lines = 0
        self.orphans = []
        self.redis_restarted = False

    def plan(self, n, crash_every, hang_every, email_every):
        """jobs: (id, json line); expect: id -> (status, value or None); email keys by id."""
        self.jobs, self.expect, self.email_keys, self.task_of = [], {}, {}, {}
        tag = uuid.uuid4().hex[:8]
        for i in range(n):
            tid = str(uuid.uuid4())
            line = {"task_id": tid, "queue": self.queue}
            if crash_every and i % crash_every == crash_every // 6:
                line.update(task="bench.crash", args=[])
                self.expect[tid] = ("FAILURE", None)
            elif hang_every and i % hang_every == hang_every * 2 // 3:
                line.update(task="bench.spin", args=[3600])
                self.expect[tid] = ("FAILURE", None)
            elif email_every and i % email_every == email_every // 2:
                key = f"welcome-{tag}-{i}"
                user = {"id": i, "username": f"user{i}", "email": f"user{i}@chaos.test"}
                line.update(task="email.send_welcome", args=[user], idempotency_key=key)
                self.expect[tid] = ("SUCCESS", None)
                self.email_keys[tid] = key
            else:
                value = f"v{i}-{tag}"
                line.update(task="bench.noop", args=[value])
                self.expect[tid] = ("SUCCESS", value)
            self.task_of[tid] = line["task"]
            self.jobs.append((tid, json.dumps(line) + "\n"))

    # -- processes --

    def add_worker(self, *args, concurrency=2):
        w = Worker(self, f"{self.scenario}-w{len(self.workers)}",
                   ["--concurrency", str(concurrency), "--shutdown-timeout", "20", *args])
        w.start()
        self.workers.append(w)
        return w

    def wait_consumers(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        conn = amqp_connect(self.stack.broker)
        try:
            while time.monotonic() < deadline:
                for w in self.workers:
                    assert w.alive(), f"{w.name} exited ({w.proc.returncode}): {self.log_tail(w)}"
                ch = conn.channel()
                try:
                    _, _, consumers = ch.queue_declare(self.queue, passive=True)
                    ch.close()
                    if consumers >= n:
                        return
                except amqp.exceptions.NotFound:
                    pass
                time.sleep(0.2)
        finally:
            conn.close()
        raise AssertionError(f"{n} workers not consuming {self.queue} after {timeout} s")

    def log_tail(self, w, n=3000):
        p = self.tmp / f"{w.name}.{w.incarnation}.log"
        return p.read_bytes()[-n:].decode("utf-8", "replace") if p.exists() else ""

    def restart_dead(self):
        """Starts again every worker that died by itself; returns how many."""
        n = 0
        for w in self.workers:
            if w.proc.poll() is not None:
                w.exit_codes.append(w.proc.returncode)
                w.log.close()
                w.start()
                n += 1
        return n

    def kill_and_restart(self, w):
        kids = w.kill()
        self.orphans.extend(kids)
        w.start()

    # -- sending --

    def start_sending(self):
        self.t0 = time.monotonic()
        self.counter = SuccessCounter(self.stack.backend, set(self.expect))
        self.counter.start()
        self.counter.ready.wait(10)
        fifo = self.tmp / "jobs.fifo"
        os.mkfifo(fifo)
        self.ids_file = self.tmp / "ids.txt"
        self.prod_out = open(self.tmp / "producer.log", "wb")
        self.producer = subprocess.Popen([str(self.producer_bin), "bulk", str(fifo), "--ids", str(self.ids_file)],
                                         cwd=self.tmp, env=self.proc_env, stdin=subprocess.DEVNULL,
                                         stdout=self.prod_out, stderr=subprocess.STDOUT)
        self.writer_error = None
        self.writer = threading.Thread(target=self._feed, args=(fifo,), daemon=True)
        self.writer.start()

    def _feed(self, fifo):
        """Writes the job lines in 100 steps spread over send_seconds."""
        try:
            with open(fifo, "w") as f:
                steps = 100
                per = max(1, -(-len(self.jobs) // steps))
                start = time.monotonic()
                for k in range(0, len(self.jobs), per):
                    f.write("".join(line for _, line in self.jobs[k:k + per]))
                    f.flush()
                    self.sent_lines = min(len(self.jobs), k + per)
                    due = start + self.send_seconds * self.sent_lines / len(self.jobs)
                    time.sleep(max(0.0, due - time.monotonic()))
        except OSError as e:
            self.writer_error = e

    def wait_sent(self, fraction, timeout=120):
        deadline = time.monotonic() + timeout
        while self.sent_lines < fraction * len(self.jobs) and time.monotonic() < deadline:
            if not self.writer.is_alive():
                break
            time.sleep(0.05)

    def sending(self):
        return self.writer.is_alive() or self.producer.poll() is None

    def finish_sending(self, timeout=300):
        self.writer.join(timeout)
        try:
            rc = self.producer.wait(timeout)
        except subprocess.TimeoutExpired:
            self.producer.kill()
            self.producer.wait()
            rc = "timeout"
        self.prod_out.close()
        log = (self.tmp / "producer.log").read_bytes()[-3000:].decode("utf-8", "replace")
        assert self.writer_error is None, f"producer stopped reading its input: {self.writer_error}\n{log}"
        assert rc == 0, f"producer bulk exited with {rc}:\n{log}"
        ids = set((self.tmp / "ids.txt").read_text().split()) if (self.tmp / "ids.txt").exists() else set()
        assert ids == set(self.expect), \
            f"producer --ids lists {len(ids)} ids, {len(ids ^ set(self.expect))} differ from the {len(self.expect)} sent"

    # -- results --

    def fetch(self):
        r = redis.Redis.from_url(self.stack.backend, socket_timeout=10)
        ids = list(self.expect)
        metas = {}
        for k in range(0, len(ids), 1000):
            chunk = ids[k:k + 1000]
            for tid, raw in zip(chunk, r.mget([f"celery-task-meta-{i}" for i in chunk])):
                if raw is not None:
                    metas[tid] = decode_meta(raw)
        return metas

    def settled(self, metas):
        return all(tid in metas and metas[tid].get("status") in ("SUCCESS", "FAILURE", "REVOKED")
                   for tid in self.expect)

    def wait_settled(self, timeout=None):
        timeout = timeout or env_int("CHAOS_SETTLE_TIMEOUT", 180)
        deadline = time.monotonic() + timeout
        metas = {}
        while time.monotonic() < deadline:
            try:
                metas = self.fetch()
            except redis.exceptions.ConnectionError:
                time.sleep(0.5)
                continue
            if self.settled(metas):
                break
            time.sleep(0.5)
        self.elapsed = time.monotonic() - self.t0
        self.metas = metas
        return metas

    def drain_dead(self):
        conn = amqp_connect(self.stack.broker)
        ch = conn.channel()
        dead = Counter()
        try:
            while True:
                msg = ch.basic_get(queue=self.queue + ".dead", no_ack=True)
                if msg is None:
                    break
                h = msg.headers or {}
                tid = h.get("id") or msg.properties.get("correlation_id")
                dead[tid.decode() if isinstance(tid, bytes) else tid] += 1
        except amqp.exceptions.NotFound:
            pass
        finally:
            conn.close()
        return dead

    def outbox_rows(self):
        db = self.data / "email.db"
        if not db.exists():
            return Counter()
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as c:
            return Counter(dict(c.execute("SELECT job_id, count(*) FROM outbox GROUP BY job_id")))

    def verify(self):
        def got(m):
            if m is None:
                return "no result"
            r = m.get("result")
            return f"{m.get('status')} {r.get('exc_type')}" if isinstance(r, dict) and "exc_type" in r else m.get("status")

        """Counts, prints the summary line, and returns a list of problems (empty = pass)."""
        self.counter.drain()
        metas, dead, rows = self.metas, self.drain_dead(), self.outbox_rows()
        problems, lost, unexpected = [], [], []
        for tid, (status, value) in self.expect.items():
            m = metas.get(tid)
            final = m is not None and m.get("status") in ("SUCCESS", "FAILURE", "REVOKED")
            if tid in self.email_keys and rows.get(tid, 0) == 0:
                final = False
            ok = final and m.get("status") == status
            if ok and value is not None:
                ok = m.get("result") == value
            if ok and status == "FAILURE":
                ok = dead.get(tid, 0) >= 1
            if not final:
                lost.append(tid)
            elif not ok:
                unexpected.append(tid)
        dup_success = [t for t, c in self.counter.counts.items() if c > 1]
        dup_mail = [self.email_keys.get(t, t) for t, c in rows.items() if c > 1]
        extra_dead = [t for t, c in dead.items() if self.expect.get(t, ("?",))[0] != "FAILURE" or c > 1]
        orphans = [p for p in self.orphans if pid_alive(p)]
        # the duplicate detector must have seen every SUCCESS, or it proves nothing; after a
        # Redis restart it may miss the first stores before it re-subscribes
        unseen = [t for t, m in metas.items() if m.get("status") == "SUCCESS" and not self.counter.counts[t]]
        if unseen and not self.redis_restarted:
            problems.append(f"the SUCCESS counter missed {len(unseen)} publications, e.g. {unseen[:3]}")
        n = len(self.expect)
        line = (f"chaos {self.scenario}: sent {n}, completed {n - len(lost) - len(unexpected)}, "
                f"duplicates {len(dup_success) + len(dup_mail)}, lost {len(lost)}, "
                + (f"unexpected outcome {len(unexpected)}, " if unexpected else "")
                + f"time {self.elapsed:.1f} s")
        SUMMARY.append(line)
        print(line)
        for what, bad in (("lost (no final state)", lost), ("with an unexpected outcome", unexpected)):
            if not bad:
                continue
            sample = [(t, self.task_of[t], self.expect[t][0], got(metas.get(t)), dead.get(t, 0),
                       rows.get(t) if t in self.email_keys else "-") for t in bad[:5]]
            kinds = Counter((self.task_of[t], (metas.get(t) or {}).get("status", "none"),
                             dead.get(t, 0)) for t in bad)
            problems.append(f"{len(bad)} jobs {what}; by (task, state, "
                            f"dead letters): {dict(kinds)}; e.g. (id, task, expected, got, "
                            f"dead letters, outbox rows): {sample}")
        if dup_success:
            problems.append(f"{len(dup_success)} ids had SUCCESS stored more than once, e.g. {dup_success[:3]}")
        if dup_mail:
            problems.append(f"{len(dup_mail)} idempotency keys sent mail more than once, e.g. {dup_mail[:3]}")
        if extra_dead:
            problems.append(f"{len(extra_dead)} unexpected or repeated dead letters, e.g. {extra_dead[:3]}")
        if orphans:
            problems.append(f"children still alive 10+ s after their supervisor was SIGKILLed: {orphans[:5]}")
        return problems

    def stop_workers(self):
        """SIGTERM every live worker (warm shutdown must exit 0), then read every incarnation's
        log for sanitizer reports (an ASan build via CELERIAC_WORKER_BIN). Returns problems."""
        problems = []
        for w in self.workers:
            if not w.alive():
                problems.append(f"{w.name} had exited by itself ({w.proc.returncode}): {self.log_tail(w)}")
                continue
            rc = w.terminate()
            if rc != 0:
                problems.append(f"{w.name} exited with {rc} after SIGTERM: {self.log_tail(w)}")
        found = set()
        for log in sorted(self.tmp.glob("*.log")):
            for line in log.read_bytes().decode("utf-8", "replace").splitlines():
                if any(m in line for m in SANITIZER_MARKS):
                    found.add(f"{log.name}: {line.strip()[:300]}")
        if found:
            problems.append("sanitizer reports:\n" + "\n".join(sorted(found)[:20]))
        return problems

    def wait_orphans(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(p) for p in self.orphans):
            time.sleep(0.2)

    def close(self):
        for w in self.workers:
            if w.alive():
                w.proc.kill()
                w.proc.wait()
        if getattr(self, "producer", None) and self.producer.poll() is None:
            self.producer.kill()
            self.producer.wait()
        if getattr(self, "counter", None):
            self.counter.stop.set()
        try:
            conn = amqp_connect(self.stack.broker)
            ch = conn.channel()
            for q in (self.queue, self.queue + ".dead"):
                ch.queue_delete(q)
            ch.exchange_delete(self.queue)
            conn.close()
        except Exception:
            pass
