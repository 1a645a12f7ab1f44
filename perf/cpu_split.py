#!/usr/bin/env python3
"""Where the engine's and uring-min's CPU goes, per transceive.

Reads runs recorded by perf/record.sh (TAG.data + TAG.json) and splits the
samples of the engine's ring threads (comm opipe-ring-*) and of uring-min's
threads (comm uring-min) into user and kernel time by symbol, divided by
the transceives each engine made in the run's JSON.

  cpu_split.py show TAG [N]        one run: totals and the top N user symbols
  cpu_split.py diff GLOB_A GLOB_B [N]
                                   mean per symbol over the runs of two sets
                                   (e.g. /tmp/pp-base-*  /tmp/pp-new-*)
  cpu_split.py gaps GLOB...        per set: each run's user-time gap (engine
                                   minus uring-min) and their median, and
                                   each run's `vs_uring_min` CPU median from
                                   its JSON (the bench's own figure)
"""
import glob
import re
import statistics
import json
import subprocess
import sys
from collections import defaultdict

FREQ = 2999  # perf record -F
NS_PER_SAMPLE = 1e9 / FREQ


def group_of(comm):
    if comm.startswith("opipe-ring"):
        return "engine"
    if comm.startswith("uring-min"):
        return "min"
    return None


def load(tag):
    with open(tag + ".json") as f:
        results = json.load(f)["results"]
    ops = defaultdict(int)
    for r in results:
        key = {"uring": "engine", "uring-min": "min"}.get(r["engine"])
        if key:
            ops[key] += r["transceives"]
    out = subprocess.run(
        ["perf", "script", "-i", tag + ".data", "-F", "comm,ip,sym,dso"],
        capture_output=True, text=True, check=True).stdout
    user = {"engine": defaultdict(int), "min": defaultdict(int)}
    kern = {"engine": 0, "min": 0}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        g = group_of(parts[0])
        if g is None:
            continue
        dso = parts[-1]
        sym = " ".join(parts[2:-1]) or "[unknown]"
        if "kernel.kallsyms" in dso:
            kern[g] += 1
        else:
            user[g][sym] += 1
    res = {}
    for g in ("engine", "min"):
        n = max(ops[g], 1)
        res[g] = {
            "ops": ops[g],
            "kernel": kern[g] * NS_PER_SAMPLE / n,
            "user": sum(user[g].values()) * NS_PER_SAMPLE / n,
            "syms": {s: c * NS_PER_SAMPLE / n for s, c in user[g].items()},
        }
    return res


def short(sym):
    return re.sub(r"::h[0-9a-f]{16}$", "", sym)[-90:]


def show(tag, n):
    r = load(tag)
    for g in ("engine", "min"):
        print(f"{g:6} ops {r[g]['ops']:9}  user {r[g]['user']:6.0f} ns  kernel {r[g]['kernel']:6.0f} ns")
    print(f"gap    user {r['engine']['user'] - r['min']['user']:+6.0f} ns  kernel {r['engine']['kernel'] - r['min']['kernel']:+6.0f} ns")
    syms = sorted(r["engine"]["syms"].items(), key=lambda kv: -kv[1])[:n]
    for s, v in syms:
        print(f"  {v:6.1f}  {short(s)}")


def mean_of(tags):
    runs = [load(t) for t in tags]
    m = {"user": 0.0, "kernel": 0.0, "min_user": 0.0, "min_kernel": 0.0}
    syms = defaultdict(float)
    for r in runs:
        m["user"] += r["engine"]["user"] / len(runs)
        m["kernel"] += r["engine"]["kernel"] / len(runs)
        m["min_user"] += r["min"]["user"] / len(runs)
        m["min_kernel"] += r["min"]["kernel"] / len(runs)
        for s, v in r["engine"]["syms"].items():
            syms[short(s)] += v / len(runs)
    return m, syms


def tags_of(pattern):
    return sorted({p[:-5] for p in glob.glob(pattern + ".json")})


def diff(ga, gb, n):
    ta, tb = tags_of(ga), tags_of(gb)
    ma, sa = mean_of(ta)
    mb, sb = mean_of(tb)
    print(f"A: {len(ta)} runs {ga}   B: {len(tb)} runs {gb}")
    for k in ("user", "kernel", "min_user", "min_kernel"):
        print(f"  {k:10} A {ma[k]:6.0f}  B {mb[k]:6.0f}  B-A {mb[k] - ma[k]:+6.0f} ns")
    print(f"  user gap over uring-min: A {ma['user'] - ma['min_user']:.0f}  B {mb['user'] - mb['min_user']:.0f} ns")
    keys = sorted(set(sa) | set(sb), key=lambda s: -max(sa.get(s, 0), sb.get(s, 0)))[:n]
    for s in keys:
        a, b = sa.get(s, 0.0), sb.get(s, 0.0)
        print(f"  {a:6.1f} {b:6.1f} {b - a:+6.1f}  {s}")


def gaps(patterns):
    for pat in patterns:
        tags = tags_of(pat)
        if not tags:
            print(f"{pat}: no runs")
            continue
        g, official = [], []
        for t in tags:
            r = load(t)
            g.append(r["engine"]["user"] - r["min"]["user"])
            with open(t + ".json") as f:
                for e in json.load(f)["summary"]:
                    if e["engine"] == "uring":
                        official.append(e["vs_uring_min"]["client_cpu_us_per_op"]["median"])
        print(f"{pat}")
        print(f"  user gap ns   {' '.join(f'{x:5.0f}' for x in g)}   median {statistics.median(g):5.0f}")
        if official:
            print(f"  vs_uring_min  {' '.join(f'{x:5.2f}' for x in official)}   median {statistics.median(official):5.2f}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "gaps":
        gaps(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "show":
        show(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 25)
    elif len(sys.argv) >= 4 and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 30)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
