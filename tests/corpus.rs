//! The agent corpus (`tests/corpus/`, see its SOURCES.md): requests shaped as each forwarding
//! agent really sends them, each `X.http` with `X.truth.json`, the events' own values as Windows
//! recorded them. Every request goes through the endpoint's CPU path (`Ingest::prepare`, no
//! I/O, no LocalStack); every stored line is compared with the truth field by field, then its
//! OCSF event (`from_line`) with a table written here, independent of the mapping code; and the
//! same Windows event sent by different agents must come out the same. Each test reports every
//! mismatch of every case in one assertion message.
//!
//! `.http` format: `#` comment lines, the request line (`POST /path`), headers, a blank line, the
//! body; `###` between requests of one file. A file-level comment `time-precision: s|ms|full`
//! says how much of the event time the agent's request carries (cited in the file): the stored
//! time must be the truth truncated to it, nothing less. `Content-Encoding: gzip` means the agent
//! compresses: the file shows the body decompressed and the harness compresses it.
//! `expect-quarantine: <text>` says the agent's events cannot be stored as sent (NXLog CE's
//! default zone-less `EventTime`): each must be quarantined with a reason containing `<text>`,
//! none stored; such cases take no part in the OCSF and cross-agent comparisons.
//! `known-limit: <record id> <time> <why>`: what no reader can know from the request (Fluent
//! Bit's offset on a record read in another season, the DC's zone not declared); the stored
//! time must then be exactly `<time>`, the time as the agent stated it, and the limit is printed.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use tv1_connector::ad::{Body, HttpRequest, Ingest, Sender};
use tv1_connector::lake::ocsf::windows::from_line;

/// How much of the event time an agent's request carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Precision {
    Seconds,
    Millis,
    Micros,
    Full,
}

use crate::common::HttpFileRequest as Request;

#[derive(Debug, Clone, serde::Deserialize)]
struct Truth {
    time: String,
    event_id: u32,
    computer: String,
    channel: String,
    record_id: u64,
    provider: String,
    data: BTreeMap<String, String>,
}

struct Case {
    name: String,
    precision: Precision,
    expect_quarantine: Option<String>,
    known_limits: HashMap<u64, DateTime<Utc>>,
    requests: Vec<Request>,
    truth: Vec<Truth>,
}

/// What one event became: the stored line, the event as sent, its OCSF event.
struct Outcome {
    case: String,
    truth: Truth,
    expected_time: DateTime<Utc>,
    line: Option<Value>,
    raw_event: String,
    ocsf: Option<Value>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn cases() -> Vec<Case> {
    let mut files = Vec::new();
    for agent in std::fs::read_dir(corpus_dir()).unwrap() {
        let agent = agent.unwrap().path();
        if !agent.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&agent).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "http") {
                files.push(f);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no .http files under tests/corpus");
    files.iter().map(|f| read_case(f)).collect()
}

fn read_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let rel = path.strip_prefix(corpus_dir()).unwrap();
    let name = rel.with_extension("").display().to_string();
    let precision = text
        .lines()
        .filter_map(|l| l.strip_prefix("# time-precision:"))
        .map(|p| match p.split_whitespace().next() {
            Some("s") => Precision::Seconds,
            Some("ms") => Precision::Millis,
            Some("us") => Precision::Micros,
            Some("full") => Precision::Full,
            other => panic!("{name}: unknown time-precision {other:?}"),
        })
        .next()
        .unwrap_or_else(|| panic!("{name}: no `# time-precision:` line"));
    let expect_quarantine = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect-quarantine:"))
        .map(|t| t.trim().to_owned());
    let known_limits = text
        .lines()
        .filter_map(|l| l.strip_prefix("# known-limit:"))
        .map(|l| {
            let mut w = l.split_whitespace();
            let record: u64 = w
                .next()
                .and_then(|r| r.parse().ok())
                .expect("known-limit record");
            let time = w
                .next()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .expect("known-limit time");
            println!("known limit, {name} record {record}: {}", l.trim());
            (record, time.with_timezone(&Utc))
        })
        .collect();
    let requests = crate::common::http_file(&text);
    let truth_path = path.with_extension("truth.json");
    let truth = serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", truth_path.display()));
    Case {
        name,
        precision,
        expect_quarantine,
        known_limits,
        requests,
        truth,
    }
}

