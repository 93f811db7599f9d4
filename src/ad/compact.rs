//! Closed windows of landed batches into the lake: one gzip JSON Lines object per (category,
//! day) and one quarantine object per window, their OCSF Parquet, and the agent list, exactly
//! once.
//!
//! A run seals the closed windows (the checkpoint's `sealed_to`, before any listing), lists
//! their landing objects in one pass, and then, window by window: fixes the window's plan
//! (create-only: the first compactor's listing is every compactor's), writes the window's
//! objects create-only under keys named by the window (a redo or a concurrent copy writes the
//! same bytes to the same keys, and keeps what is there), counts the agents once (each record
//! remembers the last window it counted), and advances `next`. Every object is a function of the
//! plan, and a plan whose landing object cannot be read stops the run before anything of its
//! window is written: nothing is written from part of a window.

use super::agents::{Registry, Seen};
use super::events::Category;
use super::landing::{self, BatchHeader, Checkpoint, Plan, Windows};
use crate::config::IngestConfig;
use crate::lake::encode::ObjectEncoder;
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::{Landed, OcsfError, OcsfWriter};
use crate::lake::sink::{Condition, Created, S3Sink, SinkError};
use crate::lake::state::StateError;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

/// Landing objects read at once.
const READ_CONCURRENCY: usize = 16;

/// Most (category, day) objects encoded at once: each holds a compressor (~0.3 MB), so a window
/// whose batches span more days is encoded in several passes over its landing objects.
const OPEN_PARTS: usize = 64;

/// Lines (uncompressed) in one compacted object at most; a partition's window goes on in the
/// next object: an object, and the OCSF encoding of one (which holds its text), stays bounded
/// whatever backlog agents flush into one window.
pub const MAX_OBJECT_BYTES: usize = 64 << 20;

/// Most windows one run lists and compacts.
const MAX_WINDOWS_PER_RUN: i32 = 288;

