//! Test Connection and collection status, as a SIEM's connector screen shows them.

use super::{PullError, Puller};
use crate::checkpoint::{Checkpoint, LastError};
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
        let state = match (&status.last_run_at, &status.last_error) {
            (None, _) => "Never run",
            (_, Some(_)) => "Error",
            _ => "Active",
        };
        Ok(StatusReport {
            state,
            lag_seconds: cp
                .as_ref()
                .map(|c| (self.run_clock().now() - c.committed_to).num_seconds()),
            checkpoint: cp,
            last_success_at: status.last_success_at,
            last_success_records: status
                .last_success
                .as_ref()
                .and_then(|s| s.get("records"))
                .and_then(|r| r.as_u64()),
            last_success: status.last_success,
            last_error: status.last_error,
        })
    }
}
