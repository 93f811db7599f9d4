//! `tv1 import-evtx`: Windows event log files (`.evtx`) into the AD layout, exactly once.
//!
//! Incident responders and auditors hold domain controllers' logs as `.evtx` files: exports
//! (`wevtutil epl`, Event Viewer's "Save As"), copies of `winevt\Logs`, shadow copies. Each
//! record is read with the `evtx` crate, rendered as XML (as Windows' `EvtRender` renders it,
//! without indentation), normalised as ad-ingest normalises the XML an agent sends (shape
//! `windows_xml`), and stored in ad-ingest's objects, with the same OCSF output:
//! `<AD_PREFIX>category=<c>/dt=<the event's own day>/evtx~<computer>~<channel>~<step>.jsonl.gz`.
//! Events of any age go to their own day; records are streamed, and one object is encoded at a
//! time, so memory holds one step (at most [`STEP_BYTES`] of XML) whatever the file's size.
//!
//! # Identity
//!
//! An event is (computer, channel, record id, second of `TimeCreated`), all from the record's
//! own `<System>` (the file's record number only when the XML has no `EventRecordID`). The id
//! alone is not enough: record ids start again at 1 when a log is cleared (and on every clone
//! of a VM image), so it would take a cleared log's new events for ones already stored. The
//! file plays no part: the same file twice, or two exports of one log sharing a range of ids,
//! store the shared events once.
//!
//! # The manifest
//!
//! Per (computer, channel), `<AD_PREFIX>_state/imports/<computer>~<channel>~<hash>.json` says
//! which events are stored, as spans `[first id, last id, earliest second, latest second]`:
//! every id of the range is stored, with a time in the range. An event is "stored" only when
//! its id AND its time fall in one span, so spans of two generations of a log (before and after
//! a clear) never answer for each other. Spans are joined only on the evidence of a file:
//! records it holds in unbroken sequence (ids n, n+1...) are one generation. The manifest also
//! holds at most one pending step.
//!
//! # A step, and why it is exactly once
//!
//! Records are read in the log's order and buffered per (computer, channel) up to
//! `step_records` records or [`STEP_BYTES`] in all: where a file is cut into slices depends on
//! the file alone. For each slice, in order:
//!
//! 1. read the manifest and its ETag. The step is the slice's events not stored yet (none:
//!    nothing is written), named `<first id>-<last id>-<hash of its (id, second) set>`; its
//!    objects, one per (category, day), are named after it;
//! 2. write the manifest with the step as `pending`, its keys listed, conditionally on that
//!    ETag: of two importers of one log, one wins and the other reads again;
//! 3. create each object create-only (`If-None-Match: *`), one at a time, each followed by its
//!    OCSF Parquet objects (a function of the object's bytes, create-only too);
//! 4. write the manifest with the step's events added to the spans and `pending` cleared,
//!    conditionally on the ETag of step 2.
//!
//! Nothing else writes these objects, and a key names one set of events, so an object exists
//! only with its step's events, whoever wrote it. A crash or kill at any point leaves no
//! pending step (the manifest is right: steps 1-2 wrote nothing, or 4 completed) or a pending
//! one, which the next import of that log resolves before landing anything else of it:
//!
//! - **redo**: the same file (or any cut into the same slice) meets the same step: same set,
//!   same name, same keys. It claims it again, creates the objects that are missing (S3 refuses
//!   the ones that exist, which are kept and get their OCSF objects from their own bytes) and
//!   commits. This is immediate, and safe even if the first importer still runs: both write
//!   the same keys, and the second commit finds the events stored;
//! - **take over**: an import that cannot redo it (another file, another `step_records`) waits
//!   until the step expires (its importer claimed it for its `stale_after` and, if alive, stops
//!   starting writes at half of that), then reads back the objects that exist, records their
//!   events as stored, completes their OCSF objects and drops the step. The events of objects
//!   never written are not stored, and land with a later step, under other keys (another set
//!   has another name).
//!
//! So every record of every file ends in exactly one object: a re-import or an overlapping
//! export finds its events stored and writes nothing, and a killed import is completed by the
//! next one. The one assumption is the take-over's: an importer frozen (not killed) past its
//! step's expiry, which is 20 times the longest PUT by default, could still create an object
//! after the take-over.

use super::batch::{Origin, data_key, write_line};
use super::events::{Category, Normalized, normalize_with};
use crate::config::{ConfigError, OcsfConfig, prefix, required};
use crate::lake::encode::ObjectEncoder;
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::{Landed, OcsfError, OcsfWriter};
use crate::lake::sink::{Condition, Created, S3Sink, SinkError};
use crate::lake::state::{StateError, parse_state};
use crate::timefmt::{api_time, parse_api_time};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default `step_records`: at ~1.5 KB of XML per Security event, ~15 MB buffered.
pub const DEFAULT_STEP_RECORDS: usize = 10_000;

/// XML buffered in all before a step is landed, whatever `step_records` says.
pub const STEP_BYTES: usize = 16 << 20;

/// Default `stale_after`: far above the time a step takes (a few PUTs per (category, day)).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(600);

/// Longest `stale_after` a step is claimed for: a month is past any step's length, and an
/// expiry must stay a date S3 and chrono can write.
pub const MAX_STALE_AFTER: Duration = Duration::from_secs(30 * 86_400);

/// How long a step is claimed for.
fn life(stale_after: Duration) -> chrono::Duration {
    chrono::Duration::from_std(stale_after.min(MAX_STALE_AFTER)).expect("at most a month")
}

