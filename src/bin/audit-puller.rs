//! The audit-puller Lambda function: an EventBridge scheduled event in, a JSON run summary out.
//! `{"action":"test-connection"}`, `{"action":"status"}` and
//! `{"action":"backfill","from":"…","to":"…"}` run the operator actions instead.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};
use tv1_connector::pull::{Puller, emf_line, time_left};
use tv1_connector::{aws, config::PullerConfig, telemetry};

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
    let function_name =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "audit-puller".into());
    let function_name = &function_name;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let deadline = tokio::time::Instant::now() + time_left(event.context.deadline, now_ms);
        if let Some(ocsf) = puller.ocsf() {
            // The accountId= partition, unless OCSF_ACCOUNT_ID gave it.
            ocsf.account_from_arn(&event.context.invoked_function_arn);
        }
        let result = puller.handle(&event.payload, deadline).await?;
        if let Some(line) = emf_line(
            &result,
            function_name,
            chrono::Utc::now().timestamp_millis(),
        ) {
            // Embedded metric format: CloudWatch reads this stdout line as metrics.
            println!("{line}");
        }
        Ok::<_, Error>(result)
    }))
    .await
}
