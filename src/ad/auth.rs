//! API key check: the only valid key is the current value of the SSM parameter.
//!
//! The key is cached for at most `AD_KEY_CACHE_TTL` (≤ 5 min), so a rotation locks the old key
//! out within that bound everywhere. A presented key that does not match forces a re-read of
//! SSM, so a freshly rotated key works at once. The re-reads are shared and spaced, not refused:
//! requests that met a mismatch while a re-read was under way take its answer, and a new
//! re-read starts at most once every `AD_KEY_REFRESH_INTERVAL` (a request waits for it, at most
//! that long), so wrong keys cannot flood SSM and a new key is never refused because a wrong
//! one came just before it. Keys are compared in constant time, as SHA-256 digests so that
//! their lengths do not leak.

use crate::secret::{SecretError, SsmSecret};
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No key presented.
    #[error("missing API key: send Authorization: Bearer <key> or X-Api-Key: <key>")]
    Missing,
    /// An `Authorization` header in a scheme other than `Bearer` or `Splunk`.
    #[error(
        "unsupported Authorization scheme: send Authorization: Bearer <key> (or Splunk <key>) or X-Api-Key: <key>"
    )]
    Malformed,
    /// A key that is not the current one.
    #[error("invalid API key: it is not the current key (was it rotated?)")]
    Invalid,
    /// SSM could not be read.
    #[error(transparent)]
    Unavailable(#[from] SecretError),
}

/// The current API key, cached.
#[derive(Debug)]
pub struct ApiKey {
    secret: SsmSecret,
    refresh_interval: Duration,
    /// When the last forced re-read started; held while re-reading, so that the requests
    /// waiting on it share its answer.
    last_forced: Mutex<Option<Instant>>,
}

fn same(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.ct_eq(&db).into()
}

impl ApiKey {
    /// The key in `param`, cached for `ttl`, re-read on a mismatch at most every `refresh_interval`.
    pub fn new(
        ssm: aws_sdk_ssm::Client,
        param: &str,
        ttl: Duration,
        refresh_interval: Duration,
    ) -> Self {
        ApiKey {
            secret: SsmSecret::with_max_age(ssm, param, ttl),
            refresh_interval,
            last_forced: Mutex::new(None),
        }
    }

    /// Checks a presented key.
    pub async fn check(&self, presented: Option<&str>) -> Result<(), AuthError> {
        let presented = presented
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Missing)?;
        if same(presented, self.secret.current().await?.expose()) {
            return Ok(());
        }
        let arrived = Instant::now();
        let mut last = self.last_forced.lock().await;
        // A re-read that started after this request met the mismatch saw any rotation before it.
        let key = if last.is_some_and(|started| started >= arrived) {
            self.secret.current().await?
        } else {
            if let Some(started) = *last {
                tokio::time::sleep_until(started + self.refresh_interval).await;
            }
            *last = Some(Instant::now());
            self.secret.reload().await?
        };
        drop(last);
        if same(presented, key.expose()) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// A new random API key: 256 bits from the OS-seeded CSPRNG, base64url without padding.
pub fn generate_key() -> crate::secret::Secret {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    crate::secret::Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A new key ([`generate_key`]) stored in the SSM parameter `param` as a SecureString
/// (encrypted with `kms_key_id`, else the account's `aws/ssm` key), replacing the old one; the
/// function stops accepting the old key within its cache time. Returns the key, to show once.
pub async fn store_new_key(
    ssm: &aws_sdk_ssm::Client,
    param: &str,
    kms_key_id: Option<String>,
) -> Result<
    crate::secret::Secret,
    aws_sdk_ssm::error::SdkError<aws_sdk_ssm::operation::put_parameter::PutParameterError>,
> {
    let key = generate_key();
    ssm.put_parameter()
        .name(param)
        .value(key.expose())
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .set_key_id(kms_key_id)
        .overwrite(true)
        .send()
        .await?;
    Ok(key)
}

/// The key presented in `Authorization: Bearer <key>` or `X-Api-Key: <key>`.
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    // `Splunk <key>` is how HEC clients send their token.
    let bearer = authorization.and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("splunk"))
            .then_some(rest)
    });
    bearer.or(x_api_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(presented_key(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(presented_key(Some("bearer abc"), Some("x")), Some("abc"));
        assert_eq!(presented_key(Some("Basic abc"), Some("x")), Some("x"));
        assert_eq!(presented_key(None, Some("x")), Some("x"));
        assert_eq!(presented_key(Some("Splunk abc"), None), Some("abc"));
        assert_eq!(presented_key(None, None), None);
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let (a, b) = (generate_key(), generate_key());
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn comparison() {
        assert!(same("k1", "k1"));
        assert!(!same("k1", "k2"));
        assert!(!same("k1", "k1 "));
    }
}
