//! A prepared batch into S3, exactly once, in two PUTs: the batch marker (create-only, the
//! receipt, naming the window the batch lands in) and the landing object (create-only, under
//! that window). A retry meets the marker: a different body under the same id is a `409`, the
//! same body is a `duplicate` once its landing object is in, or lands now if an earlier attempt
//! stopped before. The compactor (`compact.rs`) turns windows of landed batches into the lake,
//! the OCSF output and the agent list. Why a batch landing late is never lost nor compacted
//! twice: `landing.rs`.

use super::landing::{self, Checkpoint, Plan};
use super::{HttpRequest, Ingest, IngestError, Prepared};
use crate::lake::sink::{Condition, Created, SinkError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// S3 user metadata on every landing object: the SHA-256 of the body it came from. A landing
/// object already under the batch's key with another hash (a `batch_id` reused after its
/// marker was deleted) makes the request a `409`.
pub const BODY_SHA_META: &str = "tv1-body-sha256";

/// How long a late landing waits for the plan of a window being compacted before it answers
/// `503` (the agent's retry then finds the plan).
const PLAN_WAIT: Duration = Duration::from_secs(10);

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
    /// The quarantine object its quarantined events go to, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_key: Option<String>,
    /// Why: the first [`super::MAX_REPORTED_ERRORS`] quarantined events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantine: Vec<Quarantined>,
    /// The lake objects its events go to: one per (category, day) of its window.
    pub keys: Vec<String>,
    /// When it was first accepted.
    pub received_at: DateTime<Utc>,
    /// SHA-256 of the decoded body, to tell a true retry from a reused id.
    pub body_sha256: String,
    /// The window it landed in (its start): compacted into `keys` after the window closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DateTime<Utc>>,
    /// When its events are in `keys` at the latest, if the compactor runs on schedule (every
    /// `AD_WINDOW`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_by: Option<DateTime<Utc>>,
}

/// One quarantined event, as a reply lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quarantined {
    /// Its index in the batch (0-based).
    pub index: usize,
    /// Why the lake cannot take it.
    pub reason: String,
}

/// How claiming a batch id ended.
enum Claim {
    /// The marker is this request's: its ETag.
    New(String),
    /// A marker of this very body was there (the receipt is now it): its ETag.
    Existing(String),
}

