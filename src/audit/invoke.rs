//! The Lambda door: invocation payloads, deadlines, the typed reply, error types and the
//! metrics line. `src/bin/audit-puller.rs` only hands each invocation to [`Puller::invoke`].

use super::{BackfillSummary, ConnectionCheck, PullError, Puller, RunSummary, StatusReport};
use crate::audit::stream::Stream;
use crate::audit::vision_one::VisionOneError;
use crate::lake::sink::SinkError;
use crate::lake::state::StateError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// CloudWatch namespace of the puller's metrics.
pub const METRIC_NAMESPACE: &str = "tv1-connector";
/// Seconds between the end of a run and its checkpoint: how far collection lags.
pub const METRIC_LAG: &str = "CollectionLagSeconds";
/// Entries reconciliation found that Vision One served after the pull had read their time.
pub const METRIC_LATE: &str = "LateEntries";

/// What the function returns: the summary of the action it ran, serialised as it is.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// A scheduled run.
    Pull(RunSummary),
    /// Test Connection.
    TestConnection(ConnectionCheck),
    /// Collection status.
    Status(StatusReport),
    /// A backfill.
    Backfill(BackfillSummary),
}

/// A pull's metrics as one CloudWatch embedded-metric-format line (`None` for other actions,
/// and for a run that did nothing). Printed on its own line to stdout, CloudWatch turns it into
/// metrics without any API call.
pub fn emf_line(reply: &Reply, function_name: &str, timestamp_ms: i64) -> Option<String> {
    let Reply::Pull(s) = reply else {
        return None;
    };
    let lag = s.lag_seconds?;
    let line = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [["FunctionName", "Stream"]],
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
        "Stream": s.stream.name(),
        METRIC_LAG: lag,
        "RecordsWritten": s.records,
        "ObjectsWritten": s.objects,
        "PagesFetched": s.pages,
        // Always present (0 when nothing was due), so an alarm on it sees data every run.
        METRIC_LATE: s.reconcile.as_ref().map_or(0, |r| r.late_entries),
    });
    Some(line.to_string())
}

impl PullError {
    /// A stable name for the kind of failure (the Lambda diagnostic's `errorType`), so alarms
    /// and log queries can tell an expired token from an S3 outage.
    pub fn error_type(&self) -> &'static str {
        match self {
            PullError::VisionOne(e) => match e {
                VisionOneError::Unauthorized { .. } => "VisionOne.Unauthorized",
                VisionOneError::Forbidden { .. } => "VisionOne.Forbidden",
                VisionOneError::PageTokenExpired => "VisionOne.PageTokenExpired",
                VisionOneError::Rejected { .. } => "VisionOne.Rejected",
                VisionOneError::Unavailable { .. } => "VisionOne.Unavailable",
                VisionOneError::Deadline { .. } => "VisionOne.Deadline",
                VisionOneError::ForeignNextLink { .. } => "VisionOne.ForeignNextLink",
                VisionOneError::InvalidResponse(_) => "VisionOne.InvalidResponse",
                VisionOneError::Token(_) => "VisionOne.Token",
            },
            PullError::State(e) => match e {
                StateError::LostRace => "State.LostRace",
                StateError::Corrupt { .. } => "State.Corrupt",
                // A denial needs a policy fixed; any other S3 failure may pass by itself.
                StateError::Sink(SinkError::AccessDenied { .. }) => "S3.AccessDenied",
                StateError::Sink(_) => "S3.Failed",
            },
            PullError::OutOfOrder(_) => "VisionOne.OutOfOrder",
            PullError::InvalidEntry(_) => "VisionOne.InvalidEntry",
            PullError::TokenChurn(_) => "VisionOne.TokenChurn",
            PullError::NoTimeToWrite => "Deadline",
            PullError::BadInvocation(_) => "BadInvocation",
            PullError::BadRange(_) => "BadRange",
            PullError::CheckpointMissing { .. } => "State.CheckpointMissing",
            PullError::ForeignPending { .. } => "State.ForeignPending",
            PullError::LateKeysExhausted { .. } => "State.LateKeysExhausted",
            PullError::Ocsf(_) => "Ocsf",
            PullError::UnreadableObject { .. } => "State.UnreadableObject",
        }
    }
}

impl From<PullError> for lambda_runtime::Diagnostic {
    fn from(e: PullError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.error_type().to_owned(),
            error_message: e.to_string(),
        }
    }
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

/// The stream an invocation is for: its payload's `"stream"` (`"audit"` when absent, as in an
/// EventBridge event without input).
pub fn stream_of(event: &serde_json::Value) -> Result<Stream, String> {
    match event.get("stream") {
        None => Ok(Stream::Audit),
        Some(v) => match v.as_str() {
            Some(name) => Stream::parse(name).map_err(|e| e.to_string()),
            None => Err(super::stream::UnknownStream(v.to_string()).to_string()),
        },
    }
}

/// One puller per stream the function pulls (`TV1_STREAMS`), each built once; an invocation
/// goes to the one its payload names.
#[derive(Debug)]
pub struct Pullers(Vec<Puller>);

impl Pullers {
    /// The pullers of `configs`.
    pub fn new(
        configs: Vec<crate::config::PullerConfig>,
        s3: aws_sdk_s3::Client,
        ssm: aws_sdk_ssm::Client,
    ) -> Self {
        Pullers(
            configs
                .into_iter()
                .map(|c| Puller::new(c, s3.clone(), ssm.clone()))
                .collect(),
        )
    }

