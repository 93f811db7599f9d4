//! Observed Attack Techniques detections as OCSF Detection Findings (2004).
//!
//! A detection is immutable (no update time, no status): one detection, one finding, activity
//! 1 Create, no `status_id` (nobody triages a detection in Vision One; alerts are what is
//! triaged). `time` is when it was detected (`detectedDateTime`), `metadata.logged_time` when
//! Vision One ingested it (`ingestedDateTime`, the time the stream is read and partitioned by in
//! JSON Lines). Each matched filter is an analytic (the first `finding_info.analytic`, any
//! others `related_analytics`) whose ATT&CK tactics and techniques are the finding's attacks
//! and whose highlighted objects are its observables; the severity is the highest filter risk.
//!
//! Field names and value sets: Trend's SDK models and API samples, gathered in
//! `docs/research/vision-one-streams.md` §2.4.

use super::finding::{self, Attacks};
use super::{Class, DETECTION_FINDING, Header, envelope};
use serde_json::{Map, Value, json};

/// Fields held whole by an attribute of their own; every other field goes to `unmapped`.
const MAPPED: [&str; 3] = ["uuid", "detectedDateTime", "ingestedDateTime"];

/// The time a detection's finding has: `detectedDateTime`, else `ingestedDateTime` (which every
/// stored detection has: the stream is read by it).
fn time_text(item: &Map<String, Value>) -> Option<&str> {
    ["detectedDateTime", "ingestedDateTime"]
        .iter()
        .find_map(|k| {
            item.get(*k)?
                .as_str()
                .filter(|s| crate::timefmt::parse_api_time(s).is_some())
        })
}

/// One stored line (`{"_id":"…",<the detection>}`) as an OCSF Detection Finding; `None` when
/// it is not a line the puller wrote.
pub fn from_line(line: &str) -> Option<Value> {
    let (item, id) = super::parse_stored(line)?;
    let time_ms = finding::millis(time_text(&item))?;
    let raw = super::stored_item(line, &id);
    Some(event(&item, &raw, &id, time_ms))
}

/// The class and time (epoch ms) [`from_line`] gives a stored line, without building the event.
pub fn class_and_time(line: &str) -> Option<(Class, i64)> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "detectedDateTime", borrow, default)]
        detected: Option<std::borrow::Cow<'a, str>>,
        #[serde(rename = "ingestedDateTime", borrow, default)]
        ingested: Option<std::borrow::Cow<'a, str>>,
    }
    let h: Head = serde_json::from_str(line).ok()?;
    let time = [h.detected, h.ingested]
        .into_iter()
        .flatten()
        .find_map(|t| finding::millis(Some(&t)))?;
    Some((DETECTION_FINDING, time))
}

