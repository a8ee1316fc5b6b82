"""What the examples' stand-ins share (they stand in for other services: a parser, a model, a
store; nothing of Ferry's): work done once per Idempotency-Key, and a small JSON HTTP server.

A real service a job calls should be idempotent in the same way, so that a job run again after
its worker died (`kill -9`, a lost lease) repeats no side effect: `KeyedWork` counts each key's
calls and how often its work was done (never more than once), answers a repeated key with what
it kept, and makes a request arriving while the first with its key is still being worked on wait
for it.
"""
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class KeyedWork:
    """Work done at most once per key, and its counts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.key_locks, self.kept = {}, {}
        self.calls, self.done = Counter(), Counter()

    def run(self, key, work):
        """(status, body, replayed): `work(call_number)` returns (status, body); a 200 is kept
        for the key and answered again to its later calls (replayed), anything else is not."""
        with self.lock:
            self.calls[key] += 1
            seen = self.calls[key]
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self.lock:
                if key in self.kept:
                    return 200, self.kept[key], True
            status, body = work(seen)
            if status == 200:
                with self.lock:
                    self.kept[key] = body
                    self.done[key] += 1
        return status, body, False

    def stats(self):
        with self.lock:
            return {"calls": dict(self.calls), "done": dict(self.done)}


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler answering JSON (or bytes), quiet, and at peace with callers that left."""

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

    def raw_body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def json_body(self):
        return json.loads(self.raw_body() or b"{}")


def serve(handler, port):
    """Serves `handler` on 127.0.0.1:`port` (0 picks a free one) and says where, as the tests read it."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
