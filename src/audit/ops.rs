//! Test Connection and collection status, as a SIEM's connector screen shows them.

use super::{PullError, Puller};
use crate::audit::checkpoint::{Checkpoint, LastError};
use crate::timefmt::floor_second;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// Result of Test Connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionCheck {
    /// `test-connection`.
    pub action: &'static str,
    /// The stream whose endpoint was checked (a token's role may allow one and not another).
    pub stream: super::stream::Stream,
    /// Whether Vision One answered with data access.
    pub ok: bool,
    /// `Connection successful`, or the actionable error.
    pub message: String,
    /// When the check ran.
    pub at: DateTime<Utc>,
    /// The origin checked.
    pub base_url: String,
}

/// Status as `tv1 status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The stream.
    pub stream: super::stream::Stream,
    /// `Active` when the last run succeeded, `Error` when it failed, `Never run` before the first.
    pub state: &'static str,
    /// The checkpoint document.
    pub checkpoint: Option<Checkpoint>,
    /// Seconds between now and `committed_to`.
    pub lag_seconds: Option<i64>,
    /// When the last successful run ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Entries the last successful run wrote.
    pub last_success_records: Option<u64>,
    /// The last successful run's summary.
    pub last_success: Option<serde_json::Value>,
    /// The last failure since then.
    pub last_error: Option<LastError>,
    /// Reconciliation: how far back committed time was read again, and late entries found.
    pub reconcile: ReconcileView,
    /// The OCSF Parquet output, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocsf: Option<OcsfView>,
}

/// The OCSF output as `tv1 status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OcsfView {
    /// Where the Parquet objects go: `s3://bucket/prefix`.
    pub location: String,
    /// Records the last successful run wrote.
    pub last_success_records: Option<u64>,
    /// Records written by all runs since the output was turned on.
    pub records_total: u64,
    /// The pull's records logged before this instant are in the output (the checkpoint's
    /// `ocsf_to`): the end of the last period written.
    pub written_to: Option<DateTime<Utc>>,
    /// The length of a period (`TV1_AUDIT_OCSF_PERIOD`...), in seconds.
    pub period_seconds: u64,
}

/// Reconciliation as `tv1 status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileView {
    /// `TV1_RECONCILE_HORIZON` in seconds (0: off).
    pub horizon_seconds: u64,
    /// Everything before this instant was read again at the horizon, its late entries landed.
    pub checked_to: Option<DateTime<Utc>>,
    /// Seconds between now and `checked_to` (about the horizon when reconciliation keeps up).
    pub checked_age_seconds: Option<i64>,
    /// Late entries found so far.
    pub late_entries: u64,
    /// The largest age of a late entry when found.
    pub oldest_delay_seconds: Option<i64>,
    /// When the last one was found.
    pub last_found_at: Option<DateTime<Utc>>,
}

impl Puller {
    /// Test Connection: reads the token and makes one small request.
    pub async fn test_connection(&self) -> ConnectionCheck {
        let at = Utc::now();
        let deadline = Instant::now() + self.cfg.http_timeout.min(Duration::from_secs(30)) * 2;
        let result = self
            .api
            .first_page(
                floor_second(at) - TimeDelta::hours(1),
                floor_second(at),
                Some(50),
                deadline,
            )
            .await;
        let (ok, message) = match result {
            Ok(_) => (true, "Connection successful".to_owned()),
            Err(e) => (false, e.to_string()),
        };
        ConnectionCheck {
            action: "test-connection",
            stream: self.cfg.stream,
            ok,
            message,
            at,
            base_url: self.cfg.base_url.origin().ascii_serialization(),
        }
    }

    /// Collection status from the state documents.
    pub async fn status(&self) -> Result<StatusReport, PullError> {
        let cp = self.state.load().await?.map(|(cp, _)| cp);
        let status = self.state.load_status().await?.unwrap_or_default();
        let now = self.run_clock().now();
        let rc = cp.as_ref().and_then(|c| c.reconcile.as_ref());
        let reconcile = ReconcileView {
            horizon_seconds: self.cfg.reconcile_horizon.as_secs(),
            checked_to: rc.map(|r| r.checked_to),
            checked_age_seconds: rc.map(|r| (now - r.checked_to).num_seconds()),
            late_entries: rc.map_or(0, |r| r.late_entries),
            oldest_delay_seconds: rc.and_then(|r| r.oldest_delay_seconds),
            last_found_at: rc.and_then(|r| r.last_found_at),
        };
        let state = match (&status.last_run_at, &status.last_error) {
            (None, _) => "Never run",
            (_, Some(_)) => "Error",
            _ => "Active",
        };
        let ocsf = self.ocsf.as_ref().map(|o| OcsfView {
            location: format!("s3://{}/{}", o.bucket(), o.prefix()),
            last_success_records: status
                .last_success
                .as_ref()
                .and_then(|s| s.pointer("/ocsf/records"))
                .and_then(|r| r.as_u64()),
            records_total: status.ocsf_records_total,
            written_to: cp.as_ref().and_then(|c| c.ocsf_to),
            period_seconds: self.cfg.ocsf_period.as_secs(),
        });
        Ok(StatusReport {
            stream: self.cfg.stream,
            ocsf,
            state,
            lag_seconds: cp.as_ref().map(|c| (now - c.committed_to).num_seconds()),
            checkpoint: cp,
            last_success_at: status.last_success_at,
            last_success_records: status
                .last_success
                .as_ref()
                .and_then(|s| s.get("records"))
                .and_then(|r| r.as_u64()),
            last_success: status.last_success,
            last_error: status.last_error,
            reconcile,
        })
    }
}
