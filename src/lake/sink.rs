//! S3 objects: data objects with their content headers, and small JSON state documents
//! written with conditional requests.
//!
//! Both pipelines (audit pull and AD ingest) write through this module.

use crate::aws::SdkCause;
use crate::lake::clock::ServerTime;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::error::display::DisplayErrorContext;
use bytes::Bytes;
use std::time::Duration;

/// A failed S3 operation.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A conditional write lost: the object changed (or appeared) since it was read.
    #[error("conditional write to s3://{bucket}/{key} lost: another writer changed it first")]
    PreconditionFailed {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// S3 answered `403`. On a read of a key that may be absent this is usually a missing
    /// `s3:ListBucket`: S3 answers `403` instead of `404` for a key that does not exist unless
    /// the caller may list the bucket (GetObject API reference, "Permissions"). It is never
    /// taken as "absent", since that would restart the puller from scratch or store a batch twice.
    #[error(
        "S3 denied {op} on s3://{bucket}/{key} (403 AccessDenied). {}",
        access_hint(op, bucket)
    )]
    AccessDenied {
        /// The operation (`GetObject`...).
        op: &'static str,
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// The SDK's error.
        #[source]
        source: SdkCause,
    },
    /// Any other S3 failure (network, throttling, missing bucket...).
    #[error("S3 {op} s3://{bucket}/{key} failed: {message}")]
    S3 {
        /// The operation (`PutObject`...).
        op: &'static str,
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// What S3 or the transport said, in a line.
        message: String,
        /// The SDK's error, when there is one (a PUT cut off by its own timeout has none).
        #[source]
        source: Option<SdkCause>,
    },
}

/// What to grant when S3 denies `op`.
fn access_hint(op: &str, bucket: &str) -> String {
    match op {
        "GetObject" | "HeadObject" => format!(
            "If the key does not exist, S3 answers 403 instead of 404 unless the role also has \
             s3:ListBucket on arn:aws:s3:::{bucket} (without an s3:prefix condition); grant it \
             together with s3:GetObject on the prefix (infra/template.yaml does)"
        ),
        "ListObjectsV2" => format!("The role needs s3:ListBucket on arn:aws:s3:::{bucket}"),
        _ => format!("The role needs s3:{op} on this prefix of arn:aws:s3:::{bucket}"),
    }
}

/// Precondition of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Write only if no object exists (`If-None-Match: *`).
    Absent,
    /// Write only if the object still has this ETag (`If-Match`).
    Matches(String),
}

/// A JSON document read together with its ETag.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The body.
    pub body: Bytes,
    /// ETag to use in a following conditional write.
    pub etag: String,
}

/// A bucket and the client that writes to it.
#[derive(Debug, Clone)]
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    bucket: String,
    time: ServerTime,
}

/// How a create-only write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object is ours.
    New,
    /// An object already had this key; it was left as it was.
    AlreadyExists,
}

/// Content headers of a gzip JSON Lines object.
pub const NDJSON: &str = "application/x-ndjson";
/// Content type of a Parquet object (IANA registered).
pub const PARQUET: &str = "application/vnd.apache.parquet";

fn describe<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(se) => {
            let m = se.err();
            match (m.code(), m.message()) {
                (Some(c), Some(msg)) => format!("{c}: {msg}"),
                (Some(c), None) => c.to_owned(),
                _ => format!("{e}"),
            }
        }
        SdkError::DispatchFailure(d) => {
            format!("could not reach S3 ({:?})", d.as_connector_error())
        }
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        other => format!("{other}"),
    }
}

