#!/usr/bin/env python3
"""Benchmark scenarios for Python huey, the counterpart of `examples/bench.rs`.

Same scenarios, same definitions, same storage, one JSON line per run:

    python scripts/bench_huey.py SCENARIO --storage URL [options]
      calibrate --target-ms 20                  iterations of `cpu` for ~20 ms in Python
      drain     --kind K --workers W --tasks N  noop tasks/s, first to last finish
      cpu       --workers W --tasks N --iters I the same with cpu(I) tasks, process workers
      enqueue   --tasks N                       enqueue rate, one at a time and with map()
      latency   --kind K --workers W --count C  enqueue echo + wait for the result, C times
      startup   --kind K --workers W --repeat R launch the consumer to first task finished
      memory    --kind K --workers W --tasks N  peak RSS of consumer and worker
      io        --kind greenlet --workers W --tasks N --sleep-ms S
                                                N tasks that each sleep S ms (time.sleep under
                                                gevent), drained by W greenlets

Storage URLs: sqlite:PATH (SqliteHuey on that file, deleted first),
redis://127.0.0.1:PORT/0 (RedisHuey, blocking dequeue, notify_result=True so result waits
use BLPOP instead of polling, a connection pool large enough for every greenlet worker), or
postgres://USER@127.0.0.1:PORT/DB (huey's own Postgres storage: SqlHuey from
huey.contrib.sql_huey, over peewee and psycopg2; it polls, like SqliteHuey, and dequeues with
FOR UPDATE SKIP LOCKED; its tables live in the database's default schema).

On Postgres the enqueue scenario also enqueues inside the application's own transaction: N
transactions that each insert one row into an application table (bench_orders) and enqueue
one task, then the same with 1000 tasks (noop.map) per transaction; huey's SqlStorage writes
through the same peewee connection, so `with database.atomic():` makes its enqueue part of the
application's transaction.

The consumer is huey's own `huey_consumer` (from the same virtualenv as this interpreter),
started as a subprocess with `-q -n -d 0.001 -m 0.01`: warnings only, no periodic tasks, and
the shortest polling its consumer sensibly takes (SqliteHuey cannot block in dequeue). Result
waits that cannot block poll every millisecond (`get(blocking=True, backoff=1, max_delay=0.001)`).

Greenlet consumers (`-k greenlet`) are started through a wrapper that applies gevent's
`monkey.patch_all()` before anything else is imported, as huey's documentation asks, so that
`time.sleep` and sockets yield to other greenlets.

This module is also what the consumer imports (`bench_huey.huey`): the app is built at import
from $BENCH_HUEY_STORAGE.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from huey import RedisHuey, SqliteHuey

MASK = (1 << 64) - 1
WAIT = 300.0  # longest any single wait may take


def _make_huey(url):
    if url.startswith("sqlite:"):
        return SqliteHuey("bench", filename=url[len("sqlite:"):])
    if url.startswith("redis://"):
        hostport, _, db = url[len("redis://"):].partition("/")
        host, _, port = hostport.partition(":")
        # redis-py's pool holds 100 connections by default; every greenlet worker blocked in
        # BRPOP holds one, so allow as many as the largest -w.
        return RedisHuey("bench", host=host, port=int(port), db=int(db or 0),
                         notify_result=True, max_connections=20000)
    if url.startswith(("postgres://", "postgresql://")):
        from huey.contrib.sql_huey import SqlHuey
        return SqlHuey("bench", database="postgresql://" + url.split("://", 1)[1])
    raise SystemExit("unknown storage URL %r" % url)


def storage_kind(url):
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith("redis://"):
        return "redis"
    return "postgres"


if __name__ != "__main__":
    # Imported: by the consumer, or by main() below once $BENCH_HUEY_STORAGE is set.
    huey = _make_huey(os.environ["BENCH_HUEY_STORAGE"])


def xorshift(n):
    """The same walk as huey::demo::cpu, in 64-bit arithmetic."""
    x = 0x9E3779B97F4A7C15
    for _ in range(n):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
    return x


if __name__ != "__main__":

    @huey.task()
    def noop():
        pass

    @huey.task()
    def echo(value):
        return value

    @huey.task()
    def cpu(n):
        return xorshift(n)

    @huey.task()
    def sleep_io(ms):
        time.sleep(ms / 1000.0)


# ----- helpers --------------------------------------------------------------------------------


def now():
    return time.perf_counter()


def wait(result):
    # Polls every millisecond on SQLite; BLPOP on Redis (notify_result=True). huey's blocking
    # get can give up early under load (ResultTimeout long before its timeout, seen with thread
    # workers on Redis), so wait in slices until WAIT has really passed.
    from huey.exceptions import ResultTimeout

    deadline = now() + WAIT
    while True:
        try:
            return result.get(blocking=True, timeout=5, backoff=1.0, max_delay=0.001)
        except ResultTimeout:
            if now() >= deadline:
                raise


def fresh(url):
    # SQLite files were deleted before the app was built; Redis keys of the app go here.
    huey.flush()


class Consumer:
    def __init__(self, args, workers):
        here = os.path.dirname(os.path.abspath(__file__))
        exe = os.path.join(os.path.dirname(sys.executable), "huey_consumer")
        env = dict(os.environ, BENCH_HUEY_STORAGE=args.storage,
                   PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [exe, "bench_huey.huey", "-k", args.kind, "-w", str(workers),
               "-d", "0.001", "-m", "0.01", "-q", "-n"]
        if args.kind == "greenlet":
            cmd = [sys.executable, "-c", GEVENT_CONSUMER] + cmd[1:]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # huey's graceful signal
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


GEVENT_CONSUMER = (
    "from gevent import monkey; monkey.patch_all()\n"
    "from huey.bin.huey_consumer import consumer_main\n"
    "consumer_main()\n"
)


def percentile(sorted_values, p):
    i = int(round((len(sorted_values) - 1) * p))
    return sorted_values[min(i, len(sorted_values) - 1)]


# ----- scenarios ------------------------------------------------------------------------------


def calibrate_iters(target_ms):
    probe = 20000
    best = min(_timed(xorshift, probe) for _ in range(5))
    n = int(probe * target_ms / 1000.0 / best)
    best = min(_timed(xorshift, n) for _ in range(3))
    return int(n * target_ms / 1000.0 / best)


def _timed(f, *a):
    t = now()
    f(*a)
    return now() - t


def sc_calibrate(args):
    iters = calibrate_iters(args.target_ms)
    return {"iters": iters, "check_ms": round(_timed(xorshift, iters) * 1000.0, 2)}


def sc_drain(args, use_cpu=False):
    """Start marker (echo), N tasks, one end marker per worker, all enqueued before the
    consumer starts; rate = (N + end markers) / (last end marker seen - start marker seen)."""
    fresh(args.storage)
    t = now()
    start = echo("start")
    if use_cpu:
        if not args.iters:
            raise SystemExit("cpu needs --iters (see the calibrate scenario)")
        for _ in range(args.tasks):
            cpu(args.iters)
    else:
        for _ in range(args.tasks):
            noop()
    ends = [echo("end-%d" % i) for i in range(args.workers)]
    enqueue_s = now() - t

    launched = now()
    consumer = Consumer(args, args.workers)
    try:
        wait(start)
        first = now()
        for e in ends:
            wait(e)
        last = now()
        # huey deletes a message when it dequeues it, so "nothing in flight" is not visible in
        # storage; the queue length only says nothing is left to start.
        while huey.pending_count() > 0:
            time.sleep(0.001)
        empty = now()
    finally:
        consumer.stop()
    counted = args.tasks + len(ends)
    interval = last - first
    return {
        "kind": args.kind, "workers": args.workers, "tasks": args.tasks,
        "task": "cpu" if use_cpu else "noop",
        "iters": args.iters if use_cpu else None,
        "enqueue_s": round(enqueue_s, 4),
        "startup_s": round(first - launched, 4),
        "drain_s": round(interval, 4),
        "empty_s": round(empty - first, 4),
        "tasks_per_s": round(counted / interval, 1),
    }


def sc_enqueue(args):
    """N noop() calls one at a time, then N more with task.map() -- huey has no bulk enqueue:
    map() enqueues each call with its own storage write."""
    fresh(args.storage)
    t = now()
    for _ in range(args.tasks):
        noop()
    single = now() - t
    huey.flush()
    t = now()
    left = args.tasks
    while left > 0:
        n = min(left, args.batch)
        noop.map([()] * n)
        left -= n
    batched = now() - t
    ready = huey.pending_count()
    if ready != args.tasks:
        raise SystemExit("%d tasks ready after enqueueing %d" % (ready, args.tasks))
    out = {
        "tasks": args.tasks, "batch": args.batch,
        "single_per_s": round(args.tasks / single, 1),
        "batch_per_s": round(args.tasks / batched, 1),
    }
    if storage_kind(args.storage) == "postgres":
        out["tx_one_per_s"] = round(args.tasks / enqueue_in_tx(args, 1), 1)
        out["tx_batch_per_s"] = round(args.tasks / enqueue_in_tx(args, args.batch), 1)
    return out


def enqueue_in_tx(args, per_tx):
    """N tasks enqueued inside application transactions of `per_tx` tasks each, every
    transaction also inserting one application row; seconds taken."""
    db = huey.storage.database
    db.execute_sql("CREATE TABLE IF NOT EXISTS bench_orders("
                   "id bigserial PRIMARY KEY, total integer NOT NULL)")
    db.execute_sql("TRUNCATE bench_orders")
    huey.flush()
    t = now()
    left = args.tasks
    while left > 0:
        n = min(left, per_tx)
        with db.atomic():
            db.execute_sql("INSERT INTO bench_orders(total) VALUES (%s)", (42,))
            if n == 1:
                noop()
            else:
                noop.map([()] * n)
        left -= n
    elapsed = now() - t
    ready = huey.pending_count()
    orders = db.execute_sql("SELECT count(*) FROM bench_orders").fetchone()[0]
    expected = (args.tasks + per_tx - 1) // per_tx
    if ready != args.tasks or orders != expected:
        raise SystemExit("%d tasks and %d orders after %d transactions" % (ready, orders, expected))
    return elapsed


def sc_latency(args):
    fresh(args.storage)
    consumer = Consumer(args, args.workers)
    ms = []
    try:
        wait(echo("warm-up"))
        for i in range(args.count):
            t = now()
            got = wait(echo("ping %d" % i))
            ms.append((now() - t) * 1000.0)
            if got != "ping %d" % i:
                raise SystemExit("echo returned %r" % (got,))
    finally:
        consumer.stop()
    ms.sort()
    return {
        "kind": args.kind, "workers": args.workers, "count": args.count,
        "p50_ms": round(percentile(ms, 0.5), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
        "max_ms": round(ms[-1], 3),
    }


def sc_startup(args):
    runs = []
    for _ in range(max(1, args.repeat)):
        fresh(args.storage)
        r = echo("first")
        t = now()
        consumer = Consumer(args, args.workers)
        try:
            wait(r)
            runs.append((now() - t) * 1000.0)
        finally:
            consumer.stop()
    s = sorted(runs)
    return {"kind": args.kind, "workers": args.workers,
            "median_ms": round(percentile(s, 0.5), 2),
            "runs_ms": [round(x, 2) for x in runs]}


def mem_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def children(pid):
    out = set()
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    out.update(int(p) for p in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return sorted(out)


def mem_snapshot(pid):
    sup = mem_kib(pid) or (0, 0)
    workers = [m for m in (mem_kib(c) for c in children(pid)) if m]
    return {
        "supervisor_hwm_kib": sup[0], "supervisor_rss_kib": sup[1],
        "worker_hwm_kib": max((w[0] for w in workers), default=None),
        "worker_rss_kib": max((w[1] for w in workers), default=None),
        "workers_seen": len(workers),
    }


def sc_memory(args):
    fresh(args.storage)
    consumer = Consumer(args, args.workers)
    try:
        wait(echo("warm-up"))
        time.sleep(1.0)
        idle = mem_snapshot(consumer.pid)
        for _ in range(args.tasks):
            noop()
        ends = [echo("end-%d" % i) for i in range(args.workers)]
        for e in ends:
            wait(e)
        drained = mem_snapshot(consumer.pid)
    finally:
        consumer.stop()
    return {"kind": args.kind, "workers": args.workers, "tasks": args.tasks,
            "idle": idle, "drain": drained}


def sc_io(args):
    """The drain measurement with sleep_io(S) tasks; the ideal interval is N * S / W."""
    fresh(args.storage)
    start = echo("start")
    for _ in range(args.tasks):
        sleep_io(args.sleep_ms)
    ends = [echo("end-%d" % i) for i in range(args.workers)]
    launched = now()
    consumer = Consumer(args, args.workers)
    try:
        wait(start)
        first = now()
        for e in ends:
            wait(e)
        interval = now() - first
        hwm = (mem_kib(consumer.pid) or (0, 0))[0]
        child = [m[0] for m in (mem_kib(c) for c in children(consumer.pid)) if m]
    finally:
        consumer.stop()
    ideal = args.tasks * args.sleep_ms / 1000.0 / args.workers
    return {
        "kind": args.kind, "workers": args.workers, "tasks": args.tasks,
        "sleep_ms": args.sleep_ms,
        "startup_s": round(first - launched, 4),
        "drain_s": round(interval, 4),
        "ideal_s": round(ideal, 4),
        "ideal_pct": round(100.0 * ideal / interval, 1),
        "tasks_per_s": round((args.tasks + len(ends)) / interval, 1),
        "consumer_hwm_kib": hwm,
        "worker_hwm_kib": max(child) if child else None,
    }


SCENARIOS = {
    "calibrate": sc_calibrate,
    "drain": sc_drain,
    "cpu": lambda a: sc_drain(a, use_cpu=True),
    "enqueue": sc_enqueue,
    "latency": sc_latency,
    "startup": sc_startup,
    "memory": sc_memory,
    "io": sc_io,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--storage", default="sqlite:target/bench_huey.db")
    p.add_argument("--kind", default="process", choices=["process", "thread", "greenlet"])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--iters", type=int, default=0)
    p.add_argument("--target-ms", type=float, default=20.0)
    p.add_argument("--sleep-ms", type=int, default=10)
    args = p.parse_args()

    out = {"system": "huey-py", "scenario": args.scenario}
    if args.scenario == "calibrate":
        out.update(sc_calibrate(args))
        print(json.dumps(out, sort_keys=True), flush=True)
        return
    if args.storage.startswith("sqlite:"):
        path = args.storage[len("sqlite:"):]
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass
    # Build the app on the requested storage, under the module name the consumer imports.
    os.environ["BENCH_HUEY_STORAGE"] = args.storage
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_huey as app  # noqa: E402  (this file, as the consumer sees it)

    out["storage"] = storage_kind(args.storage)
    out.update(app.SCENARIOS[args.scenario](args))
    print(json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
