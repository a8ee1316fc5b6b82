#!/usr/bin/env python3
"""STAND-INS for a document store and a language model: small, local and deterministic, so the
example and its test run without the real services. Nothing of Ferry's is stood in.

Document store:
  PUT  /documents           the body is a document; stored once per content (SHA-256), answers
                            {"ref": "sha256:<hex>", "new": true|false}
  GET  /documents/<ref>     the document
Language model (each call with an Idempotency-Key: its work is done once, examples/standin.py, and
the same key again answers what was kept):
  POST /extract  {"text"}   the contract's facts: {"amount", "months", "words"}. A text with
                            "flaky" fails (503) on its first call per key; one starting with
                            "slow" takes SLOW_SECONDS (3).
  POST /compare  {"facts", "workflow"}  against the policy (amount at most 10,000, at most 24
                            months): {"verdict": "match" | "mismatch" | "uncertain", "reasons"}.
                            A text with "ambiguous" is uncertain for its workflow's first two
                            comparisons; "hopeless" always.
Approvals (the person the supervisor asks):
  POST /approvals/<workflow>  {"by"}    GET /approvals/<workflow>  (404 until approved)
GET /stats: per key, calls (requests) and done (times the work was done: never above 1); per
document ref, stored.

Usage: services_standin.py PORT (0 picks a free one); prints "listening on http://127.0.0.1:PORT".
"""
import hashlib
import os
import re
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from standin import JSONHandler, KeyedWork, serve  # noqa: E402

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "3"))
model = KeyedWork()
lock = threading.Lock()
documents, approvals = {}, {}
stored, comparisons = Counter(), Counter()


def extract(text, call_number):
    if "flaky" in text and call_number == 1:
        return 503, {"error": "the model is overloaded; try again"}
    if text.startswith("slow"):
        time.sleep(SLOW_SECONDS)
    amount = re.search(r"amount (\d+)", text)
    months = re.search(r"(\d+) months", text)
    return 200, {"amount": int(amount.group(1)) if amount else 0, "months": int(months.group(1)) if months else 0,
                 "words": len(text.split())}


def compare(body):
    facts, workflow, text = body["facts"], body["workflow"], body.get("hint", "")
    with lock:
        comparisons[workflow] += 1
        seen = comparisons[workflow]
    if "hopeless" in text or ("ambiguous" in text and seen <= 2):
        return 200, {"verdict": "uncertain", "reasons": [f"comparison {seen} could not decide"]}
    reasons = []
    if facts["amount"] > 10000:
        reasons.append(f"amount {facts['amount']} is over the policy's 10000")
    if facts["months"] > 24:
        reasons.append(f"{facts['months']} months is over the policy's 24")
    return 200, {"verdict": "mismatch" if reasons else "match", "reasons": reasons}


class Services(JSONHandler):
    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.answer(200, {**model.stats(), "stored": stored})
        if self.path.startswith("/documents/"):
            text = documents.get(self.path[len("/documents/"):])
            return self.answer(200, text, "text/plain") if text is not None else self.answer(404, {"error": "no such document"})
        if self.path.startswith("/approvals/"):
            by = approvals.get(self.path[len("/approvals/"):])
            return self.answer(200, {"by": by}) if by else self.answer(404, {"error": "not approved"})
        self.answer(404, {"error": "no such path"})

    def do_PUT(self):
        if self.path != "/documents":
            return self.answer(404, {"error": "no such path"})
        text = self.raw_body()
        ref = "sha256:" + hashlib.sha256(text).hexdigest()
        with lock:
            new = ref not in documents
            if new:
                documents[ref] = text
                stored[ref] += 1
        self.answer(200, {"ref": ref, "new": new})

    def do_POST(self):
        if self.path.startswith("/approvals/"):
            approvals[self.path[len("/approvals/"):]] = self.json_body().get("by", "someone")
            return self.answer(200, {"approved": True})
        key = self.headers.get("Idempotency-Key")
        if self.path not in ("/extract", "/compare") or not key:
            return self.answer(404, {"error": "POST /extract or /compare with an Idempotency-Key"})
        body = self.json_body()
        if self.path == "/extract":
            status, answer, _ = model.run(key, lambda call_number: extract(body["text"], call_number))
        else:
            status, answer, _ = model.run(key, lambda _: compare(body))
        self.answer(status, answer)


serve(Services, int(sys.argv[1]) if len(sys.argv) > 1 else 8091)
