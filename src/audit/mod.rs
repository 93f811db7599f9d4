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

use crate::audit::checkpoint::{Checkpoint, LastError, Lease, Pending, StateStore};
use crate::audit::segment::{
    Assembler, Item, Limits, OutOfOrder, Segment, hour_of_key, segment_key, unreadable_key,
    unreadable_object,
};
use crate::audit::vision_one::{Backoff, VisionOneError};
use crate::config::PullerConfig;
use crate::lake::clock::{Clock, RunClock};
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::{Landed, OcsfWriter};
use crate::lake::sink::{Condition, Created, S3Sink, SinkError};
use crate::lake::state::StateError;
use crate::secret::SsmSecret;
use crate::timefmt::{api_time, floor_second};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use fetch::Fetched;
use futures_util::StreamExt;
use futures_util::future::Either;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

mod backfill;
pub mod checkpoint;
mod fetch;
mod invoke;
mod ops;
mod reconcile;
mod repair;
pub mod segment;
#[cfg(feature = "simulator")]
pub mod simulate;
pub mod vision_one;

pub use backfill::{BackfillSummary, Progress};
pub use invoke::{Action, METRIC_LAG, METRIC_LATE, METRIC_NAMESPACE, Reply, emf_line, time_left};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// Time kept between the end of a data PUT and the lease's expiry.
const LEASE_SLACK: Duration = Duration::from_millis(500);

/// Why fetching ended before the window's end.
pub(super) enum Stop {
    Deadline(String),
    Api(VisionOneError),
    Churn,
}

struct Run<'a> {
    p: &'a Puller,
    cp: Checkpoint,
    cond: Condition,
    clock: RunClock,
    write_deadline: Instant,
    renew_at: Instant,
    /// Vision One's `429`s before this run (reconciliation yields once there are more).
    throttled_at_start: u64,
    summary: RunSummary,
}

impl Puller {
    /// Builds the pipeline from its configuration and shared clients.
    pub fn new(cfg: PullerConfig, s3: aws_sdk_s3::Client, ssm: aws_sdk_ssm::Client) -> Self {
        let token = SsmSecret::new(ssm, cfg.token_param.clone());
        let api = vision_one::Client::new(
            cfg.base_url.clone(),
            token,
            vision_one::Settings {
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
        tracing::warn!(key = %key, "an audit entry has no readable loggedDateTime; landed on its own");
        Ok(self
            .sink
            .create_ndjson_gz(&key, unreadable_object(raw, hash), timeout)
            .await?)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.cfg.object_max_bytes,
            max_records: self.cfg.object_max_records,
        }
    }

    /// One scheduled run, finishing before `deadline`. Records the outcome in the status document.
    pub async fn run(&self, deadline: Instant) -> Result<RunSummary, PullError> {
        let result = self.run_inner(deadline).await;
        let status = match self.state.load_status().await {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                // Overwriting a document that could not be read would erase its history.
                tracing::warn!(error = %e, "could not read the status document; not updating it");
                return result;
            }
        };
        let now = self.run_clock().now();
        let mut status = status;
        status.last_run_at = Some(now);
        match &result {
            Ok(s) if s.outcome != Outcome::Skipped => {
                status.ocsf_records_total += s.ocsf.as_ref().map_or(0, |o| o.records);
                status.last_success_at = Some(now);
                status.last_success = serde_json::to_value(s).ok();
                status.last_error = None;
            }
            Ok(_) => {}
            Err(e) => {
                status.last_error = Some(LastError {
                    at: now,
                    message: e.to_string(),
                })
            }
        }
        if let Err(e) = self.state.save_status(&status).await {
            tracing::warn!(error = %e, "could not update the status document");
        }
        result
    }

    /// The checkpoint and the condition to write it under, with its `committed_to`; without
    /// one, a first run's start, unless the lake already holds data (then the checkpoint was
    /// lost, and starting over would write that data again).
    async fn checkpoint_or_first(
        &self,
        loaded: Option<(Checkpoint, String)>,
        now: DateTime<Utc>,
        run_id: &str,
    ) -> Result<(Checkpoint, Condition, Option<DateTime<Utc>>), PullError> {
        if let Some((cp, etag)) = loaded {
            let before = Some(cp.committed_to);
            return Ok((cp, Condition::Matches(etag), before));
        }
        if let Some(end) = self.lake_ends_at().await? {
            return Err(PullError::CheckpointMissing {
                bucket: self.cfg.bucket.clone(),
                key: self.state.checkpoint_key().to_owned(),
                ends_at: api_time(end),
            });
        }
        let origin = floor_second(
            now - TimeDelta::from_std(self.cfg.initial_lookback).unwrap_or(TimeDelta::days(1)),
        );
        Ok((
            Checkpoint::start(origin, now, run_id.to_owned()),
            Condition::Absent,
            None,
        ))
    }

