//! Where an accepted batch waits for compaction, and the windows compaction works in.
//!
//! ad-ingest lands each accepted batch as one create-only object, `_landing/<window>/<agent>~
//! <batch_id>.jsonl.gz` (a header line, then the batch's lake lines grouped by (category, day),
//! then its quarantine lines), under the window its landing began in. The compactor
//! (`compact.rs`) turns each closed window into one object per (category, day) and one
//! quarantine object, which is what Athena and the OCSF output read. S3 requests per batch are
//! then the marker and the landing object (two PUTs) and one GET at compaction, however often
//! agents send; objects per day are bounded by the number of windows.
//!
//! The three names below let a batch land late (a paused `tv1 serve`, a slow PUT) without being
//! lost or compacted twice; `docs/exactly-once.md` has the whole argument:
//! - the checkpoint's `sealed_to`: windows before it may be listed already, so a landing object
//!   appearing there later is not necessarily seen;
//! - a window's plan (create-only): the landing objects it is made of, fixed once for every
//!   compactor (concurrent, redone or taking over) and for the late writer, who reads it to learn
//!   whether its object is in;
//! - the batch marker's `window`: the one window a batch may land in; moving it to a newer window
//!   (when the plan of the old one left the batch out) is a conditional write, so two copies of a
//!   batch never land it in two windows.

use super::events::Category;
use crate::lake::sink::{Condition, S3Sink};
use crate::lake::state::{StateError, parse_state};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The folder of landed batches under the AD prefix. Its leading `_` keeps it out of Athena's
/// tables (Hive skips names that begin with `_`).
pub const LANDING_DIR: &str = "_landing/";

/// The compactor's checkpoint under the AD prefix.
pub const CHECKPOINT: &str = "_state/compaction.json";

/// The folder of window plans under the AD prefix.
pub const PLANS_DIR: &str = "_state/windows/";

/// Fixed-length windows aligned on the Unix epoch (so on every day's midnight UTC: the length
/// divides a day), and the settle time after a window's end before it is compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    len: TimeDelta,
    settle: TimeDelta,
}

impl Windows {
    /// `len` and `settle` as [`crate::config::IngestConfig`] checked them (whole seconds,
    /// `len` divides a day, `settle ≤ len`).
    pub fn new(len: std::time::Duration, settle: std::time::Duration) -> Self {
        Windows {
            len: TimeDelta::seconds(len.as_secs() as i64),
            settle: TimeDelta::seconds(settle.as_secs() as i64),
        }
    }

    /// The window length.
    pub fn len(&self) -> TimeDelta {
        self.len
    }

    /// The window length and the settle time in seconds, as the checkpoint records them.
    pub fn seconds(&self) -> (u64, u64) {
        (
            self.len.num_seconds() as u64,
            self.settle.num_seconds() as u64,
        )
    }

    /// The start of the window holding `t`.
    pub fn start_of(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let len = self.len.num_seconds();
        let s = t.timestamp().div_euclid(len) * len;
        DateTime::from_timestamp(s, 0).unwrap_or(t)
    }

    /// The window after the one starting at `start`.
    pub fn next(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        start + self.len
    }

    /// The first window not yet closed at `now` (S3's clock): every window before it ended at
    /// least the settle time ago and may be compacted.
    pub fn open_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.start_of(now - self.settle)
    }

    /// When the window starting at `start` is closed on a clock that may read up to a second
    /// behind S3's (the whole-second `Date` it is taken from): its end, the settle time and a
    /// second. A compactor started then compacts it.
    pub fn closed_at(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        start + self.len + self.settle + TimeDelta::seconds(1)
    }

    /// Until when a landing object of the window starting at `start` that S3 had stored is
    /// certainly seen by the compaction of its window: half the settle time after the window
    /// ends. The compactor seals a window no earlier than the whole settle time after its end,
    /// on the same (S3's) clock; the half left over covers the second `Date` is truncated to.
    pub fn surely_seen_before(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        start + self.len + self.settle / 2
    }

    /// When data received at `t` is in the compacted layout at the latest, if the compactor
    /// runs every window length: the window's end, the settle time, and one schedule interval.
    pub fn visible_by(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.start_of(t) + self.len + self.settle + self.len
    }
}

