//! Shared AWS SDK configuration.
//!
//! The SDK reads credentials, region and `AWS_ENDPOINT_URL` from the environment; when an
//! endpoint override is present (LocalStack) S3 is switched to path-style addressing, since a
//! local endpoint has no wildcard DNS for virtual-hosted buckets.

use aws_config::BehaviorVersion;

/// Loads the SDK configuration from the environment (once per process).
pub async fn load() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// A configuration without credentials or endpoint lookups (region `us-east-1`), for clients
/// that code paths doing no I/O need to exist: the CPU-only tests and the benchmark.
pub fn offline_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build()
}

/// Builds the S3 client for `cfg`.
pub fn s3_client(cfg: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = cfg.endpoint_url().is_some();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(cfg)
            .force_path_style(path_style)
            .build(),
    )
}

/// Builds the SSM client for `cfg`.
pub fn ssm_client(cfg: &aws_config::SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(cfg)
}

/// An AWS SDK error kept as the `source` of ours, for programs that walk `source()` or print
/// `{:?}`. Our own message already says in a line what the SDK said, so a report of the chain
/// (`tv1`'s) stops before this: the SDK's chain below it ("service error: unhandled error...")
/// would repeat it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SdkCause(Box<dyn std::error::Error + Send + Sync>);

impl SdkCause {
    /// Keeps `e`.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SdkCause(Box::new(e))
    }
}

/// `e` and its causes as `{:#}` prints them (`a: b: c`), down to the first [`SdkCause`].
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.is::<SdkCause>() {
            break;
        }
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
