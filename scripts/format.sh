#!/usr/bin/env bash
# swift-format over the project's own Swift code with the checked configuration in .swift-format
# (reasons for its choices: README.md, "Formatting"). Generated protobuf/gRPC code is left alone.
#   scripts/format.sh --check   lint; exits 1 on any drift or finding (CI: scripts/test.sh runs it first)
#   scripts/format.sh --fix     rewrite the files in place, then lint what --fix cannot rewrite
# swift-format ships with the toolchain (`swift format`, 6.3.1 here); nothing to install.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  --check | --fix) ;;
  *)
    echo "usage: scripts/format.sh --check | --fix" >&2
    exit 2
    ;;
esac
# The project's Swift files: Sources, Tests, Tools and Package.swift, without generated code
# (Sources/*/Generated/, *.pb.swift, *.grpc.swift: written by Tools/codegen/generate.sh).
files=()
while IFS= read -r -d '' f; do files+=("$f"); done < <(
  find Sources Tests Tools -name '*.swift' -not -path '*/Generated/*' -not -name '*.pb.swift' -not -name '*.grpc.swift' -print0 | sort -z
)
files+=(Package.swift)
if [ "$mode" = --fix ]; then
  swift format format --configuration .swift-format --in-place --parallel "${files[@]}"
fi
# --strict: warnings (formatting drift) fail too.
if ! swift format lint --configuration .swift-format --strict --parallel "${files[@]}"; then
  echo "swift-format: drift or findings above; run scripts/format.sh --fix (and fix by hand what it names after that)" >&2
  exit 1
fi
echo "swift-format: ${#files[@]} files clean"
