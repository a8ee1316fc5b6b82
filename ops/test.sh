#!/usr/bin/env bash
# Runs Ferry's whole test suite against a throwaway redis-server on a free loopback port.
# Installs what is missing first and stops the server on every exit, also when tests fail.
# Arguments go to `swift test` (for example: ops/test.sh --filter PublisherTests); without
# arguments the suite runs in two parts (the HTTP API's heavy tests after the rest) and the
# sources are also linted with swift-format (.swift-format).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib.sh

ferry_install_dependencies
ferry_start_redis
export FERRY_TEST_REDIS_URL="$FERRY_REDIS_URL"

swift build --build-tests
status=0
if [ "$#" -eq 0 ]; then
  # Four runs: the HTTP API's tests and the examples' (a headless browser, schemathesis, many
  # ferry serve and worker processes) and the ops kit's (a dozen Python validators started at
  # once) load a 2-core machine enough to stall the core suite's timing tests past their leases
  # when they run beside it (measured: eight tests past 30 s waits with the ops tests beside
  # them, none without), so each runs after the one before.
  swift test --skip-build --disable-xctest --skip FerryAPITests --skip ExampleTests --skip OpsTests || status=$?
  swift test --skip-build --disable-xctest --filter OpsTests || status=$?
  swift test --skip-build --disable-xctest --filter FerryAPITests || status=$?
  swift test --skip-build --disable-xctest --filter ExampleTests || status=$?
  swift format lint --strict --recursive Sources Tests Plugins Package.swift || status=1
else
  swift test --skip-build --disable-xctest "$@" || status=$?
fi
exit "$status"
