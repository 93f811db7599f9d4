//! The OCSF validator (`tools/ocsf/validate.py`, built on the vendored OCSF 1.1.0 definitions)
//! accepts valid events and names what is wrong with invalid ones, so OCSF output can be checked
//! against the schema itself rather than against our own idea of it.

mod common;

use common::ocsf_validate;

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
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

/// Every Vision One audit entry the simulator makes (every category, activity, access type,
/// both timestamp forms), plus entries missing fields, maps to a valid OCSF 1.1.0 event.
#[test]
fn audit_entries_map_to_valid_ocsf() {
    use tv1_connector::segment::Item;
    let from = chrono::Utc::now() - chrono::Duration::hours(3);
    let mut entries: Vec<String> =
        tv1_connector::simulate::generate(&tv1_connector::simulate::Generate {
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
        let id = tv1_connector::encode::record_id(&item.hash, 0);
        let e = tv1_connector::ocsf::audit::to_ocsf(raw, &id, item.time.unwrap()).unwrap();
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
