//! A request body to a validated, encoded batch, with no I/O: content type and encoding, size
//! caps, base64 and gzip, the batch's shape (envelope, bare events, HEC), every event
//! normalised, then the batch's landing object (`landing.rs`): its lines grouped by (category,
//! day), and the events the lake cannot take with their reasons.
//!
//! Request-level faults (body, shape, sizes, agent fields) refuse the request and nothing is
//! written. An event is never a reason to refuse the others: agents drop a whole request on a
//! 4xx (Fluent Bit, Vector, the OTel exporter, Logstash) or resend it forever (NXLog), so an
//! event that cannot be read (unknown shape, no computer, a time without a zone, a time more
//! than a day ahead) goes to the quarantine object with its reason, and events of any age go
//! to their own day partitions.

use super::event_time::{self, fluent_bit_offset};
use super::events::{self, Category, Hints, Normalized, Shape, normalize_in};
use super::landing::{BatchHeader, Part};
use super::{Body, HttpRequest, Ingest, IngestError, bad, decode, hec};
use crate::lake::encode::{ObjectEncoder, push_compact};
use crate::timefmt::api_time;
use chrono::{DateTime, Utc};
use decode::{BatchError, DecodeError};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Content types of a body: the envelope or a JSON array (`application/json`, which may also
/// carry one event per line), NDJSON.
const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// Most quarantined events listed with their reasons in a `/v1` reply.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Longest reason given for one quarantined event (values in it are cut shorter still), so that
/// a reply stays under ~0.5 MB (with 400 keys) whatever was sent.
pub const MAX_REASON_CHARS: usize = 600;

/// A validated, encoded batch: what [`Ingest::prepare`] hands to the storage step.
#[derive(Debug)]
pub struct Prepared {
    /// Who sent it.
    pub agent: decode::AgentInfo,
    /// Its id.
    pub batch_id: String,
    /// Events in it.
    pub events: usize,
    /// Of those, events quarantined: `(index in the batch, reason)`.
    pub quarantined: Vec<(usize, String)>,
    /// SHA-256 of the decoded body.
    pub body_sha256: String,
    /// The landing object's header (its first line).
    pub header: BatchHeader,
    /// The landing object: gzip JSON Lines (see [`Ingest::encode`]).
    pub landing: bytes::Bytes,
}

impl Prepared {
    /// The lake lines of the landing object: its stored events' lines, without the header line
    /// and the quarantine lines (it decompresses the object: for tests and tools).
    pub fn lake_lines(&self) -> Vec<String> {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(&self.landing[..]),
            &mut text,
        )
        .expect("a landing object is gzip UTF-8");
        let stored: usize = self.header.parts.iter().map(|p| p.lines).sum();
        text.lines()
            .skip(1)
            .take(stored)
            .map(str::to_owned)
            .collect()
    }
}

