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
use crate::segment::{Assembler, Limits, OutOfOrder, Segment, parse_item, partition};
use crate::sink::{Condition, S3Sink, SinkError};
use crate::timefmt::{api_time, ceil_hour, compact_time, floor_hour, floor_second};
use crate::vision_one::{self, Backoff, Page, VisionOneError};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

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
    /// A note for the operator (e.g. why the range was clamped).
    pub note: Option<String>,
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

/// Result of Test Connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionCheck {
    /// `test-connection`.
    pub action: &'static str,
    /// Whether Vision One answered with data access.
    pub ok: bool,
    /// `Connection successful`, or the actionable error.
    pub message: String,
    /// When the check ran.
    pub at: DateTime<Utc>,
    /// The origin checked.
    pub base_url: String,
}

/// Status as `tv1 status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// `Active` when the last run succeeded, `Error` when it failed, `Never run` before the first.
    pub state: &'static str,
    /// The checkpoint document.
    pub checkpoint: Option<Checkpoint>,
    /// Seconds between now and `committed_to`.
    pub lag_seconds: Option<i64>,
    /// When the last successful run ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Entries the last successful run wrote.
    pub last_success_records: Option<u64>,
    /// The last successful run's summary.
    pub last_success: Option<serde_json::Value>,
    /// The last failure since then.
    pub last_error: Option<LastError>,
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

