//! Reconciliation: committed time is read again once it is `TV1_RECONCILE_HORIZON` old, so an
//! entry Vision One made visible after the pull had read its time still lands, exactly once.
//!
//! The API has no change feed and no counts: the only way to learn that a range gained an entry
//! is to read the range again. So every range of committed time is read once more, in steps of
//! `TV1_RECONCILE_STEP` (an hour by default: one query, full pages), as soon as its end is the
//! horizon old. An entry that became visible within the horizon of its `loggedDateTime` is
//! visible by then. The cost does not depend on the horizon: one more read of every entry, in
//! full pages, plus one query per step.
//!
//! One step `[from, to)` (always inside one hour):
//! 1. reads the `_id`s S3 holds in that hour's partition;
//! 2. reads the range from the API. The n-th identical copy of an entry gets the `_id` the pull
//!    gave the n-th copy (`record_id(hash, n)`: identical entries share a second, so the pull
//!    numbered all of them in one segment), so an entry is late exactly when its `_id` is not in
//!    S3: a comparison of multisets, identical twins included;
//! 3. when some are late: records the range and its key as `pending` (conditional write), creates
//!    the object (create-only), then moves `checked_to` past the range (folded into the next
//!    checkpoint write).
//!
//! A run that takes over redoes a pending range under the same key. Its S3 view may miss the
//! object of the run it took over, if that run's PUT was still in flight; then the first PUT of
//! the key wins. When the old run's does, the new run reads the partition again and lands what
//! is still missing under the range's next key, announced in `pending` first.

use super::fetch::{self, Fetched};
use super::run::{Run, Stop, alongside};
use super::{PullError, Window};
use crate::audit::checkpoint::{Pending, Reconcile};
use crate::audit::segment::{late_key, partition};
use crate::lake::encode::{ObjectEncoder, line_with_fields, record_id};
use crate::lake::sink::Created;
use crate::timefmt::{api_time, floor_hour, floor_second};
use bytes::Bytes;
use chrono::{DateTime, Duration as TimeDelta, TimeZone, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Steps read per run at most: a backlog (after an outage, or when reconciliation is switched
/// on) is worked off over several runs instead of holding one run and the API's rate budget.
pub const MAX_STEPS_PER_RUN: u32 = 4;

/// Objects one range may need. Each further one needs a run taken over while its PUT was in
/// flight; more than this means something else writes these keys.
pub(super) const MAX_OBJECTS_PER_RANGE: u32 = 8;

/// What reconciliation did in one run (the `reconcile` field of the run summary).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileSummary {
    /// `checked_to` when the run started.
    pub checked_from: DateTime<Utc>,
    /// `checked_to` when it ended: everything before it was read again at the horizon.
    pub checked_to: DateTime<Utc>,
    /// How far back that is from the end of the run, in seconds.
    pub checked_age_seconds: i64,
    /// Ranges read again.
    pub ranges: u32,
    /// Pages fetched for them (API requests besides the pull's own).
    pub pages: u64,
    /// S3 objects read to learn which entries are there (plus one LIST per range).
    pub objects_read: u64,
    /// Entries read again.
    pub entries: u64,
    /// Entries that were not in S3 and were landed now.
    pub late_entries: u64,
    /// The largest age of those (S3's clock when found minus `loggedDateTime`).
    pub oldest_delay_seconds: Option<i64>,
    /// Objects written.
    pub keys: Vec<String>,
    /// Keys a run that was taken over had landed already: kept.
    pub kept_existing: Vec<String>,
    /// A pending range of an earlier run that this run redid.
    pub recovered: Option<Window>,
    /// Page-token expiries recovered from.
    pub query_restarts: u32,
    /// Why reconciliation stopped before it was up to date (it goes on next run).
    pub stopped_early: Option<String>,
    /// Committed time passed over unread because its objects may have expired
    /// (`TV1_DATA_RETENTION_DAYS`): reconciliation had fallen that far behind.
    pub skipped_expired: Option<Window>,
    /// Committed time this run's pull read when it was already the horizon old (a catch-up):
    /// that read was the second one, so it is not read again.
    pub read_settled: Option<Window>,
}

/// An entry of the re-read range that S3 does not hold.
struct Late {
    second: i64,
    id: String,
    raw: Box<RawValue>,
}

/// The entries of a re-read range counted by content, and those S3 lacks.
#[derive(Default)]
pub(super) struct Tally {
    /// Copies seen so far by content hash, with their second (identical entries share one).
    copies: HashMap<[u8; 32], (i64, u32)>,
    late: Vec<Late>,
    entries: u64,
}

impl Tally {
    /// Counts one entry; it is late when its `_id` (by occurrence) is not in `existing`.
    pub(super) fn push(
        &mut self,
        raw: Box<RawValue>,
        hash: [u8; 32],
        time: DateTime<Utc>,
        existing: &HashSet<Box<str>>,
    ) {
        let second = time.timestamp();
        let seen = self.copies.entry(hash).or_insert((second, 0));
        let id = record_id(&hash, seen.1 as usize);
        seen.1 += 1;
        self.entries += 1;
        if !existing.contains(id.as_str()) {
            self.late.push(Late { second, id, raw });
        }
    }

    /// The query restarts at `at` (inclusive): what was counted from `at` on comes again.
    pub(super) fn restart(&mut self, at: DateTime<Utc>) {
        let at = at.timestamp();
        let before = self.copies.values().map(|c| c.1 as u64).sum::<u64>();
        self.copies.retain(|_, (second, _)| *second < at);
        let after = self.copies.values().map(|c| c.1 as u64).sum::<u64>();
        self.entries -= before - after;
        self.late.retain(|l| l.second < at);
    }

    /// `_id`s of the late entries, in time order.
    #[cfg(test)]
    fn late_ids(&self) -> Vec<&str> {
        self.late.iter().map(|l| l.id.as_str()).collect()
    }
}

/// gzip JSON Lines of late entries, in time order, each with its `_id`.
fn late_object(late: &mut [Late]) -> Bytes {
    late.sort_by_key(|l| l.second);
    let mut enc = ObjectEncoder::new();
    let mut line = Vec::with_capacity(4096);
    for l in late.iter() {
        line.clear();
        line_with_fields(l.raw.get().as_bytes(), &[("_id", &l.id)], &mut line);
        enc.push_line(&line);
    }
    enc.finish()
}

/// Adds the `_id` of every line of a gzip JSON Lines object to `ids`.
fn read_ids(gz: &[u8], ids: &mut HashSet<Box<str>>) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(rename = "_id", borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(gz));
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("not gzip text: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line)
            .map_err(|e| format!("line {} has no readable _id: {e}", n + 1))?;
        ids.insert(l.id.into());
    }
    Ok(())
}

fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(second, 0)
        .single()
        .expect("seconds of a stored time are in range")
}

fn reason(stop: Stop) -> String {
    match stop {
        Stop::Deadline(why) => format!("deadline: {why}"),
        Stop::Api(e) => format!("Vision One: {e}"),
        Stop::Churn => "page tokens kept expiring".into(),
    }
}

impl Run<'_> {
    fn horizon(&self) -> Option<TimeDelta> {
        let h = self.p.cfg.reconcile_horizon;
        (!h.is_zero() && self.p.cfg.stream.reconciles())
            .then(|| TimeDelta::from_std(h).unwrap_or(TimeDelta::days(1)))
    }

    /// The reconciliation state; on first use it starts where the horizon begins (or at the
    /// origin), so switching it on re-checks the last horizon of committed time.
    fn reconcile_state(&self, horizon: TimeDelta) -> Reconcile {
        self.cp.reconcile.clone().unwrap_or_else(|| Reconcile {
            checked_to: self
                .cp
                .origin
                .max(floor_second(self.cp.committed_to - horizon)),
            pending: None,
            late_entries: 0,
            oldest_delay_seconds: None,
            last_found_at: None,
            read_settled: None,
        })
    }

    /// The next range to read again: from `checked_to` to the next step boundary (never past
    /// the hour), if that is committed and at least the horizon old.
    fn next_step(&self, rc: &Reconcile, horizon: TimeDelta) -> Option<Window> {
        let limit = self
            .cp
            .committed_to
            .min(floor_second(self.clock.now() - horizon));
        let step = self.p.cfg.reconcile_step.as_secs().max(1) as i64;
        let from = rc.checked_to;
        let to = at((from.timestamp().div_euclid(step) + 1) * step)
            .min(floor_hour(from) + TimeDelta::hours(1));
        (to <= limit).then_some(Window { from, to })
    }

    /// Where reconciliation must start if `rc` is behind the time whose objects are sure to
    /// be there: the objects of time logged before `now - retention + RETENTION_MARGIN` may have
    /// been expired by the bucket's lifecycle rule, and would look like missing entries.
    fn unexpired_from(&self, rc: &Reconcile) -> Option<DateTime<Utc>> {
        let kept = TimeDelta::from_std(self.p.cfg.data_retention?).ok()?;
        let margin = TimeDelta::from_std(crate::config::RETENTION_MARGIN).unwrap_or_default();
        let safe = self
            .clock
            .now()
            .checked_sub_signed(kept - margin)
            .map(floor_second)?
            .min(self.cp.committed_to);
        let behind = rc.checked_to < safe || rc.pending.as_ref().is_some_and(|p| p.from < safe);
        behind.then_some(safe)
    }

    /// Moves `checked_to` to `safe` (see [`Self::unexpired_from`]) without reading what lies
    /// before it. A pending range there is not redone (its hour's objects may be gone, and a
    /// redo would land them again): its keys are claimed empty, so that a late PUT of the run
    /// that announced it is refused. Returns the time passed over.
    async fn pass_over_expired(&mut self, safe: DateTime<Utc>) -> Result<Window, PullError> {
        let from = self.rc().checked_to;
        if let Some(p) = self.rc().pending.clone().filter(|p| p.from < safe) {
            for key in &p.keys {
                self.create_object(key, ObjectEncoder::new().finish())
                    .await?;
            }
            let rc = self.rc();
            rc.pending = None;
            rc.checked_to = rc.checked_to.max(p.to);
        }
        let rc = self.rc();
        if rc.pending.is_none() && rc.checked_to < safe {
            rc.checked_to = safe;
        }
        let skipped = Window {
            from,
            to: rc.checked_to,
        };
        tracing::warn!(from = %api_time(skipped.from), to = %api_time(skipped.to), "reconciliation fell behind into time whose objects may have expired (TV1_DATA_RETENTION_DAYS); passing over it unread");
        Ok(skipped)
    }

    /// Records the time this run's pull read when it was already `horizon` old (a catch-up),
    /// then moves `checked_to` over it if reconciliation is there. Reconciliation rests on an
    /// entry being visible within the horizon of its time; the pull read such time after that,
    /// so a second read could find nothing the first missed. One window is remembered: the
    /// pull's windows are contiguous, so a catch-up's extend it. Returns the time passed over.
    fn pass_over_read_settled(&mut self, horizon: TimeDelta) -> Option<Window> {
        if let Some((window, read_at)) = self.pulled {
            let settled = floor_second(read_at - horizon).min(self.cp.committed_to);
            if settled > window.from {
                let read = Window {
                    from: window.from,
                    to: settled,
                };
                let rc = self.rc();
                rc.read_settled = match rc.read_settled {
                    Some(s) if s.to == read.from => Some(Window {
                        from: s.from,
                        to: read.to,
                    }),
                    // An older one reconciliation has not reached stays; it is the next.
                    Some(s) if s.to > rc.checked_to => Some(s),
                    _ => Some(read),
                };
            }
        }
        self.jump_read_settled()
    }

    /// Moves `checked_to` to the end of the remembered settled window once it has reached it
    /// (with no range pending). Returns the time passed over.
    fn jump_read_settled(&mut self) -> Option<Window> {
        let rc = self.rc();
        let s = rc.read_settled?;
        if rc.checked_to >= s.to {
            rc.read_settled = None;
            return None;
        }
        if rc.pending.is_some() || rc.checked_to < s.from {
            return None;
        }
        let passed = Window {
            from: rc.checked_to,
            to: s.to,
        };
        rc.checked_to = s.to;
        rc.read_settled = None;
        Some(passed)
    }

    /// Whether reconciliation has work in this run: a pending range or a range now due.
    pub(super) fn reconcile_due(&self) -> bool {
        let Some(h) = self.horizon() else {
            return false;
        };
        let rc = self.reconcile_state(h);
        rc.pending.is_some()
            || self.unexpired_from(&rc).is_some()
            || self.next_step(&rc, h).is_some()
    }

    fn rc(&mut self) -> &mut Reconcile {
        self.cp
            .reconcile
            .as_mut()
            .expect("reconcile() sets the state first")
    }

    /// Reads due ranges again, after the pull and under its lease. Vision One failing here does
    /// not fail the run (the pull's work is done; the range is read next run); S3 failing does.
    pub(super) async fn reconcile(&mut self, fetch_deadline: Instant) -> Result<(), PullError> {
        let Some(h) = self.horizon() else {
            return Ok(());
        };
        let rc = self.reconcile_state(h);
        let mut sum = ReconcileSummary {
            checked_from: rc.checked_to,
            ..ReconcileSummary::default()
        };
        let expired = self.unexpired_from(&rc);
        self.cp.reconcile = Some(rc);
        if let Some(safe) = expired {
            sum.skipped_expired = Some(self.pass_over_expired(safe).await?);
        }
        sum.read_settled = self.pass_over_read_settled(h);
        sum.stopped_early = self.reconcile_ranges(h, fetch_deadline, &mut sum).await?;
        if let Some(why) = &sum.stopped_early {
            tracing::warn!(reason = %why, "reconciliation stopped early; it goes on next run");
        }
        sum.checked_to = self.rc().checked_to;
        sum.checked_age_seconds = (self.clock.now() - sum.checked_to).num_seconds();
        if sum.ranges > 0
            || sum.recovered.is_some()
            || sum.stopped_early.is_some()
            || sum.skipped_expired.is_some()
            || sum.read_settled.is_some()
        {
            self.summary.reconcile = Some(sum);
        }
        Ok(())
    }

    async fn reconcile_ranges(
        &mut self,
        horizon: TimeDelta,
        deadline: Instant,
        sum: &mut ReconcileSummary,
    ) -> Result<Option<String>, PullError> {
        if let Some(pending) = self.rc().pending.clone() {
            let range = Window {
                from: pending.from,
                to: pending.to,
            };
            let prefix = &self.p.cfg.prefix;
            let attempt = match pending.keys.as_slice() {
                [key] => (0..MAX_OBJECTS_PER_RANGE)
                    .find(|n| late_key(prefix, range.from, range.to, *n) == *key),
                _ => None,
            };
            let Some(attempt) = attempt else {
                return Err(PullError::ForeignPending {
                    from: api_time(range.from),
                    to: api_time(range.to),
                    keys: pending.keys,
                });
            };
            tracing::warn!(from = %range.from, to = %range.to, key = %pending.keys[0], "redoing the pending reconciliation range of a run that did not finish");
            if let Some(why) = self
                .reconcile_range(range, Some(attempt), deadline, sum)
                .await?
            {
                return Ok(Some(why));
            }
            sum.recovered = Some(range);
        }
        for _ in 0..MAX_STEPS_PER_RUN {
            if self.p.api.throttled() > self.throttled_at_start {
                return Ok(Some(
                    "Vision One answered 429 during this run; reconciliation yields to the pull until the next run".into(),
                ));
            }
            let rc = self.rc().clone();
            let Some(range) = self.next_step(&rc, horizon) else {
                return Ok(None);
            };
            if let Some(why) = self.reconcile_range(range, None, deadline, sum).await? {
                return Ok(Some(why));
            }
            if let Some(passed) = self.jump_read_settled() {
                sum.read_settled = Some(match sum.read_settled {
                    Some(earlier) => Window {
                        from: earlier.from,
                        to: passed.to,
                    },
                    None => passed,
                });
            }
        }
        let rc = self.rc().clone();
        Ok(self
            .next_step(&rc, horizon)
            .map(|_| format!("{MAX_STEPS_PER_RUN} ranges per run; the rest next run")))
    }

    /// Reads `range` again and lands what S3 lacks. `redo`: the attempt of the key the range is
    /// pending under (from a run that did not finish); that key is claimed even when nothing is
    /// missing, so a late PUT of that run is refused. Returns why the API read stopped, if it
    /// did (nothing moved then).
    async fn reconcile_range(
        &mut self,
        range: Window,
        redo: Option<u32>,
        deadline: Instant,
        sum: &mut ReconcileSummary,
    ) -> Result<Option<String>, PullError> {
        let existing = self.existing_ids(floor_hour(range.from), sum).await?;
        let tally = match self.reread(range, &existing, deadline, sum).await? {
            Ok(t) => t,
            Err(stop) => return Ok(Some(reason(stop))),
        };
        drop(existing);
        sum.ranges += 1;
        sum.entries += tally.entries;
        let now = self.clock.now();
        let found = self.land_late(range, tally.late, redo, now, sum).await?;
        self.close_range(range, found, now, sum);
        Ok(None)
    }

    /// Writes `late` under the range's first free key, announced in the checkpoint first; a key
    /// the run this one took over landed after all is kept, and what it lacks goes under the
    /// next. Returns what landed: the count and the oldest delay behind `now`, in seconds.
    async fn land_late(
        &mut self,
        range: Window,
        mut late: Vec<Late>,
        redo: Option<u32>,
        now: DateTime<Utc>,
        sum: &mut ReconcileSummary,
    ) -> Result<(u64, Option<i64>), PullError> {
        let mut attempt = redo.unwrap_or(0);
        let mut announced = redo.is_some();
        let mut claim = redo.is_some();
        while claim || !late.is_empty() {
            if attempt >= MAX_OBJECTS_PER_RANGE {
                return Err(PullError::LateKeysExhausted {
                    from: api_time(range.from),
                    to: api_time(range.to),
                });
            }
            let key = late_key(&self.p.cfg.prefix, range.from, range.to, attempt);
            if !announced {
                self.rc().pending = Some(Pending {
                    from: range.from,
                    to: range.to,
                    keys: vec![key.clone()],
                });
                self.save().await?;
            }
            let records = late.len();
            let body = late_object(&mut late);
            let size = body.len();
            match self.create_object(&key, body).await? {
                Created::New => {
                    tracing::info!(key = %key, records, bytes = size, "late entries written");
                    let oldest = late
                        .iter()
                        .map(|l| (now - at(l.second)).num_seconds())
                        .max();
                    sum.keys.push(key);
                    return Ok((records as u64, oldest));
                }
                Created::AlreadyExists => {
                    // The run this one took over landed this key after all: what it holds is in
                    // S3 now; whatever is still missing goes under the next key.
                    tracing::warn!(key = %key, "a run that did not finish landed this range's late entries; keeping them");
                    sum.kept_existing.push(key);
                    let now_in_s3 = self.existing_ids(floor_hour(range.from), sum).await?;
                    late.retain(|l| !now_in_s3.contains(l.id.as_str()));
                    attempt += 1;
                    announced = false;
                    claim = false;
                }
            }
        }
        Ok((0, None))
    }

    /// Marks `range` checked in the checkpoint (written by the next save) and counts what
    /// landed in it.
    fn close_range(
        &mut self,
        range: Window,
        (landed, oldest): (u64, Option<i64>),
        now: DateTime<Utc>,
        sum: &mut ReconcileSummary,
    ) {
        sum.late_entries += landed;
        sum.oldest_delay_seconds = sum.oldest_delay_seconds.max(oldest);
        let rc = self.rc();
        rc.pending = None;
        rc.checked_to = range.to;
        if landed > 0 {
            rc.late_entries += landed;
            rc.oldest_delay_seconds = rc.oldest_delay_seconds.max(oldest);
            rc.last_found_at = Some(now);
        }
    }

    /// Reads `range` from the API into a tally against `existing`, renewing the lease while it
    /// waits. `Err(stop)` when the read could not finish.
    async fn reread(
        &mut self,
        range: Window,
        existing: &HashSet<Box<str>>,
        deadline: Instant,
        sum: &mut ReconcileSummary,
    ) -> Result<Result<Tally, Stop>, PullError> {
        let (tx, mut rx) = mpsc::channel(4);
        let producer = fetch::fetch_slice(&self.p.api, range, deadline, tx);
        let mut tally = Tally::default();
        let consumer = async {
            loop {
                match self.next_fetched(&mut rx).await? {
                    None => return Ok::<_, PullError>(None),
                    Some(Fetched::Page(page)) => {
                        sum.pages += 1;
                        for raw in page.items {
                            let Some((hash, time)) = self.timed(&raw).await? else {
                                continue;
                            };
                            if time >= range.from && time < range.to {
                                tally.push(raw, hash, time, existing);
                            }
                        }
                    }
                    Some(Fetched::Restart(at)) => {
                        tally.restart(at);
                        sum.query_restarts += 1;
                    }
                    // Nothing of the range was handed over: nothing to forget.
                    Some(Fetched::Reread { .. }) => sum.query_restarts += 1,
                    Some(Fetched::Stopped(stop)) => return Ok(Some(stop)),
                }
            }
        };
        let stopped = alongside(consumer, producer).await?;
        Ok(match stopped {
            None => Ok(tally),
            Some(stop) => Err(stop),
        })
    }

    /// The `_id` of every entry S3 holds in `hour`'s partition (segments, late objects, and a
    /// backfill's parts when the hour straddles the origin).
    async fn existing_ids(
        &self,
        hour: DateTime<Utc>,
        sum: &mut ReconcileSummary,
    ) -> Result<HashSet<Box<str>>, PullError> {
        let sink = &self.p.sink;
        let keys = sink.list(&partition(&self.p.cfg.prefix, hour)).await?;
        let mut bodies =
            futures_util::stream::iter(keys.into_iter().filter(|k| k.ends_with(".jsonl.gz")))
                .map(|key| async move { sink.get(&key).await.map(|v| (key, v)) })
                .buffer_unordered(4);
        let mut ids = HashSet::new();
        while let Some(got) = bodies.next().await {
            let (key, Some(object)) = got? else { continue };
            sum.objects_read += 1;
            read_ids(&object.body, &mut ids).map_err(|reason| PullError::UnreadableObject {
                bucket: sink.bucket().to_owned(),
                key,
                reason,
            })?;
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::segment::Item;
    use crate::timefmt::parse_api_time;

    fn entry(time: &str, n: u32) -> (Box<RawValue>, [u8; 32], DateTime<Utc>) {
        let raw =
            RawValue::from_string(format!(r#"{{"loggedDateTime":"{time}","n":{n}}}"#)).unwrap();
        let item = Item::parse(&raw).unwrap();
        (raw, item.hash, item.time.unwrap())
    }

    fn ids_of(entries: &[(Box<RawValue>, [u8; 32], DateTime<Utc>)]) -> HashSet<Box<str>> {
        let mut t = Tally::default();
        for (raw, hash, time) in entries {
            t.push(raw.clone(), *hash, *time, &HashSet::new());
        }
        t.late.iter().map(|l| l.id.clone().into()).collect()
    }

    #[test]
    fn late_means_not_in_s3_counted_as_a_multiset() {
        let a = entry("2026-11-21T10:00:01Z", 1);
        let b = entry("2026-11-21T10:00:02Z", 2);
        // S3 holds a, and one of two identical copies of b.
        let in_s3 = ids_of(&[a.clone(), b.clone()]);
        let mut t = Tally::default();
        for (raw, hash, time) in [a.clone(), b.clone(), b.clone()] {
            t.push(raw, hash, time, &in_s3);
        }
        let twin = record_id(&b.1, 1);
        assert_eq!(
            t.late_ids(),
            vec![twin.as_str()],
            "only the second copy is late"
        );
        assert_eq!(t.entries, 3);
        // The same entries again find nothing once the late copy is in S3.
        let mut all = in_s3.clone();
        all.insert(twin.into());
        let mut again = Tally::default();
        for (raw, hash, time) in [b.clone(), a, b] {
            again.push(raw, hash, time, &all);
        }
        assert!(again.late.is_empty());
    }

    #[test]
    fn a_restart_forgets_what_it_will_send_again() {
        let a = entry("2026-11-21T10:00:01Z", 1);
        let b = entry("2026-11-21T10:00:02Z", 2);
        let mut t = Tally::default();
        for (raw, hash, time) in [a.clone(), b.clone(), b.clone()] {
            t.push(raw, hash, time, &HashSet::new());
        }
        t.restart(parse_api_time("2026-11-21T10:00:02Z").unwrap());
        assert_eq!(t.entries, 1);
        for (raw, hash, time) in [b.clone(), b.clone()] {
            t.push(raw, hash, time, &HashSet::new());
        }
        let ids = t.late_ids();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            3,
            "the two copies of b keep ids 0 and 1 after the restart"
        );
    }

    #[test]
    fn late_objects_carry_ids_and_read_back() {
        let mut t = Tally::default();
        for (raw, hash, time) in [
            entry("2026-11-21T10:00:05Z", 5),
            entry("2026-11-21T10:00:01Z", 1),
        ] {
            t.push(raw, hash, time, &HashSet::new());
        }
        let expected: HashSet<Box<str>> = t.late.iter().map(|l| l.id.clone().into()).collect();
        let body = late_object(&mut t.late);
        let mut ids = HashSet::new();
        read_ids(&body, &mut ids).unwrap();
        assert_eq!(ids, expected);
        assert!(read_ids(b"not gzip", &mut ids).is_err());
    }
}
