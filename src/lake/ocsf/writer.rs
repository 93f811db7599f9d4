//! The OCSF Parquet output: the Parquet objects of one stored JSON Lines object.
//!
//! The invariant that makes both outputs exactly once together: **the Parquet objects of a
//! JSONL object are a function of that object's bytes**, written under keys named after it,
//! create-only. Whoever writes them (the run that wrote the JSONL object, a run taking over its
//! pending segment, a retry of the same batch) derives the same records from the same bytes, so
//! a second PUT is refused by S3 (`412`) and changes nothing, and the commit (checkpoint,
//! batch marker) is only written once both outputs are in S3.
//!
//! Layout, as Security Lake wants custom sources:
//! `{OCSF_PREFIX}{source}/region={region}/accountId={account}/eventDay={YYYYMMDD}/{name}.parquet`,
//! one class per object and per source (`tv1-audit-auth`...), rows sorted by time.

use super::parquet::{DECODE_ROWS, Encoder, ParquetEncodeError};
use super::{Class, Dataset};
use crate::config::{OcsfConfig, is_account_id};
use crate::lake::sink::{Created, S3Sink, SinkError};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

/// A failure of the OCSF output.
#[derive(Debug, thiserror::Error)]
pub enum OcsfError {
    /// The JSONL object could not be read back.
    #[error("the OCSF output cannot read {key}: {reason}")]
    Unreadable {
        /// The JSONL object.
        key: String,
        /// Why.
        reason: String,
    },
    /// No account id for the `accountId=` partition yet.
    #[error(
        "OCSF_ACCOUNT_ID is not set and no Lambda function ARN has given one (the accountId= partition)"
    )]
    NoAccount,
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] ParquetEncodeError),
    /// S3 failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What one call wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Landed {
    /// OCSF records in new objects.
    pub records: u64,
    /// New Parquet objects.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects that were already there (written by an earlier attempt; kept).
    pub kept_existing: u64,
}

impl Landed {
    /// Adds another call's counts.
    pub fn add(&mut self, other: &Landed) {
        self.records += other.records;
        self.objects += other.objects;
        self.bytes += other.bytes;
        self.kept_existing += other.kept_existing;
    }
}

/// Writes the OCSF Parquet objects of stored JSONL objects.
#[derive(Debug)]
pub struct OcsfWriter {
    sink: S3Sink,
    prefix: String,
    region: String,
    account: OnceLock<String>,
}

/// Line text mapped (and so held as JSON trees) at a time, at most.
const DECODE_BYTES: usize = 4 << 20;

/// Where one record goes, and when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    class: Class,
    day: NaiveDate,
    time_ms: i64,
    line: usize,
}

impl OcsfWriter {
    /// The writer for `cfg`, through `client`.
    pub fn new(cfg: &OcsfConfig, client: aws_sdk_s3::Client) -> Self {
        let account = OnceLock::new();
        if let Some(a) = &cfg.account_id {
            let _ = account.set(a.clone());
        }
        OcsfWriter {
            sink: S3Sink::new(client, cfg.bucket.clone()),
            prefix: cfg.prefix.clone(),
            region: cfg.region.clone(),
            account,
        }
    }