    async fn run_inner(&self, deadline: Instant) -> Result<RunSummary, PullError> {
        let started = Instant::now();
        let run_id = hex::encode(rand::random::<[u8; 8]>());
        let margin = self.cfg.deadline_margin;
        let loaded = self.state.load().await?;
        // After the first S3 response: every instant from here on is on S3's clock.
        let clock = self.run_clock();
        let now = clock.now();
        let (cp, cond, before) = self.checkpoint_or_first(loaded, now, &run_id).await?;
        let mut run = Run {
            p: self,
            summary: RunSummary::new(
                run_id.clone(),
                now,
                before,
                clock.skew.num_seconds(),
                self.ocsf.is_some(),
            ),
            cp,
            cond,
            clock,
            write_deadline: deadline.checked_sub(margin / 4).unwrap_or(deadline),
            renew_at: Instant::now(),
            throttled_at_start: self.api.throttled(),
        };
        if let Some(lease) = run.cp.held_by_other(&run_id, now) {
            tracing::info!(holder = %lease.run_id, until = %lease.until, "another run holds the checkpoint; skipping");
            run.summary.outcome = Outcome::Skipped;
            run.summary.stopped_early = Some(format!(
                "run {} holds the checkpoint until {}",
                lease.run_id,
                api_time(lease.until)
            ));
            return Ok(run.finish(started));
        }
        let stop_fetching = deadline.checked_sub(margin).unwrap_or(started);
        if run.cp.pending.is_none()
            && run.window().is_none()
            && !run.first()
            && !run.reconcile_due()
        {
            run.summary.outcome = Outcome::UpToDate;
            return Ok(run.finish(started));
        }
        // Take the lease (this conditional write also decides any race with another starter).
        run.save().await?;
        if let Some(pending) = run.cp.pending.clone()
            && let Some(stop) = run.redo(pending, stop_fetching).await?
        {
            return run.end(stop, started).await;
        }
        let Some(window) = run.window() else {
            run.summary.outcome = Outcome::UpToDate;
            return run.complete(stop_fetching, started).await;
        };
        run.summary.window = Some(window);
        tracing::info!(
            run_id = %run_id,
            from = %api_time(window.from),
            to = %api_time(window.to),
            deadline_in_ms = deadline.saturating_duration_since(started).as_millis() as u64,
            "pulling audit logs"
        );

        let stop = run.pull(window, stop_fetching).await?;
        match stop {
            None => run.complete(stop_fetching, started).await,
            Some(stop) => run.end(stop, started).await,
        }
    }
}

/// Runs `consumer` while `producer` fetches into it, and returns the consumer's result. A
/// consumer that ends first (done, stopped or failed) drops the fetchers still running.
async fn alongside<T>(consumer: impl Future<Output = T>, producer: impl Future<Output = ()>) -> T {
    let (consumer, producer) = (std::pin::pin!(consumer), std::pin::pin!(producer));
    match futures_util::future::select(consumer, producer).await {
        Either::Left((r, _)) => r,
        Either::Right(((), consumer)) => consumer.await,
    }
}

