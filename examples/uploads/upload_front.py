#!/usr/bin/env python3
"""The upload service: what users talk to, in front of `ferry serve`. It checks an upload before
any job exists (at most 25 MB, a PDF), keeps the file in the object store, and publishes a job
through Ferry's API with the user's own token, so Ferry holds the user's limits: 30 uploads a
day, 2 active jobs, 10 status polls a minute per job, and the user sees only their own jobs.

  POST /uploads                the PDF as the body (Content-Type: application/pdf), the user's
                               JWT as `Authorization: Bearer`: 202 {job_id, state: queued,
                               stage: queued, percent: 0, status_url}; 413 over 25 MB; 415 not
                               a PDF; 401 without a valid token; 429 over 30 a day
  GET  /uploads/<id>           {job_id, state, stage, percent, attempts, error, next_attempt_at}:
                               state queued | working | retryable | done | deadletter
  GET  /uploads?state=&limit=&cursor=   the user's uploads, newest first, paged
  POST /uploads/<id>/retry     a dead-lettered upload runs again

Settings (environment): FERRY_API (ferry serve's URL), QUEUE (uploads), SERVICES_URL (the object
store), MAX_UPLOAD_BYTES (25 MB). Usage: upload_front.py PORT (0 picks a free one); prints
"listening on http://127.0.0.1:PORT".
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from standin import JSONHandler, serve  # noqa: E402  (the JSON server only; nothing stood in)

FERRY_API = os.environ["FERRY_API"].rstrip("/")
QUEUE = os.environ.get("QUEUE", "uploads")
SERVICES = os.environ["SERVICES_URL"]
MAX_UPLOAD_BYTES = int(os.environ.get("MAX_UPLOAD_BYTES", str(25 * 1024 * 1024)))
STATES = {"queued": "queued", "waiting": "queued", "scheduled": "queued", "running": "working",
          "retrying": "retryable", "failed": "retryable", "succeeded": "done", "dead": "deadletter",
          "cancelled": "cancelled", "deleted": "cancelled"}


def http(method, url, body=None, headers=None, raw=None):
    """(status, JSON body, headers) of a request; an HTTP error is an answer too."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                               **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"{}"), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), error.headers


def view(job):
    group = (job.get("groups") or [{}])[0]
    state = STATES.get(group.get("state", "queued"), "queued")
    shown = {"job_id": job["job_id"], "state": state, "stage": group.get("stage") or "queued",
             "percent": group.get("progress", 0), "attempts": group.get("attempts", 0)}
    if state == "done":
        shown["stage"], shown["percent"] = "embedded", 100
    if state in ("retryable", "deadletter"):
        shown["error"] = {"class": group.get("error_class"), "message": group.get("last_error")}
        shown["next_attempt_at"] = group.get("next_attempt_at")
    return shown


class Uploads(JSONHandler):
    def ferry(self, method, path, body=None):
        return http(method, f"{FERRY_API}/v1/queues/{QUEUE}/jobs{path}", body,
                    {"Authorization": self.headers.get("Authorization", "")})

    def relay(self, status, body, headers, shown=None):
        """Ferry's refusals (401, 403, 404, 429 with Retry-After) as they are; else `shown`."""
        if status >= 400:
            self.send_response(status)
            data = json.dumps(body).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if headers and headers.get("Retry-After"):
                self.send_header("Retry-After", headers["Retry-After"])
            self.end_headers()
            return self.wfile.write(data)
        self.answer(200 if shown is None or status == 200 else status, shown if shown is not None else body)

    def do_POST(self):
        path = urllib.parse.urlparse(self.path).path.strip("/").split("/")
        if len(path) == 3 and path[0] == "uploads" and path[2] == "retry":
            status, body, headers = self.ferry("POST", f"/{path[1]}:retry")
            return self.relay(status, body, headers, {"job_id": path[1], "state": "queued"})
        if path != ["uploads"]:
            return self.answer(404, {"error": "no such path"})
        size = int(self.headers.get("Content-Length", "0"))
        if size > MAX_UPLOAD_BYTES:
            return self.answer(413, {"error": f"the upload is {size} bytes; at most {MAX_UPLOAD_BYTES} (25 MB)"})
        data = self.raw_body()
        if self.headers.get("Content-Type") != "application/pdf" or not data.startswith(b"%PDF-"):
            return self.answer(415, {"error": "only PDF files are accepted (Content-Type: application/pdf, a %PDF- file)"})
        status, body, headers = self.ferry("GET", "?limit=1")  # the token, before the file is kept
        if status >= 400:
            return self.relay(status, body, headers)
        _, kept, _ = http("PUT", f"{SERVICES}/objects", raw=data, headers={"Content-Type": "application/pdf"})
        name = self.headers.get("X-File-Name", "upload.pdf")
        status, body, headers = self.ferry("POST", "", {"type": "upload.process", "data": {
            "file": kept["ref"], "name": name, "size": len(data)}})
        if status != 202:
            return self.relay(status, body, headers)
        self.answer(202, {"job_id": body["job_id"], "state": "queued", "stage": "queued", "percent": 0,
                          "status_url": f"/uploads/{body['job_id']}"})

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        path = url.path.strip("/").split("/")
        if len(path) == 2 and path[0] == "uploads":
            status, body, headers = self.ferry("GET", "/" + path[1])
            return self.relay(status, body, headers, view(body) if status == 200 else None)
        if path == ["uploads"]:
            query = urllib.parse.parse_qs(url.query)
            wanted = {name: query[name][0] for name in ("limit", "cursor") if name in query}
            if "state" in query:
                ferry_states = [name for name, shown in STATES.items() if shown == query["state"][0]]
                wanted["state"] = ferry_states[0] if ferry_states else query["state"][0]
            status, body, headers = self.ferry("GET", "?" + urllib.parse.urlencode(wanted))
            if status != 200:
                return self.relay(status, body, headers)
            uploads = [{"job_id": row["job_id"], "state": STATES.get(row["state"], row["state"]),
                        "attempts": row.get("attempts")} for row in body.get("jobs", [])]
            return self.answer(200, {"uploads": uploads, "next_cursor": body.get("next_cursor")})
        self.answer(404, {"error": "no such path"})


serve(Uploads, int(sys.argv[1]) if len(sys.argv) > 1 else 8097)
