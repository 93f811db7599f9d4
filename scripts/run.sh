#!/usr/bin/env bash
# `make run`: LocalStack + the Vision One simulator + `cargo lambda watch`, then one scheduled
# run through the Lambda path, and what landed in S3.
source "$(dirname "$0")/lib.sh"
ensure_venv
ensure_localstack
cd "$ROOT"

BUCKET=tv1-demo
TOKEN_PARAM=/tv1/vision-one/token
KEY_PARAM=/tv1/ad-ingest/api-key
SIM_PORT=${SIM_PORT:-8089}
WATCH_PORT=${WATCH_PORT:-9000}
SIM_TOKEN="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

say "building"
cargo build --bins --features simulator
TV1="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tv1"

say "starting the Vision One simulator on 127.0.0.1:$SIM_PORT (log: .run/simulator.log)"
start_bg "$LOGS/simulator.log" env TV1_SIM_TOKEN="$SIM_TOKEN" "$TV1" simulate --port "$SIM_PORT" --entries 5000 --hours 26 --alerts 300 --detections 2000
wait_for simulator "http://127.0.0.1:$SIM_PORT/_sim/stats" 30 "$LOGS/simulator.log"

say "seeding bucket s3://$BUCKET and SecureString $TOKEN_PARAM"
aws s3 mb "s3://$BUCKET" >/dev/null 2>&1 || true
aws ssm put-parameter --name "$TOKEN_PARAM" --type SecureString --value "$SIM_TOKEN" --overwrite >/dev/null
say "tv1 rotate-key: a fresh ad-ingest API key in $KEY_PARAM"
API_KEY="$(API_KEY_PARAM="$KEY_PARAM" "$TV1" rotate-key 2>/dev/null)"

ENV="TV1_BASE_URL=http://127.0.0.1:$SIM_PORT,TV1_TOKEN_PARAM=$TOKEN_PARAM,BUCKET=$BUCKET,TV1_DEADLINE_MARGIN=5s,API_KEY_PARAM=$KEY_PARAM"

# Both functions also write OCSF Parquet (to s3://$BUCKET/ext/). In Lambda the accountId=
# partition comes from the invoked function's ARN; `cargo lambda watch`'s names no account.
ENV="$ENV,OCSF_OUTPUT=on,OCSF_ACCOUNT_ID=000000000000"
# AD batches are compacted per window: 10-second windows here so that the demo waits seconds
# (deployed: AdWindow, 5 minutes).
ENV="$ENV,AD_WINDOW=10s,AD_SETTLE=2s"
ENV="$ENV,AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_ACCESS_KEY_ID=test,AWS_SECRET_ACCESS_KEY=test,AWS_REGION=$AWS_REGION"
say "starting cargo lambda watch on 127.0.0.1:$WATCH_PORT (log: .run/watch.log)"
# An env file, since TV1_STREAMS holds commas: the three streams, the audit logs, Workbench
# alerts and OAT detections (events/schedule-alerts.json and schedule-oat.json are what their
# schedules send).
{ tr ',' '\n' <<<"$ENV"; echo "TV1_STREAMS=audit,alerts,oat"; } > "$LOGS/watch.env"
start_bg "$LOGS/watch.log" cargo lambda watch -A 127.0.0.1 -P "$WATCH_PORT" --env-file "$LOGS/watch.env"
for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$WATCH_PORT") 2>/dev/null && break; sleep 0.2; done

say "invoking audit-puller with events/schedule.json (an EventBridge scheduled event)"
cargo lambda invoke audit-puller --data-file events/schedule.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json > "$LOGS/summary.json" \
  || { echo "invoke failed; last lines of .run/watch.log:" >&2; tail -n 40 "$LOGS/watch.log" >&2; exit 1; }
python3 -m json.tool "$LOGS/summary.json"

say "objects in s3://$BUCKET"
aws s3 ls --recursive "s3://$BUCKET/"
say "checkpoint (s3://$BUCKET/vision-one/audit/_state/checkpoint.json)"
aws s3 cp "s3://$BUCKET/vision-one/audit/_state/checkpoint.json" -; echo
say "first lines of the first object"
first=$(aws s3 ls --recursive "s3://$BUCKET/vision-one/audit/dt=" | awk 'NR==1{print $4}')
aws s3 cp "s3://$BUCKET/$first" - | gunzip | sed -n '1,3p'

