//! The checkpoint and status documents, kept in S3 next to the data.
//!
//! The checkpoint is the puller's only state. It is written with conditional requests so that
//! two overlapping runs cannot both move it, and it records the segment being written *before*
//! the objects are (write-ahead), so a run that dies half-way leaves enough behind for the next
//! run to remove what was not committed.

use crate::lake::sink::{Condition, S3Sink, Versioned};
use crate::lake::state::{StateError, parse_state};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where the puller stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Document format (2: the lease is the run's, not the pending segment's).
    pub version: u32,
    /// Where the scheduled puller started. Time before it belongs to `backfill`.
    pub origin: DateTime<Utc>,
    /// Every entry logged before this instant is in S3, exactly once.
    pub committed_to: DateTime<Utc>,
    /// The run that is working on the checkpoint, while it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// A segment whose object may be written but is not committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// How far committed time has been read again for entries Vision One served late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
    /// The first hour whose pull objects are not in the OCSF output yet (see
    /// `ocsf_periods.rs`); absent in a checkpoint written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsf_to: Option<DateTime<Utc>>,
    /// The end of the OCSF period that starts at `ocsf_to`: fixed when `ocsf_to` moves, before
    /// any object of the period is written, so a redo writes the same objects whatever the
    /// configured period has become meanwhile. Absent in a checkpoint written before it existed
    /// (whose periods were hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsf_until: Option<DateTime<Utc>>,
    /// When this document was written (S3's clock).
    pub updated_at: DateTime<Utc>,
    /// The run that wrote it.
    pub run_id: String,
}

/// Current document format.
pub const CHECKPOINT_VERSION: u32 = 2;

impl Checkpoint {
    /// The checkpoint before anything is written: everything from `origin` on is still to pull.
    pub fn start(origin: DateTime<Utc>, now: DateTime<Utc>, run_id: impl Into<String>) -> Self {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            origin,
            committed_to: origin,
            lease: None,
            pending: None,
            reconcile: None,
            ocsf_to: None,
            ocsf_until: None,
            updated_at: now,
            run_id: run_id.into(),
        }
    }

    /// The live lease of another run at `now` (S3's clock), if any.
    pub fn held_by_other(&self, run_id: &str, now: DateTime<Utc>) -> Option<&Lease> {
        self.lease
            .as_ref()
            .filter(|l| l.run_id != run_id && l.until > now)
    }
}

/// A run's claim on the checkpoint. It is short and renewed while the run works, so a run that
/// dies blocks the schedule for at most `TV1_LEASE`; it only decides who may *start* work.
/// Safety never depends on it: checkpoint writes are conditional and data objects are
/// create-only (see [`crate::lake::sink::S3Sink::create_ndjson_gz`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder.
    pub run_id: String,
    /// Expiry on S3's clock (see [`crate::lake::clock`]).
    pub until: DateTime<Utc>,
}

/// A segment in flight: its range and the key its object gets.
///
/// A run that takes over redoes exactly this range under exactly these keys with create-only
/// writes, so whatever the previous holder still manages to write can only be refused, or be
/// the very object the new run would have written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Start of the segment (inclusive), equal to `committed_to`.
    pub from: DateTime<Utc>,
    /// End of the segment (exclusive).
    pub to: DateTime<Utc>,
    /// Keys the segment's objects are written under.
    pub keys: Vec<String>,
}

/// Where reconciliation stands: committed time read again once it is `TV1_RECONCILE_HORIZON`
/// old, for entries Vision One made visible after the pull had read that time.
///
/// It moves like the pull's own state: a range's late entries are recorded as `pending` (range
/// and key) before their object is created (create-only), and `checked_to` moves past the range
/// only after that. A run that takes over redoes the pending range under the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconcile {
    /// Every range from the origin (or from where reconciliation was switched on) to this
    /// instant was read again at least the horizon after its end, and its late entries landed.
    pub checked_to: DateTime<Utc>,
    /// A range whose late entries' object may be written but is not committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// Late entries found so far (informational: a run that dies after landing some and before
    /// committing leaves them uncounted).
    #[serde(default)]
    pub late_entries: u64,
    /// The largest age (S3's clock when found minus `loggedDateTime`) of a late entry found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_delay_seconds: Option<i64>,
    /// When the last late entry was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_found_at: Option<DateTime<Utc>>,
    /// Committed time after `checked_to` that a pull read when it was already the horizon old
    /// (a catch-up after an outage): reconciliation passes over it when it gets there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_settled: Option<super::Window>,
}

/// Reads and writes the state documents under one prefix.
#[derive(Debug, Clone)]
pub struct StateStore {
    sink: S3Sink,
    checkpoint_key: String,
    status_key: String,
}

impl StateStore {
    /// State for the dataset under `data_prefix`: `<data_prefix>_state/{checkpoint,status}.json`.
    /// The leading underscore keeps Athena and Glue from reading them as data.
    pub fn new(sink: S3Sink, data_prefix: &str) -> Self {
        StateStore {
            sink,
            checkpoint_key: format!("{data_prefix}_state/checkpoint.json"),
            status_key: format!("{data_prefix}_state/status.json"),
        }
    }

    /// Key of the checkpoint document.
    pub fn checkpoint_key(&self) -> &str {
        &self.checkpoint_key
    }

    /// Key of the status document.
    pub fn status_key(&self) -> &str {
        &self.status_key
    }

    /// The checkpoint document as stored, readable or not, with its ETag.
    pub async fn load_raw(&self) -> Result<Option<Versioned>, StateError> {
        Ok(self.sink.get(&self.checkpoint_key).await?)
    }

    /// The checkpoint and its ETag; `None` before the first run.
    pub async fn load(&self) -> Result<Option<(Checkpoint, String)>, StateError> {
        match self.sink.get(&self.checkpoint_key).await? {
            None => Ok(None),
            Some(v) => Ok(Some((
                parse_state(&self.sink, &self.checkpoint_key, &v.body)?,
                v.etag,
            ))),
        }
    }

    /// Writes the checkpoint if it is still as read (`cond`); returns the new condition.
    pub async fn save(&self, cp: &Checkpoint, cond: &Condition) -> Result<Condition, StateError> {
        let body = serde_json::to_vec_pretty(cp).expect("checkpoint serialises");
        let etag = self
            .sink
            .put_json_if(&self.checkpoint_key, body, cond)
            .await?;
        Ok(Condition::Matches(etag))
    }

    /// The status document, if any.
    pub async fn load_status(&self) -> Result<Option<Status>, StateError> {
        match self.sink.get(&self.status_key).await? {
            None => Ok(None),
            Some(v) => Ok(Some(parse_state(&self.sink, &self.status_key, &v.body)?)),
        }
    }

    /// Replaces the status document (informational: last writer wins).
    pub async fn save_status(&self, status: &Status) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(status).expect("status serialises");
        Ok(self.sink.put_json(&self.status_key, body).await?)
    }
}

/// Collection status, as a SIEM's "collection status" screen shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// When the last run ended, successful or not.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When the last successful run ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Summary of the last successful run.
    pub last_success: Option<serde_json::Value>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<LastError>,
    /// OCSF records the runs wrote, all told (since the output was turned on).
    #[serde(default)]
    pub ocsf_records_total: u64,
}

/// A failed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    /// When it failed.
    pub at: DateTime<Utc>,
    /// What went wrong.
    pub message: String,
}
