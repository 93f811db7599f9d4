//! Time parsing and formatting shared by the API client, the object naming and the config.
//!
//! Vision One speaks whole-second UTC timestamps; everything here works in whole seconds so
//! that window bounds, checkpoints and object names agree exactly.

use chrono::{DateTime, NaiveDateTime, TimeZone, Timelike, Utc};
use std::time::Duration;

/// Parses a Vision One `loggedDateTime` as UTC.
///
/// Both forms seen in the field are accepted: RFC 3339 (`2022-02-24T07:29:48Z`, with or without
/// fractional seconds or an offset) and the zone-less `2022-07-16 04:30:04`, which is UTC.
pub fn parse_api_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // Fluent Bit's Windows event log inputs: local time with a numeric offset.
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S %z") {
        return Some(t.with_timezone(&Utc));
    }
    let bare = s.strip_suffix('Z').unwrap_or(s);
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(bare, f).ok())
        .map(|n| Utc.from_utc_datetime(&n))
}

/// Formats a time the way the API wants its bounds: seconds precision, `Z` suffix.
pub fn api_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Compact, sortable form used inside object names: `20261121T100000Z`.
pub fn compact_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Parses the compact form of [`compact_time`].
pub fn parse_compact_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

/// Truncates to the whole second (the API's precision).
pub fn floor_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Truncates to the whole hour (the partition grain).
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    Utc.timestamp_opt(s - s.rem_euclid(3600), 0)
        .single()
        .unwrap_or(t)
}

/// Rounds up to the next whole hour (identity on a whole hour).
pub fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let f = floor_hour(t);
    if f == t {
        f
    } else {
        f + chrono::Duration::hours(1)
    }
}

/// Parses a user-given instant for the CLI: RFC 3339, the API's zone-less form, or a date.
pub fn parse_user_time(s: &str) -> Option<DateTime<Utc>> {
    parse_api_time(s).or_else(|| {
        chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|n| Utc.from_utc_datetime(&n))
    })
}

/// Parses a duration such as `300` (seconds), `250ms`, `300s`, `5m`, `24h` or `7d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms_per_unit).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_api_forms_are_utc() {
        let a = parse_api_time("2022-02-24T07:29:48Z").unwrap();
        let b = parse_api_time("2022-02-24 07:29:48").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.timestamp(), 1_645_687_788);
        assert_eq!(parse_api_time("2022-02-24T08:29:48+01:00").unwrap(), a);
        assert_eq!(
            parse_api_time("2022-02-24T07:29:48.250Z").map(floor_second),
            Some(a)
        );
        assert!(parse_api_time("yesterday").is_none());
        assert!(parse_api_time("").is_none());
    }

    #[test]
    fn formats_round_trip() {
        let t = parse_api_time("2026-11-21T10:00:05Z").unwrap();
        assert_eq!(api_time(t), "2026-11-21T10:00:05Z");
        assert_eq!(compact_time(t), "20261121T100005Z");
        assert_eq!(api_time(floor_hour(t)), "2026-11-21T10:00:00Z");
        assert_eq!(api_time(ceil_hour(t)), "2026-11-21T11:00:00Z");
        assert_eq!(ceil_hour(floor_hour(t)), floor_hour(t));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn user_times() {
        assert_eq!(
            parse_user_time("2026-11-20").map(api_time).as_deref(),
            Some("2026-11-20T00:00:00Z")
        );
    }
}
