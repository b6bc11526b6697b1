#!/usr/bin/env bash
# Long fault campaigns against the built gateway (issue 17). The test suite runs small, fast versions of each
# (GatewayTests.DamagedLogStartupTests, DiskFullTests, SupervisorTakeoverTests, SandboxOrphanTests,
# SubscriptionEndTests, KeyedSerialQueueTests, ObjectLimitsTests; CLITests.DamagedLogToolTests, DescriptorLimitTests,
# StartErrorTests); this script runs them at scale and prints counts.
#
#   scripts/faults.sh flips      # FLIPS byte flips + truncations of a real log: start-up and verify outcomes
#   scripts/faults.sh crash      # CRASHES gateway SIGKILLs during writes: acknowledged creates lost, verify
#   scripts/faults.sh diskfull   # 16 MiB tmpfs data dir filled up: RPC status codes, data.mdb growth (root)
#   scripts/faults.sh fdlimit    # gateway under prlimit --nofile=64: connections held, EMFILE reports, recovery
#   scripts/faults.sh churn      # WARM + CYCLES sandbox create/delete cycles: RSS after warm-up and at the end;
#                                # fails when it grew more than 20 % or a sandbox process is left over
#   scripts/faults.sh all
#
# Environment: BIN (default .build/debug), FLIPS (330), CRASHES (50), WARM (50), CYCLES (300), PORT (18480).
# Everything happens under a scratch directory (printed) on 127.0.0.1; nothing outside it is touched.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/debug}
FLIPS=${FLIPS:-330}
CRASHES=${CRASHES:-50}
WARM=${WARM:-50}
CYCLES=${CYCLES:-300}
PORT=${PORT:-18480}
ROOT=$(mktemp -d /tmp/openshell-faults.XXXXXX)
export XDG_CONFIG_HOME=$ROOT/config XDG_STATE_HOME=$ROOT/state NO_COLOR=1 no_proxy=127.0.0.1 NO_PROXY=127.0.0.1
echo "scratch: $ROOT"
[ -x "$BIN/openshell" ] && [ -x "$BIN/openshell-replay" ] || { echo "build first (swift build), or set BIN" >&2; exit 1; }

# The fixture's READY sandbox is started by each case's gateway (sandboxes outlive their gateway by design):
# end those processes of this scratch dir, by pid, after each case.
# Its /etc overlay stays mounted when the gateway that mounted it is gone: unmount what lies under the directory.
reap() {
  for p in $(pgrep -f "$1/sandboxes/" || true); do kill -9 "$p" 2>/dev/null; done
  for m in $(awk -v r="$1/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null; done
}

flips() {
  echo "== byte-flip campaign: $FLIPS flips and 40 truncations"
  local base=$ROOT/flips-base
  mkdir -p "$base"
  cp -r Fixtures/sandbox-lifecycle/log "$base/log"
  # Give it a gateway's own records and snapshot on top of the fixture.
  timeout 20 "$BIN/openshell" gateway serve --data-dir "$base" --port "$PORT" --plaintext >"$ROOT/base.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$ROOT/base.log" 2>/dev/null && break; sleep 0.1; done
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  # Each case's gateway appends records of its own at start (it relaunches the fixture's READY sandbox), so cases
  # are compared with the base as of the base's head: the records a flip or a truncation could have damaged.
  local baseseq; baseseq=$("$BIN/openshell-replay" verify "$base/log" 2>/dev/null | sed -nE 's/.*head seq ([0-9]+).*/\1/p' | head -1)
  "$BIN/openshell-replay" state "$base/log" --at "$baseseq" >"$ROOT/expected.json" 2>/dev/null
  local size; size=$(stat -c %s "$base/log/data.mdb")
  local refused=0 identical=0 fellback=0 crashed=0 other=0 silent=0 verify_detected=0 verify_passed=0 verify_crashed=0
  for n in $(seq 1 $((FLIPS + 40))); do
    local d=$ROOT/f; rm -rf "$d"; mkdir -p "$d/log"; cp -r "$base/pki" "$base/keys" "$d/" 2>/dev/null
    if [ "$n" -le "$FLIPS" ]; then
      python3 - "$base/log/data.mdb" "$d/log/data.mdb" "$n" <<'EOF'
import sys, random
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = bytearray(open(src, 'rb').read()); r = random.Random(n)
i = r.randrange(len(b)); b[i] ^= 1 << r.randrange(8)
open(dst, 'wb').write(b)
EOF
    else
      head -c $(( (n - FLIPS) * size / 41 )) "$base/log/data.mdb" >"$d/log/data.mdb"
    fi
    "$BIN/openshell-replay" verify "$d/log" >/dev/null 2>&1; local v=$?
    case $v in 0) verify_passed=$((verify_passed + 1)) ;; 2) verify_detected=$((verify_detected + 1)) ;; *) verify_crashed=$((verify_crashed + 1)) ;; esac
    local slog=$ROOT/serve-$n.log
    # Not under timeout(1): it would deliver a second SIGTERM after the gateway's clean stop.
    "$BIN/openshell" gateway serve --data-dir "$d" --port "$PORT" --plaintext >"$slog" 2>&1 &
    pid=$!
    for _ in $(seq 400); do grep -q "listening on\|error:" "$slog" 2>/dev/null && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && ! grep -q "listening on\|error:" "$slog" && { echo "  start-up hung: case $n"; kill -9 "$pid"; }
    cp "$slog" "$ROOT/serve.log"
    if grep -q "listening on" "$ROOT/serve.log"; then
      kill -TERM "$pid"; wait "$pid" 2>/dev/null; local rc=$?; cp "$slog" "$ROOT/serve.log"
      if [ "$rc" -ge 128 ]; then crashed=$((crashed + 1)); cp "$d/log/data.mdb" "$ROOT/crash-$n.mdb"; cp "$ROOT/serve.log" "$ROOT/crash-$n.log"
        echo "  crashed at shutdown: case $n (exit $rc; $ROOT/crash-$n.{mdb,log})";
      elif [ "$v" -eq 0 ] && "$BIN/openshell-replay" state "$d/log" --at "$baseseq" 2>/dev/null | cmp -s - "$ROOT/expected.json"; then identical=$((identical + 1));
      elif grep -q "rebuilt from" "$ROOT/serve.log" && "$BIN/openshell-replay" state "$d/log" --at "$baseseq" 2>/dev/null | cmp -s - "$ROOT/expected.json"; then fellback=$((fellback + 1));
      else silent=$((silent + 1)); echo "  silently accepted: case $n (verify exit $v)"; fi
    else
      wait "$pid" 2>/dev/null; local rc=$?
      if [ "$rc" -ge 128 ]; then crashed=$((crashed + 1)); echo "  start-up crashed: case $n (exit $rc)";
      elif grep -q "refusing to serve\|refusing to start" "$ROOT/serve.log"; then refused=$((refused + 1));
      else other=$((other + 1)); echo "  start-up failed otherwise: case $n: $(grep -m1 "error:" "$ROOT/serve.log" || tail -1 "$ROOT/serve.log")"; fi
    fi
    rm -f "$slog"
    reap "$d"
  done
  reap "$base"
  echo "start-up: $refused refused with the message, $identical started with identical state (verify passes), $fellback fell back from a damaged snapshot with a warning (same state), $silent silently accepted, $crashed crashed, $other failed otherwise"
  echo "verify:   $verify_detected detected, $verify_passed passed, $verify_crashed crashed"
}

