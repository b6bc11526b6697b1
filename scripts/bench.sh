#!/usr/bin/env bash
# Issue 14 benchmark table: builds the benchmarks in release mode (their own scratch directory, so the debug
# build is untouched), runs them one after the other and prints ONE table: measure, ours, peer, ratio,
# target, met. The full reports (every table, load average, settings) are kept in the files named at the end.
#
#   log rows          openshell-bench log: the event log beside SQLite through GRDB, in the same run
#   request-path rows openshell-loadgen --issue14: GetSandbox / CreateSandbox over mTLS beside etcd Put
#                     (Debian etcd-server, started on loopback, plaintext), restart time of
#                     `openshell gateway serve` on a 1M-event log, its RSS idle and with 10k sandboxes
#   create -> READY   openshell-sandbox-bench: CreateSandbox until READY with the local compute driver
#
# Usage: scripts/bench.sh [--quick] [openshell-bench log options, e.g. --events 200000 --seconds 2]
#   --quick: short cells everywhere (100k-event logs, 1 s cells, 1k sandboxes for RSS, 10 sandboxes to READY)
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=${BENCH_SCRATCH:-.build-bench}
quick=0
if [ "${1:-}" = --quick ]; then quick=1; fi
if [ ! -d "$scratch" ] && [ -d .build ]; then cp -a .build "$scratch"; fi  # reuse dependency checkouts
for product in openshell-bench openshell-loadgen openshell openshell-sandbox openshell-sandbox-launch openshell-sandbox-bench; do
  swift build --scratch-path "$scratch" -c release --product "$product" 2>&1 | tail -n 1
done
bin="$scratch/release"
command -v etcd >/dev/null || { echo "etcd missing: run scripts/setup.sh (Debian etcd-server)" >&2; exit 1; }
logout=$(mktemp /tmp/openshell-bench-log.XXXXXX)
reqout=$(mktemp /tmp/openshell-bench-requests.XXXXXX)
readyout=$(mktemp /tmp/openshell-bench-ready.XXXXXX)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)   nproc: $(nproc)"
"$bin/openshell-bench" log "$@" >"$logout" 2>/dev/null
echo "load after log bench: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $quick = 1 ]; then
  "$bin/openshell-loadgen" --issue14 --duration 1 --events 100000 --rss-sandboxes 1000 --restarts 3 >"$reqout" 2>&1
  "$bin/openshell-sandbox-bench" --count 10 --execs 1 >"$readyout" 2>&1
else
  "$bin/openshell-loadgen" --issue14 --duration 5 --events 1000000 --rss-sandboxes 10000 --restarts 3 >"$reqout" 2>&1
  "$bin/openshell-sandbox-bench" --count 50 --execs 1 >"$readyout" 2>&1
fi
echo "load after request path: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$logout" "$reqout" "$readyout" <<'EOF'
import re, sys
rows = []
for path in sys.argv[1:3]:
    inside = False
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("== Issue 14 targets"):
            inside, seen = True, 0
            continue
        if line.startswith("== end of targets"):
            inside = False
            continue
        if inside:
            seen += 1
            if seen > 2 and line.strip():  # skip the header and the dashes
                rows.append(re.split(r" {2,}", line.strip()))
ready = open(sys.argv[3], encoding="utf-8").read()
m = re.search(r"CreateSandbox → READY: p50 ([0-9.]+) ms, p90 [0-9.]+ ms, p99 ([0-9.]+) ms", ready)
if m:
    p50, p99 = float(m.group(1)), float(m.group(2))
    rows.append(["CreateSandbox -> READY (local driver), p50 / p99", f"{p50:.1f} / {p99:.1f} ms", "-", "-",
                 "≤ 25 / 40 ms", "yes" if p50 <= 25 and p99 <= 40 else "NO"])
else:
    rows.append(["CreateSandbox -> READY (local driver), p50 / p99", "failed (see report)", "-", "-", "≤ 25 / 40 ms", "NO"])
head = ["measure", "ours", "peer", "ratio", "target", "met"]
rows = [r + ["?"] * (6 - len(r)) for r in rows]
w = [max(len(x[i]) for x in [head] + rows) for i in range(6)]
def line(cells):
    return "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells))
print("== Issue 14 targets ==")
print(line(head))
print("  ".join("-" * n for n in w))
for r in rows:
    print(line(r))
EOF
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)   full reports: $logout $reqout $readyout"
