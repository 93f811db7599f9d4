//! Windows Security events (the lines ad-ingest stores) as OCSF events.
//!
//! The class follows the event id, as the event's own semantics say (the table is in
//! `docs/ocsf.md`): logon, logoff, Kerberos and NTLM events → Authentication (3002); user and
//! computer account changes → Account Change (3001); group creation, membership and deletion →
//! Group Management (3006); privileges given to a new logon → Authorize Session (3003); user
//! rights assigned or removed → User Access Management (3005); directory objects, files,
//! services, audit policy, the log itself and anything else → Entity Management (3004), the
//! changed thing being the managed entity.
//!
//! Each forwarder puts the event's data fields (`TargetUserName`...) somewhere else; [`Data`]
//! reads them from every shape ad-ingest accepts, from `EventData` and from `UserData` (where
//! event 1102 keeps who cleared the log). Fluent Bit sends them as positional
//! `StringInserts`, named here from the events' manifests for the events the mapping reads.
//! The domain controller is the `device` (OCSF `host` profile), the subject the `actor`.

use super::{
    ACCOUNT_CHANGE, AUTHENTICATION, AUTHORIZE_SESSION, Class, ENTITY_MANAGEMENT, GROUP_MANAGEMENT,
    Header, USER_ACCESS, envelope, unmapped_value,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// A stored line: the normalised fields ad-ingest adds, and the event as the agent sent it.
#[derive(serde::Deserialize)]
struct Line<'a> {
    time: &'a str,
    event_id: u32,
    category: &'a str,
    computer: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    record_id: Option<u64>,
    #[serde(default)]
    provider: Option<String>,
    shape: &'a str,
    agent_id: &'a str,
    batch_id: &'a str,
    received_at: &'a str,
    #[serde(default, borrow)]
    hec: Option<&'a RawValue>,
    #[serde(borrow)]
    event: &'a RawValue,
}

/// Where an event id goes: class, activity, and whether the event itself means failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The class.
    pub class: Class,
    /// `activity_id` in that class.
    pub activity_id: i64,
    /// `activity_name`.
    pub activity_name: &'static str,
    /// The event is a failure whatever its keywords say (4625, 4771...).
    pub failure: bool,
}

const fn rule(class: Class, activity_id: i64, activity_name: &'static str) -> Rule {
    Rule {
        class,
        activity_id,
        activity_name,
        failure: false,
    }
}

const fn failed(class: Class, activity_id: i64, activity_name: &'static str) -> Rule {
    Rule {
        class,
        activity_id,
        activity_name,
        failure: true,
    }
}

/// The class and activity of a Windows event id.
pub fn classify(event_id: u32) -> Rule {
    use {
        ACCOUNT_CHANGE as ACC, AUTHENTICATION as AUTH, AUTHORIZE_SESSION as SESSION,
        ENTITY_MANAGEMENT as ENTITY, GROUP_MANAGEMENT as GROUP, USER_ACCESS as ACCESS,
    };
    match event_id {
        4624 | 4648 | 4776 | 8004 => rule(AUTH, 1, "Logon"),
        4625 | 4777 => failed(AUTH, 1, "Logon"),
        4634 | 4647 => rule(AUTH, 2, "Logoff"),
        4768 => rule(AUTH, 3, "Authentication Ticket"),
        4771 | 4772 => failed(AUTH, 3, "Authentication Ticket"),
        4769 => rule(AUTH, 4, "Service Ticket Request"),
        4773 => failed(AUTH, 4, "Service Ticket Request"),
        4770 => rule(AUTH, 5, "Service Ticket Renew"),
        4778 => rule(AUTH, 99, "Session Reconnect"),
        4779 => rule(AUTH, 99, "Session Disconnect"),
        4800 => rule(AUTH, 99, "Workstation Lock"),
        4801 => rule(AUTH, 99, "Workstation Unlock"),
        4672 => rule(SESSION, 1, "Assign Privileges"),
        4964 => rule(SESSION, 2, "Assign Groups"),
        4704 => rule(ACCESS, 1, "Assign Privileges"),
        4705 => rule(ACCESS, 2, "Revoke Privileges"),
        4720 | 4741 => rule(ACC, 1, "Create"),
        4722 => rule(ACC, 2, "Enable"),
        4723 => rule(ACC, 3, "Password Change"),
        4724 => rule(ACC, 4, "Password Reset"),
        4725 => rule(ACC, 5, "Disable"),
        4726 | 4743 => rule(ACC, 6, "Delete"),
        4740 => rule(ACC, 9, "Lock"),
        4738 | 4742 => rule(ACC, 99, "Account Changed"),
        4767 => rule(ACC, 99, "Unlock"),
        4781 => rule(ACC, 99, "Rename"),
        4765 => rule(ACC, 99, "SID History Add"),
        4766 => failed(ACC, 99, "SID History Add"),
        4780 => rule(ACC, 99, "Admin ACL Set"),
        4794 => rule(ACC, 99, "DSRM Password Set"),
        4727 | 4731 | 4744 | 4749 | 4754 | 4759 => rule(GROUP, 6, "Create"),
        4728 | 4732 | 4746 | 4751 | 4756 | 4761 => rule(GROUP, 3, "Add User"),
        4729 | 4733 | 4747 | 4752 | 4757 | 4762 => rule(GROUP, 4, "Remove User"),
        4730 | 4734 | 4748 | 4753 | 4758 | 4763 => rule(GROUP, 5, "Delete"),
        4735 | 4737 | 4745 | 4750 | 4755 | 4760 | 4764 => rule(GROUP, 99, "Group Changed"),
        4799 => rule(GROUP, 99, "Membership Enumerated"),
        5137 | 4697 | 7045 | 4902 | 4904 => rule(ENTITY, 1, "Create"),
        1644 | 4798 => rule(ENTITY, 2, "Read"),
        5136 | 5139 | 4670 | 4616 | 4719 | 4906..=4912 | 7036 | 7040 => rule(ENTITY, 3, "Update"),
        5141 | 4660 | 1102 | 4905 => rule(ENTITY, 4, "Delete"),
        4656 | 4658 | 4661 | 4662 | 4663 | 5140 | 5145 => rule(ENTITY, 99, "Access"),
        5138 => rule(ENTITY, 99, "Undelete"),
        1100 | 4609 | 6006 => rule(ENTITY, 99, "Shutdown"),
        4608 | 6005 => rule(ENTITY, 99, "Startup"),
        1104 => rule(ENTITY, 99, "Log Full"),
        1105 => rule(ENTITY, 99, "Log Archived"),
        _ => rule(ENTITY, 99, "Other"),
    }
}

