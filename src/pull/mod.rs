//! One scheduled run, a backfill, Test Connection and status: the audit corridor's workflows.
//!
//! A scheduled run plans a window `[committed_to, min(committed_to + max_window, now - lag))`,
//! reads it page by page, cuts it into segments (see [`crate::segment`]) and for each segment:
//!
//! 1. records the segment and its object key in the checkpoint (`pending`, conditional write),
//! 2. puts the object,
//! 3. moves `committed_to` to the segment's end (folded into the next conditional write).
//!
//! A run that dies anywhere leaves either nothing uncommitted or a `pending` segment; the next
//! run deletes that segment's object before it starts, so every entry ends up in S3 once.

use crate::checkpoint::{Checkpoint, LastError, Pending, StateError, StateStore};
use crate::config::PullerConfig;
use crate::secret::SsmSecret;
use crate::segment::{Assembler, Item, Limits, OutOfOrder, Segment};
use crate::sink::{Condition, S3Sink, SinkError};
use crate::timefmt::{api_time, floor_second};
use crate::vision_one::{self, Backoff, VisionOneError};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use fetch::Fetched;
use futures_util::StreamExt;
use futures_util::future::Either;
use serde::Serialize;
use tokio::time::Instant;

mod backfill;
mod fetch;
mod invoke;
mod ops;

pub use backfill::{BackfillSummary, Progress};
pub use invoke::{Action, METRIC_LAG, METRIC_NAMESPACE, emf_line, time_left};
pub use ops::{ConnectionCheck, StatusReport};

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
    /// Conditional writes of the checkpoint (S3 PUTs besides the objects).
    pub checkpoint_writes: u64,
    /// `committed_to` when the run started (`None` on the first run).
    pub checkpoint_before: Option<DateTime<Utc>>,
    /// `committed_to` when it ended.
    pub checkpoint_after: Option<DateTime<Utc>>,
    /// Seconds between `checkpoint_after` and the end of the run.
    pub lag_seconds: Option<i64>,
    /// Why the run stopped before the window's end.
    pub stopped_early: Option<String>,
    /// An abandoned segment of an earlier run that this run cleaned up.
    pub recovered: Option<Window>,
    /// Page-token expiries recovered from.
    pub query_restarts: u32,
    /// Start of the run.
    pub started_at: DateTime<Utc>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

/// The audit corridor, built once per process and shared by every invocation.
#[derive(Debug)]
pub struct Puller {
    cfg: PullerConfig,
    api: vision_one::Client,
    sink: S3Sink,
    state: StateStore,
}

/// Page-token expiries tolerated in a row without the resume point moving.
const MAX_RESTARTS_WITHOUT_PROGRESS: u32 = 10;

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
    dirty: bool,
    lease_until: DateTime<Utc>,
    write_deadline: Instant,
    summary: RunSummary,
}

