//! The ad-compact Lambda function: on an EventBridge schedule (every `AD_WINDOW`), turns the
//! closed windows of batches ad-ingest landed into the lake, its OCSF output and the agent
//! list. Out: the run's summary as JSON.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use std::time::Duration;
use tv1_connector::{ad::Compactor, aws, config::IngestConfig, telemetry};

/// Time kept back from the invocation's deadline, at most: a window started is finished, and
/// the checkpoint written, before Lambda stops the function. A fifth of a shorter invocation.
const MARGIN: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(true);
    let cfg = IngestConfig::from_env().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let sdk = aws::load().await;
    let compactor = Compactor::new(&cfg, aws::s3_client(&sdk));
    let compactor = &compactor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        if let Some(ocsf) = compactor.ocsf() {
            // The accountId= partition, unless OCSF_ACCOUNT_ID gave it.
            ocsf.account_from_arn(&event.context.invoked_function_arn);
        }
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let left = tv1_connector::audit::time_left(event.context.deadline, now_ms);
        let deadline = tokio::time::Instant::now() + left.saturating_sub(MARGIN.min(left / 5));
        let summary = compactor.run(Some(deadline)).await?;
        tracing::info!(summary = %serde_json::to_string(&summary)?, "compaction run");
        Ok::<_, Error>(serde_json::to_value(summary)?)
    }))
    .await
}
