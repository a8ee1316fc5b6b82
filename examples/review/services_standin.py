#!/usr/bin/env python3
"""STAND-INS for a document store and a language model: small, local and deterministic, so the
example and its test run without the real services. Nothing of Ferry's is stood in.

Document store:
  PUT  /documents           the body is a document; stored once per content (SHA-256), answers
                            {"ref": "sha256:<hex>", "new": true|false}
  GET  /documents/<ref>     the document
Language model (each call with an Idempotency-Key: the same key answers the stored result and
does the work once; a request arriving while the first with its key is being worked on waits):
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
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "3"))
lock = threading.Lock()
key_locks = {}
documents, approvals, results = {}, {}, {}
calls, done, stored, comparisons = Counter(), Counter(), Counter(), Counter()


def extract(text):
    amount = re.search(r"amount (\d+)", text)
    months = re.search(r"(\d+) months", text)
    return {"amount": int(amount.group(1)) if amount else 0, "months": int(months.group(1)) if months else 0,
            "words": len(text.split())}


def compare(body):
    facts, workflow, text = body["facts"], body["workflow"], body.get("hint", "")
    with lock:
        comparisons[workflow] += 1
        seen = comparisons[workflow]
    if "hopeless" in text or ("ambiguous" in text and seen <= 2):
        return {"verdict": "uncertain", "reasons": [f"comparison {seen} could not decide"]}
    reasons = []
    if facts["amount"] > 10000:
        reasons.append(f"amount {facts['amount']} is over the policy's 10000")
    if facts["months"] > 24:
        reasons.append(f"{facts['months']} months is over the policy's 24")
    return {"verdict": "mismatch" if reasons else "match", "reasons": reasons}


class Services(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the caller went away (its worker was killed); what was done stays done

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.answer(200, {"calls": calls, "done": done, "stored": stored})
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
        text = self.body()
        ref = "sha256:" + hashlib.sha256(text).hexdigest()
        with lock:
            new = ref not in documents
            if new:
                documents[ref] = text
                stored[ref] += 1
        self.answer(200, {"ref": ref, "new": new})

    def do_POST(self):
        if self.path.startswith("/approvals/"):
            approvals[self.path[len("/approvals/"):]] = json.loads(self.body() or b"{}").get("by", "someone")
            return self.answer(200, {"approved": True})
        work = {"/extract": lambda body: extract(body["text"]), "/compare": compare}.get(self.path)
        if not work:
            return self.answer(404, {"error": "no such path"})
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self.answer(400, {"error": "an Idempotency-Key header is required"})
        body = json.loads(self.body() or b"{}")
        with lock:
            calls[key] += 1
            first_call = calls[key] == 1
            key_lock = key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with lock:
                if key in results:
                    return self.answer(200, results[key])
            text = body.get("text", body.get("hint", ""))
            if self.path == "/extract" and "flaky" in text and first_call:
                return self.answer(503, {"error": "the model is overloaded; try again"})
            if self.path == "/extract" and text.startswith("slow"):
                time.sleep(SLOW_SECONDS)
            result = work(body)
            with lock:
                results[key] = result
                done[key] += 1
        self.answer(200, result)


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8091), Services)
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