impl Puller {
    /// Builds the corridor from its configuration and shared clients.
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
        let sink = S3Sink::new(s3, cfg.bucket.clone());
        let state = StateStore::new(sink.clone(), &cfg.prefix);
        Puller {
            cfg,
            api,
            sink,
            state,
        }
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

    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.cfg.object_max_bytes,
            max_records: self.cfg.object_max_records,
        }
    }

    /// One scheduled run, finishing before `deadline`. Records the outcome in the status document.
    pub async fn run(&self, deadline: Instant) -> Result<RunSummary, PullError> {
        let result = self.run_inner(deadline).await;
        let now = Utc::now();
        let mut status = self
            .state
            .load_status()
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        status.last_run_at = Some(now);
        match &result {
            Ok(s) if s.outcome != Outcome::Skipped => {
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

    async fn run_inner(&self, deadline: Instant) -> Result<RunSummary, PullError> {
        let started = Instant::now();
        let now = Utc::now();
        let run_id = hex::encode(rand::random::<[u8; 8]>());
        let margin = self.cfg.deadline_margin;
        let write_deadline = deadline.checked_sub(margin / 4).unwrap_or(deadline);
        let lease_until = now
            + TimeDelta::from_std(deadline.saturating_duration_since(started))
                .unwrap_or(TimeDelta::zero());
        let (cp, cond, before) = match self.state.load().await? {
            Some((cp, etag)) => {
                let before = Some(cp.committed_to);
                (cp, Condition::Matches(etag), before)
            }
            None => {
                let origin = floor_second(
                    now - TimeDelta::from_std(self.cfg.initial_lookback)
                        .unwrap_or(TimeDelta::days(1)),
                );
                let cp = Checkpoint::start(origin, now, run_id.clone());
                (cp, Condition::Absent, None)
            }
        };
        let mut run = Run {
            p: self,
            summary: RunSummary {
                action: "pull",
                outcome: Outcome::Complete,
                run_id: run_id.clone(),
                window: None,
                pages: 0,
                records: 0,
                objects: 0,
                bytes: 0,
                keys: Vec::new(),
                checkpoint_writes: 0,
                checkpoint_before: before,
                checkpoint_after: before,
                lag_seconds: None,
                stopped_early: None,
                recovered: None,
                query_restarts: 0,
                started_at: now,
                duration_ms: 0,
            },
            cp,
            cond,
            dirty: false,
            lease_until,
            write_deadline,
        };
        if let Some(pending) = run.cp.pending.clone() {
            if pending.lease_until > now {
                tracing::info!(holder = %pending.run_id, lease_until = %pending.lease_until, "another run holds the checkpoint; skipping");
                run.summary.outcome = Outcome::Skipped;
                run.summary.stopped_early = Some(format!(
                    "run {} holds the checkpoint until {}",
                    pending.run_id,
                    api_time(pending.lease_until)
                ));
                return Ok(run.finish(started));
            }
            run.recover(pending).await?;
        }

        let from = run.cp.committed_to;
        let horizon = floor_second(now - TimeDelta::from_std(self.cfg.lag).unwrap_or_default());
        let to = horizon
            .min(from + TimeDelta::from_std(self.cfg.max_window).unwrap_or(TimeDelta::days(1)));
        if to <= from {
            run.summary.outcome = Outcome::UpToDate;
            run.flush().await?;
            return Ok(run.finish(started));
        }
        let window = Window { from, to };
        run.summary.window = Some(window);
        tracing::info!(
            run_id = %run_id,
            from = %api_time(from),
            to = %api_time(to),
            deadline_in_ms = deadline.saturating_duration_since(started).as_millis() as u64,
            "pulling audit logs"
        );

        let stop_fetching = deadline.checked_sub(margin).unwrap_or(started);
        let mut asm = Assembler::new(&self.cfg.prefix, self.limits(), from);
        let slices = fetch::slices(window, self.cfg.fetch_concurrency);
        let (txs, rxs) = fetch::channels(slices.len());
        let producers = futures_util::stream::iter(slices.iter().copied().zip(txs))
            .for_each_concurrent(self.cfg.fetch_concurrency, |(slice, tx)| {
                fetch::fetch_slice(&self.api, slice, stop_fetching, tx)
            });
        // Slices are consumed strictly in order, so entries reach the assembler in time order.
        let consumer = async {
            for (slice, mut rx) in slices.iter().zip(rxs) {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        Fetched::Page(page) => {
                            run.summary.pages += 1;
                            for raw in page.items {
                                let item = Item::parse(&raw)
                                    .map_err(|e| PullError::InvalidEntry(e.to_string()))?;
                                // The end bound may be inclusive: entries at a slice's end belong
                                // to the next slice (or the next window).
                                if item.time.is_some_and(|t| t < slice.from || t >= slice.to) {
                                    continue;
                                }
                                if let Some(seg) = asm.push(raw, item)? {
                                    run.write(seg).await?;
                                }
                            }
                        }
                        Fetched::Restart(at) => {
                            asm.drop_held_at(at);
                            run.summary.query_restarts += 1;
                        }
                        Fetched::Stopped(stop) => return Ok(Some(stop)),
                    }
                }
            }
            Ok::<_, PullError>(None)
        };
        let stop = {
            let (consumer, producers) = (std::pin::pin!(consumer), std::pin::pin!(producers));
            match futures_util::future::select(consumer, producers).await {
                // Done (or failed) first: fetchers still running are dropped.
                Either::Left((r, _)) => r?,
                Either::Right(((), consumer)) => consumer.await?,
            }
        };
        let last = match &stop {
            None => asm.finish(to),
            Some(_) => asm.stop(),
        };
        run.write(last).await?;
        run.flush().await?;
        match stop {
            None => Ok(run.finish(started)),
            Some(Stop::Deadline(why)) => {
                run.summary.outcome = Outcome::Partial;
                run.summary.stopped_early = Some(why);
                Ok(run.finish(started))
            }
            Some(failure) => {
                let e = match failure {
                    Stop::Api(e) => PullError::VisionOne(e),
                    _ => PullError::TokenChurn(MAX_RESTARTS_WITHOUT_PROGRESS),
                };
                let s = run.finish(started);
                tracing::error!(error = %e, summary = %serde_json::to_string(&s).unwrap_or_default(), "run failed; progress up to the checkpoint is kept");
                Err(e)
            }
        }
    }
}