enum Stop {
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
                let cp = Checkpoint {
                    version: 1,
                    origin,
                    committed_to: origin,
                    pending: None,
                    updated_at: now,
                    run_id: run_id.clone(),
                };
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
        let mut next: Option<String> = None;
        let mut query_start = from;
        let mut restarts_without_progress = 0;
        let stop = loop {
            if Instant::now() >= stop_fetching {
                break Some(Stop::Deadline("run deadline approaching".into()));
            }
            let page = match &next {
                None => {
                    self.api
                        .first_page(query_start, to, None, stop_fetching)
                        .await
                }
                Some(link) => self.api.next_page(link, stop_fetching).await,
            };
            let page: Page = match page {
                Ok(p) => p,
                Err(VisionOneError::PageTokenExpired) => {
                    let resume = asm.resume_point();
                    restarts_without_progress = if resume > query_start {
                        0
                    } else {
                        restarts_without_progress + 1
                    };
                    if restarts_without_progress > MAX_RESTARTS_WITHOUT_PROGRESS {
                        break Some(Stop::Churn);
                    }
                    tracing::warn!(resume = %api_time(resume), "page token expired; restarting the query");
                    asm.drop_held();
                    run.summary.query_restarts += 1;
                    query_start = resume;
                    next = None;
                    continue;
                }
                Err(e) if e.is_deadline() => break Some(Stop::Deadline(e.to_string())),
                Err(e) => break Some(Stop::Api(e)),
            };
            run.summary.pages += 1;
            for raw in page.items {
                let (value, time) =
                    parse_item(&raw).map_err(|e| PullError::InvalidEntry(e.to_string()))?;
                if let Some(t) = time
                    && (t < from || t >= to)
                {
                    // The end bound may be inclusive: entries at `to` belong to the next window.
                    continue;
                }
                if let Some(seg) = asm.push(raw, &value, time)? {
                    run.write(seg).await?;
                }
            }
            match page.next_link {
                Some(link) => next = Some(link),
                None => break None,
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
        let now = Utc::now();
        if from < now - TimeDelta::days(180) {
            return Err(PullError::BadRange(format!(
                "Vision One keeps 180 days of audit logs; {} is older",
                api_time(from)
            )));
        }
        let mut summary = BackfillSummary {
            action: "backfill",
            requested: Window { from, to },
            range: None,
            complete: true,
            completed_to: None,
            hours: 0,
            pages: 0,
            records: 0,
            objects: 0,
            removed: 0,
            note: None,
        };
        let horizon = floor_second(now - TimeDelta::from_std(self.cfg.lag).unwrap_or_default());
        let origin = match self.state.load().await? {
            Some((cp, _)) => cp.origin,
            None => {
                // No scheduled run yet: pin its origin at the end of this backfill, so the two
                // never overlap and the schedule carries on where the backfill ends.
                let origin = ceil_hour(to).min(horizon);
                let cp = Checkpoint {
                    version: 1,
                    origin,
                    committed_to: origin,
                    pending: None,
                    updated_at: now,
                    run_id: "backfill".into(),
                };
                match self.state.save(&cp, &Condition::Absent).await {
                    Ok(_) | Err(StateError::LostRace) => {}
                    Err(e) => return Err(e.into()),
                }
                self.state
                    .load()
                    .await?
                    .map(|(cp, _)| cp.origin)
                    .unwrap_or(origin)
            }
        };
        let start = floor_hour(from);
        let end = ceil_hour(to).min(origin).min(horizon);
        if end <= start {
            summary.note = Some(format!(
                "nothing to do: the scheduled puller owns everything from its origin {} on",
                api_time(origin)
            ));
            return Ok(summary);
        }
        if ceil_hour(to) > end {
            summary.note = Some(format!(
                "range clamped to end at {} (the scheduled puller's origin, or now minus the lag)",
                api_time(end)
            ));
        }
        summary.range = Some(Window {
            from: start,
            to: end,
        });
        let total = ((end - start).num_seconds() as u64).div_ceil(3600);
        // Leave time to write the hour being read when the deadline comes.
        let fetch_deadline = deadline
            .checked_sub(self.cfg.deadline_margin)
            .unwrap_or(deadline);
        let mut hour = start;
        while hour < end {
            let unit = Window {
                from: hour,
                to: (hour + TimeDelta::hours(1)).min(end),
            };
            match self.backfill_hour(unit, fetch_deadline, &mut summary).await {
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
        Ok(summary)
    }

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
        let part_prefix = format!("{}{name}-", partition(&self.cfg.prefix, unit.from));
        let mut restarts = 0;
        'query: loop {
            // One hour is one unit: on a page-token expiry it is read again from its start, and
            // its parts (numbered in API order) are overwritten with the same content.
            let mut asm = Assembler::new("", self.limits(), unit.from);
            let mut written: Vec<String> = Vec::new();
            let (mut records, mut pages) = (0u64, 0u64);
            let mut page = self
                .api
                .first_page(unit.from, unit.to, None, deadline)
                .await;
            loop {
                let p = match page {
                    Ok(p) => p,
                    Err(VisionOneError::PageTokenExpired)
                        if restarts < MAX_RESTARTS_WITHOUT_PROGRESS =>
                    {
                        restarts += 1;
                        summary.pages += pages;
                        continue 'query;
                    }
                    Err(e) => return Err(e.into()),
                };
                pages += 1;
                let mut closed = Vec::new();
                for raw in p.items {
                    let (value, time) =
                        parse_item(&raw).map_err(|e| PullError::InvalidEntry(e.to_string()))?;
                    if time.is_some_and(|t| t < unit.from || t >= unit.to) {
                        continue;
                    }
                    closed.extend(asm.push(raw, &value, time)?);
                }
                if p.next_link.is_none() {
                    closed.push(asm.finish(unit.to));
                }
                for obj in closed.into_iter().filter_map(|s| s.object) {
                    let key = format!("{part_prefix}{:03}.jsonl.gz", written.len());
                    self.sink.put_ndjson_gz(&key, obj.body).await?;
                    records += obj.records as u64;
                    written.push(key);
                }
                match p.next_link {
                    Some(link) => page = self.api.next_page(&link, deadline).await,
                    None => break,
                }
            }
            // A shorter rerun (entries aged out) must not leave an older, longer part list behind.
            for stale in self.sink.list(&part_prefix).await? {
                if !written.contains(&stale) {
                    self.sink.delete(&stale).await?;
                    summary.removed += 1;
                }
            }
            summary.pages += pages;
            summary.records += records;
            summary.objects += written.len() as u64;
            return Ok(());
        }
    }

    /// Test Connection: reads the token and makes one small request.
    pub async fn test_connection(&self) -> ConnectionCheck {
        let at = Utc::now();
        let deadline = Instant::now() + self.cfg.http_timeout.min(Duration::from_secs(30)) * 2;
        let result = self
            .api
            .first_page(
                floor_second(at) - TimeDelta::hours(1),
                floor_second(at),
                Some(50),
                deadline,
            )
            .await;
        let (ok, message) = match result {
            Ok(_) => (true, "Connection successful".to_owned()),
            Err(e) => (false, e.to_string()),
        };
        ConnectionCheck {
            action: "test-connection",
            ok,
            message,
            at,
            base_url: self.cfg.base_url.origin().ascii_serialization(),
        }
    }

    /// Collection status from the state documents.
    pub async fn status(&self) -> Result<StatusReport, PullError> {
        let cp = self.state.load().await?.map(|(cp, _)| cp);
        let status = self.state.load_status().await?.unwrap_or_default();
        let state = match (&status.last_run_at, &status.last_error) {
            (None, _) => "Never run",
            (_, Some(_)) => "Error",
            _ => "Active",
        };
        Ok(StatusReport {
            state,
            lag_seconds: cp
                .as_ref()
                .map(|c| (Utc::now() - c.committed_to).num_seconds()),
            checkpoint: cp,
            last_success_at: status.last_success_at,
            last_success_records: status
                .last_success
                .as_ref()
                .and_then(|s| s.get("records"))
                .and_then(|r| r.as_u64()),
            last_success: status.last_success,
            last_error: status.last_error,
        })
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

    async fn save(&mut self) -> Result<(), PullError> {
        if Instant::now() >= self.write_deadline {
            // Past the lease the checkpoint may belong to another run: write nothing more.
            return Err(PullError::NoTimeToWrite);
        }
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
        if Instant::now() >= self.write_deadline {
            return Err(PullError::NoTimeToWrite);
        }
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

/// CloudWatch namespace of the puller's metrics.
pub const METRIC_NAMESPACE: &str = "tv1-connector";
/// Seconds between the end of a run and its checkpoint: how far collection lags.
pub const METRIC_LAG: &str = "CollectionLagSeconds";

/// The run's metrics as one CloudWatch embedded-metric-format line, for a pull summary
/// (`None` for other actions). Printed on its own line to stdout, CloudWatch turns it into
/// metrics without any API call.
pub fn emf_line(
    summary: &serde_json::Value,
    function_name: &str,
    timestamp_ms: i64,
) -> Option<String> {
    if summary.get("action")? != "pull" {
        return None;
    }
    let lag = summary.get("lag_seconds")?.as_i64()?;
    let line = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    {"Name": METRIC_LAG, "Unit": "Seconds"},
                    {"Name": "RecordsWritten", "Unit": "Count"},
                    {"Name": "ObjectsWritten", "Unit": "Count"},
                    {"Name": "PagesFetched", "Unit": "Count"}
                ]
            }]
        },
        "FunctionName": function_name,
        METRIC_LAG: lag,
        "RecordsWritten": summary.get("records").cloned().unwrap_or_default(),
        "ObjectsWritten": summary.get("objects").cloned().unwrap_or_default(),
        "PagesFetched": summary.get("pages").cloned().unwrap_or_default(),
    });
    Some(line.to_string())
}