/// Time allowed for one PUT of a compacted object.
const PUT_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed compaction run. The checkpoint is where the last compacted window left it; the next
/// run goes on from there.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// S3 failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A state document is unreadable, or a conditional write kept losing.
    #[error(transparent)]
    State(#[from] StateError),
    /// The OCSF output failed.
    #[error(transparent)]
    Ocsf(#[from] OcsfError),
    /// The checkpoint's windows are not this compactor's.
    #[error(
        "AD_WINDOW/AD_SETTLE ({}s/{}s) differ from the ones compaction has cut and sealed windows with ({}s/{}s); set those on every ad-ingest, ad-compact and tv1",
        ours.0, ours.1, theirs.0, theirs.1
    )]
    Windows {
        /// This compactor's (seconds).
        ours: (u64, u64),
        /// The checkpoint's.
        theirs: (u64, u64),
    },
    /// A landed batch in a window that is not on the compactor's grid.
    #[error(
        "landed batch {key} is in a window that does not start on a multiple of AD_WINDOW ({len}s): an ad-ingest with another AD_WINDOW landed it; nothing was compacted"
    )]
    OffGrid {
        /// Its key.
        key: String,
        /// The compactor's window length (seconds).
        len: u64,
    },
    /// A landing object the window's plan names cannot be read.
    #[error("landing object s3://{bucket}/{key} is {reason}; window {window} is not compacted")]
    Landing {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The window.
        window: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactSummary {
    /// Windows compacted (empty ones included).
    pub windows: u64,
    /// Landing objects compacted.
    pub batches: u64,
    /// GETs of landing objects: one per batch, more for a window larger than the compactor's
    /// buffer (`AD_COMPACT_BUFFER_MIB`), whose batches are read again.
    pub landing_reads: u64,
    /// Lake lines written.
    pub lines: u64,
    /// Quarantine lines written.
    pub quarantined: u64,
    /// JSONL objects written (lake and quarantine).
    pub objects: u64,
    /// Objects an earlier attempt had written (kept).
    pub kept_existing: u64,
    /// The OCSF output.
    pub ocsf: Landed,
    /// Agent records updated.
    pub agents: u64,
    /// The first window not compacted yet.
    pub next: Option<DateTime<Utc>>,
    /// Whether closed windows are left for the next run (the deadline came first).
    pub behind: bool,
}

/// The compactor of one AD dataset.
#[derive(Debug)]
pub struct Compactor {
    prefix: String,
    windows: Windows,
    sink: S3Sink,
    agents: Registry,
    ocsf: Option<OcsfWriter>,
    /// Landed bytes kept between passes over a window; past them, batches are read again.
    keep_bytes: usize,
    limits: Limits,
}

impl Compactor {
    /// The compactor of the dataset `cfg` configures (its bucket, prefix, windows and OCSF
    /// output).
    pub fn new(cfg: &IngestConfig, s3: aws_sdk_s3::Client) -> Self {
        let ocsf = cfg.ocsf.as_ref().map(|o| OcsfWriter::new(o, s3.clone()));
        let sink = S3Sink::new(s3, cfg.bucket.clone());
        Compactor {
            prefix: cfg.prefix.clone(),
            windows: Windows::new(cfg.window, cfg.settle),
            agents: Registry::new(sink.clone(), &cfg.prefix),
            sink,
            ocsf,
            keep_bytes: (cfg.compact_buffer_bytes / 2).max(1),
            limits: Limits::for_buffer(cfg.compact_buffer_bytes),
        }
    }

    /// The OCSF output, when on.
    pub fn ocsf(&self) -> Option<&OcsfWriter> {
        self.ocsf.as_ref()
    }

    fn checkpoint_key(&self) -> String {
        format!("{}{}", self.prefix, landing::CHECKPOINT)
    }

    async fn read_checkpoint(&self) -> Result<(Checkpoint, Condition), CompactError> {
        Ok(landing::read_checkpoint(&self.sink, &self.prefix).await?)
    }

    /// Moves the checkpoint forward by `change` (which says whether it moved anything), with
    /// conditional writes: concurrent runs only ever move it forward.
    async fn advance(
        &self,
        cp: &mut Checkpoint,
        cond: &mut Condition,
        change: impl Fn(&mut Checkpoint) -> bool,
    ) -> Result<(), CompactError> {
        for _ in 0..8 {
            if !change(cp) {
                return Ok(());
            }
            let body = serde_json::to_vec(&cp).expect("checkpoint serialises");
            match self
                .sink
                .put_json_if(&self.checkpoint_key(), body, cond)
                .await
            {
                Ok(etag) => {
                    *cond = Condition::Matches(etag);
                    return Ok(());
                }
                Err(SinkError::PreconditionFailed { .. }) => {
                    (*cp, *cond) = self.read_checkpoint().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StateError::LostRace.into())
    }

    /// Compacts every closed window not compacted yet, oldest first, until `deadline` (then
    /// `behind` is set and the next run goes on).
    ///
    /// Errors: S3 failures, an unreadable state document or landing object; the windows
    /// compacted before the error stay compacted.
    pub async fn run(
        &self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<CompactSummary, CompactError> {
        let (mut cp, mut cond) = self.read_checkpoint().await?;
        // S3's clock (the one ad-ingest judges late landings by), known since the read above.
        let now = self.sink.server_time().now().unwrap_or_else(Utc::now);
        let open = self.windows.open_from(now);
        let ours = self.windows.seconds();
        self.advance(&mut cp, &mut cond, |cp| {
            // Windows of another length or settle time: nothing is sealed (refused below).
            if cp.windows.is_some_and(|theirs| theirs != ours) {
                return false;
            }
            let moved = cp.sealed_to.is_none_or(|s| s < open) || cp.windows.is_none();
            cp.sealed_to = cp.sealed_to.max(Some(open));
            cp.windows = cp.windows.or(Some(ours));
            moved
        })
        .await?;
        if cp.windows != Some(ours) {
            return Err(CompactError::Windows {
                ours,
                theirs: cp.windows.unwrap_or_default(),
            });
        }
        let sealed_to = cp.sealed_to.expect("sealed above");
        // A run lists and compacts at most a day of 5-minute windows: after an outage the
        // backlog is worked off over several runs, each of which makes progress.
        let upto = match cp.next {
            Some(n) => sealed_to.min(n + self.windows.len() * MAX_WINDOWS_PER_RUN),
            None => sealed_to,
        };
        // Listed only now that the windows are sealed: whatever lands in them later is in only
        // if their plan (made from this listing, or an earlier one) names it.
        let dir = format!("{}{}", self.prefix, landing::LANDING_DIR);
        let after = cp.next.map(|n| landing::landing_prefix(&self.prefix, n));
        let end = landing::landing_prefix(&self.prefix, upto);
        let mut listed: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
        for key in self.sink.list_range(&dir, after.as_deref(), &end).await? {
            let rest = &key[dir.len()..];
            let Some((window, name)) = rest.split_once('/') else {
                continue;
            };
            // Only what ad-ingest writes (`<agent>~<batch>.jsonl.gz`): a console "folder" or
            // a stray object would stop every run at the window.
            if !(name.contains('~') && name.ends_with(".jsonl.gz")) {
                tracing::warn!(key = %key, "not a landed batch; ignored");
                continue;
            }
            match landing::parse_window_name(window) {
                Some(w) if self.windows.start_of(w) == w => {
                    listed.entry(w).or_default().push(name.to_owned())
                }
                _ => {
                    return Err(CompactError::OffGrid {
                        key,
                        len: self.windows.seconds().0,
                    });
                }
            }
        }
        let mut summary = CompactSummary::default();
        if cp.next.is_none() {
            // The first run: compaction starts at the first window anything landed in. Fixed
            // by a conditional write, so that a concurrent first run (which may have listed a
            // late landing in an earlier window) starts there too, and a late writer or a retry
            // whose window is before it (`since`) knows it was never planned.
            let Some(&first) = listed.keys().next() else {
                return Ok(summary); // nothing landed yet
            };
            self.advance(&mut cp, &mut cond, |cp| {
                let unset = cp.next.is_none();
                cp.next = cp.next.or(Some(first));
                cp.since = cp.since.or(cp.next);
                unset
            })
            .await?;
        }
        let mut w = cp.next.expect("set above");
        while w < upto {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                summary.behind = true;
                break;
            }
            if cp.next.is_some_and(|n| n > w) {
                // A concurrent run is ahead.
                w = cp.next.expect("checked");
                continue;
            }
            let plan = self.plan(w, listed.remove(&w).unwrap_or_default()).await?;
            self.compact(&plan, &mut summary).await?;
            let next = self.windows.next(w);
            self.advance(&mut cp, &mut cond, |cp| {
                let moved = cp.next.is_none_or(|n| n < next);
                cp.next = cp.next.max(Some(next));
                moved
            })
            .await?;
            summary.windows += 1;
            w = next;
        }
        summary.next = cp.next;
        summary.behind |= cp.next.is_some_and(|n| n < sealed_to);
        Ok(summary)
    }

    /// The plan of window `w`: the one made before, or one made of `listed`.
    async fn plan(&self, w: DateTime<Utc>, mut listed: Vec<String>) -> Result<Plan, CompactError> {
        if let Some(plan) = landing::read_plan(&self.sink, &self.prefix, w).await? {
            return Ok(plan);
        }
        let key = landing::plan_key(&self.prefix, w);
        listed.sort();
        let plan = Plan {
            window: w,
            batches: listed,
            max_open_bytes: Some(self.limits.max_open_bytes as u64),
        };
        let body = serde_json::to_vec(&plan).expect("plan serialises");
        match self.sink.put_json_if(&key, body, &Condition::Absent).await {
            Ok(_) => Ok(plan),
            // Another run planned it first: its plan is the window's.
            Err(SinkError::PreconditionFailed { .. }) => {
                landing::read_plan(&self.sink, &self.prefix, w)
                    .await?
                    .ok_or_else(|| StateError::LostRace.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the objects of one planned window and counts its agents. Memory holds the
    /// landed batches up to half the compactor's buffer (the rest are read again in each pass
    /// that needs them), the open objects of one pass up to the other half, and the objects
    /// being written; not the window.
    async fn compact(&self, plan: &Plan, summary: &mut CompactSummary) -> Result<(), CompactError> {
        if plan.batches.is_empty() {
            return Ok(());
        }
        let w = plan.window;
        // A first read of every batch gives the headers, which name the window's partitions.
        let mut headers = Vec::with_capacity(plan.batches.len());
        let mut kept: Vec<Option<Bytes>> = Vec::with_capacity(plan.batches.len());
        let mut kept_bytes = 0;
        let mut reads = self.landed(plan, vec![None; plan.batches.len()]);
        while let Some((i, body)) = reads.next().await {
            let (body, _) = body?;
            summary.landing_reads += 1;
            let header = crate::lake::cpu_heavy(|| header_of(&body));
            headers.push(header.map_err(|e| self.bad_landing(w, &plan.batches[i], e))?);
            let keep = kept_bytes + body.len() <= self.keep_bytes;
            kept_bytes += if keep { body.len() } else { 0 };
            kept.push(keep.then_some(body));
        }
        drop(reads);
        let parts = window_parts(&headers);
        // The plan's cut points, not this compactor's: a redo by a compactor configured
        // otherwise writes the same objects.
        let limits = Limits {
            max_open_bytes: plan
                .max_open_bytes
                .map_or(usize::MAX, |b| usize::try_from(b).unwrap_or(usize::MAX)),
            ..self.limits
        };
        for (n, group) in passes(&parts).enumerate() {
            let mut split = Split::new(&self.prefix, w, limits, group, n == 0);
            let mut reads = self.landed(plan, kept.clone());
            while let Some((i, body)) = reads.next().await {
                let (body, read) = body?;
                summary.landing_reads += u64::from(read);
                let closed = crate::lake::cpu_heavy(|| split.take(&headers[i], &body))
                    .map_err(|e| self.bad_landing(w, &plan.batches[i], e))?;
                for o in closed {
                    self.put(&o.key, o.body, (o.lines, o.quarantine), summary)
                        .await?;
                }
            }
            for o in split.finish() {
                self.put(&o.key, o.body, (o.lines, o.quarantine), summary)
                    .await?;
            }
        }
        summary.batches += plan.batches.len() as u64;
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        for h in &headers {
            let s = seen.entry(h.agent.clone()).or_default();
            s.events += h.events as u64;
            s.quarantined += h.quarantined as u64;
            s.batches += (h.events > 0) as u64;
            s.first = Some(s.first.map_or(h.received_at, |f| f.min(h.received_at)));
            if s.last.is_none_or(|l| l <= h.received_at) {
                s.last = Some(h.received_at);
                s.hostname = h.hostname.clone().or(s.hostname.take());
                s.version = h.version.clone().or(s.version.take());
            }
        }
        for (id, s) in &seen {
            self.agents.record_window(id, s, w).await?;
            summary.agents += 1;
        }
        tracing::info!(window = %landing::window_name(w), batches = plan.batches.len(), agents = seen.len(), "window compacted");
        Ok(())
    }

    /// Writes one compacted object create-only (one already there is an earlier attempt's, of
    /// the same plan: the same lines), then its OCSF objects.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        (lines, quarantine): (u64, bool),
        summary: &mut CompactSummary,
    ) -> Result<(), CompactError> {
        match self
            .sink
            .create_ndjson_gz(key, body.clone(), PUT_TIMEOUT)
            .await?
        {
            Created::New => summary.objects += 1,
            Created::AlreadyExists => summary.kept_existing += 1,
        }
        if quarantine {
            summary.quarantined += lines;
            return Ok(());
        }
        summary.lines += lines;
        if let Some(ocsf) = &self.ocsf {
            let landed = ocsf
                .land_object(
                    Dataset::Ad,
                    &self.sink,
                    &self.prefix,
                    key,
                    Some(body),
                    PUT_TIMEOUT,
                )
                .await?;
            summary.ocsf.add(&landed);
        }
        Ok(())
    }

    /// The landing objects of `plan` in its order, with their index and whether each was read
    /// from S3: those of `kept` that are `Some` as they are, the others read
    /// ([`READ_CONCURRENCY`] at once). One missing stops the window.
    fn landed<'s>(
        &'s self,
        plan: &'s Plan,
        kept: Vec<Option<Bytes>>,
    ) -> impl futures_util::Stream<Item = (usize, Result<(Bytes, bool), CompactError>)> + 's {
        let dir = landing::landing_prefix(&self.prefix, plan.window);
        futures_util::stream::iter(kept.into_iter().enumerate())
            .map(move |(i, kept)| {
                let name = &plan.batches[i];
                let (key, sink) = (format!("{dir}{name}"), self.sink.clone());
                async move {
                    let read = match kept {
                        Some(body) => Ok((body, false)),
                        None => match sink.get(&key).await {
                            Ok(Some(v)) => Ok((v.body, true)),
                            Ok(None) => {
                                Err(self.bad_landing(plan.window, name, "gone (expired?)".into()))
                            }
                            Err(e) => Err(e.into()),
                        },
                    };
                    (i, read)
                }
            })
            .buffered(READ_CONCURRENCY)
    }

    fn bad_landing(&self, w: DateTime<Utc>, name: &str, reason: String) -> CompactError {
        CompactError::Landing {
            bucket: self.sink.bucket().to_owned(),
            key: format!("{}{name}", landing::landing_prefix(&self.prefix, w)),
            window: landing::window_name(w),
            reason,
        }
    }
}

/// One compacted object of a window.
#[derive(Debug, Clone)]
pub struct WindowObject {
    /// Its key: `category=<c>/dt=<day>/<window>.jsonl.gz` or `quarantine/<window>.jsonl.gz`.
    pub key: String,
    /// Gzip JSON Lines.
    pub body: Bytes,
    /// Lines in it.
    pub lines: u64,
    /// Whether it is the window's quarantine object.
    pub quarantine: bool,
}

/// The objects of the window starting at `w` made of `landed`, its landing objects in its
/// plan's order, and their headers: a pure function of those bytes (and of the limits), so
/// that every compaction of the window writes the same objects. [`Compactor`] writes the same
/// objects as they are closed, without holding the window; this holds them all (tests, bench).
///
/// Errors: the index of a landing object that is not what ad-ingest writes, and why.
pub fn window_objects(
    prefix: &str,
    w: DateTime<Utc>,
    landed: &[&[u8]],
    limits: Limits,
) -> Result<(Vec<BatchHeader>, Vec<WindowObject>), (usize, String)> {
    let headers = landed
        .iter()
        .enumerate()
        .map(|(i, body)| header_of(body).map_err(|e| (i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let parts = window_parts(&headers);
    let mut objects = Vec::new();
    for (n, group) in passes(&parts).enumerate() {
        let mut out = Split::new(prefix, w, limits, group, n == 0);
        for (i, (body, header)) in landed.iter().zip(&headers).enumerate() {
            objects.extend(out.take(header, body).map_err(|e| (i, e))?);
        }
        objects.extend(out.finish());
    }
    Ok((headers, objects))
}

/// The bounds on what compaction holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lines (uncompressed) in one object at most ([`MAX_OBJECT_BYTES`]).
    pub max_object_bytes: usize,
    /// Lines (uncompressed) the open objects of a pass may hold together, checked after each
    /// landing object: past it, the largest open objects are closed (their partitions go on in
    /// their next objects) until they fit. Counted in lines, not in compressed bytes, so that
    /// where objects are cut depends on the plan alone, not on the compressor's version (a
    /// redo by a newer build writes the same objects); what they hold is less.
    pub max_open_bytes: usize,
}

impl Limits {
    /// The limits for a compactor given `buffer` bytes (half for open objects).
    pub fn for_buffer(buffer: usize) -> Self {
        Limits {
            max_object_bytes: MAX_OBJECT_BYTES,
            max_open_bytes: (buffer / 2).max(1),
        }
    }
}

/// The (category, day) partitions of a window's batches, sorted, each once.
fn window_parts(headers: &[BatchHeader]) -> Vec<(Category, NaiveDate)> {
    let mut parts: Vec<(Category, NaiveDate)> = headers
        .iter()
        .flat_map(|h| h.parts.iter().map(|p| (p.category, p.day)))
        .collect();
    parts.sort();
    parts.dedup();
    parts
}

/// The partitions of each pass over a window's landing objects, [`OPEN_PARTS`] at a time,
/// which bounds the compressors held at once. The quarantine lines go with the first pass,
/// which an empty window still makes.
fn passes(parts: &[(Category, NaiveDate)]) -> impl Iterator<Item = &[(Category, NaiveDate)]> + '_ {
    parts
        .chunks(OPEN_PARTS)
        .chain(parts.is_empty().then_some(&[][..]))
}

/// Reads the lines of a landing object (gzip) one at a time into `f`.
fn each_line(body: &[u8], mut f: impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
    let mut r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(body));
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("not gzip JSON Lines ({e})"))?;
        if n == 0 {
            return Ok(());
        }
        let l = line.strip_suffix(b"\n").unwrap_or(&line);
        if !l.is_empty() {
            f(l)?;
        }
    }
}

/// The header line of a landing object, once the whole object is read and holds the lines the
/// header announces: a window's objects are written as they are made, so a landing object that
/// is not whole must be found before the first of them.
fn header_of(body: &[u8]) -> Result<BatchHeader, String> {
    let mut r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(body));
    let mut first = Vec::new();
    r.read_until(b'\n', &mut first)
        .map_err(|e| format!("not gzip ({e})"))?;
    let header: BatchHeader = serde_json::from_slice(first.strip_suffix(b"\n").unwrap_or(&first))
        .map_err(|e| format!("without a readable header line ({e})"))?;
    let mut n = 0;
    each_line(body, |_| {
        n += 1;
        Ok(())
    })?;
    let expected = 1 + header.parts.iter().map(|p| p.lines).sum::<usize>() + header.quarantined;
    if n != expected {
        return Err(format!(
            "inconsistent: {n} lines where its header announces {expected}"
        ));
    }
    Ok(header)
}

/// One pass over a window's landing objects: the lines of `parts` into their objects, and (on
/// the first pass) the quarantine lines into the window's quarantine object. An object is closed
/// at `max_object_bytes` of lines, or sooner when the open objects together pass
/// `max_open_bytes`, and the partition goes on in the next, `<window>.1.jsonl.gz`...: a
/// window's backlog never makes an object (or the OCSF encoding of one), or a pass, larger
/// than that.
struct Split<'a> {
    prefix: &'a str,
    w: DateTime<Utc>,
    limits: Limits,
    parts: &'a [(Category, NaiveDate)],
    encoders: Vec<Open>,
    quarantine: Option<Open>,
}

