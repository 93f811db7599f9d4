//! A prepared batch into S3, exactly once: the batch marker says whether it was stored before;
//! if not, its objects are created (create-only, a few at a time, each data object followed by
//! its OCSF objects; the quarantine object the same way, without OCSF), then the marker is
//! written, then the agent list is updated. A retry after any failure meets the same keys, so a
//! batch, and each of its quarantined events, is stored once however often it is sent.

use super::{HttpRequest, Ingest, IngestError, Prepared, decode};
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::Landed;
use crate::lake::sink::{Condition, Created, SinkError};
use crate::timefmt::api_time;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Data objects of one batch written at once.
const PUT_CONCURRENCY: usize = 8;

/// S3 user metadata on every AD data object: the SHA-256 of the body it came from. It tells a
/// retry of the same batch from a reused `batch_id`, even after the batch marker has expired.
pub const BODY_SHA_META: &str = "tv1-body-sha256";

/// What an accepted batch produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchReceipt {
    /// `accepted`, or `duplicate` for a batch id seen before.
    pub status: String,
    /// The batch id.
    pub batch_id: String,
    /// Events in the batch (for a duplicate: when first accepted), quarantined ones included.
    pub events: usize,
    /// Of those, events kept in the quarantine object rather than the lake.
    #[serde(default)]
    pub quarantined: usize,
    /// The quarantine object, when some events are in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_key: Option<String>,
    /// Why: the first [`super::MAX_REPORTED_ERRORS`] quarantined events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantine: Vec<Quarantined>,
    /// Objects written.
    pub keys: Vec<String>,
    /// When it was first accepted.
    pub received_at: DateTime<Utc>,
    /// SHA-256 of the decoded body, to tell a true retry from a reused id.
    pub body_sha256: String,
    /// OCSF records written for this batch (with `OCSF_OUTPUT=on`; a duplicate writes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsf_records: Option<u64>,
}

/// The status of a batch marker written before the batch's objects (see `Ingest::claim`).
const CLAIMED: &str = "claimed";

/// What claiming a batch id found.
enum Claim {
    /// The id is this body's to store: the marker's ETag, for the final receipt.
    Ours(String),
    /// This body was stored before: its receipt.
    Stored(BatchReceipt),
}

/// One quarantined event, as a reply lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quarantined {
    /// Its index in the batch (0-based).
    pub index: usize,
    /// Why the lake cannot take it.
    pub reason: String,
}

