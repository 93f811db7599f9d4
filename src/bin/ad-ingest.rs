//! The ad-ingest Lambda function, behind API Gateway (the HTTP API, payload 2.0, and the REST
//! API, payload 1.0): `POST /v1/events`, `GET /v1/agents`, `GET /v1/health`, the HEC routes.

use lambda_http::{Error, LambdaEvent, lambda_runtime, service_fn};
use tv1_connector::{ad::Ingest, aws, config::IngestConfig, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init(true);
    let cfg = IngestConfig::from_env().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let sdk = aws::load().await;
    // Built once; warm invocations reuse the clients and the cached key.
    let ingest = Ingest::new(cfg, aws::s3_client(&sdk), aws::ssm_client(&sdk));
    let ingest = &ingest;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // Boxed: the handler's future is deep enough to overflow the layout query otherwise.
            let handled = Box::pin(ingest.handle_event(event.payload, chrono::Utc::now()));
            Ok::<_, Error>(handled.await?)
        },
    ))
    .await
}
