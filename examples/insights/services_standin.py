#!/usr/bin/env python3
"""STAND-INS for a product catalogue, a review-scoring model and a results store: small, local
and deterministic, so the example and its test run without the real services. Nothing of
Ferry's is stood in.

Every POST carries an Idempotency-Key: the same key answers the stored answer and does the work
once; a request arriving while the first with its key is being worked on waits for it.
  POST /expand  {"product"}   its review ids: 5, or 20 for a product whose name has "big"
  POST /score   {"review"}    a score from 1 to 5 (the same for the same review). A review of a
                              product with "slow" in its name takes 0.2 s; with "stall", the
                              first call for its first review takes STALL_SECONDS (8); with
                              "hang", every call does.
  POST /results {"run", ...}  the run's result, kept once per key
GET /stats: calls and done per key (done never above 1), and the results by run.

Usage: services_standin.py PORT (0 picks a free one); prints "listening on http://127.0.0.1:PORT".
"""
import hashlib
import json
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_SECONDS = float(os.environ.get("STALL_SECONDS", "8"))
lock = threading.Lock()
key_locks, answers, results = {}, {}, {}
calls, done, reviews_seen = Counter(), Counter(), Counter()


def expand(body):
    product = body["product"]
    return {"reviews": [f"{product}-r{i}" for i in range(1, (21 if "big" in product else 6))]}


def score(body):
    review = body["review"]
    with lock:
        reviews_seen[review] += 1
        first = reviews_seen[review] == 1
    if "hang" in review or ("stall" in review and review.endswith("-r1") and first):
        time.sleep(STALL_SECONDS)
    elif "slow" in review:
        time.sleep(0.2)
    return {"score": int(hashlib.sha256(review.encode()).hexdigest(), 16) % 5 + 1}


def store(body):
    with lock:
        results[body["run"]] = body
    return {"stored": True}


class Services(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the caller went away (its worker was killed); what was done stays done

    def do_GET(self):
        if self.path != "/stats":
            return self.answer(404, {"error": "no such path"})
        with lock:
            self.answer(200, {"calls": calls, "done": done, "results": results})

    def do_POST(self):
        work = {"/expand": expand, "/score": score, "/results": store}.get(self.path)
        key = self.headers.get("Idempotency-Key")
        if not work or not key:
            return self.answer(404 if not work else 400, {"error": "no such path, or no Idempotency-Key"})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        with lock:
            calls[key] += 1
            key_lock = key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with lock:
                if key in answers:
                    return self.answer(200, answers[key])
            answer = work(body)
            with lock:
                answers[key] = answer
                done[key] += 1
        self.answer(200, answer)


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8092), Services)
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
