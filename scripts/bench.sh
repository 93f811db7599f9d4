#!/usr/bin/env bash
# `make bench`: release build, LocalStack, then every benchmark; prints a Markdown table.
source "$(dirname "$0")/lib.sh"
ensure_venv
ensure_localstack
cd "$ROOT"
say "cargo bench (release build; the first one takes several minutes on 2 cores)"
cargo bench --bench bench -- "$@"