/// Events whose importance is above the informational: the security log cleared, the audit
/// policy or SID history changed, the DSRM password set.
fn severity_id(event_id: u32, status_id: i64) -> i64 {
    match event_id {
        1102 | 4719 | 4765 | 4766 | 4794 => 3,
        _ if status_id == 2 => 2,
        _ => 1,
    }
}

/// The names of Fluent Bit's positional `StringInserts`, from the events' manifests, for the
/// events whose data the mapping reads. (Long because it is a table: one list per event.)
fn inserts_template(event_id: u32) -> &'static [&'static str] {
    const SUBJECT: [&str; 4] = [
        "SubjectUserSid",
        "SubjectUserName",
        "SubjectDomainName",
        "SubjectLogonId",
    ];
    const TARGET_THEN_SUBJECT: [&str; 8] = [
        "TargetUserName",
        "TargetDomainName",
        "TargetSid",
        SUBJECT[0],
        SUBJECT[1],
        SUBJECT[2],
        SUBJECT[3],
        "PrivilegeList",
    ];
    const MEMBER: [&str; 10] = [
        "MemberName",
        "MemberSid",
        "TargetUserName",
        "TargetDomainName",
        "TargetSid",
        SUBJECT[0],
        SUBJECT[1],
        SUBJECT[2],
        SUBJECT[3],
        "PrivilegeList",
    ];
    const DS: [&str; 11] = [
        "OpCorrelationID",
        "AppCorrelationID",
        SUBJECT[0],
        SUBJECT[1],
        SUBJECT[2],
        SUBJECT[3],
        "DSName",
        "DSType",
        "ObjectDN",
        "ObjectGUID",
        "ObjectClass",
    ];
    match event_id {
        4624 => &[
            SUBJECT[0],
            SUBJECT[1],
            SUBJECT[2],
            SUBJECT[3],
            "TargetUserSid",
            "TargetUserName",
            "TargetDomainName",
            "TargetLogonId",
            "LogonType",
            "LogonProcessName",
            "AuthenticationPackageName",
            "WorkstationName",
            "LogonGuid",
            "TransmittedServices",
            "LmPackageName",
            "KeyLength",
            "ProcessId",
            "ProcessName",
            "IpAddress",
            "IpPort",
        ],
        4625 => &[
            SUBJECT[0],
            SUBJECT[1],
            SUBJECT[2],
            SUBJECT[3],
            "TargetUserSid",
            "TargetUserName",
            "TargetDomainName",
            "Status",
            "FailureReason",
            "SubStatus",
            "LogonType",
            "LogonProcessName",
            "AuthenticationPackageName",
            "WorkstationName",
            "TransmittedServices",
            "LmPackageName",
            "KeyLength",
            "ProcessId",
            "ProcessName",
            "IpAddress",
            "IpPort",
        ],
        4634 | 4647 => &[
            "TargetUserSid",
            "TargetUserName",
            "TargetDomainName",
            "TargetLogonId",
            "LogonType",
        ],
        4648 => &[
            SUBJECT[0],
            SUBJECT[1],
            SUBJECT[2],
            SUBJECT[3],
            "LogonGuid",
            "TargetUserName",
            "TargetDomainName",
            "TargetLogonGuid",
            "TargetServerName",
            "TargetInfo",
            "ProcessId",
            "ProcessName",
            "IpAddress",
            "IpPort",
        ],
        4672 => &[
            SUBJECT[0],
            SUBJECT[1],
            SUBJECT[2],
            SUBJECT[3],
            "PrivilegeList",
        ],
        4720 | 4722..=4726 | 4740 | 4741 | 4743 | 4767 => &TARGET_THEN_SUBJECT,
        4738 | 4742 => &[
            "Dummy",
            "TargetUserName",
            "TargetDomainName",
            "TargetSid",
            SUBJECT[0],
            SUBJECT[1],
            SUBJECT[2],
            SUBJECT[3],
        ],
        4728 | 4729 | 4732 | 4733 | 4746 | 4747 | 4751 | 4752 | 4756 | 4757 | 4761 | 4762 => {
            &MEMBER
        }
        4727
        | 4730
        | 4731
        | 4734
        | 4735
        | 4737
        | 4744
        | 4745
        | 4748..=4750
        | 4753..=4755
        | 4758..=4760
        | 4763
        | 4764 => &TARGET_THEN_SUBJECT,
        4768 => &[
            "TargetUserName",
            "TargetDomainName",
            "TargetSid",
            "ServiceName",
            "ServiceSid",
            "TicketOptions",
            "Status",
            "TicketEncryptionType",
            "PreAuthType",
            "IpAddress",
            "IpPort",
        ],
        4769 => &[
            "TargetUserName",
            "TargetDomainName",
            "ServiceName",
            "ServiceSid",
            "TicketOptions",
            "TicketEncryptionType",
            "IpAddress",
            "IpPort",
            "Status",
        ],
        4771 => &[
            "TargetUserName",
            "TargetSid",
            "ServiceName",
            "TicketOptions",
            "Status",
            "PreAuthType",
            "IpAddress",
            "IpPort",
        ],
        4776 => &["PackageName", "TargetUserName", "Workstation", "Status"],
        5136 | 5137 | 5141 => &DS,
        4688 => &[
            SUBJECT[0],
            SUBJECT[1],
            SUBJECT[2],
            SUBJECT[3],
            "NewProcessId",
            "NewProcessName",
            "TokenElevationType",
            "ProcessId",
            "CommandLine",
            "TargetUserSid",
            "TargetUserName",
            "TargetDomainName",
            "TargetLogonId",
            "ParentProcessName",
            "MandatoryLabel",
        ],
        // `UserData/LogFileCleared`, in the manifest's order.
        1102 => &SUBJECT,
        7045 => &[
            "ServiceName",
            "ImagePath",
            "ServiceType",
            "StartType",
            "AccountName",
        ],
        _ => &[],
    }
}

