//! Workbench alert versions as OCSF Detection Findings (2004).
//!
//! One stored line is one version of an alert (its state at one `updatedDateTime`), so one
//! finding event: `finding_info.uid` is the alert's `id`, shared by all its versions, and
//! `metadata.uid` the version's `_id`. The lifecycle is read from the version itself, so the
//! mapping stays a function of the line (what keeps the Parquet output exactly once):
//!
//! - `activity_id` 3 Close when `status` is `Closed`; 1 Create when the version is the alert as
//!   created (`updatedDateTime` = `createdDateTime`); else 2 Update.
//! - `status_id` (the finding's triage state): `Open` 1 New, `In Progress` 2, `Closed` 3
//!   Suppressed when `investigationResult` is `False Positive` or `Benign True Positive`, else
//!   4 Resolved. Alerts without `status` (older schemas) are read from the deprecated
//!   `investigationStatus`.
//!
//! Field names and value sets: Trend's SDK models and API samples, gathered in
//! `docs/research/vision-one-streams.md` §1.4.

use super::finding::{self, Attacks};
use super::{Class, DETECTION_FINDING, Header, envelope};
use serde_json::{Map, Value, json};

/// Fields held whole by an attribute of their own; every other field goes to `unmapped`.
const MAPPED: [&str; 9] = [
    "id",
    "model",
    "modelId",
    "description",
    "createdDateTime",
    "updatedDateTime",
    "workbenchLink",
    "severity",
    "investigationResult",
];

/// The finding activity of a version: 1 Create, 2 Update, 3 Close, with its name.
pub fn activity(item: &Map<String, Value>) -> (i64, &'static str) {
    let text = |k: &str| item.get(k).and_then(Value::as_str);
    if triage(item) == Some(Triage::Closed) {
        (3, "Close")
    } else if text("createdDateTime").is_some()
        && finding::millis(text("createdDateTime")) == finding::millis(text("updatedDateTime"))
    {
        (1, "Create")
    } else {
        (2, "Update")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Triage {
    Open,
    InProgress,
    Closed,
}

/// Where the alert is in its triage: `status`, else the deprecated `investigationStatus`.
fn triage(item: &Map<String, Value>) -> Option<Triage> {
    let text = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    match text("status").as_deref() {
        Some("open") => return Some(Triage::Open),
        Some("in progress") => return Some(Triage::InProgress),
        Some("closed") => return Some(Triage::Closed),
        _ => {}
    }
    match text("investigationStatus").as_deref() {
        Some("new") => Some(Triage::Open),
        Some("in progress") => Some(Triage::InProgress),
        Some("closed" | "true positive" | "false positive" | "benign true positive") => {
            Some(Triage::Closed)
        }
        _ => None,
    }
}

/// The finding `status_id` of a version: 1 New, 2 In Progress, 3 Suppressed, 4 Resolved,
/// 0 Unknown.
pub fn status_id(item: &Map<String, Value>) -> i64 {
    let result = item
        .get("investigationResult")
        .or_else(|| item.get("investigationStatus"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    match triage(item) {
        Some(Triage::Open) => 1,
        Some(Triage::InProgress) => 2,
        Some(Triage::Closed) => match result.as_deref() {
            Some("false positive" | "benign true positive") => 3,
            _ => 4,
        },
        None => 0,
    }
}

/// One stored line (`{"_id":"…",<the alert>}`) as an OCSF Detection Finding; `None` when it is
/// not a line the puller wrote (no `_id`, or no readable `updatedDateTime`).
pub fn from_line(line: &str) -> Option<Value> {
    let (item, id) = super::parse_stored(line)?;
    let updated = item.get("updatedDateTime")?.as_str()?;
    let time_ms = finding::millis(Some(updated))?;
    let raw = super::stored_item(line, &id);
    Some(event(&item, &raw, &id, time_ms))
}

/// The class and time (epoch ms) [`from_line`] gives a stored line, without building the event.
pub fn class_and_time(line: &str) -> Option<(Class, i64)> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "updatedDateTime", borrow)]
        updated: std::borrow::Cow<'a, str>,
    }
    let h: Head = serde_json::from_str(line).ok()?;
    Some((DETECTION_FINDING, finding::millis(Some(&h.updated))?))
}