fn status<E, R>(e: &SdkError<E, aws_smithy_runtime_api::http::Response<R>>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl S3Sink {
    /// Writes to `bucket` through `client`, noting the `Date` of every response (see
    /// [`Self::server_time`]).
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        let time = ServerTime::default();
        let conf = client
            .config()
            .to_builder()
            .interceptor(time.interceptor())
            .build();
        S3Sink {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.into(),
            time,
        }
    }

    /// S3's clock, as its responses tell it.
    pub fn server_time(&self) -> &ServerTime {
        &self.time
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The underlying client.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn err(
        &self,
        op: &'static str,
        key: &str,
        message: String,
        source: Option<SdkCause>,
    ) -> SinkError {
        SinkError::S3 {
            op,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            message,
            source,
        }
    }

    /// The error for a failed `op` on `key`: `403` becomes [`SinkError::AccessDenied`].
    fn fail<E, R>(
        &self,
        op: &'static str,
        key: &str,
        e: SdkError<E, aws_smithy_runtime_api::http::Response<R>>,
    ) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        if status(&e) == Some(403) {
            return SinkError::AccessDenied {
                op,
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                source: SdkCause::new(e),
            };
        }
        let message = describe(&e);
        self.err(op, key, message, Some(SdkCause::new(e)))
    }

    /// Puts one gzip JSON Lines object. Returns once S3 has acknowledged it (durable).
    pub async fn put_ndjson_gz(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        self.put_ndjson_gz_with(key, body, &[]).await
    }

    /// [`Self::put_ndjson_gz`] with user metadata (`x-amz-meta-<name>`).
    pub async fn put_ndjson_gz_with(
        &self,
        key: &str,
        body: Bytes,
        meta: &[(&str, &str)],
    ) -> Result<(), SinkError> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(NDJSON)
            .content_encoding("gzip");
        for (k, v) in meta {
            put = put.metadata(*k, *v);
        }
        put.body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.fail("PutObject", key, e))?;
        Ok(())
    }

    /// Puts (or replaces) one Parquet object.
    pub async fn put_parquet(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(PARQUET)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.fail("PutObject", key, e))?;
        Ok(())
    }

    /// Puts one gzip JSON Lines object only if no object has its key (`If-None-Match: *`),
    /// within `timeout`.
    ///
    /// This is what makes data objects safe against late writers: a key names exactly one
    /// range (or batch), so whoever writes it first wins and every later PUT of that key, from
    /// a run that was paused past its lease or a retry of a request that did land, is refused
    /// by S3 instead of replacing or doubling what is there.
    pub async fn create_ndjson_gz(
        &self,
        key: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Created, SinkError> {
        self.create_ndjson_gz_with(key, body, timeout, &[]).await
    }

    /// [`Self::create_ndjson_gz`] with user metadata (`x-amz-meta-<name>`).
    pub async fn create_ndjson_gz_with(
        &self,
        key: &str,
        body: Bytes,
        timeout: Duration,
        meta: &[(&str, &str)],
    ) -> Result<Created, SinkError> {
        self.create(key, body, (NDJSON, Some("gzip")), timeout, meta)
            .await
    }

    /// Puts one Parquet object only if no object has its key, within `timeout` (see
    /// [`Self::create_ndjson_gz`]).
    pub async fn create_parquet(
        &self,
        key: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Created, SinkError> {
        self.create(key, body, (PARQUET, None), timeout, &[]).await
    }

    /// A create-only PUT (`If-None-Match: *`) with the given content type and encoding.
    async fn create(
        &self,
        key: &str,
        body: Bytes,
        (content_type, encoding): (&str, Option<&str>),
        timeout: Duration,
        meta: &[(&str, &str)],
    ) -> Result<Created, SinkError> {
        let mut conflicts = 0;
        loop {
            let mut put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .set_content_encoding(encoding.map(str::to_owned))
                .if_none_match("*");
            for (k, v) in meta {
                put = put.metadata(*k, *v);
            }
            let put = put.body(ByteStream::from(body.clone())).send();
            let Ok(sent) = tokio::time::timeout(timeout, put).await else {
                return Err(self.err(
                    "PutObject",
                    key,
                    format!("did not finish within {} ms", timeout.as_millis()),
                    None,
                ));
            };
            match sent {
                Ok(_) => return Ok(Created::New),
                Err(e) if status(&e) == Some(412) => return Ok(Created::AlreadyExists),
                // 409 ConditionalRequestConflict: another conditional PUT of this key is in
                // flight. Ask again once it has settled: then it either exists (412) or not.
                Err(e) if status(&e) == Some(409) && conflicts < 5 => {
                    conflicts += 1;
                    tokio::time::sleep(Duration::from_millis(200 * conflicts)).await;
                }
                Err(e) => return Err(self.fail("PutObject", key, e)),
            }
        }
    }

    /// The user metadata `name` of `key`: `None` when the object does not exist, `Some(None)`
    /// when it exists without it.
    pub async fn head_meta(
        &self,
        key: &str,
        name: &str,
    ) -> Result<Option<Option<String>>, SinkError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.metadata().and_then(|m| m.get(name)).cloned())),
            // As for GetObject, only 404 means absent (see `SinkError::AccessDenied`).
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.fail("HeadObject", key, e)),
        }
    }

    /// Reads a small document; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, SinkError> {
        // The SDK retries failed requests, but not a body that breaks off while streaming.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(o) => o,
                // Only 404 means absent; see `SinkError::AccessDenied` for why 403 never does.
                Err(e) if status(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(self.fail("GetObject", key, e)),
            };
            let etag = out.e_tag().unwrap_or_default().to_owned();
            match out.body.collect().await {
                Ok(body) => {
                    return Ok(Some(Versioned {
                        body: body.into_bytes(),
                        etag,
                    }));
                }
                Err(e) if attempt >= 3 => {
                    let message = DisplayErrorContext(&e).to_string();
                    return Err(self.err("GetObject", key, message, Some(SdkCause::new(e))));
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "reading an S3 object broke off; retrying")
                }
            }
        }
    }

    /// Writes a small JSON document under `cond`; returns the new ETag.
    pub async fn put_json_if(
        &self,
        key: &str,
        body: Vec<u8>,
        cond: &Condition,
    ) -> Result<String, SinkError> {
        let req = match cond {
            Condition::Absent => self.json_put(key, body).if_none_match("*"),
            Condition::Matches(etag) => self.json_put(key, body).if_match(etag),
        };
        match req.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or_default().to_owned()),
            // 409 ConditionalRequestConflict: a concurrent conditional write is in flight.
            Err(e) if matches!(status(&e), Some(412) | Some(409)) => {
                Err(SinkError::PreconditionFailed {
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                })
            }
            Err(e) => Err(self.fail("PutObject", key, e)),
        }
    }

    /// Writes a small JSON document unconditionally.
    pub async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), SinkError> {
        self.json_put(key, body)
            .send()
            .await
            .map_err(|e| self.fail("PutObject", key, e))?;
        Ok(())
    }

    fn json_put(
        &self,
        key: &str,
        body: Vec<u8>,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
    }

    /// Deletes an object (succeeds when it is already gone).
    pub async fn delete(&self, key: &str) -> Result<(), SinkError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.fail("DeleteObject", key, e))?;
        Ok(())
    }

    /// The "folders" directly under `prefix` (common prefixes up to the next `/`), sorted.
    pub async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("ListObjectsV2", prefix, e))?;
            out.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
        }
        out.sort();
        Ok(out)
    }

    /// Lists every key under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        Ok(self.list_at_most(prefix, usize::MAX).await?.0)
    }

    /// The keys under `prefix` after `start_after` (all when `None`) and before `end`, in
    /// order: S3 lists keys in UTF-8 binary order (ListObjectsV2 API reference), so the listing
    /// stops at the first key from `end` on.
    pub async fn list_range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        end: &str,
    ) -> Result<Vec<String>, SinkError> {
        Ok(self
            .list_while(prefix, start_after, |k, _| k < end)
            .await?
            .0)
    }

    /// Lists up to `max` keys under `prefix`; `true` when there are more.
    pub async fn list_at_most(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<(Vec<String>, bool), SinkError> {
        self.list_while(prefix, None, |_, n| n < max).await
    }

    /// The keys under `prefix` after `start_after`, in order, for as long as `take(key, keys
    /// taken so far)` says; `true` when it stopped the listing before its end.
    async fn list_while(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        mut take: impl FnMut(&str, usize) -> bool,
    ) -> Result<(Vec<String>, bool), SinkError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("ListObjectsV2", prefix, e))?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                if !take(key, keys.len()) {
                    return Ok((keys, true));
                }
                keys.push(key.to_owned());
            }
        }
        Ok((keys, false))
    }
}