/// An event's data fields by name, from whichever shape it came in.
#[derive(Debug, Default)]
pub struct Data(HashMap<String, String>);

impl Data {
    /// Reads the data fields of `event` in `shape` (the names ad-ingest stores).
    pub fn of(shape: &str, event_id: u32, event: &Value) -> Data {
        let mut d = Data::default();
        match shape {
            "winlogbeat" => {
                d.object(event.pointer("/winlog/event_data"));
                d.object(event.pointer("/winlog/user_data"));
            }
            "nxlog" => d.object(Some(event)),
            "native" => d.object(event.get("data")),
            "vector_windows_event_log" => {
                d.object(event.get("event_data"));
                d.object(event.get("user_data"));
            }
            "otel_windows_event_log" => {
                let data = event.get("event_data");
                // Some collector versions send `{"data": [{"Name": value}, ...]}`.
                match data.and_then(|v| v.get("data")).and_then(Value::as_array) {
                    Some(items) => items.iter().for_each(|i| d.object(Some(i))),
                    None => d.object(data),
                }
                d.object(event.get("user_data"));
            }
            "fluent_bit_winevtlog" | "fluent_bit_winlog" => {
                let inserts = event.get("StringInserts").and_then(Value::as_array);
                let names = inserts_template(event_id);
                for (name, v) in names.iter().zip(inserts.into_iter().flatten()) {
                    d.insert(name, v);
                }
            }
            "windows_xml" => {
                if let Some(x) = xml_of(event) {
                    for (k, v) in x.data {
                        d.insert(&k, &Value::String(v));
                    }
                    // `System/Keywords`, read with the data so the XML is parsed once; no
                    // event's data has a field of that name.
                    if let Some(k) = x.keywords {
                        d.insert("Keywords", &Value::String(k));
                    }
                }
            }
            "windows_text" => {
                let text = event
                    .as_str()
                    .or_else(|| event.get("log").and_then(Value::as_str));
                for (k, v) in text
                    .into_iter()
                    .flat_map(|t| t.lines())
                    .filter_map(|l| l.split_once('='))
                {
                    d.insert(k.trim(), &Value::String(v.trim().to_owned()));
                }
            }
            _ => {}
        }
        d
    }