fn event(item: &Map<String, Value>, raw: &str, id: &str, time_ms: i64) -> Value {
    let text = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (activity_id, activity_name) = activity(item);
    let device = host(item);
    let mut metadata = Map::new();
    metadata.insert("product".into(), finding::product("Workbench"));
    metadata.insert("uid".into(), id.into());
    if let Some(t) = text("updatedDateTime") {
        metadata.insert("original_time".into(), t.into());
    }
    if device.is_some() {
        metadata.insert("profiles".into(), json!(["host"]));
    }
    let mut e = envelope(Header {
        class: DETECTION_FINDING,
        activity_id,
        activity_name,
        time_ms,
        severity_id: text("severity").map_or(0, finding::severity_id),
        status_id: Some(status_id(item)),
        metadata,
        raw: Some(raw),
    });
    if let Some(r) = text("investigationResult") {
        e.insert("status_detail".into(), r.into());
    }
    // `risk_score` is an integer_t (32 bits); a score past it stays in `unmapped` only.
    if let Some(Ok(score)) = item.get("score").and_then(Value::as_i64).map(i32::try_from) {
        e.insert("risk_score".into(), score.into());
    }
    e.insert("finding_info".into(), finding_info(item, &text));
    let indicators = item.get("indicators").and_then(Value::as_array);
    let observables = finding::observables_of(indicators.into_iter().flatten(), "indicator");
    if !observables.is_empty() {
        e.insert("observables".into(), observables.into());
    }
    let resources = resources(item);
    if !resources.is_empty() {
        e.insert("resources".into(), resources.into());
    }
    if let Some(d) = device {
        e.insert("device".into(), d);
    }
    let mut unmapped = finding::unmapped(item, &MAPPED);
    if e.contains_key("risk_score") {
        unmapped.remove("score");
    }
    if !unmapped.is_empty() {
        e.insert("unmapped".into(), Value::Object(unmapped));
    }
    Value::Object(e)
}

