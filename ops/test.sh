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

# The tests' own files (servers' output, browser profiles, keys, scratch directories, some
# 1,500 a run) and the build's (SwiftPM leaves empty TemporaryDirectory.* behind) go to a
# directory of this run's, removed with the Redis server on every exit, so runs do not fill
# the machine's /tmp.
FERRY_TEST_TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-tests.XXXXXX")
ferry_stop_test_run() {
  ferry_stop_redis
  rm -rf "$FERRY_TEST_TMPDIR"
}
trap ferry_stop_test_run EXIT
export TMPDIR="$FERRY_TEST_TMPDIR"

swift build --build-tests
# At most 24 tests at a time (Swift Testing starts every test at once otherwise). The suite's
# first seconds start dozens of `ferry`, `redis-server` and Python processes; with all 340 tests
# started together, that kept a 2-core machine busy long enough that in-process workers took
# 20-25 s to start their first job and tests waiting 30 s for a backlog to drain failed (three
# tests in each of three runs with two CPU hogs beside them). With 24 the suite takes as long
# (47-63 s here) and passed beside two and four hogs.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH="${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-24}"
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