    fn insert(&mut self, name: &str, v: &Value) {
        let text = match v {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return,
        };
        self.0.insert(name.to_owned(), text);
    }

    fn object(&mut self, v: Option<&Value>) {
        // `xml_name` is the UserData element's name (Winlogbeat, OTel), not a field.
        for (k, v) in v.and_then(Value::as_object).into_iter().flatten() {
            if k != "xml_name" {
                self.insert(k, v);
            }
        }
    }

    /// A field's value; Windows writes `-` for "none", which reads as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && *v != "-")
    }

    fn first(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.get(n))
    }
}

/// The rendered XML of an event stored in the `windows_xml` shape (a string, or Fluent Bit's
/// `{"System": "<System>..."}`), parsed.
fn xml_of(event: &Value) -> Option<crate::ad::windows_xml::XmlEvent> {
    let xml = event
        .as_str()
        .or_else(|| event.get("System").and_then(Value::as_str))?;
    crate::ad::windows_xml::parse(xml).ok()
}

/// A `user` object from the `<prefix>UserName`/`DomainName`/`UserSid` (or `Sid`) fields.
fn user(d: &Data, prefix: &str) -> Option<Map<String, Value>> {
    let field = |s: &str| d.get(&format!("{prefix}{s}"));
    let mut u = Map::new();
    if let Some(n) = field("UserName") {
        u.insert("name".into(), n.into());
    }
    if let Some(dom) = field("DomainName") {
        u.insert("domain".into(), dom.into());
    }
    // S-1-0-0, the null SID, is Windows' "no account".
    if let Some(sid) = field("UserSid")
        .or_else(|| field("Sid"))
        .filter(|s| *s != "S-1-0-0")
    {
        u.insert("uid".into(), sid.into());
    }
    (u.contains_key("name") || u.contains_key("uid")).then_some(u)
}

/// A user the event names but whose fields are not in it (XML without `EventData`, text): the
/// required attribute holds the schema's word for it rather than a guess.
fn unknown_user() -> Map<String, Value> {
    let mut u = Map::new();
    u.insert("name".into(), "Unknown".into());
    u
}

/// The first RDN's value of a distinguished name (`CN=bob,OU=...` → `bob`); other text as is.
fn common_name(dn: &str) -> &str {
    match dn.split_once('=') {
        Some((attr, rest)) if attr.eq_ignore_ascii_case("CN") => {
            let mut end = rest.len();
            let bytes = rest.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                if b == b',' && (i == 0 || bytes[i - 1] != b'\\') {
                    end = i;
                    break;
                }
            }
            &rest[..end]
        }
        _ => dn,
    }
}

/// Whether the event says it is an audit success (`Some(true)`) or failure, in any of the
/// places forwarders put the keywords or outcome.
fn audit_outcome(shape: &str, event: &Value, d: &Data) -> Option<bool> {
    fn word(s: &str) -> Option<bool> {
        let s = s.to_ascii_lowercase().replace(['_', ' '], "");
        if s.contains("auditfailure") || s == "failure" {
            Some(false)
        } else if s.contains("auditsuccess") || s == "success" {
            Some(true)
        } else if let Some(hex) = s.strip_prefix("0x") {
            u64::from_str_radix(hex, 16).ok().and_then(bits)
        } else {
            s.parse::<i64>().ok().and_then(|n| bits(n as u64))
        }
    }
    // Keyword bits: 0x0010000000000000 audit failure, 0x0020000000000000 audit success.
    fn bits(k: u64) -> Option<bool> {
        if k & 0x0010_0000_0000_0000 != 0 {
            Some(false)
        } else if k & 0x0020_0000_0000_0000 != 0 {
            Some(true)
        } else {
            None
        }
    }
    fn any(v: Option<&Value>) -> Option<bool> {
        match v? {
            Value::String(s) => word(s),
            Value::Number(n) => n.as_i64().map(|n| n as u64).and_then(bits),
            Value::Array(items) => items.iter().find_map(|i| any(Some(i))),
            _ => None,
        }
    }
    match shape {
        "winlogbeat" => {
            any(event.pointer("/event/outcome")).or_else(|| any(event.pointer("/winlog/keywords")))
        }
        "windows_xml" | "windows_text" => d.get("Keywords").and_then(word),
        _ => ["Keywords", "keywords", "EventType"]
            .iter()
            .find_map(|k| any(event.get(*k))),
    }
}

