#!/usr/bin/env python3
"""Instructions per transceive of the engine core, counted by callgrind.

Runs the unit test `steady_state_transceive_loop` (the bench's loop on
the fake driver: no kernel, no socket, one thread) under callgrind twice,
with 1 000 and 21 000 transceives, and divides the difference by 20 000:
what a transceive costs once the pipes are open, without the setup. The
counts are exact and repeat run after run, so two builds compare without
the machine's noise (perf/README.md, session 13). They count instructions,
not time: a cache miss costs nothing here.

  perf/instructions.py run TAG [--pipes N] [--overflow] [--top N]
        builds the release test binary of the checkout it is run in, runs
        the loop, saves /tmp/instr-TAG.json and prints the split;
        --overflow runs `steady_state_overflow_loop` instead (4 280-byte
        replies, max_out 1 024: each transceive and the read of its rest)
  perf/instructions.py show TAG [--top N]
  perf/instructions.py diff TAG_A TAG_B [--top N]

The split is by the source file each instruction comes from (inlined code
counts where it was written): the engine's files, the fake driver and the
test's loop (which a real ring does not run), the standard library's
inlined code, libc. Needs valgrind (`apt-get install valgrind`).
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys

SMALL, LARGE = 1_000, 21_000
LINE = re.compile(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*?):(.*?)( \[.*\])?$")


def test_binary():
    out = subprocess.run(
        ["cargo", "test", "--release", "--lib", "--no-run", "--message-format=json"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["kind"] == ["lib"]:
            return msg["executable"]
    sys.exit("no lib test binary in cargo's output")


def callgrind(binary, test, transceives, pipes, out):
    env = dict(os.environ, OPIPE_LOOP_TRANSCEIVES=str(transceives),
               OPIPE_LOOP_PIPES=str(pipes))
    r = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary,
         f"engine::ring::tests::{test}", "--exact",
         "--test-threads=1"],
        env=env, capture_output=True, text=True)
    if r.returncode != 0 or "1 passed" not in r.stdout:
        sys.exit(f"the loop failed under callgrind:\n{r.stdout}\n{r.stderr}")


def by_source(out):
    """Instructions by (source file, function), self cost."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", out],
        capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    on = False
    for line in text.splitlines():
        if "file:function" in line:
            on = True
            continue
        m = LINE.match(line) if on else None
        if m:
            path = m.group(2).split("/library/", 1)[-1]
            path = path.split("/src/", 1)[1] if "/work/" in path else path
            path = path[len("src/"):] if path.startswith("src/") else path
            func = re.sub(r"<impl [^>]*>>?::", "", m.group(3).strip())
            counts[f"{path}\t{func}"] += int(m.group(1).replace(",", ""))
    return counts


def group_of(key):
    path, func = key.split("\t")
    if path.startswith(("engine/ring/fake.rs", "engine/ring/tests.rs")) \
            or "fake::" in func or "tests::" in func:
        return "fake driver + test loop"
    if path.startswith(("engine/", "ring/", "slab.rs", "inline_box.rs", "protocol/")):
        return "engine source"
    if "malloc" in path or "arena.c" in path:
        return "malloc (the fake's and the loop's)"
    if "memmove" in path or "memcmp" in path:
        return "libc memcpy/memcmp"
    if path.startswith(("core/", "alloc/", "std/")):
        if func.startswith("opipe::") or func.startswith("<opipe::"):
            return "std inlined in engine functions"
        if "call_once" in func:
            return "closures (callbacks and the loop)"
        return "std"
    return "other"


def run(tag, pipes, overflow):
    binary = test_binary()
    test = "steady_state_overflow_loop" if overflow else "steady_state_transceive_loop"
    files = []
    for n in (SMALL, LARGE):
        out = f"/tmp/instr-{tag}-{n}.out"
        callgrind(binary, test, n, pipes, out)
        files.append(out)
    small, large = (by_source(f) for f in files)
    per = {k: (large[k] - small.get(k, 0)) / (LARGE - SMALL) for k in large}
    with open(f"/tmp/instr-{tag}.json", "w") as f:
        json.dump({"pipes": pipes, "test": test, "per_transceive": per}, f)
    return per


def load(tag):
    with open(f"/tmp/instr-{tag}.json") as f:
        return json.load(f)["per_transceive"]


def groups(per):
    g = collections.Counter()
    for k, v in per.items():
        g[group_of(k)] += v
    return g


def show(per, top):
    g = groups(per)
    print(f"instructions per transceive: {sum(per.values()):7.0f}")
    for name, v in sorted(g.items(), key=lambda kv: -kv[1]):
        print(f"  {v:7.0f}  {name}")
    files = collections.Counter()
    for k, v in per.items():
        if group_of(k) == "engine source":
            files[k.split("\t")[0]] += v
    print("engine source by file:")
    for name, v in files.most_common(top):
        print(f"  {v:7.1f}  {name}")


def diff(a, b, top):
    ga, gb = groups(a), groups(b)
    print(f"instructions per transceive: A {sum(a.values()):7.0f}  B {sum(b.values()):7.0f}"
          f"  B-A {sum(b.values()) - sum(a.values()):+7.0f}")
    for name in sorted(set(ga) | set(gb)):
        print(f"  {ga[name]:7.0f} {gb[name]:7.0f} {gb[name] - ga[name]:+7.0f}  {name}")
    keys = set(a) | set(b)
    moved = sorted(keys, key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))[:top]
    print("largest changes (source file, function):")
    for k in moved:
        d = b.get(k, 0) - a.get(k, 0)
        if abs(d) >= 0.5:
            print(f"  {a.get(k, 0):7.1f} {b.get(k, 0):7.1f} {d:+7.1f}  {k.replace(chr(9), '  ')[:120]}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cmd", choices=["run", "show", "diff"])
    p.add_argument("tags", nargs="+")
    p.add_argument("--pipes", type=int, default=16)
    p.add_argument("--overflow", action="store_true")
    p.add_argument("--top", type=int, default=20)
    a = p.parse_args()
    if a.cmd == "run":
        show(run(a.tags[0], a.pipes, a.overflow), a.top)
    elif a.cmd == "show":
        show(load(a.tags[0]), a.top)
    elif len(a.tags) == 2:
        diff(load(a.tags[0]), load(a.tags[1]), a.top)
    else:
        sys.exit("diff takes two tags")


if __name__ == "__main__":
    main()