say "invoking audit-puller with events/schedule-alerts.json (the alerts stream's schedule)"
cargo lambda invoke audit-puller --data-file events/schedule-alerts.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json > "$LOGS/alerts-summary.json" \
  || { echo "invoke failed; last lines of .run/watch.log:" >&2; tail -n 40 "$LOGS/watch.log" >&2; exit 1; }
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print({k: s[k] for k in ("stream","outcome","records","objects","checkpoint_after")})' "$LOGS/alerts-summary.json"
say "Workbench alert versions (s3://$BUCKET/vision-one/alerts/): id, status, updatedDateTime, by object"
for key in $(aws s3 ls --recursive "s3://$BUCKET/vision-one/alerts/dt=" | awk '{print $4}' | tail -n 2); do
  aws s3 cp "s3://$BUCKET/$key" - | gunzip | sed -n '1,3p' \
    | python3 -c 'import json,sys; [print(" ", (l:=json.loads(x))["id"], l["status"], l["updatedDateTime"]) for x in sys.stdin]'
done

say "invoking audit-puller with events/schedule-oat.json (the oat stream's schedule)"
cargo lambda invoke audit-puller --data-file events/schedule-oat.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json > "$LOGS/oat-summary.json" \
  || { echo "invoke failed; last lines of .run/watch.log:" >&2; tail -n 40 "$LOGS/watch.log" >&2; exit 1; }
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print({k: s[k] for k in ("stream","outcome","records","objects","checkpoint_after")})' "$LOGS/oat-summary.json"
say "OAT detections (s3://$BUCKET/vision-one/oat/): uuid, risk, technique, detected, ingested"
key=$(aws s3 ls --recursive "s3://$BUCKET/vision-one/oat/dt=" | awk 'END{print $4}')
aws s3 cp "s3://$BUCKET/$key" - | gunzip | sed -n '1,3p' \
  | python3 -c 'import json,sys; [print(" ", (l:=json.loads(x))["uuid"], l["filters"][0]["riskLevel"], l["filters"][0]["mitreTechniqueIds"][0], l["detectedDateTime"], l["ingestedDateTime"]) for x in sys.stdin]'

say "test connection and status through the same function"
cargo lambda invoke audit-puller --data-file events/test-connection.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json; echo
cargo lambda invoke audit-puller --data-file events/status.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json | python3 -m json.tool

URL="http://127.0.0.1:$WATCH_PORT/lambda-url/ad-ingest"
post() { # file, extra curl args...
  local f="$1"; shift
  curl -sS -X POST "$URL/v1/events" -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' "$@" --data-binary "@$f"
  echo
}
say "ad-ingest: the Winlogbeat batch, gzip + base64 as API Gateway delivers it (events/ad-ingest-post.json)"
# `cargo lambda watch` cannot pass a binary body to a function URL as API Gateway does, so the
# gzip batch goes in as the API Gateway event itself; the other two go over HTTP.
# The samples were written on 2026-11-21; events of any age are stored in their own day, but they
# are moved to yesterday (the gzip body of the API Gateway event too) so that what lands is recent.
DAY="$(date -u -d yesterday +%F)"
python3 - "$API_KEY" "$DAY" "$LOGS" <<'PY'
import base64, gzip, json, sys
key, day, logs = sys.argv[1:]
ev = json.load(open("events/ad-ingest-post.json"))
body = gzip.decompress(base64.b64decode(ev["body"])).decode().replace("2026-11-21", day)
ev["body"] = base64.b64encode(gzip.compress(body.encode())).decode()
for h in ev["headers"]:
    ev["headers"][h] = ev["headers"][h].replace("REPLACE_WITH_KEY", key)
json.dump(ev, open(f"{logs}/ad-ingest-post.json", "w"))
for name in ("nxlog-batch.json", "native-batch.json", "fluentbit-winevtlog.ndjson", "otel-windowseventlog-hec.json"):
    text = open(f"events/ad/{name}").read().replace("2026-11-21", day)
    open(f"{logs}/{name}", "w").write(text)
