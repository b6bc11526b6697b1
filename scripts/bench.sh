#!/usr/bin/env bash
# Issue 14 benchmark table: builds openshell-bench in release mode (its own scratch directory, so the debug
# build is untouched), runs the log benchmark (the event log beside SQLite through GRDB, in the same run) and
# prints one table: measure, ours, peer, ratio, target, met. The full report (every table, load average,
# settings) is kept in the file named on the last line.
#
# Only the rows this script measures appear; the request-path rows of issue 14 (GetSandbox, CreateSandbox
# vs etcd, create→READY, restart time, RSS) are not measured here yet.
#
# Usage: scripts/bench.sh [openshell-bench log options, e.g. --quick or --events 200000 --seconds 2]
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=${BENCH_SCRATCH:-.build-bench}
if [ ! -d "$scratch" ] && [ -d .build ]; then cp -a .build "$scratch"; fi  # reuse dependency checkouts
swift build --scratch-path "$scratch" -c release --product openshell-bench 2>&1 | tail -n 1
out=$(mktemp /tmp/openshell-bench-log.XXXXXX)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)   nproc: $(nproc)"
"$scratch/release/openshell-bench" log "$@" >"$out" 2>/dev/null
awk '/^== Issue 14 targets \(log\) ==$/ {p=1} p && !/^== end of targets ==$/ {print} /^== end of targets ==$/ {p=0}' "$out"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)   full report: $out"
