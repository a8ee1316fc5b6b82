#!/usr/bin/env python3
"""STAND-INS for a product catalogue, a review-scoring model and a results store: small, local
and deterministic, so the example and its test run without the real services. Nothing of
Ferry's is stood in.

Every POST carries an Idempotency-Key: its work is done once (examples/standin.py), and the same
key again answers what was kept.
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
import os
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from standin import JSONHandler, KeyedWork, serve  # noqa: E402

STALL_SECONDS = float(os.environ.get("STALL_SECONDS", "8"))
calls = KeyedWork()
lock = threading.Lock()
results = {}
reviews_seen = Counter()


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


class Services(JSONHandler):
    def do_GET(self):
        if self.path != "/stats":
            return self.answer(404, {"error": "no such path"})
        with lock:
            self.answer(200, {**calls.stats(), "results": results})

    def do_POST(self):
        work = {"/expand": expand, "/score": score, "/results": store}.get(self.path)
        key = self.headers.get("Idempotency-Key")
        if not work or not key:
            return self.answer(404 if not work else 400, {"error": "no such path, or no Idempotency-Key"})
        body = self.json_body()
        status, answer, _ = calls.run(key, lambda _: (200, work(body)))
        self.answer(status, answer)


serve(Services, int(sys.argv[1]) if len(sys.argv) > 1 else 8092)