/// A window's name in keys: its start, `20261130T074000Z` (sorts as time does).
pub fn window_name(start: DateTime<Utc>) -> String {
    start.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The window a [`window_name`] names.
pub fn parse_window_name(name: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(name, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// The folder of one window's landed batches.
pub fn landing_prefix(prefix: &str, start: DateTime<Utc>) -> String {
    format!("{prefix}{LANDING_DIR}{}/", window_name(start))
}

/// The landing object of a batch: `<prefix>_landing/<window>/<agent>~<batch_id>.jsonl.gz`.
pub fn landing_key(prefix: &str, start: DateTime<Utc>, agent: &str, batch_id: &str) -> String {
    format!(
        "{}{}",
        landing_prefix(prefix, start),
        super::batch::object_name(agent, batch_id)
    )
}

/// The plan of one window.
pub fn plan_key(prefix: &str, start: DateTime<Utc>) -> String {
    format!("{prefix}{PLANS_DIR}{}.json", window_name(start))
}

/// The compacted object of one (category, day) for one window.
pub fn compacted_key(prefix: &str, c: Category, day: NaiveDate, start: DateTime<Utc>) -> String {
    format!(
        "{prefix}category={}/dt={}/{}.jsonl.gz",
        c.as_str(),
        day.format("%Y-%m-%d"),
        window_name(start)
    )
}

/// The quarantine object of one window.
pub fn quarantine_key(prefix: &str, start: DateTime<Utc>) -> String {
    format!(
        "{prefix}{}{}.jsonl.gz",
        super::batch::QUARANTINE_DIR,
        window_name(start)
    )
}

/// The first line of a landing object: who sent the batch and how its lines are laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchHeader {
    /// The agent id.
    pub agent: String,
    /// The host name the agent reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The version the agent reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The batch id.
    pub batch_id: String,
    /// When the batch was first received.
    pub received_at: DateTime<Utc>,
    /// Events in the batch, quarantined ones included.
    pub events: usize,
    /// The lake lines that follow, grouped: `(category, day, lines)` in this order.
    pub parts: Vec<Part>,
    /// Quarantine lines after the lake lines.
    pub quarantined: usize,
}

/// A run of lake lines of one (category, day) in a landing object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Its category.
    pub category: Category,
    /// The day of its events' times.
    pub day: NaiveDate,
    /// How many lines.
    pub lines: usize,
}

/// What the compactor decided a window is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The window's start.
    pub window: DateTime<Utc>,
    /// The file names (`<agent>~<batch_id>.jsonl.gz`) of its landing objects, sorted.
    pub batches: Vec<String>,
    /// The compactor's budget of open lines when the plan was made (`AD_COMPACT_BUFFER_MIB`
    /// halved): where the window's objects are cut depends on it, so every compaction of the
    /// window uses this one, whatever its own setting. Absent in plans made before it existed,
    /// whose objects were cut at `MAX_OBJECT_BYTES` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_bytes: Option<u64>,
}

/// The compactor's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The window length and settle time (seconds) every window so far was cut and sealed
    /// with: compaction refuses to go on with others, which would skip the landing objects of
    /// windows off their grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<(u64, u64)>,
    /// The first window compaction planned (fixed by the first run): every window from it on
    /// has a plan until plans expire; one before it never had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Windows before this one may have been listed: a landing object appearing there now is in
    /// them only if their plan names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_to: Option<DateTime<Utc>>,
    /// Windows before this one are compacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<Utc>>,
}

/// The compactor's checkpoint of the AD data under `prefix`, and the condition a write replacing
/// it needs; the default (nothing compacted, nothing sealed) and `Absent` when none was written.
///
/// Errors: S3 failed, or the document is unreadable.
pub async fn read_checkpoint(
    sink: &S3Sink,
    prefix: &str,
) -> Result<(Checkpoint, Condition), StateError> {
    let key = format!("{prefix}{CHECKPOINT}");
    Ok(match sink.get(&key).await? {
        Some(v) => (
            parse_state(sink, &key, &v.body)?,
            Condition::Matches(v.etag),
        ),
        None => (Checkpoint::default(), Condition::Absent),
    })
}

/// The plan of the window starting at `w`, if it was made.
///
/// Errors: S3 failed, or the document is unreadable.
pub async fn read_plan(
    sink: &S3Sink,
    prefix: &str,
    w: DateTime<Utc>,
) -> Result<Option<Plan>, StateError> {
    let key = plan_key(prefix, w);
    match sink.get(&key).await? {
        Some(v) => Ok(Some(parse_state(sink, &key, &v.body)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn windows_align_on_midnight_and_name_their_start() {
        let w = Windows::new(Duration::from_secs(300), Duration::from_secs(60));
        let s = w.start_of(t("2026-11-30T07:44:59.9Z"));
        assert_eq!(s, t("2026-11-30T07:40:00Z"));
        assert_eq!(window_name(s), "20261130T074000Z");
        assert_eq!(parse_window_name("20261130T074000Z"), Some(s));
        assert_eq!(w.next(s), t("2026-11-30T07:45:00Z"));
        // 07:45:59 is 59 s past the end of 07:40: not settled yet.
        assert_eq!(w.open_from(t("2026-11-30T07:45:59Z")), s);
        assert_eq!(w.open_from(t("2026-11-30T07:46:00Z")), w.next(s));
        assert_eq!(w.surely_seen_before(s), t("2026-11-30T07:45:30Z"));
        assert_eq!(
            w.visible_by(t("2026-11-30T07:41:00Z")),
            t("2026-11-30T07:51:00Z")
        );
        assert_eq!(
            w.start_of(t("1969-12-31T23:59:59Z")),
            t("1969-12-31T23:55:00Z")
        );
    }

    #[test]
    fn keys_of_a_window() {
        let s = t("2026-11-30T07:40:00Z");
        let day = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        assert_eq!(
            landing_key("ad/", s, "_dc1", "b1"),
            "ad/_landing/20261130T074000Z/~_dc1~b1.jsonl.gz"
        );
        assert_eq!(
            compacted_key("ad/", Category::Logon, day, s),
            "ad/category=logon/dt=2026-11-29/20261130T074000Z.jsonl.gz"
        );
        assert_eq!(
            quarantine_key("ad/", s),
            "ad/quarantine/20261130T074000Z.jsonl.gz"
        );
        assert_eq!(
            plan_key("ad/", s),
            "ad/_state/windows/20261130T074000Z.json"
        );
    }
}
