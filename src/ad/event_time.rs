//! The true instant of a Windows event, from the many ways forwarders write it.
//!
//! The stored time is UTC at the precision the source gives (Windows keeps 100 ns in
//! `SystemTime`; RFC 3339 fractions are kept to the nanosecond). A time without a zone is never
//! taken as UTC: it is local time on the domain controller (NXLog CE writes `EventTime` so by
//! default), so it needs the zone the agent declares (`X-Agent-Timezone` or `agent.timezone`,
//! an IANA name); without one the event is quarantined with a reason naming the field.
//!
//! One agent is known to write a wrong offset: Fluent Bit's `winevtlog` input renders
//! `TimeCreated` as local wall-clock time plus `%z`, and in many releases the offset ignores
//! daylight saving (fluent/fluent-bit#8086) or, in 4.0.10 and 4.2.0, shows the summer offset in
//! winter (#11213, fixed by #11291). The wall clock is right and the offset off by the zone's
//! daylight-saving delta (one hour), while the same record's HEC `time` (when Fluent Bit read
//! it) is right: [`fluent_bit_offset`] corrects it from that, and the stored line keeps the
//! original text.

use chrono::{
    DateTime, FixedOffset, LocalResult, NaiveDateTime, Offset, SecondsFormat, TimeZone, Timelike,
    Utc,
};
use chrono_tz::Tz;

/// A correction the connector made to the time an event states, kept in the stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFix {
    /// The time as the agent wrote it.
    pub original: String,
    /// Why and how it was read differently.
    pub reason: String,
}

/// The stored form of an instant: RFC 3339, UTC (`Z`), with as many fraction digits as the
/// instant has (none, 3, 6 or 9).
pub fn stored(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The first instant an Active Directory event can have: Active Directory came with Windows
/// 2000 (released February 2000).
pub const EARLIEST: &str = "2000-01-01T00:00:00Z";
/// The first instant past the times stored: a clock or parsing error beyond it would open
/// partitions no table covers.
pub const LATEST: &str = "2100-01-01T00:00:00Z";

/// An event time the lake takes: within [`EARLIEST`, `LATEST`), a leap second (`23:59:60`,
/// which Athena's ISO 8601 parser refuses) folded into the second before it. The range is a
/// property of the event alone, never of when it is received, so a retry decides the same.
pub fn plausible(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let bound = |s| {
        DateTime::parse_from_rfc3339(s)
            .expect("a constant")
            .with_timezone(&Utc)
    };
    if t < bound(EARLIEST) || t >= bound(LATEST) {
        return Err(format!(
            "time {} is outside {EARLIEST} to {LATEST} (no Active Directory event has it): a clock or parsing error",
            stored(t)
        ));
    }
    Ok(match t.nanosecond() {
        n if n >= 1_000_000_000 => t.with_nanosecond(999_999_999).unwrap_or(t),
        _ => t,
    })
}

/// The zone an agent declares, by its IANA name (`Europe/Berlin`, `UTC`).
pub fn zone(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| {
        let shown: String = name.chars().take(60).collect();
        format!("time zone {shown:?} is not an IANA time zone name (e.g. Europe/Berlin, UTC)")
    })
}

/// Parses the time field `field` of an event.
///
/// Accepted: RFC 3339 (`2026-11-21T10:00:05.1234567Z`, any offset), Fluent Bit's
/// `2026-11-21 11:00:05 +0100`, and a zone-less `YYYY-MM-DD[ T]hh:mm:ss[.f]` when `zone` says
/// where it is local time. Errors say which field and what to do.
pub fn parse(
    field: &str,
    s: &str,
    zone: Option<Tz>,
) -> Result<(DateTime<Utc>, Option<TimeFix>), String> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok((d.with_timezone(&Utc), None));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(d) = DateTime::<FixedOffset>::parse_from_str(t, f) {
            return Ok((d.with_timezone(&Utc), None));
        }
    }
    let shown = || {
        let head: String = s.chars().take(40).collect();
        let more = if head.len() < s.len() { "..." } else { "" };
        format!("{head:?}{more}")
    };
    let Some(local) = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    else {
        return Err(format!(
            "{field} {} is not a timestamp (use RFC 3339, e.g. 2026-11-21T10:00:00.123Z)",
            shown()
        ));
    };
    let Some(tz) = zone else {
        return Err(format!(
            "{field} {} has no time zone: it is the domain controller's local time (NXLog's default); \
             send UTC (NXLog: DateFormat YYYY-MM-DDThh:mm:ss.sUTC) or declare the zone with the \
             X-Agent-Timezone header (an IANA name)",
            shown()
        ));
    };
    let (instant, note) = match tz.from_local_datetime(&local) {
        LocalResult::Single(d) => (d.with_timezone(&Utc), ""),
        // The hour repeated when clocks go back: both readings are possible; the earlier is
        // taken and the line says so.
        LocalResult::Ambiguous(a, _) => (
            a.with_timezone(&Utc),
            "; ambiguous (clocks went back), the earlier reading taken",
        ),
        LocalResult::None => {
            return Err(format!(
                "{field} {} does not exist in {tz} (skipped when clocks went forward)",
                shown()
            ));
        }
    };
    let fix = TimeFix {
        original: s.to_owned(),
        reason: format!("local time in {tz}, the zone the agent declared{note}"),
    };
    Ok((instant, Some(fix)))
}

