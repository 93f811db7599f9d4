//! What the two Vision One finding streams (Workbench alerts, OAT detections) share as OCSF
//! Detection Findings (2004): MITRE ATT&CK ids as `attack` objects, Vision One's indicator and
//! highlighted-object types as observables, risk words as severities, a host as the `device`.
//!
//! Sources: OCSF 1.1.0 `objects/attack.json`, `observable.json`, `device.json`, the dictionary's
//! `observable` type ids; Vision One's value sets from `docs/research/vision-one-streams.md`.

use serde_json::{Map, Value, json};

/// `severity_id` of a Vision One severity or risk level (alerts `severity`: low, medium, high,
/// critical; OAT `riskLevel`: undefined, info, low, medium, high, critical): 1 Informational,
/// 2 Low, 3 Medium, 4 High, 5 Critical, else 0 Unknown.
pub(super) fn severity_id(word: &str) -> i64 {
    match word.to_ascii_lowercase().as_str() {
        "info" | "informational" => 1,
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        _ => 0,
    }
}

/// `risk_level_id` of an OAT `riskLevel` (the OCSF enum: 0 Info, 1 Low, 2 Medium, 3 High,
/// 4 Critical), with its caption; `None` for `undefined` and unknown words.
pub(super) fn risk_level(word: &str) -> Option<(i64, &'static str)> {
    match word.to_ascii_lowercase().as_str() {
        "info" => Some((0, "Info")),
        "low" => Some((1, "Low")),
        "medium" => Some((2, "Medium")),
        "high" => Some((3, "High")),
        "critical" => Some((4, "Critical")),
        _ => None,
    }
}

/// A MITRE ATT&CK id as Vision One writes it (`T1003.002`, `V9.T1548.002`, `TA0002`): the
/// ATT&CK version the `V<n>.` prefix names, and the id.
fn mitre_id(raw: &str) -> (Option<&str>, &str) {
    match raw.trim().split_once('.') {
        Some((v, rest))
            if v.len() > 1
                && v.starts_with(['V', 'v'])
                && v[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            (Some(&v[1..]), rest)
        }
        _ => (None, raw.trim()),
    }
}

/// ATT&CK ids gathered from one finding, made into OCSF `attack` objects: one per technique
/// (with its sub-technique when the id is `Txxxx.yyy`) and tactic named together, or per
/// tactic or technique named alone; duplicates merged (a versioned and a bare copy of an id
/// are one attack, keeping the version).
#[derive(Debug, Default)]
pub(super) struct Attacks(Vec<Map<String, Value>>);

impl Attacks {
    /// Adds the attacks of one detection rule: its tactic ids and technique ids (Vision One
    /// does not pair them; every technique is listed under each tactic the rule names, as
    /// ATT&CK lists a technique under each tactic it serves).
    pub(super) fn add(&mut self, tactics: &[&str], techniques: &[&str]) {
        let tactics: Vec<Option<&str>> = if tactics.is_empty() {
            vec![None]
        } else {
            tactics.iter().map(|t| Some(*t)).collect()
        };
        let techniques: Vec<Option<&str>> = if techniques.is_empty() {
            vec![None]
        } else {
            techniques.iter().map(|t| Some(*t)).collect()
        };
        for tactic in &tactics {
            for technique in &techniques {
                self.add_one(*tactic, *technique);
            }
        }
    }

    fn add_one(&mut self, tactic: Option<&str>, technique: Option<&str>) {
        let mut version = None;
        let mut attack = Map::new();
        if let Some(t) = tactic.map(mitre_id).filter(|(_, id)| !id.is_empty()) {
            version = version.or(t.0);
            attack.insert("tactic".into(), json!({ "uid": t.1 }));
        }
        if let Some(t) = technique.map(mitre_id).filter(|(_, id)| !id.is_empty()) {
            version = version.or(t.0);
            match t.1.split_once('.') {
                Some((parent, _)) => {
                    attack.insert("technique".into(), json!({ "uid": parent }));
                    attack.insert("sub_technique".into(), json!({ "uid": t.1 }));
                }
                None => {
                    attack.insert("technique".into(), json!({ "uid": t.1 }));
                }
            }
        }
        if attack.is_empty() {
            return;
        }
        if let Some(same) = self.0.iter_mut().find(|a| {
            ["tactic", "technique", "sub_technique"]
                .iter()
                .all(|k| a.get(*k) == attack.get(*k))
        }) {
            if let (None, Some(v)) = (same.get("version"), version) {
                same.insert("version".into(), v.into());
            }
            return;
        }
        if let Some(v) = version {
            attack.insert("version".into(), v.into());
        }
        self.0.push(attack);
    }

