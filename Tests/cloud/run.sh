#!/usr/bin/env bash
# Cloud-gateway tests (issue 13): a real OIDC provider (django-oauth-toolkit), nginx as the TLS-terminating
# proxy, our gateway and CLI, the official SDK. Everything listens on 127.0.0.1.
#   Tests/cloud/run.sh [--gateway-bin PATH] [pytest args...]
# Uses the venv $REPO/.build-venv-cloud (requirements.txt). Exit code = pytest's.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$REPO/.build-venv-cloud"
GATEWAY_BIN="$REPO/.build/debug/openshell"
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gateway-bin) GATEWAY_BIN="$2"; shift 2 ;;
    --gateway-bin=*) GATEWAY_BIN="${1#*=}"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
command -v nginx >/dev/null || { echo "nginx is missing: run scripts/setup.sh" >&2; exit 2; }
. "$REPO/scripts/venv.sh"
ensure_venv "$VENV" "$HERE/requirements.txt"
[[ "$GATEWAY_BIN" = /* ]] || GATEWAY_BIN="$PWD/$GATEWAY_BIN"
cd "$HERE"
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
exec "$VENV/bin/python" -m pytest -c "$HERE/pytest.ini" --rootdir "$HERE" "--gateway-bin=$GATEWAY_BIN" "${ARGS[@]}"
