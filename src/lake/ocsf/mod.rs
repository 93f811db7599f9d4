//! OCSF 1.1.0 events from the connector's records (what Amazon Security Lake validates custom
//! sources against). One function per dataset maps one stored line to one OCSF event; the
//! choices, and what is approximated, are in `docs/ocsf.md`. Events are checked against the
//! schema's own definitions by `tools/ocsf/validate.py` in the tests.

pub mod audit;
mod finding;
pub mod oat;
pub mod parquet;
pub mod windows;
pub mod workbench;
pub mod writer;

use serde_json::{Map, Value};

/// The OCSF version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// An OCSF class: its uid, name and category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class {
    /// `class_uid`.
    pub uid: u32,
    /// `class_name`.
    pub name: &'static str,
    /// `category_name`.
    pub category: &'static str,
    /// The class in source names (`tv1-audit-<slug>`): short, because Security Lake names a
    /// role after each custom source and wants the source name within 20 characters.
    pub slug: &'static str,
    /// The class's name in Security Lake's `EventClasses`, when its list has it (it lacks
    /// Group Management and User Access Management; such a source is registered without one).
    pub security_lake: Option<&'static str>,
}

impl Class {
    /// `category_uid`: the class uid's thousands.
    pub fn category_uid(self) -> u32 {
        self.uid / 1000
    }
}

/// The datasets, each landing one OCSF source per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// Vision One audit logs (audit-puller, stream `audit`).
    Audit,
    /// Vision One Workbench alert versions (audit-puller, stream `alerts`).
    Alerts,
    /// Vision One Observed Attack Techniques detections (audit-puller, stream `oat`).
    Oat,
    /// Windows Security events of domain controllers (ad-ingest).
    Ad,
}

impl Dataset {
    /// Every dataset, in the order sources are listed.
    pub const ALL: [Dataset; 4] = [Dataset::Audit, Dataset::Alerts, Dataset::Oat, Dataset::Ad];

    /// The dataset a Vision One stream lands.
    pub fn of(stream: crate::audit::stream::Stream) -> Dataset {
        use crate::audit::stream::Stream;
        match stream {
            Stream::Audit => Dataset::Audit,
            Stream::Alerts => Dataset::Alerts,
            Stream::Oat => Dataset::Oat,
        }
    }

    /// The classes the dataset's mapping produces.
    pub fn classes(self) -> &'static [Class] {
        match self {
            Dataset::Audit => &[AUTHENTICATION, ENTITY_MANAGEMENT, API_ACTIVITY],
            Dataset::Alerts | Dataset::Oat => &[DETECTION_FINDING],
            Dataset::Ad => &[
                ACCOUNT_CHANGE,
                AUTHENTICATION,
                AUTHORIZE_SESSION,
                ENTITY_MANAGEMENT,
                USER_ACCESS,
                GROUP_MANAGEMENT,
            ],
        }
    }

    /// The custom source name of `class` in this dataset: `tv1-audit-auth`, `tv1-ad-group`...;
    /// a dataset of one class is one source named after the dataset (`tv1-alerts`, `tv1-oat`).
    pub fn source(self, class: Class) -> String {
        match self {
            Dataset::Audit => format!("tv1-audit-{}", class.slug),
            Dataset::Ad => format!("tv1-ad-{}", class.slug),
            Dataset::Alerts => "tv1-alerts".into(),
            Dataset::Oat => "tv1-oat".into(),
        }
    }

    /// The OCSF event of one stored line, `None` when it is not a line the connector wrote.
    pub fn event(self, line: &str) -> Option<Value> {
        match self {
            Dataset::Audit => audit::from_line(line),
            Dataset::Alerts => workbench::from_line(line),
            Dataset::Oat => oat::from_line(line),
            Dataset::Ad => windows::from_line(line),
        }
    }

    /// The class and time (epoch ms) [`Self::event`] gives a stored line, without building the
    /// event.
    pub fn class_and_time(self, line: &str) -> Option<(Class, i64)> {
        match self {
            Dataset::Audit => audit::class_and_time(line),
            Dataset::Alerts => workbench::class_and_time(line),
            Dataset::Oat => oat::class_and_time(line),
            Dataset::Ad => windows::class_and_time(line),
        }
    }
}