    /// The `attack` objects, `None` when there are none.
    pub(super) fn into_value(self) -> Option<Value> {
        (!self.0.is_empty()).then(|| Value::Array(self.0.into_iter().map(Value::Object).collect()))
    }
}

/// The OCSF observable type of a Vision One indicator or highlighted-object type
/// (`type_id`, caption), from the types the 1.1.0 dictionary marks `observable`; anything else
/// is 99 Other, its Vision One type kept as the caption.
fn observable_type(vision_one: &str) -> (i64, Option<&'static str>) {
    match vision_one.to_ascii_lowercase().as_str() {
        "host" | "hostname" | "domain" | "endpoint" => (1, Some("Hostname")),
        "ip" | "ip_address" | "ipaddress" => (2, Some("IP Address")),
        "mac" | "mac_address" => (3, Some("MAC Address")),
        "user_account" | "account" | "user" | "username" => (4, Some("User Name")),
        "email" | "email_address" | "emailaddress" | "email_sender" | "email_recipient"
        | "mailbox" => (5, Some("Email Address")),
        "url" => (6, Some("URL String")),
        "filename" | "file_name" => (7, Some("File Name")),
        "file_sha1" | "file_sha256" | "file_md5" | "sha1" | "sha256" | "md5" => (8, Some("Hash")),
        "process_name" | "processname" => (9, Some("Process Name")),
        _ => (99, None),
    }
}

/// The observables of one indicator or highlighted object: `name` (Vision One's field name,
/// e.g. `processCmd`, else its type), its type and value. A value that is a list gives one
/// observable per element; a host object (`{name, ips, guid}`) its name as a Hostname and each
/// address as an IP Address; a number its decimal text.
pub(super) fn observables(name: &str, vision_one_type: &str, value: &Value, out: &mut Vec<Value>) {
    let push =
        |out: &mut Vec<Value>, name: &str, (type_id, caption): (i64, Option<&str>), v: String| {
            let mut o = Map::new();
            o.insert("name".into(), name.into());
            o.insert("type_id".into(), type_id.into());
            o.insert(
                "type".into(),
                caption
                    .unwrap_or(if vision_one_type.is_empty() {
                        "Other"
                    } else {
                        vision_one_type
                    })
                    .into(),
            );
            o.insert("value".into(), v.into());
            out.push(Value::Object(o));
        };
    match value {
        Value::String(s) if !s.is_empty() => {
            push(out, name, observable_type(vision_one_type), s.clone())
        }
        Value::Number(n) => push(out, name, observable_type(vision_one_type), n.to_string()),
        Value::Bool(b) => push(out, name, observable_type(vision_one_type), b.to_string()),
        Value::Array(items) => {
            for item in items {
                observables(name, vision_one_type, item, out);
            }
        }
        Value::Object(host) => {
            if let Some(h) = host
                .get("name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                push(out, name, (1, Some("Hostname")), h.to_owned());
            }
            for ip in host
                .get("ips")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(ip) = ip
                    .as_str()
                    .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
                {
                    push(out, name, (2, Some("IP Address")), ip.to_owned());
                }
            }
        }
        _ => {}
    }
}

/// The observables of Vision One's typed objects (alert `indicators`, OAT
/// `highlightedObjects`: `{type, field, value}`), each named by its `field`, else its `type`,
/// else `unnamed` (see [`observables`]).
pub(super) fn observables_of<'a>(
    objects: impl Iterator<Item = &'a Value>,
    unnamed: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    for object in objects {
        let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
        let name = object
            .get("field")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(if kind.is_empty() { unnamed } else { kind });
        if let Some(v) = object.get("value") {
            observables(name, kind, v, &mut out);
        }
    }
    out
}

