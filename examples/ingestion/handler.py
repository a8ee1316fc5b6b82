#!/usr/bin/env python3
"""The ingestion example's handler: one document a job, run by `ferry worker --exec`.

The job's data arrives on standard input ({"name": ..., "text": ...}), its id in FERRY_JOB_ID.
The document goes to the parser (a stand-in here) with the job id as its Idempotency-Key, so a
job that runs again after its worker died (kill -9 mid-document) is stored once, not twice.
The exit status tells Ferry the outcome:
  0   ingested
  65  the document cannot be ingested (not text): dead-lettered at once, with this message
  75  the parser is unavailable: tried again after the backoff, at most 3 attempts
"""
import json
import os
import sys
import urllib.error
import urllib.request

job_id = os.environ["FERRY_JOB_ID"]
attempt = os.environ.get("FERRY_DELIVERY_ATTEMPT", "1")


def log(event, **fields):
    # One JSON line a step, carrying the job id (the worker passes it on to its own log).
    print(json.dumps({"event": event, "job_id": job_id, "attempt": int(attempt), **fields}), flush=True)


document = json.load(sys.stdin)
log("parse_started", name=document.get("name"))
request = urllib.request.Request(
    os.environ["PARSER_URL"] + "/ingest",
    data=json.dumps(document).encode(),
    headers={"Content-Type": "application/json", "Idempotency-Key": job_id},
    method="POST",
)
try:
    with urllib.request.urlopen(request, timeout=60) as answer:
        result = json.load(answer)
except urllib.error.HTTPError as refused:
    reason = refused.read().decode(errors="replace")
    if refused.code == 422:
        print(f"unreadable document: {reason}", file=sys.stderr)
        sys.exit(65)
    print(f"the parser answered {refused.code}: {reason}", file=sys.stderr)
    sys.exit(75)
except OSError as unreachable:
    print(f"the parser is unreachable: {unreachable}", file=sys.stderr)
    sys.exit(75)
log("parse_completed", chunks=result["chunks"], replayed=result["replayed"])
