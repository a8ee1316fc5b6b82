#!/usr/bin/env python3
"""The review pipeline's steps, one handler for all three, run by `ferry worker --exec`.

Each step is a job of the workflow in review.json. Its input (on standard input) is the
workflow's: {"document": "<ref>", "name"}: the document itself stays in the store and travels by
reference, so every message is small. The step reads the results the steps before it kept from
FERRY_RESULTS_DIR and leaves its own in FERRY_OUTPUT_DIR/result, and its decision in
FERRY_OUTPUT_DIR/decision. Calls to the model carry the step's job id (FERRY_JOB_ID, which has
`#<run>` from a step's second run on) as their Idempotency-Key: a step that runs again after its
worker died does its work once, and a step the supervisor sends back runs afresh.

  extract    the contract's facts (amount, months) from the model
  compare    the facts against the policy: match, mismatch, or uncertain
  supervise  match: proceed. uncertain: run compare again (at most 3 runs: review.json's
             max_attempts). mismatch: block for a person, and proceed once one has approved
             (run.sh approve, which also resumes the workflow).

Exit 0 ends the step with its decision; 75 (the model is unavailable) retries it after the
backoff; 65 fails it at once.
"""
import json
import os
import sys
import urllib.error
import urllib.request

SERVICES = os.environ["SERVICES_URL"]
step = os.environ["FERRY_WORKFLOW_STEP"]
workflow = os.environ["FERRY_WORKFLOW_ID"]
job_id = os.environ["FERRY_JOB_ID"]
output = os.environ["FERRY_OUTPUT_DIR"]


def log(event, **fields):
    print(json.dumps({"event": event, "workflow_id": workflow, "step": step, "job_id": job_id, **fields}), flush=True)


def call(method, path, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(SERVICES + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=60) as answer:
        raw = answer.read()
        return json.loads(raw) if answer.headers.get("Content-Type") == "application/json" else raw.decode()


def earlier(name):
    with open(os.path.join(os.environ["FERRY_RESULTS_DIR"], name)) as result:
        return json.load(result)


def finish(result, decision="proceed"):
    with open(os.path.join(output, "result"), "w") as out:
        json.dump(result, out)
    with open(os.path.join(output, "decision"), "w") as out:
        out.write(decision + "\n")
    log("step_decided", decision=decision)


given = json.load(sys.stdin)
try:
    document = call("GET", "/documents/" + given["document"])
    if step == "extract":
        with open(os.path.join(output, "progress"), "w") as progress:
            progress.write("10 reading\n")
        finish(call("POST", "/extract", {"text": document}, key=job_id))
    elif step == "compare":
        facts = earlier("extract")
        finish(call("POST", "/compare", {"facts": facts, "workflow": workflow, "hint": document}, key=job_id))
    elif step == "supervise":
        comparison = earlier("compare")
        verdict = comparison["verdict"]
        if verdict == "match":
            finish({"accepted": True, "by": "policy"})
        elif verdict == "uncertain":
            finish({"accepted": False}, "retry compare")
        else:
            try:
                approval = call("GET", "/approvals/" + workflow)
                finish({"accepted": True, "by": approval["by"], "overrode": comparison["reasons"]})
            except urllib.error.HTTPError as missing:
                if missing.code != 404:
                    raise
                finish({"accepted": False}, "block needs a person: " + "; ".join(comparison["reasons"]))
    else:
        print(f"no step {step} in this pipeline", file=sys.stderr)
        sys.exit(65)
except urllib.error.HTTPError as refused:
    print(f"{step}: the service answered {refused.code}: {refused.read().decode(errors='replace')}", file=sys.stderr)
    sys.exit(75 if refused.code >= 500 else 65)
except OSError as unreachable:
    print(f"{step}: the service is unreachable: {unreachable}", file=sys.stderr)
    sys.exit(75)
