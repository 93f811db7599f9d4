//! The OCSF output of a stream's pull, one period at a time: once `committed_to` has passed the
//! end of a period, the pull's objects of its hours are final, and their records become one
//! Parquet object per class and day (`<day>_<first hour>_pull.parquet`), written create-only.
//!
//! A period is whole hours on a grid from midnight UTC (`TV1_AUDIT_OCSF_PERIOD`, a day by
//! default; alerts and OAT detections an hour), so it never spans two `eventDay` partitions.
//! Before periods, every segment (one object per run, 288 a day) had its own Parquet objects,
//! each a few hundred rows with a footer of several kilobytes: 6.0× the gzip JSON Lines of the
//! audit bench, 1.30× per hour, 0.85× per day (`docs/benchmarks.md`, notes 13 and 15).
//!
//! The checkpoint's `ocsf_to` is the first hour not written yet and `ocsf_until` the end of the
//! period that starts there. Both move together, in the checkpoint write that follows the
//! period's objects, so the next period is fixed before any of its objects is written: a run
//! that dies half-way through a period is redone by the next run with the same hours, so the
//! same objects under the same keys, which S3 keeps, even if the configured period changed in
//! between (a new period takes effect from the first grid boundary after it).
//!
//! Reconciliation's late objects and backfill parts keep their own Parquet objects (they arrive
//! after their period, and a backfill part is replaced in place); only the pull's segment
//! objects are read here.

use super::PullError;
use super::run::Run;
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::{FileSet, Landed, OcsfWriter, object_name};
use crate::timefmt::{ceil_hour, floor_hour};
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// Most hours written by one run (whole periods, at least one): a stream that had the output
/// off for a long time, or a long catch-up, is worked off over several runs rather than holding
/// one past its deadline.
const MAX_HOURS_PER_RUN: i64 = 24;

/// JSON Lines text (bytes) one Parquet object of a period holds at most; a (class, day) goes on
/// in `<name>.1.parquet`... past it. Audit Parquet is about a tenth of its text (the bench's),
/// so memory holds some 13 MB per class, whatever the period and the tenant.
const PART_TEXT_BYTES: usize = 128 << 20;

/// Whether `name` (a file name in an hour's partition) is one of the pull's segment objects,
/// `<from>_<to>.jsonl.gz`, rather than a late object or a backfill part.
pub(super) fn is_pull_object(name: &str) -> bool {
    name.ends_with(".jsonl.gz") && !name.starts_with("late_") && !name.starts_with("backfill_")
}

/// The first hour whose pull objects are not in the OCSF output yet, for a checkpoint without
/// `ocsf_to`: the first run's origin hour, or, for a checkpoint a version before this one
/// wrote, the next whole hour (the rest of the current one keeps per-segment objects).
pub(super) fn initial_ocsf_to(
    first: bool,
    origin: DateTime<Utc>,
    committed_to: DateTime<Utc>,
) -> DateTime<Utc> {
    if first {
        floor_hour(origin)
    } else {
        ceil_hour(committed_to)
    }
}

/// The end of the period of length `period` (whole hours dividing a day, as the configuration
/// checks) that contains the whole hour `start`: the first boundary after it on the grid that
/// starts at midnight UTC. A `start` off the grid (the period was changed) gets a shorter
/// period, up to the grid.
pub(super) fn period_end(start: DateTime<Utc>, period: Duration) -> DateTime<Utc> {
    let len = i64::try_from(period.as_secs())
        .unwrap_or(86_400)
        .clamp(3600, 86_400);
    let s = start.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(len) + len, 0).unwrap_or(start + TimeDelta::hours(1))
}

