//! Windows Security events in the shapes forwarders send, validated and normalised.
//!
//! Three shapes are accepted:
//! - **Winlogbeat / Elastic Agent (ECS)**: `@timestamp`, `winlog.{event_id, computer_name,
//!   record_id, channel, provider_name}`, `event.code`, `host.name`;
//! - **NXLog** (`im_msvistalog` + `to_json`): `EventTime`, `EventID`, `Hostname`, `RecordNumber`,
//!   `Channel`, `SourceName`;
//! - **native**: `time, event_id, computer, channel, record_id, provider, data{...}`.

use crate::timefmt::parse_api_time;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// The families of the Vision One AD integration, plus `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Logon/logoff and authentication (Kerberos, NTLM).
    Logon,
    /// User, group and computer account changes.
    AccountManagement,
    /// Object access, including directory service access and changes.
    ObjectAccess,
    /// System events: audit policy, log cleared, services, time changes.
    System,
    /// Anything else.
    Other,
}

impl Category {
    /// The partition value.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Logon => "logon",
            Category::AccountManagement => "account_management",
            Category::ObjectAccess => "object_access",
            Category::System => "system",
            Category::Other => "other",
        }
    }

    /// The family of a Windows event id.
    pub fn of(event_id: u32) -> Category {
        match event_id {
            4624 | 4625 | 4634 | 4647 | 4648 | 4672 | 4768..=4779 | 4800 | 4801 | 4964 | 8004 => {
                Category::Logon
            }
            4720..=4767 | 4780..=4799 => Category::AccountManagement,
            4656 | 4658 | 4660..=4663 | 4670 | 5136..=5141 | 5145 | 1644 => Category::ObjectAccess,
            1100
            | 1102
            | 1104
            | 1105
            | 4608
            | 4609
            | 4616
            | 4697
            | 4719
            | 4902
            | 4904..=4912
            | 6005
            | 6006
            | 7036
            | 7040
            | 7045 => Category::System,
            _ => Category::Other,
        }
    }
}

/// Which shape an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Winlogbeat / ECS.
    Winlogbeat,
    /// NXLog.
    Nxlog,
    /// The connector's own flat shape.
    Native,
}

/// The normalised fields of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// UTC time the event was logged.
    pub time: DateTime<Utc>,
    /// Windows event id.
    pub event_id: u32,
    /// Family.
    pub category: Category,
    /// Computer that logged it.
    pub computer: String,
    /// Event log channel, when given.
    pub channel: Option<String>,
    /// Event record id, when given.
    pub record_id: Option<u64>,
    /// Provider (source), when given.
    pub provider: Option<String>,
    /// Shape it came in.
    pub shape: Shape,
}

fn path<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(v, |v, k| v.get(*k))
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An integer given as a JSON number or as a string of digits (Winlogbeat changed this).
fn integer(v: Option<&Value>) -> Option<Result<u64, ()>> {
    match v? {
        Value::Number(n) => Some(n.as_u64().ok_or(())),
        Value::String(s) => Some(s.trim().parse().map_err(|_| ())),
        Value::Null => None,
        _ => Some(Err(())),
    }
}

