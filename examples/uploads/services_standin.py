#!/usr/bin/env python3
"""STAND-INS for an object store and an embedding model: small, local and deterministic, so the
example and its test run without the real services. Nothing of Ferry's is stood in.

PUT  /objects             the body is a file; kept once per content, answers {"ref": "sha256:…"}
GET  /objects/<ref>       the file
POST /embed {"ref", "user", "chunks"} with an Idempotency-Key (the job id): the chunks'
                          vectors, worked out once per key (examples/standin.py). A file whose
                          text has "SLOW" takes SLOW_SECONDS (2); one with "CORRUPT" is refused
                          (422) until POST /repair/<ref>. It counts how many embeddings run at
                          once for each user, and the most seen.
GET  /stats               calls and done per key, and the most embeddings at once per user.

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

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "2"))
embeddings = KeyedWork()
lock = threading.Lock()
objects, repaired = {}, set()
running, most = Counter(), Counter()


def embed(body):
    text = objects.get(body["ref"], b"")
    if b"CORRUPT" in text and body["ref"] not in repaired:
        return 422, {"error": "the file's text layer cannot be read"}
    user = body.get("user", "")
    with lock:
        running[user] += 1
        most[user] = max(most[user], running[user])
    try:
        time.sleep(SLOW_SECONDS if b"SLOW" in text else 0.05)
    finally:
        with lock:
            running[user] -= 1
    return 200, {"vectors": int(body.get("chunks", 1)), "dimensions": 8}


class Services(JSONHandler):
    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.answer(200, {**embeddings.stats(), "most_at_once": most})
        if self.path.startswith("/objects/"):
            found = objects.get(self.path[len("/objects/"):])
            return self.answer(200, found, "application/pdf") if found is not None else self.answer(404, {"error": "none"})
        self.answer(404, {"error": "no such path"})

    def do_PUT(self):
        if self.path != "/objects":
            return self.answer(404, {"error": "no such path"})
        data = self.raw_body()
        ref = "sha256:" + hashlib.sha256(data).hexdigest()
        with lock:
            objects[ref] = data
        self.answer(200, {"ref": ref})

    def do_POST(self):
        if self.path.startswith("/repair/"):
            repaired.add(self.path[len("/repair/"):])
            return self.answer(200, {"repaired": True})
        key = self.headers.get("Idempotency-Key")
        if self.path != "/embed" or not key:
            return self.answer(404, {"error": "POST /embed with an Idempotency-Key"})
        body = self.json_body()
        status, answer, _ = embeddings.run(key, lambda _: embed(body))
        self.answer(status, answer)


serve(Services, int(sys.argv[1]) if len(sys.argv) > 1 else 8096)
