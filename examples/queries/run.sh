#!/bin/sh
# The queries example's parts, one command each: what the README runs by hand and what the test
# suite drives (Tests/ExampleTests). Settings come from the environment, with defaults:
#   REDIS_URL      redis://127.0.0.1:6379    QUEUE          queries
#   FERRY          ferry (the binary)        FERRY_PORT     8080 (ferry serve; 0: a free one)
#   SERVICES_PORT  8094 (the stand-in model) SERVICES_URL   http://127.0.0.1:$SERVICES_PORT
#   PORT           8095 (the query service)  FERRY_API      http://127.0.0.1:$FERRY_PORT
#   FERRY_API_KEY  the key `setup` printed   LEASE          30s
set -eu
here=$(cd "$(dirname "$0")" && pwd)
FERRY=${FERRY:-ferry}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
QUEUE=${QUEUE:-queries}
SERVICES_URL=${SERVICES_URL:-http://127.0.0.1:${SERVICES_PORT:-8094}}
FERRY_API=${FERRY_API:-http://127.0.0.1:${FERRY_PORT:-8080}}
export SERVICES_URL FERRY_API QUEUE

case "${1:-}" in
setup)
  # An API key for the query service (publish, read, and admin to retry and cancel), printed once.
  exec "$FERRY" api-key create "queries-$QUEUE" --scopes publish,read,admin --queues "$QUEUE" --redis "$REDIS_URL"
  ;;
services)
  exec python3 "$here/services_standin.py" "${SERVICES_PORT:-8094}"
  ;;
serve)
  exec "$FERRY" serve --port "${FERRY_PORT:-8080}" --redis "$REDIS_URL"
  ;;
api)
  exec python3 "$here/query_api.py" "${PORT:-8095}"
  ;;
worker)
  # Heavy queries: 3 attempts, retried after 1 s, then 2 s.
  exec "$FERRY" worker "$QUEUE" --redis "$REDIS_URL" --max-attempts 3 --min-backoff 1s --max-backoff 2s \
    --lease "${LEASE:-30s}" --exec "python3 $here/heavy_handler.py" --pass-env SERVICES_URL
  ;;
*)
  echo "usage: run.sh setup|services|serve|api|worker" >&2
  exit 2
  ;;
esac