fn truth_time(t: &Truth) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&t.time)
        .unwrap_or_else(|e| panic!("truth time {}: {e}", t.time))
        .with_timezone(&Utc)
}

fn truncate(t: DateTime<Utc>, p: Precision) -> DateTime<Utc> {
    match p {
        Precision::Seconds => t.trunc_subsecs(0),
        Precision::Millis => t.trunc_subsecs(3),
        Precision::Micros => t.trunc_subsecs(6),
        Precision::Full => t,
    }
}

/// The events of a body as the agent wrote them (HEC: the inner `event`s), in order.
fn body_events(req: &Request) -> Vec<Value> {
    let hec = req.path.contains("/services/collector");
    let items: Vec<Value> = serde_json::Deserializer::from_str(&req.body)
        .into_iter::<Value>()
        .map(|v| v.expect("corpus body is JSON"))
        .collect();
    let items: Vec<Value> = match items.as_slice() {
        [Value::Array(a)] => a.clone(),
        // The envelope `{"agent", "batch_id", "events"}`.
        [Value::Object(o)] if !hec && o.get("events").is_some_and(Value::is_array) => {
            o["events"].as_array().unwrap().clone()
        }
        _ => items,
    };
    if hec {
        items.into_iter().map(|o| o["event"].clone()).collect()
    } else {
        items
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn offline_ingest() -> Ingest {
    Ingest::offline(&[]).unwrap()
}

/// Runs every request of every case; returns what each truth event became, and the refusals.
fn run_corpus() -> (Vec<Outcome>, Vec<(String, String)>) {
    let ingest = offline_ingest();
    let mut outcomes = Vec::new();
    let mut refusals = Vec::new();
    for case in cases() {
        let mut truths = case.truth.iter();
        for (n, req) in case.requests.iter().enumerate() {
            let events = body_events(req);
            let mine: Vec<Truth> = truths.by_ref().take(events.len()).cloned().collect();
            assert_eq!(
                mine.len(),
                events.len(),
                "{}: the truth file has fewer entries than the bodies have events",
                case.name
            );
            // Receipt: a few seconds after the newest event.
            let now = mine.iter().map(truth_time).max().unwrap() + Duration::seconds(5);
            let header = |name: &str| req.header(name);
            let gz = header("content-encoding").is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
            let bytes = if gz {
                gzip(req.body.as_bytes())
            } else {
                req.body.as_bytes().to_vec()
            };
            let http = HttpRequest {
                method: &req.method,
                path: &req.path,
                authorization: header("authorization"),
                x_api_key: header("x-api-key"),
                content_type: header("content-type"),
                content_encoding: header("content-encoding"),
                body: Body::Bytes(&bytes),
                sender: Sender::from_headers(header),
            };
            let (lines, quarantined): (Vec<Value>, Vec<(usize, String)>) =
                match ingest.prepare(&http, now) {
                    Ok(p) => {
                        let lines = p
                            .lake_lines()
                            .iter()
                            .map(|l| serde_json::from_str::<Value>(l).unwrap())
                            .collect();
                        (lines, p.quarantined)
                    }
                    Err(e) => {
                        let what = format!("{} {}: {e}", e.status(), e.code());
                        refusals.push((case.name.clone(), format!("request {}: {what}", n + 1)));
                        (Vec::new(), Vec::new())
                    }
                };
            if let Some(want) = &case.expect_quarantine {
                for i in 0..events.len() {
                    let reason = quarantined.iter().find(|(q, _)| *q == i).map(|(_, r)| r);
                    if !reason.is_some_and(|r| r.contains(want.as_str())) {
                        refusals.push((
                            case.name.clone(),
                            format!("request {} event {i}: expected quarantined naming {want:?}, got {reason:?}", n + 1),
                        ));
                    }
                }
                continue;
            }
            // A quarantined event has no line: named here, and a mismatch below.
            for (i, reason) in &quarantined {
                refusals.push((
                    case.name.clone(),
                    format!("request {}: event {i} quarantined: {reason}", n + 1),
                ));
            }
            for (ev, truth) in events.iter().zip(mine) {
                let line = lines.iter().find(|l| &l["event"] == ev).cloned();
                let ocsf = line.as_ref().and_then(|l| from_line(&l.to_string()));
                outcomes.push(Outcome {
                    case: case.name.clone(),
                    expected_time: case
                        .known_limits
                        .get(&truth.record_id)
                        .copied()
                        .unwrap_or_else(|| truncate(truth_time(&truth), case.precision)),
                    truth,
                    line,
                    raw_event: ev.to_string(),
                    ocsf,
                });
            }
        }
    }
    (outcomes, refusals)
}

/// One mismatch: case, event, field, expected, got.
struct Mismatch {
    case: String,
    event: String,
    field: String,
    expected: String,
    got: String,
}

fn event_label(t: &Truth) -> String {
    format!("{}#{}", t.event_id, t.record_id)
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "(absent)".into(),
        Some(v) => v.to_string(),
    }
}

fn report(title: &str, mismatches: &[Mismatch], refusals: &[(String, String)]) -> String {
    let mut by_case: BTreeMap<&str, Vec<&Mismatch>> = BTreeMap::new();
    for m in mismatches {
        by_case.entry(&m.case).or_default().push(m);
    }
    let mut out = format!(
        "{title}: {} mismatches in {} cases, {} refused requests\n",
        mismatches.len(),
        by_case.len(),
        refusals.len()
    );
    for (case, why) in refusals {
        out.push_str(&format!("  {case}: REFUSED {why}\n"));
    }
    for (case, ms) in by_case {
        out.push_str(&format!("  {case}:\n"));
        for m in ms {
            out.push_str(&format!(
                "    {} {}: expected {}, got {}\n",
                m.event, m.field, m.expected, m.got
            ));
        }
    }
    out
}

#[test]
fn corpus_stored_lines_match_the_truth() {
    let (outcomes, refusals) = run_corpus();
    let mut mm = Vec::new();
    for o in &outcomes {
        let t = &o.truth;
        let mut push = |field: &str, expected: String, got: String| {
            if expected != got {
                mm.push(Mismatch {
                    case: o.case.clone(),
                    event: event_label(t),
                    field: field.into(),
                    expected,
                    got,
                });
            }
        };
        let Some(line) = &o.line else {
            push("stored line", "present".into(), "(no line)".into());
            continue;
        };
        let got_time = line["time"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let exp = o.expected_time;
        push(
            "time",
            exp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            match got_time {
                Some(g) if g == exp => exp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                _ => show(line.get("time")),
            },
        );
        push(
            "event_id",
            t.event_id.to_string(),
            show(line.get("event_id")),
        );
        push(
            "computer",
            json!(t.computer).to_string(),
            show(line.get("computer")),
        );
        push(
            "channel",
            json!(t.channel).to_string(),
            show(line.get("channel")),
        );
        push(
            "record_id",
            t.record_id.to_string(),
            show(line.get("record_id")),
        );
        push(
            "provider",
            json!(t.provider).to_string(),
            show(line.get("provider")),
        );
    }
    assert!(
        mm.is_empty() && refusals.is_empty(),
        "{}",
        report("stored lines vs truth", &mm, &refusals)
    );
}

/// A data value Windows writes for a real value (not "none").
fn real(v: Option<&String>) -> Option<String> {
    v.filter(|v| {
        let v = v.trim();
        !v.is_empty() && v != "-" && v != "S-1-0-0"
    })
    .map(|v| v.trim().to_owned())
}

/// The OCSF class each event id belongs to (docs/ocsf.md's table, restated here).
fn expected_class(event_id: u32) -> i64 {
    match event_id {
        4624 | 4625 | 4634 | 4768 | 4769 | 4771 | 4776 => 3002,
        4720 | 4740 => 3001,
        4672 => 3003,
        4728 => 3006,
        _ => 3004,
    }
}

/// What the OCSF event must hold, by JSON pointer: `Some(value)` must be there and equal;
/// `None` must be absent (the mapping fills nothing the event does not say).
fn ocsf_expectations(t: &Truth, time: DateTime<Utc>) -> Vec<(String, Option<Value>)> {
    let d = |k: &str| real(t.data.get(k));
    let s = |v: Option<String>| v.map(Value::String);
    let mut e: Vec<(String, Option<Value>)> = vec![
        ("/class_uid".into(), Some(json!(expected_class(t.event_id)))),
        ("/time".into(), Some(json!(time.timestamp_millis()))),
        ("/device/hostname".into(), Some(json!(t.computer))),
        (
            "/metadata/event_code".into(),
            Some(json!(t.event_id.to_string())),
        ),
        (
            "/metadata/uid".into(),
            Some(json!(format!(
                "{}/{}/{}",
                t.computer, t.channel, t.record_id
            ))),
        ),
        ("/metadata/log_name".into(), Some(json!(t.channel))),
        ("/metadata/log_provider".into(), Some(json!(t.provider))),
        ("/actor/user/name".into(), s(d("SubjectUserName"))),
        ("/actor/user/uid".into(), s(d("SubjectUserSid"))),
        ("/actor/user/domain".into(), s(d("SubjectDomainName"))),
    ];
    let target = |e: &mut Vec<(String, Option<Value>)>, prefix: &str| {
        e.push(("/user/name".into(), s(d(&format!("{prefix}UserName")))));
        e.push((
            "/user/uid".into(),
            s(d(&format!("{prefix}UserSid")).or_else(|| d(&format!("{prefix}Sid")))),
        ));
        e.push(("/user/domain".into(), s(d(&format!("{prefix}DomainName")))));
    };
    match expected_class(t.event_id) {
        3002 => {
            target(&mut e, "Target");
            let ip = d("IpAddress").filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
            let port = d("IpPort")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0);
            let ws = d("WorkstationName")
                .or_else(|| d("Workstation"))
                .map(|w| w.trim_start_matches('\\').to_owned());
            e.push(("/src_endpoint/ip".into(), s(ip)));
            e.push(("/src_endpoint/port".into(), port.map(|p| json!(p))));
            e.push(("/src_endpoint/name".into(), s(ws)));
            e.push((
                "/logon_type_id".into(),
                d("LogonType")
                    .and_then(|l| l.parse::<i64>().ok())
                    .map(|l| json!(l)),
            ));
            e.push(("/session/uid".into(), s(d("TargetLogonId"))));
            e.push(("/status_code".into(), s(d("Status"))));
            e.push(("/service/name".into(), s(d("ServiceName"))));
        }
        3001 => target(&mut e, "Target"),
        3003 => {
            target(&mut e, "Subject");
            let privileges =
                d("PrivilegeList").map(|p| json!(p.split_whitespace().collect::<Vec<_>>()));
            e.push(("/privileges".into(), privileges));
        }
        3006 => {
            e.push(("/group/name".into(), s(d("TargetUserName"))));
            e.push(("/group/uid".into(), s(d("TargetSid"))));
            e.push(("/group/domain".into(), s(d("TargetDomainName"))));
            e.push(("/user/uid".into(), s(d("MemberSid"))));
            // The member's name: the first RDN's value of MemberName (a DN).
            let cn = d("MemberName").map(|m| {
                m.split_once('=')
                    .map(|(_, rest)| rest.split(',').next().unwrap_or(rest).to_owned())
                    .unwrap_or(m)
            });
            e.push(("/user/name".into(), s(cn)));
        }
        _ => {
            let name = match t.event_id {
                5136 => d("ObjectDN"),
                7045 => d("ServiceName"),
                1102 => Some(t.channel.clone()),
                _ => None,
            };
            if name.is_some() {
                e.push(("/entity/name".into(), s(name)));
            }
            if t.event_id == 5136 {
                e.push(("/entity/uid".into(), s(d("ObjectGUID"))));
            }
        }
    }
    e
}

/// Whether the request carries `v` at all (a value an agent dropped cannot be demanded).
fn carried(raw: &str, v: &Value) -> bool {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let escaped = serde_json::to_string(&text).unwrap();
    raw.contains(&text) || raw.contains(&escaped[1..escaped.len() - 1])
}

#[test]
fn corpus_ocsf_matches_the_truth() {
    let (outcomes, refusals) = run_corpus();
    let mut mm = Vec::new();
    let mut dropped = Vec::new();
    let (mut compared, mut agreed) = (0, 0);
    for o in &outcomes {
        let label = event_label(&o.truth);
        let Some(ocsf) = &o.ocsf else {
            mm.push(Mismatch {
                case: o.case.clone(),
                event: label,
                field: "OCSF event".into(),
                expected: "present".into(),
                got: if o.line.is_some() {
                    "from_line gave None"
                } else {
                    "(no stored line)"
                }
                .into(),
            });
            continue;
        };
        for (path, expected) in ocsf_expectations(&o.truth, o.expected_time) {
            let got = ocsf.pointer(&path);
            let got = got.filter(|v| !v.is_null());
            compared += 1;
            match (&expected, got) {
                (Some(e), Some(g)) if e == g => agreed += 1,
                (None, None) => {}
                (Some(e), None) if !carried(&o.raw_event, e) => {
                    dropped.push(format!("{} {label} {path} {e}", o.case));
                }
                _ => mm.push(Mismatch {
                    case: o.case.clone(),
                    event: label.clone(),
                    field: path.clone(),
                    expected: show(expected.as_ref()),
                    got: show(got),
                }),
            }
        }
    }
    println!(
        "{} events, {compared} OCSF attributes compared with the truth, {agreed} filled and equal",
        outcomes.len()
    );
    if !dropped.is_empty() {
        println!(
            "values the agents' requests do not carry (not demanded):\n  {}",
            dropped.join("\n  ")
        );
    }
    assert!(
        mm.is_empty() && refusals.is_empty(),
        "{}",
        report("OCSF vs truth", &mm, &refusals)
    );
}

/// `path -> value` of every leaf.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}/{k}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// What must be the same whichever agent sent the event: the normalised fields but the time
/// (the agents carry different precisions; each is checked against the truth above), and the
/// OCSF event without `raw_data`, `unmapped`, `metadata.processed_time`, `time` (same reason)
/// and `message` (an agent's rendering of the event, not the event's data: the rendered XML
/// transports carry none).
fn comparable(o: &Outcome) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Some(line) = &o.line {
        for k in [
            "event_id",
            "category",
            "computer",
            "channel",
            "record_id",
            "provider",
        ] {
            out.insert(
                format!("line/{k}"),
                line.get(k).cloned().unwrap_or(Value::Null),
            );
        }
    }
    if let Some(ocsf) = &o.ocsf {
        let mut v = ocsf.clone();
        let m: &mut Map<String, Value> = v.as_object_mut().unwrap();
        for k in ["raw_data", "unmapped", "time", "message"] {
            m.remove(k);
        }
        if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            md.remove("processed_time");
        }
        flatten("ocsf", &v, &mut out);
    }
    out
}

