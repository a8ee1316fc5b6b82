#!/usr/bin/env bash
# Ferry's demo on a fresh machine: installs what is missing, builds, starts a throwaway local
# redis-server, publishes sample jobs (from ferry and from redis-cli, as any producer would),
# then shows them with redis-cli XRANGE and with ferry. The server is stopped on exit.
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
