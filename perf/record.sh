#!/bin/sh
# One profiled bench run of the engine and uring-min, for perf/cpu_split.py.
#   perf/record.sh TAG PIPES [BINARY] [-- extra bench args]
# writes TAG.data (perf record -e cpu-clock -F 2999) and TAG.json.
set -eu
tag=$1; pipes=$2; shift 2
bin=target/release/opipe
if [ $# -gt 0 ] && [ "$1" != "--" ]; then bin=$1; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi
perf record -q -e cpu-clock -F 2999 -o "$tag.data" -- \
  "$bin" bench --engine uring,uring-min --pipes "$pipes" --duration 2 --rounds 3 --json "$@" \
  > "$tag.json" 2>/dev/null
