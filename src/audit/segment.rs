//! Cuts the ordered stream of audit entries into segments: contiguous time ranges with
//! whole-second bounds, each written as one object in one hourly partition.
//!
//! The API's only cursor is `loggedDateTime`, which is second-precise, and many entries can share
//! a second. So entries of the newest second are held back until a later second shows up: only
//! then is that second known to be complete. When a run has to stop early, the held second is
//! dropped and the segment ends at its start; the next query starts there (the start bound is
//! inclusive) and fetches that whole second again. No entry is cut in half across two runs.

use crate::lake::encode::{ObjectEncoder, content_hash_and_field, line_with_fields, record_id};
use crate::timefmt::{compact_time, floor_hour, parse_api_time};
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::value::RawValue;
use std::collections::HashMap;

/// Limits of one object.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Uncompressed bytes after which the object is closed (at the next second boundary).
    pub max_bytes: usize,
    /// Records after which the object is closed (at the next second boundary).
    pub max_records: usize,
}

/// A finished segment `[from, to)`: everything the API holds in that range, encoded.
#[derive(Debug)]
pub struct Segment {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// One object per hour its entries fall in, oldest first; none when the range is empty.
    /// Almost always one: a second arrives only when an entry of the previous hour comes out
    /// of order across the hour's end, and it goes to its own hour's partition, where
    /// reconciliation of that hour finds it.
    pub objects: Vec<Object>,
}

/// One encoded object and where it goes.
#[derive(Debug)]
pub struct Object {
    /// Full S3 key.
    pub key: String,
    /// The hour (partition) of its entries.
    pub hour: DateTime<Utc>,
    /// gzip JSON Lines.
    pub body: Bytes,
    /// Lines in it.
    pub records: usize,
}

/// An entry the API returned out of order, earlier than data already closed.
#[derive(Debug, thiserror::Error)]
#[error(
    "Vision One returned an entry logged at {at} after entries up to {closed} were already written; ordering was violated"
)]
pub struct OutOfOrder {
    /// The entry's time.
    pub at: DateTime<Utc>,
    /// Start of the open segment.
    pub closed: DateTime<Utc>,
}

struct Held {
    raw: Box<RawValue>,
    hash: [u8; 32],
}

/// Builds segments from entries pushed in API order.
pub struct Assembler {
    prefix: String,
    limits: Limits,
    seg_from: DateTime<Utc>,
    /// The open segment's objects, by hour, oldest first.
    encs: Vec<(DateTime<Utc>, ObjectEncoder)>,
    second: Option<i64>,
    held: Vec<Held>,
    /// Occurrences so far in the open segment, by content hash. Reconciliation numbers the
    /// entries of a second the same way (see [`crate::audit`]'s `Tally`), so both must key on
    /// the whole digest.
    occurrences: HashMap<[u8; 32], u32>,
    line: Vec<u8>,
}

