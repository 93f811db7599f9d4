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
    /// Host name of the domain controller.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Agent software version.
    #[serde(default)]
    pub version: Option<String>,
}

/// A batch as posted; events stay raw (borrowed from the body) until validated.
#[derive(Debug, Deserialize)]
pub struct Batch<'a> {
    /// Who sent it.
    pub agent: AgentInfo,
    /// Id of the batch, the same on every retry (`[A-Za-z0-9._-]{1,128}`).
    pub batch_id: String,
    /// The events.
    #[serde(borrow)]
    pub events: Vec<&'a RawValue>,
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
    fn base64() {
        assert_eq!(base64_body("aGk=").unwrap(), b"hi");
        assert!(base64_body("***").is_err());
    }
}