/// An object being written: its encoder, its lines, its number in its partition.
struct Open {
    enc: ObjectEncoder,
    lines: u64,
    part: u32,
}

impl Open {
    fn new() -> Self {
        Open {
            enc: ObjectEncoder::new(),
            lines: 0,
            part: 0,
        }
    }

    /// Adds a line; when the object is full, returns it (with its number) and starts the next.
    fn push(&mut self, line: &[u8], max_bytes: usize) -> Option<(Bytes, u64, u32)> {
        self.enc.push_line(line);
        self.lines += 1;
        (self.enc.raw_bytes() >= max_bytes).then(|| self.close())
    }

    fn close(&mut self) -> (Bytes, u64, u32) {
        let enc = std::mem::take(&mut self.enc);
        let out = (enc.finish(), self.lines, self.part);
        self.lines = 0;
        self.part += 1;
        out
    }
}

/// `key` for the `part`-th object of its partition: `<window>.jsonl.gz`, then
/// `<window>.1.jsonl.gz`...
fn part_key(key: String, part: u32) -> String {
    match (part, key.strip_suffix(".jsonl.gz")) {
        (0, _) | (_, None) => key,
        (n, Some(stem)) => format!("{stem}.{n}.jsonl.gz"),
    }
}

impl<'a> Split<'a> {
    fn new(
        prefix: &'a str,
        w: DateTime<Utc>,
        limits: Limits,
        parts: &'a [(Category, NaiveDate)],
        quarantine: bool,
    ) -> Self {
        Split {
            prefix,
            w,
            limits,
            parts,
            encoders: parts.iter().map(|_| Open::new()).collect(),
            quarantine: quarantine.then(Open::new),
        }
    }

