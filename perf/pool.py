#!/usr/bin/env python3
"""Issue 11's target ratios from runs of perf/alternate.sh.

  pool.py SET NAME...

For each binary NAME: per run, the median of the within-round ratios
(uring / uring-min: client CPU per transceive at 1024 and 4096 pipes and on
the overflow path, p50 latency at 1 pipe), and the median of all rounds of
all runs pooled, with how many runs met the target.
"""
import glob
import json
import statistics
import sys

CASES = [("1 pipe p50", "a", 1, "p50_us", 1.10),
         ("1024 pipes", "a", 1024, "client_cpu_us_per_op", 1.05),
         ("4096 pipes", "a", 4096, "client_cpu_us_per_op", 1.05),
         ("overflow", "b", 1024, "client_cpu_us_per_op", 1.05)]


def ratios(path, pipes, field):
    with open(path) as f:
        results = json.load(f)["results"]
    by = {}
    for r in results:
        if r["pipes"] == pipes:
            by[(r["round"], r["engine"])] = r[field]
    out = []
    for (rnd, eng), v in sorted(by.items()):
        if eng == "uring" and (rnd, "uring-min") in by:
            out.append(v / by[(rnd, "uring-min")])
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    set_ = sys.argv[1]
    for name in sys.argv[2:]:
        print(f"== {name}")
        for label, part, pipes, field, target in CASES:
            runs = sorted(glob.glob(f"/tmp/off-{set_}-{name}-*-{part}.json"))
            per_run, pooled = [], []
            for p in runs:
                try:
                    rs = ratios(p, pipes, field)
                except (OSError, ValueError, KeyError):
                    continue
                if rs:
                    per_run.append(statistics.median(rs))
                    pooled += rs
            if not pooled:
                continue
            met = sum(1 for m in per_run if m <= target)
            runs_s = " ".join(f"{m:.2f}" for m in per_run)
            print(f"  {label:11} pooled {statistics.median(pooled):.3f} over {len(pooled)} rounds;"
                  f" runs {runs_s}; met {met}/{len(per_run)}")


if __name__ == "__main__":
    main()
