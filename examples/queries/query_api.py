#!/usr/bin/env python3
"""The query service: what callers talk to, in front of Ferry. Each query gets a job id at once
(`q-…`), carried into every log line here, into the job Ferry runs, the handler's lines and
the model's Idempotency-Key. A short query (6 words or fewer) is answered inline, in the
request; a longer one is published as a Ferry job through `ferry serve` and answered 202, and
the caller polls it:

  POST /queries {"question"}     200 {job_id, mode: inline, state: completed, answer}, or
                                 202 {job_id, mode: async, state: pending, status_url}
  GET  /queries/<id>             {job_id, state: pending | processing | completed | failed |
                                 cancelled, answer, error: {class, message}, retry: {will_retry,
                                 next_attempt_at, attempts_made, attempts_left}}; Retry-After
                                 while it is not finished
  POST /queries/<id>/retry       a failed query runs again (202), else 409
  POST /queries/<id>/cancel      a pending or processing query is cancelled (202), else 409

Settings (environment): FERRY_API (ferry serve's URL), FERRY_API_KEY, QUEUE (queries),
SERVICES_URL (the model), MAX_ATTEMPTS (3). Usage: query_api.py PORT (0 picks a free one);
prints "listening on http://127.0.0.1:PORT".
"""
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FERRY_API = os.environ["FERRY_API"].rstrip("/")
QUEUE = os.environ.get("QUEUE", "queries")
SERVICES = os.environ["SERVICES_URL"]
MAX_ATTEMPTS = int(os.environ.get("MAX_ATTEMPTS", "3"))
inline = {}  # the inline answers, by job id: found again like any query


def log(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def http(method, url, body=None, headers=None):
    """(status, JSON body, headers) of a request; an HTTP error is an answer too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else {}, answer.headers
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else {}, error.headers


def ferry(method, path, body=None):
    return http(method, f"{FERRY_API}/v1/queues/{QUEUE}/jobs{path}", body,
                {"Authorization": "Bearer " + os.environ["FERRY_API_KEY"]})


def status(job_id):
    """A query as callers see it: Ferry's job status in the workers' group, mapped."""
    if job_id in inline:
        return 200, inline[job_id], None
    code, job, headers = ferry("GET", "/" + job_id)
    if code == 404:
        return 404, {"job_id": job_id, "error": {"class": "not_found", "message": "no such query"}}, None
    group = (job.get("groups") or [{}])[0]
    ferry_state = group.get("state", "queued")
    state = {"running": "processing", "succeeded": "completed", "dead": "failed",
             "cancelled": "cancelled", "deleted": "cancelled"}.get(ferry_state, "pending")
    view = {"job_id": job_id, "mode": "async", "state": state, "attempts": group.get("attempts", 0)}
    if group.get("error_class") and state not in ("completed", "cancelled"):
        made = group.get("attempts", 0)
        will_retry = bool(group.get("retryable")) and state not in ("failed", "cancelled")
        view["error"] = {"class": group["error_class"], "message": group.get("last_error", "")}
        view["retry"] = {"will_retry": will_retry, "next_attempt_at": group.get("next_attempt_at"),
                         "attempts_made": made, "attempts_left": max(MAX_ATTEMPTS - made, 0) if will_retry else 0}
        if state == "failed":
            view["retry"]["how"] = f"POST /queries/{job_id}/retry once the cause is fixed"
    if state == "completed":
        found, kept, _ = http("GET", f"{SERVICES}/answers/{job_id}")
        view["answer"] = kept.get("answer") if found == 200 else None
    return 200, view, (headers.get("Retry-After") if headers else None)


class Queries(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body, retry_after=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "queries":
            return self.reply(404, {"error": "no such path"})
        code, view, retry_after = status(parts[1])
        log("query_polled", job_id=parts[1], state=view.get("state"))
        self.reply(code, view, retry_after)

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        if parts == ["queries"]:
            return self.submit(json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}"))
        if len(parts) == 3 and parts[0] == "queries" and parts[2] in ("retry", "cancel"):
            job_id, action = parts[1], parts[2]
            code, body, _ = ferry("POST", f"/{job_id}:{action}")
            log(f"query_{action}", job_id=job_id, ferry_status=code)
            if code == 202:
                return self.reply(202, {"job_id": job_id, "state": "pending" if action == "retry" else "cancelled"})
            why = body.get("detail", "") if isinstance(body, dict) else ""
            return self.reply(409, {"job_id": job_id, "error": {"class": f"cannot_{action}", "message": why}})
        self.reply(404, {"error": "no such path"})

    def submit(self, body):
        question = body.get("question", "")
        job_id = "q-" + uuid.uuid4().hex[:16]
        heavy = len(question.split()) > 6
        log("query_received", job_id=job_id, mode="async" if heavy else "inline")
        if heavy:
            code, answer, _ = ferry("POST", "", {"type": "query", "job_id": job_id, "data": {"question": question},
                                                 "max_attempts": MAX_ATTEMPTS})
            if code != 202:
                log("query_refused", job_id=job_id, ferry_status=code)
                return self.reply(503, {"job_id": job_id, "error": {"class": f"http_{code}", "message": str(answer)}})
            log("query_queued", job_id=job_id)
            return self.reply(202, {"job_id": job_id, "mode": "async", "state": "pending",
                                    "status_url": f"/queries/{job_id}"})
        code, answer, _ = http("POST", f"{SERVICES}/answer", {"question": question}, {"Idempotency-Key": job_id})
        if code != 200:
            view = {"job_id": job_id, "mode": "inline", "state": "failed",
                    "error": {"class": f"http_{code}", "message": answer.get("error", "")},
                    "retry": {"will_retry": False, "attempts_made": 1, "attempts_left": 0,
                              "how": "send the query again" if code >= 500 else "change the question"}}
        else:
            view = {"job_id": job_id, "mode": "inline", "state": "completed", "answer": answer["answer"]}
        inline[job_id] = view
        log("query_answered" if code == 200 else "query_failed", job_id=job_id, mode="inline")
        self.reply(200 if code == 200 else 502, view)


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8095), Queries)
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