    fn key(&self, part: Option<usize>) -> String {
        match part {
            Some(i) => {
                let (c, day) = self.parts[i];
                landing::compacted_key(self.prefix, c, day, self.w)
            }
            None => landing::quarantine_key(self.prefix, self.w),
        }
    }

    /// A closed object of partition `part` (`None`: the quarantine), unless it is empty.
    fn object(
        &self,
        part: Option<usize>,
        (body, lines, n): (Bytes, u64, u32),
    ) -> Option<WindowObject> {
        (lines > 0).then(|| WindowObject {
            key: part_key(self.key(part), n),
            body,
            lines,
            quarantine: part.is_none(),
        })
    }

    /// The open object of `part` (`None`: the quarantine).
    fn open(&mut self, part: Option<usize>) -> Option<&mut Open> {
        match part {
            Some(i) => self.encoders.get_mut(i),
            None => self.quarantine.as_mut(),
        }
    }

    /// Routes the lines of one landing object by its header: after the header line, each
    /// part's lines in the header's order, then the quarantine lines. Returns the objects this
    /// closed, in the order they were closed.
    fn take(&mut self, header: &BatchHeader, body: &[u8]) -> Result<Vec<WindowObject>, String> {
        // The encoder of each part (`None`: not in this pass), and where its lines end.
        let mut ends = Vec::with_capacity(header.parts.len());
        let mut end = 0;
        for p in &header.parts {
            end += p.lines;
            ends.push((self.parts.binary_search(&(p.category, p.day)).ok(), end));
        }
        let stored = end;
        let max = self.limits.max_object_bytes;
        let (mut n, mut seg) = (0usize, 0usize);
        let mut closed = Vec::new();
        each_line(body, |line| {
            n += 1;
            let Some(k) = n.checked_sub(2) else {
                return Ok(()); // the header
            };
            if k >= stored {
                if let Some(q) = &mut self.quarantine
                    && let Some(full) = q.push(line, max)
                {
                    closed.push((None, full));
                }
                return Ok(());
            }
            while k >= ends[seg].1 {
                seg += 1;
            }
            if let Some(i) = ends[seg].0
                && let Some(full) = self.encoders[i].push(line, max)
            {
                closed.push((Some(i), full));
            }
            Ok(())
        })?;
        let expected = 1 + stored + header.quarantined;
        if n != expected {
            return Err(format!(
                "inconsistent: {n} lines where its header announces {expected}"
            ));
        }
        // Past the pass's budget, the largest open objects are closed (the first of equals),
        // a function of the lines so far, so every compaction cuts in the same places.
        let held = |o: &Open| o.enc.raw_bytes();
        let mut total: usize = self.encoders.iter().chain(&self.quarantine).map(held).sum();
        while total > self.limits.max_open_bytes {
            let sizes = self
                .encoders
                .iter()
                .map(|o| (held(o), o.lines))
                .enumerate()
                .map(|(i, s)| (s, Some(i)))
                .chain(self.quarantine.as_ref().map(|q| ((held(q), q.lines), None)));
            // `max_by_key` keeps the last of equals: reversed, the first.
            let Some(((size, lines), part)) = sizes.rev().max_by_key(|((size, _), _)| *size) else {
                break;
            };
            if lines == 0 {
                break;
            }
            let full = self.open(part).expect("an open object").close();
            closed.push((part, full));
            total -= size;
        }
        Ok(closed
            .into_iter()
            .filter_map(|(part, full)| self.object(part, full))
            .collect())
    }