/// Time left in an invocation, from the runtime's deadline (epoch milliseconds).
///
/// `cargo lambda watch` sends the function timeout itself (e.g. `600000`) instead of an epoch
/// time; a value that cannot be a deadline of today is read as such a duration.
pub fn time_left(deadline_ms: u64, now_ms: u64) -> Duration {
    const DAY_MS: u64 = 86_400_000;
    if deadline_ms + DAY_MS < now_ms {
        Duration::from_millis(deadline_ms)
    } else {
        Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    }
}

/// What an invocation of the audit-puller function asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A scheduled run (an EventBridge event, or `{"action":"pull"}`).
    Pull,
    /// `{"action":"test-connection"}`.
    TestConnection,
    /// `{"action":"status"}`.
    Status,
    /// `{"action":"backfill","from":"...","to":"..."}`.
    Backfill {
        /// Start.
        from: DateTime<Utc>,
        /// End.
        to: DateTime<Utc>,
    },
}

impl Action {
    /// Reads the invocation payload. Anything without an `action` (such as an EventBridge
    /// scheduled event) is a scheduled run.
    pub fn from_event(event: &serde_json::Value) -> Result<Action, String> {
        let Some(action) = event.get("action") else {
            return Ok(Action::Pull);
        };
        let time = |k: &str| {
            let raw = event
                .get(k)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("backfill needs \"{k}\" (an RFC 3339 time)"))?;
            crate::timefmt::parse_user_time(raw)
                .ok_or_else(|| format!("\"{k}\": {raw:?} is not a time (use 2026-11-20T00:00:00Z)"))
        };
        match action.as_str() {
            Some("pull") => Ok(Action::Pull),
            Some("test-connection") => Ok(Action::TestConnection),
            Some("status") => Ok(Action::Status),
            Some("backfill") => Ok(Action::Backfill {
                from: time("from")?,
                to: time("to")?,
            }),
            _ => Err(format!(
                "unknown action {action}; expected pull, test-connection, status or backfill"
            )),
        }
    }
}

