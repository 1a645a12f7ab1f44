#!/bin/sh
# A/B of engine builds against ONE long-lived pipe service, for
# perf/cpu_split.py: each iteration runs perf/record.sh once per binary,
# in turn, all against the same `opipe serve` (started here, stopped at
# the end), so a drift of the machine hits every binary alike.
#   perf/ab.sh SET PIPES N BINARY... [-- extra bench args]
# writes /tmp/ab-SET-<binary name>-<i>.{data,json}; then
#   perf/cpu_split.py gaps "/tmp/ab-SET-<name>-*" ...
# For the overflow path pass `-- --reply-size 4280 --max-out 1024` (the
# service then answers 4256 stub bytes).
set -eu
set_=$1; pipes=$2; n=$3; shift 3
bins=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins="$bins $1"; shift; done
if [ "${1:-}" = "--" ]; then shift; fi
stub=40
prev=""
for a in "$@"; do
  if [ "$prev" = "--reply-size" ]; then stub=$((a - 24)); fi
  prev=$a
done
first=$(echo $bins | cut -d' ' -f1)
dir=$(mktemp -d)
setsid "$first" serve --dir "$dir" --pipe bench --handler dcerpc --reply-size "$stub" \
  > "$dir/serve.log" 2>&1 &
svc=$!
trap 'kill "$svc" 2>/dev/null; wait "$svc" 2>/dev/null; rm -rf "$dir"' EXIT
i=0
while [ ! -S "$dir/bench" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
here=$(dirname "$0")
i=1
while [ "$i" -le "$n" ]; do
  for b in $bins; do
    "$here/record.sh" "/tmp/ab-$set_-$(basename "$b")-$i" "$pipes" "$b" -- --dir "$dir" "$@"
  done
  i=$((i + 1))
done
