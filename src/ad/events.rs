//! Windows Security events in the shapes forwarders send, validated and normalised.
//!
//! One arm of `fields` per shape (see [`Shape`]): Winlogbeat / Elastic Agent (ECS), NXLog
//! (`im_msvistalog` + `to_json`), Fluent Bit's `winevtlog` and `winlog` inputs, the OpenTelemetry
//! `windowseventlog` receiver, Vector's `windows_event_log` source (with or without the
//! `timestamp` its HEC sink moves out of the event), the rendered XML and text of an event, and
//! the connector's own flat shape. The time is read by [`super::event_time`]: UTC at the
//! source's precision, never a zone-less time taken as UTC.

use super::event_time::{self, TimeFix};
use super::windows_xml;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The families of the Vision One AD integration, plus `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// NXLog (`im_msvistalog` + `to_json`).
    Nxlog,
    /// Fluent Bit `winevtlog` input.
    FluentBitWinevtlog,
    /// Fluent Bit `winlog` input (the older event log API).
    FluentBitWinlog,
    /// OpenTelemetry Collector `windowseventlog` receiver (a log body; also as HEC `event`).
    OtelWindowsEventLog,
    /// Vector `windows_event_log` source.
    VectorWindowsEventLog,
    /// The rendered XML of a Windows event (a string, or Fluent Bit's `{"System": "<System>..."}`).
    WindowsXml,
    /// A Windows event rendered as `key=value` lines: Splunk's classic `WinEventLog` text
    /// (`EventCode=`, `ComputerName=`...) or Fluent Bit's `render_event_as_text` (`EventID=`...).
    WindowsText,
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
    /// How the stated time was corrected or interpreted, when it was.
    pub time_fix: Option<TimeFix>,
}

/// What the transport and the agent say about a request's events, beyond the events.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints {
    /// The transport's time of the event (HEC `time`): the event's time when the event carries
    /// none (Vector's HEC sink moves it there), else when the agent read it.
    pub transport_time: Option<DateTime<Utc>>,
    /// The zone the agent declared for times written without one.
    pub zone: Option<Tz>,
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

/// Where one shape keeps the fields the connector reads: `(name, value)` pairs, the name for
/// error messages.
struct Fields {
    shape: Shape,
    time: (&'static str, Option<Value>),
    id: (&'static str, Option<Value>),
    computer: Option<String>,
    record: (&'static str, Option<Value>),
    channel: Option<String>,
    provider: Option<String>,
}

const SHAPES: &str = "expected Winlogbeat (winlog.*), NXLog (EventID, EventTime), Fluent Bit winevtlog (EventID, TimeCreated) or winlog (EventId, TimeGenerated), OpenTelemetry windowseventlog (event_id.id, system_time), Vector windows_event_log (event_id, timestamp), Windows event XML, or native (event_id, time)";

/// Recognises the shape of an object event. (Long because it is a table: one arm per shape.)
fn fields(event: &Value) -> Option<Fields> {
    let get = |k: &str| event.get(k);
    let owned = |k: &str| event.get(k).cloned();
    let f = if get("winlog").is_some() {
        Fields {
            shape: Shape::Winlogbeat,
            time: ("@timestamp", owned("@timestamp")),
            id: (
                "winlog.event_id",
                path(event, &["winlog", "event_id"])
                    .or_else(|| path(event, &["event", "code"]))
                    .cloned(),
            ),
            computer: text(path(event, &["winlog", "computer_name"]))
                .or_else(|| text(path(event, &["host", "name"]))),
            record: (
                "winlog.record_id",
                path(event, &["winlog", "record_id"]).cloned(),
            ),
            channel: text(path(event, &["winlog", "channel"])),
            provider: text(path(event, &["winlog", "provider_name"])),
        }
    } else if get("EventID").is_some()
        && (get("TimeCreated").is_some() || get("Computer").is_some())
    {
        Fields {
            shape: Shape::FluentBitWinevtlog,
            time: ("TimeCreated", owned("TimeCreated")),
            id: ("EventID", get("EventID").cloned()),
            computer: text(get("Computer")),
            record: ("EventRecordID", get("EventRecordID").cloned()),
            channel: text(get("Channel")),
            provider: text(get("ProviderName")),
        }
    } else if get("EventID").is_some() {
        Fields {
            shape: Shape::Nxlog,
            time: ("EventTime", owned("EventTime")),
            id: ("EventID", get("EventID").cloned()),
            computer: text(get("Hostname")),
            record: ("RecordNumber", get("RecordNumber").cloned()),
            channel: text(get("Channel")),
            provider: text(get("SourceName")),
        }
    } else if get("EventId").is_some() {
        Fields {
            shape: Shape::FluentBitWinlog,
            time: ("TimeGenerated", owned("TimeGenerated")),
            id: ("EventId", get("EventId").cloned()),
            computer: text(get("ComputerName")),
            record: ("RecordNumber", get("RecordNumber").cloned()),
            channel: text(get("Channel")),
            provider: text(get("SourceName")),
        }
    } else if get("event_id").is_some_and(Value::is_object) {
        Fields {
            shape: Shape::OtelWindowsEventLog,
            time: ("system_time", owned("system_time")),
            id: ("event_id.id", path(event, &["event_id", "id"]).cloned()),
            computer: text(get("computer")),
            record: ("record_id", get("record_id").cloned()),
            channel: text(get("channel")),
            provider: text(path(event, &["provider", "name"])),
        }
    } else if get("event_id").is_some()
        && get("time").is_none()
        // Vector's own field names; its HEC sink moves `timestamp` out to HEC `time`.
        && ["timestamp", "event_data", "user_data", "provider_name", "record_id"]
            .iter()
            .any(|k| get(k).is_some())
    {
        Fields {
            shape: Shape::VectorWindowsEventLog,
            time: ("timestamp", owned("timestamp")),
            id: ("event_id", get("event_id").cloned()),
            computer: text(get("computer")).or_else(|| text(get("host"))),
            record: ("record_id", get("record_id").cloned()),
            channel: text(get("channel")),
            provider: text(get("provider_name")),
        }
    } else if get("event_id").is_some() {
        Fields {
            shape: Shape::Native,
            time: ("time", owned("time")),
            id: ("event_id", get("event_id").cloned()),
            computer: text(get("computer")),
            record: ("record_id", get("record_id").cloned()),
            channel: text(get("channel")),
            provider: text(get("provider")),
        }
    } else {
        return None;
    };
    Some(f)
}

/// A Windows event's rendered XML (its `<System>` part is enough), as the event's fields.
fn xml_fields(xml: &str) -> Result<Fields, String> {
    let x = windows_xml::parse(xml)?;
    let s = |v: Option<String>| v.map(Value::String);
    Ok(Fields {
        shape: Shape::WindowsXml,
        time: ("TimeCreated/@SystemTime", s(x.system_time)),
        id: ("EventID", s(x.event_id)),
        computer: x.computer,
        record: ("EventRecordID", s(x.record_id)),
        channel: x.channel,
        provider: x.provider,
    })
}

/// A Windows event rendered as `key=value` lines, as its fields. The time comes from a
/// `TimeCreated=` line when it is one the connector reads, else from the transport (HEC's
/// `time`): the classic rendering's first line is a local time without a zone.
fn text_fields(rendered: &str) -> Fields {
    let kv: std::collections::HashMap<&str, Value> = rendered
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), Value::String(v.trim().to_owned())))
        .collect();
    let get = |k: &str| kv.get(k);
    let any = |ks: &[&str]| ks.iter().find_map(|k| get(k));
    let time = get("TimeCreated")
        .filter(|t| {
            t.as_str()
                .is_some_and(|t| event_time::parse("TimeCreated", t, None).is_ok())
        })
        .cloned();
    Fields {
        shape: Shape::WindowsText,
        time: ("TimeCreated", time),
        id: ("EventCode/EventID", any(&["EventCode", "EventID"]).cloned()),
        computer: text(any(&["ComputerName", "Computer"])),
        record: (
            "RecordNumber/EventRecordID",
            any(&["RecordNumber", "EventRecordID"]).cloned(),
        ),
        channel: text(any(&["LogName", "Channel"])),
        provider: text(any(&["SourceName", "ProviderName"])),
    }
}

/// Validates and normalises one event; the error is a reason an agent author can act on.
pub fn normalize(event: &Value) -> Result<Normalized, String> {
    normalize_in(event, &Hints::default())
}

/// [`normalize`], with the time to use when the event carries none (HEC's `time`).
pub fn normalize_with(
    event: &Value,
    fallback_time: Option<DateTime<Utc>>,
) -> Result<Normalized, String> {
    normalize_in(
        event,
        &Hints {
            transport_time: fallback_time,
            zone: None,
        },
    )
}

/// [`normalize`], with what the transport and the agent said about the event.
pub fn normalize_in(event: &Value, hints: &Hints) -> Result<Normalized, String> {
    let f = fields_of(event)?;
    let rendering = match f.shape {
        Shape::WindowsXml => "Windows event XML: ",
        Shape::WindowsText => "Windows event text: ",
        _ => "",
    };
    finish(f, hints).map_err(|e| format!("{rendering}{e}"))
}

/// The computer an event names, whether or not the event can be stored: what names a HEC
/// agent that names itself nowhere else (a function of the event alone, so a retry of the
/// same body names the same agent).
pub fn computer_of(event: &Value) -> Option<String> {
    fields_of(event).ok()?.computer
}

/// Where the event keeps each field the connector reads, by its shape.
fn fields_of(event: &Value) -> Result<Fields, String> {
    let xml = match event {
        Value::String(s) => Some(s.as_str()),
        Value::Object(_) => event.get("System").and_then(Value::as_str),
        _ => None,
    };
    if let Some(xml) = xml.filter(|x| x.contains("<EventID")) {
        return xml_fields(xml).map_err(|e| format!("Windows event XML: {e}"));
    }
    let text = match event {
        Value::String(s) => Some(s.as_str()),
        Value::Object(_) => event.get("log").and_then(Value::as_str),
        _ => None,
    };
    if let Some(text) = text.filter(|t| t.contains("EventCode=") || t.contains("EventID=")) {
        return Ok(text_fields(text));
    }
    if !event.is_object() {
        return Err(
            "an event must be a JSON object (or the XML or key=value text of a Windows event)"
                .into(),
        );
    }
    fields(event).ok_or_else(|| format!("unrecognised event shape: {SHAPES}"))
}

fn finish(f: Fields, hints: &Hints) -> Result<Normalized, String> {
    let (id, time, record) = (f.id, f.time, f.record);
    let event_id = match integer(id.1.as_ref()) {
        Some(Ok(n)) if n <= 65_535 => n as u32,
        Some(_) => return Err(format!("{} is not a Windows event id (0-65535)", id.0)),
        None => return Err(format!("{} is missing", id.0)),
    };
    let fluent_bit = matches!(f.shape, Shape::FluentBitWinevtlog | Shape::FluentBitWinlog);
    let (time, time_fix) = match (
        time.1.as_ref().and_then(Value::as_str),
        hints.transport_time,
    ) {
        (Some(s), _) if fluent_bit && hints.zone.is_some() => {
            match hints
                .zone
                .and_then(|z| event_time::fluent_bit_wall_clock(s, z))
            {
                Some((t, fix)) => (t, Some(fix)),
                None => event_time::parse(time.0, s, hints.zone)?,
            }
        }
        (Some(s), _) => event_time::parse(time.0, s, hints.zone)?,
        (None, Some(t)) => (t, None),
        (None, None) => return Err(format!("{} is missing or not a string", time.0)),
    };
    let time = event_time::plausible(time)?;
    let computer = f.computer.ok_or(
        "the computer name is missing (winlog.computer_name / host.name, Hostname, Computer, ComputerName, computer)",
    )?;
    let record_id = match integer(record.1.as_ref()) {
        Some(Ok(n)) => Some(n),
        Some(Err(())) => return Err(format!("{} is not a non-negative integer", record.0)),
        None => None,
    };
    Ok(Normalized {
        time,
        event_id,
        category: Category::of(event_id),
        computer,
        channel: f.channel,
        record_id,
        provider: f.provider,
        shape: f.shape,
        time_fix,
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

        // NXLog Agent's default DateFormat: local time with its offset.
        let nx = json!({"EventTime":"2026-11-21T11:00:00.000000+01:00","Hostname":"DC01","EventID":4662,"SourceName":"Microsoft-Windows-Security-Auditing",
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
                json!({"EventID":4624,"EventTime":"2026-11-21T10:00:00Z","Hostname":" "}),
                "computer name is missing",
            ),
            (
                json!({"winlog":{},"@timestamp":"2026-11-21T10:00:00Z"}),
                "winlog.event_id is missing",
            ),
            (
                json!({"EventID":4624,"EventTime":"2026-11-21 11:00:05","Hostname":"DC51"}),
                "EventTime \"2026-11-21 11:00:05\" has no time zone",
            ),
            (
                "<Event><System><EventID>4624</EventID><TimeCreated SystemTime=é/></System></Event>".into(),
                "Windows event XML: TimeCreated/@SystemTime is missing",
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