impl Run<'_> {
    /// Whether the output is on and the period at `ocsf_to` is whole and committed.
    pub(super) fn ocsf_due(&self) -> bool {
        self.p.ocsf.is_some()
            && self
                .cp
                .ocsf_until
                .is_some_and(|end| end <= self.cp.committed_to)
    }

    /// Whether the object `key` of the hour starting at `hour` gets its own OCSF objects: only
    /// in an hour the periods' output will not cover.
    pub(super) fn own_ocsf(&self, hour: Option<DateTime<Utc>>) -> bool {
        match (hour, self.cp.ocsf_to) {
            (Some(h), Some(to)) => h < to,
            _ => true,
        }
    }

    /// Writes the OCSF objects of every whole, committed period from `ocsf_to` on (at most
    /// [`MAX_HOURS_PER_RUN`] hours of them, and at least one period), moving `ocsf_to` and
    /// `ocsf_until` past each. A period the run has no time left for is left to the next run,
    /// which writes the same objects (those already written are kept). With the output off,
    /// nothing moves: the periods since are written when it is on again, so that no record
    /// pulled while it was on goes without its OCSF record (a period started with the output
    /// on and not yet written would otherwise be skipped).
    pub(super) async fn ocsf_periods(&mut self) -> Result<(), PullError> {
        let Some(ocsf) = self.p.ocsf.as_ref() else {
            return Ok(());
        };
        let dataset = Dataset::of(self.p.cfg.stream);
        let mut hours = 0;
        while self.ocsf_due() {
            let (Some(start), Some(end)) = (self.cp.ocsf_to, self.cp.ocsf_until) else {
                break;
            };
            let len = (end - start).num_hours();
            if hours > 0 && hours + len > MAX_HOURS_PER_RUN {
                break;
            }
            match self.ocsf_period(ocsf, dataset, start, end).await {
                Ok(()) => hours += len,
                Err(PullError::NoTimeToWrite) => {
                    tracing::warn!(from = %start, to = %end, "no time left in this run for the period's OCSF objects; the next run writes them");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes the objects of the period `[start, end)` and moves `ocsf_to` and `ocsf_until`
    /// past it, renewing the lease as it reads. Errors: S3, encoding, and `NoTimeToWrite`
    /// (nothing moved then).
    async fn ocsf_period(
        &mut self,
        ocsf: &OcsfWriter,
        dataset: Dataset,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(), PullError> {
        // The period's objects, an hour after another, each hour's as one multi-member gzip
        // body: the files' rows come out in time order, and memory holds one hour's text and
        // one part of each file (written as soon as it is closed).
        let first = crate::audit::segment::partition(&self.p.cfg.prefix, start);
        let name = object_name(&self.p.cfg.prefix, &format!("{first}pull.jsonl.gz"));
        let mut files = FileSet::with_part_text(dataset, PART_TEXT_BYTES);
        let mut landed = Landed::default();
        let mut objects = 0;
        let mut hour = start;
        while hour < end {
            if tokio::time::Instant::now() >= self.renew_at {
                self.renew().await?;
            }
            let partition = crate::audit::segment::partition(&self.p.cfg.prefix, hour);
            let mut keys: Vec<String> = self
                .p
                .sink
                .list(&partition)
                .await?
                .into_iter()
                .filter(|k| is_pull_object(&k[partition.len()..]))
                .collect();
            keys.sort();
            let mut body = Vec::new();
            for k in &keys {
                let Some(v) = self.p.sink.get(k).await? else {
                    continue; // expired (DataRetentionDays): nothing of it to map
                };
                body.extend_from_slice(&v.body);
                objects += 1;
            }
            if !body.is_empty() {
                let key = format!("{partition}pull.jsonl.gz");
                crate::lake::cpu_heavy(|| files.add(&key, &body))?;
                drop(body);
                let parts = files.take_parts();
                if !parts.is_empty() {
                    self.renew().await?;
                    let budget = self.put_budget()?;
                    landed.add(&ocsf.write_parts(dataset, &name, parts, budget).await?);
                }
            }
            hour += TimeDelta::hours(1);
        }
        let parts = crate::lake::cpu_heavy(|| files.finish_parts())?;
        if !parts.is_empty() {
            self.renew().await?;
            let budget = self.put_budget()?;
            landed.add(&ocsf.write_parts(dataset, &name, parts, budget).await?);
        }
        if landed != Landed::default() {
            tracing::info!(from = %start, to = %end, objects, records = landed.records, "period's OCSF objects written");
            self.summary
                .ocsf
                .get_or_insert_with(Landed::default)
                .add(&landed);
        }
        self.cp.ocsf_to = Some(end);
        self.cp.ocsf_until = Some(period_end(end, self.p.cfg.ocsf_period));
        self.save().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pulls_objects_are_read() {
        assert!(is_pull_object("20261121T100000Z_20261121T103000Z.jsonl.gz"));
        assert!(!is_pull_object(
            "late_20261121T100000Z_20261121T101000Z.jsonl.gz"
        ));
        assert!(!is_pull_object(
            "backfill_20261120T030000Z_20261120T040000Z-000.jsonl.gz"
        ));
        assert!(!is_pull_object("pull.parquet"));
    }

    #[test]
    fn periods_lie_on_a_grid_from_midnight_and_never_cross_it() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let h = |n: u64| Duration::from_secs(n * 3600);
        let day = h(24);
        assert_eq!(
            period_end(t("2026-11-21T00:00:00Z"), day),
            t("2026-11-22T00:00:00Z")
        );
        // A start off the grid (the first run's origin, a changed period) ends at the grid.
        assert_eq!(
            period_end(t("2026-11-21T22:00:00Z"), day),
            t("2026-11-22T00:00:00Z")
        );
        assert_eq!(
            period_end(t("2026-11-21T07:00:00Z"), h(6)),
            t("2026-11-21T12:00:00Z")
        );
        assert_eq!(
            period_end(t("2026-11-21T12:00:00Z"), h(6)),
            t("2026-11-21T18:00:00Z")
        );
        assert_eq!(
            period_end(t("2026-11-21T23:00:00Z"), h(1)),
            t("2026-11-22T00:00:00Z")
        );
    }

    #[test]
    fn where_the_output_starts() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let origin = t("2026-11-21T10:20:00Z");
        let committed = t("2026-11-22T07:05:00Z");
        assert_eq!(
            initial_ocsf_to(true, origin, origin),
            t("2026-11-21T10:00:00Z")
        );
        assert_eq!(
            initial_ocsf_to(false, origin, committed),
            t("2026-11-22T08:00:00Z")
        );
    }
}
