//! Request bodies: base64 (from API Gateway), gzip with a hard cap on the output, JSON batch.
//!
//! Decompression streams into a buffer that stops at the cap, so a gzip bomb costs at most
//! the cap in memory and is refused with 413.

use base64::Engine;
use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::Read;

/// Why a body cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The base64 body is not base64.
    #[error("body is not valid base64: {0}")]
    Base64(String),
    /// Not gzip, or truncated.
    #[error("body is not valid gzip: {0}")]
    Gzip(String),
    /// Larger than the cap once decompressed.
    #[error("body decompresses to more than {0} bytes")]
    TooLarge(usize),
}

/// Decodes API Gateway's base64 body.
pub fn base64_body(body: &str) -> Result<Vec<u8>, DecodeError> {
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| DecodeError::Base64(e.to_string()))
}

/// Whether a `Content-Encoding` value names gzip (`gzip`, or its old alias `x-gzip`: RFC 9110
/// 8.4.1.3), whatever the case and surrounding spaces.
pub fn is_gzip_coding(coding: &str) -> bool {
    let c = coding.trim();
    c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip")
}

/// Decompresses gzip (one or more members), refusing output beyond `cap` bytes.
pub fn gunzip_capped(body: &[u8], cap: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(cap));
    let mut limited = MultiGzDecoder::new(body).take(cap as u64 + 1);
    limited
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > cap {
        return Err(DecodeError::TooLarge(cap));
    }
    Ok(out)
}

/// The agent that sent a batch.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentInfo {
    /// Stable id of the forwarding agent (`[A-Za-z0-9._-]{1,64}`).
    pub id: String,
    /// Host name of the domain controller (at most [`MAX_HOSTNAME`] characters).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Agent software version (at most [`MAX_VERSION`] characters).
    #[serde(default)]
    pub version: Option<String>,
    /// IANA time zone of times the agent writes without a zone (NXLog CE's `EventTime`).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Longest `agent.hostname` kept (a DNS name is at most 253).
pub const MAX_HOSTNAME: usize = 255;
/// Longest `agent.version` kept.
pub const MAX_VERSION: usize = 64;

/// A batch as posted; events stay raw (borrowed from the body) until validated.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Who sent it.
    pub agent: AgentInfo,
    /// Id of the batch, the same on every retry (`[A-Za-z0-9._-]{1,128}`).
    pub batch_id: String,
    /// The events.
    pub events: Vec<&'a RawValue>,
    /// Per event, the transport's metadata to keep with it (HEC's `host`, `fields`...) as a
    /// JSON object; empty when the transport has none.
    pub meta: Vec<String>,
    /// Per event, the transport's time for an event that carries none (HEC's `time`).
    pub fallback_times: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    /// The agent is to be named after its events' computer (a HEC request that names neither
    /// itself nor a real host).
    pub agent_from_events: bool,
}

/// Why a body is not a usable batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// More events than allowed; parsing stopped at the first one past the cap.
    #[error("more than {0} events in one batch")]
    TooManyEvents(usize),
    /// Valid JSON, wrong shape.
    #[error("not a batch: {0}")]
    Shape(serde_json::Error),
    /// Not JSON.
    #[error("body is not valid JSON: {0}")]
    Syntax(serde_json::Error),
}

/// Parses a batch, counting events as they are read: a body of millions of tiny events costs
/// the cap, not the body, before it is refused.
pub fn parse_batch(body: &[u8], max_events: usize) -> Result<Batch<'_>, BatchError> {
    use serde::de::DeserializeSeed;
    let too_many = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = BatchSeed {
        max_events,
        too_many: &too_many,
    }
    .deserialize(&mut de)
    .and_then(|b| de.end().map(|()| b));
    parsed.map_err(|e| batch_error(e, too_many.get(), max_events))
}

/// What a parse error means: the count cap (flagged by the seed), a wrong shape, or not JSON.
fn batch_error(e: serde_json::Error, too_many: bool, max_events: usize) -> BatchError {
    if too_many {
        BatchError::TooManyEvents(max_events)
    } else if e.classify() == serde_json::error::Category::Data {
        BatchError::Shape(e)
    } else {
        BatchError::Syntax(e)
    }
}

/// Parses bare events: a JSON array, or JSON objects one after another (NDJSON, or just
/// concatenated), counted as they are read.
pub fn parse_events(body: &[u8], max_events: usize) -> Result<Vec<&RawValue>, BatchError> {
    use serde::de::DeserializeSeed;
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let too_many = std::cell::Cell::new(false);
    let classify = |e| batch_error(e, too_many.get(), max_events);
    if first == Some(&b'[') {
        let mut de = serde_json::Deserializer::from_slice(body);
        let seed = EventsSeed {
            max: max_events,
            too_many: &too_many,
        };
        return seed
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v))
            .map_err(classify);
    }
    let mut out = Vec::new();
    for ev in serde_json::Deserializer::from_slice(body).into_iter::<&RawValue>() {
        let ev = ev.map_err(classify)?;
        if out.len() == max_events {
            return Err(BatchError::TooManyEvents(max_events));
        }
        out.push(ev);
    }
    Ok(out)
}

