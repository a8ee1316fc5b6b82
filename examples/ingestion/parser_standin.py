#!/usr/bin/env python3
"""A STAND-IN for a document parser and store: small, local and deterministic, so the example
and its test run without the real service. Nothing of Ferry's is stood in.

POST /ingest  {"name", "text"} with an Idempotency-Key header: splits the text into chunks and
              stores them once per key (examples/standin.py: the same key again answers the
              stored result with "replayed": true). A text containing "unreadable" is refused
              with 422; a text starting with "slow" takes SLOW_SECONDS (3) to parse.
GET  /stats   per key: calls (requests), started (parses begun), stored (times the document
              was stored: never more than 1).

Usage: parser_standin.py PORT (0 picks a free one); prints "listening on http://127.0.0.1:PORT".
"""
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from standin import JSONHandler, KeyedWork, serve  # noqa: E402

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "3"))
parses = KeyedWork()
started = Counter()


class Parser(JSONHandler):
    def do_GET(self):
        if self.path != "/stats":
            return self.answer(404, {"error": "no such path"})
        stats = parses.stats()
        self.answer(200, {"calls": stats["calls"], "started": started, "stored": stats["done"]})

    def do_POST(self):
        key = self.headers.get("Idempotency-Key")
        if self.path != "/ingest" or not key:
            return self.answer(404 if self.path != "/ingest" else 400, {"error": "POST /ingest with an Idempotency-Key"})
        document = self.json_body()

        def parse(_):
            text = document.get("text", "")
            if "unreadable" in text:
                return 422, {"error": f"{document.get('name')} is not a text document"}
            started[key] += 1
            if text.startswith("slow"):
                time.sleep(SLOW_SECONDS)
            return 200, {"chunks": len(text.split())}

        status, body, replayed = parses.run(key, parse)
        self.answer(status, {**body, "replayed": replayed} if status == 200 else body)


serve(Parser, int(sys.argv[1]) if len(sys.argv) > 1 else 8090)
