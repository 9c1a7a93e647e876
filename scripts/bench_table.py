#!/usr/bin/env python3
"""Turn the JSON lines of `scripts/bench` into a comparison table.

    bench_table.py RESULTS.jsonl OUT.md OUT.json [SERVER_LIMITS.txt ...]

Prints the markdown table, and writes it (with the figures of the servers' own benchmarks,
redis-benchmark.txt and pgbench.txt, when given) to OUT.md and the rows to OUT.json. The ratio is huey-rs / huey-py; the `better` column says whether a higher or
a lower figure is the better one. On the rows apalis ran too (drain and latency), its figure
and huey-rs / apalis; other rows show "—" there.
"""

import json
import sys


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                runs.append(json.loads(line))
    return runs


def key(r):
    return (r.get("label"), r.get("system"))


def figures(r):
    """(name, value, unit, better) for one run."""
    s = r["scenario"]
    if r.get("error"):
        return [("error", None, "", "")]
    if s in ("drain", "cpu"):
        return [("throughput", r["tasks_per_s"], "tasks/s", "higher")]
    if s == "enqueue":
        out = [("one at a time", r["single_per_s"], "tasks/s", "higher"),
               ("batch of %d" % r["batch"], r["batch_per_s"], "tasks/s", "higher")]
        if "tx_one_per_s" in r:
            out += [("in the app's transaction, 1 per transaction", r["tx_one_per_s"],
                     "tasks/s", "higher"),
                    ("in the app's transaction, %d per transaction" % r["batch"],
                     r["tx_batch_per_s"], "tasks/s", "higher")]
        return out
    if s == "latency":
        return [("p50", r["p50_ms"], "ms", "lower"), ("p99", r["p99_ms"], "ms", "lower")]
    if s == "io":
        return [("throughput", r["tasks_per_s"], "tasks/s", "higher"),
                ("of the ideal N*S/W", r["ideal_pct"], "%", "higher"),
                ("consumer peak RSS", round(r["consumer_hwm_kib"] / 1024, 1), "MiB", "lower")]
    if s == "startup":
        return [("launch to first result", r["median_ms"], "ms", "lower")]
    if s == "memory":
        out = []
        for phase in ("idle", "drain"):
            m = r[phase]
            out.append(("supervisor peak RSS, %s" % phase,
                        round(m["supervisor_hwm_kib"] / 1024, 1), "MiB", "lower"))
            if m.get("worker_hwm_kib") is not None:
                out.append(("worker peak RSS, %s" % phase,
                            round(m["worker_hwm_kib"] / 1024, 1), "MiB", "lower"))
        return out
    return []


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and v >= 100:
        return "{:,.0f}".format(v)
    return "{:,}".format(v)


def enqueue_async_table(runs):
    """huey-rs alone: Task::enqueue against Task::enqueue_async on the same storage, same run."""
    runs = [r for r in runs if r.get("scenario") == "enqueue_async" and not r.get("error")]
    if not runs:
        return ""
    lines = ["", "", "enqueue_async against enqueue (huey-rs, same storage, same run):", "",
             "| storage | enqueuers | enqueue (tasks/s) | enqueue_async (tasks/s) | async/sync |",
             "|---|---|---:|---:|---:|"]
    for r in runs:
        for mode, n in (("one", "1"), ("many", str(r["concurrency"]))):
            lines.append("| %s | %s | %s | %s | %s%% |" % (
                r["storage"], n, fmt(r["sync_%s_per_s" % mode]),
                fmt(r["async_%s_per_s" % mode]), r["async_%s_pct" % mode]))
    return "\n".join(lines)


def main():
    runs = load(sys.argv[1])
    labels = []
    by = {}
    for r in runs:
        if r.get("scenario") == "calibrate":
            continue
        if r["label"] not in labels:
            labels.append(r["label"])
        by[key(r)] = r

    rows = []
    for label in labels:
        rs = by.get((label, "huey-rs"))
        py = by.get((label, "huey-py"))
        ap = by.get((label, "apalis"))
        frs = {f[0]: f for f in figures(rs)} if rs else {}
        fpy = {f[0]: f for f in figures(py)} if py else {}
        fap = {f[0]: f for f in figures(ap)} if ap else {}
        for name in list(dict.fromkeys(list(frs) + list(fpy) + list(fap))):
            a = frs.get(name, (name, None, "", ""))
            b = fpy.get(name, (name, None, "", ""))
            c = fap.get(name, (name, None, "", ""))
            unit = a[2] or b[2] or c[2]
            better = a[3] or b[3] or c[3]
            ratio = None
            if a[1] and b[1]:
                ratio = round(a[1] / b[1], 2)
            row = {"scenario": label, "figure": name, "unit": unit,
                   "huey_rs": a[1], "huey_py": b[1], "ratio": ratio, "better": better}
            if ap:
                row["apalis"] = c[1]
                row["ratio_apalis"] = round(a[1] / c[1], 2) if a[1] and c[1] else None
            rows.append(row)

        # cpu: speed-up from 1 to 2 workers, per system
        if label.startswith("cpu") and label.endswith("w2"):
            one = label[:-1] + "1"
            vals = {}
            for sysname in ("huey-rs", "huey-py"):
                r1, r2 = by.get((one, sysname)), by.get((label, sysname))
                if r1 and r2 and not r1.get("error") and not r2.get("error"):
                    vals[sysname] = round(r2["tasks_per_s"] / r1["tasks_per_s"], 2)
            a, b = vals.get("huey-rs"), vals.get("huey-py")
            rows.append({"scenario": label.rsplit(" ", 1)[0] + " w1->w2", "figure": "speed-up",
                         "unit": "x", "huey_rs": a, "huey_py": b,
                         "ratio": round(a / b, 2) if a and b else None, "better": "higher"})

    calib = {r["system"]: r for r in runs if r.get("scenario") == "calibrate"}
    lines = ["| scenario | figure | huey-rs | huey-py | rs/py | apalis | rs/apalis | better |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "apalis" in r:
            ap, ap_ratio = fmt(r["apalis"]), fmt(r["ratio_apalis"])
        else:
            ap, ap_ratio = "\u2014", "\u2014"
        lines.append("| %s | %s (%s) | %s | %s | %s | %s | %s | %s |" % (
            r["scenario"], r["figure"], r["unit"], fmt(r["huey_rs"]), fmt(r["huey_py"]),
            fmt(r["ratio"]), ap, ap_ratio, r["better"]))
    notes = []
    for sysname in ("huey-rs", "huey-py"):
        c = calib.get(sysname)
        if c:
            notes.append("cpu task: %s runs %s xorshift iterations (%.1f ms when calibrated)"
                         % (sysname, "{:,}".format(c["iters"]), c["check_ms"]))
    table = "\n".join(lines) + enqueue_async_table(runs)
    text = table + "\n\n" + "\n".join("- " + n for n in notes) + "\n"
    for path in sys.argv[4:]:
        with open(path) as f:
            limits = f.read().strip()
        if not limits:
            continue
        if "pgbench" in path:
            title = "pgbench on the same Postgres server (select-only, its limit):"
        else:
            title = "redis-benchmark on the same redis-server:"
        text += "\n" + title + "\n\n```\n" + limits + "\n```\n"
    print(text)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(text)
    with open(sys.argv[3], "w") as f:
        json.dump({"rows": rows, "calibration": calib, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