/// `status_id`: the event's meaning first (a failed logon), then its `Status` code (Kerberos,
/// NTLM: `0x0` is success), then its audit keywords.
fn status_id(rule: &Rule, shape: &str, event: &Value, d: &Data) -> i64 {
    if rule.failure {
        return 2;
    }
    if let Some(code) = d.get("Status") {
        let ok = u64::from_str_radix(code.trim_start_matches("0x").trim_start_matches("0X"), 16)
            .is_ok_and(|c| c == 0);
        return if ok { 1 } else { 2 };
    }
    match audit_outcome(shape, event, d) {
        Some(true) => 1,
        Some(false) => 2,
        None => 0,
    }
}

/// `logon_type_id`: Windows logon types share OCSF's numbers.
fn logon_type(d: &Data) -> Option<(i64, &'static str)> {
    let t: i64 = d.get("LogonType")?.parse().ok()?;
    Some(match t {
        0 => (0, "System"),
        2 => (2, "Interactive"),
        3 => (3, "Network"),
        4 => (4, "Batch"),
        5 => (5, "OS Service"),
        7 => (7, "Unlock"),
        8 => (8, "Network Cleartext"),
        9 => (9, "New Credentials"),
        10 => (10, "Remote Interactive"),
        11 => (11, "Cached Interactive"),
        12 => (12, "Cached Remote Interactive"),
        13 => (13, "Cached Unlock"),
        _ => (99, "Other"),
    })
}

/// `auth_protocol_id` and name: Kerberos events, NTLM events, else the package the logon used.
fn auth_protocol(event_id: u32, d: &Data) -> Option<(i64, String)> {
    match event_id {
        4768..=4773 => return Some((2, "Kerberos".into())),
        4776 | 4777 | 8004 => return Some((1, "NTLM".into())),
        _ => {}
    }
    let package = d.get("AuthenticationPackageName")?;
    let id = match package.to_ascii_lowercase().as_str() {
        "kerberos" => 2,
        p if p.starts_with("ntlm") => 1,
        _ => 99,
    };
    Some((id, package.to_owned()))
}

/// `src_endpoint` of a logon: the client address (only a real IP), port and workstation.
fn src_endpoint(d: &Data) -> Option<Value> {
    let mut e = Map::new();
    if let Some(ip) = d
        .get("IpAddress")
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
    {
        e.insert("ip".into(), ip.into());
    }
    if let Some(port) = d
        .get("IpPort")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0)
    {
        e.insert("port".into(), port.into());
    }
    if let Some(ws) = d.first(&["WorkstationName", "Workstation"]) {
        e.insert("name".into(), ws.trim_start_matches('\\').into());
    }
    (e.contains_key("ip") || e.contains_key("name")).then_some(Value::Object(e))
}

/// The managed entity of an Entity Management event: the object, service, log or policy it
/// is about.
fn entity(event_id: u32, l: &Line<'_>, d: &Data) -> Value {
    let mut e = Map::new();
    let (name, kind): (String, Option<&str>) = if let Some(n) = d.first(&["ObjectDN", "ObjectName"])
    {
        (n.to_owned(), d.first(&["ObjectClass", "ObjectType"]))
    } else if let Some(n) = d
        .first(&["ServiceName", "param1"])
        .filter(|_| matches!(event_id, 4697 | 7036 | 7040 | 7045))
    {
        (n.to_owned(), Some("Service"))
    } else if let Some(n) = d.get("ShareName") {
        (n.to_owned(), Some("Share"))
    } else {
        match event_id {
            1100 | 1102 | 1104 | 1105 => (
                l.channel.clone().unwrap_or_else(|| "Security".into()),
                Some("Event Log"),
            ),
            4608 | 4609 | 6005 | 6006 => (l.computer.clone(), Some("Computer")),
            4616 => ("System Time".into(), Some("Clock")),
            4719 | 4902 | 4904..=4912 => ("Audit Policy".into(), Some("Audit Policy")),
            _ => (
                format!(
                    "{} event {event_id}",
                    l.provider.as_deref().unwrap_or("Windows")
                ),
                Some("Windows Event"),
            ),
        }
    };
    e.insert("name".into(), name.into());
    if let Some(kind) = kind {
        e.insert("type".into(), kind.into());
    }
    // GUIDs are case-insensitive; Windows renders them lower-case, Fluent Bit upper-case.
    if let Some(guid) = d.get("ObjectGUID") {
        e.insert("uid".into(), guid.to_ascii_lowercase().into());
    }
    Value::Object(e)
}

/// A stable id for `metadata.uid`: the event log record (computer, channel, record number)
/// when the event has one, else the hash of the event as sent.
fn event_uid(l: &Line<'_>) -> String {
    match l.record_id {
        Some(r) => format!(
            "{}/{}/{r}",
            l.computer,
            l.channel.as_deref().unwrap_or_default()
        ),
        None => {
            let hash = crate::lake::encode::content_hash(l.event.get())
                .map(|h| hex::encode(&h[..16]))
                .unwrap_or_default();
            format!("sha256:{hash}")
        }
    }
}