/// The AWS CLI commands that register every source with Security Lake, their crawlers running
/// as `crawler_role_arn`. (CloudFormation has no resource type for a custom source.) The log
/// provider is the account of that role; `external_id` is what its provider role trusts.
pub fn registration_commands(crawler_role_arn: &str, external_id: &str) -> Vec<String> {
    let account = crawler_role_arn.split(':').nth(4).unwrap_or_default();
    let configuration = serde_json::json!({
        "crawlerConfiguration": {"roleArn": crawler_role_arn},
        "providerIdentity": {"externalId": external_id, "principal": account},
    });
    let mut out = Vec::new();
    for d in Dataset::ALL {
        for c in d.classes() {
            let classes = c
                .security_lake
                .map(|name| format!(" --event-classes {name}"))
                .unwrap_or_default();
            out.push(format!(
                "aws securitylake create-custom-log-source --source-name {}{classes} --configuration '{configuration}'",
                d.source(*c)
            ));
        }
    }
    out
}

/// Account Change.
pub const ACCOUNT_CHANGE: Class = Class {
    uid: 3001,
    name: "Account Change",
    category: "Identity & Access Management",
    slug: "account",
    security_lake: Some("ACCOUNT_CHANGE"),
};
/// Authorize Session.
pub const AUTHORIZE_SESSION: Class = Class {
    uid: 3003,
    name: "Authorize Session",
    category: "Identity & Access Management",
    slug: "session",
    security_lake: Some("AUTHORIZATION"),
};
/// User Access Management.
pub const USER_ACCESS: Class = Class {
    uid: 3005,
    name: "User Access Management",
    category: "Identity & Access Management",
    slug: "access",
    security_lake: None,
};
/// Group Management.
pub const GROUP_MANAGEMENT: Class = Class {
    uid: 3006,
    name: "Group Management",
    category: "Identity & Access Management",
    slug: "group",
    security_lake: None,
};

/// Detection Finding (Security Finding, 2001, is deprecated in 1.1.0). Security Lake's
/// `EventClasses` list has `SECURITY_FINDING` but no `DETECTION_FINDING` (the SDKs' enum
/// `OcsfEventClass`), so its sources are registered without one.
pub const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category: "Findings",
    slug: "finding",
    security_lake: None,
};

/// Authentication.
pub const AUTHENTICATION: Class = Class {
    uid: 3002,
    name: "Authentication",
    category: "Identity & Access Management",
    slug: "auth",
    security_lake: Some("AUTHENTICATION"),
};
/// Entity Management.
pub const ENTITY_MANAGEMENT: Class = Class {
    uid: 3004,
    name: "Entity Management",
    category: "Identity & Access Management",
    slug: "entity",
    security_lake: Some("ENTITY_MANAGEMENT_AUDIT"),
};
/// API Activity.
pub const API_ACTIVITY: Class = Class {
    uid: 6003,
    name: "API Activity",
    category: "Application Activity",
    slug: "api",
    security_lake: Some("API_ACTIVITY"),
};

/// `status_id` of a result word: 1 Success, 2 Failure, 0 Unknown.
fn status_of(result: Option<&str>) -> i64 {
    match result.map(str::to_ascii_lowercase).as_deref() {
        Some("successful" | "success") => 1,
        Some("unsuccessful" | "failure" | "failed") => 2,
        _ => 0,
    }
}

/// Whether `s` is an `email_t` (the dictionary's pattern, without a regex engine).
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    let Some((host, rest)) = domain.split_once('.') else {
        return false;
    };
    local_ok
        && !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
}

/// What every event says about itself: its class and activity, when, how severe, whether it
/// succeeded, and where it came from.
#[derive(Debug, Clone)]
struct Header<'a> {
    class: Class,
    activity_id: i64,
    activity_name: &'a str,
    time_ms: i64,
    /// `severity_id`: 1 Informational, 2 Low, 3 Medium...
    severity_id: i64,
    /// `status_id`: for events 1 Success, 2 Failure; for findings 1 New, 2 In Progress,
    /// 3 Suppressed, 4 Resolved; 0 Unknown. `None` leaves it out (a finding nobody triages).
    status_id: Option<i64>,
    /// `metadata`, without `version` (added here).
    metadata: Map<String, Value>,
    /// The original record, kept whole in `raw_data`; `None` where the mapping loses nothing of
    /// it (every field has an attribute or is in `unmapped`) and the JSONL keeps it anyway.
    raw: Option<&'a str>,
}