/// Validates and normalises one event; the error is a reason an agent author can act on.
pub fn normalize(event: &Value) -> Result<Normalized, String> {
    if !event.is_object() {
        return Err("an event must be a JSON object".into());
    }
    let (shape, time, id, computer, record, channel, provider) = if event.get("winlog").is_some() {
        (
            Shape::Winlogbeat,
            ("@timestamp", event.get("@timestamp")),
            (
                "winlog.event_id",
                path(event, &["winlog", "event_id"]).or_else(|| path(event, &["event", "code"])),
            ),
            text(path(event, &["winlog", "computer_name"]))
                .or_else(|| text(path(event, &["host", "name"]))),
            ("winlog.record_id", path(event, &["winlog", "record_id"])),
            text(path(event, &["winlog", "channel"])),
            text(path(event, &["winlog", "provider_name"])),
        )
    } else if event.get("EventID").is_some() {
        (
            Shape::Nxlog,
            ("EventTime", event.get("EventTime")),
            ("EventID", event.get("EventID")),
            text(event.get("Hostname")),
            ("RecordNumber", event.get("RecordNumber")),
            text(event.get("Channel")),
            text(event.get("SourceName")),
        )
    } else if event.get("event_id").is_some() {
        (
            Shape::Native,
            ("time", event.get("time")),
            ("event_id", event.get("event_id")),
            text(event.get("computer")),
            ("record_id", event.get("record_id")),
            text(event.get("channel")),
            text(event.get("provider")),
        )
    } else {
        return Err("unrecognised event shape: expected Winlogbeat (winlog.*), NXLog (EventID) or native (event_id)".into());
    };
    let event_id = match integer(id.1) {
        Some(Ok(n)) if n <= 65_535 => n as u32,
        Some(_) => return Err(format!("{} is not a Windows event id (0-65535)", id.0)),
        None => return Err(format!("{} is missing", id.0)),
    };
    let time = match time.1.and_then(Value::as_str) {
        Some(s) => parse_api_time(s).ok_or_else(|| {
            // Echo only the start of the value: a reply listing 100 of them must stay small.
            let shown: String = s.chars().take(40).collect();
            let more = if shown.len() < s.len() { "..." } else { "" };
            format!(
                "{} {shown:?}{more} is not a timestamp (use RFC 3339, e.g. 2026-11-21T10:00:00Z)",
                time.0
            )
        })?,
        None => return Err(format!("{} is missing or not a string", time.0)),
    };
    let computer = computer.ok_or(
        "the computer name is missing (winlog.computer_name / host.name, Hostname, computer)",
    )?;
    let record_id = match integer(record.1) {
        Some(Ok(n)) => Some(n),
        Some(Err(())) => return Err(format!("{} is not a non-negative integer", record.0)),
        None => None,
    };
    Ok(Normalized {
        time,
        event_id,
        category: Category::of(event_id),
        computer,
        channel,
        record_id,
        provider,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_shapes() {
        let wlb = json!({"@timestamp":"2026-11-21T10:00:00.123Z","event":{"code":"4624"},"host":{"name":"dc01"},
            "winlog":{"channel":"Security","computer_name":"DC01.corp.example","event_id":"4624","record_id":"991",
            "provider_name":"Microsoft-Windows-Security-Auditing","event_data":{"LogonType":"3"}}});
        let n = normalize(&wlb).unwrap();
        assert_eq!(
            (n.event_id, n.category, n.record_id, n.shape),
            (4624, Category::Logon, Some(991), Shape::Winlogbeat)
        );
        assert_eq!(n.computer, "DC01.corp.example");
        let old = json!({"@timestamp":"2026-11-21T10:00:00Z","host":{"name":"dc02"},"winlog":{"event_id":4720}});
        let n = normalize(&old).unwrap();
        assert_eq!(
            (n.event_id, n.category, n.computer.as_str(), n.record_id),
            (4720, Category::AccountManagement, "dc02", None)
        );

        let nx = json!({"EventTime":"2026-11-21 10:00:00","Hostname":"DC01","EventID":4662,"SourceName":"Microsoft-Windows-Security-Auditing",
            "Channel":"Security","RecordNumber":77,"EventType":"AUDIT_SUCCESS","ObjectServer":"DS"});
        let n = normalize(&nx).unwrap();
        assert_eq!(
            (n.event_id, n.category, n.shape, n.record_id),
            (4662, Category::ObjectAccess, Shape::Nxlog, Some(77))
        );
        assert_eq!(crate::timefmt::api_time(n.time), "2026-11-21T10:00:00Z");

        let native = json!({"time":"2026-11-21T10:00:00Z","event_id":1102,"computer":"DC01","channel":"Security","record_id":5,"provider":"Microsoft-Windows-Eventlog","data":{}});
        let n = normalize(&native).unwrap();
        assert_eq!(
            (n.category, n.shape, n.channel.as_deref()),
            (Category::System, Shape::Native, Some("Security"))
        );
    }

    #[test]
    fn invalid_events_say_why() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!({"foo":1}), "unrecognised event shape"),
            (
                json!({"event_id":"x","time":"2026-11-21T10:00:00Z","computer":"a"}),
                "event_id is not a Windows event id",
            ),
            (
                json!({"event_id":70000,"time":"2026-11-21T10:00:00Z","computer":"a"}),
                "event_id is not",
            ),
            (
                json!({"event_id":4624,"time":"yesterday","computer":"a"}),
                "time \"yesterday\" is not a timestamp",
            ),
            (json!({"event_id":4624,"computer":"a"}), "time is missing"),
            (
                json!({"event_id":4624,"time":"2026-11-21T10:00:00Z"}),
                "computer name is missing",
            ),
            (
                json!({"event_id":4624,"time":"2026-11-21T10:00:00Z","computer":"a","record_id":-1}),
                "record_id is not",
            ),
            (
                json!({"EventID":4624,"EventTime":"2026-11-21 10:00:00","Hostname":" "}),
                "computer name is missing",
            ),
            (
                json!({"winlog":{},"@timestamp":"2026-11-21T10:00:00Z"}),
                "winlog.event_id is missing",
            ),
        ];
        for (ev, want) in cases {
            let e = normalize(&ev).unwrap_err();
            assert!(e.contains(want), "{ev}: {e}");
        }
    }

    #[test]
    fn categories() {
        assert_eq!(Category::of(4625), Category::Logon);
        assert_eq!(Category::of(4769), Category::Logon);
        assert_eq!(Category::of(4728), Category::AccountManagement);
        assert_eq!(Category::of(4741), Category::AccountManagement);
        assert_eq!(Category::of(5136), Category::ObjectAccess);
        assert_eq!(Category::of(7045), Category::System);
        assert_eq!(Category::of(4719), Category::System);
        assert_eq!(Category::of(1), Category::Other);
    }
}
