//! The audit pipeline: Vision One's audit logs into the lake, exactly once.
//!
//! ```text
//! audit-puller ─► invoke (Lambda door) ─► Puller::run: lease on the checkpoint, plan a window
//!   ─► fetch (vision_one: token, paging, retries) ─► segment (entries → objects)
//!   ─► lake::sink (create-only gzip JSON Lines) ─► lake::ocsf (Parquet, optional)
//!   ─► checkpoint (commit) ; reconcile re-reads committed time for entries served late
//! ```
//!
//! Beside the scheduled run: backfill (time before the origin), ops (Test Connection, status,
//! checkpoint view), repair (`tv1 checkpoint set`) and, behind the `simulator` feature, the
//! Vision One simulator the tests and `make run` pull from.
//!
//! A run takes a short lease on the checkpoint (renewed while it works), plans a window
//! `[committed_to, min(committed_to + max_window, now - lag))` with `now` on S3's clock, reads
//! it page by page, cuts it into segments (see [`crate::audit::segment`]) and for each segment:
//!
//! 1. records the segment and its object key in the checkpoint (`pending`, conditional write),
//! 2. creates the object (create-only: `If-None-Match: *`),
//! 3. moves `committed_to` to the segment's end (folded into the next conditional write).
//!
//! A run that dies anywhere leaves either nothing uncommitted or a `pending` segment. The run
//! that takes over once the lease has lapsed redoes that segment: the same range under the same
//! key, create-only. Whoever writes the key first wins; a late PUT of the dead (or merely
//! paused) run is refused by S3, or was the object the new run keeps. Every entry lands once.

use crate::audit::checkpoint::StateStore;
use crate::audit::segment::{Limits, OutOfOrder, unreadable_key, unreadable_object};
use crate::audit::vision_one::{Backoff, VisionOneError};
use crate::config::PullerConfig;
use crate::lake::clock::{Clock, RunClock};
use crate::lake::ocsf::writer::{Landed, OcsfWriter};
use crate::lake::sink::{Created, S3Sink, SinkError};
use crate::lake::state::StateError;
use crate::secret::SsmSecret;
use crate::timefmt::floor_second;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

mod backfill;
pub mod checkpoint;
mod fetch;
mod invoke;
mod ocsf_periods;
mod ops;
mod reconcile;
mod repair;
mod run;
pub mod segment;
#[cfg(feature = "simulator")]
pub mod simulate;
pub mod stream;
pub mod vision_one;

pub use backfill::{BackfillSummary, Progress};
pub use invoke::{
    Action, METRIC_LAG, METRIC_LATE, METRIC_NAMESPACE, Pullers, Reply, emf_line, stream_of,
    time_left,
};
pub use ops::{ConnectionCheck, OcsfView, ReconcileView, StatusReport};
pub use reconcile::{MAX_STEPS_PER_RUN, ReconcileSummary};
pub use repair::{CheckpointView, RepairError};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Vision One failed (after retries).
    #[error(transparent)]
    VisionOne(#[from] VisionOneError),
    /// S3 failed or the checkpoint race was lost.
    #[error(transparent)]
    State(#[from] StateError),
    /// The API broke its ordering promise.
    #[error(transparent)]
    OutOfOrder(#[from] OutOfOrder),
    /// A page item that is not JSON.
    #[error("invalid audit log entry from Vision One: {0}")]
    InvalidEntry(String),
    /// The page token expired repeatedly without progress.
    #[error("page tokens kept expiring ({0} restarts without progress); is the API very slow?")]
    TokenChurn(u32),
    /// The deadline came before a write could be made safely (the lease may be over).
    #[error(
        "stopped before writing: too close to the run deadline (the next run redoes the pending segment)"
    )]
    NoTimeToWrite,
    /// An invocation payload that cannot be used.
    #[error("invalid invocation: {0}")]
    BadInvocation(String),
    /// A backfill range that cannot be used.
    #[error("invalid backfill range: {0}")]
    BadRange(String),
    /// No checkpoint, but data in the lake: the checkpoint was lost (not a first run).
    #[error(
        "no checkpoint at s3://{bucket}/{key}, but the lake holds data up to {ends_at}: the checkpoint was lost or deleted. Starting over would write that data again; run `tv1 checkpoint set --committed-to {ends_at}` to resume after it"
    )]
    CheckpointMissing {
        /// Bucket.
        bucket: String,
        /// Checkpoint key.
        key: String,
        /// End of the newest data object.
        ends_at: String,
    },
    /// A pending segment whose key this version cannot redo.
    #[error(
        "the checkpoint's pending segment {from}..{to} has key(s) {keys:?}, which are not this prefix's key of that range; restore the checkpoint or see `tv1 checkpoint --help`"
    )]
    ForeignPending {
        /// Start.
        from: String,
        /// End.
        to: String,
        /// Keys.
        keys: Vec<String>,
    },
    /// A range's late entries kept finding their key taken.
    #[error(
        "reconciliation of {from}..{to} found its late-entry keys already taken {} times; is another writer using this prefix?",
        reconcile::MAX_OBJECTS_PER_RANGE
    )]
    LateKeysExhausted {
        /// Start.
        from: String,
        /// End.
        to: String,
    },
    /// The OCSF output failed; the segment stays pending and the next run writes it.
    #[error(transparent)]
    Ocsf(#[from] crate::lake::ocsf::writer::OcsfError),
    /// A data object reconciliation must read is not what the connector writes.
    #[error(
        "s3://{bucket}/{key} is not gzip JSON Lines with an _id per line ({reason}); reconciliation cannot tell which entries it holds"
    )]
    UnreadableObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<SinkError> for PullError {
    fn from(e: SinkError) -> Self {
        PullError::State(e.into())
    }
}

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Window {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
}

