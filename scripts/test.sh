#!/usr/bin/env bash
# `make test`: unit tests, then integration tests against LocalStack (S3 + SSM) and the simulator.
source "$(dirname "$0")/lib.sh"
ensure_venv
ensure_localstack
cd "$ROOT"
say "cfn-lint infra/template.yaml (offline)"
cfn-lint infra/template.yaml
say "cargo test"
# Tests that need LocalStack fail instead of skipping when it is not there.
TV1_REQUIRE_LOCALSTACK=1 cargo test --all-targets "$@"
