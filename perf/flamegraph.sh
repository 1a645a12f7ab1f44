#!/usr/bin/env bash
# Records `opipe bench` with perf (cpu-clock sampling: hardware counters are
# not available in these VMs) and renders a flame graph SVG with inferno.
#
#   perf/flamegraph.sh [opipe bench arguments...]
#   default arguments: --engine uring --pipes 1024 --duration 5
#
# Needs: perf (Debian: linux-perf), inferno (cargo install inferno).
# Output: perf/flamegraph.svg (and perf/perf.data, git-ignored).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
command -v inferno-collapse-perf >/dev/null || { echo "inferno is missing: cargo install inferno" >&2; exit 1; }
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--engine uring --pipes 1024 --duration 5)
# Release build with debug info (Cargo.toml: [profile.release] debug = 1).
cargo build --release --manifest-path "$root/Cargo.toml"
bin="$root/target/release/opipe"
# The service child runs under perf too (perf follows children), so the
# graph shows client and service side by side; filter with --pid if needed.
perf record -e cpu-clock -F 997 --call-graph dwarf,16384 -o "$here/perf.data" -- "$bin" bench "${args[@]}"
perf script -i "$here/perf.data" 2>/dev/null | inferno-collapse-perf > "$here/stacks.folded"
inferno-flamegraph --title "opipe bench ${args[*]}" < "$here/stacks.folded" > "$here/flamegraph.svg"
echo "wrote $here/flamegraph.svg"
