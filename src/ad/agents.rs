//! The forwarding agents that have reported: one small document per agent in S3, updated with
//! conditional writes so that concurrent batches from one agent do not lose counts.

use crate::lake::sink::{Condition, S3Sink, SinkError};
use crate::lake::state::{StateError, parse_state};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What is known about one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Agent id.
    pub id: String,
    /// Host name it last reported.
    pub hostname: Option<String>,
    /// Version it last reported.
    pub version: Option<String>,
    /// First accepted batch.
    pub first_seen: DateTime<Utc>,
    /// Last batch (accepted or duplicate).
    pub last_seen: DateTime<Utc>,
    /// Events accepted from it (duplicates not counted).
    pub events_received: u64,
    /// Batches accepted from it.
    pub batches_received: u64,
}

/// An agent as `GET /v1/agents` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// The stored record.
    #[serde(flatten)]
    pub record: AgentRecord,
    /// `connected` when seen recently, else `disconnected`.
    pub status: &'static str,
}

/// Most agents listed by `GET /v1/agents`.
pub const MAX_LISTED: usize = 1000;

/// The registry under `<prefix>_state/agents/`.
#[derive(Debug, Clone)]
pub struct Registry {
    sink: S3Sink,
    prefix: String,
}

impl Registry {
    /// The registry for the dataset under `data_prefix`.
    pub fn new(sink: S3Sink, data_prefix: &str) -> Self {
        Registry {
            sink,
            prefix: format!("{data_prefix}_state/agents/"),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}.json", self.prefix)
    }

    /// Records a batch from `id`: `events` accepted (0 for a duplicate) at `now`.
    pub async fn record(
        &self,
        id: &str,
        hostname: Option<&str>,
        version: Option<&str>,
        events: u64,
        now: DateTime<Utc>,
    ) -> Result<AgentRecord, StateError> {
        let key = self.key(id);
        for _ in 0..8 {
            let (mut rec, cond) = match self.sink.get(&key).await? {
                Some(v) => {
                    let rec: AgentRecord = parse_state(&self.sink, &key, &v.body)?;
                    (rec, Condition::Matches(v.etag))
                }
                None => (
                    AgentRecord {
                        id: id.to_owned(),
                        hostname: None,
                        version: None,
                        first_seen: now,
                        last_seen: now,
                        events_received: 0,
                        batches_received: 0,
                    },
                    Condition::Absent,
                ),
            };
            rec.hostname = hostname.map(str::to_owned).or(rec.hostname);
            rec.version = version.map(str::to_owned).or(rec.version);
            rec.last_seen = rec.last_seen.max(now);
            rec.events_received += events;
            rec.batches_received += (events > 0) as u64;
            let body = serde_json::to_vec(&rec).expect("agent record serialises");
            match self.sink.put_json_if(&key, body, &cond).await {
                Ok(_) => return Ok(rec),
                Err(SinkError::PreconditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StateError::LostRace)
    }

    /// The first [`MAX_LISTED`] agents by id, with their status as of `now`, and whether there
    /// are more. The cap keeps the reply far under Lambda's 6 MB response limit (a record is at
    /// most ~0.6 KB, its fields capped when stored).
    pub async fn list(
        &self,
        now: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<(Vec<AgentView>, bool), StateError> {
        let (keys, truncated) = self.sink.list_at_most(&self.prefix, MAX_LISTED).await?;
        let reads = keys.iter().map(|k| self.sink.get(k));
        let mut out = Vec::with_capacity(keys.len());
        for (key, doc) in keys.iter().zip(futures_util::future::join_all(reads).await) {
            let Some(doc) = doc? else { continue };
            let record: AgentRecord = parse_state(&self.sink, key, &doc.body)?;
            let age = (now - record.last_seen).to_std().unwrap_or_default();
            let status = if age <= timeout {
                "connected"
            } else {
                "disconnected"
            };
            out.push(AgentView { record, status });
        }
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok((out, truncated))
    }
}
