//! Property tests: no input reaches a panic in any parser of untrusted input. Every request
//! body an agent can send (any bytes, on every route, compressed or not, and JSON of every
//! accepted shape with arbitrary strings and numbers in every field, Windows event XML and text
//! with arbitrary values) goes through the whole CPU path of a request (`Ingest::prepare`), and
//! every line it would store through the OCSF mapping. A panic in a handler is a dropped
//! connection on `tv1 serve` and a 5xx that agents retry forever on Lambda.

use super::{Body, HttpRequest, Ingest, Sender, decode, event_time, windows_xml};
use crate::lake::ocsf::windows;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::io::{Read, Write};

fn ingest() -> Ingest {
    Ingest::offline(&[]).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `body` through the request's CPU path on `path`, then every line it would store through
/// the OCSF mapping. Refusals are fine; panics are not.
fn exercise(ingest: &Ingest, path: &str, body: &[u8], gzipped: bool, sender: Sender<'_>) {
    let gz;
    let bytes = if gzipped {
        gz = gzip(body);
        &gz[..]
    } else {
        body
    };
    let req = HttpRequest {
        method: "POST",
        path,
        authorization: None,
        x_api_key: None,
        content_type: Some("application/json"),
        content_encoding: gzipped.then_some("gzip"),
        body: Body::Bytes(bytes),
        sender,
    };
    let Ok(p) = ingest.prepare(&req, chrono::Utc::now()) else {
        return;
    };
    let lines = |object: &[u8]| {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(object)
            .read_to_string(&mut text)
            .unwrap();
        text.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    let all = lines(&p.landing);
    let header: crate::ad::landing::BatchHeader =
        serde_json::from_str(&all[0]).expect("the header line");
    let stored: usize = header.parts.iter().map(|part| part.lines).sum();
    assert_eq!(all.len(), 1 + stored + header.quarantined);
    for line in &all[1..=stored] {
        // A stored line the OCSF output cannot map would fail its batch on every retry.
        assert!(windows::from_line(line).is_some(), "no OCSF event: {line}");
        assert!(
            windows::class_and_time(line).is_some(),
            "no class and time: {line}"
        );
    }
    for line in &all[1 + stored..] {
        serde_json::from_str::<Value>(line).expect("a quarantine line is JSON");
    }
}

const ROUTES: [&str; 2] = ["/v1/events", "/services/collector/event"];

/// Any JSON scalar, with the strings and numbers that break parsers (non-ASCII, huge, negative,
/// fractional, exponent).
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::from),
        "[0-9 :.TZ+-]{0,40}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
    ]
}

/// A value for any field: a scalar, or a small object or array of them.
fn field() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[A-Za-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The keys each accepted shape is recognised by and reads, every one with an arbitrary value.
const SHAPE_KEYS: &[&[&str]] = &[
    &["@timestamp", "winlog", "event", "host"],
    &[
        "EventID",
        "TimeCreated",
        "Computer",
        "EventRecordID",
        "StringInserts",
        "Keywords",
    ],
    &[
        "EventID",
        "EventTime",
        "Hostname",
        "RecordNumber",
        "TargetUserName",
        "LogonType",
    ],
    &["EventId", "TimeGenerated", "ComputerName", "RecordNumber"],
    &[
        "event_id",
        "system_time",
        "computer",
        "record_id",
        "event_data",
        "user_data",
        "provider",
    ],
    &[
        "event_id",
        "timestamp",
        "computer",
        "record_id",
        "event_data",
        "provider_name",
    ],
    &[
        "event_id",
        "time",
        "computer",
        "record_id",
        "data",
        "channel",
    ],
    &["System", "Message", "StringInserts"],
    &["log"],
];

fn shaped_event() -> impl Strategy<Value = Value> {
    (0..SHAPE_KEYS.len(), prop::collection::vec(field(), 8)).prop_map(|(shape, values)| {
        let keys = SHAPE_KEYS[shape];
        Value::Object(
            keys.iter()
                .zip(values)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    })
}

/// Windows event XML with arbitrary text in every place a value goes.
fn event_xml() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<String>(), 8).prop_map(|v| {
        format!(
            "<Event xmlns='x'><System><Provider Name='{}'/><EventID>{}</EventID><TimeCreated SystemTime='{}'/><EventRecordID>{}</EventRecordID><Channel>Security</Channel><Computer>{}</Computer><Keywords>{}</Keywords></System><EventData><Data Name='{}'>{}</Data></EventData><UserData><X><SubjectUserName>{}</SubjectUserName></X></UserData></Event>",
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[0]
        )
    })
}

