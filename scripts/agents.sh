#!/usr/bin/env bash
# `make agents`: installs the real forwarding agents the agent tests drive (tests/agents.rs):
# syslog-ng with its http() destination, from Debian, and Splunk's JavaScript HEC logging
# library, from npm (pinned by tools/hec-client/package-lock.json); and curl, the TLS client of
# tests/serve.rs. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! { command -v syslog-ng >/dev/null && ls /usr/lib/syslog-ng/*/libhttp.so >/dev/null 2>&1; }; then
  say "installing syslog-ng-core and syslog-ng-mod-http (Debian)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends syslog-ng-core syslog-ng-mod-http >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && \
         $SUDO apt-get install -y -q --no-install-recommends syslog-ng-core syslog-ng-mod-http >/dev/null; }
  # The package may start a system syslog-ng; the tests run their own.
  { command -v service >/dev/null && $SUDO service syslog-ng stop >/dev/null 2>&1; } || true
fi
say "syslog-ng: $(syslog-ng --version | head -1)"

# curl is the plain TLS client of tv1 serve's HTTPS test (tests/serve.rs).
if ! command -v curl >/dev/null; then
  say "installing curl (Debian)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends curl ca-certificates >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && \
         $SUDO apt-get install -y -q --no-install-recommends curl ca-certificates >/dev/null; }
fi
say "curl: $(curl --version | head -1 | cut -d' ' -f1-2)"

if [ ! -d "$ROOT/tools/hec-client/node_modules/splunk-logging" ]; then
  say "installing splunk-logging (npm, tools/hec-client)"
  (cd "$ROOT/tools/hec-client" && npm ci --no-audit --no-fund --loglevel=error)
fi
say "splunk-logging: $(node -p 'require("'"$ROOT"'/tools/hec-client/node_modules/splunk-logging/package.json").version')"
