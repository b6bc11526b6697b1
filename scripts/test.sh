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
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
failed=()
for target in ProjectionsTests LogToolsTests PolicyKitTests EventLogTests GatewayTests CLITests; do
  echo "== swift test: $target"
  log=$(mktemp)
  if timeout 900 swift test --skip-build --filter "^$target\." >"$log" 2>&1; then
    grep -E "^✔ Test run|^􁁛 Test run|Test run with" "$log" | tail -n 1
  else
    grep -E "✘|error" "$log" | head -n 40
    tail -n 5 "$log"
    failed+=("$target")
  fi
  rm -f "$log"
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
