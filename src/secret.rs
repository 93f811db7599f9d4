//! Secrets kept in SSM Parameter Store (SecureString), read with decryption and cached.
//!
//! The value is wrapped in [`Secret`], whose `Debug` and `Display` never show it, so a secret
//! cannot leak through a log line or an error message by accident.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A secret value. Formatting it prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(v: impl Into<Arc<str>>) -> Self {
        Secret(v.into())
    }

    /// The value itself; call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// SSM could not give us the secret.
#[derive(Debug, thiserror::Error)]
#[error("could not read SSM parameter {param}: {message}")]
pub struct SecretError {
    /// Parameter name.
    pub param: String,
    /// What SSM said (never the value).
    pub message: String,
    /// The SDK's error, when SSM failed (none when it answered with an empty value).
    #[source]
    pub source: Option<crate::aws::SdkCause>,
}

/// One SSM parameter, cached across warm invocations.
#[derive(Debug)]
pub struct SsmSecret {
    ssm: aws_sdk_ssm::Client,
    param: String,
    max_age: Option<Duration>,
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl SsmSecret {
    /// The parameter `param`, read through `ssm`.
    pub fn new(ssm: aws_sdk_ssm::Client, param: impl Into<String>) -> Self {
        SsmSecret {
            ssm,
            param: param.into(),
            max_age: None,
            cached: Mutex::new(None),
        }
    }

    /// Like [`Self::new`], but the cached value is read again once it is older than `max_age`.
    pub fn with_max_age(
        ssm: aws_sdk_ssm::Client,
        param: impl Into<String>,
        max_age: Duration,
    ) -> Self {
        SsmSecret {
            max_age: Some(max_age),
            ..Self::new(ssm, param)
        }
    }

    /// The parameter name.
    pub fn param(&self) -> &str {
        &self.param
    }

    /// The cached value, reading SSM on first use (and when older than the maximum age).
    pub async fn current(&self) -> Result<Secret, SecretError> {
        let mut cached = self.cached.lock().await;
        if let Some((s, at)) = cached.as_ref()
            && self.max_age.is_none_or(|max| at.elapsed() < max)
        {
            return Ok(s.clone());
        }
        let s = self.fetch().await?;
        *cached = Some((s.clone(), Instant::now()));
        Ok(s)
    }

    /// Re-reads SSM (the value may have been rotated) and caches the result.
    pub async fn reload(&self) -> Result<Secret, SecretError> {
        let mut cached = self.cached.lock().await;
        let s = self.fetch().await?;
        *cached = Some((s.clone(), Instant::now()));
        Ok(s)
    }

    async fn fetch(&self) -> Result<Secret, SecretError> {
        use aws_sdk_ssm::error::ProvideErrorMetadata;
        let err = |message: String, source| SecretError {
            param: self.param.clone(),
            message,
            source,
        };
        let out = self
            .ssm
            .get_parameter()
            .name(&self.param)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| {
                let message = match e.code() {
                    Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
                    None => format!("SSM unreachable: {e}"),
                };
                err(message, Some(crate::aws::SdkCause::new(e)))
            })?;
        let value = out
            .parameter()
            .and_then(|p| p.value())
            .map(str::trim)
            .unwrap_or_default();
        if value.is_empty() {
            return Err(err("the parameter is empty".into(), None));
        }
        Ok(Secret::new(value))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_formats_the_value() {
        let s = super::Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
