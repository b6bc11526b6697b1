#!/usr/bin/env bash
# Regenerates the committed Swift code for the OpenShell wire contract and the gateway event schema.
#
#   Tools/codegen/generate.sh            # descriptors from the openshell 0.1.5 SDK on PyPI
#   DESCRIPTOR_SET=path.desc Tools/codegen/generate.sh   # use an existing descriptor set
#
# Needs: Debian protobuf-compiler, python3 (venv), the Swift toolchain. It builds protoc-gen-swift
# (swift-protobuf 1.39.0) and protoc-gen-grpc-swift-2 (grpc-swift-protobuf 2.4.1) in a git-ignored
# scratch directory. CI never runs this script: the generated code is committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work="$root/.build-codegen"
mkdir -p "$work"

command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler" >&2; exit 1; }

desc="${DESCRIPTOR_SET:-}"
if [ -z "$desc" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q "openshell==0.1.5" grpcio protobuf googleapis-common-protos
  desc="$work/openshell-0.1.5.desc"
  "$work/venv/bin/python" "$root/Tools/codegen/extract_descriptors.py" "$desc"
fi

build_plugin() { # repo tag product
  local dir="$work/$(basename "$1" .git)"
  [ -d "$dir" ] || git clone -q "$1" "$dir"
  git -C "$dir" checkout -q "$2"
  (cd "$dir" && swift build -c release --product "$3" >/dev/null)
  echo "$dir/.build/release/$3"
}
swift_plugin=$(build_plugin https://github.com/apple/swift-protobuf.git 1.39.0 protoc-gen-swift)
grpc_plugin=$(build_plugin https://github.com/grpc/grpc-swift-protobuf.git 2.4.1 protoc-gen-grpc-swift-2)

api="$root/Sources/OpenShellAPI/Generated"
rm -rf "$api" && mkdir -p "$api"
protoc --descriptor_set_in="$desc" \
  --plugin=protoc-gen-swift="$swift_plugin" \
  --plugin=protoc-gen-grpc-swift="$grpc_plugin" \
  --swift_out="$api" --swift_opt=Visibility=Public \
  --grpc-swift_out="$api" --grpc-swift_opt=Visibility=Public,Client=true,Server=true \
  openshell.proto sandbox.proto datamodel.proto options.proto \
  google/rpc/status.proto google/rpc/error_details.proto
cp "$desc" "$root/Sources/OpenShellAPI/openshell-0.1.5.desc.bin" 2>/dev/null || true
# Our own services beside the contract: inference (Protos/inference.proto) and audit (Protos/audit.proto).
protoc -I "$root/Protos" \
  --plugin=protoc-gen-swift="$swift_plugin" \
  --plugin=protoc-gen-grpc-swift="$grpc_plugin" \
  --swift_out="$api" --swift_opt=Visibility=Public \
  --grpc-swift_out="$api" --grpc-swift_opt=Visibility=Public,Client=true,Server=true \
  inference.proto audit.proto

# The etcd peer of the benchmarks (openshell-loadgen --issue14): etcdserverpb.KV/Put only, client side.
peer="$root/Tools/loadgen/Generated"
rm -rf "$peer" && mkdir -p "$peer"
protoc -I "$root/Protos" \
  --plugin=protoc-gen-swift="$swift_plugin" \
  --plugin=protoc-gen-grpc-swift="$grpc_plugin" \
  --swift_out="$peer" --grpc-swift_out="$peer" --grpc-swift_opt=Client=true,Server=false \
  etcd_kv.proto

events="$root/Sources/Projections/Generated"
rm -rf "$events" && mkdir -p "$events"
protoc -I "$root/Protos" --plugin=protoc-gen-swift="$swift_plugin" \
  --swift_out="$events" --swift_opt=Visibility=Public events.proto
echo "generated: $(find "$api" "$peer" "$events" -name '*.swift' | xargs cat | wc -l) lines"
