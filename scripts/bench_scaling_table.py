#!/usr/bin/env python3
"""Turn the JSON lines of `scripts/bench --scaling` into the tables of "How the cost grows".

    bench_scaling_table.py SCALING.jsonl OUT.md

Prints the markdown tables and writes them to OUT.md. Lines are labelled by scripts/bench:
"depth STORAGE N", "scheduled STORAGE", "workers noop wW", "workers cpu wW", "producers pP",
and "calibrate". A failed run shows as "-" with its error listed under the tables.
"""

import os
import sys

from bench_table import load  # the same JSON lines (this script's directory is on the path)


def num(x, digits=0):
    if x is None:
        return "-"
    if digits == 0:
        return "{:,}".format(int(round(x)))
    return "{:,.{d}f}".format(x, d=digits)


def ok(r):
    return r is not None and not r.get("error")


def row(first, r, width, cells):
    """A table row: `first`, then the `width` figures `cells(r)` of a run that succeeded, or
    as many dashes for one that failed."""
    values = cells(r) if ok(r) else ["-"] * width
    return "| " + " | ".join([str(first)] + list(values)) + " |"


def cpu_rate(r):
    """cpu tasks/s: the cpu tasks alone, until the storage showed none ready or running.

    The drain figure ends at the last end marker, when up to W - 1 tasks may still run; with
    more workers than cores those take several task lengths (they share the cores), and the
    cheap end markers themselves would count as tasks.
    """
    if not ok(r) or not r.get("empty_s"):
        return None
    return r["tasks"] / r["empty_s"]


def main():
    src, out = sys.argv[1], sys.argv[2]
    runs = load(src)
    by = {r.get("label"): r for r in runs}
    errors = [r for r in runs if r.get("error")]
    cores = os.cpu_count() or 1
    lines = []
    w = lines.append

    depth = [r for r in runs if str(r.get("label", "")).startswith("depth ")]
    if depth:
        w("### Queue depth: drain with N tasks waiting (4 process workers, noop)")
        w("")
        w("| storage | tasks waiting | enqueue, batches of 1000 (s) | drain (s) | drained (tasks/s) |")
        w("|---|---:|---:|---:|---:|")
        for r in depth:
            _, st, n = r["label"].split(" ", 2)
            w(row("%s | %s" % (st, num(int(n))), r, 3, lambda r: [
                num(r["enqueue_s"], 2), num(r["drain_s"], 2), num(r["tasks_per_s"])]))
        w("")

    sched = [r for r in runs if str(r.get("label", "")).startswith("scheduled ")]
    if sched:
        w("### Scheduled tasks: the due ones moved to the ready queue")
        w("")
        w("| storage | scheduled | due at once | writing them (s) | eta to first ready (s) "
          "| first to all ready (s) | eta to all ready (s) | supervisor peak RSS before / after (MiB) |")
        w("|---|---:|---:|---:|---:|---:|---:|---|")
        for r in sched:
            st = r["label"].split(" ", 1)[1]
            w(row(st, r, 7, lambda r: [
                num(r["tasks"]), num(r["due"]), num(r["enqueue_s"], 2),
                num(r["first_seen_s"], 2), num(r["moving_s"], 2), num(r["promote_s"], 2),
                "%s / %s" % (num(r["supervisor_hwm_before_mib"], 1),
                             num(r["supervisor_hwm_mib"], 1))]))
        w("")

    counts = sorted({int(r["label"].rsplit("w", 1)[1]) for r in runs
                     if str(r.get("label", "")).startswith("workers ")})
    if counts:
        cal = next((r for r in runs if r.get("label") == "calibrate"), None)
        ms = cal.get("check_ms") if cal else None
        w("### Workers: drain and CPU-bound throughput by worker count (SQLite, process workers)")
        w("")
        w("| workers | noop drained (tasks/s) | cpu tasks (tasks/s) | cpu speed-up over 1 worker "
          "| cpu, of the ideal for %d cores (%%) |" % cores)
        w("|---:|---:|---:|---:|---:|")
        one = cpu_rate(by.get("workers cpu w1"))
        for n in counts:
            noop = by.get("workers noop w%d" % n)
            rate = cpu_rate(by.get("workers cpu w%d" % n))
            noop_s = num(noop["tasks_per_s"]) if ok(noop) else "-"
            cpu_s = num(rate, 1)
            up = num(rate / one, 2) if rate and one else "-"
            ideal = "-"
            if rate and one:
                # One worker's rate is the single-core rate; the ideal is that times the
                # workers that can run at once.
                ideal = num(100 * rate / (one * min(n, cores)), 1)
            w("| %d | %s | %s | %s | %s |" % (n, noop_s, cpu_s, up, ideal))
        w("")
        if cal:
            w("- cpu task: %s xorshift iterations (%s ms when calibrated)" % (
                num(cal.get("iters")), cal.get("check_ms")))
            w("")

    prod = [r for r in runs if str(r.get("label", "")).startswith("producers ")]
    if prod:
        w("### Producers: processes enqueueing one at a time into one SQLite file")
        w("")
        w("| producers | tasks in all | enqueued (tasks/s) | errors | p50 (ms) | p99 (ms) "
          "| slowest (ms) |")
        w("|---:|---:|---:|---:|---:|---:|---:|")
        for r in prod:
            p = r["label"].rsplit("p", 1)[1]
            w(row(p, r, 6, lambda r: [
                num(r["tasks"]), num(r["tasks_per_s"]), num(r["errors"]),
                num(r["p50_ms"], 3), num(r["p99_ms"], 3), num(r["max_ms"], 1)]))
        w("")
        for r in prod:
            if ok(r) and (r["errors"] or r.get("lost")):
                w("- %s: %d errors, %d enqueued but not stored: %s" % (
                    r["label"], r["errors"], r.get("lost", 0),
                    "; ".join("%s (%d)" % kv for kv in r["error_kinds"].items())))
        if any(ok(r) and (r["errors"] or r.get("lost")) for r in prod):
            w("")

    for r in errors:
        w("- %s FAILED: %s" % (r.get("label"), r.get("error")))
    text = "\n".join(lines).rstrip() + "\n"
    print(text, end="")
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