/// Timeout of one object PUT.
const PUT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `agent_id` of imported lines, and the first part of their object names.
pub const AGENT: &str = "evtx";

/// Most unreadable records listed in the summary (all are counted).
const MAX_REPORTED: usize = 20;

/// Where and how `tv1 import-evtx` lands events.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Destination bucket (`BUCKET`).
    pub bucket: String,
    /// Key prefix of the AD data (`AD_PREFIX`, as ad-ingest); ends with `/` unless empty.
    pub prefix: String,
    /// The OCSF Parquet output, when `OCSF_OUTPUT=on` (as ad-ingest).
    pub ocsf: Option<OcsfConfig>,
    /// Most records of one (computer, channel) in one step. Smaller steps lose less work to a
    /// crash; larger ones write fewer, larger objects.
    pub step_records: usize,
    /// How long a step this import claims stays its own: if the import dies, an import that
    /// cannot redo the step (of another file) takes it over once this has passed, and the
    /// import itself stops a step that has run for half of it. The same file redoes the step
    /// at once. At most [`MAX_STALE_AFTER`] counts.
    pub stale_after: Duration,
}

impl ImportConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads ad-ingest's `BUCKET`, `AD_PREFIX` and `OCSF_*` (no API key: nothing is received);
    /// the step settings get their defaults.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Ok(ImportConfig {
            bucket: required(env, "BUCKET")?,
            prefix: prefix(env, "AD_PREFIX", "active-directory/"),
            ocsf: OcsfConfig::from_map(env)?,
            step_records: DEFAULT_STEP_RECORDS,
            stale_after: DEFAULT_STALE_AFTER,
        })
    }
}

/// Why an import stopped. Whatever it had landed stays landed; running it again completes it.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be opened, or does not begin with an EVTX header.
    #[error("cannot read {} as an .evtx file", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the `evtx` crate said.
        #[source]
        source: evtx::err::EvtxError,
    },
    /// S3 failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The OCSF output failed.
    #[error(transparent)]
    Ocsf(#[from] OcsfError),
    /// A manifest is unreadable, or belongs to another log.
    #[error(transparent)]
    State(#[from] StateError),
    /// An object a pending step listed cannot be read back when taking the step over.
    #[error("s3://{bucket}/{key} cannot be read back: {reason}")]
    Object {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A step ran for half of `stale_after`: it stopped writing so that no other import takes
    /// it over while it writes.
    #[error(
        "landing {step} of {computer} / {channel} took over {secs} s (half of --stale-after); it stopped so that no other import takes it over while it writes: run the import again"
    )]
    Slow {
        /// The step's name.
        step: String,
        /// The log's computer.
        computer: String,
        /// The log's channel.
        channel: String,
        /// Half of `stale_after`, in seconds.
        secs: u64,
    },
    /// The thread reading the file stopped without saying why (it panicked).
    #[error("reading {} stopped unexpectedly", .0.display())]
    Reader(PathBuf),
}

/// Where an import is, for a progress line.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The file being read, from 1.
    pub file: usize,
    /// Files in all.
    pub files: usize,
    /// Its path.
    pub path: PathBuf,
    /// Records read from it so far (unreadable ones included).
    pub records: u64,
    /// Of those, events landed.
    pub landed: u64,
    /// Of those, events that were already stored.
    pub present: u64,
    /// Set while waiting for a step another import holds: `<computer> / <channel>`.
    pub waiting_for: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    /// Files read.
    pub files: Vec<FileSummary>,
    /// Records read and normalised, in all files.
    pub records_read: u64,
    /// Of those, events stored by this import.
    pub events_landed: u64,
    /// Of those, events that were already stored (by an earlier import of any file).
    pub already_present: u64,
    /// Records the `evtx` crate could not read, or whose XML does not normalise: not stored.
    pub unreadable_records: u64,
    /// Chunks (64 KiB, up to a few hundred records each) the `evtx` crate could not read: not
    /// stored. A log's pre-allocated chunks that were never written are among them.
    pub unreadable_chunks: u64,
    /// JSON Lines objects created.
    pub objects_written: u64,
    /// JSON Lines objects found already written by an import that stopped (a redo).
    pub objects_kept: u64,
    /// Steps of other imports taken over (see the module doc).
    pub steps_taken_over: u64,
    /// The OCSF output's objects, when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocsf: Option<Landed>,
    /// Per (computer, channel).
    pub logs: Vec<LogSummary>,
    /// The first unreadable records and chunks, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

/// One file's part of an import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileSummary {
    /// As given.
    pub path: String,
    /// Records read and normalised (= `events_landed` + `already_present`).
    pub records_read: u64,
    /// Events stored by this import.
    pub events_landed: u64,
    /// Events already stored.
    pub already_present: u64,
    /// Records that could not be read.
    pub unreadable_records: u64,
    /// Chunks that could not be read.
    pub unreadable_chunks: u64,
}

/// One (computer, channel)'s part of an import.
#[derive(Debug, Clone, Serialize)]
pub struct LogSummary {
    /// `<Computer>`.
    pub computer: String,
    /// `<Channel>` (empty when the XML has none).
    pub channel: String,
    /// Records read.
    pub records_read: u64,
    /// Events stored by this import.
    pub events_landed: u64,
    /// Events already stored.
    pub already_present: u64,
    /// Lowest record id read.
    pub first_record_id: u64,
    /// Highest record id read.
    pub last_record_id: u64,
    /// Earliest `TimeCreated` read (RFC 3339, seconds).
    pub first_time: String,
    /// Latest `TimeCreated` read.
    pub last_time: String,
}