    /// Takes the `accountId=` partition from a Lambda function ARN
    /// (`arn:aws:lambda:region:account:function:name`) unless one is set already.
    pub fn account_from_arn(&self, arn: &str) {
        if self.account.get().is_some() {
            return;
        }
        match arn.split(':').nth(4).filter(|a| is_account_id(a)) {
            Some(a) => {
                let _ = self.account.set(a.to_owned());
            }
            None => tracing::warn!(
                arn,
                "the invoked function's ARN names no account; set OCSF_ACCOUNT_ID"
            ),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        self.sink.bucket()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of the Parquet object of `source` named `name` for `day`.
    pub fn key(&self, source: &str, day: NaiveDate, name: &str) -> Result<String, OcsfError> {
        let account = self.account.get().ok_or(OcsfError::NoAccount)?;
        Ok(format!(
            "{}{source}/region={}/accountId={account}/eventDay={}/{name}.parquet",
            self.prefix,
            self.region,
            day.format("%Y%m%d")
        ))
    }

    /// Writes the Parquet objects of the JSONL object `key` of `data` (the data bucket, keys
    /// under `data_prefix`): from `written`, the bytes the caller has just put there, or else
    /// from the object its create-only PUT found in place (an earlier attempt's), read back.
    pub async fn land_object(
        &self,
        dataset: Dataset,
        data: &S3Sink,
        data_prefix: &str,
        key: &str,
        written: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Landed, OcsfError> {
        let body = match written {
            Some(b) => b,
            None => {
                data.get(key)
                    .await?
                    .ok_or_else(|| OcsfError::Unreadable {
                        key: key.to_owned(),
                        reason: "it was there a moment ago and is gone".into(),
                    })?
                    .body
            }
        };
        let name = object_name(data_prefix, key);
        self.land(dataset, key, &name, &body, timeout).await
    }

    /// Writes the Parquet objects of the JSONL object `key` (its gzip `body`), each named
    /// `name`, create-only within `timeout` each.
    async fn land(
        &self,
        dataset: Dataset,
        key: &str,
        name: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Landed, OcsfError> {
        let files = crate::lake::cpu_heavy(|| encode_object(dataset, key, body))?;
        self.write_files(dataset, name, files, timeout).await
    }

    /// Writes `files` (from [`encode_object`]) create-only, each named `name` in its source and
    /// day, within `timeout` each; one already there (an earlier attempt's) is kept.
    pub async fn write_files(
        &self,
        dataset: Dataset,
        name: &str,
        files: Vec<(Class, NaiveDate, usize, bytes::Bytes)>,
        timeout: Duration,
    ) -> Result<Landed, OcsfError> {
        let parts = files
            .into_iter()
            .map(|(class, day, rows, bytes)| ParquetPart {
                class,
                day,
                part: 0,
                rows,
                bytes,
            })
            .collect();
        self.write_parts(dataset, name, parts, timeout).await
    }

    /// Writes `parts` (from a [`FileSet`]) create-only, each named [`part_name`] of `name` in
    /// its source and day, within `timeout` each; one already there (an earlier attempt's) is
    /// kept.
    pub async fn write_parts(
        &self,
        dataset: Dataset,
        name: &str,
        parts: Vec<ParquetPart>,
        timeout: Duration,
    ) -> Result<Landed, OcsfError> {
        let mut landed = Landed::default();
        for ParquetPart {
            class,
            day,
            part,
            rows,
            bytes,
        } in parts
        {
            let k = self.key(&dataset.source(class), day, &part_name(name, part))?;
            let size = bytes.len() as u64;
            match self.sink.create_parquet(&k, bytes, timeout).await? {
                Created::New => {
                    tracing::info!(key = %k, records = rows, bytes = size, "OCSF object written");
                    landed.records += rows as u64;
                    landed.objects += 1;
                    landed.bytes += size;
                }
                Created::AlreadyExists => landed.kept_existing += 1,
            }
        }
        Ok(landed)
    }
}

impl OcsfWriter {
    /// Replaces the Parquet objects of a JSONL object that is itself replaced in place (a
    /// backfill part, rewritten by every rerun of its hour): `files` (from [`encode_object`] of
    /// its new bytes) are put, and the objects of every other class and of every day in `days`
    /// (the days any earlier version may have written) are deleted, so the Parquet follows the
    /// part whatever a rerun changed.
    pub async fn replace(
        &self,
        dataset: Dataset,
        name: &str,
        files: Vec<(Class, NaiveDate, usize, bytes::Bytes)>,
        days: &[NaiveDate],
    ) -> Result<Landed, OcsfError> {
        let mut landed = Landed::default();
        let mut kept = Vec::new();
        for (class, day, rows, bytes) in files {
            let k = self.key(&dataset.source(class), day, name)?;
            landed.records += rows as u64;
            landed.objects += 1;
            landed.bytes += bytes.len() as u64;
            self.sink.put_parquet(&k, bytes).await?;
            kept.push(k);
        }
        for day in days {
            for class in dataset.classes() {
                let k = self.key(&dataset.source(*class), *day, name)?;
                if !kept.contains(&k) {
                    self.sink.delete(&k).await?;
                }
            }
        }
        Ok(landed)
    }

    /// Deletes the Parquet objects of a JSONL object named `name` on any of `days` (a stale
    /// backfill part).
    pub async fn remove(
        &self,
        dataset: Dataset,
        name: &str,
        days: &[NaiveDate],
    ) -> Result<(), OcsfError> {
        for day in days {
            for class in dataset.classes() {
                let k = self.key(&dataset.source(*class), *day, name)?;
                self.sink.delete(&k).await?;
            }
        }
        Ok(())
    }
}

/// The name of the Parquet objects of the JSONL object `key` (under `prefix`): its path with the
/// partition names dropped, `/` as `_` (`dt=2026-11-21/hour=10/A_B.jsonl.gz` →
/// `2026-11-21_10_A_B`). Unique because JSONL keys are: a redo segment has one object per hour
/// under the same file name, which the hour tells apart.
pub fn object_name(prefix: &str, key: &str) -> String {
    let path = key.strip_prefix(prefix).unwrap_or(key);
    let path = path.strip_suffix(".jsonl.gz").unwrap_or(path);
    path.split('/')
        .map(|part| part.split_once('=').map_or(part, |(_, v)| v))
        .collect::<Vec<_>>()
        .join("_")
}

/// The Parquet files of one JSONL object: `(class, eventDay, rows, bytes)`, one per class and
/// day, rows sorted by time (ties in line order). CPU only; public for the benchmark.
pub fn encode_object(
    dataset: Dataset,
    key: &str,
    body: &[u8],
) -> Result<Vec<(Class, NaiveDate, usize, bytes::Bytes)>, OcsfError> {
    let mut set = FileSet::new(dataset);
    set.add(key, body)?;
    set.finish()
}

/// The Parquet files of one or more JSONL objects, one per class and day, built an object at a
/// time: memory holds one object's text, one chunk of events and each file's open row group,
/// not the objects' lines. Rows are sorted by time within each [`FileSet::add`]; objects given
/// in time order (an hour's objects, then the next hour's) make files sorted throughout.
/// CPU only.
///
/// With [`FileSet::with_part_text`], a (class, day) file is closed once the lines it holds
/// reach a size, and goes on in a numbered part: the caller writes closed parts as it goes
/// ([`FileSet::take_parts`]), so memory holds at most one part per (class, day) whatever the
/// period. Parts are cut by the lines' bytes, in the order given, so the same objects always
/// make the same parts.
pub struct FileSet {
    dataset: Dataset,
    part_text: usize,
    files: BTreeMap<(Class, NaiveDate), OpenFile>,
    closed: Vec<ParquetPart>,
}

/// A (class, day) file being written.
struct OpenFile {
    enc: Encoder,
    text: usize,
    part: u32,
}

/// One Parquet file of a [`FileSet`].
#[derive(Debug)]
pub struct ParquetPart {
    /// Its class.
    pub class: Class,
    /// Its `eventDay`.
    pub day: NaiveDate,
    /// Its number among the (class, day)'s parts: 0, then 1... ([`part_name`]).
    pub part: u32,
    /// Records.
    pub rows: usize,
    /// The file.
    pub bytes: bytes::Bytes,
}

/// The name of part `part` of the objects named `name`: `name`, then `name.1`, `name.2`...
pub fn part_name(name: &str, part: u32) -> String {
    match part {
        0 => name.to_owned(),
        n => format!("{name}.{n}"),
    }
}

impl FileSet {
    /// No files yet; one per (class, day), never cut.
    pub fn new(dataset: Dataset) -> Self {
        Self::with_part_text(dataset, usize::MAX)
    }

    /// No files yet; a (class, day)'s file is closed when its lines reach `part_text` bytes.
    pub fn with_part_text(dataset: Dataset, part_text: usize) -> Self {
        FileSet {
            dataset,
            part_text: part_text.max(1),
            files: BTreeMap::new(),
            closed: Vec::new(),
        }
    }

    /// Adds the records of `body` (gzip JSON Lines, one or more members; `key` names it in
    /// errors and logs). Errors: the body is not gzip UTF-8 text, or an event does not fit its
    /// class's schema (a mapping bug).
    pub fn add(&mut self, key: &str, body: &[u8]) -> Result<(), OcsfError> {
        let dataset = self.dataset;
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(body)
            .read_to_string(&mut text)
            .map_err(|e| OcsfError::Unreadable {
                key: key.to_owned(),
                reason: format!("not gzip UTF-8 text: {e}"),
            })?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        // A stored line the mapping cannot read has no OCSF record, as a line without a readable
        // time has none: the object is written from its other lines, or a redo would fail on the
        // same bytes forever. Valid JSON that a stricter reader refuses (a lone UTF-16 surrogate
        // escape, RFC 8259 §8.2; a key given twice) is such a line; it stays in the JSONL.
        let unmappable = |i: usize| {
            tracing::warn!(
                key,
                line = i + 1,
                "a stored line does not map to OCSF; it has no OCSF record (it stays in the JSON Lines)"
            );
        };
        // First pass: where each record goes (class and time only). The events are built in the
        // second pass, a chunk at a time.
        let mut places = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let Some((class, time_ms)) = dataset.class_and_time(line) else {
                unmappable(i);
                continue;
            };
            let day = DateTime::<Utc>::from_timestamp_millis(time_ms)
                .unwrap_or_default()
                .date_naive();
            places.push(Place {
                class,
                day,
                time_ms,
                line: i,
            });
        }
        places.sort_unstable();
        for group in places.chunk_by(|a, b| (a.class, a.day) == (b.class, b.day)) {
            let (class, day) = (group[0].class, group[0].day);
            let mut events = Vec::new();
            let mut chunk = 0;
            for p in group {
                let Some(event) = dataset.event(lines[p.line]) else {
                    unmappable(p.line);
                    continue;
                };
                let len = lines[p.line].len();
                let open = match self.files.entry((class, day)) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(OpenFile {
                        enc: Encoder::new(class)?,
                        text: 0,
                        part: 0,
                    }),
                };
                if open.text > 0 && open.text + len > self.part_text {
                    open.enc.push(&events)?;
                    events.clear();
                    chunk = 0;
                    let full = std::mem::replace(&mut open.enc, Encoder::new(class)?);
                    self.closed.push(ParquetPart {
                        class,
                        day,
                        part: open.part,
                        rows: full.rows(),
                        bytes: full.finish()?,
                    });
                    open.part += 1;
                    open.text = 0;
                }
                open.text += len;
                events.push(event);
                chunk += len;
                // Bounded by rows and by text: an event may be 256 KiB, and its tree several
                // times that.
                if events.len() == DECODE_ROWS || chunk >= DECODE_BYTES {
                    open.enc.push(&events)?;
                    events.clear();
                    chunk = 0;
                }
            }
            if let Some(open) = self.files.get_mut(&(class, day)) {
                open.enc.push(&events)?;
            }
        }
        Ok(())
    }

    /// The parts closed so far (not yet taken), to be written now.
    pub fn take_parts(&mut self) -> Vec<ParquetPart> {
        std::mem::take(&mut self.closed)
    }

    /// Every part not taken yet, the open ones closed; none for a (class, day) whose lines all
    /// failed to map.
    pub fn finish_parts(mut self) -> Result<Vec<ParquetPart>, OcsfError> {
        let mut out = std::mem::take(&mut self.closed);
        for ((class, day), open) in self.files {
            let rows = open.enc.rows();
            if rows > 0 {
                out.push(ParquetPart {
                    class,
                    day,
                    part: open.part,
                    rows,
                    bytes: open.enc.finish()?,
                });
            }
        }
        Ok(out)
    }

    /// The files: `(class, eventDay, rows, bytes)`, in class and day order, for a set made by
    /// [`FileSet::new`] (one file per class and day).
    pub fn finish(self) -> Result<Vec<(Class, NaiveDate, usize, bytes::Bytes)>, OcsfError> {
        Ok(self
            .finish_parts()?
            .into_iter()
            .map(|p| (p.class, p.day, p.rows, p.bytes))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_security_lakes_layout() {
        let cfg = OcsfConfig {
            bucket: "aws-security-data-lake-eu-west-1-abc".into(),
            prefix: "ext/".into(),
            region: "eu-west-1".into(),
            account_id: None,
        };
        let w = OcsfWriter::new(&cfg, crate::aws::s3_client(&crate::aws::offline_config()));
        let day = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        assert!(matches!(w.key("s", day, "n"), Err(OcsfError::NoAccount)));
        w.account_from_arn("arn:aws:lambda:eu-west-1:123456789012:function:tv1-audit-puller");
        w.account_from_arn("arn:aws:lambda:eu-west-1:999999999999:function:other");
        assert_eq!(
            w.key(
                &Dataset::Audit.source(super::super::AUTHENTICATION),
                day,
                "x_y"
            )
            .unwrap(),
            "ext/tv1-audit-auth/region=eu-west-1/accountId=123456789012/eventDay=20261121/x_y.parquet"
        );
    }

    #[test]
    fn names_keep_every_part_of_the_jsonl_key_that_tells_objects_apart() {
        assert_eq!(
            object_name(
                "a/",
                "a/dt=2026-11-21/hour=10/20261121T100000Z_20261121T110000Z.jsonl.gz"
            ),
            "2026-11-21_10_20261121T100000Z_20261121T110000Z"
        );
        assert_eq!(
            object_name("ad/", "ad/category=logon/dt=2026-11-21/dc01~b1.jsonl.gz"),
            "logon_2026-11-21_dc01~b1"
        );
    }

    #[test]
    fn an_object_splits_by_class_and_day_sorted_by_time() {
        let mut enc = crate::lake::encode::ObjectEncoder::new();
        for (id, t, cat) in [
            ("a", "2026-11-21T10:00:05Z", "Logon and Logoff"),
            ("b", "2026-11-21T10:00:01Z", "Account Management"),
            ("c", "2026-11-21T10:00:02Z", "Logon and Logoff"),
        ] {
            let item = format!(
                r#"{{"loggedDateTime":"{t}","category":"{cat}","activity":"Log on","accessType":"Console"}}"#
            );
            let mut line = Vec::new();
            crate::lake::encode::line_with_fields(item.as_bytes(), &[("_id", id)], &mut line);
            enc.push_line(&line);
        }
        let files = encode_object(Dataset::Audit, "k", &enc.finish()).unwrap();
        let shape: Vec<(u32, usize)> = files.iter().map(|f| (f.0.uid, f.2)).collect();
        assert_eq!(shape, [(3002, 2), (3004, 1)]);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            files[0].3.clone(),
        )
        .unwrap()
        .build()
        .unwrap();
        let batch = reader.into_iter().next().unwrap().unwrap();
        let times = batch.column_by_name("time").unwrap();
        let times = times
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        assert!(times.value(0) < times.value(1));
        let bad = encode_object(
            Dataset::Ad,
            "k",
            &crate::lake::encode::ObjectEncoder::new().finish(),
        );
        assert!(bad.unwrap().is_empty());
        assert!(matches!(
            encode_object(Dataset::Audit, "k", b"not gzip"),
            Err(OcsfError::Unreadable { .. })
        ));
    }

    /// Audit lines `from..to`, one a second from `t0`, Logon and Logoff or Account Management.
    fn audit_body(from: usize, to: usize, t0: i64) -> bytes::Bytes {
        let mut enc = crate::lake::encode::ObjectEncoder::new();
        for i in from..to {
            let t = DateTime::<Utc>::from_timestamp(t0 + i as i64, 0).unwrap();
            let cat = if i % 3 == 0 {
                "Account Management"
            } else {
                "Logon and Logoff"
            };
            let item = format!(
                r#"{{"loggedDateTime":"{}","category":"{cat}","activity":"Log on","accessType":"Console"}}"#,
                crate::timefmt::api_time(t)
            );
            let mut line = Vec::new();
            crate::lake::encode::line_with_fields(
                item.as_bytes(),
                &[("_id", &format!("id{i}"))],
                &mut line,
            );
            enc.push_line(&line);
        }
        enc.finish()
    }

    fn uids(part: &ParquetPart) -> Vec<String> {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            part.bytes.clone(),
        )
        .unwrap()
        .build()
        .unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let meta = batch
                .column_by_name("metadata")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::StructArray>()
                .unwrap()
                .column_by_name("uid")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap()
                .clone();
            out.extend(meta.iter().map(|u| u.unwrap().to_owned()));
        }
        out
    }

    #[test]
    fn a_file_set_cuts_parts_by_text_the_same_way_every_time_each_record_once_in_order() {
        let t0 = "2026-11-21T10:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp();
        let run = || {
            // Two "hours" of lines, parts of at most ~4 KB of text (about 30 lines).
            let mut set = FileSet::with_part_text(Dataset::Audit, 4000);
            set.add("h1", &audit_body(0, 200, t0)).unwrap();
            let mut parts = set.take_parts();
            assert!(!parts.is_empty(), "parts closed during the first add");
            set.add("h2", &audit_body(200, 400, t0)).unwrap();
            parts.extend(set.take_parts());
            parts.extend(set.finish_parts().unwrap());
            parts
        };
        let parts = run();
        let mut by_class: BTreeMap<u32, Vec<(u32, Vec<String>)>> = BTreeMap::new();
        for p in &parts {
            by_class
                .entry(p.class.uid)
                .or_default()
                .push((p.part, uids(p)));
            assert_eq!(p.rows, uids(p).len());
        }
        for (class, mut ps) in by_class {
            ps.sort();
            let numbers: Vec<u32> = ps.iter().map(|(n, _)| *n).collect();
            assert_eq!(numbers, (0..ps.len() as u32).collect::<Vec<_>>(), "{class}");
            assert!(ps.len() > 2, "{class}: {}", ps.len());
            // Parts in number order hold the class's lines in time order, each once.
            let got: Vec<String> = ps.into_iter().flat_map(|(_, u)| u).collect();
            let want: Vec<String> = (0..400)
                .filter(|i| (i % 3 == 0) == (class == 3004))
                .map(|i| format!("id{i}"))
                .collect();
            assert_eq!(got, want, "{class}");
        }
        let again = run();
        assert_eq!(parts.len(), again.len());
        assert!(
            parts
                .iter()
                .zip(&again)
                .all(|(a, b)| (a.class, a.day, a.part, &a.bytes)
                    == (b.class, b.day, b.part, &b.bytes))
        );
        assert_eq!(part_name("x_pull", 0), "x_pull");
        assert_eq!(part_name("x_pull", 2), "x_pull.2");
    }

    #[test]
    fn a_line_the_mapping_cannot_read_does_not_stop_the_object() {
        // A lone surrogate escape is valid JSON text that serde_json's value parser refuses;
        // an alert score past i32 does not fit `risk_score`.
        let mut enc = crate::lake::encode::ObjectEncoder::new();
        for (id, extra) in [
            ("a", r#""cmd":"\ud800""#),
            ("b", r#""score":99999999999"#),
            ("c", r#""score":5"#),
        ] {
            let item =
                format!(r#"{{"id":"WB-1","updatedDateTime":"2026-11-21T10:00:00Z",{extra}}}"#);
            let mut line = Vec::new();
            crate::lake::encode::line_with_fields(item.as_bytes(), &[("_id", id)], &mut line);
            enc.push_line(&line);
        }
        let files = encode_object(Dataset::Alerts, "k", &enc.finish()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].2, 2, "the two readable lines");
    }
}
