//! The field cases (`tests/field-cases/`, see its README): requests shaped exactly as Vector,
//! Fluent Bit, the OpenTelemetry Collector, NXLog and Winlogbeat send them, which the endpoint
//! once mishandled. Each is sent as it is to a real `tv1 serve` on LocalStack, and what landed
//! is compared with the values the events really have.

use crate::common::*;
use serde_json::{Value, json};
use tv1_connector::lake::ocsf::windows::from_line;

fn case(name: &str) -> Vec<HttpFileRequest> {
    let path = format!("{}/tests/field-cases/{name}", env!("CARGO_MANIFEST_DIR"));
    http_file(&std::fs::read_to_string(path).unwrap())
}

/// Sends one request of a case as the agent did, with the key filled in; returns status and JSON.
async fn send(served: &Served, key: &str, req: &HttpFileRequest) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(
            req.method.parse().unwrap(),
            format!("{}{}", served.url, req.path),
        )
        .body(req.body.clone());
    for (k, v) in &req.headers {
        r = r.header(k, v.replace("<ad-ingest key>", key));
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, json_of(resp).await)
}

struct Field {
    lake: AdLake,
    served: Served,
}

impl Field {
    async fn new() -> Field {
        let lake = ad_lake().await;
        let served = serve(&[("API_KEY_PARAM", &lake.param), ("BUCKET", &lake.bucket)]).await;
        Field { lake, served }
    }
    /// Sends every request of a case; each must be a 2xx.
    async fn send_case(&self, name: &str) -> Vec<Value> {
        let mut replies = Vec::new();
        for req in case(name) {
            let (status, body) = send(&self.served, &self.lake.key, &req).await;
            assert_eq!(status, 200, "{name}: {body}");
            replies.push(body);
        }
        replies
    }
    async fn lines(&self) -> Vec<(String, Value)> {
        lake_lines(&self.lake.s3, &self.lake.bucket).await
    }
    async fn quarantined(&self) -> Vec<(String, Value)> {
        quarantine_lines(&self.lake.s3, &self.lake.bucket).await
    }
    /// The agent list, once the batches landed so far are compacted.
    async fn agents(&self) -> Value {
        compact_landed(&self.lake.s3, &self.lake.bucket).await;
        let r = reqwest::Client::new()
            .get(format!("{}/v1/agents", self.served.url))
            .header("authorization", format!("Bearer {}", self.lake.key))
            .send()
            .await
            .unwrap();
        json_of(r).await
    }
}

/// `<partition>/<agent>~` of a stored line: the folder of its object and the agent that sent it.
fn placed((key, line): &(String, Value)) -> String {
    let dir = &key[..key.rfind('/').unwrap() + 1];
    format!("{dir}{}~", line["agent_id"].as_str().unwrap())
}

fn record(lines: &[(String, Value)], id: u64) -> &(String, Value) {
    lines
        .iter()
        .find(|(_, l)| l["record_id"] == id)
        .unwrap_or_else(|| panic!("record {id} not stored: {lines:?}"))
}

fn ocsf(line: &Value) -> Value {
    from_line(&line.to_string()).expect("an OCSF event")
}

