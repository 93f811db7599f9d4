//! Vision One audit entries as OCSF events.
//!
//! Only the documented fields are read (`loggedDateTime`, `loggedUser`, `loggedRole`,
//! `loggedUserId`, `loggedUserMailAddress`, `accessType`, `category`, `activity`, `result`);
//! `details` has no documented keys, so it goes to `unmapped` as it is, with every other field
//! that has no attribute: nothing of the entry is lost, so it is not repeated in `raw_data` (the
//! JSONL line, joined by `metadata.uid`, keeps it whole). That decides the classes:
//!
//! - `Logon and Logoff` → Authentication (3002): the logged user is the subject (`user`).
//! - an API `accessType` (`API`, `Service Provider API`) → API Activity (6003): the logged user is
//!   the actor, the activity the API operation.
//! - everything else → Entity Management (3004): the logged user is the actor, the category and
//!   activity name the managed entity.
//!
//! Account Change (3001) and User Access Management (3005) would fit account and role changes,
//! but both require the *target* user (and 3005 its privileges), which no documented field
//! carries; guessing them from `details` would put a wrong user into a required attribute.

use super::{
    API_ACTIVITY, AUTHENTICATION, Class, ENTITY_MANAGEMENT, Header, envelope, is_email, status_of,
    unmapped_value,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The documented fields of an audit entry.
const DOCUMENTED: [&str; 10] = [
    "loggedDateTime",
    "loggedUser",
    "loggedRole",
    "loggedUserId",
    "loggedUserMailAddress",
    "accessType",
    "category",
    "activity",
    "result",
    "details",
];

/// The documented fields that have an OCSF attribute of their own; the rest go to `unmapped`.
const MAPPED: [&str; 7] = [
    "loggedDateTime",
    "loggedUser",
    "loggedUserId",
    "loggedUserMailAddress",
    "category",
    "activity",
    "result",
];

/// The product block of every audit event.
fn product() -> Value {
    json!({
        "name": "Trend Vision One",
        "vendor_name": "Trend Micro",
        "feature": {"name": "Audit Logs"},
    })
}

/// The class of an entry and its `activity_id` there.
pub fn classify(category: &str, activity: &str, access: &str) -> (Class, i64) {
    let activity_lc = activity.to_ascii_lowercase();
    if category.eq_ignore_ascii_case("Logon and Logoff") {
        let id = if ["log on", "logon", "sign in", "log in"]
            .iter()
            .any(|w| activity_lc.contains(w))
        {
            1
        } else if ["log off", "logoff", "sign out", "log out"]
            .iter()
            .any(|w| activity_lc.contains(w))
        {
            2
        } else {
            99
        };
        return (AUTHENTICATION, id);
    }
    let class = if access.to_ascii_lowercase().contains("api") {
        API_ACTIVITY
    } else {
        ENTITY_MANAGEMENT
    };
    (class, crud(&activity_lc))
}

/// Create / Read / Update / Delete from the activity's first word (both classes use 1–4).
fn crud(activity_lc: &str) -> i64 {
    let verb = activity_lc.split_whitespace().next().unwrap_or("");
    match verb {
        "add" | "create" | "generate" | "register" | "import" | "upload" | "invite" => 1,
        "view" | "read" | "get" | "export" | "download" | "search" | "query" | "list" => 2,
        "delete" | "remove" | "revoke" | "unregister" => 4,
        "edit" | "change" | "update" | "modify" | "enable" | "disable" | "set" | "assign"
        | "unassign" | "isolate" | "restore" | "rename" | "reset" | "configure" | "apply"
        | "lock" | "unlock" | "approve" | "reject" | "close" | "resolve" => 3,
        _ => 99,
    }
}

/// One audit entry (the API item's text, its `_id`, its parsed `loggedDateTime`) as an OCSF event.
pub fn to_ocsf(raw: &str, id: &str, time: DateTime<Utc>) -> Result<Value, serde_json::Error> {
    let entry: Map<String, Value> = serde_json::from_str(raw)?;
    Ok(event(&entry, id, time))
}

/// The OCSF event of `entry`.
fn event(entry: &Map<String, Value>, id: &str, time: DateTime<Utc>) -> Value {
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let category = text("category").unwrap_or("");
    let activity = text("activity").unwrap_or("");
    let access = text("accessType").unwrap_or("");
    let (class, activity_id) = classify(category, activity, access);
    let activity_name = if activity.is_empty() {
        "Other"
    } else {
        activity
    };
    let mut metadata = Map::new();
    metadata.insert("product".into(), product());
    metadata.insert("uid".into(), id.into());
    if let Some(t) = text("loggedDateTime") {
        metadata.insert("original_time".into(), t.into());
    }
    let mut e = envelope(Header {
        class,
        activity_id,
        activity_name,
        time_ms: time.timestamp_millis(),
        severity_id: 1,
        status_id: Some(status_of(text("result"))),
        metadata,
        // Every field of an entry has an attribute or is in `unmapped`, and the JSONL line
        // next to it keeps the entry whole: `raw_data` was a quarter of the audit Parquet
        // (docs/benchmarks.md, note 12).
        raw: None,
    });
    // The result as written: `status_id` keeps only success or failure.
    if let Some(result) = text("result") {
        e.insert("status_detail".into(), result.into());
    }
    let user = logged_user(&text);
    class_attributes(&mut e, class, user, activity_name, category, access);
    let unmapped = unmapped(entry);
    if !unmapped.is_empty() {
        e.insert("unmapped".into(), Value::Object(unmapped));
    }
    Value::Object(e)
}

/// The logged user as an OCSF `user`; one with neither name nor id is `Unknown` (the attribute
/// needs one of them).
fn logged_user<'a>(text: &impl Fn(&str) -> Option<&'a str>) -> Value {
    let mut user = Map::new();
    if let Some(name) = text("loggedUser") {
        user.insert("name".into(), name.into());
    }
    if let Some(uid) = text("loggedUserId") {
        user.insert("uid".into(), uid.into());
    }
    if let Some(mail) = text("loggedUserMailAddress").filter(|m| is_email(m)) {
        user.insert("email_addr".into(), mail.into());
    }
    if !user.contains_key("name") && !user.contains_key("uid") {
        user.insert("name".into(), "Unknown".into());
    }
    Value::Object(user)
}