/// The class and time (epoch ms) [`from_line`] gives a stored line, without building the event.
pub fn class_and_time(line: &str) -> Option<(Class, i64)> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        time: &'a str,
        event_id: u32,
    }
    let h: Head = serde_json::from_str(line).ok()?;
    let time = crate::timefmt::parse_api_time(h.time)?;
    Some((classify(h.event_id).class, time.timestamp_millis()))
}

/// One stored line as an OCSF event; `None` when it is not a line ad-ingest wrote.
pub fn from_line(text: &str) -> Option<Value> {
    let l: Line = serde_json::from_str(text).ok()?;
    let time = crate::timefmt::parse_api_time(l.time)?;
    let event: Value = serde_json::from_str(l.event.get()).ok()?;
    let d = Data::of(l.shape, l.event_id, &event);
    let rule = classify(l.event_id);
    let status_id = status_id(&rule, l.shape, &event, &d);
    // The event as the agent sent it: the XML or text itself, or the JSON object's text.
    let raw = match &event {
        Value::String(s) => s.clone(),
        _ => l.event.get().to_owned(),
    };
    let mut metadata = Map::new();
    metadata.insert(
        "product".into(),
        json!({"name": "Microsoft Windows", "vendor_name": "Microsoft"}),
    );
    metadata.insert("uid".into(), event_uid(&l).into());
    metadata.insert("event_code".into(), l.event_id.to_string().into());
    metadata.insert("profiles".into(), json!(["host"]));
    if let Some(c) = &l.channel {
        metadata.insert("log_name".into(), c.as_str().into());
    }
    if let Some(p) = &l.provider {
        metadata.insert("log_provider".into(), p.as_str().into());
    }
    if let Some(t) = crate::timefmt::parse_api_time(l.received_at) {
        metadata.insert("processed_time".into(), t.timestamp_millis().into());
    }
    let mut e = envelope(Header {
        class: rule.class,
        activity_id: rule.activity_id,
        activity_name: rule.activity_name,
        time_ms: time.timestamp_millis(),
        severity_id: severity_id(l.event_id, status_id),
        status_id: Some(status_id),
        metadata,
        raw: Some(&raw),
    });
    e.insert(
        "device".into(),
        json!({"hostname": l.computer, "type_id": 1, "type": "Server"}),
    );
    if let Some(m) = ["Message", "message"]
        .iter()
        .find_map(|k| event.get(*k).and_then(Value::as_str))
        .filter(|m| !m.is_empty())
    {
        e.insert("message".into(), m.into());
    }
    let subject = user(&d, "Subject");
    if let Some(s) = subject.clone() {
        e.insert("actor".into(), json!({ "user": s }));
    }
    class_attributes(&mut e, &rule, &l, &d, subject);
    let mut unmapped = Map::new();
    for (k, v) in [
        ("agent_id", l.agent_id),
        ("batch_id", l.batch_id),
        ("received_at", l.received_at),
        ("shape", l.shape),
        ("category", l.category),
    ] {
        unmapped.insert(k.into(), v.into());
    }
    if let Some(hec) = l.hec {
        unmapped.insert(
            "hec".into(),
            unmapped_value(&Value::String(hec.get().to_owned())),
        );
    }
    e.insert("unmapped".into(), Value::Object(unmapped));
    Some(Value::Object(e))
}

/// The attributes of the event's class.
fn class_attributes(
    e: &mut Map<String, Value>,
    rule: &Rule,
    l: &Line<'_>,
    d: &Data,
    subject: Option<Map<String, Value>>,
) {
    let target = user(d, "Target");
    match rule.class.uid {
        3002 => authentication(e, l.event_id, d, target),
        3001 => {
            e.insert("user".into(), target.unwrap_or_else(unknown_user).into());
        }
        3003 => {
            // 4672's subject is the account that logged on; 4964 names it as the target.
            let who = if l.event_id == 4672 { subject } else { target };
            e.insert("user".into(), who.unwrap_or_else(unknown_user).into());
            if let Some(p) = privileges(d) {
                e.insert("privileges".into(), p);
            }
        }
        3005 => {
            e.insert("user".into(), target.unwrap_or_else(unknown_user).into());
            e.insert(
                "privileges".into(),
                privileges(d).unwrap_or_else(|| json!(["Unknown"])),
            );
        }
        3006 => group_management(e, d),
        _ => {
            e.insert("entity".into(), entity(l.event_id, l, d));
        }
    }
}