#[tokio::test]
async fn vector_events_with_their_timestamp_moved_to_hec_time_keep_every_attribute() {
    if skip_without_localstack() {
        return;
    }
    let f = Field::new().await;
    f.send_case("01-vector-hec-timestamp-stripped.http").await;
    let lines = f.lines().await;
    assert_eq!(lines.len(), 2);
    let (_, logon) = record(&lines, 3301001);
    let key = placed(record(&lines, 3301001));
    assert_eq!(logon["shape"], "vector_windows_event_log");
    assert_eq!(
        logon["time"], "2026-11-21T10:00:01.234Z",
        "HEC time, to the millisecond"
    );
    assert!(
        key.contains("category=logon/dt=2026-11-21/dc21.corp.example~"),
        "{key}"
    );
    let e = ocsf(logon);
    assert_eq!(e["time"], 1795255201234i64);
    assert_eq!(
        e["user"],
        json!({"name": "jdoe", "domain": "EXAMPLE", "uid": "S-1-5-21-1111111111-2222222222-3333333333-1105"})
    );
    assert_eq!(
        (e["logon_type_id"].as_i64(), e["auth_protocol_id"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        e["src_endpoint"],
        json!({"ip": "10.20.30.40", "port": 51234})
    );
    assert_eq!(
        e["metadata"]["log_provider"],
        "Microsoft-Windows-Security-Auditing"
    );
    let (_, member) = record(&lines, 3301002);
    let e = ocsf(member);
    assert_eq!(e["group"]["name"], "Domain Admins");
    assert_eq!(
        e["group"]["uid"],
        "S-1-5-21-1111111111-2222222222-3333333333-512"
    );
    assert_eq!(
        e["user"],
        json!({"name": "svc-report", "uid": "S-1-5-21-1111111111-2222222222-3333333333-2201"})
    );
    assert_eq!(e["actor"]["user"]["name"], "opsadmin");
}

#[tokio::test]
async fn a_replay_after_vector_restarts_under_a_new_channel_is_a_duplicate_of_one_agent() {
    if skip_without_localstack() {
        return;
    }
    let f = Field::new().await;
    let replies = f
        .send_case("02-vector-channel-changes-on-restart.http")
        .await;
    assert_eq!(replies[0], json!({"text": "Success", "code": 0}));
    assert_eq!(replies[1], json!({"text": "Success", "code": 0}));
    assert_eq!(f.lines().await.len(), 1, "the replay stored nothing");
    let agents = f.agents().await;
    assert_eq!(agents["count"], 1, "{agents}");
    let a = &agents["agents"][0];
    assert_eq!(a["id"], "dc21.corp.example");
    assert_eq!(
        (
            a["events_received"].as_u64(),
            a["batches_received"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn hec_agents_without_host_or_channel_are_one_agent_per_domain_controller() {
    if skip_without_localstack() {
        return;
    }
    let f = Field::new().await;
    f.send_case("03-hec-no-host-no-channel-agents-collapse.http")
        .await;
    let agents = f.agents().await;
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "dc31.corp.example",
            "dc32.corp.example",
            "dc33.corp.example"
        ]
    );
    assert!(
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "connected")
    );
    let lines = f.lines().await;
    assert_eq!(lines.len(), 3);
    // The OTel event's own time, to the 100 ns Windows keeps (stored to the microsecond here:
    // the digits after it are zero).
    assert_eq!(
        record(&lines, 55210).1["time"],
        "2026-11-21T10:00:03.055123Z"
    );
}

#[tokio::test]
async fn log_cleared_names_who_cleared_it_from_user_data_in_every_shape() {
    if skip_without_localstack() {
        return;
    }
    let f = Field::new().await;
    f.send_case("04-security-log-cleared-1102-userdata.http")
        .await;
    let lines = f.lines().await;
    assert_eq!(lines.len(), 3);
    for (record_id, shape) in [
        (14224, "winlogbeat"),
        (99120, "windows_xml"),
        (42007, "otel_windows_event_log"),
    ] {
        let (_, l) = record(&lines, record_id);
        assert_eq!(l["shape"], shape);
        let e = ocsf(l);
        assert_eq!(
            e["actor"]["user"],
            json!({"name": "mallory.admin", "domain": "EXAMPLE", "uid": "S-1-5-21-1111111111-2222222222-3333333333-500"}),
            "{shape}"
        );
        assert_eq!(
            (e["class_uid"].as_i64(), e["activity_id"].as_i64()),
            (Some(3004), Some(4))
        );
    }
    assert_eq!(
        record(&lines, 99120).1["time"],
        "2026-11-21T10:06:01.331102Z"
    );
}

#[tokio::test]
async fn nxlog_local_times_are_quarantined_naming_the_field_or_read_in_the_declared_zone() {
    if skip_without_localstack() {
        return;
    }
    let f = Field::new().await;
    // As NXLog CE sends them by default: no zone anywhere. Never taken as UTC.
    let replies = f.send_case("05-nxlog-ce-eventtime-local.http").await;
    for r in &replies {
        assert_eq!(
            (r["status"].as_str(), r["quarantined"].as_u64()),
            (Some("accepted"), Some(1)),
            "{r}"
        );
        let why = r["quarantine"][0]["reason"].as_str().unwrap();
        assert!(
            why.contains("EventTime") && why.contains("no time zone"),
            "{why}"
        );
    }
    assert!(f.lines().await.is_empty());
    assert_eq!(f.quarantined().await.len(), 2);
    // The same events from an NXLog that declares its zone (X-Agent-Timezone).
    for mut req in case("05-nxlog-ce-eventtime-local.http") {
        req.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("x-agent-id"));
        req.headers
            .push(("X-Agent-Id".into(), "nxlog-dc51-berlin".into()));
        req.headers
            .push(("X-Agent-Timezone".into(), "Europe/Berlin".into()));
        let (status, body) = send(&f.served, &f.lake.key, &req).await;
        assert_eq!(
            (status, body["quarantined"].as_u64()),
            (200, Some(0)),
            "{body}"
        );
    }
    let lines = f.lines().await;
    let (key, first) = record(&lines, 4410021);
    assert_eq!(first["time"], "2026-11-21T10:00:05Z");
    assert_eq!(first["time_original"], "2026-11-21 11:00:05");
    assert!(key.contains("/dt=2026-11-21/"), "{key}");
    let (key, second) = record(&lines, 4410977);
    assert_eq!(second["time"], "2026-11-21T23:30:10Z");
    assert!(
        key.contains("/dt=2026-11-21/"),
        "local midnight had passed, UTC had not: {key}"
    );
    let agents = f.agents().await;
    assert_eq!(agents["agents"][0]["id"], "nxlog-dc51", "{agents}");
    assert_eq!(agents["agents"][0]["events_quarantined"], 2, "{agents}");
    assert_eq!(agents["agents"][1]["events_quarantined"], 0, "{agents}");
}

#[tokio::test]
async fn an_old_event_is_stored_in_its_own_day_and_the_queue_moves_on() {
    if skip_without_localstack() {
        return;
    }
    let f = Field::new().await;
    let replies = f.send_case("06-nxlog-old-event-resend-loop.http").await;
    assert_eq!(replies[0]["status"], "accepted");
    let lines = f.lines().await;
    let (_, l) = record(&lines, 118);
    let key = placed(record(&lines, 118));
    assert!(
        key.contains("category=system/dt=2025-09-01/nxlog-dc52~"),
        "{key}"
    );
    assert_eq!(l["time"], "2025-09-01T03:12:44Z");
}

#[tokio::test]
async fn fluent_bits_daylight_saving_offset_is_corrected_and_the_original_kept() {
    if skip_without_localstack() {
        return;
    }
    let f = Field::new().await;
    f.send_case("07-fluentbit-winevtlog-dst-offset.http").await;
    let lines = f.lines().await;
    let (_, summer) = record(&lines, 991002);
    let key = placed(record(&lines, 991002));
    assert_eq!(summer["time"], "2026-07-10T10:48:24Z");
    assert_eq!(summer["time_original"], "2026-07-10 12:48:24 +0100");
    assert!(summer["time_fix"].as_str().unwrap().contains("Fluent Bit"));
    assert!(key.contains("/dt=2026-07-10/dc61.corp.example~"), "{key}");
    let (_, winter) = record(&lines, 1204410);
    assert_eq!(winter["time"], "2026-11-21T10:00:05Z");
    assert_eq!(ocsf(winter)["time"], 1795255205000i64);
}

#[tokio::test]
async fn one_old_event_in_a_chunk_costs_nothing_of_the_others() {
    if skip_without_localstack() {
        return;
    }
    let f = Field::new().await;
    let replies = f
        .send_case("10-hec-one-stale-event-rejects-batch.http")
        .await;
    assert_eq!(replies[0], json!({"text": "Success", "code": 0}));
    let lines = f.lines().await;
    assert_eq!(lines.len(), 4);
    for id in [501001, 501002, 501003] {
        assert!(
            placed(record(&lines, id)).contains("category=logon/dt=2026-11-21/dc81.corp.example~")
        );
    }
    assert!(
        placed(record(&lines, 12)).contains("category=system/dt=2025-09-01/dc81.corp.example~")
    );
    // A resend of the chunk (the agent never saw the reply) stores nothing again.
    f.send_case("10-hec-one-stale-event-rejects-batch.http")
        .await;
    assert_eq!(f.lines().await.len(), 4);
}
