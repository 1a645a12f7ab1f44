#!/bin/sh
# The issue 11 target commands, run alternately for several binaries so that
# each sees the same machine state; for perf/pool.py.
#   perf/alternate.sh SET N BINARY...
# writes /tmp/off-SET-<name>-<i>-a.json (pipes 1,1024,4096) and -b.json
# (overflow path), <name> the binary's file name.
set -eu
set_=$1; n=$2; shift 2
i=1
while [ "$i" -le "$n" ]; do
  for bin in "$@"; do
    name=$(basename "$bin")
    "$bin" bench --engine tokio,uring,uring-min --pipes 1,1024,4096 --duration 2 --rounds 5 --json \
      > "/tmp/off-$set_-$name-$i-a.json" 2>/dev/null
    "$bin" bench --engine tokio,uring,uring-min --pipes 1024 --reply-size 4280 --max-out 1024 \
      --duration 2 --rounds 5 --json > "/tmp/off-$set_-$name-$i-b.json" 2>/dev/null
  done
  i=$((i + 1))
done
