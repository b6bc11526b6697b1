#!/usr/bin/env bash
# The whole test suite: system packages, build, Swift tests (unit, crash, corruption, concurrency,
# full-disk, end-to-end with real gateways, sandboxes and the CLI), the fixture check, and the official
# Python SDK 0.1.5 conformance suite. Each test target runs in its own process (tests that spawn
# daemons and SIGKILL children stay apart from each other), each bounded by a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== build"
swift build --build-tests 2>&1 | tail -n 5
bin=$(swift build --show-bin-path)
# Everything the tests create under $TMPDIR (gateway data dirs, sandboxes, archives, registries) goes
# into one directory that is removed at the end, pass or fail.
TMPDIR=$(mktemp -d /tmp/openshell-tests.XXXXXX)
# Searchable by others (not listable): the tests that run a gateway as `nobody` keep their files below.
chmod 0711 "$TMPDIR"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
failed=()
# Runs `swift test` for one filter; prints the summary, or the failures.
run_tests() {
  local name=$1 filter=$2 log
  log=$(mktemp)
  if timeout 900 swift test --skip-build --filter "$filter" >"$log" 2>&1; then
    grep -E "^✔ Test run|^􁁛 Test run|Test run with" "$log" | tail -n 1
  else
    # grep -m, not `| head`: under pipefail a closed pipe (SIGPIPE, 141) would end the whole run.
    grep -m 40 -E "✘|error" "$log" || true
    tail -n 5 "$log"
    failed+=("$name")
  fi
  rm -f "$log"
}
for target in ProjectionsTests LogToolsTests PolicyKitTests EventLogTests; do
  echo "== swift test: $target"
  run_tests "$target" "^$target\."
done
# The gateway and CLI tests drive real daemons, sandboxes, ssh and unprivileged users, partly through
# synchronous process calls; run together, their suites hold Swift's cooperative threads (one per core)
# and starve each other's gRPC deadlines and timed checks. One suite at a time.
all_tests=$(swift test list --skip-build 2>/dev/null || true)
for target in GatewayTests CLITests; do
  suites=$(grep "^$target\." <<<"$all_tests" | sed 's|/.*||' | sort -u || true)
  [ -n "$suites" ] || { echo "no $target suites listed"; failed+=("$target"); }
  for suite in $suites; do
    echo "== swift test: $suite"
    run_tests "$suite" "^$suite/"
  done
done
echo "== fixtures"
"$bin/openshell-fixtures" check --out Fixtures
echo "== Python SDK conformance (openshell==0.1.5)"
Tests/conformance/run.sh --gateway-bin "$bin/openshell" -q || failed+=("conformance")
echo "== cloud gateways: OIDC provider, nginx, CLI login, SDK bearer tokens"
Tests/cloud/run.sh --gateway-bin "$bin/openshell" -q || failed+=("cloud")
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all tests passed"
