#!/usr/bin/env python3
"""The pipeline as a pull worker's handler: `ferry worker --exec "python3 exec_handler.py"`.
The job's data on standard input; exit 0 (done) or 75 (a step failed: retried after the backoff).
Progress goes to FERRY_OUTPUT_DIR/progress, so `ferry job status` shows the step and percent."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline  # noqa: E402


def log(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def progress(percent, stage):
    with open(os.path.join(os.environ["FERRY_OUTPUT_DIR"], "progress"), "a") as out:
        out.write(f"{percent} {stage}\n")


try:
    result = pipeline.run(os.environ["FERRY_JOB_ID"], int(os.environ["FERRY_DELIVERY_ATTEMPT"]), sys.stdin.read(),
                          log, progress)
except pipeline.StepFailed as failure:
    print(failure, file=sys.stderr)
    sys.exit(75)
log("run_result", run_id=os.environ["FERRY_JOB_ID"], result=result)
