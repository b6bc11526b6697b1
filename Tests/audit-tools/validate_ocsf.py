#!/usr/bin/env python3
"""Validates OCSF events (one JSON object a line) against the OCSF schema (issue 12).

    validate_ocsf.py FILE.jsonl [--version 1.5.0] [--require-classes 1007,3002,...]

Each event is checked with jsonschema (draft 2020-12) against the JSON Schema that ocsf-json-schema
generates from its packaged, compiled OCSF schema for the event's class_uid and the profiles named in
metadata.profiles (additionalProperties false: an unknown field fails, as do a missing required field,
a wrong type and an id outside its enum). On top: type_uid = class_uid * 100 + activity_id and
metadata.version is the version validated against. Prints one summary line; exit 1 on any failure.
"""
import argparse
import collections
import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--version", default="1.5.0")
    ap.add_argument("--require-classes", default="", help="comma-separated class_uids that must appear")
    args = ap.parse_args()

    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=args.version))
    validators = {}
    counts = collections.Counter()
    failures = []
    with open(args.file, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    for n, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
            uid = event["class_uid"]
            profiles = tuple(sorted(event.get("metadata", {}).get("profiles", [])))
            key = (uid, profiles)
            if key not in validators:
                name = schema.lookup_class_name_from_uid(class_uid=uid)
                validators[key] = Draft202012Validator(schema.get_class_schema(class_name=name, profiles=list(profiles)))
            errors = sorted(validators[key].iter_errors(event), key=lambda e: list(e.path))
            problems = [f"{'/'.join(map(str, e.path)) or '(event)'}: {e.message}" for e in errors]
            if event.get("type_uid") != uid * 100 + event.get("activity_id", -1):
                problems.append(f"type_uid {event.get('type_uid')} != class_uid*100+activity_id")
            if event.get("metadata", {}).get("version") != args.version:
                problems.append(f"metadata.version {event.get('metadata', {}).get('version')} != {args.version}")
            if problems:
                failures.append(f"line {n} ({event.get('metadata', {}).get('event_code')}): " + "; ".join(problems[:5]))
            counts[uid] += 1
        except Exception as e:  # a line that is not JSON, or a class the schema lacks
            failures.append(f"line {n}: {type(e).__name__}: {e}")
    missing = [c for c in args.require_classes.split(",") if c and int(c) not in counts]
    for f in failures[:20]:
        print("INVALID", f)
    if missing:
        print("MISSING classes", ",".join(missing))
    classes = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
    print(f"ocsf {args.version}: {len(lines)} events, {len(lines) - len(failures)} valid, {len(failures)} invalid; classes {classes}")
    return 1 if failures or missing or not lines else 0


if __name__ == "__main__":
    sys.exit(main())
