//! Backfill: fills a past range into the same layout without moving the checkpoint.
//!
//! Time is filled in whole hours before the scheduled puller's origin, each hour under fixed
//! keys, so any backfill can be re-run (or overlap another) without duplicating an entry. The
//! origin is the only place an hour may be cut (it never moves): the horizon below ends a
//! backfill at the last whole hour before it, so a later run of the same backfill writes that
//! hour under the same name, and the parts of an hour are replaced whatever an earlier version
//! named them.
//!
//! A backfill reads only time older than `TV1_RECONCILE_HORIZON` (or the lag, when
//! reconciliation is off): every entry that becomes visible within the horizon is visible by
//! then, so a backfilled hour has nothing left to reconcile. Before the first scheduled run it
//! pins the origin there too, and the schedule (which reconciles) owns everything after it.

use super::{MAX_RESTARTS_WITHOUT_PROGRESS, PullError, Puller, Window, settled_before};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::segment::{Assembler, Item, partition};
use crate::audit::vision_one::VisionOneError;
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::{OcsfWriter, encode_object, object_name};

/// The user metadata of a backfill part naming the days (`YYYYMMDD,...`) its OCSF objects may
/// be on (see [`Puller::replace_part`]).
pub const OCSF_DAYS_META: &str = "tv1-ocsf-days";
use crate::lake::sink::Condition;
use crate::lake::state::StateError;
use crate::timefmt::{api_time, ceil_hour, compact_time, floor_hour, parse_compact_time};
use chrono::{DateTime, Duration as TimeDelta, NaiveDate, Utc};
use serde::Serialize;
use tokio::time::Instant;

/// What a backfill did.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillSummary {
    /// `backfill`.
    pub action: &'static str,
    /// The range asked for.
    pub requested: Window,
    /// The range actually filled (whole hours, ending at the puller's origin at the latest).
    pub range: Option<Window>,
    /// Whether the whole range was filled (false when a deadline stopped it).
    pub complete: bool,
    /// Everything before this instant (within `range`) is written.
    pub completed_to: Option<DateTime<Utc>>,
    /// Hours filled.
    pub hours: u64,
    /// Pages fetched.
    pub pages: u64,
    /// Entries written.
    pub records: u64,
    /// Objects written.
    pub objects: u64,
    /// Stale objects of earlier backfills removed.
    pub removed: u64,
    /// Hours an earlier backfill of this range finished, kept as they are (streams whose
    /// past Vision One no longer serves whole: see [`crate::audit::stream::Stream::rereads_same`]).
    pub hours_kept: u64,
    /// What the OCSF Parquet output wrote (`None` when it is off).
    pub ocsf: Option<crate::lake::ocsf::writer::Landed>,
    /// A note for the operator (e.g. why the range was clamped).
    pub note: Option<String>,
}

impl BackfillSummary {
    /// The summary of a backfill of `requested` before it has done anything.
    fn new(requested: Window, ocsf_on: bool) -> Self {
        BackfillSummary {
            action: "backfill",
            requested,
            range: None,
            complete: true,
            completed_to: None,
            hours: 0,
            pages: 0,
            records: 0,
            objects: 0,
            removed: 0,
            hours_kept: 0,
            ocsf: ocsf_on.then(Default::default),
            note: None,
        }
    }
}

/// Progress of a backfill, reported after each hour.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Hours done.
    pub done: u64,
    /// Hours in all.
    pub total: u64,
    /// Entries written so far.
    pub records: u64,
    /// End of the hour just finished.
    pub at: DateTime<Utc>,
}

/// One hour's parts as they are written.
#[derive(Default)]
struct HourParts {
    /// Their keys, in API order.
    written: Vec<String>,
    records: u64,
    pages: u64,
}