fn event(item: &Map<String, Value>, raw: &str, id: &str, time_ms: i64) -> Value {
    let text = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let filters: Vec<&Map<String, Value>> = item
        .get("filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .collect();
    let top_risk = filters
        .iter()
        .map(|f| f.get("riskLevel").and_then(Value::as_str).unwrap_or(""))
        .max_by_key(|r| finding::severity_id(r))
        .unwrap_or("");
    let device = endpoint(item);
    let mut metadata = Map::new();
    metadata.insert(
        "product".into(),
        finding::product("Observed Attack Techniques"),
    );
    metadata.insert("uid".into(), id.into());
    if let Some(t) = time_text(item) {
        metadata.insert("original_time".into(), t.into());
    }
    if let Some(t) = finding::millis(text("ingestedDateTime")) {
        metadata.insert("logged_time".into(), t.into());
    }
    if device.is_some() {
        metadata.insert("profiles".into(), json!(["host"]));
    }
    let mut e = envelope(Header {
        class: DETECTION_FINDING,
        activity_id: 1,
        activity_name: "Create",
        time_ms,
        severity_id: finding::severity_id(top_risk),
        status_id: None,
        metadata,
        raw: Some(raw),
    });
    if let Some((level_id, level)) = finding::risk_level(top_risk) {
        e.insert("risk_level_id".into(), level_id.into());
        e.insert("risk_level".into(), level.into());
    }
    e.insert("finding_info".into(), finding_info(item, &filters, time_ms));
    let objects = filters
        .iter()
        .filter_map(|f| f.get("highlightedObjects")?.as_array())
        .flatten();
    let observables = finding::observables_of(objects, "highlightedObject");
    if !observables.is_empty() {
        e.insert("observables".into(), observables.into());
    }
    if let Some(d) = device {
        e.insert("device".into(), d);
    }
    let unmapped = finding::unmapped(item, &MAPPED);
    if !unmapped.is_empty() {
        e.insert("unmapped".into(), Value::Object(unmapped));
    }
    Value::Object(e)
}

/// `finding_info`: the detection's uuid, its filters' names as the title, the first filter's
/// description, the filters as analytics and their ATT&CK ids as attacks.
fn finding_info(item: &Map<String, Value>, filters: &[&Map<String, Value>], time_ms: i64) -> Value {
    let text = |m: &Map<String, Value>, k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let mut f = Map::new();
    let uid = text(item, "uuid").unwrap_or_else(|| "unknown".into());
    let mut names: Vec<String> = Vec::new();
    for n in filters.iter().filter_map(|x| text(x, "name")) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    f.insert(
        "title".into(),
        if names.is_empty() {
            uid.clone()
        } else {
            names.join(", ")
        }
        .into(),
    );
    f.insert("uid".into(), uid.into());
    if let Some(d) = filters.iter().find_map(|x| text(x, "description")) {
        f.insert("desc".into(), d.into());
    }
    f.insert("created_time".into(), time_ms.into());
    let mut attacks = Attacks::default();
    let mut analytics = Vec::new();
    for filter in filters {
        let ids = |k: &str| -> Vec<&str> {
            filter
                .get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect()
        };
        attacks.add(&ids("mitreTacticIds"), &ids("mitreTechniqueIds"));
        let mut analytic = Map::new();
        if let Some(id) = text(filter, "id") {
            analytic.insert("uid".into(), id.into());
        }
        if let Some(n) = text(filter, "name") {
            analytic.insert("name".into(), n.into());
        }
        if analytic.is_empty() {
            continue;
        }
        // A filter is a detection rule; `type` says whether Trend (preset) or the customer
        // (custom) wrote it.
        analytic.insert("type_id".into(), 1.into());
        analytic.insert("type".into(), "Rule".into());
        if let Some(c) = text(filter, "type") {
            analytic.insert("category".into(), c.into());
        }
        analytics.push(Value::Object(analytic));
    }
    let mut analytics = analytics.into_iter();
    if let Some(first) = analytics.next() {
        f.insert("analytic".into(), first);
    }
    let related: Vec<Value> = analytics.collect();
    if !related.is_empty() {
        f.insert("related_analytics".into(), related.into());
    }
    if let Some(a) = attacks.into_value() {
        f.insert("attacks".into(), a);
    }
    Value::Object(f)
}

/// The detection's `endpoint` (`endpointName`/`name`, `agentGuid`/`guid`, `ips`) as the
/// `device`.
fn endpoint(item: &Map<String, Value>) -> Option<Value> {
    let ep = item.get("endpoint")?.as_object()?;
    let text = |a: &str, b: &str| ep.get(a).or_else(|| ep.get(b)).and_then(Value::as_str);
    let ips = ep
        .get("ips")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    finding::device(
        text("endpointName", "name"),
        text("agentGuid", "guid"),
        &ips,
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(item: &Value) -> String {
        let mut l = Vec::new();
        crate::lake::encode::line_with_fields(
            item.to_string().as_bytes(),
            &[("_id", "d1")],
            &mut l,
        );
        String::from_utf8(l).unwrap()
    }

    /// The shape of Datadog's production-like OAT sample (trend-micro-vision-one-xdr tests),
    /// with a second filter.
    fn sample() -> Value {
        json!({
            "source": "endpointActivityData", "uuid": "65f9d8c7-1e5a-4b2c-9d3e-7f8a9b0c1d2e",
            "filters": [
                {"id": "F1507", "name": "Creation of Scheduled Task", "description": "A task was created",
                 "mitreTacticIds": ["TA0002", "TA0003", "TA0004"], "mitreTechniqueIds": ["T1053", "T1053.005"],
                 "highlightedObjects": [{"type": "command_line", "field": "processCmd",
                     "value": "schtasks /create", "master": true}],
                 "riskLevel": "low", "type": "preset"},
                {"id": "F2140", "name": "Malicious Software", "mitreTechniqueIds": ["T1204.002"],
                 "highlightedObjects": [{"type": "text", "field": "tags", "value": ["Encrypted"]}],
                 "riskLevel": "medium", "type": "preset"}],
            "endpoint": {"endpointName": "DESKTOP-N19I543", "agentGuid": "cb9c8412-1f64-4fa0-a36b-76bf41a07ede",
                "ips": ["fe80::1", "10.10.58.51"]},
            "entityType": "endpoint", "entityName": "DESKTOP-N19I543(fe80::1,10.10.58.51)",
            "detectedDateTime": "2024-07-30T16:20:25Z", "ingestedDateTime": "2024-07-30T16:22:16Z",
            "detail": {"eventTime": "1722356425000", "tags": ["MITRE.T1053.005", "XSAE.F1507"]}
        })
    }

    #[test]
    fn a_detection_is_a_created_finding_at_its_detection_time() {
        let item = sample();
        let l = line(&item);
        let e = from_line(&l).unwrap();
        assert_eq!(
            (e["class_uid"].as_i64(), e["type_uid"].as_i64()),
            (Some(2004), Some(200401))
        );
        assert_eq!(e["time"], 1_722_356_425_000i64);
        assert_eq!(e["metadata"]["logged_time"], 1_722_356_536_000i64);
        assert!(e.get("status_id").is_none());
        assert_eq!(
            (e["severity_id"].as_i64(), e["risk_level"].as_str()),
            (Some(3), Some("Medium"))
        );
        let f = &e["finding_info"];
        assert_eq!(f["uid"], "65f9d8c7-1e5a-4b2c-9d3e-7f8a9b0c1d2e");
        assert_eq!(f["title"], "Creation of Scheduled Task, Malicious Software");
        assert_eq!(f["analytic"]["uid"], "F1507");
        assert_eq!(f["related_analytics"][0]["uid"], "F2140");
        // 3 tactics × 2 techniques, then one technique without a tactic.
        assert_eq!(f["attacks"].as_array().unwrap().len(), 7);
        assert_eq!(e["device"]["hostname"], "DESKTOP-N19I543");
        assert_eq!(e["device"]["ip"], "fe80::1");
        assert_eq!(e["observables"].as_array().unwrap().len(), 2);
        assert_eq!(e["unmapped"]["source"], "endpointActivityData");
        assert!(
            e["unmapped"]["detail"]
                .as_str()
                .unwrap()
                .contains("XSAE.F1507")
        );
        assert_eq!(
            serde_json::from_str::<Value>(e["raw_data"].as_str().unwrap()).unwrap(),
            item
        );
        assert_eq!(
            class_and_time(&l),
            Some((DETECTION_FINDING, 1_722_356_425_000))
        );
    }

    #[test]
    fn without_a_detection_time_the_ingestion_time_places_it() {
        let mut item = sample();
        item.as_object_mut().unwrap().remove("detectedDateTime");
        item.as_object_mut().unwrap().remove("filters");
        let l = line(&item);
        let e = from_line(&l).unwrap();
        assert_eq!(e["time"], 1_722_356_536_000i64);
        assert_eq!(e["severity_id"], 0);
        assert_eq!(
            e["finding_info"]["title"],
            "65f9d8c7-1e5a-4b2c-9d3e-7f8a9b0c1d2e"
        );
        assert_eq!(
            class_and_time(&l),
            Some((DETECTION_FINDING, 1_722_356_536_000))
        );
    }
}
