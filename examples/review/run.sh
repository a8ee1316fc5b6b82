#!/bin/sh
# The review example's parts, one command each: what the README runs by hand and what the test
# suite drives (Tests/ExampleTests). Settings come from the environment, with defaults:
#   REDIS_URL      redis://127.0.0.1:6379     QUEUE         reviews
#   FERRY          ferry (the binary)         CONCURRENCY   4 (steps a worker runs at once)
#   SERVICES_PORT  8091 (the stand-ins)       SERVICES_URL  http://127.0.0.1:$SERVICES_PORT
#   LEASE          30s (how long a silent worker keeps a step before another takes it)
#   PORT           8080 (ferry serve, for the workflows' status over HTTP; 0 picks a free one)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
FERRY=${FERRY:-ferry}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
QUEUE=${QUEUE:-reviews}
SERVICES_URL=${SERVICES_URL:-http://127.0.0.1:${SERVICES_PORT:-8091}}
export SERVICES_URL

case "${1:-}" in
services)
  exec python3 "$here/services_standin.py" "${SERVICES_PORT:-8091}"
  ;;
serve)
  # The workflows over HTTP (GET /v1/queues/$QUEUE/workflows/ID); loopback, no keys.
  exec "$FERRY" serve --no-auth --port "${PORT:-8080}" --redis "$REDIS_URL"
  ;;
worker)
  exec "$FERRY" worker "$QUEUE" --redis "$REDIS_URL" --concurrency "${CONCURRENCY:-4}" --lease "${LEASE:-30s}" \
    --exec "python3 $here/step.py" --pass-env SERVICES_URL
  ;;
start)
  # ./run.sh start FILE: the document goes to the store once; the workflow carries its
  # reference, and starts once per document however often this runs (the reference is its
  # idempotency key). Prints the workflow id.
  file=${2:?usage: run.sh start FILE}
  ref=$(curl -sf -X PUT --data-binary "@$file" "$SERVICES_URL/documents" | python3 -c 'import json, sys; print(json.load(sys.stdin)["ref"])')
  data=$(python3 -c 'import json, sys; print(json.dumps({"document": sys.argv[1], "name": sys.argv[2]}))' "$ref" "$(basename "$file")")
  exec "$FERRY" workflow start "$QUEUE" "$here/review.json" --data "$data" --idempotency-key "$ref" --redis "$REDIS_URL"
  ;;
show)
  # ./run.sh show ID: the workflow, each step's job (attempts, last_error, processing_ms), its history.
  exec "$FERRY" workflow show "$QUEUE" "${2:?usage: run.sh show ID}" --json --redis "$REDIS_URL"
  ;;
approve)
  # ./run.sh approve ID NAME: a person approves a blocked review, and the supervisor step runs
  # again (--from supervise) to read the approval and record it in its result.
  id=${2:?usage: run.sh approve ID NAME}
  curl -sf -X POST -d "{\"by\": \"${3:?usage: run.sh approve ID NAME}\"}" "$SERVICES_URL/approvals/$id" >/dev/null
  exec "$FERRY" workflow resume "$QUEUE" "$id" --from supervise --redis "$REDIS_URL"
  ;;
*)
  echo "usage: run.sh services|serve|worker|start FILE|show ID|approve ID NAME" >&2
  exit 2
  ;;
esac
