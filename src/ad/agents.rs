//! The forwarding agents that have reported: one small document per agent in S3, updated once
//! per compacted window (`compact.rs`) with conditional writes, each window counted once.

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
    /// Events accepted from it (duplicates not counted), quarantined ones included.
    pub events_received: u64,
    /// Of those, events kept in quarantine (see `docs`: the quarantine), not in the lake.
    #[serde(default)]
    pub events_quarantined: u64,
    /// Batches accepted from it.
    pub batches_received: u64,
    /// The last compacted window counted here (its start): a redone or concurrent compaction of
    /// a window already counted changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_to: Option<DateTime<Utc>>,
}

/// What one compacted window saw of an agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The host name of its latest batch, if it gave one.
    pub hostname: Option<String>,
    /// The version of its latest batch, if it gave one.
    pub version: Option<String>,
    /// Events (quarantined included).
    pub events: u64,
    /// Of those, quarantined.
    pub quarantined: u64,
    /// Batches with events (heartbeats, with none, only move `last_seen`).
    pub batches: u64,
    /// When its first and latest batch were received.
    pub first: Option<DateTime<Utc>>,
    /// See `first`.
    pub last: Option<DateTime<Utc>>,
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

/// The agent id of a host name: lower-case (a DC's name is case-insensitive, and agents spell
/// it differently), characters outside `[a-z0-9._-]` as `-`, at most 64, and never beginning
/// with `.`, `_` or `-` (S3 keys Athena would treat as hidden). `None` when nothing is left.
pub fn id_of_host(host: &str) -> Option<String> {
    let id: String = host
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = id.trim_start_matches(['.', '_', '-']);
    let id: String = id.chars().take(64).collect();
    (!id.trim_end_matches(['.', '-']).is_empty()).then_some(id)
}

/// Agent records read at once by `GET /v1/agents`.
const READ_CONCURRENCY: usize = 16;

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

    /// Counts what the compacted window starting at `window` saw of agent `id`, unless a
    /// compaction of this window or a later one already did.
    pub async fn record_window(
        &self,
        id: &str,
        seen: &Seen,
        window: DateTime<Utc>,
    ) -> Result<AgentRecord, StateError> {
        let key = self.key(id);
        let (first, last) = match (seen.first, seen.last) {
            (Some(f), Some(l)) => (f, l),
            _ => (window, window),
        };
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
                        first_seen: first,
                        last_seen: last,
                        events_received: 0,
                        events_quarantined: 0,
                        batches_received: 0,
                        counted_to: None,
                    },
                    Condition::Absent,
                ),
            };
            if rec.counted_to.is_some_and(|c| c >= window) {
                return Ok(rec);
            }
            rec.hostname = seen.hostname.clone().or(rec.hostname);
            rec.version = seen.version.clone().or(rec.version);
            rec.first_seen = rec.first_seen.min(first);
            rec.last_seen = rec.last_seen.max(last);
            rec.events_received += seen.events;
            rec.events_quarantined += seen.quarantined;
            rec.batches_received += seen.batches;
            rec.counted_to = Some(window);
            let body = serde_json::to_vec(&rec).expect("agent record serialises");
            match self.sink.put_json_if(&key, body, &cond).await {
                Ok(_) => return Ok(rec),
                Err(SinkError::PreconditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StateError::LostRace)
    }

    /// The first [`MAX_LISTED`] agents by id, with their status as of `now`, whether there
    /// are more, and the keys of records that could not be read (skipped, not fatal: one bad
    /// record must not hide every agent). The cap keeps the reply far under Lambda's 6 MB
    /// response limit (a record is at most ~0.6 KB, its fields capped when stored); the records
    /// are read `READ_CONCURRENCY` (16) at a time.
    pub async fn list(
        &self,
        now: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<(Vec<AgentView>, bool, Vec<String>), StateError> {
        use futures_util::StreamExt;
        let (keys, truncated) = self.sink.list_at_most(&self.prefix, MAX_LISTED).await?;
        let docs: Vec<_> = futures_util::stream::iter(keys.iter().cloned())
            .map(|k| async move {
                let doc = self.sink.get(&k).await;
                (k, doc)
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(keys.len());
        let mut unreadable = Vec::new();
        for (key, doc) in docs {
            let record: AgentRecord = match doc.map_err(StateError::from).and_then(|d| {
                d.map(|d| parse_state(&self.sink, &key, &d.body))
                    .transpose()
            }) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "agent record skipped");
                    unreadable.push(key);
                    continue;
                }
            };
            let age = (now - record.last_seen).to_std().unwrap_or_default();
            let status = if age <= timeout {
                "connected"
            } else {
                "disconnected"
            };
            out.push(AgentView { record, status });
        }
        out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok((out, truncated, unreadable))
    }
}

#[cfg(test)]
mod tests {
    use super::id_of_host;

    #[test]
    fn host_names_as_agent_ids() {
        assert_eq!(
            id_of_host("DC21.corp.example").as_deref(),
            Some("dc21.corp.example")
        );
        assert_eq!(id_of_host(" _.DC 7 ").as_deref(), Some("dc-7"));
        assert_eq!(id_of_host("..."), None);
        assert_eq!(id_of_host("é").as_deref(), None);
        assert_eq!(id_of_host(&"a".repeat(100)).map(|s| s.len()), Some(64));
    }
}