/// The object key of segment `[from, to)` whose entries fall in the hour starting at `hour`.
pub fn segment_key(
    prefix: &str,
    hour: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> String {
    format!(
        "{}{}_{}.jsonl.gz",
        partition(prefix, hour),
        compact_time(from),
        compact_time(to)
    )
}

/// The hour whose partition holds `key`, if `key` is the key of segment `[from, to)`.
pub fn hour_of_key(
    prefix: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    key: &str,
) -> Option<DateTime<Utc>> {
    let mut hour = floor_hour(from);
    while hour < to {
        if segment_key(prefix, hour, from, to) == key {
            return Some(hour);
        }
        hour += chrono::Duration::hours(1);
    }
    None
}

/// The key of the late entries reconciliation found in `[from, to)` (one hour's range), for its
/// `attempt`-th object of that range: `late_<from>_<to>.jsonl.gz`, then `late_<from>_<to>.1.jsonl.gz`...
///
/// A further attempt exists only when a run that had been taken over landed the first key
/// after all and the range still had entries missing (see `reconcile` in [`crate::audit`]).
pub fn late_key(prefix: &str, from: DateTime<Utc>, to: DateTime<Utc>, attempt: u32) -> String {
    let n = if attempt == 0 {
        String::new()
    } else {
        format!(".{attempt}")
    };
    format!(
        "{}late_{}_{}{n}.jsonl.gz",
        partition(prefix, floor_hour(from)),
        compact_time(from),
        compact_time(to)
    )
}

/// Where an entry whose `loggedDateTime` is missing or unreadable lands:
/// `<prefix>_unreadable/<_id>.jsonl.gz`, one object per distinct entry.
///
/// Such an entry has no place in time, and a place inferred from its neighbours would differ
/// between two queries that both return it (adjacent slices and windows overlap by a second when
/// the API's end bound is inclusive, and a restarted query repeats a second). Its content is the
/// one thing every query agrees on, so it is stored under its content hash, create-only:
/// however often it is fetched, it lands once.
pub fn unreadable_key(prefix: &str, hash: &[u8; 32]) -> String {
    format!("{prefix}_unreadable/{}.jsonl.gz", record_id(hash, 0))
}

/// The one-line object for an item without a readable time (its field `time_field`).
pub fn unreadable_object(raw: &RawValue, hash: &[u8; 32], time_field: &str) -> Bytes {
    let mut line = Vec::with_capacity(raw.get().len() + 96);
    line_with_fields(
        raw.get().as_bytes(),
        &[
            ("_id", &record_id(hash, 0)),
            (
                "_time_error",
                &format!("{time_field} missing or unparseable"),
            ),
        ],
        &mut line,
    );
    let mut enc = ObjectEncoder::new();
    enc.push_line(&line);
    enc.finish()
}

/// The hour whose partition (`<prefix>dt=YYYY-MM-DD/hour=HH/`) holds `key`.
pub fn hour_of_partition(prefix: &str, key: &str) -> Option<DateTime<Utc>> {
    let rest = key.strip_prefix(prefix)?;
    let t = chrono::NaiveDateTime::parse_from_str(
        &format!("{}:00:00", rest.get(..21)?),
        "dt=%Y-%m-%d/hour=%H:%M:%S",
    )
    .ok()?;
    Some(t.and_utc())
}

/// The Hive-style partition path of an hour: `<prefix>dt=YYYY-MM-DD/hour=HH/`.
pub fn partition(prefix: &str, hour: DateTime<Utc>) -> String {
    format!("{prefix}{}", hour.format("dt=%Y-%m-%d/hour=%H/"))
}

fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(second, 0)
        .single()
        .expect("seconds from a parsed timestamp are in range")
}

impl Assembler {
    /// Starts the first segment at `from` (a whole second).
    pub fn new(prefix: &str, limits: Limits, from: DateTime<Utc>) -> Self {
        Assembler {
            prefix: prefix.to_owned(),
            limits,
            seg_from: from,
            encs: Vec::new(),
            second: None,
            held: Vec::new(),
            occurrences: HashMap::new(),
            line: Vec::with_capacity(4096),
        }
    }

    /// Where a restarted query must begin: the start of the held (incomplete) second, or the
    /// open segment's start when nothing is held.
    pub fn resume_point(&self) -> DateTime<Utc> {
        self.second
            .map(at)
            .unwrap_or(self.seg_from)
            .max(self.seg_from)
    }

    /// Forgets the held second if it is `at`: a query restarting at `at` (inclusive) sends its
    /// entries again. Entries of earlier seconds are complete and kept.
    pub fn drop_held_at(&mut self, at: DateTime<Utc>) {
        if self.second == Some(at.timestamp()) {
            self.held.clear();
        }
    }

    /// Takes one entry logged at `time`; returns a segment when this entry closed one.
    ///
    /// Entries outside `[from, to)` of the current window must be filtered by the caller, and
    /// entries without a readable time never come here (see [`unreadable_key`]).
    pub fn push(
        &mut self,
        raw: Box<RawValue>,
        hash: [u8; 32],
        time: DateTime<Utc>,
    ) -> Result<Option<Segment>, OutOfOrder> {
        let held = Held { raw, hash };
        let sec = time.timestamp();
        match self.second {
            Some(cur) if sec == cur => {
                self.held.push(held);
                Ok(None)
            }
            Some(cur) if sec < cur => {
                if sec < self.seg_from.timestamp() {
                    return Err(OutOfOrder {
                        at: at(sec),
                        closed: self.seg_from,
                    });
                }
                // Earlier than the held second but inside the open segment: it can go straight
                // into the object (the segment's range still covers it).
                self.encode(std::slice::from_ref(&held), sec);
                Ok(None)
            }
            _ => {
                // A new hour, or a full object, closes the segment at this second.
                let new_hour = self
                    .second
                    .is_some_and(|cur| floor_hour(at(cur)) != floor_hour(at(sec)));
                if let Some(cur) = self.second {
                    let held = std::mem::take(&mut self.held);
                    self.encode(&held, cur);
                }
                let closed = (!self.encs.is_empty() && (new_hour || self.full()))
                    .then(|| self.close(at(sec)));
                self.second = Some(sec);
                self.held.push(held);
                Ok(closed)
            }
        }
    }