/// The attributes of the entry's class: who (`user` or `actor.user`) and what.
fn class_attributes(
    e: &mut Map<String, Value>,
    class: Class,
    user: Value,
    activity_name: &str,
    category: &str,
    access: &str,
) {
    match class.uid {
        3002 => {
            e.insert("user".into(), user);
            e.insert("service".into(), json!({"name": "Trend Vision One"}));
        }
        6003 => {
            e.insert("actor".into(), json!({ "user": user }));
            let mut api = json!({ "operation": activity_name });
            if !category.is_empty() {
                api["service"] = json!({ "name": category });
            }
            e.insert("api".into(), api);
            // Vision One does not say where an API call came from; the required endpoint
            // carries the access type, a fact, rather than a guessed address.
            e.insert("src_endpoint".into(), json!({ "name": access }));
        }
        _ => {
            e.insert("actor".into(), json!({ "user": user }));
            let mut entity = json!({ "name": activity_name });
            if !category.is_empty() {
                entity["type"] = category.into();
            }
            e.insert("entity".into(), entity);
        }
    }
}

/// Everything not mapped to an attribute of its own; a documented field that is null carries
/// nothing.
fn unmapped(entry: &Map<String, Value>) -> Map<String, Value> {
    let left_out =
        |k: &str, v: &Value| !MAPPED.contains(&k) && (!v.is_null() || !DOCUMENTED.contains(&k));
    entry
        .iter()
        .filter(|(k, v)| left_out(k, v))
        .map(|(k, v)| (k.clone(), unmapped_value(v)))
        .collect()
}

/// One stored line (`{"_id":"…",<the API item>}`) as an OCSF event; `None` when it is not a
/// line the puller wrote (no `_id`, or no readable `loggedDateTime`).
pub fn from_line(line: &str) -> Option<Value> {
    // One parse of the line: the `_id` comes out of the entry, which is then the API item.
    let (entry, id) = super::parse_stored(line)?;
    let time = crate::timefmt::parse_api_time(entry.get("loggedDateTime")?.as_str()?)?;
    Some(event(&entry, &id, time))
}

