//! State documents: small JSON objects kept in S3 next to the data (the puller's checkpoint and
//! status, ad-ingest's agent records), and the one error type for reading and writing them.

use crate::lake::sink::{S3Sink, SinkError};

/// A failure reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another run wrote the checkpoint since this run read it.
    #[error(
        "another run moved the checkpoint first; this run stopped without writing anything further"
    )]
    LostRace,
    /// The document is not what this version writes.
    #[error(
        "state document s3://{bucket}/{key} is unreadable ({reason}){}",
        repair_hint(key)
    )]
    Corrupt {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Parse error.
        reason: String,
    },
    /// S3 failed.
    #[error(transparent)]
    Sink(SinkError),
}

impl From<SinkError> for StateError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::PreconditionFailed { .. } => StateError::LostRace,
            other => StateError::Sink(other),
        }
    }
}

/// What to do about an unreadable document: for the checkpoint, never to delete it.
fn repair_hint(key: &str) -> &'static str {
    if key.ends_with("_state/checkpoint.json") {
        "; do not delete it: `tv1 checkpoint show` tells where the data in S3 ends, and `tv1 checkpoint set --committed-to <that time> --origin <time>` replaces it safely"
    } else {
        "; it is rewritten from scratch once deleted"
    }
}

/// Parses a state document read from `sink` at `key`; an unreadable one is [`StateError::Corrupt`].
pub fn parse_state<T: serde::de::DeserializeOwned>(
    sink: &S3Sink,
    key: &str,
    body: &[u8],
) -> Result<T, StateError> {
    serde_json::from_slice(body).map_err(|e| StateError::Corrupt {
        bucket: sink.bucket().to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