impl Ingest {
    /// Stores the batch in `req`, or answers what it was stored as before.
    pub(super) async fn ingest(
        &self,
        req: HttpRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<BatchReceipt, IngestError> {
        let Prepared {
            agent,
            batch_id,
            events,
            quarantined,
            body_sha256,
            objects,
            quarantine,
        } = self
            .cpu_bound(|| super::batch::guarded(|| self.prepare(&req, now)))
            .await
            .map_err(|panic| {
            tracing::error!(panic = %panic, "reading a request panicked");
            IngestError::BadRequest {
                code: "unreadable_request",
                message: format!(
                    "the request could not be read (an internal error: {panic}); nothing was stored"
                ),
            }
        })??;
        let marker_key = format!(
            "{}_state/batches/{}/{batch_id}.json",
            self.cfg.prefix, agent.id
        );
        let claim_etag = match self
            .claim(&marker_key, &batch_id, &body_sha256, events, now)
            .await?
        {
            Claim::Stored(mut receipt) => {
                receipt.status = "duplicate".into();
                self.touch_agent(&agent, (0, 0), now).await;
                return Ok(receipt);
            }
            Claim::Ours(etag) => etag,
        };
        // The batch id is this body's (a new batch, or one whose marker expired or whose
        // earlier attempt stopped half-way): the objects themselves say whether this id was used.
        let keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
        let quarantine_key = quarantine.as_ref().map(|(k, _)| k.clone());
        let all: Vec<(String, bytes::Bytes, bool)> = objects
            .into_iter()
            .map(|(k, b)| (k, b, true))
            .chain(quarantine.map(|(k, b)| (k, b, false)))
            .collect();
        let all_keys: Vec<String> = all.iter().map(|(k, ..)| k.clone()).collect();
        let found = match self.existing(&all_keys, &body_sha256, &batch_id).await {
            Ok(found) => found,
            Err(e) => {
                // Objects of another body under this id, from before its marker expired: the
                // claim goes, so that the marker does not answer for a batch that was not stored.
                let _ = self.sink.delete(&marker_key).await;
                return Err(e);
            }
        };
        let (created, landed) = self.create_objects(all, &body_sha256, &batch_id).await?;
        let receipt = BatchReceipt {
            // A heartbeat (no events, no objects) is accepted the first time; its marker makes
            // a resend a duplicate.
            status: if !all_keys.is_empty() && found == all_keys.len() && created == 0 {
                "duplicate".into()
            } else {
                "accepted".into()
            },
            batch_id,
            events,
            quarantined: quarantined.len(),
            quarantine_key,
            quarantine: quarantined
                .iter()
                .take(super::MAX_REPORTED_ERRORS)
                .map(|(index, reason)| Quarantined {
                    index: *index,
                    reason: reason.clone(),
                })
                .collect(),
            keys,
            received_at: now,
            body_sha256,
            ocsf_records: self.ocsf.as_ref().map(|_| landed.records),
        };
        // The one request whose receipt replaces the claim counts the batch: of concurrent
        // copies of one batch, or an attempt that stopped and its retry, exactly one.
        let new = match self
            .sink
            .put_json_if(
                &marker_key,
                serde_json::to_vec(&receipt).expect("receipt"),
                &Condition::Matches(claim_etag),
            )
            .await
        {
            Ok(_) => 1,
            // A concurrent copy of the same batch got there first: same keys, same events.
            Err(SinkError::PreconditionFailed { .. }) => 0,
            Err(e) => return Err(e.into()),
        };
        self.touch_agent(
            &agent,
            (new * events as u64, new * receipt.quarantined as u64),
            now,
        )
        .await;
        tracing::info!(agent = %agent.id, batch_id = %receipt.batch_id, events, quarantined = receipt.quarantined, objects = receipt.keys.len(), status = %receipt.status, "batch stored");
        if let (Some(function), true) = (&self.cfg.function_name, new == 1) {
            println!("{}", emf_line(&receipt, function, now.timestamp_millis()));
        }
        Ok(receipt)
    }

    /// Claims `batch_id` for this body before any object is written (the marker, create-only,
    /// with the body's hash), so that of two bodies sent under one id at once, one is stored and
    /// the other refused before it writes anything: its `409` is true. A marker of this very
    /// body is ours to go on with if it is a claim (an earlier attempt stopped, or a copy is
    /// under way), or the batch's receipt if it was stored.
    async fn claim(
        &self,
        marker_key: &str,
        batch_id: &str,
        sha: &str,
        events: usize,
        now: DateTime<Utc>,
    ) -> Result<Claim, IngestError> {
        for _ in 0..4 {
            if let Some(prev) = self.sink.get(marker_key).await? {
                let receipt: BatchReceipt = serde_json::from_slice(&prev.body).map_err(|e| {
                    IngestError::Unavailable(format!("unreadable batch marker {marker_key}: {e}"))
                })?;
                if receipt.body_sha256 != sha {
                    return Err(IngestError::BatchIdConflict {
                        batch_id: batch_id.to_owned(),
                        first: api_time(receipt.received_at),
                    });
                }
                return Ok(match receipt.status.as_str() {
                    CLAIMED => Claim::Ours(prev.etag),
                    _ => Claim::Stored(receipt),
                });
            }
            let claim = BatchReceipt {
                status: CLAIMED.into(),
                batch_id: batch_id.to_owned(),
                events,
                quarantined: 0,
                quarantine_key: None,
                quarantine: Vec::new(),
                keys: Vec::new(),
                received_at: now,
                body_sha256: sha.to_owned(),
                ocsf_records: None,
            };
            let body = serde_json::to_vec(&claim).expect("claim");
            match self
                .sink
                .put_json_if(marker_key, body, &Condition::Absent)
                .await
            {
                Ok(etag) => return Ok(Claim::Ours(etag)),
                // Claimed at the same moment: read whose it is.
                Err(SinkError::PreconditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IngestError::Unavailable(format!(
            "batch marker {marker_key} kept changing"
        )))
    }

    /// How many of `keys` exist already, all from this very body; a key written from another
    /// body is a reused `batch_id`, refused before anything is written.
    async fn existing(
        &self,
        keys: &[String],
        sha: &str,
        batch_id: &str,
    ) -> Result<usize, IngestError> {
        let heads = futures_util::stream::iter(keys.iter().cloned())
            .map(|k| async move { self.sink.head_meta(&k, BODY_SHA_META).await })
            .buffer_unordered(PUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut found = 0;
        for head in heads {
            match head? {
                None => {}
                Some(Some(s)) if s == sha => found += 1,
                Some(_) => {
                    return Err(IngestError::BatchIdConflict {
                        batch_id: batch_id.to_owned(),
                        first: "earlier".into(),
                    });
                }
            }
        }
        Ok(found)
    }

    /// Writes the objects create-only, a few at a time, each followed by its OCSF objects;
    /// returns how many JSONL objects were new, and the OCSF records written.
    async fn create_objects(
        &self,
        objects: Vec<(String, bytes::Bytes, bool)>,
        sha: &str,
        batch_id: &str,
    ) -> Result<(usize, Landed), IngestError> {
        let timeout = Duration::from_secs(20);
        let puts = futures_util::stream::iter(objects)
            .map(|(key, body, ocsf)| async move {
                let made = self
                    .sink
                    .create_ndjson_gz_with(&key, body.clone(), timeout, &[(BODY_SHA_META, sha)])
                    .await?;
                // Appeared since the check: a concurrent copy of this batch, or of another
                // batch under the same id.
                if made == Created::AlreadyExists
                    && self
                        .sink
                        .head_meta(&key, BODY_SHA_META)
                        .await?
                        .flatten()
                        .as_deref()
                        != Some(sha)
                {
                    return Err(IngestError::BatchIdConflict {
                        batch_id: batch_id.to_owned(),
                        first: "just now".into(),
                    });
                }
                let written = (made == Created::New).then_some(body);
                let landed = if ocsf {
                    self.land_ocsf(&key, written, timeout).await?
                } else {
                    Landed::default()
                };
                Ok::<_, IngestError>((made == Created::New, landed))
            })
            .buffer_unordered(PUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let (mut created, mut landed) = (0, Landed::default());
        for r in puts {
            let (new, l) = r?;
            created += new as usize;
            landed.add(&l);
        }
        Ok((created, landed))
    }

    /// The OCSF objects of the JSONL object `key`, when the output is on: from `written` when
    /// this request wrote it, else from the object S3 kept (an earlier attempt's; see
    /// [`crate::lake::ocsf::writer`]).
    async fn land_ocsf(
        &self,
        key: &str,
        written: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Landed, IngestError> {
        let Some(ocsf) = &self.ocsf else {
            return Ok(Landed::default());
        };
        let (sink, prefix) = (&self.sink, &self.cfg.prefix);
        Ok(ocsf
            .land_object(Dataset::Ad, sink, prefix, key, written, timeout)
            .await?)
    }

    /// Updates the agent list. The events are already durable, so a failure here is logged,
    /// not returned: the agent must not resend a stored batch because of a counter.
    async fn touch_agent(&self, agent: &decode::AgentInfo, events: (u64, u64), now: DateTime<Utc>) {
        if let Err(e) = self
            .agents
            .record(
                &agent.id,
                agent.hostname.as_deref(),
                agent.version.as_deref(),
                events,
                now,
            )
            .await
        {
            tracing::warn!(agent = %agent.id, error = %e, "could not update the agent list");
        }
    }
}

/// CloudWatch metric names of a stored batch (namespace [`crate::audit::METRIC_NAMESPACE`]).
pub const METRIC_STORED: &str = "EventsStored";
/// Events of a batch kept in quarantine: an alarm on it tells an agent sends what the lake
/// cannot take.
pub const METRIC_QUARANTINED: &str = "EventsQuarantined";

/// A newly stored batch's counts as one CloudWatch embedded-metric-format line.
pub fn emf_line(r: &BatchReceipt, function_name: &str, timestamp_ms: i64) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": crate::audit::METRIC_NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    {"Name": METRIC_STORED, "Unit": "Count"},
                    {"Name": METRIC_QUARANTINED, "Unit": "Count"}
                ]
            }]
        },
        "FunctionName": function_name,
        METRIC_STORED: r.events - r.quarantined,
        METRIC_QUARANTINED: r.quarantined,
    })
    .to_string()
}
