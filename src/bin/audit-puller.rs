//! The audit-puller Lambda function: an EventBridge scheduled event in, a JSON run summary out.
//! `{"action":"test-connection"}`, `{"action":"status"}` and
//! `{"action":"backfill","from":"…","to":"…"}` run the operator actions instead.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use tv1_connector::audit::Puller;
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
        puller
            .invoke(&event.payload, &event.context, function_name)
            .await
    }))
    .await
}