impl Run<'_> {
    /// Abandoned segment of a dead run: take the checkpoint over (so no other run races us),
    /// then delete the segment's objects. Nothing in them was committed.
    async fn recover(&mut self, pending: Pending) -> Result<(), PullError> {
        tracing::warn!(holder = %pending.run_id, from = %api_time(pending.from), to = %api_time(pending.to), "removing an abandoned segment");
        self.cp.pending = Some(Pending {
            lease_until: self.lease_until,
            run_id: self.summary.run_id.clone(),
            ..pending.clone()
        });
        self.save().await?;
        for key in &pending.keys {
            self.p.sink.delete(key).await?;
        }
        self.cp.pending = None;
        self.dirty = true;
        self.summary.recovered = Some(Window {
            from: pending.from,
            to: pending.to,
        });
        Ok(())
    }

    /// Past the lease the checkpoint may belong to another run: write nothing more.
    fn check_write_time(&self) -> Result<(), PullError> {
        if Instant::now() >= self.write_deadline {
            Err(PullError::NoTimeToWrite)
        } else {
            Ok(())
        }
    }

    async fn save(&mut self) -> Result<(), PullError> {
        self.check_write_time()?;
        self.cp.updated_at = Utc::now();
        self.cp.run_id = self.summary.run_id.clone();
        self.cond = self.p.state.save(&self.cp, &self.cond).await?;
        self.summary.checkpoint_writes += 1;
        self.dirty = false;
        Ok(())
    }

    /// Writes one segment: write-ahead (pending + the previous commit), object, then commit in
    /// memory; the commit reaches S3 with the next write or [`Self::flush`].
    async fn write(&mut self, seg: Segment) -> Result<(), PullError> {
        debug_assert_eq!(seg.from, self.cp.committed_to);
        let Some(obj) = seg.object else {
            if seg.to > self.cp.committed_to {
                self.cp.committed_to = seg.to;
                self.dirty = true;
            }
            return Ok(());
        };
        self.cp.pending = Some(Pending {
            from: seg.from,
            to: seg.to,
            keys: vec![obj.key.clone()],
            lease_until: self.lease_until,
            run_id: self.summary.run_id.clone(),
        });
        self.save().await?;
        self.check_write_time()?;
        let size = obj.body.len() as u64;
        self.p.sink.put_ndjson_gz(&obj.key, obj.body).await?;
        tracing::info!(key = %obj.key, records = obj.records, bytes = size, "object written");
        self.summary.records += obj.records as u64;
        self.summary.objects += 1;
        self.summary.bytes += size;
        self.summary.keys.push(obj.key);
        self.cp.pending = None;
        self.cp.committed_to = seg.to;
        self.dirty = true;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PullError> {
        if self.dirty || matches!(self.cond, Condition::Absent) {
            self.save().await?;
        }
        Ok(())
    }

    fn finish(mut self, started: Instant) -> RunSummary {
        let now = Utc::now();
        if self.summary.outcome != Outcome::Skipped {
            self.summary.checkpoint_after = Some(self.cp.committed_to);
            self.summary.lag_seconds = Some((now - self.cp.committed_to).num_seconds());
        }
        self.summary.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(summary = %serde_json::to_string(&self.summary).unwrap_or_default(), "run finished");
        self.summary
    }
}