crash() {
  echo "== crash loop: $CRASHES SIGKILLs of a gateway during CreateProvider calls"
  local d=$ROOT/crash lost=0 acked_total=0 bad=0
  mkdir -p "$d"
  for n in $(seq 1 "$CRASHES"); do
    "$BIN/openshell" gateway serve --data-dir "$d" --port "$PORT" --plaintext >"$ROOT/crash.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do grep -q "listening on\|error:" "$ROOT/crash.log" 2>/dev/null && break; sleep 0.05; done
    grep -q "listening on" "$ROOT/crash.log" || { echo "  start $n failed: $(tail -1 "$ROOT/crash.log")"; bad=$((bad + 1)); kill -9 "$pid" 2>/dev/null; continue; }
    : >"$ROOT/acked"
    for i in $(seq 1 10); do
      ( "$BIN/openshell" provider create --gateway-endpoint "http://127.0.0.1:$PORT" --name "c$n-$i" --type gh --credential GITHUB_TOKEN=t >/dev/null 2>&1 && echo "c$n-$i" >>"$ROOT/acked" ) &
    done
    sleep 0.$((RANDOM % 5 + 1))
    kill -9 "$pid"; wait 2>/dev/null
    acked_total=$((acked_total + $(wc -l <"$ROOT/acked")))
    "$BIN/openshell-replay" state "$d/log" >"$ROOT/state.json" 2>/dev/null || { bad=$((bad + 1)); continue; }
    while read -r name; do grep -q "\"$name\"" "$ROOT/state.json" || lost=$((lost + 1)); done <"$ROOT/acked"
  done
  "$BIN/openshell-replay" verify "$d/log" >/dev/null 2>&1 && v=ok || v=FAILED
  echo "crash loop: $CRASHES kills, $acked_total acknowledged creates, $lost lost, $bad starts or replays failed, final verify $v"
}