    /// The objects still open, empty ones left out.
    fn finish(mut self) -> Vec<WindowObject> {
        let mut out = Vec::new();
        for i in 0..self.encoders.len() {
            let last = self.encoders[i].close();
            out.extend(self.object(Some(i), last));
        }
        if let Some(mut q) = self.quarantine.take() {
            let last = q.close();
            out.extend(self.object(None, last));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::{Body, HttpRequest, Ingest};
    use serde_json::{Value, json};

    fn landed(ingest: &Ingest, agent: &str, events: Vec<Value>) -> Bytes {
        let body = json!({"agent": {"id": agent}, "batch_id": "b", "events": events}).to_string();
        let req = HttpRequest {
            method: "POST",
            path: "/v1/events",
            authorization: None,
            x_api_key: None,
            content_type: Some("application/json"),
            content_encoding: None,
            body: Body::Bytes(body.as_bytes()),
            sender: Default::default(),
        };
        ingest.prepare(&req, Utc::now()).unwrap().landing
    }

    fn lines(body: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        each_line(body, |l| {
            out.push(serde_json::from_slice(l).unwrap());
            Ok(())
        })
        .unwrap();
        out
    }

    const LIMITS: Limits = Limits {
        max_object_bytes: MAX_OBJECT_BYTES,
        max_open_bytes: 128 << 20,
    };

    fn event(id: u32, day: u32, n: u32) -> Value {
        json!({"event_id": id, "time": format!("2026-10-{day:02}T10:00:00Z"), "computer": "DC1", "record_id": n})
    }

    #[test]
    fn a_window_is_one_object_per_partition_in_plan_order_and_the_same_every_time() {
        let ingest = Ingest::offline(&[("AD_MAX_PARTITIONS", "5000")]).unwrap();
        let w = "2026-11-30T08:00:00Z".parse().unwrap();
        let a = landed(
            &ingest,
            "dc1",
            vec![
                event(4624, 1, 1),
                event(4720, 1, 2),
                event(4624, 2, 3),
                json!({"event_id": 4624, "time": "no time", "computer": "DC1"}),
            ],
        );
        // Over 70 days: more partitions than one pass encodes.
        let b = landed(
            &ingest,
            "dc2",
            (0..140)
                .map(|n| event(4624, 1 + n % 28, 100 + n))
                .chain((0..70).map(|n| event(1102, 1 + n % 30, 300 + n)))
                .collect(),
        );
        let (headers, objects) = window_objects("ad/", w, &[&a, &b], LIMITS).unwrap();
        assert_eq!(
            headers.iter().map(|h| h.agent.as_str()).collect::<Vec<_>>(),
            ["dc1", "dc2"]
        );
        // 28 logon days, 1 account-management day, 30 system days, and the quarantine.
        assert_eq!(objects.len(), 28 + 1 + 30 + 1);
        let logon1 = objects
            .iter()
            .find(|o| o.key == "ad/category=logon/dt=2026-10-01/20261130T080000Z.jsonl.gz")
            .unwrap();
        let records: Vec<u64> = lines(&logon1.body)
            .iter()
            .map(|l| l["record_id"].as_u64().unwrap())
            .collect();
        assert_eq!(
            records,
            [1, 100, 128, 156, 184, 212],
            "the plan's order, then the batch's"
        );
        let q: Vec<&WindowObject> = objects.iter().filter(|o| o.quarantine).collect();
        assert_eq!((q.len(), q[0].lines), (1, 1));
        assert_eq!(q[0].key, "ad/quarantine/20261130T080000Z.jsonl.gz");
        let total: u64 = objects.iter().map(|o| o.lines).sum();
        assert_eq!(total, 4 + 210);
        let (_, again) = window_objects("ad/", w, &[&a, &b], LIMITS).unwrap();
        assert!(
            objects
                .iter()
                .zip(&again)
                .all(|(x, y)| x.key == y.key && x.body == y.body)
        );
    }

    #[test]
    fn a_partition_larger_than_an_object_goes_on_in_numbered_objects() {
        let ingest = Ingest::offline(&[]).unwrap();
        let w = "2026-11-30T08:00:00Z".parse().unwrap();
        let a = landed(&ingest, "dc1", (0..40).map(|n| event(4624, 1, n)).collect());
        let b = landed(
            &ingest,
            "dc2",
            (40..80).map(|n| event(4624, 1, n)).collect(),
        );
        // A line is about 250 bytes: objects of at most ~4 KB hold about 16.
        let limits = Limits {
            max_object_bytes: 4000,
            ..LIMITS
        };
        let (_, objects) = window_objects("ad/", w, &[&a, &b], limits).unwrap();
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert!(objects.len() >= 5, "{keys:?}");
        assert_eq!(
            keys[0],
            "ad/category=logon/dt=2026-10-01/20261130T080000Z.jsonl.gz"
        );
        assert_eq!(
            keys[1],
            "ad/category=logon/dt=2026-10-01/20261130T080000Z.1.jsonl.gz"
        );
        let records: Vec<u64> = objects
            .iter()
            .flat_map(|o| lines(&o.body))
            .map(|l| l["record_id"].as_u64().unwrap())
            .collect();
        assert_eq!(
            records,
            (0..80).collect::<Vec<_>>(),
            "every line once, in plan order"
        );
        assert!(objects.iter().all(|o| o.body.len() < 4000 && o.lines > 0));
    }

    #[test]
    fn open_objects_past_the_pass_budget_are_closed_largest_first_and_the_same_every_time() {
        let ingest = Ingest::offline(&[("AD_MAX_PARTITIONS", "5000")]).unwrap();
        let w = "2026-11-30T08:00:00Z".parse().unwrap();
        // Four batches, each over the same 10 days: 10 partitions open at once.
        let batches: Vec<Bytes> = (0..4)
            .map(|b| {
                let events = (0..60)
                    .map(|n| event(4624, 1 + n % 10, b * 100 + n))
                    .collect();
                landed(&ingest, &format!("dc{b}"), events)
            })
            .collect();
        let refs: Vec<&[u8]> = batches.iter().map(|b| &b[..]).collect();
        let (_, whole) = window_objects("ad/", w, &refs, LIMITS).unwrap();
        assert_eq!(whole.len(), 10);
        let limits = Limits {
            max_open_bytes: 2000,
            ..LIMITS
        };
        let (_, cut) = window_objects("ad/", w, &refs, limits).unwrap();
        assert!(cut.len() > 10, "{}", cut.len());
        // Each partition's lines, in plan order, once, however they were cut.
        let by_part = |objects: &[WindowObject]| {
            let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for o in objects {
                let part = o.key[..o.key.rfind('/').unwrap()].to_owned();
                m.entry(part).or_default().extend(
                    lines(&o.body)
                        .iter()
                        .map(|l| l["record_id"].as_u64().unwrap()),
                );
            }
            m
        };
        assert_eq!(by_part(&cut), by_part(&whole));
        let (_, again) = window_objects("ad/", w, &refs, limits).unwrap();
        let same = |a: &[WindowObject], b: &[WindowObject]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| x.key == y.key && x.body == y.body)
        };
        assert!(same(&cut, &again), "a redo cuts in the same places");
    }

    #[test]
    fn a_landing_object_that_is_not_whole_is_named() {
        let ingest = Ingest::offline(&[]).unwrap();
        let w = "2026-11-30T08:00:00Z".parse().unwrap();
        let a = landed(&ingest, "dc1", vec![event(4624, 1, 1), event(4624, 1, 2)]);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&a[..]), &mut text)
            .unwrap();
        let cut: Vec<&str> = text.lines().take(2).collect();
        let mut enc = ObjectEncoder::new();
        for l in cut {
            enc.push_line(l.as_bytes());
        }
        let short = enc.finish();
        let (i, e) = window_objects("ad/", w, &[&a, &short], LIMITS).unwrap_err();
        assert_eq!(i, 1);
        assert!(e.contains("2 lines where its header announces 3"), "{e}");
        let (i, e) = window_objects("ad/", w, &[b"not gzip"], LIMITS).unwrap_err();
        assert_eq!(i, 0, "{e}");
    }
}
