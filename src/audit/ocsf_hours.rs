//! The OCSF output of a stream's pull, one hour at a time: once `committed_to` has passed the end
//! of an hour, the pull's objects of that hour are final, and their records become one Parquet
//! object per class and day (`<hour>_pull.parquet`), written create-only. Before this, every
//! segment (one object per run, 288 a day) had its own Parquet objects, each a few hundred rows
//! with a footer of several kilobytes; per hour the same records cost 40 % less
//! (`docs/benchmarks.md`, note 13). The checkpoint's `ocsf_to` is the first hour not written yet.
//!
//! Reconciliation's late objects and backfill parts keep their own Parquet objects (they arrive
//! after their hour, and a backfill part is replaced in place); only the pull's segment objects
//! are read here. A run that dies after writing an hour's objects and before moving `ocsf_to`
//! is redone by the next run: the same objects under the same keys, which S3 keeps.

use super::PullError;
use super::run::Run;
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::{Landed, encode_object, object_name};
use crate::timefmt::{ceil_hour, floor_hour};
use chrono::{DateTime, TimeDelta, Utc};

/// Most hours written by one run: a stream that had the output off for a long time, or a long
/// catch-up, is worked off over several runs rather than holding one past its deadline.
const MAX_HOURS_PER_RUN: usize = 24;

/// Whether `name` (a file name in an hour's partition) is one of the pull's segment objects,
/// `<from>_<to>.jsonl.gz`, rather than a late object or a backfill part.
pub(super) fn is_pull_object(name: &str) -> bool {
    name.ends_with(".jsonl.gz") && !name.starts_with("late_") && !name.starts_with("backfill_")
}

/// The first hour whose pull objects are not in the hourly OCSF output yet, for a checkpoint
/// without `ocsf_to`: the first run's origin hour, or, for a checkpoint a version before this
/// one wrote, the next whole hour (the rest of the current one keeps per-segment objects).
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

impl Run<'_> {
    /// Whether the output is on and the first hour not written is whole and committed.
    pub(super) fn ocsf_due(&self) -> bool {
        self.p.ocsf.is_some()
            && self
                .cp
                .ocsf_to
                .is_some_and(|h| h + TimeDelta::hours(1) <= self.cp.committed_to)
    }

    /// Whether the object `key` of the hour starting at `hour` gets its own OCSF objects: only
    /// in an hour the hourly output will not cover.
    pub(super) fn own_ocsf(&self, hour: Option<DateTime<Utc>>) -> bool {
        match (hour, self.cp.ocsf_to) {
            (Some(h), Some(to)) => h < to,
            _ => true,
        }
    }

    /// Writes the OCSF objects of every whole, committed hour from `ocsf_to` on (at most
    /// [`MAX_HOURS_PER_RUN`]), moving `ocsf_to` past each; with the output off, only moves it.
    pub(super) async fn ocsf_hours(&mut self) -> Result<(), PullError> {
        let Some(ocsf) = self.p.ocsf.as_ref() else {
            // Off: nothing to write; if it is switched on, it starts from here.
            let now_hour = floor_hour(self.cp.committed_to);
            if self.cp.ocsf_to.is_none_or(|h| h < now_hour) {
                self.cp.ocsf_to = Some(now_hour);
            }
            return Ok(());
        };
        let dataset = Dataset::of(self.p.cfg.stream);
        for _ in 0..MAX_HOURS_PER_RUN {
            if !self.ocsf_due() {
                break;
            }
            let hour = self.cp.ocsf_to.expect("due");
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
            // The hour's objects, one gzip stream after another: a multi-member gzip body.
            let mut body = Vec::new();
            for k in &keys {
                let Some(v) = self.p.sink.get(k).await? else {
                    continue; // expired (DataRetentionDays): nothing of it to map
                };
                body.extend_from_slice(&v.body);
            }
            if !body.is_empty() {
                let key = format!("{partition}pull.jsonl.gz");
                let name = object_name(&self.p.cfg.prefix, &key);
                let files = crate::lake::cpu_heavy(|| encode_object(dataset, &key, &body))?;
                let budget = self.put_budget()?;
                let landed = ocsf.write_files(dataset, &name, files, budget).await?;
                tracing::info!(hour = %hour, objects = keys.len(), records = landed.records, "hour's OCSF objects written");
                self.summary
                    .ocsf
                    .get_or_insert_with(Landed::default)
                    .add(&landed);
            }
            self.cp.ocsf_to = Some(hour + TimeDelta::hours(1));
            self.save().await?;
        }
        Ok(())
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
    fn where_the_hourly_output_starts() {
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
