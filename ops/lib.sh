# Shared by ops/test.sh and ops/demo.sh: install what is missing, start a throwaway redis-server.
# Source it; it defines functions and changes nothing by itself.

# Installs the Debian packages and PyPI packages Ferry builds and tests with, only when missing.
ferry_install_dependencies() {
  # stunnel4 and openssl: the TLS sidecar test; prometheus: promtool for the alert rules; curl:
  # the admin endpoint tests; tzdata: cron schedules in a time zone (--tz); chromium: the
  # dashboard's tests in a real headless browser; wrk: ferry bench api's load.
  local wanted=(libhiredis-dev libcurl4-openssl-dev redis-server redis-tools stunnel4 openssl prometheus curl tzdata chromium wrk)
  local missing=()
  local package
  for package in "${wanted[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "ferry: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  local python_missing=()
  python3 -c 'import redis' >/dev/null 2>&1 || python_missing+=(redis)
  # redis-py's fast parser, for the strongest plain baseline of ferry bench worker.
  python3 -c 'import hiredis' >/dev/null 2>&1 || python_missing+=(hiredis)
  command -v check-jsonschema >/dev/null 2>&1 || python_missing+=(check-jsonschema)
  command -v yamllint >/dev/null 2>&1 || python_missing+=(yamllint)
  python3 -c 'import dockerfile_parse' >/dev/null 2>&1 || python_missing+=(dockerfile-parse)
  command -v kubernetes-validate >/dev/null 2>&1 || python_missing+=(kubernetes-validate)
  # Google's Functions Framework: a real Pub/Sub push handler for the push compatibility tests.
  command -v functions-framework >/dev/null 2>&1 || python_missing+=(functions-framework)
  # The HTTP API's contract tests: the document validates, and schemathesis's generated cases
  # against a live ferry serve all match it.
  python3 -c 'import openapi_spec_validator' >/dev/null 2>&1 || python_missing+=(openapi-spec-validator)
  python3 -c 'import schemathesis' >/dev/null 2>&1 || python_missing+=(schemathesis)
  # The dashboard's browser tests drive headless Chromium over the DevTools protocol.
  python3 -c 'import websocket' >/dev/null 2>&1 || python_missing+=(websocket-client)
  if [ "${#python_missing[@]}" -gt 0 ]; then
    echo "ferry: installing ${python_missing[*]} from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${python_missing[@]}"
  fi
  if ! command -v swift >/dev/null 2>&1; then
    echo "ferry: swift is not on PATH; install Swift 6.2 or later (https://www.swift.org/install/)" >&2
    return 1
  fi
}

# Prints a free TCP port on 127.0.0.1.
ferry_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Starts redis-server on a free loopback port in a temporary directory, exports
# FERRY_REDIS_URL and FERRY_REDIS_PORT, and stops the server and removes the directory on exit
# (also on failure or Ctrl-C).
ferry_start_redis() {
  FERRY_REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-redis.XXXXXX")
  FERRY_REDIS_PORT=$(ferry_free_port)
  redis-server --port "$FERRY_REDIS_PORT" --bind 127.0.0.1 --dir "$FERRY_REDIS_DIR" \
    --save '' --appendonly no --daemonize yes --pidfile "$FERRY_REDIS_DIR/redis.pid" \
    --logfile "$FERRY_REDIS_DIR/redis.log" >/dev/null
  trap ferry_stop_redis EXIT
  trap 'exit 130' INT TERM
  local _
  for _ in $(seq 1 100); do
    redis-cli -p "$FERRY_REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  redis-cli -p "$FERRY_REDIS_PORT" ping >/dev/null || { cat "$FERRY_REDIS_DIR/redis.log" >&2; return 1; }
  export FERRY_REDIS_PORT
  export FERRY_REDIS_URL="redis://127.0.0.1:$FERRY_REDIS_PORT"
  echo "ferry: throwaway redis-server at $FERRY_REDIS_URL" >&2
}

ferry_stop_redis() {
  if [ -n "${FERRY_REDIS_DIR:-}" ] && [ -f "$FERRY_REDIS_DIR/redis.pid" ]; then
    kill "$(cat "$FERRY_REDIS_DIR/redis.pid")" 2>/dev/null || true
    sleep 0.2
  fi
  [ -n "${FERRY_REDIS_DIR:-}" ] && rm -rf "$FERRY_REDIS_DIR"
  return 0
}
