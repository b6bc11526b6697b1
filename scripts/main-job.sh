#!/usr/bin/env bash
# The main job on the embedded default: build, write a scripted gateway history into a fresh
# LMDB/zstd event log, then print `openshell-replay audit` and `verify` of it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product openshell-replay --product openshell-fixtures 2>&1 | tail -n 3
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
"$bin/openshell-fixtures" generate --out "$work" --scenario provider-rotation
echo "== openshell-replay audit $work/provider-rotation/log"
"$bin/openshell-replay" audit "$work/provider-rotation/log"
echo "== openshell-replay verify"
"$bin/openshell-replay" verify "$work/provider-rotation/log"
