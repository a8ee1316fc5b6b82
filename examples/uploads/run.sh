#!/bin/sh
# The uploads example's parts, one command each: what the README runs by hand and what the test
# suite drives (Tests/ExampleTests). Settings come from the environment, with defaults:
#   REDIS_URL      redis://127.0.0.1:6379    QUEUE         uploads
#   FERRY          ferry (the binary)        FERRY_PORT    8080 (ferry serve; 0: a free one)
#   SERVICES_PORT  8096 (the stand-ins)      SERVICES_URL  http://127.0.0.1:$SERVICES_PORT
#   PORT           8097 (the upload service) FERRY_API     http://127.0.0.1:$FERRY_PORT
#   SECRET         ./secret (the JWT key)    LEASE         30s
#   FRONT          http://127.0.0.1:$PORT (where upload and status send their requests)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
FERRY=${FERRY:-ferry}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
QUEUE=${QUEUE:-uploads}
SECRET=${SECRET:-$here/secret}
SERVICES_URL=${SERVICES_URL:-http://127.0.0.1:${SERVICES_PORT:-8096}}
FERRY_API=${FERRY_API:-http://127.0.0.1:${FERRY_PORT:-8080}}
FRONT=${FRONT:-http://127.0.0.1:${PORT:-8097}}
export SERVICES_URL FERRY_API QUEUE

case "${1:-}" in
setup)
  # The JWT secret (the identity provider's, shared with ferry serve), and 2 active jobs per user.
  [ -s "$SECRET" ] || python3 -c 'import secrets; print(secrets.token_hex(32))' > "$SECRET"
  "$FERRY" limit set "$QUEUE" active --concurrency 2 --per-key --redis "$REDIS_URL"
  ;;
services)
  exec python3 "$here/services_standin.py" "${SERVICES_PORT:-8096}"
  ;;
serve)
  # Users' JWTs: their subject is their jobs' key, so limits count per user and each user sees
  # only their own jobs; 30 uploads a day and 10 status polls a minute per job.
  exec "$FERRY" serve --port "${FERRY_PORT:-8080}" --redis "$REDIS_URL" --jwt-secret-file "$SECRET" \
    --jwt-issuer https://uploads.example --jwt-audience ferry --jwt-subject-is-key \
    --rate-limit publish=30/d --rate-limit poll=10/m
  ;;
front)
  exec python3 "$here/upload_front.py" "${PORT:-8097}"
  ;;
worker)
  # Retries after 3 s, then 6 s (2^n x 3 s, no jitter); dead-lettered after the third attempt.
  exec "$FERRY" worker "$QUEUE" --redis "$REDIS_URL" --concurrency 4 --lease "${LEASE:-30s}" --max-attempts 3 \
    --min-backoff 3s --backoff exponential --jitter none --exec "python3 $here/processor.py" \
    --pass-env SERVICES_URL --pass-env STAGE_SECONDS
  ;;
token)
  exec python3 "$here/token.py" "$SECRET" "${2:?usage: run.sh token USER}"
  ;;
upload)
  # ./run.sh upload FILE TOKEN
  exec curl -s -X POST --data-binary "@${2:?usage: run.sh upload FILE TOKEN}" -H 'Content-Type: application/pdf' \
    -H "X-File-Name: $(basename "$2")" -H "Authorization: Bearer ${3:?usage: run.sh upload FILE TOKEN}" "$FRONT/uploads"
  ;;
status)
  # ./run.sh status JOB_ID TOKEN
  exec curl -s -H "Authorization: Bearer ${3:?usage: run.sh status JOB_ID TOKEN}" "$FRONT/uploads/${2:?}"
  ;;
*)
  echo "usage: run.sh setup|services|serve|front|worker|token USER|upload FILE TOKEN|status JOB_ID TOKEN" >&2
  exit 2
  ;;
esac
