#!/usr/bin/env python3
"""The pipeline behind push delivery: `ferry worker --push http://127.0.0.1:PORT/`. Ferry POSTs
each job as a Pub/Sub push request (docs/push.md); 204 acknowledges it, 503 has it retried.
The same pipeline.run as the pull handler, so both deployments give the same results.

Usage: push_handler.py PORT (0 picks a free one); prints "listening on http://127.0.0.1:PORT"."""
import base64
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline  # noqa: E402


def log(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


class Push(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        message = request["message"]
        run_id, attempt = message["jobId"], int(request["deliveryAttempt"])
        try:
            result = pipeline.run(run_id, attempt, base64.b64decode(message["data"]), log)
            log("run_result", run_id=run_id, result=result)
            self.send_response(204)
            self.end_headers()
        except pipeline.StepFailed as failure:
            body = str(failure).encode()
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8093), Push)
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
