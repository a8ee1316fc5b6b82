#!/bin/sh
# The ingestion example's parts, one command each: what the README runs by hand and what the
# test suite drives (Tests/ExampleTests). Settings come from the environment, with defaults:
#   REDIS_URL    redis://127.0.0.1:6379        QUEUE        ingest
#   FERRY        ferry (the binary)            PORT         8080 (the API; 0 picks a free port)
#   MAX_DEPTH    20 (documents not yet done)   CONCURRENCY  2 (documents a worker runs at once)
#   PARSER_PORT  8090 (the stand-in parser)    PARSER_URL   http://127.0.0.1:$PARSER_PORT
#   LEASE        30s (how long a silent worker keeps a document before another takes it)
#   API          http://127.0.0.1:$PORT (where submit and status send their requests)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
FERRY=${FERRY:-ferry}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
QUEUE=${QUEUE:-ingest}
PARSER_PORT=${PARSER_PORT:-8090}
API=${API:-http://127.0.0.1:${PORT:-8080}}

case "${1:-}" in
setup)
  # The queue's bound (a submission past it is refused: 503 with Retry-After, recorded as
  # refused) and its event stream, the history of every document's states.
  "$FERRY" queue set "$QUEUE" --max-depth "${MAX_DEPTH:-20}" --redis "$REDIS_URL"
  "$FERRY" queue events "$QUEUE" on --redis "$REDIS_URL"
  ;;
parser)
  exec python3 "$here/parser_standin.py" "$PARSER_PORT"
  ;;
serve)
  # Loopback, no API keys (see the README for keys); a document submitted twice is 409.
  exec "$FERRY" serve --no-auth --port "${PORT:-8080}" --reject-duplicates --redis "$REDIS_URL"
  ;;
worker)
  PARSER_URL=${PARSER_URL:-http://127.0.0.1:$PARSER_PORT}
  export PARSER_URL
  exec "$FERRY" worker "$QUEUE" --redis "$REDIS_URL" --concurrency "${CONCURRENCY:-2}" \
    --lease "${LEASE:-30s}" --max-attempts 3 --min-backoff 1s \
    --exec "python3 $here/handler.py" --pass-env PARSER_URL
  ;;
submit)
  # ./run.sh submit FILE: the document's SHA-256 names the job and is its Idempotency-Key.
  file=${2:?usage: run.sh submit FILE}
  python3 - "$file" "$API/v1/queues/$QUEUE/jobs" <<'PY'
import hashlib, json, sys, urllib.request, urllib.error
path, url = sys.argv[1], sys.argv[2]
text = open(path, encoding="utf-8").read()
job_id = "doc-" + hashlib.sha256(text.encode()).hexdigest()[:16]
body = json.dumps({"type": "ingest", "job_id": job_id, "data": {"name": path.split("/")[-1], "text": text}})
request = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Idempotency-Key": job_id})
# Prints the status, the answer's JSON, and Retry-After when the answer has one: a line each.
def show(status, body, retry_after=None):
    print(status, json.dumps(json.loads(body)), sep="\n")
    if retry_after:
        print("Retry-After:", retry_after)
try:
    with urllib.request.urlopen(request) as answer:
        show(answer.status, answer.read())
except urllib.error.HTTPError as refused:
    show(refused.code, refused.read(), refused.headers.get("Retry-After"))
PY
  ;;
status)
  # ./run.sh status JOB_ID: the document's state (waits up to 30 s for it to end).
  exec curl -s "$API/v1/queues/$QUEUE/jobs/${2:?usage: run.sh status JOB_ID}?wait=30s"
  ;;
*)
  echo "usage: run.sh setup|parser|serve|worker|submit FILE|status JOB_ID" >&2
  exit 2
  ;;
esac
