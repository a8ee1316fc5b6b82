#!/usr/bin/env python3
"""A STAND-IN for a document parser and store: small, local and deterministic, so the example
and its test run without the real service. Nothing of Ferry's is stood in.

POST /ingest  {"name", "text"} with an Idempotency-Key header: splits the text into chunks and
              stores them once per key. The same key again answers the stored result
              ("replayed": true) without storing twice; a request arriving while the first with
              its key is still being worked on waits for it. A text containing "unreadable" is
              refused with 422; a text starting with "slow" takes SLOW_SECONDS (3) to parse.
GET  /stats   what it saw, per key: calls (requests), started (parses begun), stored (times
              the document was stored: never more than 1).

Usage: parser_standin.py PORT (0 picks a free one); prints "listening on http://127.0.0.1:PORT".
"""
import json
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "3"))
lock = threading.Lock()
key_locks = {}
calls, started, stored = Counter(), Counter(), Counter()
results = {}


class Parser(BaseHTTPRequestHandler):
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
            pass  # the caller went away (its worker was killed); what was stored stays stored

    def do_GET(self):
        if self.path != "/stats":
            return self.answer(404, {"error": "no such path"})
        with lock:
            self.answer(200, {"calls": calls, "started": started, "stored": stored})

    def do_POST(self):
        if self.path != "/ingest":
            return self.answer(404, {"error": "no such path"})
        key = self.headers.get("Idempotency-Key")
        document = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if not key:
            return self.answer(400, {"error": "an Idempotency-Key header is required"})
        with lock:
            calls[key] += 1
            key_lock = key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with lock:
                if key in results:
                    return self.answer(200, {**results[key], "replayed": True})
            text = document.get("text", "")
            if "unreadable" in text:
                return self.answer(422, {"error": f"{document.get('name')} is not a text document"})
            with lock:
                started[key] += 1
            if text.startswith("slow"):
                time.sleep(SLOW_SECONDS)
            result = {"chunks": len(text.split())}
            with lock:
                results[key] = result
                stored[key] += 1
        self.answer(200, {**result, "replayed": False})


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8090), Parser)
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