impl Ingest {
    /// Reads the body of a batch: content type and encoding, size caps, base64, gzip.
    fn body(&self, req: &HttpRequest<'_>) -> Result<Vec<u8>, IngestError> {
        let ctype = req.content_type.unwrap_or("");
        let mime = ctype.split(';').next().unwrap_or("").trim();
        // HEC clients send application/json, text/plain or nothing: HEC reads the body anyway.
        let hec = hec::route_of(req.path).is_some();
        if !hec && ![JSON, NDJSON].iter().any(|m| mime.eq_ignore_ascii_case(m)) {
            return Err(IngestError::UnsupportedMediaType(format!(
                "Content-Type {:?} is not supported; send application/json or application/x-ndjson",
                ctype.chars().take(100).collect::<String>()
            )));
        }
        let gzip = match req.content_encoding.map(str::trim).unwrap_or("") {
            "" | "identity" => false,
            e if decode::is_gzip_coding(e) => true,
            e => {
                return Err(IngestError::UnsupportedMediaType(format!(
                    "Content-Encoding {:?} is not supported; send gzip or no encoding",
                    e.chars().take(100).collect::<String>()
                )));
            }
        };
        // API Gateway escapes a text body inside its event JSON (up to twice its size), a
        // binary one is base64 (4/3): each has the limit that keeps the event under Lambda's
        // 6 MB request limit (see `config::LAMBDA_REQUEST_LIMIT`). Off Lambda the same limits
        // apply by what the body is: compressed or plain.
        let (max, approx) = match req.body {
            Body::Text(t) => (self.cfg.max_text_body_bytes, t.len()),
            // Refuse before decoding: base64 is 4/3 of the bytes it carries.
            Body::Base64(t) => (self.cfg.max_body_bytes, t.len() / 4 * 3),
            Body::Bytes(b) if gzip => (self.cfg.max_body_bytes, b.len()),
            Body::Bytes(b) => (self.cfg.max_text_body_bytes, b.len()),
        };
        if approx > max + 3 {
            return Err(IngestError::TooLarge(format!(
                "body is larger than {max} bytes"
            )));
        }
        let raw: std::borrow::Cow<'_, [u8]> = match req.body {
            Body::Text(t) => t.as_bytes().into(),
            Body::Base64(t) => decode::base64_body(t)
                .map_err(|e| bad("invalid_base64", e.to_string()))?
                .into(),
            Body::Bytes(b) => b.into(),
        };
        if raw.len() > max {
            return Err(IngestError::TooLarge(format!(
                "body is {} bytes; the limit is {max}",
                raw.len()
            )));
        }
        if !gzip {
            return Ok(raw.into_owned());
        }
        // gzip starts 1f 8b, and 8b is not UTF-8: a gzip body that reaches us as text with a
        // replacement character there was decoded as UTF-8 on the way, and its bytes are gone.
        // An API Gateway HTTP API may do that to `Content-Type: application/json` (it chooses
        // text or base64 from the content type alone: AWS Compute Blog, "Handling binary data
        // using Amazon API Gateway HTTP APIs"); the sender needs to know why, not "invalid gzip".
        if let Body::Text(t) = req.body
            && t.starts_with("\u{1f}\u{fffd}")
        {
            return Err(bad(
                "gzip_body_lost_in_transit",
                "this gzip body reached the function as text and its bytes were replaced on the way (API Gateway passes some content types as UTF-8 text); send it uncompressed, or through an endpoint that passes binary bodies (see docs/ad-ingest.md, \"gzip through API Gateway\")",
            ));
        }
        decode::gunzip_capped(&raw, self.cfg.max_decompressed_bytes).map_err(|e| match e {
            DecodeError::TooLarge(_) => IngestError::TooLarge(e.to_string()),
            other => bad("invalid_gzip", other.to_string()),
        })
    }

    /// All the CPU work of a batch, no I/O: reads the body, validates every event and encodes
    /// the objects. Public so that its cost can be measured on its own.
    pub fn prepare(
        &self,
        req: &HttpRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Prepared, IngestError> {
        let body = self.body(req)?;
        // (A HEC body has HEC's own answer to this: code 5.)
        if hec::route_of(req.path).is_none() && body.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(
                "invalid_json",
                "body is empty; send a batch {\"agent\":{...},\"batch_id\":\"...\",\"events\":[...]}",
            ));
        }
        let mut batch = self.parse(req, &body)?;
        // The header declares the zone for an envelope that does not.
        if batch.agent.timezone.is_none() {
            batch.agent.timezone = req.sender.timezone.map(|z| z.trim().to_owned());
        }
        let zone = match batch
            .agent
            .timezone
            .as_deref()
            .filter(|z| !z.trim().is_empty())
        {
            Some(z) => Some(event_time::zone(z).map_err(|e| {
                bad(
                    "invalid_batch",
                    format!("X-Agent-Timezone / agent.timezone: {e}"),
                )
            })?),
            None => None,
        };
        let outcomes = normalize_all(&batch, zone, self.cfg.max_event_bytes);
        if batch.agent_from_events {
            name_after_events(&mut batch);
        }
        check_agent(&batch.agent, &batch.batch_id)?;
        let Encoded {
            header,
            landing,
            quarantined,
        } = self.encode(&batch, &outcomes, now)?;
        Ok(Prepared {
            agent: batch.agent.clone(),
            batch_id: batch.batch_id.clone(),
            events: batch.events.len(),
            quarantined,
            body_sha256: hex::encode(Sha256::digest(&body)),
            header,
            landing,
        })
    }

    /// The batch in a body: the envelope, or bare events named by the `X-Agent-*` headers.
    fn parse<'b>(
        &self,
        req: &HttpRequest<'_>,
        body: &'b [u8],
    ) -> Result<decode::Batch<'b>, IngestError> {
        let max = self.cfg.max_events;
        if hec::route_of(req.path) == Some(hec::HecRoute::Event) {
            return hec::parse(body, max, &req.sender);
        }
        let too_large = |e: BatchError| match e {
            BatchError::TooManyEvents(n) => IngestError::TooLarge(format!(
                "more than {n} events in one batch; the limit is {n}"
            )),
            BatchError::Shape(_) => bad("invalid_batch", e.to_string()),
            BatchError::Syntax(_) => bad("invalid_json", e.to_string()),
        };
        let Some(agent_id) = req.sender.agent_id else {
            return decode::parse_batch(body, max).map_err(|e| match e {
                BatchError::Shape(_) => bad(
                    "invalid_batch",
                    format!("{e}; bare events (a JSON array or one object per line) need the X-Agent-Id header"),
                ),
                other => too_large(other),
            });
        };
        // An envelope is read as one, whoever also names the agent in a header.
        match decode::parse_batch(body, max) {
            Ok(envelope) => return Ok(envelope),
            Err(e @ BatchError::TooManyEvents(_)) => return Err(too_large(e)),
            Err(_) => {}
        }
        let events = decode::parse_events(body, max).map_err(too_large)?;
        let batch_id = match req.sender.batch_id {
            Some(id) => id.trim().to_owned(),
            None => hex::encode(Sha256::digest(body)),
        };
        Ok(decode::Batch {
            agent: decode::AgentInfo {
                id: agent_id.trim().to_owned(),
                hostname: req.sender.hostname.map(|h| h.trim().to_owned()),
                version: req.sender.version.map(|v| v.trim().to_owned()),
                timezone: None, // X-Agent-Timezone is read in `prepare`, for every route
            },
            batch_id,
            events,
            meta: Vec::new(),
            fallback_times: Vec::new(),
            agent_from_events: false,
        })
    }

    /// The landing object of a batch: its header line, its stored events' lines grouped by
    /// (category, day) in time order of the groups (events keep their order within a group),
    /// then its quarantine lines; and the quarantined events with their reasons.
    fn encode(
        &self,
        batch: &decode::Batch<'_>,
        outcomes: &[Result<Normalized, String>],
        now: DateTime<Utc>,
    ) -> Result<Encoded, IngestError> {
        let stored: Vec<(usize, &Normalized)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().ok().map(|n| (i, n)))
            .collect();
        let part = |n: &Normalized| (n.category, n.time.date_naive());
        let mut order: Vec<usize> = (0..stored.len()).collect();
        order.sort_by_key(|&j| part(stored[j].1)); // stable: events keep their order within a part
        let parts: Vec<Part> = order
            .chunk_by(|&a, &b| part(stored[a].1) == part(stored[b].1))
            .map(|group| {
                let (category, day) = part(stored[group[0]].1);
                Part {
                    category,
                    day,
                    lines: group.len(),
                }
            })
            .collect();
        if parts.len() > self.cfg.max_partitions {
            return Err(IngestError::TooLarge(format!(
                "the events span {} (category, day) partitions; the limit is {}: send fewer days per batch",
                parts.len(),
                self.cfg.max_partitions
            )));
        }
        let quarantined: Vec<(usize, String)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let reason = o.as_ref().err()?;
                Some((i, reason.chars().take(MAX_REASON_CHARS).collect()))
            })
            .collect();
        let header = BatchHeader {
            agent: batch.agent.id.clone(),
            hostname: batch.agent.hostname.clone(),
            version: batch.agent.version.clone(),
            batch_id: batch.batch_id.clone(),
            received_at: now,
            events: batch.events.len(),
            parts,
            quarantined: quarantined.len(),
        };
        let received_at = api_time(now);
        let at = Origin {
            agent_id: &batch.agent.id,
            batch_id: &batch.batch_id,
            received_at: &received_at,
        };
        let raw = |i: usize| batch.events[i].get().as_bytes();
        let meta = |i: usize| batch.meta.get(i).map(String::as_str);
        let mut enc = ObjectEncoder::new();
        let mut line = serde_json::to_vec(&header).expect("header serialises");
        enc.push_line(&line);
        for &j in &order {
            let (i, n) = stored[j];
            line.clear();
            write_line(&mut line, n, &at, raw(i), meta(i));
            enc.push_line(&line);
        }
        // Metadata over the cap is what quarantined its event: the line says how large it was.
        let bounded_meta = |i: usize| {
            meta(i).map(|m| match m.len() > self.cfg.max_event_bytes {
                true => format!("{{\"omitted_bytes\":{}}}", m.len()).into(),
                false => std::borrow::Cow::Borrowed(m),
            })
        };
        for (i, reason) in &quarantined {
            line.clear();
            write_quarantine_line(
                &mut line,
                *i,
                reason,
                &at,
                raw(*i),
                bounded_meta(*i).as_deref(),
            );
            enc.push_line(&line);
        }
        Ok(Encoded {
            header,
            landing: enc.finish(),
            quarantined,
        })
    }
}