struct BatchSeed<'c> {
    max_events: usize,
    too_many: &'c std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Batch<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Batch<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BatchSeed<'_> {
    type Value = Batch<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#"a batch {"agent":{...},"batch_id":"...","events":[...]}"#)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Batch<'de>, A::Error> {
        use serde::de::Error;
        let (mut agent, mut batch_id, mut events) = (None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "agent" => agent = Some(map.next_value::<AgentInfo>()?),
                "batch_id" => batch_id = Some(map.next_value::<String>()?),
                "events" => {
                    events = Some(map.next_value_seed(EventsSeed {
                        max: self.max_events,
                        too_many: self.too_many,
                    })?)
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Batch {
            agent: agent.ok_or_else(|| A::Error::missing_field("agent"))?,
            batch_id: batch_id.ok_or_else(|| A::Error::missing_field("batch_id"))?,
            events: events.ok_or_else(|| A::Error::missing_field("events"))?,
            meta: Vec::new(),
            fallback_times: Vec::new(),
            agent_from_events: false,
        })
    }
}

struct EventsSeed<'c> {
    max: usize,
    too_many: &'c std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for EventsSeed<'_> {
    type Value = Vec<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EventsSeed<'_> {
    type Value = Vec<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(ev) = seq.next_element::<&'de RawValue>()? {
            if out.len() == self.max {
                self.too_many.set(true);
                return Err(serde::de::Error::custom("too many events"));
            }
            out.push(ev);
        }
        Ok(out)
    }
}

/// Whether `s` is a safe identifier of at most `max` characters (used in S3 keys).
pub fn is_identifier(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && s != "."
        && s != ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_with_a_cap() {
        assert_eq!(gunzip_capped(&gz(b"hello"), 5).unwrap(), b"hello");
        assert_eq!(
            gunzip_capped(&gz(b"hello!"), 5),
            Err(DecodeError::TooLarge(5))
        );
        assert!(matches!(
            gunzip_capped(b"plain", 100),
            Err(DecodeError::Gzip(_))
        ));
        let mut truncated = gz(b"hello world");
        truncated.truncate(truncated.len() - 4);
        assert!(matches!(
            gunzip_capped(&truncated, 100),
            Err(DecodeError::Gzip(_))
        ));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap() {
        let zeros = vec![0u8; 64 << 20];
        let bomb = gz(&zeros);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            gunzip_capped(&bomb, 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("dc01-7f3a", 64));
        assert!(is_identifier("6c1e.9_A", 64));
        assert!(!is_identifier("", 64));
        assert!(!is_identifier("a/b", 64));
        assert!(!is_identifier("..", 64));
        assert!(!is_identifier(&"a".repeat(65), 64));
    }

    #[test]
    fn events_are_counted_while_parsing() {
        let body = br#"{"agent":{"id":"a"},"batch_id":"b","events":[{},{},{}]}"#;
        assert_eq!(parse_batch(body, 3).unwrap().events.len(), 3);
        assert!(matches!(
            parse_batch(body, 2),
            Err(BatchError::TooManyEvents(2))
        ));
        // Millions of tiny elements: refused at the cap, long before the end of the body.
        let mut huge = br#"{"agent":{"id":"a"},"batch_id":"b","events":["#.to_vec();
        huge.extend(std::iter::repeat_n(b"0,".as_slice(), 5_000_000).flatten());
        huge.extend(b"0]}");
        let (r, peak) = crate::alloc_meter::peak(|| parse_batch(&huge, 10_000).map(|_| ()));
        assert!(matches!(r, Err(BatchError::TooManyEvents(10_000))));
        // A list of all 5 million would take 80 MB; counting while parsing keeps the cap's worth.
        assert!(peak < 1 << 20, "parsing held {peak} bytes");
        assert!(matches!(
            parse_batch(br#"{"agent":{"id":"a"},"events":[]}"#, 5),
            Err(BatchError::Shape(_))
        ));
        assert!(matches!(
            parse_batch(b"{nope", 5),
            Err(BatchError::Syntax(_))
        ));
        assert!(matches!(
            parse_batch(br#"{"agent":{"id":"a"},"batch_id":"b","events":[]} x"#, 5),
            Err(BatchError::Syntax(_))
        ));
    }

    #[test]
    fn bare_events_as_array_lines_or_concatenated() {
        for body in [
            &b"[{\"a\":1},{\"a\":2}]"[..],
            b"{\"a\":1}\n{\"a\":2}\n",
            b"{\"a\":1}{\"a\":2}",
            b"\r\n{\"a\":1}\r\n\r\n{\"a\":2}",
        ] {
            assert_eq!(parse_events(body, 5).unwrap().len(), 2, "{body:?}");
        }
        assert!(matches!(
            parse_events(b"{}\n{}\n{}", 2),
            Err(BatchError::TooManyEvents(2))
        ));
        assert!(matches!(
            parse_events(b"{\"a\":1}\n{nope", 5),
            Err(BatchError::Syntax(_))
        ));
        assert!(parse_events(b"", 5).unwrap().is_empty());
    }

    #[test]
    fn base64() {
        assert_eq!(base64_body("aGk=").unwrap(), b"hi");
        assert!(base64_body("***").is_err());
    }
}