impl Run<'_> {
    /// Whether the checkpoint document does not exist yet.
    fn first(&self) -> bool {
        matches!(self.cond, Condition::Absent)
    }

    /// The window to read from `committed_to`, if there is anything to read yet.
    fn window(&self) -> Option<Window> {
        let cfg = &self.p.cfg;
        let from = self.cp.committed_to;
        let horizon = settled_before(self.clock.now(), cfg.lag);
        let to =
            horizon.min(from + TimeDelta::from_std(cfg.max_window).unwrap_or(TimeDelta::days(1)));
        (to > from).then_some(Window { from, to })
    }

    /// The next message of a slice's fetcher, renewing the lease while it waits.
    async fn next_fetched(
        &mut self,
        rx: &mut mpsc::Receiver<Fetched>,
    ) -> Result<Option<Fetched>, PullError> {
        loop {
            tokio::select! {
                msg = rx.recv() => return Ok(msg),
                () = tokio::time::sleep_until(self.renew_at) => self.renew().await?,
            }
        }
    }

    /// An API item's hash and time; an item without a readable time is landed on its own (see
    /// [`Puller::land_unreadable`]) and gives `None`.
    async fn timed(
        &mut self,
        raw: &serde_json::value::RawValue,
    ) -> Result<Option<([u8; 32], DateTime<Utc>)>, PullError> {
        let item = Item::parse(raw).map_err(|e| PullError::InvalidEntry(e.to_string()))?;
        if let Some(time) = item.time {
            return Ok(Some((item.hash, time)));
        }
        let budget = self.put_budget()?;
        if self.p.land_unreadable(raw, &item.hash, budget).await? == Created::New {
            self.summary.unreadable += 1;
        }
        Ok(None)
    }

    /// Reads one slice's messages into `asm`, renewing the lease while it waits. Segments that
    /// close are written, or collected into `collect` when given. Returns why fetching stopped.
    async fn consume(
        &mut self,
        slice: Window,
        rx: &mut mpsc::Receiver<Fetched>,
        asm: &mut Assembler,
        mut collect: Option<&mut Vec<Segment>>,
    ) -> Result<Option<Stop>, PullError> {
        loop {
            match self.next_fetched(rx).await? {
                None => return Ok(None),
                Some(Fetched::Page(page)) => {
                    self.summary.pages += 1;
                    for raw in page.items {
                        let Some((hash, time)) = self.timed(&raw).await? else {
                            continue;
                        };
                        if !slice.contains(time) {
                            continue;
                        }
                        if let Some(seg) = asm.push(raw, hash, time)? {
                            match collect.as_deref_mut() {
                                Some(c) => c.push(seg),
                                None => self.write(seg).await?,
                            }
                        }
                    }
                }
                Some(Fetched::Restart(at)) => {
                    asm.drop_held_at(at);
                    self.summary.query_restarts += 1;
                }
                Some(Fetched::Stopped(stop)) => return Ok(Some(stop)),
            }
        }
    }

    /// Reads `window` (its slices fetched at once, consumed in order) and writes its segments;
    /// returns why fetching stopped, if it did before the window's end.
    async fn pull(
        &mut self,
        window: Window,
        stop_fetching: Instant,
    ) -> Result<Option<Stop>, PullError> {
        let p = self.p;
        let mut asm = Assembler::new(&p.cfg.prefix, p.limits(), window.from);
        let slices = fetch::slices(window, p.cfg.fetch_concurrency);
        let (txs, rxs) = fetch::channels(slices.len());
        let producers = futures_util::stream::iter(slices.iter().copied().zip(txs))
            .for_each_concurrent(p.cfg.fetch_concurrency, |(slice, tx)| {
                fetch::fetch_slice(&p.api, slice, stop_fetching, tx)
            });
        // Slices are consumed strictly in order, so entries reach the assembler in time order.
        let consumer = async {
            for (slice, mut rx) in slices.iter().zip(rxs) {
                if let Some(stop) = self.consume(*slice, &mut rx, &mut asm, None).await? {
                    return Ok(Some(stop));
                }
            }
            Ok::<_, PullError>(None)
        };
        let stop = alongside(consumer, producers).await?;
        let last = match &stop {
            None => asm.finish(window.to),
            Some(_) => asm.stop(),
        };
        self.write(last).await?;
        Ok(stop)
    }

    /// Redoes the pending segment of a run that died or was paused past its lease: the same
    /// range, into the same key, create-only. If that run's object landed after all, it is the
    /// segment (its entries, its range) and is kept; if not, this run's object is, and any late
    /// PUT of the old run is refused. Entries of another hour (only possible if Vision One
    /// served an entry of that range later than `TV1_LAG`) go to that hour's key of the range.
    /// Returns why fetching stopped, if it did before the range was read.
    async fn redo(
        &mut self,
        pending: Pending,
        fetch_deadline: Instant,
    ) -> Result<Option<Stop>, PullError> {
        let prefix = &self.p.cfg.prefix;
        let ours = match pending.keys.as_slice() {
            [key] => hour_of_key(prefix, pending.from, pending.to, key).is_some(),
            _ => false,
        };
        if !ours {
            return Err(PullError::ForeignPending {
                from: api_time(pending.from),
                to: api_time(pending.to),
                keys: pending.keys,
            });
        }
        tracing::warn!(from = %api_time(pending.from), to = %api_time(pending.to), key = %pending.keys[0], "redoing the pending segment of a run that did not finish");
        let range = Window {
            from: pending.from,
            to: pending.to,
        };
        let unlimited = Limits {
            max_bytes: usize::MAX,
            max_records: usize::MAX,
        };
        let mut asm = Assembler::new(prefix, unlimited, range.from);
        let mut segments = Vec::new();
        let (tx, mut rx) = mpsc::channel(4);
        let producer = fetch::fetch_slice(&self.p.api, range, fetch_deadline, tx);
        let consumer = self.consume(range, &mut rx, &mut asm, Some(&mut segments));
        if let Some(stop) = alongside(consumer, producer).await? {
            return Ok(Some(stop));
        }
        segments.push(asm.finish(range.to));
        let mut objects: Vec<(String, bytes::Bytes, usize)> = segments
            .into_iter()
            .filter_map(|s| s.object)
            .map(|o| {
                (
                    segment_key(prefix, o.hour, range.from, range.to),
                    o.body,
                    o.records,
                )
            })
            .collect();
        // The pending key is always claimed, even if its hour came back empty: that is the fence.
        if !objects.iter().any(|(k, _, _)| *k == pending.keys[0]) {
            objects.push((
                pending.keys[0].clone(),
                crate::lake::encode::ObjectEncoder::new().finish(),
                0,
            ));
        }
        for (key, body, records) in objects {
            self.create(key, body, records).await?;
        }
        self.cp.pending = None;
        self.cp.committed_to = range.to;
        self.summary.recovered = Some(range);
        Ok(None)
    }

    /// Writes the checkpoint (renewing the lease) if it is still as this run last wrote it.
    async fn save(&mut self) -> Result<(), PullError> {
        if Instant::now() >= self.write_deadline {
            return Err(PullError::NoTimeToWrite);
        }
        let now = self.clock.now();
        let lease = self.p.cfg.lease;
        self.cp.lease = Some(Lease {
            run_id: self.summary.run_id.clone(),
            until: now + TimeDelta::from_std(lease).unwrap_or_default(),
        });
        self.write_checkpoint(now).await?;
        self.renew_at = Instant::now() + lease / 3;
        Ok(())
    }

    async fn write_checkpoint(&mut self, now: DateTime<Utc>) -> Result<(), PullError> {
        self.cp.version = crate::audit::checkpoint::CHECKPOINT_VERSION;
        self.cp.updated_at = now;
        self.cp.run_id = self.summary.run_id.clone();
        self.cond = self.p.state.save(&self.cp, &self.cond).await?;
        self.summary.checkpoint_writes += 1;
        Ok(())
    }

    /// Keeps the lease alive while the run waits for pages. Near the deadline the run is about
    /// to end (and the lease it holds outlasts it), so nothing is written then.
    async fn renew(&mut self) -> Result<(), PullError> {
        if Instant::now() >= self.write_deadline {
            self.renew_at = self.write_deadline + self.p.cfg.lease;
            return Ok(());
        }
        tracing::debug!("renewing the lease");
        self.save().await
    }

    /// Time a data PUT may take: it must end before the lease does and before the deadline.
    fn put_budget(&self) -> Result<Duration, PullError> {
        let lease_end = self
            .cp
            .lease
            .as_ref()
            .map(|l| self.clock.instant_at(l.until))
            .unwrap_or_else(Instant::now);
        let end = lease_end
            .checked_sub(LEASE_SLACK)
            .unwrap_or(lease_end)
            .min(self.write_deadline);
        Some(end.saturating_duration_since(Instant::now()))
            .filter(|b| !b.is_zero())
            .ok_or(PullError::NoTimeToWrite)
    }

    /// Creates one data object of the pending segment (create-only), then its OCSF objects.
    async fn create(
        &mut self,
        key: String,
        body: bytes::Bytes,
        records: usize,
    ) -> Result<(), PullError> {
        let size = body.len() as u64;
        let budget = self.put_budget()?;
        match self
            .p
            .sink
            .create_ndjson_gz(&key, body.clone(), budget)
            .await?
        {
            Created::New => {
                tracing::info!(key = %key, records, bytes = size, "object written");
                self.summary.records += records as u64;
                self.summary.objects += 1;
                self.summary.bytes += size;
                self.land_ocsf(&key, Some(body)).await?;
                self.summary.keys.push(key);
            }
            Created::AlreadyExists => {
                tracing::warn!(key = %key, "this range's object was already written by a run that did not commit it; keeping it");
                self.land_ocsf(&key, None).await?;
                self.summary.kept_existing.push(key);
            }
        }
        Ok(())
    }

    /// Writes the OCSF objects of the data object `key`, when the output is on: from `body` when
    /// this run wrote the object, else from the object S3 kept (see [`crate::lake::ocsf::writer`]).
    async fn land_ocsf(&mut self, key: &str, body: Option<bytes::Bytes>) -> Result<(), PullError> {
        let Some(ocsf) = &self.p.ocsf else {
            return Ok(());
        };
        let budget = self.put_budget()?;
        let (sink, prefix) = (&self.p.sink, &self.p.cfg.prefix);
        let landed = ocsf
            .land_object(Dataset::Audit, sink, prefix, key, body, budget)
            .await?;
        self.summary
            .ocsf
            .get_or_insert_with(Landed::default)
            .add(&landed);
        Ok(())
    }

    /// Writes one segment: write-ahead (pending + the previous commit + lease renewal), the
    /// object, then the commit in memory; the commit reaches S3 with the next write or
    /// [`Self::flush`].
    async fn write(&mut self, seg: Segment) -> Result<(), PullError> {
        debug_assert_eq!(seg.from, self.cp.committed_to);
        let Some(obj) = seg.object else {
            if seg.to > self.cp.committed_to {
                self.cp.committed_to = seg.to;
            }
            return Ok(());
        };
        self.cp.pending = Some(Pending {
            from: seg.from,
            to: seg.to,
            keys: vec![obj.key.clone()],
        });
        self.save().await?;
        self.create(obj.key, obj.body, obj.records).await?;
        self.cp.pending = None;
        self.cp.committed_to = seg.to;
        Ok(())
    }

    /// Commits what is in memory and releases the lease, so the next run need not wait.
    async fn flush(&mut self) -> Result<(), PullError> {
        if Instant::now() >= self.write_deadline {
            return Err(PullError::NoTimeToWrite);
        }
        self.cp.lease = None;
        let now = self.clock.now();
        self.write_checkpoint(now).await
    }

    /// Ends a run that read its whole window: reconciles what is due, commits, reports.
    async fn complete(
        mut self,
        fetch_deadline: Instant,
        started: Instant,
    ) -> Result<RunSummary, PullError> {
        self.reconcile(fetch_deadline).await?;
        self.flush().await?;
        Ok(self.finish(started))
    }

    /// Ends a run whose fetching stopped early: commits, then reports.
    async fn end(mut self, stop: Stop, started: Instant) -> Result<RunSummary, PullError> {
        self.flush().await?;
        match stop {
            Stop::Deadline(why) => {
                self.summary.outcome = Outcome::Partial;
                self.summary.stopped_early = Some(why);
                Ok(self.finish(started))
            }
            failure => {
                let e = match failure {
                    Stop::Api(e) => PullError::VisionOne(e),
                    _ => PullError::TokenChurn(MAX_RESTARTS_WITHOUT_PROGRESS),
                };
                let s = self.finish(started);
                tracing::error!(error = %e, summary = %serde_json::to_string(&s).unwrap_or_default(), "run failed; progress up to the checkpoint is kept");
                Err(e)
            }
        }
    }

    fn finish(mut self, started: Instant) -> RunSummary {
        let now = self.clock.now();
        if self.summary.outcome != Outcome::Skipped {
            self.summary.checkpoint_after = Some(self.cp.committed_to);
            self.summary.lag_seconds = Some((now - self.cp.committed_to).num_seconds());
        }
        self.summary.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(summary = %serde_json::to_string(&self.summary).unwrap_or_default(), "run finished");
        self.summary
    }
}
