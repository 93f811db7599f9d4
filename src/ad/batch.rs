//! A request body to a validated, encoded batch, with no I/O: content type and encoding, size
//! caps, base64 and gzip, the batch's shape (envelope, bare events, HEC), every event checked
//! and normalised, then one gzip JSON Lines object per (category, day). Nothing is written
//! unless every event is valid.

use super::events::{self, Category, normalize_with};
use super::{Body, HttpRequest, Ingest, IngestError, bad, decode, hec};
use crate::lake::encode::{ObjectEncoder, push_compact};
use crate::timefmt::api_time;
use chrono::{DateTime, NaiveDate, Utc};
use decode::{BatchError, DecodeError};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Content types of a body: the envelope or a JSON array (`application/json`, which may also
/// carry one event per line), NDJSON.
const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// Most invalid events listed in a 422 reply.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Longest reason given for one invalid event (values in it are cut shorter still), so that a
/// 422 reply stays under ~25 KB whatever was sent.
pub const MAX_REASON_CHARS: usize = 200;

/// Oldest event accepted, before the time of receipt.
pub const MAX_EVENT_AGE_DAYS: i64 = 365;
/// Newest event accepted, after the time of receipt (clock skew of the domain controller).
pub const MAX_EVENT_LEAD_DAYS: i64 = 1;

/// A validated, encoded batch: what [`Ingest::prepare`] hands to the storage step.
#[derive(Debug)]
pub struct Prepared {
    /// Who sent it.
    pub agent: decode::AgentInfo,
    /// Its id.
    pub batch_id: String,
    /// Events in it.
    pub events: usize,
    /// SHA-256 of the decoded body.
    pub body_sha256: String,
    /// `(key, gzip JSON Lines)` per category and day.
    pub objects: Vec<(String, bytes::Bytes)>,
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
            e if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => true,
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
        let batch = self.parse(req, &body)?;
        check_agent(&batch.agent, &batch.batch_id)?;
        let total = batch.events.len();
        if let Some((i, e)) = batch
            .events
            .iter()
            .enumerate()
            .find(|(_, e)| e.get().len() > self.cfg.max_event_bytes)
        {
            return Err(IngestError::TooLarge(format!(
                "event {i} is {} bytes; the limit is {}",
                e.get().len(),
                self.cfg.max_event_bytes
            )));
        }
        let normalized = validate(&batch.events, &batch.fallback_times, now)?;
        let objects = self.encode(&batch, &normalized, now)?;
        Ok(Prepared {
            agent: batch.agent.clone(),
            batch_id: batch.batch_id.clone(),
            events: total,
            body_sha256: hex::encode(Sha256::digest(&body)),
            objects,
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
            },
            batch_id,
            events,
            meta: Vec::new(),
            fallback_times: Vec::new(),
        })
    }

    /// The objects of a batch: one per (category, day), encoded one at a time so that memory
    /// holds one open encoder however many partitions a batch spans. Named by agent and batch
    /// id, so that a retry after a lost reply meets the same keys.
    fn encode(
        &self,
        batch: &decode::Batch<'_>,
        normalized: &[events::Normalized],
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, bytes::Bytes)>, IngestError> {
        let part = |i: usize| (normalized[i].category, normalized[i].time.date_naive());
        let mut order: Vec<usize> = (0..normalized.len()).collect();
        order.sort_by_key(|&i| part(i)); // stable: events keep their order within an object
        let partitions = 1 + order
            .windows(2)
            .filter(|w| part(w[0]) != part(w[1]))
            .count();
        if !order.is_empty() && partitions > self.cfg.max_partitions {
            return Err(IngestError::TooLarge(format!(
                "the events span {partitions} (category, day) partitions; the limit is {}: send fewer days per batch",
                self.cfg.max_partitions
            )));
        }
        let received_at = api_time(now);
        let mut objects = Vec::new();
        let mut line = Vec::with_capacity(4096);
        for group in order.chunk_by(|&a, &b| part(a) == part(b)) {
            let (category, day) = part(group[0]);
            let mut enc = ObjectEncoder::new();
            for &i in group {
                line.clear();
                write_line(
                    &mut line,
                    &normalized[i],
                    &batch.agent.id,
                    &batch.batch_id,
                    &received_at,
                    batch.events[i].get().as_bytes(),
                    batch.meta.get(i).map(String::as_str),
                );
                enc.push_line(&line);
            }
            objects.push((
                data_key(
                    &self.cfg.prefix,
                    category,
                    day,
                    &batch.agent.id,
                    &batch.batch_id,
                ),
                enc.finish(),
            ));
        }
        Ok(objects)
    }
}