/// A record or chunk that was not stored, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// The file.
    pub path: String,
    /// The chunk's number in the file, for a chunk that could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    /// The record's number in the file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// What the `evtx` crate, or normalisation, said.
    pub reason: String,
}

/// Imports `.evtx` files into the AD layout (see the module doc).
#[derive(Debug)]
pub struct Importer {
    cfg: ImportConfig,
    sink: S3Sink,
    ocsf: Option<OcsfWriter>,
    /// Names this import in the pending steps it writes (for people reading a manifest).
    owner: String,
}

/// One log of one computer: what identifies a manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct LogId {
    computer: String,
    channel: String,
}

/// One readable record: its identity, normalised fields and XML.
#[derive(Debug)]
struct Rec {
    id: u64,
    /// `TimeCreated`, Unix seconds.
    t: i64,
    n: Normalized,
    xml: String,
}

impl Rec {
    fn log(&self) -> LogId {
        LogId {
            computer: self.n.computer.clone(),
            channel: self.n.channel.clone().unwrap_or_default(),
        }
    }
}

/// What the reading thread sends.
enum Item {
    Record(Box<Rec>),
    Unreadable {
        chunk: Option<u64>,
        record: Option<u64>,
        reason: String,
    },
    Open(evtx::err::EvtxError),
}

/// Reads `path` record by record on its own thread (the `evtx` crate is synchronous): parsing
/// and normalising overlap the S3 writes, and the bounded channel keeps memory bounded.
fn read_file(path: PathBuf, tx: tokio::sync::mpsc::Sender<Item>) {
    let mut parser = match evtx::EvtxParser::from_path(&path) {
        Ok(p) => p.with_configuration(evtx::ParserSettings::new().indent(false)),
        Err(e) => {
            let _ = tx.blocking_send(Item::Open(e));
            return;
        }
    };
    for r in parser.records() {
        let item = match r {
            Ok(r) => record(r.event_record_id, r.data),
            Err(e) => {
                let (chunk, record) = match &e {
                    evtx::err::EvtxError::FailedToParseChunk { chunk_id, .. } => {
                        (Some(*chunk_id), None)
                    }
                    evtx::err::EvtxError::FailedToParseRecord { record_id, .. } => {
                        (None, Some(*record_id))
                    }
                    _ => (None, None),
                };
                Item::Unreadable {
                    chunk,
                    record,
                    reason: causes(&e),
                }
            }
        };
        if tx.blocking_send(item).is_err() {
            return; // the import stopped
        }
    }
}

/// A rendered record, normalised as ad-ingest normalises the XML an agent sends.
fn record(number: u64, xml: String) -> Item {
    let v = serde_json::Value::String(xml);
    match normalize_with(&v, None) {
        Ok(mut n) => {
            let serde_json::Value::String(xml) = v else {
                unreachable!("built as a string")
            };
            // The line must carry the id the manifest records, to be read back on a take-over.
            let id = *n.record_id.get_or_insert(number);
            Item::Record(Box::new(Rec {
                id,
                t: n.time.timestamp(),
                n,
                xml,
            }))
        }
        Err(reason) => Item::Unreadable {
            chunk: None,
            record: Some(number),
            reason,
        },
    }
}

/// `e` and its causes, `a: b: c`.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// `[first id, last id, earliest, latest]` (Unix seconds): every id of the range is stored,
/// with a time in the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Span(u64, u64, i64, i64);

impl Span {
    fn holds(&self, id: u64, t: i64) -> bool {
        (self.0..=self.1).contains(&id) && (self.2..=self.3).contains(&t)
    }
}

/// Looks events up in sorted spans. Spans of different generations may overlap, so a lookup
/// walks back from the last span starting at or before the id, while any span before could
/// still reach it (`reach`: the highest last id up to each span).
struct Index<'a> {
    spans: &'a [Span],
    reach: Vec<u64>,
}

impl<'a> Index<'a> {
    fn new(spans: &'a [Span]) -> Self {
        debug_assert!(spans.is_sorted());
        let reach = spans
            .iter()
            .scan(0, |m, s| {
                *m = s.1.max(*m);
                Some(*m)
            })
            .collect();
        Index { spans, reach }
    }

    /// The span that holds `(id, t)`.
    fn find(&self, id: u64, t: i64) -> Option<usize> {
        let end = self.spans.partition_point(|s| s.0 <= id);
        (0..end)
            .rev()
            .take_while(|&i| self.reach[i] >= id)
            .find(|&i| self.spans[i].holds(id, t))
    }
}

