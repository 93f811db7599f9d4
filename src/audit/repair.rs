//! Looking at and repairing the checkpoint: `tv1 checkpoint show` and `tv1 checkpoint set`.
//!
//! Deleting a lost or unreadable checkpoint would restart collection `TV1_INITIAL_LOOKBACK`
//! back, writing again what is already in S3 (or leaving a gap). Instead the operator sets
//! `committed_to` to where the data in S3 ends (which `show` reads off the object names) with a
//! conditional write that keeps everything else, and the schedule resumes right there.

use super::{PullError, Puller};
use crate::audit::checkpoint::Checkpoint;
use crate::lake::sink::Condition;
use crate::lake::state::parse_state;
use crate::timefmt::{api_time, floor_second, parse_compact_time};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// What `tv1 checkpoint show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointView {
    /// `ok`, `missing` or `unreadable`.
    pub state: &'static str,
    /// The checkpoint, when readable.
    pub checkpoint: Option<Checkpoint>,
    /// Why it cannot be read.
    pub error: Option<String>,
    /// End of the newest data object in S3 (from the object names), if any.
    pub lake_ends_at: Option<DateTime<Utc>>,
    /// What to do, when something needs doing.
    pub advice: Option<String>,
}

/// A repair that cannot be made as asked.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The request would lose or double data, or race a live run.
    #[error("refused: {0}")]
    Refused(String),
    /// S3 failed or another writer changed the checkpoint meanwhile.
    #[error(transparent)]
    Pull(#[from] PullError),
}

impl From<crate::lake::state::StateError> for RepairError {
    fn from(e: crate::lake::state::StateError) -> Self {
        RepairError::Pull(e.into())
    }
}

impl From<crate::lake::sink::SinkError> for RepairError {
    fn from(e: crate::lake::sink::SinkError) -> Self {
        RepairError::Pull(e.into())
    }
}

