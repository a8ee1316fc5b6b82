#!/usr/bin/env python3
"""The heavy queries' handler, run by `ferry worker --exec`: the question on standard input, the
query's job id in FERRY_JOB_ID, carried into every line here and into the model's
Idempotency-Key (a query run again after its worker died is answered once). The answer goes to
the store, where the query service finds it. Exit 0 (answered), 65 (the model says the question
cannot be answered: failed at once, no retry) or 75 (the model failed: retried after the
backoff, at most 3 attempts)."""
import json
import os
import sys
import urllib.error
import urllib.request

job_id, attempt = os.environ["FERRY_JOB_ID"], int(os.environ.get("FERRY_DELIVERY_ATTEMPT", "1"))
services = os.environ["SERVICES_URL"]


def log(event, **fields):
    print(json.dumps({"event": event, "job_id": job_id, "attempt": attempt, **fields}), flush=True)


def call(method, path, body, key=None):
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    request = urllib.request.Request(services + path, data=json.dumps(body).encode(), method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


question = json.load(sys.stdin)["question"]
log("query_started")
try:
    answer = call("POST", "/answer", {"question": question}, key=job_id)
    call("PUT", f"/answers/{job_id}", answer)
except urllib.error.HTTPError as failed:
    reason = json.loads(failed.read() or b"{}").get("error", "")
    print(f"the model answered {failed.code}: {reason}", file=sys.stderr)
    log("query_failed", status=failed.code)
    sys.exit(65 if failed.code == 422 else 75)
except OSError as unreachable:
    print(f"the model is unreachable: {unreachable}", file=sys.stderr)
    sys.exit(75)
log("query_answered")
