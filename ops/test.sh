#!/usr/bin/env bash
# Runs Ferry's whole test suite against a throwaway redis-server on a free loopback port.
# Installs what is missing first and stops the server on every exit, also when tests fail.
# Arguments go to `swift test` (for example: ops/test.sh --filter PublisherTests); without
# arguments the sources are also linted with swift-format (.swift-format).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib.sh

ferry_install_dependencies
ferry_start_redis
export FERRY_TEST_REDIS_URL="$FERRY_REDIS_URL"

swift build --build-tests
status=0
swift test --skip-build --disable-xctest "$@" || status=$?
if [ "$#" -eq 0 ]; then
  swift format lint --strict --recursive Sources Tests Plugins Package.swift || status=1
fi
exit "$status"
