#!/usr/bin/env bash
# Ferry's demo on a fresh machine: installs what is missing, builds, starts a throwaway local
# redis-server, publishes sample jobs (from ferry and from redis-cli, as any producer would),
# shows them with redis-cli XRANGE and with ferry, then runs a worker whose handler is a shell
# command: the jobs are processed, a poison job lands in the dead-letter stream with its reason.
# The server and the worker are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib.sh

ferry_install_dependencies
if [ -z "${FERRY_BIN:-}" ]; then
  swift build --product ferry
  FERRY_BIN="$(swift build --show-bin-path)/ferry"
fi
ferry() { "$FERRY_BIN" "$@"; }
ferry_start_redis
worker_pid=""
stop_demo() {
  [ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
  ferry_stop_redis
}
trap stop_demo EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "ferry publish: one job with attributes"
ferry publish emails --type send-welcome --data '{"to":"ada@example.com"}' --attr tenant=acme

step "ferry publish: the same idempotency key twice adds one job (same id printed)"
ferry publish emails --type send-receipt --data '{"order":42}' --idempotency-key order-42
ferry publish emails --type send-receipt --data '{"order":42}' --idempotency-key order-42

step "ferry publish: a payload from standard input, and a batch of three"
echo '{"to":"grace@example.com"}' | ferry publish emails --type send-welcome
ferry publish emails --type send-digest --data '{}' --count 3

step "redis-cli: any producer can XADD a job; this one has no type, so it breaks the format"
redis-cli -p "$FERRY_REDIS_PORT" XADD 'ferry:{emails}:jobs' '*' type send-welcome data '{"to":"linus@example.com"}'
redis-cli -p "$FERRY_REDIS_PORT" XADD 'ferry:{emails}:jobs' '*' data '{"oops":"no type"}'

step "redis-cli XRANGE 'ferry:{emails}:jobs' - + COUNT 2"
redis-cli -p "$FERRY_REDIS_PORT" XRANGE 'ferry:{emails}:jobs' - + COUNT 2

step "ferry peek emails: every entry checked against the wire format"
ferry peek emails

step "a poison job: its handler exits 65 (EX_DATAERR), which dead-letters it at once"
ferry publish emails --type send-welcome --data '{"to":"not-an-address"}' --job-id poison-1

step "ferry worker emails --exec …: a shell command handles every job (JSON log lines below)"
# The handler reads the job's data on stdin; metadata arrives as FERRY_* variables.
handler='payload=$(cat)
case "$payload" in
  *not-an-address*) echo "invalid recipient in $payload" >&2; exit 65 ;;
esac
echo "  handled $FERRY_JOB_TYPE $FERRY_JOB_ID (attempt $FERRY_DELIVERY_ATTEMPT): $payload" >&2'
"$FERRY_BIN" worker emails --exec "$handler" --lease 5s --shutdown-grace 5s > "$FERRY_REDIS_DIR/worker.log" &
worker_pid=$!
for _ in $(seq 1 100); do
  [ "$(redis-cli -p "$FERRY_REDIS_PORT" XLEN 'ferry:{emails}:dead')" -ge 2 ] && \
    [ "$(redis-cli -p "$FERRY_REDIS_PORT" XPENDING 'ferry:{emails}:jobs' workers | head -1)" = 0 ] && break
  sleep 0.1
done
kill -TERM "$worker_pid"
wait "$worker_pid"  # a graceful stop exits 0
worker_pid=""
grep -E '"event":"(job_completed|dead_lettered)"' "$FERRY_REDIS_DIR/worker.log" | head -4

step "the dead-letter stream: the malformed entry and the poison job, each with its reason"
redis-cli -p "$FERRY_REDIS_PORT" --no-raw XRANGE 'ferry:{emails}:dead' - + | \
  grep -A1 -E '"(type|job_id|dead_letter.error_class|dead_letter.error|dead_letter.delivery_count)"' | grep -v '^--'

step "ferry job status emails poison-1: the job's history as the worker recorded it"
ferry job status emails poison-1

step "ferry inspect: the queue, its group and consumers, and the dead-letter count at a glance"
ferry inspect emails

step "ferry dlq list emails: the dead-lettered jobs; after a fix, ferry dlq redrive puts them back"
ferry dlq list emails