/// Fluent Bit's `TimeCreated` (`2026-07-10 12:48:24 +0100`) read as the wall-clock time it is
/// in `zone`, whatever its offset says: Fluent Bit writes the event's local wall clock with an
/// offset that is not the event's (the zone's offset when it read the record, or one that
/// ignores daylight saving; see the module doc). `None` when `s` is not that form, or the
/// offset was already right.
pub fn fluent_bit_wall_clock(s: &str, zone: Tz) -> Option<(DateTime<Utc>, TimeFix)> {
    let stated =
        DateTime::<FixedOffset>::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f %z").ok()?;
    let local = stated.naive_local();
    let instant = match zone.from_local_datetime(&local) {
        LocalResult::Single(d) => d.with_timezone(&Utc),
        // In the repeated hour, the stated offset tells which reading is meant when it is one.
        LocalResult::Ambiguous(a, b) => {
            if b.offset().fix() == *stated.offset() {
                b.with_timezone(&Utc)
            } else {
                a.with_timezone(&Utc)
            }
        }
        LocalResult::None => return None,
    };
    (instant != stated.with_timezone(&Utc)).then(|| {
        let fix = TimeFix {
            original: s.to_owned(),
            reason: format!(
                "Fluent Bit winevtlog wrote the wall clock with offset {} (not the event's); read as local time in {zone}, the zone the agent declared",
                stated.offset()
            ),
        };
        (instant, fix)
    })
}

/// HEC's `time` as the JSON text it was sent as: epoch seconds, a number or a string, with a
/// fraction kept to the nanosecond (read from the digits, not through a float).
pub fn epoch(json: &str) -> Option<DateTime<Utc>> {
    let t = json.trim();
    let t = t
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
        .trim();
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let digits = &frac[..frac.len().min(9)];
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    DateTime::from_timestamp(secs, nanos)
}

