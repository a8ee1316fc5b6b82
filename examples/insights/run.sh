#!/bin/sh
# The insights example's parts, one command each: what the README runs by hand and what the test
# suite drives (Tests/ExampleTests). Settings come from the environment, with defaults:
#   REDIS_URL      redis://127.0.0.1:6379    QUEUE         insights (pull) and insights-push
#   FERRY          ferry (the binary)        PUSH_QUEUE    the push deployment's queue
#   SERVICES_PORT  8092 (the stand-ins)      SERVICES_URL  http://127.0.0.1:$SERVICES_PORT
#   PUSH_PORT      8093 (the push handler)   PUSH_URL      http://127.0.0.1:$PUSH_PORT/
#   LEASE          30s                       CONCURRENCY   4
#   PORT           8080 (ferry serve, for the runs' status over HTTP; 0 picks a free one)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
FERRY=${FERRY:-ferry}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
QUEUE=${QUEUE:-insights}
PUSH_QUEUE=${PUSH_QUEUE:-$QUEUE-push}
SERVICES_URL=${SERVICES_URL:-http://127.0.0.1:${SERVICES_PORT:-8092}}
export SERVICES_URL
# A run's retries: 3 attempts, 1 s apart at first.
retries="--max-attempts 3 --min-backoff 1s --lease ${LEASE:-30s} --concurrency ${CONCURRENCY:-4}"

case "${1:-}" in
services)
  exec python3 "$here/services_standin.py" "${SERVICES_PORT:-8092}"
  ;;
worker)
  # The pull deployment: the handler runs as a process per run.
  exec "$FERRY" worker "$QUEUE" --redis "$REDIS_URL" $retries \
    --exec "python3 $here/exec_handler.py" --pass-env SERVICES_URL
  ;;
serve)
  # The runs' status over HTTP (GET /v1/queues/$QUEUE/jobs/RUN_ID); loopback, no keys.
  exec "$FERRY" serve --no-auth --port "${PORT:-8080}" --redis "$REDIS_URL"
  ;;
push-handler)
  exec python3 "$here/push_handler.py" "${PUSH_PORT:-8093}"
  ;;
push-worker)
  # The push deployment: the same pipeline behind HTTP, delivered as Pub/Sub push requests.
  exec "$FERRY" worker "$PUSH_QUEUE" --redis "$REDIS_URL" $retries \
    --push "${PUSH_URL:-http://127.0.0.1:${PUSH_PORT:-8093}/}"
  ;;
publish)
  # ./run.sh publish PRODUCT RUN_ID [QUEUE]: one run; its id is its idempotency key, so the run
  # happens once however often it is delivered. At most RUN_TIMEOUT (60s) for the whole run, and
  # REVIEWS_TIMEOUT seconds (10) for its reviews step.
  product=${2:?usage: run.sh publish PRODUCT RUN_ID [QUEUE]}
  run=${3:?usage: run.sh publish PRODUCT RUN_ID [QUEUE]}
  data="{\"product\": \"$product\", \"timeouts\": {\"reviews\": ${REVIEWS_TIMEOUT:-10}}}"
  exec "$FERRY" publish "${4:-$QUEUE}" --type insights.run --job-id "$run" --idempotency-key "$run" \
    --timeout "${RUN_TIMEOUT:-60s}" --data "$data" --redis "$REDIS_URL"
  ;;
*)
  echo "usage: run.sh services|serve|worker|push-handler|push-worker|publish PRODUCT RUN_ID [QUEUE]" >&2
  exit 2
  ;;
esac
