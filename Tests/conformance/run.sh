#!/usr/bin/env bash
# Run the SDK conformance suite against our gateway binary.
#   Tests/conformance/run.sh [--gateway-bin PATH] [extra pytest args...]
# Creates/reuses the venv at $REPO/.build-venv, installs requirements.txt, runs pytest.
# Exit code = pytest's.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$REPO/.build-venv"
GATEWAY_BIN="$REPO/.build/debug/openshell"

PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gateway-bin) GATEWAY_BIN="$2"; shift 2 ;;
    --gateway-bin=*) GATEWAY_BIN="${1#*=}"; shift ;;
    *) PYTEST_ARGS+=("$1"); shift ;;
  esac
done

# Reinstalls only when requirements.txt changed (keeps repeated runs offline and fast).
. "$REPO/scripts/venv.sh"
ensure_venv "$VENV" "$HERE/requirements.txt"

# A relative --gateway-bin is relative to the caller's directory (the script changes directory below).
[[ "$GATEWAY_BIN" = /* ]] || GATEWAY_BIN="$PWD/$GATEWAY_BIN"
if [[ ! -x "$GATEWAY_BIN" ]]; then
  echo "warning: gateway binary not found or not executable: $GATEWAY_BIN (build it with 'swift build')" >&2
fi

cd "$HERE"
# Note: "--gateway-bin=PATH" (one token): pytest pre-scans bare existing paths as test paths
# before conftest options are registered.
set +e
"$VENV/bin/python" -m pytest -c "$HERE/pytest.ini" --rootdir "$HERE" \
  "--gateway-bin=$GATEWAY_BIN" "${PYTEST_ARGS[@]}"
rc=$?
exit $rc
