#!/usr/bin/env bash
# The main job on the embedded default (local compute driver): install packages, build, start a local
# gateway, create a sandbox that runs a command and prints its output, then print the sandbox's audit
# timeline from the event log with `openshell-replay`, verify the log, and stop the gateway.
#   PORT=9090 scripts/main-job.sh     # another port if 8080 is taken
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== building (debug; first build takes several minutes)"
swift build 2>&1 | tail -n 2
bin=$(swift build --show-bin-path)
state="${XDG_STATE_HOME:-$HOME/.local/state}/openshell/gateways/openshell"
echo "== openshell gateway start"
"$bin/openshell" gateway start --port "${PORT:-8080}"
"$bin/openshell" status
echo "== openshell sandbox create demo-job --no-keep -- sh -c '…'"
"$bin/openshell" sandbox create demo-job --no-keep -- sh -c 'echo "hello from $(hostname), uid $(id -u), workspace $(pwd)"'
echo "== openshell-replay audit --sandbox demo-job"
"$bin/openshell-replay" audit "$state/log" --sandbox demo-job
echo "== openshell-replay verify"
"$bin/openshell-replay" verify "$state/log"
"$bin/openshell" gateway stop
