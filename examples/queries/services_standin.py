#!/usr/bin/env python3
"""A STAND-IN for a language model and the store its answers go to: small, local and
deterministic, so the example and its test run without the real services. Nothing of Ferry's is
stood in.

POST /answer {"question"} with an Idempotency-Key (the query's job id): an answer, worked out once
  per key (the same key answers what was kept; a request arriving while the first with its key is
  being worked on waits for it). A question with "heavy" takes HEAVY_SECONDS (1); with "slow",
  SLOW_SECONDS (4); with "flaky", the first two calls per key fail (503); with "unanswerable",
  422; with "outage", 500 while the outage is on (POST /outage/off ends it).
PUT  /answers/<job id>   keeps a heavy query's answer (the handler's result)
GET  /answers/<job id>   that answer, or 404
GET  /stats              calls and done (never above 1) per key, and the keys seen in order

Usage: services_standin.py PORT (0 picks a free one); prints "listening on http://127.0.0.1:PORT".
"""
import json
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEAVY_SECONDS = float(os.environ.get("HEAVY_SECONDS", "1"))
SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "4"))
lock = threading.Lock()
key_locks, kept, stored = {}, {}, {}
calls, done = Counter(), Counter()
outage = {"on": True}


class Failure(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def answer(question, first_calls):
    if "unanswerable" in question:
        raise Failure(422, "the question cannot be answered from the documents")
    if "outage" in question and outage["on"]:
        raise Failure(500, "the model is down")
    if "flaky" in question and first_calls <= 2:
        raise Failure(503, "the model is overloaded")
    if "slow" in question:
        time.sleep(SLOW_SECONDS)
    elif "heavy" in question:
        time.sleep(HEAVY_SECONDS)
    return {"answer": f"{len(question.split())} words considered: " + question[::-1][:40]}


class Services(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the caller went away (its worker was killed); what was done stays done

    def body(self):
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.reply(200, {"calls": calls, "done": done})
        if self.path.startswith("/answers/"):
            found = stored.get(self.path[len("/answers/"):])
            return self.reply(200, found) if found else self.reply(404, {"error": "no answer kept"})
        self.reply(404, {"error": "no such path"})

    def do_PUT(self):
        if not self.path.startswith("/answers/"):
            return self.reply(404, {"error": "no such path"})
        stored[self.path[len("/answers/"):]] = self.body()
        self.reply(200, {"kept": True})

    def do_POST(self):
        if self.path == "/outage/off":
            outage["on"] = False
            return self.reply(200, {"outage": False})
        if self.path != "/answer":
            return self.reply(404, {"error": "no such path"})
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self.reply(400, {"error": "an Idempotency-Key header is required"})
        question = self.body().get("question", "")
        with lock:
            calls[key] += 1
            seen = calls[key]
            key_lock = key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with lock:
                if key in kept:
                    return self.reply(200, kept[key])
            try:
                result = answer(question, seen)
            except Failure as failure:
                return self.reply(failure.status, {"error": str(failure)})
            with lock:
                kept[key] = result
                done[key] += 1
        self.reply(200, result)


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8094), Services)
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