impl Window {
    /// Whether `t` is in the range. Pages may return entries outside it (an inclusive end bound):
    /// those belong to the next range.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t < self.to
    }
}

/// The last whole second at least `age` before `now`: the end of what may be read, since
/// younger time may still gain entries Vision One serves late.
pub(crate) fn settled_before(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    floor_second(now - TimeDelta::from_std(age).unwrap_or_default())
}

/// How a scheduled run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The planned window was read to its end.
    Complete,
    /// Stopped early (deadline, API error); what was read is committed, the rest is next run's.
    Partial,
    /// Nothing to read yet (the checkpoint is within the lag of now).
    UpToDate,
    /// Another run holds the checkpoint; this one did nothing.
    Skipped,
}

/// What one scheduled run did. Returned by the Lambda, printed by `tv1 pull`, logged.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// `pull`.
    pub action: &'static str,
    /// The stream pulled.
    pub stream: stream::Stream,
    /// How it ended.
    pub outcome: Outcome,
    /// Random id of this run (also in the checkpoint it writes).
    pub run_id: String,
    /// The planned window.
    pub window: Option<Window>,
    /// Pages fetched.
    pub pages: u64,
    /// Entries written.
    pub records: u64,
    /// Objects written.
    pub objects: u64,
    /// Compressed bytes written.
    pub bytes: u64,
    /// Keys of the objects written.
    pub keys: Vec<String>,
    /// Keys this run meant to write that already held the same range (from a run that died
    /// or was fenced before committing them): kept, not written again.
    pub kept_existing: Vec<String>,
    /// Entries without a readable `loggedDateTime`, landed under `_unreadable/` (new ones).
    pub unreadable: u64,
    /// Conditional writes of the checkpoint (S3 PUTs besides the objects).
    pub checkpoint_writes: u64,
    /// `committed_to` when the run started (`None` on the first run).
    pub checkpoint_before: Option<DateTime<Utc>>,
    /// `committed_to` when it ended.
    pub checkpoint_after: Option<DateTime<Utc>>,
    /// Seconds between `checkpoint_after` and the end of the run.
    pub lag_seconds: Option<i64>,
    /// Local clock minus S3's clock, in seconds; the run uses S3's.
    pub clock_skew_seconds: i64,
    /// Why the run stopped before the window's end.
    pub stopped_early: Option<String>,
    /// A pending segment of an earlier run that this run redid under its key.
    pub recovered: Option<Window>,
    /// Page-token expiries recovered from.
    pub query_restarts: u32,
    /// Ranges of a newest-first stream halved because they were too large to order in memory
    /// (`TV1_ORDERED_RANGE_KIB`).
    pub ranges_halved: u32,
    /// Committed time read again for late entries (`None` when off or nothing was due).
    pub reconcile: Option<ReconcileSummary>,
    /// What the OCSF Parquet output wrote (`None` when it is off).
    pub ocsf: Option<Landed>,
    /// Start of the run.
    pub started_at: DateTime<Utc>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