/// `finding_info`: the alert's id, model, description, times, link, model as the analytic,
/// and the ATT&CK techniques of its matched filters.
fn finding_info<'a>(
    item: &'a Map<String, Value>,
    text: &impl Fn(&str) -> Option<&'a str>,
) -> Value {
    let mut f = Map::new();
    let uid = text("id").unwrap_or("unknown");
    f.insert("uid".into(), uid.into());
    f.insert("title".into(), text("model").unwrap_or(uid).into());
    if let Some(d) = text("description") {
        f.insert("desc".into(), d.into());
    }
    if let Some(t) = finding::millis(text("createdDateTime")) {
        f.insert("created_time".into(), t.into());
    }
    if let Some(t) = finding::millis(text("updatedDateTime")) {
        f.insert("modified_time".into(), t.into());
    }
    if let Some(link) = text("workbenchLink") {
        f.insert("src_url".into(), link.into());
    }
    if text("model").is_some() || text("modelId").is_some() {
        let mut analytic = Map::new();
        if let Some(m) = text("modelId") {
            analytic.insert("uid".into(), m.into());
        }
        if let Some(m) = text("model") {
            analytic.insert("name".into(), m.into());
        }
        // SAE alerts come from detection models (correlation rules); TI alerts from
        // threat-intelligence sweeps.
        let (type_id, kind) = match text("alertProvider") {
            Some("SAE") => (1, "Rule"),
            Some("TI") => (99, "Threat Intelligence"),
            _ => (0, "Unknown"),
        };
        analytic.insert("type_id".into(), type_id.into());
        analytic.insert("type".into(), kind.into());
        f.insert("analytic".into(), Value::Object(analytic));
    }
    let mut attacks = Attacks::default();
    let (mut first, mut last) = (None::<i64>, None::<i64>);
    for filter in item
        .get("matchedRules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("matchedFilters")?.as_array())
        .flatten()
    {
        let techniques: Vec<&str> = filter
            .get("mitreTechniqueIds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        attacks.add(&[], &techniques);
        if let Some(t) = finding::millis(filter.get("matchedDateTime").and_then(Value::as_str)) {
            first = Some(first.map_or(t, |f| f.min(t)));
            last = Some(last.map_or(t, |l| l.max(t)));
        }
    }
    if let Some(t) = first {
        f.insert("first_seen_time".into(), t.into());
    }
    if let Some(t) = last {
        f.insert("last_seen_time".into(), t.into());
    }
    if let Some(a) = attacks.into_value() {
        f.insert("attacks".into(), a);
    }
    Value::Object(f)
}

/// The impact scope's entities as affected `resources`: `uid` the entity id, `name` its value
/// (a host's name), `type` its entity type (`host`, `account`, `emailAddress`...).
fn resources(item: &Map<String, Value>) -> Vec<Value> {
    entities(item)
        .filter_map(|e| {
            let mut r = Map::new();
            if let Some(uid) = e.get("entityId").and_then(Value::as_str) {
                r.insert("uid".into(), uid.into());
            }
            let name = match e.get("entityValue") {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(Value::Object(o)) => o.get("name").and_then(Value::as_str),
                _ => None,
            };
            if let Some(n) = name {
                r.insert("name".into(), n.into());
            }
            if let Some(t) = e.get("entityType").and_then(Value::as_str) {
                r.insert("type".into(), t.into());
            }
            // A resource is named or identified (`_entity`'s at_least_one); an entity with
            // neither stays in `unmapped.impactScope`.
            (r.contains_key("uid") || r.contains_key("name")).then_some(Value::Object(r))
        })
        .collect()
}

fn entities(item: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
    item.get("impactScope")
        .and_then(|s| s.get("entities"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// The affected `device` when the alert's scope has exactly one host (several hosts stay in
/// `resources`): its name, GUID and first address; a Desktop or Server when the scope's counts
/// say which.
fn host(item: &Map<String, Value>) -> Option<Value> {
    let mut hosts =
        entities(item).filter(|e| e.get("entityType").and_then(Value::as_str) == Some("host"));
    let only = hosts.next()?;
    if hosts.next().is_some() {
        return None;
    }
    let value = only.get("entityValue")?;
    let (name, uid, ips) = match value {
        Value::Object(o) => (
            o.get("name").and_then(Value::as_str),
            o.get("guid").and_then(Value::as_str),
            o.get("ips")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        ),
        Value::String(s) => (Some(s.as_str()), None, Vec::new()),
        _ => return None,
    };
    let scope = item.get("impactScope");
    let count = |k: &str| {
        scope
            .and_then(|s| s.get(k))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let type_id = match (count("desktopCount"), count("serverCount")) {
        (1, 0) => 2,
        (0, 1) => 1,
        _ => 0,
    };
    finding::device(name, uid, &ips, type_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(item: Value) -> String {
        let mut l = Vec::new();
        crate::lake::encode::line_with_fields(
            item.to_string().as_bytes(),
            &[("_id", "v1")],
            &mut l,
        );
        String::from_utf8(l).unwrap()
    }

    /// Trend's own API sample (tm-v1-api-mockup `get_alert_list_200.json`, as its SAE alert
    /// has it), with the status fields of newer schemas.
    fn sample() -> Value {
        json!({
            "schemaVersion": "1.12", "id": "WB-9002-20220906-00022",
            "investigationStatus": "New", "status": "Open", "investigationResult": "No Findings",
            "workbenchLink": "https://THE_WORKBENCH_URL", "alertProvider": "SAE",
            "modelId": "f9b4f1d8-1a7c-4d0a-9a8e-5b6c7d8e9f01",
            "model": "Privilege Escalation via UAC Bypass", "modelType": "preset",
            "score": 64, "severity": "high",
            "createdDateTime": "2022-09-06T02:49:31Z", "updatedDateTime": "2022-09-06T02:49:48Z",
            "impactScope": {"desktopCount": 1, "serverCount": 0, "accountCount": 1,
                "emailAddressCount": 0, "entities": [
                    {"entityType": "account", "entityValue": "host\\user", "entityId": "host\\user",
                     "relatedEntities": ["35FA11DA-A24E-40CF-8B56-BAF8828CC15E"],
                     "relatedIndicatorIds": [], "provenance": ["Alert"]},
                    {"entityType": "host", "entityValue": {"guid": "35FA11DA-A24E-40CF-8B56-BAF8828CC15E",
                     "name": "host", "ips": ["1.1.1.1"]}, "entityId": "35FA11DA-A24E-40CF-8B56-BAF8828CC15E",
                     "relatedEntities": [], "relatedIndicatorIds": [1, 2], "provenance": ["Alert"]}]},
            "description": "Detects privilege escalation attacks via UAC bypass",
            "matchedRules": [{"id": "r1", "name": "Potential Bypass UAC Via Registry Modification",
                "matchedFilters": [{"id": "f1", "name": "Bypass UAC Via Shell Open Registry",
                    "matchedDateTime": "2022-09-06T02:49:29.000Z",
                    "mitreTechniqueIds": ["T1112", "V9.T1112", "V9.T1548.002"], "matchedEvents": []}]}],
            "indicators": [
                {"id": 1, "type": "command_line", "field": "processCmd",
                 "value": "c:\\windows\\system32\\reg.exe add HKCU\\...", "relatedEntities": [],
                 "filterIds": ["f1"], "provenance": ["Alert"]},
                {"id": 2, "type": "host", "field": "endpointHostName",
                 "value": {"guid": "35FA11DA", "name": "host", "ips": ["1.1.1.1"]},
                 "relatedEntities": [], "filterIds": [], "provenance": ["Alert"]}]
        })
    }

    #[test]
    fn an_alert_version_is_a_detection_finding_that_keeps_everything() {
        let item = sample();
        let l = line(item.clone());
        let e = from_line(&l).unwrap();
        assert_eq!(e["class_uid"], 2004);
        assert_eq!(e["category_uid"], 2);
        assert_eq!(e["type_uid"], 200402, "updated after creation: an Update");
        assert_eq!(e["time"], 1_662_432_588_000i64);
        assert_eq!(e["severity_id"], 4);
        assert_eq!(
            (e["status_id"].as_i64(), e["status"].as_str()),
            (Some(1), Some("New"))
        );
        assert_eq!(e["status_detail"], "No Findings");
        assert_eq!(e["risk_score"], 64);
        let f = &e["finding_info"];
        assert_eq!(f["uid"], "WB-9002-20220906-00022");
        assert_eq!(f["title"], "Privilege Escalation via UAC Bypass");
        assert_eq!(f["created_time"], 1_662_432_571_000i64);
        assert_eq!(f["analytic"]["type_id"], 1);
        assert_eq!(f["attacks"].as_array().unwrap().len(), 2);
        assert_eq!(f["first_seen_time"], 1_662_432_569_000i64);
        assert_eq!(e["device"]["hostname"], "host");
        assert_eq!(e["device"]["ip"], "1.1.1.1");
        assert_eq!(e["device"]["type_id"], 2);
        assert_eq!(e["resources"].as_array().unwrap().len(), 2);
        assert_eq!(e["observables"].as_array().unwrap().len(), 3);
        assert_eq!(e["metadata"]["uid"], "v1");
        assert_eq!(e["unmapped"]["status"], "Open");
        assert!(
            e["unmapped"]["matchedRules"]
                .as_str()
                .unwrap()
                .contains("T1548")
        );
        assert_eq!(
            serde_json::from_str::<Value>(e["raw_data"].as_str().unwrap()).unwrap(),
            item
        );
        assert_eq!(
            class_and_time(&l),
            Some((DETECTION_FINDING, 1_662_432_588_000))
        );
    }

    #[test]
    fn the_lifecycle_gives_create_update_and_close() {
        let mut item = sample();
        item["updatedDateTime"] = item["createdDateTime"].clone();
        let e = from_line(&line(item.clone())).unwrap();
        assert_eq!(
            (e["activity_id"].as_i64(), e["activity_name"].as_str()),
            (Some(1), Some("Create"))
        );
        item["updatedDateTime"] = "2022-09-07T00:00:00Z".into();
        item["status"] = "In Progress".into();
        let e = from_line(&line(item.clone())).unwrap();
        assert_eq!(
            (e["activity_id"].as_i64(), e["status_id"].as_i64()),
            (Some(2), Some(2))
        );
        item["status"] = "Closed".into();
        item["investigationResult"] = "False Positive".into();
        let e = from_line(&line(item.clone())).unwrap();
        assert_eq!(
            (e["activity_id"].as_i64(), e["status_id"].as_i64()),
            (Some(3), Some(3))
        );
        assert_eq!(e["status"], "Suppressed");
        item["investigationResult"] = "True Positive".into();
        let e = from_line(&line(item.clone())).unwrap();
        assert_eq!(e["status_id"], 4);
        // An older schema: the deprecated investigationStatus alone.
        let mut old = sample();
        old.as_object_mut().unwrap().remove("status");
        old.as_object_mut().unwrap().remove("investigationResult");
        old["investigationStatus"] = "False Positive".into();
        let e = from_line(&line(old)).unwrap();
        assert_eq!(
            (e["activity_id"].as_i64(), e["status_id"].as_i64()),
            (Some(3), Some(3))
        );
    }

    #[test]
    fn lines_the_puller_did_not_write_do_not_map() {
        assert!(from_line(r#"{"id":"WB-1","updatedDateTime":"2022-09-06T02:49:48Z"}"#).is_none());
        assert!(from_line(r#"{"_id":"x","id":"WB-1"}"#).is_none());
        assert!(class_and_time(r#"{"_id":"x","updatedDateTime":"soon"}"#).is_none());
    }
}
