"""The insights pipeline: one run of three steps, the same code under both deployments.

A run is one job (Pub/Sub's message): its data names a product, its id is the run id. The steps:
  expand       the product's review ids                     (the catalogue, a stand-in)
  reviews      a score for each review, with progress       (the scoring model, a stand-in)
  aggregation  the average score, stored as the run's result (the results store, a stand-in)
Each step has its own timeout (STEP_TIMEOUTS, or the run's own: "timeouts" in its data, seconds
by step); the run as a whole has the job's (Ferry enforces it: `ferry publish --timeout`, or
the worker's --job-timeout). Every call carries an
Idempotency-Key made of the run id and the step (and the review), so a run that starts again
after its worker died repeats no side effect: the stand-ins do each keyed piece of work once.

Lifecycle lines are JSON, one per event: step_started, step_completed (latency_ms, progress),
step_failed (reason), each with the run id, the step and the delivery attempt (retries =
attempt - 1). The worker adds job_started, job_completed, job_failed and idempotent_skip.
"""
import json
import os
import threading
import time
import urllib.request

STEP_TIMEOUTS = {"expand": 5.0, "reviews": 10.0, "aggregation": 5.0}


class StepFailed(Exception):
    """A step that failed or ran out of time: the run is retried (from its first step; the
    keyed calls make the repeat free of side effects)."""


def call(path, body, key):
    request = urllib.request.Request(
        os.environ["SERVICES_URL"] + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": key})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def within(seconds, work):
    """`work()`'s value, or StepFailed when it takes longer than `seconds`."""
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except Exception as error:  # noqa: BLE001 - handed to the caller
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise StepFailed(f"timed out after {seconds:g}s")
    if "error" in outcome:
        raise StepFailed(str(outcome["error"]))
    return outcome["value"]


def run(run_id, attempt, data, log, progress=lambda percent, stage: None):
    """Runs the three steps of one run; raises StepFailed naming the step that failed."""
    given = json.loads(data)
    product = given["product"]
    timeouts = {**STEP_TIMEOUTS, **given.get("timeouts", {})}
    state = {}

    def reviews():
        ids = state["ids"]
        scores = []
        for done, review in enumerate(ids, start=1):
            scores.append(call("/score", {"review": review}, f"{run_id}/reviews/{review}")["score"])
            progress(10 + 80 * done // len(ids), "reviews")
        return scores

    def aggregation():
        result = {"run": run_id, "product": product, "count": len(state["scores"]),
                  "average": round(sum(state["scores"]) / len(state["scores"]), 3)}
        call("/results", result, f"{run_id}/aggregation")
        return result

    steps = [
        ("expand", lambda: call("/expand", {"product": product}, f"{run_id}/expand")["reviews"]),
        ("reviews", reviews),
        ("aggregation", aggregation),
    ]
    for name, work in steps:
        started = time.monotonic()
        log("step_started", run_id=run_id, step=name, attempt=attempt, retries=attempt - 1)
        try:
            value = within(float(timeouts[name]), work)
        except StepFailed as failure:
            log("step_failed", run_id=run_id, step=name, attempt=attempt, retries=attempt - 1, reason=str(failure))
            raise StepFailed(f"step {name}: {failure}") from None
        state["ids" if name == "expand" else "scores" if name == "reviews" else "result"] = value
        percent = {"expand": 10, "reviews": 90, "aggregation": 100}[name]
        progress(percent, name)
        log("step_completed", run_id=run_id, step=name, attempt=attempt, retries=attempt - 1,
            latency_ms=round((time.monotonic() - started) * 1000), progress=percent)
    return state["result"]
