//! The Lambda door: invocation payloads, deadlines and the metrics line.

use super::{PullError, Puller};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// CloudWatch namespace of the puller's metrics.
pub const METRIC_NAMESPACE: &str = "tv1-connector";
/// Seconds between the end of a run and its checkpoint: how far collection lags.
pub const METRIC_LAG: &str = "CollectionLagSeconds";
/// Entries reconciliation found that Vision One served after the pull had read their time.
pub const METRIC_LATE: &str = "LateEntries";

/// The run's metrics as one CloudWatch embedded-metric-format line, for a pull summary
/// (`None` for other actions). Printed on its own line to stdout, CloudWatch turns it into
/// metrics without any API call.
pub fn emf_line(
    summary: &serde_json::Value,
    function_name: &str,
    timestamp_ms: i64,
) -> Option<String> {
    if summary.get("action")? != "pull" {
        return None;
    }
    let lag = summary.get("lag_seconds")?.as_i64()?;
    let line = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    {"Name": METRIC_LAG, "Unit": "Seconds"},
                    {"Name": "RecordsWritten", "Unit": "Count"},
                    {"Name": "ObjectsWritten", "Unit": "Count"},
                    {"Name": "PagesFetched", "Unit": "Count"},
                    {"Name": METRIC_LATE, "Unit": "Count"}
                ]
            }]
        },
        "FunctionName": function_name,
        METRIC_LAG: lag,
        "RecordsWritten": summary.get("records").cloned().unwrap_or_default(),
        "ObjectsWritten": summary.get("objects").cloned().unwrap_or_default(),
        "PagesFetched": summary.get("pages").cloned().unwrap_or_default(),
        // Always present (0 when nothing was due), so an alarm on it sees data every run.
        METRIC_LATE: summary
            .pointer("/reconcile/late_entries")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
    });
    Some(line.to_string())
}

/// Time left in an invocation, from the runtime's deadline (epoch milliseconds).
///
/// `cargo lambda watch` sends the function timeout itself (e.g. `600000`) instead of an epoch
/// time; a value that cannot be a deadline of today is read as such a duration.
pub fn time_left(deadline_ms: u64, now_ms: u64) -> Duration {
    const DAY_MS: u64 = 86_400_000;
    if deadline_ms + DAY_MS < now_ms {
        Duration::from_millis(deadline_ms)
    } else {
        Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    }
}

/// What an invocation of the audit-puller function asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A scheduled run (an EventBridge event, or `{"action":"pull"}`).
    Pull,
    /// `{"action":"test-connection"}`.
    TestConnection,
    /// `{"action":"status"}`.
    Status,
    /// `{"action":"backfill","from":"...","to":"..."}`.
    Backfill {
        /// Start.
        from: DateTime<Utc>,
        /// End.
        to: DateTime<Utc>,
    },
}

impl Action {
    /// Reads the invocation payload. Anything without an `action` (such as an EventBridge
    /// scheduled event) is a scheduled run.
    pub fn from_event(event: &serde_json::Value) -> Result<Action, String> {
        let Some(action) = event.get("action") else {
            return Ok(Action::Pull);
        };
        let time = |k: &str| {
            let raw = event
                .get(k)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("backfill needs \"{k}\" (an RFC 3339 time)"))?;
            crate::timefmt::parse_user_time(raw)
                .ok_or_else(|| format!("\"{k}\": {raw:?} is not a time (use 2026-11-20T00:00:00Z)"))
        };
        match action.as_str() {
            Some("pull") => Ok(Action::Pull),
            Some("test-connection") => Ok(Action::TestConnection),
            Some("status") => Ok(Action::Status),
            Some("backfill") => Ok(Action::Backfill {
                from: time("from")?,
                to: time("to")?,
            }),
            _ => Err(format!(
                "unknown action {action}; expected pull, test-connection, status or backfill"
            )),
        }
    }
}

impl Puller {
    /// Runs one invocation of the function: the single entry point the Lambda binary calls.
    pub async fn handle(
        &self,
        event: &serde_json::Value,
        deadline: Instant,
    ) -> Result<serde_json::Value, PullError> {
        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).expect("summaries serialise")
        }
        Ok(
            match Action::from_event(event).map_err(PullError::BadInvocation)? {
                Action::Pull => json(&self.run(deadline).await?),
                Action::TestConnection => json(&self.test_connection().await),
                Action::Status => json(&self.status().await?),
                Action::Backfill { from, to } => {
                    json(&self.backfill(from, to, deadline, &|_| {}).await?)
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_for_pulls_only() {
        let s = serde_json::json!({"action": "pull", "lag_seconds": 301, "records": 10, "objects": 2, "pages": 3});
        let line = emf_line(&s, "fn", 1_700_000_000_000).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["CollectionLagSeconds"], 301);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "tv1-connector"
        );
        assert_eq!(v["FunctionName"], "fn");
        assert_eq!(v["LateEntries"], 0, "reported as 0 when nothing was due");
        assert!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["Name"] == "LateEntries")
        );
        let late = serde_json::json!({"action": "pull", "lag_seconds": 1, "reconcile": {"late_entries": 7}});
        let v: serde_json::Value =
            serde_json::from_str(&emf_line(&late, "fn", 0).unwrap()).unwrap();
        assert_eq!(v["LateEntries"], 7);
        assert!(!line.contains('\n'));
        assert!(emf_line(&serde_json::json!({"action": "status"}), "fn", 0).is_none());
        assert!(
            emf_line(
                &serde_json::json!({"action": "pull", "lag_seconds": null}),
                "fn",
                0
            )
            .is_none()
        );
    }

    #[test]
    fn time_left_reads_both_deadline_forms() {
        let now = 1_795_306_025_623;
        assert_eq!(time_left(now + 30_000, now), Duration::from_secs(30));
        assert_eq!(time_left(now - 5, now), Duration::ZERO);
        assert_eq!(
            time_left(600_000, now),
            Duration::from_secs(600),
            "cargo lambda watch"
        );
    }

    #[test]
    fn actions() {
        let scheduled: serde_json::Value =
            serde_json::from_str(include_str!("../../events/schedule.json")).unwrap();
        assert_eq!(Action::from_event(&scheduled), Ok(Action::Pull));
        let tc = serde_json::json!({"action": "test-connection"});
        assert_eq!(Action::from_event(&tc), Ok(Action::TestConnection));
        let bf: serde_json::Value =
            serde_json::from_str(include_str!("../../events/backfill.json")).unwrap();
        assert!(matches!(
            Action::from_event(&bf),
            Ok(Action::Backfill { .. })
        ));
        let bad = serde_json::json!({"action": "backfill", "from": "yesterday", "to": "2026-11-20T00:00:00Z"});
        assert!(Action::from_event(&bad).unwrap_err().contains("\"from\""));
        assert!(Action::from_event(&serde_json::json!({"action": "dance"})).is_err());
    }
}
