#!/usr/bin/env bash
# `make run`: LocalStack + the Vision One simulator + `cargo lambda watch`, then one scheduled
# run through the Lambda path, and what landed in S3.
source "$(dirname "$0")/lib.sh"
ensure_venv
ensure_localstack
cd "$ROOT"

BUCKET=tv1-demo
TOKEN_PARAM=/tv1/vision-one/token
SIM_PORT=${SIM_PORT:-8089}
WATCH_PORT=${WATCH_PORT:-9000}
SIM_TOKEN="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

say "building"
cargo build --bins

say "starting the Vision One simulator on 127.0.0.1:$SIM_PORT (log: .run/simulator.log)"
start_bg "$LOGS/simulator.log" env TV1_SIM_TOKEN="$SIM_TOKEN" target/debug/tv1 simulate --port "$SIM_PORT" --entries 5000 --hours 26
wait_for simulator "http://127.0.0.1:$SIM_PORT/_sim/stats" 30 "$LOGS/simulator.log"

say "seeding bucket s3://$BUCKET and SecureString $TOKEN_PARAM"
aws s3 mb "s3://$BUCKET" >/dev/null 2>&1 || true
aws ssm put-parameter --name "$TOKEN_PARAM" --type SecureString --value "$SIM_TOKEN" --overwrite >/dev/null

ENV="TV1_BASE_URL=http://127.0.0.1:$SIM_PORT,TV1_TOKEN_PARAM=$TOKEN_PARAM,BUCKET=$BUCKET,TV1_DEADLINE_MARGIN=5s"
ENV="$ENV,AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_ACCESS_KEY_ID=test,AWS_SECRET_ACCESS_KEY=test,AWS_REGION=$AWS_REGION"
say "starting cargo lambda watch on 127.0.0.1:$WATCH_PORT (log: .run/watch.log)"
start_bg "$LOGS/watch.log" cargo lambda watch -A 127.0.0.1 -P "$WATCH_PORT" --env-vars "$ENV"
for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$WATCH_PORT") 2>/dev/null && break; sleep 0.2; done

say "invoking audit-puller with events/schedule.json (an EventBridge scheduled event)"
cargo lambda invoke audit-puller --data-file events/schedule.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json > "$LOGS/summary.json" \
  || { echo "invoke failed; last lines of .run/watch.log:" >&2; tail -n 40 "$LOGS/watch.log" >&2; exit 1; }
python3 -m json.tool "$LOGS/summary.json"

say "objects in s3://$BUCKET"
aws s3 ls --recursive "s3://$BUCKET/"
say "checkpoint (s3://$BUCKET/vision-one/audit/_state/checkpoint.json)"
aws s3 cp "s3://$BUCKET/vision-one/audit/_state/checkpoint.json" -
say "first lines of the first object"
first=$(aws s3 ls --recursive "s3://$BUCKET/vision-one/audit/dt=" | awk 'NR==1{print $4}')
aws s3 cp "s3://$BUCKET/$first" - | gunzip | head -n 3

say "test connection and status through the same function"
cargo lambda invoke audit-puller --data-file events/test-connection.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json; echo
cargo lambda invoke audit-puller --data-file events/status.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json | python3 -m json.tool