/// The class and time (epoch ms) [`from_line`] gives a stored line, without building the event.
pub fn class_and_time(line: &str) -> Option<(Class, i64)> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "loggedDateTime", borrow, default)]
        logged: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        category: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        activity: Option<std::borrow::Cow<'a, str>>,
        #[serde(rename = "accessType", borrow, default)]
        access: Option<std::borrow::Cow<'a, str>>,
    }
    let h: Head = serde_json::from_str(line).ok()?;
    let time = crate::timefmt::parse_api_time(h.logged.as_deref()?)?;
    let (class, _) = classify(
        h.category.as_deref().unwrap_or(""),
        h.activity.as_deref().unwrap_or(""),
        h.access.as_deref().unwrap_or(""),
    );
    Some((class, time.timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::parse_api_time;

    fn event(raw: &str) -> Value {
        to_ocsf(raw, "abc", parse_api_time("2026-11-21T10:00:00Z").unwrap()).unwrap()
    }

    #[test]
    fn classes_follow_the_category_and_access_type() {
        assert_eq!(
            classify("Logon and Logoff", "Log on", "Console"),
            (AUTHENTICATION, 1)
        );
        assert_eq!(
            classify("Logon and Logoff", "Log off", "API"),
            (AUTHENTICATION, 2)
        );
        assert_eq!(
            classify("Account Management", "Add user account", "API"),
            (API_ACTIVITY, 1)
        );
        assert_eq!(
            classify("Account Management", "Delete user account", "Console"),
            (ENTITY_MANAGEMENT, 4)
        );
        assert_eq!(
            classify("Response Management", "Isolate endpoint", "Service Gateway"),
            (ENTITY_MANAGEMENT, 3)
        );
        assert_eq!(
            classify("Workbench", "Something new", "Service Provider API"),
            (API_ACTIVITY, 99)
        );
    }

    #[test]
    fn an_entry_keeps_everything_it_had() {
        let raw = r#"{"loggedDateTime":"2026-11-21 10:00:00","loggedUser":"Alice","loggedRole":"SOC Analyst","loggedUserId":"00ab","loggedUserMailAddress":"alice@example.com","accessType":"Console","category":"Logon and Logoff","activity":"Log on","result":"Unsuccessful","details":{"k":"v"},"extra":1}"#;
        let e = event(raw);
        assert_eq!(e["class_uid"], 3002);
        assert_eq!(e["type_uid"], 300201);
        assert_eq!(e["time"], 1_795_255_200_000i64);
        assert_eq!(e["status_id"], 2);
        assert_eq!(e["user"]["email_addr"], "alice@example.com");
        assert_eq!(e["metadata"]["uid"], "abc");
        assert_eq!(e["metadata"]["original_time"], "2026-11-21 10:00:00");
        // Every field is somewhere, so the entry is not repeated whole.
        assert!(e.get("raw_data").is_none());
        assert_eq!(e["user"]["name"], "Alice");
        assert_eq!(e["user"]["uid"], "00ab");
        assert_eq!(e["unmapped"]["accessType"], "Console");
        assert_eq!(e["status_detail"], "Unsuccessful");
        assert_eq!(e["activity_name"], "Log on");
        assert_eq!(e["unmapped"]["loggedRole"], "SOC Analyst");
        assert_eq!(e["unmapped"]["details"], r#"{"k":"v"}"#);
        assert_eq!(e["unmapped"]["extra"], "1");
    }

    #[test]
    fn a_stored_line_gives_back_the_api_item_and_its_id() {
        let item = r#"{"loggedDateTime":"2026-11-21T10:00:00Z","accessType":"Console","category":"Logon and Logoff","activity":"Log on"}"#;
        let mut line = Vec::new();
        crate::lake::encode::line_with_fields(item.as_bytes(), &[("_id", "x1")], &mut line);
        let e = from_line(std::str::from_utf8(&line).unwrap()).unwrap();
        assert_eq!(e["metadata"]["original_time"], "2026-11-21T10:00:00Z");
        assert_eq!(e["metadata"]["uid"], "x1");
        assert!(e.get("unmapped").is_none_or(|u| u.get("_id").is_none()));
        assert_eq!(super::super::stored_item(r#"{"_id":"y"}"#, "y"), "{}");
        assert!(from_line(r#"{"_id":"z","loggedDateTime":"soon"}"#).is_none());
    }

    #[test]
    fn required_attributes_hold_facts_even_when_fields_are_missing() {
        let e = event(r#"{"loggedDateTime":"2026-11-21T10:00:00Z","accessType":"API"}"#);
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["actor"]["user"]["name"], "Unknown");
        assert_eq!(e["api"]["operation"], "Other");
        assert_eq!(e["src_endpoint"]["name"], "API");
        let e = event(
            r#"{"loggedDateTime":"2026-11-21T10:00:00Z","loggedUserMailAddress":"not an address"}"#,
        );
        assert!(e["actor"]["user"].get("email_addr").is_none());
    }
}