diskfull() {
  echo "== full disk: 16 MiB tmpfs"
  local m=$ROOT/tmpfs
  mkdir -p "$m"
  if ! mount -t tmpfs -o size=16m tmpfs "$m" 2>/dev/null; then echo "SKIPPED: cannot mount a tmpfs (needs root)"; return; fi
  "$BIN/openshell" gateway serve --data-dir "$m/gw" --port "$PORT" --plaintext >"$ROOT/df.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$ROOT/df.log" 2>/dev/null && break; sleep 0.1; done
  local ep="--gateway-endpoint http://127.0.0.1:$PORT"
  for i in $(seq 1 20); do "$BIN/openshell" provider create $ep --name "pre-$i" --type gh --credential GITHUB_TOKEN=t >/dev/null 2>&1; done
  dd if=/dev/zero of="$m/filler" bs=64k 2>/dev/null
  local before; before=$(stat -c %s "$m/gw/log/data.mdb")
  local codes=""
  for i in $(seq 1 20); do
    "$BIN/openshell" provider create $ep --name "df-$i" --type gh --credential GITHUB_TOKEN=t >"$ROOT/prov.out" 2>&1 && codes+="OK " \
      || codes+="$(grep -o "disk is full\|INTERNAL\|UNAVAILABLE\|No space" "$ROOT/prov.out" | head -1 | tr ' ' '_') "
  done
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  local after; after=$(stat -c %s "$m/gw/log/data.mdb")
  echo "CreateProvider x20 on a full disk: $(echo "$codes" | tr ' ' '\n' | sort | uniq -c | tr '\n' ' ')"
  echo "last answer: $(tail -1 "$ROOT/prov.out")"
  echo "data.mdb: $before bytes before, $after after the shutdown snapshot; paths in errors: $(grep -c "$m" "$ROOT/prov.out")"
  umount -l "$m"
}

fdlimit() {
  echo "== descriptor limit: gateway under prlimit --nofile=64:64, 200 connections held"
  local d=$ROOT/fd
  prlimit --nofile=64:64 -- "$BIN/openshell" gateway serve --data-dir "$d" --port "$PORT" --plaintext >"$ROOT/fd.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$ROOT/fd.log" 2>/dev/null && break; sleep 0.1; done
  python3 - "$PORT" <<'EOF'
import socket, sys, time, urllib.request
port = int(sys.argv[1]); held = []
for _ in range(200):
    try: held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError: pass
print(f"held {len(held)} connections"); time.sleep(5)
for s in held: s.close()
for _ in range(40):
    try:
        print("after release: /healthz", urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status); break
    except Exception: time.sleep(0.25)
EOF
  echo "EMFILE reports logged: $(grep -c "RESOURCE_EXHAUSTED: cannot accept" "$ROOT/fd.log") (at most one a minute)"
  grep "descriptor limit" "$ROOT/fd.log" | head -1
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
}

churn() {
  echo "== churn soak: $WARM warm-up and $CYCLES measured sandbox create/delete cycles (real sandboxes)"
  local d=$ROOT/churn ep="--gateway-endpoint http://127.0.0.1:$PORT"
  "$BIN/openshell" gateway serve --data-dir "$d" --port "$PORT" --plaintext >"$ROOT/churn.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do grep -q "listening on" "$ROOT/churn.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$ROOT/churn.log" || { echo "FAILED: the gateway did not start: $(tail -1 "$ROOT/churn.log")"; kill -9 "$pid"; return 1; }
  rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
  local start failed=0; start=$(rss)
  for i in $(seq 1 "$WARM"); do "$BIN/openshell" sandbox create $ep "warm-$i" --no-keep -- true >/dev/null 2>&1 || failed=$((failed + 1)); done
  local warm; warm=$(rss)
  for i in $(seq 1 "$CYCLES"); do
    "$BIN/openshell" sandbox create $ep "churn-$i" --no-keep -- true >"$ROOT/churn-create.out" 2>&1 \
      || { failed=$((failed + 1)); [ -s "$ROOT/churn-fail.txt" ] || cp "$ROOT/churn-create.out" "$ROOT/churn-fail.txt"; }
    [ $((i % 100)) -eq 0 ] && echo "  cycle $i: RSS $(rss) KiB"
  done
  local end; end=$(rss)
  local left; left=$("$BIN/openshell" sandbox list $ep 2>/dev/null | grep -c "churn-\|warm-")
  local fds; fds=$(ls "/proc/$pid/fd" | wc -l)
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  local orphans; orphans=$(pgrep -f "$d/sandboxes/" | wc -l)
  reap "$d"
  local growth=$(( (end - warm) * 100 / warm ))
  echo "RSS at start ${start} KiB, after $WARM warm-up cycles ${warm} KiB, after $CYCLES more ${end} KiB: ${growth}% growth (limit 20%)"
  echo "failed creates: $failed; sandboxes left listed: $left; gateway descriptors at the end: $fds; orphan processes after stop: $orphans"
  [ -s "$ROOT/churn-fail.txt" ] && echo "first failed create: $(tail -1 "$ROOT/churn-fail.txt")"
  [ "$growth" -le 20 ] && [ "$orphans" -eq 0 ] || { echo "FAILED"; return 1; }
}

case ${1:-all} in
  flips) flips ;; crash) crash ;; diskfull) diskfull ;; fdlimit) fdlimit ;; churn) churn || exit 1 ;;
  all) flips; crash; diskfull; fdlimit; churn || exit 1 ;;
  *) sed -n 2,15p "$0"; exit 2 ;;
esac