impl Puller {
    /// Runs one invocation of the function: the single entry point the Lambda binary calls.
    pub async fn handle(
        &self,
        event: &serde_json::Value,
        deadline: Instant,
    ) -> Result<serde_json::Value, PullError> {
        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).expect("summaries serialise")
        }
        Ok(
            match Action::from_event(event).map_err(PullError::BadInvocation)? {
                Action::Pull => json(&self.run(deadline).await?),
                Action::TestConnection => json(&self.test_connection().await),
                Action::Status => json(&self.status().await?),
                Action::Backfill { from, to } => {
                    json(&self.backfill(from, to, deadline, &|_| {}).await?)
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_for_pulls_only() {
        let s = serde_json::json!({"action": "pull", "lag_seconds": 301, "records": 10, "objects": 2, "pages": 3});
        let line = emf_line(&s, "fn", 1_700_000_000_000).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["CollectionLagSeconds"], 301);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "tv1-connector"
        );
        assert_eq!(v["FunctionName"], "fn");
        assert!(!line.contains('\n'));
        assert!(emf_line(&serde_json::json!({"action": "status"}), "fn", 0).is_none());
        assert!(
            emf_line(
                &serde_json::json!({"action": "pull", "lag_seconds": null}),
                "fn",
                0
            )
            .is_none()
        );
    }

    #[test]
    fn time_left_reads_both_deadline_forms() {
        let now = 1_795_306_025_623;
        assert_eq!(time_left(now + 30_000, now), Duration::from_secs(30));
        assert_eq!(time_left(now - 5, now), Duration::ZERO);
        assert_eq!(
            time_left(600_000, now),
            Duration::from_secs(600),
            "cargo lambda watch"
        );
    }

    #[test]
    fn actions() {
        let scheduled: serde_json::Value =
            serde_json::from_str(include_str!("../events/schedule.json")).unwrap();
        assert_eq!(Action::from_event(&scheduled), Ok(Action::Pull));
        let tc = serde_json::json!({"action": "test-connection"});
        assert_eq!(Action::from_event(&tc), Ok(Action::TestConnection));
        let bf: serde_json::Value =
            serde_json::from_str(include_str!("../events/backfill.json")).unwrap();
        assert!(matches!(
            Action::from_event(&bf),
            Ok(Action::Backfill { .. })
        ));
        let bad = serde_json::json!({"action": "backfill", "from": "yesterday", "to": "2026-11-20T00:00:00Z"});
        assert!(Action::from_event(&bad).unwrap_err().contains("\"from\""));
        assert!(Action::from_event(&serde_json::json!({"action": "dance"})).is_err());
    }
}
