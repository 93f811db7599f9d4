//! One scheduled run (see the module above for the sequence it follows): the lease, the
//! window, pages fetched alongside the segments written from them, the redo of a segment a
//! dead run left pending, and the checkpoint moved after each object.

use super::fetch::{self, Fetched};
use super::{
    MAX_RESTARTS_WITHOUT_PROGRESS, Outcome, PullError, Puller, RunSummary, Window, settled_before,
};
use crate::audit::checkpoint::{Checkpoint, LastError, Lease, Pending};
use crate::audit::segment::{Assembler, Item, Limits, Segment, hour_of_key, segment_key};
use crate::audit::vision_one::VisionOneError;
use crate::lake::clock::RunClock;
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::Landed;
use crate::lake::sink::{Condition, Created};
use crate::timefmt::{api_time, floor_second};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use futures_util::StreamExt;
use futures_util::future::Either;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Time kept between the end of a data PUT and the lease's expiry.
const LEASE_SLACK: Duration = Duration::from_millis(500);

/// Why fetching ended before the window's end.
pub(super) enum Stop {
    Deadline(String),
    Api(VisionOneError),
    Churn,
}

pub(super) struct Run<'a> {
    pub(super) p: &'a Puller,
    pub(super) cp: Checkpoint,
    pub(super) cond: Condition,
    pub(super) clock: RunClock,
    pub(super) write_deadline: Instant,
    pub(super) renew_at: Instant,
    /// Vision One's `429`s before this run (reconciliation yields once there are more).
    pub(super) throttled_at_start: u64,
    /// The window this run's pull reads and when it began reading it (S3's clock): time of
    /// it that was already the reconciliation horizon old then needs no second read.
    pub(super) pulled: Option<(Window, DateTime<Utc>)>,
    pub(super) summary: RunSummary,
}

impl Puller {
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
        let (mut cp, cond, before) = self.checkpoint_or_first(loaded, now, &run_id).await?;
        match (cp.ocsf_to, cp.ocsf_until) {
            (None, _) => {
                let first = matches!(cond, Condition::Absent);
                let to = super::ocsf_periods::initial_ocsf_to(first, cp.origin, cp.committed_to);
                cp.ocsf_to = Some(to);
                cp.ocsf_until = Some(super::ocsf_periods::period_end(to, self.cfg.ocsf_period));
            }
            // Written by a version whose periods were hours, which may have begun this one's
            // objects: it is finished as an hour.
            (Some(to), None) => cp.ocsf_until = Some(to + TimeDelta::hours(1)),
            (Some(_), Some(_)) => {}
        }
        let mut run = Run {
            p: self,
            summary: RunSummary {
                stream: self.cfg.stream,
                ..RunSummary::new(
                    run_id.clone(),
                    now,
                    before,
                    clock.skew.num_seconds(),
                    self.ocsf.is_some(),
                )
            },
            cp,
            cond,
            clock,
            write_deadline: deadline.checked_sub(margin / 4).unwrap_or(deadline),
            renew_at: Instant::now(),
            throttled_at_start: self.api.throttled(),
            pulled: None,
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
            && !run.ocsf_due()
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
        run.pulled = Some((window, run.clock.now()));
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
pub(super) async fn alongside<T>(
    consumer: impl Future<Output = T>,
    producer: impl Future<Output = ()>,
) -> T {
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
    pub(super) async fn next_fetched(
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
    pub(super) async fn timed(
        &mut self,
        raw: &serde_json::value::RawValue,
    ) -> Result<Option<([u8; 32], DateTime<Utc>)>, PullError> {
        let item = Item::parse_by(raw, self.p.cfg.stream.time_field())
            .map_err(|e| PullError::InvalidEntry(e.to_string()))?;
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
                Some(Fetched::Reread { halved: true }) => self.summary.ranges_halved += 1,
                Some(Fetched::Reread { halved: false }) => self.summary.query_restarts += 1,
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
        let ours = !pending.keys.is_empty()
            && pending
                .keys
                .iter()
                .all(|key| hour_of_key(prefix, pending.from, pending.to, key).is_some());
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
            .flat_map(|s| s.objects)
            .map(|o| {
                (
                    segment_key(prefix, o.hour, range.from, range.to),
                    o.body,
                    o.records,
                )
            })
            .collect();
        // Every pending key is claimed, even if its hour came back empty: that is the fence.
        for key in &pending.keys {
            if !objects.iter().any(|(k, _, _)| k == key) {
                objects.push((
                    key.clone(),
                    crate::lake::encode::ObjectEncoder::new().finish(),
                    0,
                ));
            }
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
    pub(super) async fn save(&mut self) -> Result<(), PullError> {
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
    pub(super) async fn renew(&mut self) -> Result<(), PullError> {
        if Instant::now() >= self.write_deadline {
            self.renew_at = self.write_deadline + self.p.cfg.lease;
            return Ok(());
        }
        tracing::debug!("renewing the lease");
        self.save().await
    }

    /// Time a data PUT may take: it must end before the lease does and before the deadline.
    pub(super) fn put_budget(&self) -> Result<Duration, PullError> {
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

    /// Creates one data object of the pending segment, then its OCSF objects.
    async fn create(
        &mut self,
        key: String,
        body: bytes::Bytes,
        records: usize,
    ) -> Result<(), PullError> {
        let size = body.len() as u64;
        match self.create_object(&key, body).await? {
            Created::New => {
                tracing::info!(key = %key, records, bytes = size, "object written");
                self.summary.records += records as u64;
                self.summary.objects += 1;
                self.summary.bytes += size;
                self.summary.keys.push(key);
            }
            Created::AlreadyExists => {
                tracing::warn!(key = %key, "this range's object was already written by a run that did not commit it; keeping it");
                self.summary.kept_existing.push(key);
            }
        }
        Ok(())
    }

    /// Creates the data object `key` (create-only, within the lease), then its OCSF objects:
    /// from `body` when this run wrote it, else from the object a run before it left there.
    pub(super) async fn create_object(
        &mut self,
        key: &str,
        body: bytes::Bytes,
    ) -> Result<Created, PullError> {
        let budget = self.put_budget()?;
        let made = self
            .p
            .sink
            .create_ndjson_gz(key, body.clone(), budget)
            .await?;
        // The pull's objects go into their period's OCSF objects once the period is committed
        // (`ocsf_periods.rs`); late objects, and pull objects of an hour that output does not
        // cover, get their own.
        let prefix = &self.p.cfg.prefix;
        let name = key.rsplit('/').next().unwrap_or(key);
        if !super::ocsf_periods::is_pull_object(name)
            || self.own_ocsf(super::segment::hour_of_partition(prefix, key))
        {
            self.land_ocsf(key, (made == Created::New).then_some(body))
                .await?;
        }
        Ok(made)
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
            .land_object(
                Dataset::of(self.p.cfg.stream),
                sink,
                prefix,
                key,
                body,
                budget,
            )
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
        if seg.objects.is_empty() {
            if seg.to > self.cp.committed_to {
                self.cp.committed_to = seg.to;
            }
            return Ok(());
        }
        self.cp.pending = Some(Pending {
            from: seg.from,
            to: seg.to,
            keys: seg.objects.iter().map(|o| o.key.clone()).collect(),
        });
        self.save().await?;
        for obj in seg.objects {
            self.create(obj.key, obj.body, obj.records).await?;
        }
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
        self.ocsf_periods().await?;
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
