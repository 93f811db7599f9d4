//! OCSF 1.1.0 events from the connector's records (what Amazon Security Lake validates custom
//! sources against). One function per dataset maps one stored line to one OCSF event; the
//! choices, and what is approximated, are in `docs/ocsf.md`. Events are checked against the
//! schema's own definitions by `tools/ocsf/validate.py` in the tests.

pub mod audit;

use serde_json::{Map, Value, json};

/// The OCSF version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// An OCSF class: its uid, name and category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// `class_uid`.
    pub uid: u32,
    /// `class_name`.
    pub name: &'static str,
    /// `category_name`.
    pub category: &'static str,
}

impl Class {
    /// `category_uid`: the class uid's thousands.
    pub fn category_uid(self) -> u32 {
        self.uid / 1000
    }
}

/// Authentication.
pub const AUTHENTICATION: Class = Class {
    uid: 3002,
    name: "Authentication",
    category: "Identity & Access Management",
};
/// Entity Management.
pub const ENTITY_MANAGEMENT: Class = Class {
    uid: 3004,
    name: "Entity Management",
    category: "Identity & Access Management",
};
/// API Activity.
pub const API_ACTIVITY: Class = Class {
    uid: 6003,
    name: "API Activity",
    category: "Application Activity",
};

/// `status_id`: 1 Success, 2 Failure, 0 Unknown.
fn status_id(result: Option<&str>) -> i64 {
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

/// The attributes every event carries: classification, time, severity, status, metadata, the
/// original record.
#[allow(clippy::too_many_arguments)]
fn envelope(
    class: Class,
    activity_id: i64,
    activity_name: &str,
    time_ms: i64,
    uid: &str,
    original_time: Option<&str>,
    product: Value,
    result: Option<&str>,
    raw: &str,
) -> Map<String, Value> {
    let status_id = status_id(result);
    let mut e = Map::new();
    e.insert("class_uid".into(), class.uid.into());
    e.insert("class_name".into(), class.name.into());
    e.insert("category_uid".into(), class.category_uid().into());
    e.insert("category_name".into(), class.category.into());
    e.insert("activity_id".into(), activity_id.into());
    e.insert("activity_name".into(), activity_name.into());
    e.insert(
        "type_uid".into(),
        (class.uid as i64 * 100 + activity_id).into(),
    );
    e.insert(
        "type_name".into(),
        format!("{}: {activity_name}", class.name).into(),
    );
    e.insert("time".into(), time_ms.into());
    e.insert("severity_id".into(), 1.into());
    e.insert("severity".into(), "Informational".into());
    e.insert("status_id".into(), status_id.into());
    e.insert(
        "status".into(),
        match status_id {
            1 => "Success",
            2 => "Failure",
            _ => "Unknown",
        }
        .into(),
    );
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": product,
        "uid": uid,
    });
    if let Some(t) = original_time {
        metadata["original_time"] = t.into();
    }
    e.insert("metadata".into(), metadata);
    e.insert("raw_data".into(), raw.into());
    e
}
