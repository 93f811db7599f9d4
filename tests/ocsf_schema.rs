//! The OCSF validator (`tools/ocsf/validate.py`, built on the vendored OCSF 1.1.0 definitions)
//! accepts valid events and names what is wrong with invalid ones, so OCSF output can be checked
//! against the schema itself rather than against our own idea of it.

use crate::common::{self, ocsf_validate};

/// Runs the validator over a JSON Lines file: (all valid, its report).
fn validate(file: &std::path::Path) -> (bool, String) {
    let events: Vec<serde_json::Value> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    ocsf_validate(&events)
}

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/ocsf/examples")
        .join(name)
}

#[test]
fn valid_events_pass() {
    let (ok, out) = validate(&example("valid.jsonl"));
    assert!(ok, "{out}");
}

#[test]
fn each_kind_of_mistake_is_named() {
    let (ok, out) = validate(&example("invalid.jsonl"));
    assert!(!ok);
    for expected in [
        "category_uid 2 is not 3 (iam)",
        "type_uid 300202 is not class_uid * 100 + activity_id (300201)",
        "authentication.user: required attribute missing",
        "authentication.time: 'now' is not timestamp_t",
        "authentication.severity_id: 9 is not one of",
        "authentication.metadata.version: required attribute missing",
        "authentication.metadata.product.vendor_name: required attribute missing",
        "authentication.bogus: not an attribute of authentication",
        "detection_finding.observables[0].type_id: 42 is not one of",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

/// Every Vision One audit entry the simulator makes (every category, activity, access type,
/// both timestamp forms), plus entries missing fields, maps to a valid OCSF 1.1.0 event.
#[test]
fn audit_entries_map_to_valid_ocsf() {
    use tv1_connector::audit::segment::Item;
    let from = chrono::Utc::now() - chrono::Duration::hours(3);
    let mut entries: Vec<String> =
        tv1_connector::audit::simulate::generate(&tv1_connector::audit::simulate::Generate {
            count: 2000,
            from,
            to: from + chrono::Duration::hours(2),
            ..Default::default()
        })
        .into_iter()
        .map(|e| e.json)
        .collect();
    entries.extend(
        [
            r#"{"loggedDateTime":"2026-11-21T10:00:00Z"}"#,
            r#"{"loggedDateTime":"2026-11-21T10:00:00Z","accessType":"Service Provider API","loggedUserMailAddress":"x@y"}"#,
            r#"{"loggedDateTime":"2026-11-21T10:00:00Z","category":"Logon and Logoff","activity":"Sign in with SSO","result":"Successful","details":null}"#,
        ]
        .map(String::from),
    );
    let mut events = Vec::new();
    let mut classes = std::collections::BTreeSet::new();
    for raw in &entries {
        let value = serde_json::value::RawValue::from_string(raw.clone()).unwrap();
        let item = Item::parse(&value).unwrap();
        let id = tv1_connector::lake::encode::record_id(&item.hash, 0);
        let e = tv1_connector::lake::ocsf::audit::to_ocsf(raw, &id, item.time.unwrap()).unwrap();
        classes.insert(e["class_uid"].as_u64().unwrap());
        events.push(e);
    }
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        vec![3002, 3004, 6003]
    );
    let (ok, report) = ocsf_validate(&events);
    assert!(
        ok,
        "{}",
        report.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// Every sample in `events/ad/` (all nine agent shapes), stored as ad-ingest stores it, maps to a
/// valid OCSF 1.1.0 event of the class its event id means, with the facts the event carries.
#[test]
fn every_ad_sample_maps_to_valid_ocsf_with_the_facts_it_carries() {
    use tv1_connector::ad::{Body, HttpRequest, Ingest, Sender};
    // Never reaches AWS: `prepare` is the request's CPU work only.
    let ingest = Ingest::offline(&[]).unwrap();
    let mut events = Vec::new();
    for (name, path, agent) in [
        ("winlogbeat-batch.json", "/v1/events", None),
        ("nxlog-batch.json", "/v1/events", None),
        ("native-batch.json", "/v1/events", None),
        ("fluentbit-winevtlog.ndjson", "/v1/events", Some("fb6")),
        ("fluentbit-winlog.ndjson", "/v1/events", Some("fb7")),
        (
            "vector-windows-event-log.ndjson",
            "/v1/events",
            Some("vec8"),
        ),
        (
            "otel-windowseventlog-hec.json",
            "/services/collector/event",
            None,
        ),
        ("windows-xml-hec.json", "/services/collector/event", None),
        ("windows-text-hec.json", "/services/collector/event", None),
    ] {
        let body = common::sample_moved_to_yesterday(name);
        let req = HttpRequest {
            method: "POST",
            path,
            authorization: None,
            x_api_key: None,
            content_type: Some("application/json"),
            content_encoding: None,
            body: Body::Bytes(body.as_bytes()),
            sender: Sender {
                agent_id: agent,
                ..Sender::default()
            },
        };
        let prepared = ingest
            .prepare(&req, chrono::Utc::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for line in prepared.lake_lines() {
            let e = tv1_connector::lake::ocsf::windows::from_line(&line)
                .unwrap_or_else(|| panic!("{name}: {line}"));
            events.push(e);
        }
    }
    // What each event id means (the Windows documentation), written out rather than derived.
    let expected: std::collections::HashMap<&str, (u64, u64)> = [
        ("4624", (3002, 1)),
        ("4625", (3002, 1)),
        ("4634", (3002, 2)),
        ("4769", (3002, 4)),
        ("4720", (3001, 1)),
        ("4740", (3001, 9)),
        ("4728", (3006, 3)),
        ("4662", (3004, 99)),
        ("5136", (3004, 3)),
        ("7045", (3004, 1)),
        ("1102", (3004, 4)),
    ]
    .into_iter()
    .collect();
    assert_eq!(events.len(), 21);
    for e in &events {
        let id = e["metadata"]["event_code"].as_str().unwrap();
        let (class, activity) = expected[id];
        assert_eq!(
            (e["class_uid"].as_u64(), e["activity_id"].as_u64()),
            (Some(class), Some(activity)),
            "event {id}"
        );
        if id == "4625" {
            assert_eq!(e["status_id"], 2, "a failed logon fails: {e}");
        }
    }
    let find = |shape: &str, id: &str| {
        events
            .iter()
            .find(|e| e["unmapped"]["shape"] == shape && e["metadata"]["event_code"] == id)
            .unwrap_or_else(|| panic!("{shape} {id}"))
    };
    let wlb = find("winlogbeat", "4624");
    assert_eq!(wlb["user"]["name"], "alice");
    assert_eq!(wlb["src_endpoint"]["ip"], "10.0.4.17");
    assert_eq!(wlb["auth_protocol"], "Kerberos");
    assert_eq!(find("nxlog", "4728")["group"]["name"], "Domain Admins");
    assert_eq!(find("nxlog", "4728")["user"]["name"], "svc-backup");
    assert_eq!(
        find("fluent_bit_winevtlog", "4624")["user"]["name"],
        "alice"
    );
    assert_eq!(find("fluent_bit_winlog", "4625")["user"]["name"], "mallory");
    assert_eq!(
        find("vector_windows_event_log", "4728")["user"]["name"],
        "bob"
    );
    assert_eq!(
        find("otel_windows_event_log", "5136")["entity"]["name"],
        "CN=Policies,CN=System,DC=corp,DC=example"
    );
    assert_eq!(find("windows_xml", "4740")["user"]["name"], "carol");
    assert_eq!(find("native", "7045")["entity"]["name"], "PSEXESVC");
    assert_eq!(find("windows_text", "4625")["status_id"], 2);
    let (ok, report) = ocsf_validate(&events);
    assert!(ok, "{report}");
}

/// Stored lines of `items` as the puller writes them (`_id` first, the item unchanged).
fn stored_lines(items: impl IntoIterator<Item = String>) -> Vec<String> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let mut line = Vec::new();
            tv1_connector::lake::encode::line_with_fields(
                item.as_bytes(),
                &[("_id", &format!("{i:032x}"))],
                &mut line,
            );
            String::from_utf8(line).unwrap()
        })
        .collect()
}

fn sample_items(name: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vision-one")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Every alert version the simulator makes and every sample shape (SAE and TI alerts, an older
/// schema, open, in progress and closed) maps to a valid Detection Finding whose lifecycle is
/// the version's, and which names the alert, its techniques and its indicators.
#[test]
fn alert_versions_map_to_valid_detection_findings() {
    use tv1_connector::lake::ocsf::Dataset;
    let now = chrono::Utc::now();
    let mut items: Vec<String> = tv1_connector::audit::simulate::generate_alerts(
        &tv1_connector::audit::simulate::GenerateAlerts {
            count: 300,
            from: now - chrono::Duration::hours(3),
            to: now,
            change_after_secs: (60, 3600),
            seed: 7,
        },
    )
    .into_iter()
    .map(|e| e.json)
    .collect();
    items.extend(sample_items("alerts.jsonl"));
    let mut events = Vec::new();
    let mut activities = std::collections::BTreeSet::new();
    let mut statuses = std::collections::BTreeSet::new();
    for line in stored_lines(items) {
        let e = Dataset::Alerts
            .event(&line)
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(e["class_uid"], 2004);
        activities.insert(e["activity_id"].as_i64().unwrap());
        statuses.insert(e["status_id"].as_i64().unwrap());
        events.push(e);
    }
    assert_eq!(activities.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(statuses.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4]);
    let sae = events
        .iter()
        .find(|e| e["finding_info"]["uid"] == "WB-9002-20220906-00022")
        .unwrap();
    assert_eq!(
        sae["finding_info"]["attacks"][1]["sub_technique"]["uid"],
        "T1548.002"
    );
    assert_eq!(sae["observables"][0]["value"].as_str().unwrap().len(), 84);
    let ti = events
        .iter()
        .find(|e| e["finding_info"]["uid"] == "WB-9002-20240101-00001")
        .unwrap();
    assert!(
        ti.get("device").is_none(),
        "two hosts: resources, not one device"
    );
    assert_eq!(ti["resources"].as_array().unwrap().len(), 3);
    assert_eq!(ti["observables"][1]["type_id"], 2);
    let (ok, report) = ocsf_validate(&events);
    assert!(
        ok,
        "{}",
        report.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// Every detection the simulator makes and every sample shape (endpoint and identity activity,
/// several filters, a bare detection) maps to a valid Detection Finding at its detection time.
#[test]
fn oat_detections_map_to_valid_detection_findings() {
    use tv1_connector::lake::ocsf::Dataset;
    let now = chrono::Utc::now();
    let mut items: Vec<String> = tv1_connector::audit::simulate::generate_detections(
        300,
        now - chrono::Duration::hours(3),
        now,
        86_400,
        7,
    )
    .into_iter()
    .map(|e| e.json)
    .collect();
    items.extend(sample_items("oat.jsonl"));
    let mut events = Vec::new();
    for line in stored_lines(items) {
        let e = Dataset::Oat
            .event(&line)
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(
            (e["class_uid"].as_i64(), e["activity_id"].as_i64()),
            (Some(2004), Some(1))
        );
        events.push(e);
    }
    let identity = events
        .iter()
        .find(|e| e["finding_info"]["uid"] == "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f")
        .unwrap();
    assert_eq!(identity["severity_id"], 5, "the highest filter risk");
    assert_eq!(
        identity["finding_info"]["related_analytics"][0]["uid"],
        "F2141"
    );
    assert_eq!(identity["observables"][1]["type_id"], 4);
    let (ok, report) = ocsf_validate(&events);
    assert!(
        ok,
        "{}",
        report.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}
