//! The audit-puller Lambda function: an EventBridge scheduled event in, a JSON run summary out.
//! `{"action":"test-connection"}`, `{"action":"status"}` and
//! `{"action":"backfill","from":"…","to":"…"}` run the operator actions instead.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};
use tv1_connector::{aws, config::PullerConfig, pull::Puller, pull::time_left, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(true);
    let cfg = PullerConfig::from_env().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let sdk = aws::load().await;
    // Built once; warm invocations reuse the clients, the connection pool and the cached token.
    let puller = Puller::new(cfg, aws::s3_client(&sdk), aws::ssm_client(&sdk));
    let puller = &puller;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let deadline = tokio::time::Instant::now() + time_left(event.context.deadline, now_ms);
        puller
            .handle(&event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
