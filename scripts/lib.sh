# Shared by run.sh and test.sh: install what is missing, start LocalStack when it is not
# already running, and stop on exit only what this script started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOGS="$ROOT/.run"
REQS="$ROOT/tools/requirements-localstack.txt"
CARGO_LAMBDA_VERSION=1.9.2
LOCALSTACK_URL=http://127.0.0.1:4566
mkdir -p "$LOGS"

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL="$LOCALSTACK_URL"
export PATH="$VENV/bin:$PATH"

STARTED_PIDS=()
cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Starts a command in its own process group, output to a log file, stopped on exit.
start_bg() {
  local log="$1"; shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  STARTED_PIDS+=("$!")
}

wait_for() {
  local what="$1" url="$2" secs="$3" log="$4"
  for _ in $(seq 1 $((secs * 5))); do
    curl -sf -o /dev/null "$url" && return 0
    sleep 0.2
  done
  echo "error: $what did not come up within ${secs}s; last lines of $log:" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

ensure_venv() {
  local stamp="$VENV/.installed-$(cat "$REQS" | sha256sum | cut -c1-16)-cl$CARGO_LAMBDA_VERSION"
  [ -f "$stamp" ] && return 0
  say "installing LocalStack and cargo-lambda into .venv (once)"
  python3 -m venv "$VENV"
  # --no-deps: the pins are the exact working set (see tools/README.md).
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$REQS"
  "$VENV/bin/pip" install -q --disable-pip-version-check "cargo-lambda==$CARGO_LAMBDA_VERSION"
  touch "$stamp"
}

ensure_localstack() {
  if curl -sf -o /dev/null "$LOCALSTACK_URL/_localstack/health"; then
    say "LocalStack already running on $LOCALSTACK_URL (left running)"
    return 0
  fi
  say "starting LocalStack on $LOCALSTACK_URL (log: .run/localstack.log)"
  local data; data="$(mktemp -d /tmp/tv1-localstack.XXXXXX)"
  start_bg "$LOGS/localstack.log" env GATEWAY_LISTEN=127.0.0.1:4566 SERVICES=s3,ssm DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 LOCALSTACK_VOLUME_DIR="$data" \
    "$VENV/bin/python" -m localstack.runtime.main
  wait_for LocalStack "$LOCALSTACK_URL/_localstack/health" 90 "$LOGS/localstack.log"
}
