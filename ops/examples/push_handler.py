"""An example push handler for `ferry worker --push`, in plain Python (no dependencies).

It verifies the request's signature (docs/push.md), reads the Pub/Sub-shaped body, does its
work, and answers 204 to acknowledge, 422 to dead-letter a job it can never handle, or 503 with
Retry-After to ask Ferry to come back later.
"""
import base64, hashlib, hmac, http.server, json, os, time

SECRET = open(os.environ["PUSH_SECRET_FILE"], "rb").read().strip()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, tolerance: int = 300) -> bool:
    """True when the request was signed with `secret` within `tolerance` seconds."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, text=""):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not verify(SECRET, self.headers.get("Ferry-Timestamp", ""), body, self.headers.get("Ferry-Signature", "")):
            return self.answer(401, "bad signature")
        message = json.loads(body)["message"]
        data = base64.b64decode(message["data"])
        print(f"job {message['jobId']} ({message['type']}), attempt {message['deliveryAttempt']}: {len(data)} bytes", flush=True)
        self.answer(204)


http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