    /// The puller of `stream`.
    pub fn get(&self, stream: Stream) -> Option<&Puller> {
        self.0.iter().find(|p| p.cfg.stream == stream)
    }

    /// One invocation: the payload's `"stream"` (default `audit`) picks the puller.
    pub async fn invoke(
        &self,
        payload: &serde_json::Value,
        ctx: &lambda_runtime::Context,
        function_name: &str,
    ) -> Result<Reply, PullError> {
        let stream = stream_of(payload).map_err(PullError::BadInvocation)?;
        let Some(p) = self.get(stream) else {
            return Err(PullError::BadInvocation(format!(
                "stream {stream} is not pulled by this function; TV1_STREAMS names {}",
                self.0
                    .iter()
                    .map(|p| p.cfg.stream.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        Box::pin(p.invoke(payload, ctx, function_name)).await
    }
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
    /// One invocation as the Lambda runtime delivers it: the payload and its context (deadline,
    /// function ARN). Runs the action before the deadline and prints a pull's metrics line.
    pub async fn invoke(
        &self,
        payload: &serde_json::Value,
        ctx: &lambda_runtime::Context,
        function_name: &str,
    ) -> Result<Reply, PullError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let deadline = Instant::now() + time_left(ctx.deadline, now_ms);
        if let Some(ocsf) = &self.ocsf {
            // The accountId= partition, unless OCSF_ACCOUNT_ID gave it.
            ocsf.account_from_arn(&ctx.invoked_function_arn);
        }
        // Boxed: the run's future is deep enough to overflow the compiler's layout query in the
        // binary otherwise.
        let reply = Box::pin(self.handle(payload, deadline)).await?;
        if let Some(line) = emf_line(&reply, function_name, Utc::now().timestamp_millis()) {
            // Embedded metric format: CloudWatch reads this stdout line as metrics.
            println!("{line}");
        }
        Ok(reply)
    }

    /// Runs the action `event` asks for, finishing before `deadline`.
    pub async fn handle(
        &self,
        event: &serde_json::Value,
        deadline: Instant,
    ) -> Result<Reply, PullError> {
        Ok(
            match Action::from_event(event).map_err(PullError::BadInvocation)? {
                Action::Pull => Reply::Pull(self.run(deadline).await?),
                Action::TestConnection => Reply::TestConnection(self.test_connection().await),
                Action::Status => Reply::Status(self.status().await?),
                Action::Backfill { from, to } => {
                    Reply::Backfill(self.backfill(from, to, deadline, &|_| {}).await?)
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_names_the_stream() {
        use serde_json::json;
        assert_eq!(stream_of(&json!({})), Ok(Stream::Audit));
        assert_eq!(
            stream_of(&json!({"source": "aws.scheduler"})),
            Ok(Stream::Audit)
        );
        assert_eq!(stream_of(&json!({"stream": "alerts"})), Ok(Stream::Alerts));
        assert!(
            stream_of(&json!({"stream": "oats"}))
                .unwrap_err()
                .contains("unknown stream")
        );
        assert!(stream_of(&json!({"stream": 3})).is_err());
    }

    #[test]
    fn emf_lines_for_pulls_only() {
        let pull = |lag: Option<i64>, late: Option<u64>| {
            let mut s = RunSummary::new("r".into(), Utc::now(), None, 0, false);
            (s.lag_seconds, s.records, s.objects, s.pages) = (lag, 10, 2, 3);
            s.reconcile = late.map(|n| super::super::ReconcileSummary {
                late_entries: n,
                ..Default::default()
            });
            Reply::Pull(s)
        };
        let line = emf_line(&pull(Some(301), None), "fn", 1_700_000_000_000).unwrap();
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
        let late = pull(Some(1), Some(7));
        let v: serde_json::Value =
            serde_json::from_str(&emf_line(&late, "fn", 0).unwrap()).unwrap();
        assert_eq!(v["LateEntries"], 7);
        assert!(!line.contains('\n'));
        let status = Reply::TestConnection(ConnectionCheck {
            action: "test-connection",
            stream: crate::audit::stream::Stream::Audit,
            ok: true,
            message: String::new(),
            at: Utc::now(),
            base_url: String::new(),
        });
        assert!(emf_line(&status, "fn", 0).is_none());
        assert!(emf_line(&pull(None, None), "fn", 0).is_none());
        // The reply is the summary itself, as before it was typed.
        let json = serde_json::to_value(pull(Some(1), None)).unwrap();
        assert_eq!(
            (json["action"].as_str(), json["records"].as_u64()),
            (Some("pull"), Some(10))
        );
    }

    #[test]
    fn errors_have_stable_types() {
        let d: lambda_runtime::Diagnostic = PullError::NoTimeToWrite.into();
        assert_eq!(d.error_type, "Deadline");
        assert!(d.error_message.contains("too close to the run deadline"));
        let e = PullError::VisionOne(VisionOneError::PageTokenExpired);
        assert_eq!(e.error_type(), "VisionOne.PageTokenExpired");
        let denied = PullError::from(SinkError::AccessDenied {
            op: "GetObject",
            bucket: "b".into(),
            key: "k".into(),
            source: crate::aws::SdkCause::new(std::io::Error::other("403")),
        });
        assert_eq!(denied.error_type(), "S3.AccessDenied");
        let lost = PullError::from(SinkError::PreconditionFailed {
            bucket: "b".into(),
            key: "k".into(),
        });
        assert_eq!(lost.error_type(), "State.LostRace");
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