/// Whether the compaction of a window takes a landing object in it.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// It does (or did).
    In,
    /// It cannot: the window's plan was made without it. The batch must land in a newer window.
    Left,
    /// The window is being planned: ask again later.
    Undecided,
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
            header,
            landing,
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
        let prefix = &self.cfg.prefix;
        let marker_key = format!("{prefix}_state/batches/{}/{batch_id}.json", agent.id);
        let name = super::batch::object_name(&agent.id, &batch_id);
        let mut receipt = BatchReceipt {
            status: "accepted".into(),
            batch_id,
            events,
            quarantined: quarantined.len(),
            quarantine_key: None,
            quarantine: quarantined
                .iter()
                .take(super::MAX_REPORTED_ERRORS)
                .map(|(index, reason)| Quarantined {
                    index: *index,
                    reason: reason.clone(),
                })
                .collect(),
            keys: Vec::new(),
            received_at: now,
            body_sha256,
            window: None,
            visible_by: None,
        };
        self.check_windows().await?;
        self.place(&mut receipt, &header, self.s3_now(now));
        let (mut etag, first) = match self.claim(&marker_key, &mut receipt).await? {
            Claim::New(etag) => (etag, true),
            Claim::Existing(etag) => {
                let Some(w) = receipt.window else {
                    // Stored whole before windows existed.
                    receipt.status = "duplicate".into();
                    return Ok(receipt);
                };
                // A retry: stored already if its window's plan names it, or if the window was
                // compacted so long ago that its plan has expired (the marker of a batch its
                // window left out would have moved to a newer window). The checkpoint is read
                // first: a window it shows compacted has its plan written already.
                let cp = self.checkpoint().await?;
                let stored = match self.plan(w).await? {
                    Some(p) => names(&p, &name),
                    None => planned_once(&cp, w),
                };
                if stored {
                    receipt.status = "duplicate".into();
                    return Ok(receipt);
                }
                (etag, false)
            }
        };
        let timeout = Duration::from_secs(20);
        let sha = receipt.body_sha256.clone();
        for _ in 0..4 {
            let Some(window) = receipt.window else {
                return Err(IngestError::Unavailable(format!(
                    "the batch marker of {} names no window",
                    receipt.batch_id
                )));
            };
            let key = landing::landing_key(prefix, window, &agent.id, &receipt.batch_id);
            let put_started = tokio::time::Instant::now();
            let made = self
                .sink
                .create_ndjson_gz_with(&key, landing.clone(), timeout, &[(BODY_SHA_META, &sha)])
                .await?;
            let put_took = put_started.elapsed();
            if made == Created::AlreadyExists
                && self.sink.head_meta(&key, BODY_SHA_META).await?.flatten() != Some(sha.clone())
            {
                return Err(IngestError::BatchIdConflict {
                    batch_id: receipt.batch_id.clone(),
                    first: "earlier".into(),
                });
            }
            match self.fate(window, &name, now, put_took).await? {
                Fate::In => {
                    if !first && made == Created::AlreadyExists {
                        receipt.status = "duplicate".into();
                    }
                    tracing::info!(agent = %agent.id, batch_id = %receipt.batch_id, events, quarantined = receipt.quarantined, window = %landing::window_name(window), status = %receipt.status, "batch landed");
                    // Counted by the attempt whose PUT created the landing object that is
                    // in its window: once per batch, whichever attempt (the one that claimed
                    // it, or a retry of one that died before landing it) that was.
                    if let (Some(function), Created::New) = (&self.cfg.function_name, made) {
                        println!("{}", emf_line(&receipt, function, now.timestamp_millis()));
                    }
                    return Ok(receipt);
                }
                Fate::Undecided => {
                    return Err(IngestError::Unavailable(format!(
                        "window {} is being compacted",
                        landing::window_name(window)
                    )));
                }
                Fate::Left => {
                    tracing::warn!(agent = %agent.id, batch_id = %receipt.batch_id, window = %landing::window_name(window), "landed after its window was planned; landing it in a newer one");
                    etag = self
                        .move_marker(&marker_key, &mut receipt, &header, etag, now)
                        .await?;
                }
            }
        }
        Err(IngestError::Unavailable(format!(
            "batch {} could not land in a window that was still open",
            receipt.batch_id
        )))
    }

    /// Once per instance, before its first batch: reads the compactor's checkpoint, which gives
    /// this instance S3's clock (a batch is placed by it, never by a local clock that may be
    /// days off) and the windows compaction cuts. A batch landed in windows of another length
    /// would be off the compactor's grid, so a difference refuses every batch (503, the agents
    /// retry) until the configurations agree.
    async fn check_windows(&self) -> Result<(), IngestError> {
        self.windows_checked
            .get_or_try_init(|| async {
                let cp = self.checkpoint().await?;
                match cp.windows {
                    Some(theirs) if theirs != self.windows.seconds() => {
                        let ours = self.windows.seconds();
                        tracing::error!(?ours, ?theirs, "AD_WINDOW/AD_SETTLE differ from the compactor's");
                        Err(IngestError::Unavailable(format!(
                            "this endpoint's AD_WINDOW/AD_SETTLE ({}s/{}s) differ from the ones compaction uses ({}s/{}s); set the same on every ad-ingest, ad-compact and tv1",
                            ours.0, ours.1, theirs.0, theirs.1
                        )))
                    }
                    _ => Ok(()),
                }
            })
            .await
            .map(|_| ())
    }

    /// S3's clock (the compactor's), or `now` until S3 has answered once.
    fn s3_now(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.sink.server_time().now().unwrap_or(now)
    }

    /// Puts the receipt in the window holding `at`: the window, the lake objects, when visible.
    fn place(&self, r: &mut BatchReceipt, header: &landing::BatchHeader, at: DateTime<Utc>) {
        let (prefix, w) = (&self.cfg.prefix, self.windows.start_of(at));
        r.window = Some(w);
        r.visible_by = Some(self.windows.visible_by(at));
        r.keys = header
            .parts
            .iter()
            .map(|p| landing::compacted_key(prefix, p.category, p.day, w))
            .collect();
        r.quarantine_key = (header.quarantined > 0).then(|| landing::quarantine_key(prefix, w));
    }

    /// Claims the batch id for this body: writes `receipt` as its marker, create-only. If a
    /// marker of this body was there, `receipt` becomes it; a marker of another body is a `409`.
    async fn claim(
        &self,
        marker_key: &str,
        receipt: &mut BatchReceipt,
    ) -> Result<Claim, IngestError> {
        for _ in 0..4 {
            let body = serde_json::to_vec(&receipt).expect("receipt");
            match self
                .sink
                .put_json_if(marker_key, body, &Condition::Absent)
                .await
            {
                Ok(etag) => return Ok(Claim::New(etag)),
                Err(SinkError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            // Claimed before, or at the same moment: read whose it is.
            let Some(prev) = self.sink.get(marker_key).await? else {
                continue;
            };
            let stored: BatchReceipt = serde_json::from_slice(&prev.body).map_err(|e| {
                IngestError::Unavailable(format!("unreadable batch marker {marker_key}: {e}"))
            })?;
            if stored.body_sha256 != receipt.body_sha256 {
                return Err(IngestError::BatchIdConflict {
                    batch_id: receipt.batch_id.clone(),
                    first: crate::timefmt::api_time(stored.received_at),
                });
            }
            *receipt = stored;
            return Ok(Claim::Existing(prev.etag));
        }
        Err(IngestError::Unavailable(format!(
            "batch marker {marker_key} kept changing"
        )))
    }

    /// Moves the batch to the window open now: a conditional write of its marker, so that of
    /// two copies moving it at once, both land it in the same window. Returns the new ETag.
    async fn move_marker(
        &self,
        marker_key: &str,
        receipt: &mut BatchReceipt,
        header: &landing::BatchHeader,
        etag: String,
        now: DateTime<Utc>,
    ) -> Result<String, IngestError> {
        let old = receipt.window;
        self.place(receipt, header, self.s3_now(now));
        let body = serde_json::to_vec(&receipt).expect("receipt");
        match self
            .sink
            .put_json_if(marker_key, body, &Condition::Matches(etag))
            .await
        {
            Ok(etag) => Ok(etag),
            // Another copy moved it first: go where it went.
            Err(SinkError::PreconditionFailed { .. }) => {
                let v = self
                    .sink
                    .get(marker_key)
                    .await?
                    .ok_or_else(|| IngestError::Unavailable("batch marker vanished".into()))?;
                let stored: BatchReceipt = serde_json::from_slice(&v.body).map_err(|e| {
                    IngestError::Unavailable(format!("unreadable batch marker {marker_key}: {e}"))
                })?;
                if stored.window == old {
                    return Err(IngestError::Unavailable(
                        "batch marker kept changing".into(),
                    ));
                }
                *receipt = BatchReceipt {
                    status: receipt.status.clone(),
                    ..stored
                };
                Ok(v.etag)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the compaction of `window` takes the landing object `name`, which S3 has stored.
    /// Most landings end well before the window is sealed, and S3's clock says so with no
    /// request; a late one reads the compactor's checkpoint, then the window's plan.
    async fn fate(
        &self,
        window: DateTime<Utc>,
        name: &str,
        now: DateTime<Utc>,
        put_took: Duration,
    ) -> Result<Fate, IngestError> {
        // When S3 stored the object, at the latest: `Date` is truncated to the second, and S3's
        // documentation does not say whether a PUT's `Date` is taken when the request arrives or
        // when the response leaves; counting the PUT's whole duration on top covers both (it
        // only sends PUTs close to the boundary down the slow path).
        let stored_by = self.s3_now(now)
            + chrono::TimeDelta::seconds(1)
            + chrono::TimeDelta::from_std(put_took).unwrap_or(chrono::TimeDelta::hours(1));
        if stored_by < self.windows.surely_seen_before(window) {
            return Ok(Fate::In);
        }
        let deadline = tokio::time::Instant::now() + PLAN_WAIT;
        loop {
            let cp = self.checkpoint().await?;
            // Not sealed: the compactor will list the window after this object was stored.
            if cp.sealed_to.is_none_or(|s| window >= s) {
                return Ok(Fate::In);
            }
            if let Some(plan) = self.plan(window).await? {
                return Ok(if names(&plan, name) {
                    Fate::In
                } else {
                    Fate::Left
                });
            }
            // Compacted, and no plan: a window before compaction began (never planned), or
            // one whose plan has expired. Either way this object is not in it.
            if cp.next.is_some_and(|n| window < n) {
                return Ok(Fate::Left);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Fate::Undecided);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The compactor's checkpoint (default when it never ran).
    async fn checkpoint(&self) -> Result<Checkpoint, IngestError> {
        Ok(landing::read_checkpoint(&self.sink, &self.cfg.prefix)
            .await?
            .0)
    }

    /// The plan of `window`, if made.
    async fn plan(&self, window: DateTime<Utc>) -> Result<Option<Plan>, IngestError> {
        Ok(landing::read_plan(&self.sink, &self.cfg.prefix, window).await?)
    }
}

/// Whether window `w` was compacted with a plan that has since expired: compacted (before
/// `next`) and not before the first window compaction planned (`since`), before which no window
/// ever had a plan.
fn planned_once(cp: &Checkpoint, w: DateTime<Utc>) -> bool {
    cp.next.is_some_and(|n| w < n) && cp.since.is_some_and(|s| w >= s)
}

/// Whether `plan` names the landing object `name`.
fn names(plan: &Plan, name: &str) -> bool {
    plan.batches
        .binary_search_by(|b| b.as_str().cmp(name))
        .is_ok()
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