/// Authentication's attributes: the account, how it logged on, from where, the outcome's code.
fn authentication(
    e: &mut Map<String, Value>,
    event_id: u32,
    d: &Data,
    target: Option<Map<String, Value>>,
) {
    e.insert("user".into(), target.unwrap_or_else(unknown_user).into());
    if let Some((id, name)) = logon_type(d) {
        e.insert("logon_type_id".into(), id.into());
        e.insert("logon_type".into(), name.into());
    }
    if let Some((id, name)) = auth_protocol(event_id, d) {
        e.insert("auth_protocol_id".into(), id.into());
        e.insert("auth_protocol".into(), name.into());
    }
    if let Some(src) = src_endpoint(d) {
        e.insert("src_endpoint".into(), src);
    }
    if let Some(s) = d.get("ServiceName") {
        e.insert("service".into(), json!({ "name": s }));
    }
    if let Some(id) = d.get("TargetLogonId") {
        e.insert("session".into(), json!({ "uid": id }));
    }
    if let Some(code) = d.get("Status") {
        e.insert("status_code".into(), code.into());
    }
    if let Some(detail) = d.first(&["SubStatus", "FailureReason"]) {
        e.insert("status_detail".into(), detail.into());
    }
}

/// Group Management's attributes: the group is the event's target; the member (added or
/// removed) its `MemberName`.
fn group_management(e: &mut Map<String, Value>, d: &Data) {
    let mut g = Map::new();
    g.insert(
        "name".into(),
        d.get("TargetUserName").unwrap_or("Unknown").into(),
    );
    if let Some(dom) = d.get("TargetDomainName") {
        g.insert("domain".into(), dom.into());
    }
    if let Some(sid) = d.get("TargetSid") {
        g.insert("uid".into(), sid.into());
    }
    e.insert("group".into(), Value::Object(g));
    let mut member = Map::new();
    if let Some(m) = d.get("MemberName") {
        member.insert("name".into(), common_name(m).into());
    }
    if let Some(sid) = d.get("MemberSid") {
        member.insert("uid".into(), sid.into());
    }
    if !member.is_empty() {
        e.insert("user".into(), Value::Object(member));
    }
}