    /// The window ended normally: everything up to `to` has been seen. Returns the last segment.
    pub fn finish(&mut self, to: DateTime<Utc>) -> Segment {
        if let Some(cur) = self.second {
            let held = std::mem::take(&mut self.held);
            self.encode(&held, cur);
        }
        self.close(to)
    }

    /// The run stops early: the held second is dropped, the segment ends where it begins.
    pub fn stop(&mut self) -> Segment {
        let to = self.resume_point();
        self.held.clear();
        self.second = None;
        self.close(to)
    }

    fn full(&self) -> bool {
        let (bytes, records) = self.encs.iter().fold((0, 0), |(b, r), (_, e)| {
            (b + e.raw_bytes(), r + e.records())
        });
        bytes >= self.limits.max_bytes || records >= self.limits.max_records
    }

    fn encode(&mut self, records: &[Held], second: i64) {
        if records.is_empty() {
            return;
        }
        let hour = floor_hour(at(second));
        let i = match self.encs.iter().position(|(h, _)| *h == hour) {
            Some(i) => i,
            None => {
                let i = self.encs.partition_point(|(h, _)| *h < hour);
                self.encs.insert(i, (hour, ObjectEncoder::new()));
                i
            }
        };
        // Identical entries (same content, so the same second) are told apart by their
        // occurrence number in the segment, which is the same on every fetch because identical
        // entries are interchangeable, and the same whether they came in order or not.
        for r in records {
            let n = self.occurrences.entry(r.hash).or_default();
            let id = record_id(&r.hash, *n as usize);
            *n += 1;
            self.line.clear();
            line_with_fields(r.raw.get().as_bytes(), &[("_id", &id)], &mut self.line);
            self.encs[i].1.push_line(&self.line);
        }
    }

    fn close(&mut self, to: DateTime<Utc>) -> Segment {
        self.occurrences.clear();
        let from = std::mem::replace(&mut self.seg_from, to);
        let objects = std::mem::take(&mut self.encs)
            .into_iter()
            .map(|(hour, enc)| Object {
                key: segment_key(&self.prefix, hour, from, to),
                hour,
                records: enc.records(),
                body: enc.finish(),
            })
            .collect();
        Segment { from, to, objects }
    }
}

/// What the assembler needs of one API item besides its text.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    /// Content hash (see [`crate::lake::encode::content_hash`]).
    pub hash: [u8; 32],
    /// `loggedDateTime`, `None` when missing or unparseable.
    pub time: Option<DateTime<Utc>>,
}

impl Item {
    /// Reads one audit log entry (its time is `loggedDateTime`).
    pub fn parse(raw: &RawValue) -> Result<Item, serde_json::Error> {
        Self::parse_by(raw, "loggedDateTime")
    }