/// How far Fluent Bit's read time may trail a correctly stated event for the offset to be
/// judged: it reads the log every `interval_sec` (1 s by default) and flushes every few seconds.
const READ_LAG: chrono::TimeDelta = chrono::TimeDelta::seconds(120);
/// The daylight-saving delta Fluent Bit's offset gets wrong.
const DST_DELTA: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The corrected instant of Fluent Bit `winevtlog` events whose `TimeCreated` offset is off
/// by the daylight-saving hour, judged against HEC's `time` (when Fluent Bit read the record).
///
/// `times[i]` is `(stated instant, read time)` of the i-th such event of one request and one
/// computer. An event stated an hour *after* it was read is certainly an offset an hour too
/// small (it cannot be read before it happened): it is moved back one hour. Events stated an
/// hour before their read time are moved forward only when every event of the group was read
/// that hour late (a systematic offset); a backlog read after an outage spreads its delays, so
/// it is left alone. Returns, per event, the correction to add (zero for none).
pub fn fluent_bit_offset(times: &[(DateTime<Utc>, DateTime<Utc>)]) -> Vec<chrono::TimeDelta> {
    // Read `lag` after the stated time, allowing the clock granularity of a few seconds.
    let about = |lag: chrono::TimeDelta, target: chrono::TimeDelta| {
        lag >= target - chrono::TimeDelta::seconds(5) && lag <= target + READ_LAG
    };
    let lags: Vec<_> = times.iter().map(|(stated, read)| *read - *stated).collect();
    let all_an_hour_late = !lags.is_empty() && lags.iter().all(|l| about(*l, DST_DELTA));
    lags.iter()
        .map(|l| {
            if about(*l, -DST_DELTA) {
                -DST_DELTA
            } else if all_an_hour_late {
                DST_DELTA
            } else {
                chrono::TimeDelta::zero()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn zoned_forms_keep_their_precision() {
        let (t, fix) = parse("system_time", "2026-11-21T10:00:03.0551230Z", None).unwrap();
        assert_eq!(stored(t), "2026-11-21T10:00:03.055123Z");
        assert!(fix.is_none());
        let (t, _) = parse("TimeCreated", "2026-11-21 11:00:05 +0100", None).unwrap();
        assert_eq!(stored(t), "2026-11-21T10:00:05Z");
        let (t, _) = parse("EventTime", "2025-09-01T03:12:44.000000+00:00", None).unwrap();
        assert_eq!(stored(t), "2025-09-01T03:12:44Z");
        let (t, _) = parse("@timestamp", "2026-11-21T10:00:01.234Z", None).unwrap();
        assert_eq!(stored(t), "2026-11-21T10:00:01.234Z");
    }

    #[test]
    fn a_zone_less_time_needs_the_declared_zone() {
        let e = parse("EventTime", "2026-11-21 11:00:05", None).unwrap_err();
        assert!(
            e.contains("EventTime") && e.contains("no time zone") && e.contains("X-Agent-Timezone"),
            "{e}"
        );
        let berlin = zone("Europe/Berlin").unwrap();
        let (t, fix) = parse("EventTime", "2026-11-21 11:00:05", Some(berlin)).unwrap();
        assert_eq!(stored(t), "2026-11-21T10:00:05Z");
        let fix = fix.unwrap();
        assert_eq!(fix.original, "2026-11-21 11:00:05");
        assert!(fix.reason.contains("Europe/Berlin"));
        // Local midnight passed, UTC not yet: the UTC day is the event's day.
        let (t, _) = parse("EventTime", "2026-11-22 00:30:10", Some(berlin)).unwrap();
        assert_eq!(stored(t), "2026-11-21T23:30:10Z");
        // Summer time in the same zone.
        let (t, _) = parse("EventTime", "2026-07-10 12:48:24", Some(berlin)).unwrap();
        assert_eq!(stored(t), "2026-07-10T10:48:24Z");
        assert!(zone("Mars/Olympus").is_err());
        assert!(parse("EventTime", "2026-03-29 02:30:00", Some(berlin)).is_err());
    }

    #[test]
    fn fluent_bits_wall_clock_in_the_declared_zone() {
        let berlin = zone("Europe/Berlin").unwrap();
        // A July event read in November: the November offset on a summer wall clock.
        let (t, fix) = fluent_bit_wall_clock("2026-07-10 12:48:24 +0100", berlin).unwrap();
        assert_eq!(stored(t), "2026-07-10T10:48:24Z");
        assert!(fix.reason.contains("Europe/Berlin"));
        // The right offset: nothing to correct.
        assert!(fluent_bit_wall_clock("2026-11-21 11:00:05 +0100", berlin).is_none());
        assert!(fluent_bit_wall_clock("2026-11-21T11:00:05Z", berlin).is_none());
    }

    #[test]
    fn only_times_active_directory_can_have_are_stored() {
        assert!(plausible(utc("1999-12-31T23:59:59Z")).is_err());
        assert!(plausible(utc("1601-01-01T00:00:00Z")).is_err());
        assert!(plausible(utc("2100-01-01T00:00:00Z")).is_err());
        assert_eq!(
            stored(plausible(utc("2000-01-01T00:00:00Z")).unwrap()),
            "2000-01-01T00:00:00Z"
        );
        let (leap, _) = parse("SystemTime", "2016-12-31T23:59:60.5Z", None).unwrap();
        assert_eq!(
            stored(plausible(leap).unwrap()),
            "2016-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn hec_epochs_keep_their_digits() {
        assert_eq!(
            stored(epoch("1795255201.234").unwrap()),
            "2026-11-21T10:00:01.234Z"
        );
        assert_eq!(
            stored(epoch("\"1795255201\"").unwrap()),
            "2026-11-21T10:00:01Z"
        );
        assert_eq!(
            stored(epoch("1795255203.1").unwrap()),
            "2026-11-21T10:00:03.100Z"
        );
        assert_eq!(epoch("-1"), None);
        assert_eq!(epoch("1e9"), None);
        assert_eq!(epoch("\"é\""), None);
    }

    #[test]
    fn fluent_bits_daylight_saving_offset_is_corrected_from_the_read_time() {
        // Summer, offset without DST: stated an hour after it was read.
        let summer = [(utc("2026-07-10T11:48:24Z"), utc("2026-07-10T10:48:26.41Z"))];
        assert_eq!(fluent_bit_offset(&summer), vec![-DST_DELTA]);
        // Winter, DST offset: every event of the request read an hour late.
        let winter = [
            (utc("2026-11-21T09:00:05Z"), utc("2026-11-21T10:00:06.93Z")),
            (utc("2026-11-21T09:00:07Z"), utc("2026-11-21T10:00:08Z")),
        ];
        assert_eq!(fluent_bit_offset(&winter), vec![DST_DELTA, DST_DELTA]);
        // Right offsets, read at once: nothing changes.
        let ok = [(utc("2026-11-21T10:00:05Z"), utc("2026-11-21T10:00:06Z"))];
        assert_eq!(fluent_bit_offset(&ok), vec![chrono::TimeDelta::zero()]);
        // A backlog after an outage: delays spread, one of them near an hour: left alone.
        let backlog = [
            (utc("2026-11-21T09:00:00Z"), utc("2026-11-21T10:00:01Z")),
            (utc("2026-11-21T09:40:00Z"), utc("2026-11-21T10:00:01Z")),
        ];
        assert_eq!(
            fluent_bit_offset(&backlog),
            vec![chrono::TimeDelta::zero(); 2]
        );
        // Old events read years later (read_existing_events): left alone.
        let old = [(utc("2025-09-01T03:12:44Z"), utc("2026-11-21T10:00:01Z"))];
        assert_eq!(fluent_bit_offset(&old), vec![chrono::TimeDelta::zero()]);
    }
}
