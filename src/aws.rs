//! Shared AWS SDK configuration.
//!
//! The SDK reads credentials, region and `AWS_ENDPOINT_URL` from the environment. When an
//! endpoint override is present (LocalStack), S3 is switched to path-style addressing, since a
//! local endpoint has no wildcard DNS for virtual-hosted buckets, and request checksums are
//! sent only where required: LocalStack 4.13 can leave an object unreadable when an
//! `aws-chunked` upload carrying a trailing checksum is cut off mid-body (which the crash tests
//! do on purpose). Against AWS the SDK defaults stay.

use aws_config::BehaviorVersion;

/// Loads the SDK configuration from the environment (once per process).
pub async fn load() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// Builds the S3 client for `cfg`.
pub fn s3_client(cfg: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
    let mut b = aws_sdk_s3::config::Builder::from(cfg);
    if cfg.endpoint_url().is_some() {
        b = b
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// Builds the SSM client for `cfg`.
pub fn ssm_client(cfg: &aws_config::SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(cfg)
}
