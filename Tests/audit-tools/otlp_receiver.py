#!/usr/bin/env python3
"""A real OTLP/gRPC logs receiver for the export tests (issue 12), built on opentelemetry-proto + grpcio.

    otlp_receiver.py OUT.jsonl

Serves opentelemetry.proto.collector.logs.v1.LogsService/Export on 127.0.0.1 (an ephemeral port, printed
as "listening PORT" on stdout) and appends every received log record to OUT.jsonl as one JSON object:
{"body", "severity_number", "severity_text", "time_unix_nano", "attributes": {k: v}, "resource": {k: v},
"scope"}. Runs until killed.
"""
import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        lines = []
        for rl in request.resource_logs:
            resource = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    lines.append(json.dumps({
                        "body": any_value(r.body),
                        "severity_number": r.severity_number,
                        "severity_text": r.severity_text,
                        "time_unix_nano": r.time_unix_nano,
                        "attributes": {kv.key: any_value(kv.value) for kv in r.attributes},
                        "resource": resource,
                        "scope": sl.scope.name,
                    }, sort_keys=True))
        with self.lock:
            with open(self.out, "a", encoding="utf-8") as f:
                for line in lines:
                    f.write(line + "\n")
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(sys.argv[1]), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
