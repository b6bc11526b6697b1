#!/usr/bin/env bash
# The main job on the embedded default (local compute driver): install packages, build, start a local
# gateway, create a sandbox that runs a command and prints its output, then print the sandbox's audit
# timeline from the event log with `openshell-replay`, stop the gateway, and verify the log and its signed
# audit checkpoints.
#   PORT=9090 scripts/main-job.sh     # another port if 8080 is taken
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== building (debug; the first build takes about 8 minutes on a quiet 2-core machine, 30 under heavy load)"
# The build's progress every 20 s (a silent half hour looks hung); on failure its last lines.
build_log=$(mktemp /tmp/openshell-build.XXXXXX)
swift build >"$build_log" 2>&1 &
build_pid=$!
while kill -0 "$build_pid" 2>/dev/null; do
  sleep 20
  step=$(grep -oE '^\[[0-9]+/[0-9]+\]' "$build_log" | tail -n 1 || true)
  if [ -n "$step" ]; then echo "   $(date +%H:%M:%S) build step $step"; fi
done
if ! wait "$build_pid"; then
  tail -n 30 "$build_log"
  echo "error: the build failed (full output: $build_log)" >&2
  exit 1
fi
tail -n 1 "$build_log"
rm -f "$build_log"
bin=$(swift build --show-bin-path)
state="${XDG_STATE_HOME:-$HOME/.local/state}/openshell/gateways/openshell"
echo "== openshell gateway start"
"$bin/openshell" gateway start --port "${PORT:-8080}"
"$bin/openshell" status
echo "== openshell sandbox create demo-job --no-keep -- sh -c '…'"
"$bin/openshell" sandbox create demo-job --no-keep -- sh -c 'echo "hello from $(hostname), uid $(id -u), workspace $(pwd)"'
echo "== openshell-replay audit --sandbox demo-job"
"$bin/openshell-replay" audit "$state/log" --sandbox demo-job
echo "== openshell gateway stop"
"$bin/openshell" gateway stop
# Verified once the gateway is stopped: its writer lock is released, so the file's structure is walked too,
# and the shutdown checkpoint signs every record before it. The public key is the gateway's own copy here (a
# real audit uses one kept off the host).
echo "== openshell-replay verify $state/log --public-key $state/keys/audit-checkpoint.pub.pem"
"$bin/openshell-replay" verify "$state/log" --public-key "$state/keys/audit-checkpoint.pub.pem"