impl Puller {
    /// Fills `[from, to)` (widened to whole hours, clamped to end at the puller's origin) without
    /// moving the checkpoint. Re-running any backfill rewrites the same keys.
    pub async fn backfill(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        deadline: Instant,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<BackfillSummary, PullError> {
        if to <= from {
            return Err(PullError::BadRange(format!(
                "--from {} is not before --to {}",
                api_time(from),
                api_time(to)
            )));
        }
        // The origin it may pin and the horizon are on S3's clock, read from the load's reply.
        let loaded = self.state.load().await?;
        let now = self.run_clock().now();
        if from < now - TimeDelta::days(180) {
            return Err(PullError::BadRange(format!(
                "backfill reaches back at most 180 days (Vision One's audit log retention); {} is older",
                api_time(from)
            )));
        }
        let mut summary = BackfillSummary::new(Window { from, to }, self.ocsf.is_some());
        // Time younger than the reconciliation horizon may still gain entries Vision One serves
        // late, and a backfill reads its time only once: it stops where that time begins. A
        // stream read by ingestion time gains nothing late (a late item has a later time).
        let settles_after = if self.cfg.stream.reconciles() {
            self.cfg.lag.max(self.cfg.reconcile_horizon)
        } else {
            self.cfg.lag
        };
        let horizon = settled_before(now, settles_after);
        let origin = match loaded {
            Some((cp, _)) => cp.origin,
            None => {
                self.pin_origin(ceil_hour(to).min(floor_hour(horizon)), now)
                    .await?
            }
        };
        let start = floor_hour(from);
        // Only the origin may cut an hour: the horizon ends the range at its hour's start.
        let end = ceil_hour(to).min(origin);
        let end = if horizon < end {
            floor_hour(horizon)
        } else {
            end
        };
        if end <= start {
            summary.note = Some(format!(
                "nothing to do: the scheduled puller owns everything from its origin {} on",
                api_time(origin)
            ));
            return Ok(summary);
        }
        if ceil_hour(to) > end {
            let horizon_var = if self.cfg.stream.reconciles() {
                "TV1_RECONCILE_HORIZON"
            } else {
                "TV1_LAG"
            };
            summary.note = Some(format!(
                "range clamped to end at {} (the scheduled puller's origin, or the start of the hour of now minus {horizon_var}: younger time may still gain late entries; run the same backfill again later for the rest)",
                api_time(end)
            ));
        }
        summary.range = Some(Window {
            from: start,
            to: end,
        });
        // Leave time to write the hour being read when the deadline comes.
        let fetch_deadline = deadline
            .checked_sub(self.cfg.deadline_margin)
            .unwrap_or(deadline);
        self.backfill_hours(start, end, fetch_deadline, &mut summary, progress)
            .await?;
        Ok(summary)
    }

    /// No scheduled run yet: pins its origin at `origin` (the end of this backfill), so the two
    /// never overlap and the schedule carries on where the backfill ends. Returns the origin the
    /// checkpoint holds (another starter's, if it won the race).
    async fn pin_origin(
        &self,
        origin: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, PullError> {
        let cp = Checkpoint::start(origin, now, "backfill");
        match self.state.save(&cp, &Condition::Absent).await {
            Ok(_) | Err(StateError::LostRace) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self
            .state
            .load()
            .await?
            .map(|(cp, _)| cp.origin)
            .unwrap_or(origin))
    }

    /// Fills `[start, end)` hour by hour, reporting progress after each; a deadline ends it
    /// with a note to run it again.
    async fn backfill_hours(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        fetch_deadline: Instant,
        summary: &mut BackfillSummary,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(), PullError> {
        let total = ((end - start).num_seconds() as u64).div_ceil(3600);
        let mut hour = start;
        while hour < end {
            let unit = Window {
                from: hour,
                to: (hour + TimeDelta::hours(1)).min(end),
            };
            match self.backfill_hour(unit, fetch_deadline, summary).await {
                Ok(()) => {}
                Err(PullError::VisionOne(e)) if e.is_deadline() => {
                    summary.complete = false;
                    summary.note = Some(format!(
                        "stopped at {}: {e}; run the same backfill again to continue",
                        api_time(hour)
                    ));
                    break;
                }
                Err(e) => return Err(e),
            }
            summary.hours += 1;
            summary.completed_to = Some(unit.to);
            progress(Progress {
                done: summary.hours,
                total,
                records: summary.records,
                at: unit.to,
            });
            hour = unit.to;
        }
        Ok(())
    }

    /// Lands one hour as numbered parts (and their OCSF objects), then removes parts an
    /// earlier, longer run of the hour left.
    async fn backfill_hour(
        &self,
        unit: Window,
        deadline: Instant,
        summary: &mut BackfillSummary,
    ) -> Result<(), PullError> {
        let name = format!(
            "backfill_{}_{}",
            compact_time(unit.from),
            compact_time(unit.to)
        );
        let hour_partition = partition(&self.cfg.prefix, unit.from);
        let part_prefix = format!("{hour_partition}{name}-");
        // Where re-reading the past gives less than the first read did (superseded alert
        // versions, aged-out detections), a finished hour is never rewritten: its marker
        // (`_`-named, which Athena and reconciliation skip) is written once its parts are.
        let done_key = format!("{hour_partition}_{name}.done");
        let keep_finished = !self.cfg.stream.rereads_same();
        if keep_finished && self.sink.get(&done_key).await?.is_some() {
            summary.hours_kept += 1;
            return Ok(());
        }
        let mut restarts = 0;
        let parts = loop {
            // One hour is one unit: on a page-token expiry it is read again from its start, and
            // its parts (numbered in API order) are overwritten with the same content.
            let mut parts = HourParts::default();
            match self
                .write_hour_parts(unit, &part_prefix, deadline, &mut parts, summary)
                .await
            {
                Ok(()) => break parts,
                Err(PullError::VisionOne(VisionOneError::PageTokenExpired))
                    if restarts < MAX_RESTARTS_WITHOUT_PROGRESS =>
                {
                    restarts += 1;
                    summary.pages += parts.pages;
                }
                Err(e) => return Err(e),
            }
        };
        let any_backfill_part = format!("{hour_partition}backfill_");
        self.remove_stale_parts(unit, &any_backfill_part, &parts.written, summary)
            .await?;
        if keep_finished {
            let done = serde_json::json!({"parts": parts.written.len(), "records": parts.records});
            self.sink
                .put_json(&done_key, serde_json::to_vec(&done).expect("a JSON value"))
                .await?;
        }
        summary.pages += parts.pages;
        summary.records += parts.records;
        summary.objects += parts.written.len() as u64;
        Ok(())
    }

    /// Reads `unit` from its first page and writes its parts `{part_prefix}NNN.jsonl.gz` in API
    /// order, counting into `parts` as it goes (so a restart knows the pages it spent).
    async fn write_hour_parts(
        &self,
        unit: Window,
        part_prefix: &str,
        deadline: Instant,
        parts: &mut HourParts,
        summary: &mut BackfillSummary,
    ) -> Result<(), PullError> {
        let mut asm = Assembler::new("", self.limits(), unit.from);
        let mut page = if self.cfg.stream.newest_first() {
            // Served newest first: the hour is read whole and put in time order first, so its
            // parts are the same whatever the order pages came in.
            match super::fetch::read_ordered(&self.api, unit, deadline).await {
                Ok(Some((page, _))) => Ok(page),
                Ok(None) => {
                    return Err(PullError::BadRange(format!(
                        "the hour from {} holds more {} items than TV1_ORDERED_RANGE_KIB ({} KiB) lets a backfill put in order; raise it for this backfill",
                        api_time(unit.from),
                        self.cfg.stream,
                        self.cfg.ordered_range_bytes / 1024
                    )));
                }
                Err(e) => Err(e),
            }
        } else {
            self.api
                .first_page(unit.from, unit.to, None, deadline)
                .await
        };
        loop {
            let p = page?;
            parts.pages += 1;
            let mut closed = Vec::new();
            for raw in p.items {
                let item = Item::parse_by(&raw, self.cfg.stream.time_field())
                    .map_err(|e| PullError::InvalidEntry(e.to_string()))?;
                let Some(time) = item.time else {
                    self.land_unreadable(&raw, &item.hash, self.cfg.http_timeout)
                        .await?;
                    continue;
                };
                if !unit.contains(time) {
                    continue;
                }
                closed.extend(asm.push(raw, item.hash, time)?);
            }
            if p.next_link.is_none() {
                closed.push(asm.finish(unit.to));
            }
            for obj in closed.into_iter().flat_map(|s| s.objects) {
                let key = format!("{part_prefix}{:03}.jsonl.gz", parts.written.len());
                match &self.ocsf {
                    None => self.sink.put_ndjson_gz(&key, obj.body.clone()).await?,
                    Some(ocsf) => {
                        let landed = self
                            .replace_part(ocsf, &key, unit, obj.body.clone())
                            .await?;
                        summary
                            .ocsf
                            .get_or_insert_with(Default::default)
                            .add(&landed);
                    }
                }
                parts.records += obj.records as u64;
                parts.written.push(key);
            }
            match p.next_link {
                Some(link) => page = self.api.next_page(&link, deadline).await,
                None => return Ok(()),
            }
        }
    }

    /// Puts the backfill part `key` (replacing an earlier run's) and its OCSF objects, and
    /// deletes the OCSF objects of days the part no longer has. The days a part's OCSF objects
    /// fall on are not always its hour's (an OAT detection is on the day it was detected,
    /// partitioned by when it was ingested), so the part carries them in its metadata
    /// ([`OCSF_DAYS_META`]): every day any run of it wrote, so a run that dies between the part
    /// and its deletions leaves the next one the days to clean.
    async fn replace_part(
        &self,
        ocsf: &OcsfWriter,
        key: &str,
        unit: Window,
        body: bytes::Bytes,
    ) -> Result<crate::lake::ocsf::writer::Landed, PullError> {
        let dataset = Dataset::of(self.cfg.stream);
        let name = object_name(&self.cfg.prefix, key);
        let files = encode_object(dataset, key, &body)?;
        let mut days: Vec<NaiveDate> = self.ocsf_days_of(key, unit).await?;
        days.extend(files.iter().map(|f| f.1));
        days.sort_unstable();
        days.dedup();
        let meta = days
            .iter()
            .map(|d| d.format("%Y%m%d").to_string())
            .collect::<Vec<_>>()
            .join(",");
        self.sink
            .put_ndjson_gz_with(key, body, &[(OCSF_DAYS_META, &meta)])
            .await?;
        Ok(ocsf.replace(dataset, &name, files, &days).await?)
    }

    /// The days an existing backfill part's OCSF objects may be on: its metadata's, or for a
    /// part written before parts carried them, its hour's day (all it could hold then); none
    /// when there is no such part.
    async fn ocsf_days_of(&self, key: &str, unit: Window) -> Result<Vec<NaiveDate>, PullError> {
        Ok(match self.sink.head_meta(key, OCSF_DAYS_META).await? {
            None => Vec::new(),
            Some(None) => vec![unit.from.date_naive()],
            Some(Some(list)) => list
                .split(',')
                .filter_map(|d| NaiveDate::parse_from_str(d.trim(), "%Y%m%d").ok())
                .collect(),
        })
    }

    /// Deletes the backfill parts of the hour (under `parts_of_hour`) that are not `written`,
    /// with their OCSF objects: a shorter rerun (entries aged out) must not leave an older,
    /// longer part list behind, nor an earlier version's parts of this hour under another name
    /// (one that let the horizon cut the hour).
    async fn remove_stale_parts(
        &self,
        unit: Window,
        parts_of_hour: &str,
        written: &[String],
        summary: &mut BackfillSummary,
    ) -> Result<(), PullError> {
        for stale in self.sink.list(parts_of_hour).await? {
            if written.contains(&stale) {
                continue;
            }
            // Only a part of this unit's own time is this run's to replace. One that reaches
            // past it (its hour cut at an origin that was later moved back) holds entries no
            // run reads again: it stays, and the operator hears of it.
            if !part_range(&stale).is_some_and(|r| unit.from <= r.from && r.to <= unit.to) {
                tracing::warn!(key = %stale, unit_from = %api_time(unit.from), unit_to = %api_time(unit.to), "a backfill part of this hour reaches outside the range rewritten; kept (its entries may now be stored twice)");
                continue;
            }
            if let Some(ocsf) = &self.ocsf {
                let name = object_name(&self.cfg.prefix, &stale);
                let days = self.ocsf_days_of(&stale, unit).await?;
                ocsf.remove(Dataset::of(self.cfg.stream), &name, &days)
                    .await?;
            }
            self.sink.delete(&stale).await?;
            summary.removed += 1;
        }
        Ok(())
    }
}

/// The range `[from, to)` a backfill part's name `backfill_<from>_<to>-NNN.jsonl.gz` covers.
fn part_range(key: &str) -> Option<Window> {
    let name = key.rsplit('/').next()?.strip_prefix("backfill_")?;
    let (from, rest) = name.split_once('_')?;
    let to = rest.split('-').next()?;
    Some(Window {
        from: parse_compact_time(from)?,
        to: parse_compact_time(to)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_names_its_range() {
        let r = part_range(
            "vision-one/audit/dt=2026-11-30/hour=02/backfill_20261130T020000Z_20261130T021700Z-003.jsonl.gz",
        )
        .unwrap();
        assert_eq!(api_time(r.from), "2026-11-30T02:00:00Z");
        assert_eq!(api_time(r.to), "2026-11-30T02:17:00Z");
        assert!(part_range("p/dt=2026-11-30/hour=02/backfill_x.jsonl.gz").is_none());
    }
}