/// `spans` with the events `new` added, then joined along `chains` (runs of one generation):
/// the spans holding a chain's events become one.
fn grow(spans: &[Span], new: &[(u64, i64)], chains: &[Vec<(u64, i64)>]) -> Vec<Span> {
    let mut all: Vec<Span> = spans
        .iter()
        .copied()
        .chain(new.iter().map(|&(id, t)| Span(id, id, t, t)))
        .collect();
    all.sort_unstable();
    all.dedup();
    let index = Index::new(&all);
    let mut parent: Vec<usize> = (0..all.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for chain in chains {
        let mut first = None;
        for &(id, t) in chain {
            // Every event of a chain is stored by now; one that is not breaks the evidence.
            let Some(i) = index.find(id, t) else {
                first = None;
                continue;
            };
            match first {
                None => first = Some(i),
                Some(f) => {
                    let (a, b) = (root(&mut parent, f), root(&mut parent, i));
                    parent[b] = a;
                }
            }
        }
    }
    // The spans joined are contiguous (each meets the chain's unbroken range), so their
    // bounding box claims no id that is not stored.
    let mut boxes: BTreeMap<usize, Span> = BTreeMap::new();
    for (i, s) in all.iter().enumerate() {
        let r = root(&mut parent, i);
        boxes
            .entry(r)
            .and_modify(|b| *b = Span(b.0.min(s.0), b.1.max(s.1), b.2.min(s.2), b.3.max(s.3)))
            .or_insert(*s);
    }
    let mut out: Vec<Span> = boxes.into_values().collect();
    out.sort_unstable();
    out
}

/// The runs of a slice (in file order, after `before`, the file's previous event of the log)
/// whose ids follow one another: each run is one generation of the log.
fn chains(before: Option<(u64, i64)>, recs: &[Rec]) -> Vec<Vec<(u64, i64)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(u64, i64)> = before.into_iter().collect();
    for r in recs {
        if cur
            .last()
            .is_none_or(|&(id, _)| id.checked_add(1) != Some(r.id))
        {
            if cur.len() > 1 {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
        }
        cur.push((r.id, r.t));
    }
    if cur.len() > 1 {
        out.push(cur);
    }
    out
}

/// What is stored of one log, and the step being landed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    computer: String,
    channel: String,
    /// Sorted.
    landed: Vec<Span>,
    #[serde(default)]
    pending: Option<Pending>,
    #[serde(default)]
    updated_at: Option<String>,
}

/// A step being landed: written before its objects, cleared once they are all in S3.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// `<first id>-<last id>-<hash>`: names the set of events.
    step: String,
    /// Events in it.
    events: usize,
    /// Its objects.
    keys: Vec<String>,
    /// When it was claimed (S3's clock, RFC 3339).
    at: String,
    /// When another import may take it over: its importer's `stale_after` after `at`.
    expires: String,
    /// The import that claimed it.
    owner: String,
    /// The file it came from (for people reading the manifest).
    file: String,
}

/// `s` with every character outside `[A-Za-z0-9._-]` as `-`, cut to `max` characters, for
/// object keys (`Microsoft-Windows-Sysmon/Operational` → `Microsoft-Windows-Sysmon-Operational`).
fn safe(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    if out.is_empty() { "none".into() } else { out }
}

/// The manifest of `log`. [`safe`] loses characters, so the exact names' hash tells apart two
/// logs whose names it makes equal.
fn manifest_key(prefix: &str, log: &LogId) -> String {
    let h = Sha256::new()
        .chain_update(&log.computer)
        .chain_update([0])
        .chain_update(&log.channel)
        .finalize();
    format!(
        "{prefix}_state/imports/{}~{}~{}.json",
        safe(&log.computer, 64),
        safe(&log.channel, 96),
        &hex::encode(h)[..16]
    )
}

/// The name of the step landing `set` (sorted, not empty) of `log`: the set decides it.
fn step_name(log: &LogId, set: &[(u64, i64)]) -> String {
    let mut h = Sha256::new()
        .chain_update(&log.computer)
        .chain_update([0])
        .chain_update(&log.channel)
        .chain_update([0]);
    for (id, t) in set {
        h.update(id.to_be_bytes());
        h.update(t.to_be_bytes());
    }
    let (lo, hi) = (set[0].0, set[set.len() - 1].0);
    format!("{lo}-{hi}-{}", &hex::encode(h.finalize())[..12])
}

/// The object name (after the agent) of a step's objects: `~` separates the parts, and an
/// agent's names have one `~` only, so no agent batch can share a key with an import.
fn object_name(log: &LogId, step: &str) -> String {
    format!(
        "{}~{}~{step}",
        safe(&log.computer, 64),
        safe(&log.channel, 96)
    )
}

/// The events in a stored object of `log`: `(record id, second)`.
fn events_in(body: &[u8], log: &LogId) -> Result<Vec<(u64, i64)>, String> {
    #[derive(Deserialize)]
    struct Head {
        time: String,
        computer: String,
        channel: Option<String>,
        record_id: Option<u64>,
    }
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(body)
        .read_to_string(&mut text)
        .map_err(|e| format!("not gzip UTF-8 text: {e}"))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let h: Head = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let time = parse_api_time(&h.time);
        match (h.record_id, time) {
            (Some(id), Some(t))
                if h.computer == log.computer && h.channel.unwrap_or_default() == log.channel =>
            {
                out.push((id, t.timestamp()))
            }
            _ => return Err(format!("line {} is not an event of this log", i + 1)),
        }
    }
    Ok(out)
}

/// The running totals of an import.
#[derive(Default)]
struct Tally {
    summary: ImportSummary,
    logs: BTreeMap<LogId, LogSummary>,
    ocsf: Landed,
}

impl Tally {
    fn file(&mut self) -> &mut FileSummary {
        self.summary.files.last_mut().expect("a file is being read")
    }