/// An affected host as the OCSF `device`: `hostname`, `uid` (the agent GUID), `ip` (the first
/// address that is one: the attribute holds one), `type_id` (1 Server, 2 Desktop, else 0
/// Unknown). `None` without a name or uid.
pub(super) fn device(
    name: Option<&str>,
    uid: Option<&str>,
    ips: &[Value],
    type_id: i64,
) -> Option<Value> {
    let name = name.filter(|s| !s.is_empty());
    let uid = uid.filter(|s| !s.is_empty());
    if name.is_none() && uid.is_none() {
        return None;
    }
    let mut d = Map::new();
    if let Some(n) = name {
        d.insert("hostname".into(), n.into());
    }
    if let Some(u) = uid {
        d.insert("uid".into(), u.into());
    }
    if let Some(ip) = ips
        .iter()
        .filter_map(Value::as_str)
        .find(|s| s.parse::<std::net::IpAddr>().is_ok())
    {
        d.insert("ip".into(), ip.into());
    }
    d.insert("type_id".into(), type_id.into());
    d.insert(
        "type".into(),
        match type_id {
            1 => "Server",
            2 => "Desktop",
            _ => "Unknown",
        }
        .into(),
    );
    Some(Value::Object(d))
}

/// Epoch milliseconds of a Vision One time (`2026-11-30T10:00:00Z`, `...:49.802Z`).
pub(super) fn millis(text: Option<&str>) -> Option<i64> {
    crate::timefmt::parse_api_time(text?).map(|t| t.timestamp_millis())
}

/// The product block of a Vision One finding, `feature` naming the stream's app.
pub(super) fn product(feature: &str) -> Value {
    json!({
        "name": "Trend Vision One",
        "vendor_name": "Trend Micro",
        "feature": {"name": feature},
    })
}

/// Every field of `item` not in `mapped` (those with an attribute that holds them whole), as
/// `unmapped` text; a null field carries nothing.
pub(super) fn unmapped(item: &Map<String, Value>, mapped: &[&str]) -> Map<String, Value> {
    item.iter()
        .filter(|(k, v)| !mapped.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), super::unmapped_value(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_ids_become_techniques_sub_techniques_and_tactics() {
        let mut a = Attacks::default();
        a.add(&[], &["T1112", "V9.T1112", "V9.T1548.002"]);
        let v = a.into_value().unwrap();
        assert_eq!(
            v,
            json!([
                {"technique": {"uid": "T1112"}, "version": "9"},
                {"technique": {"uid": "T1548"}, "sub_technique": {"uid": "T1548.002"}, "version": "9"},
            ])
        );
        let mut a = Attacks::default();
        a.add(&["TA0002", "TA0003"], &["T1053.005"]);
        a.add(&["TA0005"], &[]);
        let v = a.into_value().unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[1]["tactic"]["uid"], "TA0003");
        assert_eq!(v[1]["sub_technique"]["uid"], "T1053.005");
        assert_eq!(v[2], json!({"tactic": {"uid": "TA0005"}}));
        assert!(Attacks::default().into_value().is_none());
        assert_eq!(mitre_id("V.T1"), (None, "V.T1"));
    }

    #[test]
    fn indicator_values_become_typed_observables() {
        let mut out = Vec::new();
        observables("processCmd", "command_line", &json!("reg save"), &mut out);
        observables("objectPort", "port", &json!(443), &mut out);
        observables("f", "file_sha1", &json!(["a", "b"]), &mut out);
        observables(
            "host",
            "host",
            &json!({"name": "DESKTOP-1", "ips": ["10.0.0.1", "not an ip"], "guid": "g"}),
            &mut out,
        );
        let shape: Vec<(String, i64, String)> = out
            .iter()
            .map(|o| {
                (
                    o["type"].as_str().unwrap().into(),
                    o["type_id"].as_i64().unwrap(),
                    o["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("command_line".into(), 99, "reg save".into()),
                ("port".into(), 99, "443".into()),
                ("Hash".into(), 8, "a".into()),
                ("Hash".into(), 8, "b".into()),
                ("Hostname".into(), 1, "DESKTOP-1".into()),
                ("IP Address".into(), 2, "10.0.0.1".into()),
            ]
        );
    }
}