/// `PrivilegeList` (whitespace-separated privilege names) as an array.
fn privileges(d: &Data) -> Option<Value> {
    let list: Vec<&str> = d.get("PrivilegeList")?.split_whitespace().collect();
    (!list.is_empty()).then(|| json!(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(shape: &str, event_id: u32, event: Value) -> String {
        json!({"time":"2026-11-21T10:00:00Z","event_id":event_id,"category":"logon","computer":"DC01.corp.example",
            "channel":"Security","record_id":42,"provider":"Microsoft-Windows-Security-Auditing","shape":shape,
            "agent_id":"dc01","batch_id":"b1","received_at":"2026-11-21T10:00:05Z","event":event})
        .to_string()
    }

    #[test]
    fn a_winlogbeat_logon_is_an_authentication_with_its_user_endpoint_and_protocol() {
        let ev = json!({"@timestamp":"2026-11-21T10:00:00Z","event":{"code":"4624","outcome":"success"},
            "winlog":{"event_id":"4624","event_data":{"SubjectUserSid":"S-1-0-0","SubjectUserName":"-","TargetUserSid":"S-1-5-21-1-1104",
            "TargetUserName":"alice","TargetDomainName":"CORP","TargetLogonId":"0x3e7a1c","LogonType":"3",
            "AuthenticationPackageName":"Kerberos","WorkstationName":"-","IpAddress":"10.0.4.17","IpPort":"49822"}}});
        let e = from_line(&line("winlogbeat", 4624, ev)).unwrap();
        assert_eq!(
            (e["class_uid"].as_i64(), e["type_uid"].as_i64()),
            (Some(3002), Some(300201))
        );
        assert_eq!(
            e["user"],
            json!({"name":"alice","domain":"CORP","uid":"S-1-5-21-1-1104"})
        );
        assert_eq!(e["logon_type_id"], 3);
        assert_eq!(e["auth_protocol_id"], 2);
        assert_eq!(e["src_endpoint"], json!({"ip":"10.0.4.17","port":49822}));
        assert_eq!(e["session"]["uid"], "0x3e7a1c");
        assert_eq!(e["status_id"], 1);
        assert_eq!(e["metadata"]["uid"], "DC01.corp.example/Security/42");
        assert_eq!(e["device"]["hostname"], "DC01.corp.example");
        // The subject is `-` and the null SID (none): no actor rather than an empty one.
        assert!(e.get("actor").is_none());
    }

    #[test]
    fn a_failed_logon_is_a_failure_whatever_its_keywords() {
        let ev = json!({"EventTime":"2026-11-21 10:00:05","Hostname":"DC02","EventID":4625,"EventType":"AUDIT_SUCCESS",
            "TargetUserName":"administrator","Status":"0xc000006d","SubStatus":"0xc000006a","LogonType":"3"});
        let e = from_line(&line("nxlog", 4625, ev)).unwrap();
        assert_eq!(
            (e["status_id"].as_i64(), e["severity_id"].as_i64()),
            (Some(2), Some(2))
        );
        assert_eq!(e["status_code"], "0xc000006d");
        assert_eq!(e["status_detail"], "0xc000006a");
    }

    #[test]
    fn fluent_bit_inserts_are_named_from_the_manifest() {
        let ev = json!({"EventID":4624,"Keywords":"0x8020000000000000","StringInserts":["S-1-0-0","-","-","0x0","S-1-5-21-9","alice","CORP","0x3e7a2b1","3"]});
        let e = from_line(&line("fluent_bit_winevtlog", 4624, ev)).unwrap();
        assert_eq!(e["user"]["name"], "alice");
        assert_eq!(e["logon_type_id"], 3);
        assert_eq!(e["status_id"], 1);
        let ev = json!({"EventID":4720,"StringInserts":["bob","CORP"]});
        let e = from_line(&line("fluent_bit_winevtlog", 4720, ev)).unwrap();
        assert_eq!(
            (e["class_uid"].as_i64(), e["activity_id"].as_i64()),
            (Some(3001), Some(1))
        );
        assert_eq!(e["user"], json!({"name":"bob","domain":"CORP"}));
    }

    #[test]
    fn a_group_membership_change_names_group_member_and_actor() {
        let ev = json!({"timestamp":"2026-11-21T10:00:12Z","event_id":4728,"keywords":-9214364837600034816i64,
            "event_data":{"MemberName":"CN=svc\\,backup,OU=Service,DC=corp,DC=example","MemberSid":"S-1-5-21-1-2001",
            "TargetUserName":"Domain Admins","TargetDomainName":"CORP","TargetSid":"S-1-5-21-1-512","SubjectUserName":"alice"}});
        let e = from_line(&line("vector_windows_event_log", 4728, ev)).unwrap();
        assert_eq!(
            (e["class_uid"].as_i64(), e["activity_id"].as_i64()),
            (Some(3006), Some(3))
        );
        assert_eq!(
            e["group"],
            json!({"name":"Domain Admins","domain":"CORP","uid":"S-1-5-21-1-512"})
        );
        assert_eq!(
            e["user"],
            json!({"name":"svc\\,backup","uid":"S-1-5-21-1-2001"})
        );
        assert_eq!(e["actor"]["user"]["name"], "alice");
        assert_eq!(e["status_id"], 1);
    }

    #[test]
    fn xml_data_and_keywords_are_read() {
        let xml = "<Event><System><EventID>4740</EventID><Keywords>0x8020000000000000</Keywords><Computer>DC10</Computer></System><EventData><Data Name='TargetUserName'>carol &amp; co</Data><Data Name=\"SubjectUserName\">DC10$</Data><Data Name='Empty'/></EventData></Event>";
        let e = from_line(&line("windows_xml", 4740, json!(xml))).unwrap();
        assert_eq!(
            (e["class_uid"].as_i64(), e["activity_id"].as_i64()),
            (Some(3001), Some(9))
        );
        assert_eq!(e["user"]["name"], "carol & co");
        assert_eq!(e["actor"]["user"]["name"], "DC10$");
        assert_eq!(e["status_id"], 1);
        assert_eq!(e["raw_data"], xml);
    }

    #[test]
    fn system_and_directory_events_manage_an_entity() {
        let e = from_line(&line("native", 1102, json!({"event_id":1102,"data":{}}))).unwrap();
        assert_eq!(
            (e["class_uid"].as_i64(), e["activity_id"].as_i64()),
            (Some(3004), Some(4))
        );
        assert_eq!(e["entity"], json!({"name":"Security","type":"Event Log"}));
        assert_eq!(e["severity_id"], 3);
        let ev = json!({"event_id":{"id":5136},"event_data":{"data":[{"ObjectDN":"CN=Policies,DC=corp"},{"ObjectClass":"container"},{"ObjectGUID":"{7e1b}"}]}});
        let e = from_line(&line("otel_windows_event_log", 5136, ev)).unwrap();
        assert_eq!(
            e["entity"],
            json!({"name":"CN=Policies,DC=corp","type":"container","uid":"{7e1b}"})
        );
        let e = from_line(&line(
            "native",
            7045,
            json!({"event_id":7045,"data":{"ServiceName":"PSEXESVC"}}),
        ))
        .unwrap();
        assert_eq!(
            (e["activity_id"].as_i64(), &e["entity"]["type"]),
            (Some(1), &json!("Service"))
        );
        assert_eq!(e["status_id"], 0);
    }

    #[test]
    fn an_event_without_its_fields_still_has_every_required_attribute() {
        let text = "LogName=Security\nEventCode=4625\nKeywords=Audit Failure\nComputerName=DC11";
        let e = from_line(&line("windows_text", 4625, json!(text))).unwrap();
        assert_eq!(e["user"]["name"], "Unknown");
        assert_eq!(e["status_id"], 2);
        let mut l: Value =
            serde_json::from_str(&line("native", 4704, json!({"event_id":4704}))).unwrap();
        l.as_object_mut().unwrap().remove("record_id");
        let e = from_line(&l.to_string()).unwrap();
        assert_eq!(e["privileges"], json!(["Unknown"]));
        assert!(
            e["metadata"]["uid"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }
}
