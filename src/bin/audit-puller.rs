//! The audit-puller Lambda function: an EventBridge scheduled event in, a JSON run summary out.
//! `{"action":"test-connection"}`, `{"action":"status"}` and
//! `{"action":"backfill","from":"…","to":"…"}` run the operator actions instead; `"stream"`
//! (`audit`, the default, `alerts` or `oat`) picks the stream, among those TV1_STREAMS names.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use tv1_connector::audit::Pullers;
use tv1_connector::{aws, config::PullerConfig, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(true);
    let env = std::env::vars().collect();
    let configs = PullerConfig::all_from_map(&env).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let sdk = aws::load().await;
    // Built once; warm invocations reuse the clients, the connection pool and the cached token.
    let pullers = Pullers::new(configs, aws::s3_client(&sdk), aws::ssm_client(&sdk));
    let pullers = &pullers;
    let function_name =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "audit-puller".into());
    let function_name = &function_name;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        pullers
            .invoke(&event.payload, &event.context, function_name)
            .await
    }))
    .await
}
