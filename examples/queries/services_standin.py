#!/usr/bin/env python3
"""A STAND-IN for a language model and the store its answers go to: small, local and
deterministic, so the example and its test run without the real services. Nothing of Ferry's is
stood in.

POST /answer {"question"} with an Idempotency-Key (the query's job id): an answer, worked out once
  per key (examples/standin.py: the same key answers what was kept). A question with "heavy" takes HEAVY_SECONDS (1); with "slow",
  SLOW_SECONDS (4); with "flaky", the first two calls per key fail (503); with "unanswerable",
  422; with "outage", 500 while the outage is on (POST /outage/off ends it).
PUT  /answers/<job id>   keeps a heavy query's answer (the handler's result)
GET  /answers/<job id>   that answer, or 404
GET  /stats              calls and done (never above 1) per key, and the keys seen in order

Usage: services_standin.py PORT (0 picks a free one); prints "listening on http://127.0.0.1:PORT".
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from standin import JSONHandler, KeyedWork, serve  # noqa: E402

HEAVY_SECONDS = float(os.environ.get("HEAVY_SECONDS", "1"))
SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "4"))
answers = KeyedWork()
stored = {}
outage = {"on": True}


def answer(question, call_number):
    """(status, body) of the model for `question`, on the key's `call_number`th call."""
    if "unanswerable" in question:
        return 422, {"error": "the question cannot be answered from the documents"}
    if "outage" in question and outage["on"]:
        return 500, {"error": "the model is down"}
    if "flaky" in question and call_number <= 2:
        return 503, {"error": "the model is overloaded"}
    if "slow" in question:
        time.sleep(SLOW_SECONDS)
    elif "heavy" in question:
        time.sleep(HEAVY_SECONDS)
    return 200, {"answer": f"{len(question.split())} words considered: " + question[::-1][:40]}


class Services(JSONHandler):
    def do_GET(self):
        if self.path == "/stats":
            return self.answer(200, answers.stats())
        if self.path.startswith("/answers/"):
            found = stored.get(self.path[len("/answers/"):])
            return self.answer(200, found) if found else self.answer(404, {"error": "no answer kept"})
        self.answer(404, {"error": "no such path"})

    def do_PUT(self):
        if not self.path.startswith("/answers/"):
            return self.answer(404, {"error": "no such path"})
        stored[self.path[len("/answers/"):]] = self.json_body()
        self.answer(200, {"kept": True})

    def do_POST(self):
        if self.path == "/outage/off":
            outage["on"] = False
            return self.answer(200, {"outage": False})
        key = self.headers.get("Idempotency-Key")
        if self.path != "/answer" or not key:
            return self.answer(404 if self.path != "/answer" else 400, {"error": "POST /answer with an Idempotency-Key"})
        question = self.json_body().get("question", "")
        status, body, _ = answers.run(key, lambda call_number: answer(question, call_number))
        self.answer(status, body)


serve(Services, int(sys.argv[1]) if len(sys.argv) > 1 else 8094)