/// A batch's landing object, and its quarantined events `(index, reason)`.
struct Encoded {
    header: BatchHeader,
    landing: bytes::Bytes,
    quarantined: Vec<(usize, String)>,
}

/// Where a stored line came from: the agent, the batch and when it was received.
pub(crate) struct Origin<'a> {
    pub(crate) agent_id: &'a str,
    pub(crate) batch_id: &'a str,
    pub(crate) received_at: &'a str,
}

/// The file name of a batch's object: `<agent>~<batch_id>.jsonl.gz`. Athena (like Hive)
/// skips files whose names begin with `_` or `.`, so an agent id beginning with one is written
/// after a `~`, which no identifier contains: the name stays visible and cannot be another
/// agent's.
pub(crate) fn object_name(agent: &str, batch_id: &str) -> String {
    let visible = if agent.starts_with(['_', '.']) {
        "~"
    } else {
        ""
    };
    format!("{visible}{agent}~{batch_id}.jsonl.gz")
}

/// The folder of quarantine objects under the AD prefix (the `active_directory_quarantine`
/// table's location).
pub const QUARANTINE_DIR: &str = "quarantine/";

/// The key of a (category, day) object named after an agent and a batch (`tv1 import-evtx`'s
/// steps): `~` is not an identifier character, so no two (agent, batch) pairs share a key.
pub(crate) fn data_key(
    prefix: &str,
    c: Category,
    day: chrono::NaiveDate,
    agent: &str,
    batch_id: &str,
) -> String {
    format!(
        "{prefix}category={}/dt={}/{}",
        c.as_str(),
        day.format("%Y-%m-%d"),
        object_name(agent, batch_id)
    )
}

