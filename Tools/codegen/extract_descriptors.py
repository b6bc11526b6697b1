"""Reproduce the OpenShell wire contract's FileDescriptorSet from the `openshell` Python SDK.

Usage: python extract_descriptors.py OUT.desc

Walks the SDK's generated modules (openshell._proto.*_pb2) and google.rpc status/error_details,
emitting every file after its dependencies (depth-first), each as the exact `serialized_pb` the SDK
embeds. See ../shared/reference/wire-contract.md §1 for the procedure and reference checksums.
"""
import hashlib
import sys

from google.protobuf import descriptor_pb2


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: extract_descriptors.py OUT.desc", file=sys.stderr)
        return 2
    from openshell._proto import options_pb2, datamodel_pb2, sandbox_pb2, openshell_pb2  # noqa: F401
    from google.rpc import status_pb2, error_details_pb2  # noqa: F401

    out = descriptor_pb2.FileDescriptorSet()
    seen = set()

    def visit(fd):
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            visit(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        proto.ParseFromString(fd.serialized_pb)
        out.file.append(proto)

    for module in (options_pb2, datamodel_pb2, sandbox_pb2, openshell_pb2, status_pb2, error_details_pb2):
        visit(module.DESCRIPTOR)
    data = out.SerializeToString()
    with open(sys.argv[1], "wb") as f:
        f.write(data)
    print(f"{len(out.file)} files, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