impl RunSummary {
    /// The summary of a run starting at `started_at` from the checkpoint's `checkpoint_before`,
    /// before it has done anything.
    pub fn new(
        run_id: String,
        started_at: DateTime<Utc>,
        checkpoint_before: Option<DateTime<Utc>>,
        clock_skew_seconds: i64,
        ocsf_on: bool,
    ) -> Self {
        RunSummary {
            action: "pull",
            stream: stream::Stream::Audit,
            outcome: Outcome::Complete,
            run_id,
            window: None,
            pages: 0,
            records: 0,
            objects: 0,
            bytes: 0,
            keys: Vec::new(),
            kept_existing: Vec::new(),
            unreadable: 0,
            checkpoint_writes: 0,
            checkpoint_before,
            checkpoint_after: checkpoint_before,
            lag_seconds: None,
            clock_skew_seconds,
            stopped_early: None,
            recovered: None,
            query_restarts: 0,
            ranges_halved: 0,
            reconcile: None,
            ocsf: ocsf_on.then(Landed::default),
            started_at,
            duration_ms: 0,
        }
    }
}

/// The audit pipeline, built once per process and shared by every invocation.
#[derive(Debug)]
pub struct Puller {
    cfg: PullerConfig,
    api: vision_one::Client,
    sink: S3Sink,
    state: StateStore,
    clock: Clock,
    ocsf: Option<OcsfWriter>,
}

/// Page-token expiries tolerated in a row without the resume point moving.
const MAX_RESTARTS_WITHOUT_PROGRESS: u32 = 10;

impl Puller {
    /// Builds the pipeline from its configuration and shared clients.
    pub fn new(cfg: PullerConfig, s3: aws_sdk_s3::Client, ssm: aws_sdk_ssm::Client) -> Self {
        let token = SsmSecret::new(ssm, cfg.token_param.clone());
        let api = vision_one::Client::new(
            cfg.base_url.clone(),
            token,
            vision_one::Settings {
                stream: cfg.stream,
                filter: cfg.filter.clone(),
                ordered_range_bytes: cfg.ordered_range_bytes,
                page_size: cfg.page_size,
                http_timeout: cfg.http_timeout,
                max_attempts: cfg.max_attempts,
                backoff: Backoff::default(),
            },
        );
        let ocsf = cfg.ocsf.as_ref().map(|o| OcsfWriter::new(o, s3.clone()));
        let sink = S3Sink::new(s3, cfg.bucket.clone());
        let state = StateStore::new(sink.clone(), &cfg.prefix);
        Puller {
            cfg,
            api,
            sink,
            state,
            clock: Clock::system(),
            ocsf,
        }
    }

    /// The OCSF output, when on.
    pub fn ocsf(&self) -> Option<&OcsfWriter> {
        self.ocsf.as_ref()
    }

    /// Replaces the local clock (tests skew it; the puller takes its time from S3 anyway).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &PullerConfig {
        &self.cfg
    }

    /// The state documents.
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// The deadline of a run started now outside Lambda (`TV1_RUN_TIMEOUT`).
    pub fn default_deadline(&self) -> Instant {
        Instant::now() + self.cfg.run_timeout
    }

    /// Now on S3's clock as of its last response (the local clock before any).
    pub(crate) fn run_clock(&self) -> RunClock {
        RunClock::new(self.sink.server_time(), &self.clock)
    }

    /// Lands an entry without a readable time under its content hash, create-only (see
    /// [`crate::audit::segment::unreadable_key`]), before anything after it is committed.
    async fn land_unreadable(
        &self,
        raw: &serde_json::value::RawValue,
        hash: &[u8; 32],
        timeout: Duration,
    ) -> Result<Created, PullError> {
        let key = unreadable_key(&self.cfg.prefix, hash);
        tracing::warn!(key = %key, stream = %self.cfg.stream, field = self.cfg.stream.time_field(), "an item has no readable time; landed on its own");
        Ok(self
            .sink
            .create_ndjson_gz(
                &key,
                unreadable_object(raw, hash, self.cfg.stream.time_field()),
                timeout,
            )
            .await?)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.cfg.object_max_bytes,
            max_records: self.cfg.object_max_records,
        }
    }
}