/// Checks the agent fields and batch id that go into keys and the agent list.
fn check_agent(agent: &decode::AgentInfo, batch_id: &str) -> Result<(), IngestError> {
    if !decode::is_identifier(&agent.id, 64) {
        return Err(bad(
            "invalid_batch",
            "agent.id must be 1-64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    if !decode::is_identifier(batch_id, 128) {
        return Err(bad(
            "invalid_batch",
            "batch_id must be 1-128 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    for (field, value, max) in [
        ("agent.hostname", &agent.hostname, decode::MAX_HOSTNAME),
        ("agent.version", &agent.version, decode::MAX_VERSION),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(bad(
                "invalid_batch",
                format!("{field} is longer than {max} characters"),
            ));
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic into an error with the panic's message: a panic in a handler is a
/// dropped connection on `tv1 serve` and a 5xx that agents retry forever on Lambda.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

/// Names a HEC agent that names itself nowhere (no `X-Agent-Id`, no real host) after the first
/// computer its events name, stored or not: a function of the body alone, so a retry of the
/// same body is the same agent's. `hec` when no event names a computer.
fn name_after_events(batch: &mut decode::Batch<'_>) {
    let computer = batch.events.iter().find_map(|e| {
        let v: Value = serde_json::from_str(e.get()).ok()?;
        events::computer_of(&v).filter(|c| super::agents::id_of_host(c).is_some())
    });
    batch.agent.id = computer
        .as_deref()
        .and_then(super::agents::id_of_host)
        .unwrap_or_else(|| "hec".into());
    if batch.agent.hostname.is_none() {
        batch.agent.hostname = computer.map(|c| c.chars().take(decode::MAX_HOSTNAME).collect());
    }
}

/// Normalises every event: `Ok` to store, `Err(reason)` to quarantine (an event over
/// `max_event_bytes` among them: the lines of the lake stay bounded). Whether an event can be
/// stored depends on the request alone, never on when it arrives, so a retry of a half-stored
/// batch meets the same objects. Fluent Bit `winevtlog` times whose zone was not declared are
/// then corrected against their HEC `time` (see [`fluent_bit_offset`]).
fn normalize_all(
    batch: &decode::Batch<'_>,
    zone: Option<chrono_tz::Tz>,
    max_event_bytes: usize,
) -> Vec<Result<Normalized, String>> {
    let mut declared = vec![zone.is_some(); batch.events.len()];
    let mut out: Vec<Result<Normalized, String>> = batch
        .events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            // HEC's metadata (`fields`, `host`...) goes into the line too: bounded with it.
            let size = ev.get().len() + batch.meta.get(i).map_or(0, String::len);
            if size > max_event_bytes {
                return Err(format!(
                    "the event and its HEC metadata are {size} bytes; the limit is {max_event_bytes} (AD_MAX_EVENT_BYTES)"
                ));
            }
            let v: Value = serde_json::from_str(ev.get()).map_err(|e| e.to_string())?;
            let zone = match event_zone(batch.meta.get(i))? {
                Some(z) => {
                    declared[i] = true;
                    Some(z)
                }
                None => zone,
            };
            let hints = Hints {
                transport_time: batch.fallback_times.get(i).copied().flatten(),
                zone,
            };
            // A bug the property tests missed costs this event's place in the lake (it is
            // quarantined, with the panic's message), not the request.
            guarded(|| normalize_in(&v, &hints))
                .unwrap_or_else(|panic| Err(format!("internal error reading this event: {panic}")))
        })
        .collect();
    correct_fluent_bit_offsets(&mut out, batch, &declared);
    out
}

/// The zone an event's HEC `fields.timezone` declares (Fluent Bit cannot send headers; its
/// `splunk` output's `event_field timezone <IANA name>` puts it there); an error names a value
/// that is not a zone.
fn event_zone(meta: Option<&String>) -> Result<Option<chrono_tz::Tz>, String> {
    let Some(meta) = meta else { return Ok(None) };
    let m: Value = serde_json::from_str(meta).map_err(|e| e.to_string())?;
    match m.pointer("/fields/timezone") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(z)) if z.trim().is_empty() => Ok(None),
        Some(Value::String(z)) => event_time::zone(z)
            .map(Some)
            .map_err(|e| format!("HEC fields.timezone: {e}")),
        Some(other) => Err(format!(
            "HEC fields.timezone is {}, not an IANA time zone name",
            other.to_string().chars().take(40).collect::<String>()
        )),
    }
}

/// Applies [`fluent_bit_offset`] per computer to the Fluent Bit `winevtlog` events that have a
/// HEC `time`, keeping the stated time in the line.
fn correct_fluent_bit_offsets(
    out: &mut [Result<Normalized, String>],
    batch: &decode::Batch<'_>,
    declared: &[bool],
) {
    let read_times = &batch.fallback_times;
    let mut by_computer: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, o) in out.iter().enumerate() {
        if let (Ok(n), Some(Some(_))) = (o, read_times.get(i))
            && n.shape == Shape::FluentBitWinevtlog
            && !declared[i]
        {
            by_computer.entry(n.computer.clone()).or_default().push(i);
        }
    }
    for idx in by_computer.values() {
        let pairs: Vec<_> = idx
            .iter()
            .filter_map(|&i| Some((out[i].as_ref().ok()?.time, read_times[i]?)))
            .collect();
        for (&i, shift) in idx.iter().zip(fluent_bit_offset(&pairs)) {
            let (Ok(n), Some(read)) = (&mut out[i], read_times[i]) else {
                continue;
            };
            if shift.is_zero() {
                continue;
            }
            let stated = n.time;
            let Some(corrected) = stated.checked_add_signed(shift) else {
                continue;
            };
            n.time = corrected;
            // The time as the record wrote it.
            let written = serde_json::from_str::<Value>(batch.events[i].get())
                .ok()
                .and_then(|v| v.get("TimeCreated")?.as_str().map(str::to_owned));
            n.time_fix = Some(event_time::TimeFix {
                original: written.unwrap_or_else(|| event_time::stored(stated)),
                reason: format!(
                    "Fluent Bit winevtlog wrote TimeCreated with an offset {} hour off (daylight saving; fluent/fluent-bit#8086, #11213); corrected by {:+} h against its HEC time {}",
                    shift.num_hours().abs(),
                    shift.num_hours(),
                    event_time::stored(read)
                ),
            });
        }
    }
}

pub(crate) fn write_line(
    out: &mut Vec<u8>,
    n: &Normalized,
    at: &Origin<'_>,
    raw: &[u8],
    meta: Option<&str>,
) {
    let s =
        |out: &mut Vec<u8>, v: &str| serde_json::to_writer(&mut *out, v).expect("in-memory write");
    out.extend_from_slice(b"{\"time\":");
    s(out, &event_time::stored(n.time));
    if let Some(fix) = &n.time_fix {
        out.extend_from_slice(b",\"time_original\":");
        s(out, &fix.original);
        out.extend_from_slice(b",\"time_fix\":");
        s(out, &fix.reason);
    }
    out.extend_from_slice(
        format!(
            ",\"event_id\":{},\"category\":\"{}\",\"computer\":",
            n.event_id,
            n.category.as_str()
        )
        .as_bytes(),
    );
    s(out, &n.computer);
    out.extend_from_slice(b",\"channel\":");
    serde_json::to_writer(&mut *out, &n.channel).expect("in-memory write");
    out.extend_from_slice(b",\"record_id\":");
    serde_json::to_writer(&mut *out, &n.record_id).expect("in-memory write");
    out.extend_from_slice(b",\"provider\":");
    serde_json::to_writer(&mut *out, &n.provider).expect("in-memory write");
    out.extend_from_slice(b",\"shape\":");
    serde_json::to_writer(&mut *out, &n.shape).expect("in-memory write");
    origin(out, at);
    tail(out, raw, meta);
}

/// A quarantined event: where it came from, its index in the batch, why, and the event.
fn write_quarantine_line(
    out: &mut Vec<u8>,
    index: usize,
    reason: &str,
    at: &Origin<'_>,
    raw: &[u8],
    meta: Option<&str>,
) {
    out.extend_from_slice(format!("{{\"index\":{index},\"reason\":").as_bytes());
    serde_json::to_writer(&mut *out, reason).expect("in-memory write");
    origin(out, at);
    tail(out, raw, meta);
}

fn origin(out: &mut Vec<u8>, at: &Origin<'_>) {
    for (name, v) in [
        ("agent_id", at.agent_id),
        ("batch_id", at.batch_id),
        ("received_at", at.received_at),
    ] {
        out.extend_from_slice(format!(",\"{name}\":").as_bytes());
        serde_json::to_writer(&mut *out, v).expect("in-memory write");
    }
}

/// The transport's metadata and the event as sent, closing the line.
fn tail(out: &mut Vec<u8>, raw: &[u8], meta: Option<&str>) {
    if let Some(meta) = meta {
        out.extend_from_slice(b",\"hec\":");
        push_compact(meta.as_bytes(), out);
    }
    out.extend_from_slice(b",\"event\":");
    push_compact(raw, out);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn offline_ingest(vars: &[(&str, &str)]) -> Ingest {
        Ingest::offline(vars).unwrap()
    }

    fn post<'a>(path: &'a str, body: &'a str, sender: crate::ad::Sender<'a>) -> HttpRequest<'a> {
        HttpRequest {
            method: "POST",
            path,
            authorization: None,
            x_api_key: None,
            content_type: Some("application/json"),
            content_encoding: None,
            body: Body::apigw(Some(body), false),
            sender,
        }
    }

    #[test]
    fn a_batch_over_many_days_holds_one_encoder_at_a_time() {
        // 10,000 events over a year in all five categories: 1,825 objects. An encoder per
        // object open at once would hold ~0.3 MB of compressor state each (over 500 MB).
        let ingest = offline_ingest(&[("AD_MAX_PARTITIONS", "5000")]);
        let now = Utc::now();
        let ids = [4624, 4720, 4662, 1102, 1];
        let events: Vec<Value> = (0..10_000)
            .map(|i| {
                let t = now - chrono::Duration::days((i / 5 % 365) as i64);
                json!({"event_id": ids[i % 5], "time": api_time(t), "computer": "DC01", "n": i})
            })
            .collect();
        let body = serde_json::to_string(
            &json!({"agent": {"id": "a"}, "batch_id": "b", "events": events}),
        )
        .unwrap();
        let req = post("/v1/events", &body, Default::default());
        let (prepared, peak) = crate::alloc_meter::peak(|| ingest.prepare(&req, now).unwrap());
        assert_eq!(prepared.header.parts.len(), 1825);
        println!("peak while preparing: {} KB", peak >> 10);
        assert!(peak < 64 << 20, "preparing held {} MB", peak >> 20);
    }

    #[test]
    fn every_object_name_is_visible_to_athena() {
        for agent in ["_hidden", ".dot", "dc01"] {
            let name = object_name(agent, "b");
            assert!(!name.starts_with(['_', '.']), "{name}");
            assert!(name.contains(&format!("{agent}~b")), "{name}");
        }
        assert_ne!(object_name("_a", "b"), object_name("a", "b"));
    }

    fn gunzip(b: &[u8]) -> String {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(b), &mut s).unwrap();
        s
    }

    /// The landing object's quarantine lines: the last `header.quarantined`.
    fn quarantine_lines(p: &Prepared) -> Vec<Value> {
        let text = gunzip(&p.landing);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines[lines.len() - p.header.quarantined..].to_vec()
    }

    #[test]
    fn hec_metadata_is_bounded_with_its_event() {
        let ingest = offline_ingest(&[]);
        let event = json!({"time": 1795255201, "fields": {"x": "y".repeat(300 << 10)},
            "event": {"event_id": 4624, "time": "2026-11-21T10:00:01Z", "computer": "DC1"}});
        let small = json!({"time": 1795255202,
            "event": {"event_id": 4624, "time": "2026-11-21T10:00:02Z", "computer": "DC1"}});
        let body = format!("{event}{small}");
        let p = ingest
            .prepare(
                &post("/services/collector/event", &body, Default::default()),
                Utc::now(),
            )
            .unwrap();
        assert_eq!(p.quarantined.len(), 1, "{:?}", p.quarantined);
        assert!(
            p.quarantined[0].1.contains("HEC metadata"),
            "{:?}",
            p.quarantined
        );
        let q = quarantine_lines(&p);
        assert_eq!(q.len(), 1);
        let size = q[0].to_string().len();
        assert!(size < 4096, "the quarantine line is {size} bytes");
        assert!(q[0]["hec"]["omitted_bytes"].as_u64().unwrap() > 300 << 10);
        assert_eq!(q[0]["event"]["computer"], "DC1");
        assert_eq!(p.header.parts.len(), 1);
        assert!(
            gunzip(&p.landing).len() < 8192,
            "the landing object holds no large metadata"
        );
    }

    #[test]
    fn an_envelope_is_an_envelope_even_with_an_agent_header() {
        let ingest = offline_ingest(&[]);
        let body = r#"{"agent":{"id":"dc01"},"batch_id":"b7","events":[{"event_id":4624,"time":"2026-11-21T10:00:01Z","computer":"DC1"}]}"#;
        let with_header = crate::ad::Sender {
            agent_id: Some("dc01"),
            ..Default::default()
        };
        let p = ingest
            .prepare(&post("/v1/events", body, with_header), Utc::now())
            .unwrap();
        assert_eq!(
            (p.batch_id.as_str(), p.events, p.quarantined.len()),
            ("b7", 1, 0)
        );
        // Bare NDJSON under the same header is still bare events.
        let ndjson = "{\"event_id\":4624,\"time\":\"2026-11-21T10:00:01Z\",\"computer\":\"DC1\"}\n{\"event_id\":4634,\"time\":\"2026-11-21T10:00:02Z\",\"computer\":\"DC1\"}";
        let p = ingest
            .prepare(&post("/v1/events", ndjson, with_header), Utc::now())
            .unwrap();
        assert_eq!((p.events, p.agent.id.as_str()), (2, "dc01"));
    }

    #[test]
    fn a_panic_is_an_error_not_an_unwinding_handler() {
        assert_eq!(guarded(|| 7), Ok(7));
        let e = guarded(|| -> u8 { panic!("slice inside a character") }).unwrap_err();
        assert_eq!(e, "slice inside a character");
        let e = guarded(|| -> u8 { panic!("{} overflowed", "DateTime + TimeDelta") }).unwrap_err();
        assert_eq!(e, "DateTime + TimeDelta overflowed");
    }

    #[test]
    fn the_zone_header_serves_an_envelope_that_declares_none() {
        let ingest = offline_ingest(&[]);
        let body = r#"{"agent":{"id":"nx"},"batch_id":"b","events":[{"EventID":4624,"EventTime":"2026-11-21 11:00:05","Hostname":"DC51"}]}"#;
        let req = |zone| {
            let sender = crate::ad::Sender {
                timezone: zone,
                ..Default::default()
            };
            post("/v1/events", body, sender)
        };
        let now = Utc::now();
        let p = ingest.prepare(&req(None), now).unwrap();
        assert_eq!((p.header.parts.len(), p.quarantined.len()), (0, 1));
        let p = ingest.prepare(&req(Some("Europe/Berlin")), now).unwrap();
        assert_eq!((p.header.parts.len(), p.quarantined.len()), (1, 0));
        assert_eq!(p.header.parts[0].day.to_string(), "2026-11-21");
        let e = ingest.prepare(&req(Some("Mars/Base")), now).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
    }

    #[test]
    fn lines_keep_the_event_and_add_normalised_fields() {
        let raw = br#"{"event_id":4624,"time":"2026-11-21T10:00:00Z","computer":"DC01","data":{"x":"y\nz"}}"#;
        let n = crate::ad::events::normalize(&serde_json::from_slice(raw).unwrap()).unwrap();
        let mut out = Vec::new();
        let at = Origin {
            agent_id: "dc01-7f3a",
            batch_id: "b1",
            received_at: "2026-11-21T10:00:05Z",
        };
        write_line(&mut out, &n, &at, raw, None);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event_id"], 4624);
        assert_eq!(v["category"], "logon");
        assert_eq!(v["record_id"], Value::Null);
        assert_eq!(v["agent_id"], "dc01-7f3a");
        assert_eq!(v["shape"], "native");
        assert_eq!(v["event"], serde_json::from_slice::<Value>(raw).unwrap());
        assert!(!out.contains(&b'\n'));
    }
}