/// End of a data object, from its name: `<from>_<to>.jsonl.gz` (scheduled runs),
/// `backfill_<from>_<to>-NNN.jsonl.gz` or `late_<from>_<to>[.N].jsonl.gz` (reconciliation).
fn object_end(key: &str) -> Option<DateTime<Utc>> {
    let name = key.rsplit('/').next()?;
    let name = ["backfill_", "late_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    let to = name.split('_').nth(1)?;
    parse_compact_time(to.get(..16)?)
}

impl Puller {
    /// The end of the newest data object under the prefix: the last day's partition is listed.
    pub async fn lake_ends_at(&self) -> Result<Option<DateTime<Utc>>, PullError> {
        let days = self
            .sink
            .list_folders(&format!("{}dt=", self.cfg.prefix))
            .await?;
        let Some(last_day) = days.last() else {
            return Ok(None);
        };
        let keys = self.sink.list(last_day).await?;
        Ok(keys.iter().filter_map(|k| object_end(k)).max())
    }

    /// `tv1 checkpoint show`.
    pub async fn checkpoint_show(&self) -> Result<CheckpointView, PullError> {
        let raw = self.state.load_raw().await?;
        let lake_ends_at = self.lake_ends_at().await?;
        let key = self.state.checkpoint_key();
        let resume = |t: Option<DateTime<Utc>>| {
            t.map(|t| format!("tv1 checkpoint set --committed-to {}", api_time(t)))
        };
        Ok(match raw {
            None => CheckpointView {
                state: "missing",
                checkpoint: None,
                error: None,
                advice: resume(lake_ends_at).map(|c| {
                    format!("the lake holds data but no checkpoint: run `{c}` to resume after it")
                }),
                lake_ends_at,
            },
            Some(v) => match parse_state::<Checkpoint>(&self.sink, key, &v.body) {
                Ok(cp) => CheckpointView {
                    state: "ok",
                    checkpoint: Some(cp),
                    error: None,
                    advice: None,
                    lake_ends_at,
                },
                Err(e) => CheckpointView {
                    state: "unreadable",
                    checkpoint: None,
                    error: Some(e.to_string()),
                    advice: resume(lake_ends_at)
                        .map(|c| format!("run `{c} --origin <where collection began>`")),
                    lake_ends_at,
                },
            },
        })
    }

    /// `tv1 checkpoint set`: writes `committed_to` (and `origin` when given or unknown) with a
    /// conditional write, keeping the rest. Refuses what would double or skip entries unless
    /// `force`: moving `committed_to` back, a pending segment, a time in the future.
    pub async fn checkpoint_set(
        &self,
        committed_to: DateTime<Utc>,
        origin: Option<DateTime<Utc>>,
        force: bool,
    ) -> Result<Checkpoint, RepairError> {
        let committed_to = floor_second(committed_to);
        let raw = self.state.load_raw().await?;
        let now = self.run_clock().now();
        if committed_to > now {
            return Err(RepairError::Refused(format!(
                "{} is in the future (S3's clock reads {})",
                api_time(committed_to),
                api_time(now)
            )));
        }
        let key = self.state.checkpoint_key();
        let (mut cp, cond) = match raw {
            Some(v) => match parse_state::<Checkpoint>(&self.sink, key, &v.body) {
                Ok(cp) => {
                    self.check_repair(&cp, committed_to, now, force)?;
                    (cp, Condition::Matches(v.etag))
                }
                // Unreadable: replaced, but only if nobody rewrote it meanwhile.
                Err(_) => (
                    Checkpoint::start(origin.unwrap_or(committed_to), now, "checkpoint-set"),
                    Condition::Matches(v.etag),
                ),
            },
            None => (
                Checkpoint::start(origin.unwrap_or(committed_to), now, "checkpoint-set"),
                Condition::Absent,
            ),
        };
        if let Some(o) = origin {
            cp.origin = floor_second(o);
        }
        if committed_to < cp.origin {
            return Err(RepairError::Refused(format!(
                "committed_to {} is before the origin {}: that time belongs to backfill",
                api_time(committed_to),
                api_time(cp.origin)
            )));
        }
        cp.committed_to = committed_to;
        cp.pending = None;
        cp.lease = None;
        cp.updated_at = now;
        cp.run_id = "checkpoint-set".into();
        self.state.save(&cp, &cond).await?;
        Ok(cp)
    }

    fn check_repair(
        &self,
        cp: &Checkpoint,
        committed_to: DateTime<Utc>,
        now: DateTime<Utc>,
        force: bool,
    ) -> Result<(), RepairError> {
        if let Some(l) = cp.held_by_other("", now) {
            return Err(RepairError::Refused(format!(
                "run {} is working on the checkpoint until {}; try again after it",
                l.run_id,
                api_time(l.until)
            )));
        }
        if force {
            return Ok(());
        }
        if let Some(p) = &cp.pending {
            return Err(RepairError::Refused(format!(
                "a segment {}..{} is pending; run `tv1 pull` once to settle it (or --force)",
                api_time(p.from),
                api_time(p.to)
            )));
        }
        if committed_to < cp.committed_to {
            return Err(RepairError::Refused(format!(
                "moving committed_to back from {} to {} writes the entries in between again (--force if that is what you want)",
                api_time(cp.committed_to),
                api_time(committed_to)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_tell_where_they_end() {
        let t = |s| crate::timefmt::parse_api_time(s).unwrap();
        assert_eq!(
            object_end("p/dt=2026-11-21/hour=10/20261121T100000Z_20261121T103000Z.jsonl.gz"),
            Some(t("2026-11-21T10:30:00Z"))
        );
        assert_eq!(
            object_end(
                "p/dt=2026-11-20/hour=03/backfill_20261120T030000Z_20261120T040000Z-000.jsonl.gz"
            ),
            Some(t("2026-11-20T04:00:00Z"))
        );
        assert_eq!(
            object_end("p/dt=2026-11-20/hour=03/late_20261120T030000Z_20261120T040000Z.2.jsonl.gz"),
            Some(t("2026-11-20T04:00:00Z"))
        );
        assert_eq!(object_end("p/dt=2026-11-20/hour=03/notes.txt"), None);
    }
}