PY
invoke_ad() { cargo lambda invoke ad-ingest --data-file "$LOGS/ad-ingest-post.json" -A 127.0.0.1 -P "$WATCH_PORT" --output-format json \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["statusCode"], r["body"])'; }
invoke_ad
say "ad-ingest: POST /v1/events with the NXLog and native sample batches (events/ad/)"
post "$LOGS/nxlog-batch.json"
post "$LOGS/native-batch.json"
say "the same Winlogbeat batch again (an agent retrying): a duplicate, nothing written twice"
invoke_ad
say "Fluent Bit-style NDJSON with X-Agent-Id, and OpenTelemetry events over Splunk HEC"
curl -sS -X POST "$URL/v1/events" -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/x-ndjson' \
  -H 'X-Agent-Id: fluent-bit-dc06' --data-binary "@$LOGS/fluentbit-winevtlog.ndjson"; echo
curl -sS -X POST "$URL/services/collector/event" -H "Authorization: Splunk $API_KEY" \
  --data-binary "@$LOGS/otel-windowseventlog-hec.json"; echo
say "a batch with a wrong key: refused, nothing written"
curl -sS -X POST "$URL/v1/events" -H 'Authorization: Bearer wrong' -H 'Content-Type: application/json' --data-binary "@$LOGS/native-batch.json"; echo
say "a Fluent Bit chunk with a 446-day-old System event (tests/field-cases/10): all four stored, the old one in its own day"
sed -n '/^{/,$p' tests/field-cases/10-hec-one-stale-event-rejects-batch.http \
  | curl -sS -X POST "$URL/services/collector/event" -H "Authorization: Splunk $API_KEY" --data-binary @-; echo
say "an NXLog CE event with its default zone-less local time, and one that cannot be read: 200, both quarantined with their reasons"
curl -sS -X POST "$URL/v1/events" -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
  --data '{"agent":{"id":"dc9"},"batch_id":"b1","events":[{"EventID":4624,"EventTime":"2026-11-21 11:00:05","Hostname":"DC9"},{"event_id":4624,"time":"yesterday","computer":"DC9"}]}'; echo
say "each batch landed as one object (s3://$BUCKET/active-directory/_landing/<window>/<agent>~<batch>)"
aws s3 ls --recursive "s3://$BUCKET/active-directory/_landing/"
# The window open now closes at its end plus AD_SETTLE (and a second for S3's clock).
sleep "$(python3 -c 'import time; t=time.time(); print(f"{(t // 10 + 1) * 10 + 3 - t:.1f}")')"
say "ad-compact (its scheduled event): the closed windows into the lake, OCSF and the agent list"
cargo lambda invoke ad-compact --data-file events/schedule.json -A 127.0.0.1 -P "$WATCH_PORT" --output-format json | python3 -m json.tool
say "GET /v1/agents"
curl -sS "$URL/v1/agents" -H "X-Api-Key: $API_KEY" | python3 -m json.tool
say "the compacted layout: one object per (category, day) and window, in s3://$BUCKET/active-directory/"
aws s3 ls --recursive "s3://$BUCKET/active-directory/" | { grep -v -e /_state/ -e /_landing/ || true; }
say "the quarantine (table active_directory_quarantine): index, reason, event"
for k in $(aws s3 ls --recursive "s3://$BUCKET/active-directory/quarantine/" | awk '{print $4}'); do
  aws s3 cp --quiet "s3://$BUCKET/$k" - | gzip -dc | python3 -c 'import json,sys
for l in sys.stdin:
    q = json.loads(l); print(q["agent_id"], q["index"], q["reason"][:110])'
done
say "OCSF Parquet in s3://$BUCKET/ext/ (OCSF_OUTPUT=on), read back with DuckDB"
rm -rf "$LOGS/ocsf"
aws s3 sync --quiet "s3://$BUCKET/ext/" "$LOGS/ocsf/"
"$VENV/bin/python" - "$LOGS/ocsf" <<'PY'
import duckdb, sys
print(duckdb.sql(f"""
  SELECT regexp_extract(filename, '/ocsf/([^/]+)/', 1) AS source, accountId, eventDay,
         any_value(class_name) AS class, count(*) AS records
  FROM read_parquet('{sys.argv[1]}/**/*.parquet', hive_partitioning = true, filename = true,
                    union_by_name = true)
  GROUP BY ALL ORDER BY ALL"""))
PY