/// The attributes every event carries: classification, time, severity, status, metadata, the
/// original record.
fn envelope(h: Header<'_>) -> Map<String, Value> {
    let mut e = Map::new();
    let class = h.class;
    e.insert("class_uid".into(), class.uid.into());
    e.insert("class_name".into(), class.name.into());
    e.insert("category_uid".into(), class.category_uid().into());
    e.insert("category_name".into(), class.category.into());
    e.insert("activity_id".into(), h.activity_id.into());
    e.insert("activity_name".into(), h.activity_name.into());
    e.insert(
        "type_uid".into(),
        (class.uid as i64 * 100 + h.activity_id).into(),
    );
    e.insert(
        "type_name".into(),
        format!("{}: {}", class.name, h.activity_name).into(),
    );
    e.insert("time".into(), h.time_ms.into());
    e.insert("severity_id".into(), h.severity_id.into());
    e.insert(
        "severity".into(),
        match h.severity_id {
            1 => "Informational",
            2 => "Low",
            3 => "Medium",
            4 => "High",
            5 => "Critical",
            6 => "Fatal",
            _ => "Unknown",
        }
        .into(),
    );
    if let Some(id) = h.status_id {
        e.insert("status_id".into(), id.into());
        e.insert("status".into(), status_caption(class, id).into());
    }
    let mut metadata = h.metadata;
    metadata.insert("version".into(), OCSF_VERSION.into());
    e.insert("metadata".into(), Value::Object(metadata));
    if let Some(raw) = h.raw {
        e.insert("raw_data".into(), raw.into());
    }
    e
}

/// The caption of `status_id` in `class`: the Findings category has its own enum.
fn status_caption(class: Class, id: i64) -> &'static str {
    match (class.category_uid(), id) {
        (2, 1) => "New",
        (2, 2) => "In Progress",
        (2, 3) => "Suppressed",
        (2, 4) => "Resolved",
        (_, 1) => "Success",
        (_, 2) => "Failure",
        (_, 99) => "Other",
        _ => "Unknown",
    }
}

/// The API item of a line the puller stored: the line without the `_id` it put first, byte for
/// byte (see [`crate::lake::encode::line_with_fields`]).
fn stored_item(line: &str, id: &str) -> String {
    let head = format!("{{\"_id\":{}", serde_json::to_string(id).expect("a string"));
    match line.strip_prefix(&head) {
        Some(rest) => match rest.strip_prefix(',') {
            Some(fields) => format!("{{{fields}"),
            None => rest.replacen('}', "{}", 1),
        },
        None => line.to_owned(),
    }
}

/// A line the puller stored, parsed once: the API item's fields (without `_id`) and the `_id`.
fn parse_stored(line: &str) -> Option<(Map<String, Value>, String)> {
    let mut entry: Map<String, Value> = serde_json::from_str(line).ok()?;
    let Value::String(id) = entry.remove("_id")? else {
        return None;
    };
    Some((entry, id))
}

/// `unmapped` as Security Lake's tables declare it, `map<string,string>`: strings stay as they
/// are, anything else becomes its JSON text.
fn unmapped_value(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_fit_security_lake() {
        // Security Lake: at most 20 characters (its provider role is named after the source)
        // of `[\w\-_:.]`; one source per class and dataset.
        let mut seen = std::collections::HashSet::new();
        for d in Dataset::ALL {
            for c in d.classes() {
                let s = d.source(*c);
                assert!(s.len() <= 20, "{s}");
                assert!(
                    s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
                );
                assert!(seen.insert(s));
            }
        }
        assert_eq!(seen.len(), 11);
    }

    #[test]
    fn every_source_has_its_registration_command() {
        let role = "arn:aws:iam::123456789012:role/tv1-crawler";
        let cmds = registration_commands(role, "tv1-connector-prod");
        assert_eq!(cmds.len(), 11);
        assert!(cmds[0].starts_with(
            "aws securitylake create-custom-log-source --source-name tv1-audit-auth --event-classes AUTHENTICATION"
        ));
        for source in ["tv1-ad-group", "tv1-alerts", "tv1-oat"] {
            assert!(
                cmds.iter()
                    .any(|c| c.contains(&format!("--source-name {source} --configuration"))),
                "{source}"
            );
        }
        assert!(
            cmds.iter()
                .all(|c| c.contains(r#""principal":"123456789012""#))
        );
    }
}
