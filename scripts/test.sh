#!/usr/bin/env bash
# The whole test suite: system packages, build, Swift tests (unit, crash, corruption, concurrency,
# full-disk, end-to-end), the fixture check, and the official Python SDK conformance suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build --build-tests 2>&1 | tail -n 30
swift test --skip-build 2>&1 | tail -n 60
bin=$(swift build --show-bin-path)
"$bin/openshell-fixtures" check --out Fixtures
if [ -x Tests/conformance/run.sh ] && [ -x "$bin/openshell" ]; then
  Tests/conformance/run.sh --gateway-bin "$bin/openshell"
fi