/// The key of a batch's object for one (category, day). `~` is not an identifier character, so
/// no two (agent, batch) pairs can share a key.
fn data_key(prefix: &str, c: Category, day: NaiveDate, agent: &str, batch_id: &str) -> String {
    format!(
        "{prefix}category={}/dt={}/{agent}~{batch_id}.jsonl.gz",
        c.as_str(),
        day.format("%Y-%m-%d")
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

/// Validates and normalises every event (nothing is written unless all are valid), including
/// a time within [receipt − 365 days, receipt + 1 day]: an event outside it is a clock or
/// parsing error, and accepting it would open a partition per stray day.
fn validate(
    raw: &[&serde_json::value::RawValue],
    fallback_times: &[Option<DateTime<Utc>>],
    now: DateTime<Utc>,
) -> Result<Vec<events::Normalized>, IngestError> {
    let earliest = now - chrono::Duration::days(MAX_EVENT_AGE_DAYS);
    let latest = now + chrono::Duration::days(MAX_EVENT_LEAD_DAYS);
    let mut normalized = Vec::with_capacity(raw.len());
    let (mut invalid, mut details) = (0, Vec::new());
    for (i, ev) in raw.iter().enumerate() {
        let parsed: Result<Value, String> =
            serde_json::from_str(ev.get()).map_err(|e| e.to_string());
        let fallback = fallback_times.get(i).copied().flatten();
        let checked = parsed.and_then(|v| normalize_with(&v, fallback)).and_then(|n| {
            if n.time < earliest || n.time > latest {
                Err(format!(
                    "time {} is outside the accepted range {} to {} ({MAX_EVENT_AGE_DAYS} days before receipt to {MAX_EVENT_LEAD_DAYS} day after)",
                    api_time(n.time),
                    api_time(earliest),
                    api_time(latest)
                ))
            } else {
                Ok(n)
            }
        });
        match checked {
            Ok(n) => normalized.push(n),
            Err(reason) => {
                invalid += 1;
                if details.len() < MAX_REPORTED_ERRORS {
                    details.push((i, reason.chars().take(MAX_REASON_CHARS).collect()));
                }
            }
        }
    }
    if invalid > 0 {
        return Err(IngestError::InvalidEvents {
            total: raw.len(),
            invalid,
            details,
        });
    }
    Ok(normalized)
}

fn write_line(
    out: &mut Vec<u8>,
    n: &events::Normalized,
    agent_id: &str,
    batch_id: &str,
    received_at: &str,
    raw: &[u8],
    meta: Option<&str>,
) {
    let s =
        |out: &mut Vec<u8>, v: &str| serde_json::to_writer(&mut *out, v).expect("in-memory write");
    out.extend_from_slice(b"{\"time\":");
    s(out, &api_time(n.time));
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
    out.extend_from_slice(b",\"agent_id\":");
    s(out, agent_id);
    out.extend_from_slice(b",\"batch_id\":");
    s(out, batch_id);
    out.extend_from_slice(b",\"received_at\":");
    s(out, received_at);
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
    use crate::config::IngestConfig;
    use serde_json::{Value, json};

    fn offline_ingest(vars: &[(&str, &str)]) -> Ingest {
        let mut env: std::collections::HashMap<String, String> =
            [("API_KEY_PARAM", "/k"), ("BUCKET", "b")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let sdk = crate::aws::offline_config();
        Ingest::new(
            IngestConfig::from_map(&env).unwrap(),
            crate::aws::s3_client(&sdk),
            crate::aws::ssm_client(&sdk),
        )
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
        let req = HttpRequest {
            method: "POST",
            path: "/v1/events",
            authorization: None,
            x_api_key: None,
            content_type: Some("application/json"),
            content_encoding: None,
            body: Body::apigw(Some(&body), false),
            sender: Default::default(),
        };
        let (prepared, peak) = crate::alloc_meter::peak(|| ingest.prepare(&req, now).unwrap());
        assert_eq!(prepared.objects.len(), 1825);
        println!("peak while preparing: {} KB", peak >> 10);
        assert!(peak < 64 << 20, "preparing held {} MB", peak >> 20);
    }

    #[test]
    fn lines_keep_the_event_and_add_normalised_fields() {
        let raw = br#"{"event_id":4624,"time":"2026-11-21T10:00:00Z","computer":"DC01","data":{"x":"y\nz"}}"#;
        let n = events::normalize(&serde_json::from_slice(raw).unwrap()).unwrap();
        let mut out = Vec::new();
        write_line(
            &mut out,
            &n,
            "dc01-7f3a",
            "b1",
            "2026-11-21T10:00:05Z",
            raw,
            None,
        );
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