    fn read(&mut self, r: &Rec) {
        self.summary.records_read += 1;
        self.file().records_read += 1;
        let t = api_time(r.n.time);
        let s = self.logs.entry(r.log()).or_insert_with(|| LogSummary {
            computer: r.n.computer.clone(),
            channel: r.n.channel.clone().unwrap_or_default(),
            records_read: 0,
            events_landed: 0,
            already_present: 0,
            first_record_id: r.id,
            last_record_id: r.id,
            first_time: t.clone(),
            last_time: t.clone(),
        });
        s.records_read += 1;
        s.first_record_id = s.first_record_id.min(r.id);
        s.last_record_id = s.last_record_id.max(r.id);
        if t < s.first_time {
            s.first_time = t;
        } else if t > s.last_time {
            s.last_time = t;
        }
    }

    fn landed(&mut self, log: &LogId, landed: u64, present: u64) {
        self.summary.events_landed += landed;
        self.summary.already_present += present;
        let f = self.file();
        f.events_landed += landed;
        f.already_present += present;
        if let Some(s) = self.logs.get_mut(log) {
            s.events_landed += landed;
            s.already_present += present;
        }
    }

    fn unreadable(&mut self, path: &Path, chunk: Option<u64>, record: Option<u64>, reason: String) {
        if chunk.is_some() {
            self.summary.unreadable_chunks += 1;
            self.file().unreadable_chunks += 1;
        } else {
            self.summary.unreadable_records += 1;
            self.file().unreadable_records += 1;
        }
        if self.summary.unreadable.len() < MAX_REPORTED {
            tracing::warn!(file = %path.display(), chunk, record, %reason, "not imported: unreadable");
            self.summary.unreadable.push(Unreadable {
                path: path.display().to_string(),
                chunk,
                record,
                reason,
            });
        }
    }
}

/// The records of one file read so far and not landed yet, per log.
#[derive(Default)]
struct Buffers {
    logs: BTreeMap<LogId, Vec<Rec>>,
    bytes: usize,
    /// Each log's last event landed from this file: a slice continuing it extends its span.
    last: HashMap<LogId, (u64, i64)>,
}