    /// Reads one API item whose time is its field `time_field` (see
    /// [`crate::audit::stream::Stream::time_field`]).
    pub fn parse_by(raw: &RawValue, time_field: &str) -> Result<Item, serde_json::Error> {
        // One pass over the text gives both the hash and the raw time.
        let (hash, logged) = content_hash_and_field(raw.get(), time_field)?;
        let logged: Option<std::borrow::Cow<'_, str>> =
            logged.and_then(|v| serde_json::from_str(v.get()).ok());
        Ok(Item {
            hash,
            time: logged.as_deref().and_then(parse_api_time),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hour_of_a_key() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let key = segment_key(
            "p/",
            t("2026-11-21T10:00:00Z"),
            t("2026-11-21T10:05:00Z"),
            t("2026-11-21T10:10:00Z"),
        );
        assert_eq!(
            hour_of_partition("p/", &key),
            Some(t("2026-11-21T10:00:00Z"))
        );
        assert_eq!(hour_of_partition("q/", &key), None);
        assert_eq!(hour_of_partition("p/", "p/x"), None);
    }
    use serde_json::Value;
    use std::io::Read;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_records: 1000,
    };

    fn t(s: &str) -> DateTime<Utc> {
        parse_api_time(s).unwrap()
    }

    fn push(a: &mut Assembler, time: &str, n: u32) -> Option<Segment> {
        let raw =
            RawValue::from_string(format!(r#"{{"loggedDateTime":"{time}","n":{n}}}"#)).unwrap();
        let item = Item::parse(&raw).unwrap();
        a.push(raw, item.hash, item.time.unwrap()).unwrap()
    }

    fn only(seg: Segment) -> Object {
        assert_eq!(seg.objects.len(), 1, "{seg:?}");
        seg.objects.into_iter().next().unwrap()
    }

    fn lines(o: &Object) -> Vec<Value> {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&o.body[..])
            .read_to_string(&mut s)
            .unwrap();
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_whole_window_makes_one_object() {
        let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T10:00:00Z"));
        for (i, s) in [
            "2026-11-21T10:00:01Z",
            "2026-11-21 10:00:01",
            "2026-11-21T10:05:00Z",
        ]
        .iter()
        .enumerate()
        {
            assert!(push(&mut a, s, i as u32).is_none());
        }
        let seg = a.finish(t("2026-11-21T10:30:00Z"));
        let o = only(seg);
        assert_eq!(
            o.key,
            "p/dt=2026-11-21/hour=10/20261121T100000Z_20261121T103000Z.jsonl.gz"
        );
        let ls = lines(&o);
        assert_eq!(ls.len(), 3);
        assert_eq!(
            ls[1]["loggedDateTime"], "2026-11-21 10:00:01",
            "fields unchanged"
        );
        assert!(ls.iter().all(|l| l["_id"].as_str().unwrap().len() == 32));
    }

    #[test]
    fn hour_change_closes_the_segment_at_the_new_second() {
        let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T09:30:00Z"));
        assert!(push(&mut a, "2026-11-21T09:59:59Z", 0).is_none());
        let seg = push(&mut a, "2026-11-21T10:00:02Z", 1).expect("closed");
        assert_eq!(
            (seg.from, seg.to),
            (t("2026-11-21T09:30:00Z"), t("2026-11-21T10:00:02Z"))
        );
        assert_eq!(seg.objects[0].records, 1);
        let last = a.finish(t("2026-11-21T11:00:00Z"));
        assert_eq!(last.from, t("2026-11-21T10:00:02Z"));
        assert!(only(last).key.contains("hour=10/"));
    }

    #[test]
    fn stopping_drops_the_incomplete_second() {
        let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T10:00:00Z"));
        push(&mut a, "2026-11-21T10:00:01Z", 0);
        push(&mut a, "2026-11-21T10:00:02Z", 1);
        push(&mut a, "2026-11-21T10:00:02Z", 2);
        assert_eq!(a.resume_point(), t("2026-11-21T10:00:02Z"));
        let seg = a.stop();
        assert_eq!(seg.to, t("2026-11-21T10:00:02Z"));
        assert_eq!(
            lines(&only(seg)).len(),
            1,
            "only the complete second is kept"
        );
    }

    #[test]
    fn a_restart_forgets_only_the_restarted_second() {
        let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T10:00:00Z"));
        push(&mut a, "2026-11-21T10:00:01Z", 0);
        push(&mut a, "2026-11-21T10:00:02Z", 1);
        // A restart at an earlier second than the held one (the slice sent nothing yet): keep.
        a.drop_held_at(t("2026-11-21T10:00:01Z"));
        // The restart of the held second: its entries come again.
        a.drop_held_at(t("2026-11-21T10:00:02Z"));
        push(&mut a, "2026-11-21T10:00:02Z", 1);
        push(&mut a, "2026-11-21T10:00:02Z", 2);
        let ls = lines(&only(a.finish(t("2026-11-21T10:01:00Z"))));
        let ns: Vec<i64> = ls.iter().map(|l| l["n"].as_i64().unwrap()).collect();
        assert_eq!(ns, vec![0, 1, 2]);
    }

    #[test]
    fn stopping_with_only_a_held_second_writes_nothing() {
        let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T10:00:00Z"));
        push(&mut a, "2026-11-21T10:00:07Z", 0);
        let seg = a.stop();
        assert!(seg.objects.is_empty());
        assert_eq!(
            seg.to,
            t("2026-11-21T10:00:07Z"),
            "the empty seconds before it are done"
        );
    }

    #[test]
    fn full_objects_close_only_at_a_second_boundary() {
        let mut a = Assembler::new(
            "p/",
            Limits {
                max_bytes: 1 << 20,
                max_records: 2,
            },
            t("2026-11-21T10:00:00Z"),
        );
        let mut segs = Vec::new();
        for (i, s) in [
            "10:00:01", "10:00:01", "10:00:01", "10:00:02", "10:00:03", "10:00:03", "10:00:04",
        ]
        .iter()
        .enumerate()
        {
            segs.extend(push(&mut a, &format!("2026-11-21T{s}Z"), i as u32));
        }
        segs.push(a.finish(t("2026-11-21T10:00:10Z")));
        let counts: Vec<usize> = segs.iter().map(|s| s.objects[0].records).collect();
        assert_eq!(counts, vec![3, 3, 1], "a second is never split");
        assert_eq!(segs[0].to, t("2026-11-21T10:00:02Z"));
        assert_eq!(segs[1].from, segs[0].to);
    }

    #[test]
    fn identical_entries_get_distinct_stable_ids() {
        let mk = || {
            let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T10:00:00Z"));
            push(&mut a, "2026-11-21T10:00:01Z", 7);
            push(&mut a, "2026-11-21T10:00:01Z", 7);
            lines(&only(a.finish(t("2026-11-21T10:01:00Z"))))
        };
        let (x, y) = (mk(), mk());
        assert_ne!(x[0]["_id"], x[1]["_id"]);
        assert_eq!(x, y);
    }

    #[test]
    fn out_of_order_entries() {
        let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T10:00:00Z"));
        push(&mut a, "2026-11-21T10:00:05Z", 0);
        push(&mut a, "2026-11-21T10:00:09Z", 1);
        // Earlier, but inside the open segment: kept.
        push(&mut a, "2026-11-21T10:00:03Z", 2);
        let seg = a.stop();
        assert_eq!(only(seg).records, 2);
        // Earlier than the open segment: refused.
        let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T10:00:00Z"));
        push(&mut a, "2026-11-21T10:59:00Z", 0);
        push(&mut a, "2026-11-21T11:00:01Z", 1);
        let raw =
            RawValue::from_string(r#"{"loggedDateTime":"2026-11-21T10:00:01Z"}"#.into()).unwrap();
        let item = Item::parse(&raw).unwrap();
        assert!(a.push(raw, item.hash, item.time.unwrap()).is_err());
    }

    #[test]
    fn an_unreadable_time_lands_under_its_content() {
        let raw = RawValue::from_string(r#"{"loggedDateTime":"garbage","n":1}"#.into()).unwrap();
        let item = Item::parse(&raw).unwrap();
        assert!(item.time.is_none());
        let key = unreadable_key("p/", &item.hash);
        assert!(key.starts_with("p/_unreadable/") && key.ends_with(".jsonl.gz"));
        let again = Item::parse(&raw).unwrap();
        assert_eq!(
            unreadable_key("p/", &again.hash),
            key,
            "same entry, same key"
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(&unreadable_object(&raw, &item.hash, "loggedDateTime")[..])
            .read_to_string(&mut text)
            .unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["_time_error"], "loggedDateTime missing or unparseable");
        assert_eq!(v["n"], 1);
    }

    #[test]
    fn an_entry_of_the_previous_hour_out_of_order_goes_to_its_own_hour() {
        // The window starts in hour 10; hour 11's first entries come before a straggler of 10.
        let mut a = Assembler::new("p/", LIMITS, t("2026-11-21T10:59:30Z"));
        push(&mut a, "2026-11-21T11:00:05Z", 0);
        push(&mut a, "2026-11-21T10:59:50Z", 1);
        push(&mut a, "2026-11-21T11:00:06Z", 2);
        push(&mut a, "2026-11-21T10:59:40Z", 3);
        let seg = a.finish(t("2026-11-21T11:30:00Z"));
        let hours: Vec<(String, Vec<i64>)> = seg
            .objects
            .iter()
            .map(|o| {
                let ns = lines(o).iter().map(|l| l["n"].as_i64().unwrap()).collect();
                (o.key.clone(), ns)
            })
            .collect();
        assert_eq!(
            hours,
            vec![
                (
                    "p/dt=2026-11-21/hour=10/20261121T105930Z_20261121T113000Z.jsonl.gz".into(),
                    vec![1, 3]
                ),
                (
                    "p/dt=2026-11-21/hour=11/20261121T105930Z_20261121T113000Z.jsonl.gz".into(),
                    vec![0, 2]
                ),
            ]
        );
    }
}