#[test]
fn corpus_same_event_same_result_across_agents() {
    let (outcomes, _) = run_corpus();
    let mut groups: BTreeMap<(String, String, u64), Vec<&Outcome>> = BTreeMap::new();
    for o in &outcomes {
        let t = &o.truth;
        groups
            .entry((t.computer.clone(), t.channel.clone(), t.record_id))
            .or_default()
            .push(o);
    }
    // No agent is the reference: every field whose value differs between the agents that sent
    // the event is listed with each value and the agents that gave it.
    let mut mm = Vec::new();
    for ((computer, channel, record), members) in &groups {
        if members.len() < 2 {
            continue;
        }
        let all: Vec<(&Outcome, BTreeMap<String, Value>)> =
            members.iter().map(|o| (*o, comparable(o))).collect();
        let keys: std::collections::BTreeSet<&String> =
            all.iter().flat_map(|(_, m)| m.keys()).collect();
        for k in keys {
            // An agent whose request does not carry a value another agent's gives is excused
            // for lacking it (it cannot be recovered), as in the OCSF test.
            let present: Vec<&Value> = all
                .iter()
                .filter_map(|(_, m)| m.get(k).filter(|v| !v.is_null()))
                .collect();
            let mut variants: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for (o, m) in &all {
                let v = m.get(k).filter(|v| !v.is_null());
                if v.is_none() && !present.iter().any(|p| carried(&o.raw_event, p)) {
                    continue;
                }
                variants.entry(show(v)).or_default().push(o.case.as_str());
            }
            if variants.len() > 1 {
                let got = variants
                    .iter()
                    .map(|(v, cases)| format!("{v} from [{}]", cases.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ");
                mm.push(Mismatch {
                    case: format!("{computer}/{channel}/{record}"),
                    event: event_label(&members[0].truth),
                    field: k.clone(),
                    expected: "one value".into(),
                    got,
                });
            }
        }
    }
    assert!(
        mm.is_empty(),
        "{}",
        report("same event through different agents", &mm, &[])
    );
}