impl Importer {
    /// An importer writing through `s3`.
    pub fn new(cfg: ImportConfig, s3: aws_sdk_s3::Client) -> Self {
        let ocsf = cfg.ocsf.as_ref().map(|o| OcsfWriter::new(o, s3.clone()));
        let sink = S3Sink::new(s3, cfg.bucket.clone());
        Importer {
            cfg,
            sink,
            ocsf,
            owner: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// Imports `files`, in order, calling `progress` as it goes. Every file is opened first,
    /// so that a wrong path stops the import before anything is written.
    pub async fn import(
        &self,
        files: &[PathBuf],
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<ImportSummary, ImportError> {
        for path in files {
            evtx::EvtxParser::from_path(path).map_err(|source| ImportError::Open {
                path: path.clone(),
                source,
            })?;
        }
        let mut tally = Tally::default();
        for (i, path) in files.iter().enumerate() {
            let mut at = Progress {
                file: i + 1,
                files: files.len(),
                path: path.clone(),
                records: 0,
                landed: 0,
                present: 0,
                waiting_for: None,
            };
            self.import_file(path, &mut tally, &mut at, progress)
                .await?;
        }
        let Tally {
            mut summary,
            logs,
            ocsf,
        } = tally;
        summary.logs = logs.into_values().collect();
        summary.ocsf = self.ocsf.as_ref().map(|_| ocsf);
        Ok(summary)
    }

    async fn import_file(
        &self,
        path: &Path,
        tally: &mut Tally,
        at: &mut Progress,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<(), ImportError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let reader = std::thread::spawn({
            let path = path.to_path_buf();
            move || read_file(path, tx)
        });
        tally.summary.files.push(FileSummary {
            path: path.display().to_string(),
            ..FileSummary::default()
        });
        let mut buf = Buffers::default();
        while let Some(item) = rx.recv().await {
            at.records += 1;
            match item {
                Item::Record(rec) => {
                    tally.read(&rec);
                    buf.bytes += rec.xml.len();
                    let slice = buf.logs.entry(rec.log()).or_default();
                    slice.push(*rec);
                    if slice.len() >= self.cfg.step_records || buf.bytes >= STEP_BYTES {
                        self.flush(&mut buf, path, tally, at, progress).await?;
                    }
                }
                Item::Unreadable {
                    chunk,
                    record,
                    reason,
                } => tally.unreadable(path, chunk, record, reason),
                Item::Open(source) => {
                    return Err(ImportError::Open {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
            if at.records.is_multiple_of(1000) {
                progress(at);
            }
        }
        self.flush(&mut buf, path, tally, at, progress).await?;
        reader
            .join()
            .map_err(|_| ImportError::Reader(path.to_path_buf()))?;
        progress(at);
        Ok(())
    }

    /// Lands every buffered slice, log by log in a fixed order.
    async fn flush(
        &self,
        buf: &mut Buffers,
        path: &Path,
        tally: &mut Tally,
        at: &mut Progress,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<(), ImportError> {
        buf.bytes = 0;
        for (log, recs) in std::mem::take(&mut buf.logs) {
            let before = buf.last.get(&log).copied();
            let last = recs.last().map(|r| (r.id, r.t));
            let (landed, present) = self
                .land(&log, &recs, before, path, tally, at, progress)
                .await?;
            tally.landed(&log, landed, present);
            at.landed += landed;
            at.present += present;
            progress(at);
            if let Some(last) = last {
                buf.last.insert(log, last);
            }
        }
        Ok(())
    }

    /// S3's time now (the clock pending steps are dated and judged on).
    fn now(&self) -> DateTime<Utc> {
        self.sink.server_time().now().unwrap_or_else(Utc::now)
    }

    /// The manifest of `log`, and the condition that writes over exactly this version.
    async fn manifest(&self, key: &str, log: &LogId) -> Result<(Manifest, Condition), ImportError> {
        let Some(v) = self.sink.get(key).await? else {
            let m = Manifest {
                computer: log.computer.clone(),
                channel: log.channel.clone(),
                landed: Vec::new(),
                pending: None,
                updated_at: None,
            };
            return Ok((m, Condition::Absent));
        };
        let mut m: Manifest = parse_state(&self.sink, key, &v.body)?;
        if (m.computer.as_str(), m.channel.as_str()) != (&log.computer, &log.channel) {
            return Err(StateError::Corrupt {
                bucket: self.sink.bucket().to_owned(),
                key: key.to_owned(),
                reason: format!("it is the manifest of {} / {}", m.computer, m.channel),
            }
            .into());
        }
        // Sorted as written; sorted again in case a person edited it.
        m.landed.sort_unstable();
        Ok((m, Condition::Matches(v.etag)))
    }

    /// Writes `m` under `cond`: `None` when another writer changed it first.
    async fn put(
        &self,
        key: &str,
        m: &mut Manifest,
        cond: &Condition,
    ) -> Result<Option<Condition>, ImportError> {
        m.updated_at = Some(api_time(self.now()));
        let body = serde_json::to_vec(&m).expect("a manifest serialises");
        match self.sink.put_json_if(key, body, cond).await {
            Ok(etag) => Ok(Some(Condition::Matches(etag))),
            Err(SinkError::PreconditionFailed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Lands one slice of `log` as one step (see the module doc); returns (events landed,
    /// events already stored).
    #[allow(clippy::too_many_arguments)]
    async fn land(
        &self,
        log: &LogId,
        recs: &[Rec],
        before: Option<(u64, i64)>,
        path: &Path,
        tally: &mut Tally,
        at: &mut Progress,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<(u64, u64), ImportError> {
        let key = manifest_key(&self.cfg.prefix, log);
        let chains = chains(before, recs);
        loop {
            let (mut m, cond) = self.manifest(&key, log).await?;
            let index = Index::new(&m.landed);
            let mut seen = HashSet::new();
            // A record twice in one slice is stored once: the second is "already present".
            let new: Vec<usize> = (0..recs.len())
                .filter(|&i| {
                    let r = &recs[i];
                    index.find(r.id, r.t).is_none() && seen.insert((r.id, r.t))
                })
                .collect();
            let present = (recs.len() - new.len()) as u64;
            if new.is_empty() {
                // Nothing to land; the slice may still prove spans to be one generation.
                let joined = grow(&m.landed, &[], &chains);
                if m.pending.is_some() || joined == m.landed {
                    return Ok((0, present));
                }
                m.landed = joined;
                match self.put(&key, &mut m, &cond).await? {
                    Some(_) => return Ok((0, present)),
                    None => continue,
                }
            }
            let mut set: Vec<(u64, i64)> = new.iter().map(|&i| (recs[i].id, recs[i].t)).collect();
            set.sort_unstable();
            let step = step_name(log, &set);
            let mut order = new.clone();
            order.sort_by_key(|&i| part(&recs[i])); // stable: file order within an object
            let groups: Vec<&[usize]> = order
                .chunk_by(|&a, &b| part(&recs[a]) == part(&recs[b]))
                .collect();
            let name = object_name(log, &step);
            let keys: Vec<String> = groups
                .iter()
                .map(|g| {
                    let (c, day) = part(&recs[g[0]]);
                    data_key(&self.cfg.prefix, c, day, AGENT, &name)
                })
                .collect();
            // Redone only when the keys agree too: a version that dated or sorted events
            // differently would otherwise store them a second time under other keys.
            if let Some(p) = &m.pending
                && (p.step != step || p.keys != keys)
            {
                // The expiry its importer declared, whatever this import's own setting: that
                // importer stops writing at half of it. Unreadable: a person edited it; expired.
                if parse_api_time(&p.expires).is_none_or(|e| self.now() >= e) {
                    self.take_over(&key, log, m, &cond, tally).await?;
                } else {
                    at.waiting_for = Some(format!("{} / {}", log.computer, log.channel));
                    progress(at);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    at.waiting_for = None;
                }
                continue;
            }
            // A new step, or the same step again after a crash (a redo): claimed anew either
            // way, so that its age counts from now.
            m.pending = Some(Pending {
                step: step.clone(),
                events: set.len(),
                keys: keys.clone(),
                at: api_time(self.now()),
                expires: api_time(self.now() + life(self.cfg.stale_after)),
                owner: self.owner.clone(),
                file: path.display().to_string(),
            });
            let Some(claimed) = self.put(&key, &mut m, &cond).await? else {
                continue;
            };
            let started = Instant::now();
            let received_at = api_time(self.now());
            for (group, okey) in groups.iter().zip(&keys) {
                let half = self.cfg.stale_after.min(MAX_STALE_AFTER) / 2;
                if !half.is_zero() && started.elapsed() > half {
                    return Err(ImportError::Slow {
                        step,
                        computer: log.computer.clone(),
                        channel: log.channel.clone(),
                        secs: half.as_secs(),
                    });
                }
                let body = encode(recs, group, &name, &received_at);
                self.create(okey, body, tally).await?;
            }
            self.commit(&key, log, m, claimed, &set, &chains).await?;
            return Ok((set.len() as u64, present));
        }
    }

    /// Creates one object, then its OCSF objects: from its bytes when this import wrote it,
    /// else from the object S3 kept.
    async fn create(
        &self,
        key: &str,
        body: bytes::Bytes,
        tally: &mut Tally,
    ) -> Result<(), ImportError> {
        let made = self
            .sink
            .create_ndjson_gz(key, body.clone(), PUT_TIMEOUT)
            .await?;
        match made {
            Created::New => tally.summary.objects_written += 1,
            Created::AlreadyExists => tally.summary.objects_kept += 1,
        }
        if let Some(ocsf) = &self.ocsf {
            let written = (made == Created::New).then_some(body);
            let landed = ocsf
                .land_object(
                    Dataset::Ad,
                    &self.sink,
                    &self.cfg.prefix,
                    key,
                    written,
                    PUT_TIMEOUT,
                )
                .await?;
            tally.ocsf.add(&landed);
        }
        Ok(())
    }

    /// Records the step's events as stored and clears it. If the manifest changed since the
    /// claim (another import redid the step, or took it over), the events are added to what it
    /// holds now: all the step's objects are in S3.
    async fn commit(
        &self,
        key: &str,
        log: &LogId,
        mut m: Manifest,
        mut cond: Condition,
        set: &[(u64, i64)],
        chains: &[Vec<(u64, i64)>],
    ) -> Result<(), ImportError> {
        let step = m.pending.as_ref().map(|p| p.step.clone());
        loop {
            if m.pending.as_ref().map(|p| &p.step) == step.as_ref() {
                m.pending = None;
            } else {
                tracing::warn!(computer = %log.computer, channel = %log.channel, step = ?step, "another import took this step over while it was landed");
            }
            m.landed = grow(&m.landed, set, chains);
            if self.put(key, &mut m, &cond).await?.is_some() {
                return Ok(());
            }
            (m, cond) = self.manifest(key, log).await?;
            let index = Index::new(&m.landed);
            if m.pending.is_none() && set.iter().all(|&(id, t)| index.find(id, t).is_some()) {
                return Ok(()); // another import committed this very step
            }
        }
    }

    /// Resolves a stale pending step that this import cannot redo: the events of its objects
    /// that exist are stored (their OCSF objects completed), the rest are not.
    async fn take_over(
        &self,
        key: &str,
        log: &LogId,
        mut m: Manifest,
        cond: &Condition,
        tally: &mut Tally,
    ) -> Result<(), ImportError> {
        let Some(p) = m.pending.take() else {
            return Ok(());
        };
        tracing::warn!(computer = %log.computer, channel = %log.channel, step = %p.step, since = %p.at, file = %p.file, "taking over a step another import left unfinished");
        let mut found = Vec::new();
        for k in &p.keys {
            let Some(obj) = self.sink.get(k).await? else {
                continue;
            };
            found.extend(
                events_in(&obj.body, log).map_err(|reason| ImportError::Object {
                    bucket: self.sink.bucket().to_owned(),
                    key: k.clone(),
                    reason,
                })?,
            );
            if let Some(ocsf) = &self.ocsf {
                let landed = ocsf
                    .land_object(
                        Dataset::Ad,
                        &self.sink,
                        &self.cfg.prefix,
                        k,
                        Some(obj.body),
                        PUT_TIMEOUT,
                    )
                    .await?;
                tally.ocsf.add(&landed);
            }
        }
        // Single spans: the order the file gave them in is not known here. A later import of
        // the file joins them.
        m.landed = grow(&m.landed, &found, &[]);
        if self.put(key, &mut m, cond).await?.is_some() {
            tally.summary.steps_taken_over += 1;
        }
        Ok(())
    }
}

/// The partition of a record: (category, its own day).
fn part(r: &Rec) -> (Category, NaiveDate) {
    (r.n.category, r.n.time.date_naive())
}

/// One object: the lines of `recs[group]`, in file order.
fn encode(recs: &[Rec], group: &[usize], name: &str, received_at: &str) -> bytes::Bytes {
    let mut enc = ObjectEncoder::new();
    let (mut line, mut raw) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
    let at = Origin {
        agent_id: AGENT,
        batch_id: name,
        received_at,
    };
    for &i in group {
        let r = &recs[i];
        raw.clear();
        serde_json::to_writer(&mut raw, &r.xml).expect("in-memory write");
        line.clear();
        write_line(&mut line, &r.n, &at, &raw, None);
        enc.push_line(&line);
    }
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with id `id` at second `t` of the spans (the event itself is `t` seconds into
    /// 2023: only times Active Directory can have are records).
    fn rec(id: u64, t: i64) -> Rec {
        const BASE: i64 = 1_672_531_200;
        let xml = format!(
            "<Event><System><EventID>4624</EventID><TimeCreated SystemTime='{}'/><EventRecordID>{id}</EventRecordID><Channel>Security</Channel><Computer>DC01</Computer></System></Event>",
            api_time(DateTime::from_timestamp(BASE + t, 0).unwrap())
        );
        match record(id, xml) {
            Item::Record(r) => Rec { t, ..*r },
            _ => panic!("not readable"),
        }
    }

    fn stored(spans: &[Span], id: u64, t: i64) -> bool {
        Index::new(spans).find(id, t).is_some()
    }

    #[test]
    fn one_file_in_sequence_is_one_span_over_any_number_of_steps() {
        let recs: Vec<Rec> = (1..=10).map(|i| rec(i, 1000 + i as i64)).collect();
        let events = |r: &[Rec]| r.iter().map(|r| (r.id, r.t)).collect::<Vec<_>>();
        let s1 = grow(&[], &events(&recs[..4]), &chains(None, &recs[..4]));
        assert_eq!(s1, [Span(1, 4, 1001, 1004)]);
        let before = Some((4, 1004));
        let s2 = grow(&s1, &events(&recs[4..]), &chains(before, &recs[4..]));
        assert_eq!(s2, [Span(1, 10, 1001, 1010)]);
        assert!(stored(&s2, 7, 1007));
        assert!(!stored(&s2, 11, 1011));
    }

    #[test]
    fn a_cleared_log_restarting_its_ids_is_not_taken_for_the_old_one() {
        let old: Vec<Rec> = (1..=100).map(|i| rec(i, 1000 + i as i64)).collect();
        let ev: Vec<_> = old.iter().map(|r| (r.id, r.t)).collect();
        let spans = grow(&[], &ev, &chains(None, &old));
        // After the clear: ids from 1 again, later times.
        let new: Vec<Rec> = (1..=120).map(|i| rec(i, 5000 + i as i64)).collect();
        assert!(new.iter().all(|r| !stored(&spans, r.id, r.t)));
        let ev: Vec<_> = new.iter().map(|r| (r.id, r.t)).collect();
        let spans = grow(&spans, &ev, &chains(None, &new));
        assert_eq!(spans, [Span(1, 100, 1001, 1100), Span(1, 120, 5001, 5120)]);
        assert!(stored(&spans, 50, 1050) && stored(&spans, 50, 5050));
        assert!(!stored(&spans, 110, 1110));
    }

    #[test]
    fn an_overlapping_export_joins_the_spans_it_continues_and_singles_are_healed() {
        let a: Vec<Rec> = (1..=50).map(|i| rec(i, 1000 + i as i64)).collect();
        let ev = |r: &[Rec]| r.iter().map(|r| (r.id, r.t)).collect::<Vec<_>>();
        let spans = grow(&[], &ev(&a), &chains(None, &a));
        let b: Vec<Rec> = (40..=80).map(|i| rec(i, 1000 + i as i64)).collect();
        let new: Vec<_> = ev(&b)
            .into_iter()
            .filter(|&(id, t)| !stored(&spans, id, t))
            .collect();
        assert_eq!(new.len(), 30);
        assert_eq!(
            grow(&spans, &new, &chains(None, &b)),
            [Span(1, 80, 1001, 1080)]
        );
        // A take-over's single spans, joined by the next import of the file.
        let singles = grow(&[], &ev(&a), &[]);
        assert_eq!(singles.len(), 50);
        assert_eq!(
            grow(&singles, &[], &chains(None, &a)),
            [Span(1, 50, 1001, 1050)]
        );
        // A gap is not bridged.
        let gap: Vec<Rec> = [1, 2, 4, 5]
            .iter()
            .map(|&i| rec(i, 1000 + i as i64))
            .collect();
        assert_eq!(
            grow(&[], &ev(&gap), &chains(None, &gap)),
            [Span(1, 2, 1001, 1002), Span(4, 5, 1004, 1005)]
        );
    }

    #[test]
    fn names_are_safe_keys_and_the_set_decides_the_step() {
        let log = LogId {
            computer: "DC01.corp.example".into(),
            channel: "Microsoft-Windows-Sysmon/Operational".into(),
        };
        let key = manifest_key("ad/", &log);
        assert!(key.starts_with(
            "ad/_state/imports/DC01.corp.example~Microsoft-Windows-Sysmon-Operational~"
        ));
        let step = step_name(&log, &[(5, 1), (7, 2)]);
        assert!(step.starts_with("5-7-"), "{step}");
        assert_ne!(step, step_name(&log, &[(5, 1), (7, 3)]));
        let name = object_name(&log, &step);
        let k = data_key(
            "ad/",
            Category::Logon,
            NaiveDate::from_ymd_opt(2016, 7, 8).unwrap(),
            AGENT,
            &name,
        );
        let file = k.rsplit('/').next().unwrap();
        assert!(
            file.starts_with("evtx~DC01.corp.example~Microsoft-Windows-Sysmon-Operational~5-7-")
        );
        assert!(
            file.trim_end_matches(".jsonl.gz")
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b))
        );
        assert_eq!(safe("a b/c\\ü", 64), "a-b-c--");
        assert_eq!(safe("", 64), "none");
        // Logs whose safe names agree still have their own manifests.
        let other = LogId {
            channel: "Microsoft-Windows-Sysmon-Operational".into(),
            ..log.clone()
        };
        assert_ne!(manifest_key("ad/", &log), manifest_key("ad/", &other));
    }

    #[test]
    fn lines_carry_what_a_take_over_reads_back() {
        let recs: Vec<Rec> = (7..=9).map(|i| rec(i, i as i64)).collect();
        let body = encode(&recs, &[0, 1, 2], "x", "2026-01-01T00:00:00Z");
        let log = recs[0].log();
        assert_eq!(
            events_in(&body, &log).unwrap(),
            recs.iter()
                .map(|r| (r.id, r.n.time.timestamp()))
                .collect::<Vec<_>>()
        );
        let other = LogId {
            computer: "DC02".into(),
            ..log
        };
        assert!(events_in(&body, &other).is_err());
    }
}