/// The `key=value` text rendering with arbitrary values.
fn event_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<String>(), 4).prop_map(|v| {
        format!(
            "{}\nLogName=Security\nEventCode={}\nComputerName={}\nTimeCreated={}\nKeywords=Audit Success",
            v[0], v[1], v[2], v[3]
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_on_any_route(body in prop::collection::vec(any::<u8>(), 0..600), route in 0..2usize, gz in any::<bool>()) {
        let ingest = ingest();
        exercise(&ingest, ROUTES[route], &body, gz, Sender::default());
        exercise(&ingest, "/v1/events", &body, gz, Sender { agent_id: Some("a"), ..Sender::default() });
    }

    #[test]
    fn events_of_every_shape_with_arbitrary_values(
        events in prop::collection::vec(shaped_event(), 1..4),
        hec_time in scalar(),
        hec_fields in field(),
        host in scalar(),
        zone in prop_oneof![Just(None), Just(Some("Europe/Berlin")), Just(Some("é"))],
    ) {
        let ingest = ingest();
        let envelope = json!({"agent": {"id": "a", "timezone": zone}, "batch_id": "b", "events": events});
        exercise(&ingest, "/v1/events", envelope.to_string().as_bytes(), false, Sender::default());
        let hec: String = events
            .iter()
            .map(|e| json!({"time": hec_time, "host": host, "fields": hec_fields, "event": e}).to_string())
            .collect();
        exercise(&ingest, "/services/collector/event", hec.as_bytes(), false, Sender { timezone: zone, ..Sender::default() });
    }

    #[test]
    fn rendered_xml_and_text_with_arbitrary_values(xml in event_xml(), text in event_text(), raw in any::<String>()) {
        let ingest = ingest();
        let unquoted = format!("<Event><System><EventID>4624</EventID><TimeCreated SystemTime={raw}/><Computer>{raw}</Computer></System></Event>");
        for event in [Value::from(xml.clone()), json!({"System": xml}), Value::from(text.clone()), json!({"log": text}), Value::from(format!("<EventID>{raw}")), Value::from(unquoted)] {
            let hec = json!({"time": 1795255201, "event": event}).to_string();
            exercise(&ingest, "/services/collector/event", hec.as_bytes(), false, Sender::default());
        }
        let _ = windows_xml::parse(&raw);
    }

    #[test]
    fn time_and_transfer_encodings(s in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let berlin = event_time::zone("Europe/Berlin").unwrap();
        let _ = event_time::parse("t", &s, None);
        let _ = event_time::parse("t", &s, Some(berlin));
        let _ = event_time::fluent_bit_wall_clock(&s, berlin);
        let _ = event_time::epoch(&s);
        let _ = event_time::zone(&s);
        let _ = decode::base64_body(&s);
        let _ = decode::gunzip_capped(&bytes, 1 << 16);
        let _ = decode::parse_batch(&bytes, 10);
        let _ = decode::parse_events(&bytes, 10);
    }

    #[test]
    fn times_at_the_edges_of_what_chrono_can_hold(secs in any::<i64>(), nanos in any::<u32>(), fb in any::<bool>()) {
        // HEC `time` and stated times at extreme instants, with Fluent Bit's correction on top.
        let ingest = ingest();
        let stated = if fb { format!("+{secs}-01-01 00:00:00 +0100") } else { format!("{secs}.{nanos}") };
        let hec = json!({"time": format!("{secs}.{nanos}"), "event": {"EventID": 4624, "TimeCreated": stated, "Computer": "DC1"}}).to_string();
        exercise(&ingest, "/services/collector/event", hec.as_bytes(), false, Sender::default());
    }
}
