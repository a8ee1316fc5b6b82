"""A real HTTP/1.1 endpoint on loopback for Ferry's push tests.

Usage: push_endpoint.py PORT_FILE LOG_FILE [SECRET]
(HTTPS instead of HTTP when PUSH_TLS_CERT and PUSH_TLS_KEY name a certificate and its key.)

Writes its port to PORT_FILE once listening, then appends one JSON line per request to
LOG_FILE: path, headers, body (base64), the client's port (one per TCP connection), whether the
signature verified (when SECRET is given), and how many requests were in flight on arrival.
The answer follows a "respond" spec: the job's `respond` attribute (wrapped or raw format), else
the path after /respond/, else 204. A spec lists one answer per delivery attempt, separated by
";" (the last one repeats): "503,retry-after=2;200" answers the first delivery 503 with
Retry-After: 2 and later ones 200. An answer is a status and options: sleep=<ms>, big=<bytes>,
reply=<percent-encoded JSON body>, progress=<percent-encoded Ferry-Progress header>.
Keep-alive is on (HTTP/1.1), so connection reuse shows as repeated client ports.
"""
import base64, hashlib, hmac, http.server, json, os, sys, threading, time, urllib.parse

port_file, log_file = sys.argv[1], sys.argv[2]
secret = sys.argv[3].encode() if len(sys.argv) > 3 else None
lock = threading.Lock()
state = {"in_flight": 0, "requests": 0}


def verify(secret, timestamp, body, signature):
    """The check docs/push.md documents, written independently of Ferry's signer."""
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("v1=" + expected, signature)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            state["in_flight"] += 1
            state["requests"] += 1
            in_flight, number = state["in_flight"], state["requests"]
        try:
            spec, attempt = "204", 1
            if self.path.startswith("/respond/"):
                spec = self.path[len("/respond/"):]
            try:
                message = json.loads(body)["message"]
                spec = message["attributes"].get("respond", spec)
                attempt = message["deliveryAttempt"]
            except Exception:
                pass
            if "Ferry-Attributes" in self.headers:
                spec = json.loads(urllib.parse.unquote(self.headers["Ferry-Attributes"])).get("respond", spec)
                attempt = int(self.headers.get("Ferry-Delivery-Attempt", "1"))
            answers = spec.split(";")
            options = answers[min(attempt, len(answers)) - 1].split(",")
            status, extra, payload = int(options[0]), {}, None
            for option in options[1:]:
                name, value = option.split("=")
                if name == "retry-after":
                    extra["Retry-After"] = value
                elif name == "sleep":
                    time.sleep(int(value) / 1000)
                elif name == "big":
                    payload = b"x" * int(value)
                elif name == "progress":
                    extra["Ferry-Progress"] = urllib.parse.unquote(value)
                elif name == "reply":
                    payload = urllib.parse.unquote(value).encode()
                    extra["Content-Type"] = "application/json"
            if payload is None:
                payload = b"" if status == 204 else f"answer {status}".encode()
            record = {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": base64.b64encode(body).decode(),
                "client_port": self.client_address[1],
                "in_flight": in_flight,
                "status": status,
            }
            if secret is not None:
                record["signature_valid"] = verify(
                    secret, self.headers.get("Ferry-Timestamp", ""), body, self.headers.get("Ferry-Signature", ""))
            with lock:
                with open(log_file, "a") as log:
                    log.write(json.dumps(record) + "\n")
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            if status != 204:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if status != 204:
                self.wfile.write(payload)
        finally:
            with lock:
                state["in_flight"] -= 1


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if os.environ.get("PUSH_TLS_CERT"):
    # HTTPS with the given certificate, for the test that TLS verification is always on.
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.environ["PUSH_TLS_CERT"], os.environ["PUSH_TLS_KEY"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
