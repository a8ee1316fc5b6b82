#!/usr/bin/env python3
"""The upload pipeline's handler, run by `ferry worker --exec`: one uploaded PDF a job.

The job's data (standard input) is {"file": "<ref>", "name", "size"}: the file itself stays in the
object store. The job's status shows where it is, as stage and percent, through the progress
file Ferry reads (FERRY_OUTPUT_DIR/progress):
  validated 10, parsing 20, parsed 30, chunking 45, chunked 55, embedding 70, embedded 100.
The embedding is keyed by the job id (a job run again after its worker died embeds once).
Exit 0 (embedded), 65 (not a PDF after all: dead-lettered at once) or 75 (the file cannot be
read now: retried after 3 s, then 6 s, and dead-lettered after the third attempt).
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

services = os.environ["SERVICES_URL"]
job_id, user = os.environ["FERRY_JOB_ID"], os.environ.get("FERRY_JOB_KEY", "")
attempt = int(os.environ.get("FERRY_DELIVERY_ATTEMPT", "1"))
STAGE_SECONDS = float(os.environ.get("STAGE_SECONDS", "0.5"))


def stage(name, percent):
    with open(os.path.join(os.environ["FERRY_OUTPUT_DIR"], "progress"), "a") as progress:
        progress.write(f"{percent} {name}\n")
    print(json.dumps({"event": "stage", "job_id": job_id, "user": user, "attempt": attempt, "stage": name,
                      "percent": percent}), flush=True)
    time.sleep(STAGE_SECONDS)  # Ferry reads the progress file about twice a second


upload = json.load(sys.stdin)
with urllib.request.urlopen(f"{services}/objects/{upload['file']}", timeout=60) as answer:
    pdf = answer.read()
if not pdf.startswith(b"%PDF-"):
    print(f"{upload['name']} is not a PDF", file=sys.stderr)
    sys.exit(65)
stage("validated", 10)
stage("parsing", 20)
words = pdf.split()
stage("parsed", 30)
stage("chunking", 45)
chunks = max(1, len(words) // 50)
stage("chunked", 55)
stage("embedding", 70)
request = urllib.request.Request(
    services + "/embed", method="POST", data=json.dumps({"ref": upload["file"], "user": user, "chunks": chunks}).encode(),
    headers={"Content-Type": "application/json", "Idempotency-Key": job_id})
try:
    with urllib.request.urlopen(request, timeout=60) as answer:
        json.load(answer)
except urllib.error.HTTPError as refused:
    print(f"{upload['name']}: {json.loads(refused.read() or b'{}').get('error', refused.code)}", file=sys.stderr)
    sys.exit(75)
stage("embedded", 100)
