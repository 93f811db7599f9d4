//! The AD ingest corridor: route → auth → decode → events → encode → sink → agents.
//!
//! [`Ingest::handle`] takes a request as API Gateway (HTTP API, payload 2.0) delivers it and
//! returns the response; the Lambda binary only converts types. Every rejection is a JSON
//! `{"error":{"code","message"}}` with the status that tells an agent whether to retry (5xx)
//! or fix its request (4xx), and a rejected request writes nothing.

pub mod agents;
pub mod apigw;
pub mod auth;
pub mod decode;
pub mod events;

use crate::checkpoint::StateError;
use crate::config::IngestConfig;
use crate::encode::{ObjectEncoder, push_compact};
use crate::sink::{Condition, S3Sink, SinkError};
use crate::timefmt::api_time;
use agents::Registry;
use auth::{ApiKey, AuthError, presented_key};
use chrono::{DateTime, NaiveDate, Utc};
use decode::{Batch, DecodeError};
use events::{Category, normalize};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The routes: method and path. The SAM template declares the same (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/events"),
    ("GET", "/v1/agents"),
    ("GET", "/v1/health"),
];

/// Most invalid events listed in a 422 reply.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// A request as the function receives it.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// `GET`, `POST`...
    pub method: &'a str,
    /// The raw path (a stage or `/lambda-url/<fn>` prefix is tolerated).
    pub path: &'a str,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `X-Api-Key`.
    pub x_api_key: Option<&'a str>,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `Content-Encoding`.
    pub content_encoding: Option<&'a str>,
    /// The body as API Gateway passes it.
    pub body: Option<&'a str>,
    /// Whether `body` is base64 (API Gateway does this for binary bodies such as gzip).
    pub is_base64_encoded: bool,
}

/// A response: status, JSON body, and `Allow` for 405s.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Value of the `Allow` header, for 405.
    pub allow: Option<&'static str>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No such route.
    #[error("no route {0}; routes are POST /v1/events, GET /v1/agents, GET /v1/health")]
    NotFound(String),
    /// Route exists, method does not.
    #[error("{method} is not allowed on {path}; use {allow}")]
    MethodNotAllowed {
        /// Method used.
        method: String,
        /// Route.
        path: &'static str,
        /// Allowed methods.
        allow: &'static str,
    },
    /// Missing or wrong key.
    #[error(transparent)]
    Auth(AuthError),
    /// Not `application/json`, or an encoding other than gzip.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Malformed base64 / gzip / JSON, or an invalid batch envelope.
    #[error("{message}")]
    BadRequest {
        /// `invalid_base64`, `invalid_gzip`, `invalid_json`, `invalid_batch`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Some events are invalid: the whole batch is refused.
    #[error("{invalid} of {total} events are invalid; the batch was not stored")]
    InvalidEvents {
        /// Events in the batch.
        total: usize,
        /// Invalid events.
        invalid: usize,
        /// `(index, reason)` of the first [`MAX_REPORTED_ERRORS`].
        details: Vec<(usize, String)>,
    },
    /// S3 or SSM failed: the agent should retry.
    #[error("{0}; retry later")]
    Unavailable(String),
}

impl IngestError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            IngestError::NotFound(_) => 404,
            IngestError::MethodNotAllowed { .. } => 405,
            IngestError::Auth(AuthError::Missing) => 401,
            IngestError::Auth(AuthError::Invalid) => 403,
            IngestError::Auth(AuthError::Unavailable(_)) | IngestError::Unavailable(_) => 503,
            IngestError::UnsupportedMediaType(_) => 415,
            IngestError::TooLarge(_) => 413,
            IngestError::BadRequest { .. } => 400,
            IngestError::InvalidEvents { .. } => 422,
        }
    }

    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::NotFound(_) => "not_found",
            IngestError::MethodNotAllowed { .. } => "method_not_allowed",
            IngestError::Auth(AuthError::Missing) => "missing_api_key",
            IngestError::Auth(AuthError::Invalid) => "invalid_api_key",
            IngestError::Auth(AuthError::Unavailable(_)) | IngestError::Unavailable(_) => {
                "unavailable"
            }
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::TooLarge(_) => "payload_too_large",
            IngestError::BadRequest { code, .. } => code,
            IngestError::InvalidEvents { .. } => "invalid_events",
        }
    }

    /// The response for this error.
    pub fn response(&self) -> HttpResponse {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let IngestError::InvalidEvents {
            details, invalid, ..
        } = self
        {
            error["invalid_count"] = json!(invalid);
            error["details"] = details
                .iter()
                .map(|(i, r)| json!({"index": i, "reason": r}))
                .collect();
        }
        let allow = match self {
            IngestError::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        };
        HttpResponse {
            status: self.status(),
            body: json!({ "error": error }),
            allow,
        }
    }
}

impl From<SinkError> for IngestError {
    fn from(e: SinkError) -> Self {
        IngestError::Unavailable(format!("storage unavailable: {e}"))
    }
}

impl From<StateError> for IngestError {
    fn from(e: StateError) -> Self {
        IngestError::Unavailable(format!("storage unavailable: {e}"))
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> IngestError {
    IngestError::BadRequest {
        code,
        message: message.into(),
    }
}

/// What an accepted batch produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchReceipt {
    /// `accepted`, or `duplicate` for a batch id seen before.
    pub status: String,
    /// The batch id.
    pub batch_id: String,
    /// Events stored (for a duplicate: when first accepted).
    pub events: usize,
    /// Objects written.
    pub keys: Vec<String>,
    /// When it was first accepted.
    pub received_at: DateTime<Utc>,
    /// SHA-256 of the decoded body, to tell a true retry from a reused id.
    pub body_sha256: String,
}

/// A validated, encoded batch: what [`Ingest::prepare`] hands to the storage step.
#[derive(Debug)]
pub struct Prepared {
    /// Who sent it.
    pub agent: decode::AgentInfo,
    /// Its id.
    pub batch_id: String,
    /// Events in it.
    pub events: usize,
    /// SHA-256 of the decoded body.
    pub body_sha256: String,
    /// `(key, gzip JSON Lines)` per category and day.
    pub objects: Vec<(String, bytes::Bytes)>,
}

/// The AD ingest function: configuration and shared clients, built once.
#[derive(Debug)]
pub struct Ingest {
    cfg: IngestConfig,
    key: ApiKey,
    sink: S3Sink,
    agents: Registry,
}

enum Route {
    Events,
    Agents,
    Health,
}

fn route(method: &str, raw_path: &str) -> Result<Route, IngestError> {
    // Tolerate a stage prefix (`/prod/v1/...`) and `cargo lambda watch`'s `/lambda-url/<fn>/...`.
    let path = raw_path
        .find("/v1/")
        .map_or(raw_path, |i| &raw_path[i..])
        .trim_end_matches('/');
    let (route, allow, path) = match path {
        "/v1/events" => (Route::Events, "POST", "/v1/events"),
        "/v1/agents" => (Route::Agents, "GET", "/v1/agents"),
        "/v1/health" => (Route::Health, "GET, HEAD", "/v1/health"),
        _ => return Err(IngestError::NotFound(raw_path.chars().take(200).collect())),
    };
    let ok = match route {
        Route::Health => method == "GET" || method == "HEAD",
        _ => method == allow,
    };
    if !ok {
        return Err(IngestError::MethodNotAllowed {
            method: method.chars().take(20).collect(),
            path,
            allow,
        });
    }
    Ok(route)
}

impl Ingest {
    /// Builds the function from its configuration and shared clients.
    pub fn new(cfg: IngestConfig, s3: aws_sdk_s3::Client, ssm: aws_sdk_ssm::Client) -> Self {
        let key = ApiKey::new(
            ssm,
            &cfg.api_key_param,
            cfg.key_cache_ttl,
            cfg.key_refresh_interval,
        );
        let sink = S3Sink::new(s3, cfg.bucket.clone());
        let agents = Registry::new(sink.clone(), &cfg.prefix);
        Ingest {
            cfg,
            key,
            sink,
            agents,
        }
    }

    /// Handles one request at `now`.
    pub async fn handle(&self, req: HttpRequest<'_>, now: DateTime<Utc>) -> HttpResponse {
        match self.dispatch(req, now).await {
            Ok(body) => HttpResponse {
                status: 200,
                body,
                allow: None,
            },
            Err(e) => {
                if e.status() >= 500 {
                    tracing::error!(code = e.code(), error = %e, "request failed");
                } else {
                    tracing::info!(status = e.status(), code = e.code(), error = %e, "request refused");
                }
                e.response()
            }
        }
    }

    async fn dispatch(
        &self,
        req: HttpRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Value, IngestError> {
        let route = route(req.method, req.path)?;
        if let Route::Health = route {
            return Ok(
                json!({"status": "ok", "service": "ad-ingest", "version": env!("CARGO_PKG_VERSION")}),
            );
        }
        self.key
            .check(presented_key(req.authorization, req.x_api_key))
            .await
            .map_err(IngestError::Auth)?;
        match route {
            Route::Agents => {
                let agents = self.agents.list(now, self.cfg.agent_timeout).await?;
                Ok(json!({"agents": agents, "count": agents.len(), "at": api_time(now)}))
            }
            _ => {
                let receipt = self.ingest(req, now).await?;
                Ok(serde_json::to_value(receipt).expect("receipt serialises"))
            }
        }
    }

    /// Reads the body of a batch: content type and encoding, size caps, base64, gzip.
    fn body(&self, req: &HttpRequest<'_>) -> Result<Vec<u8>, IngestError> {
        let ctype = req.content_type.unwrap_or("");
        let mime = ctype.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(IngestError::UnsupportedMediaType(format!(
                "Content-Type {:?} is not supported; send application/json",
                ctype.chars().take(100).collect::<String>()
            )));
        }
        let gzip = match req.content_encoding.map(str::trim).unwrap_or("") {
            "" | "identity" => false,
            e if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => true,
            e => {
                return Err(IngestError::UnsupportedMediaType(format!(
                    "Content-Encoding {:?} is not supported; send gzip or no encoding",
                    e.chars().take(100).collect::<String>()
                )));
            }
        };
        let text = req.body.unwrap_or("");
        let max = self.cfg.max_body_bytes;
        // Refuse before decoding: base64 is 4/3 of the bytes it carries.
        let approx = if req.is_base64_encoded {
            text.len() / 4 * 3
        } else {
            text.len()
        };
        if approx > max + 3 {
            return Err(IngestError::TooLarge(format!(
                "body is larger than {max} bytes"
            )));
        }
        let raw = if req.is_base64_encoded {
            decode::base64_body(text).map_err(|e| bad("invalid_base64", e.to_string()))?
        } else {
            text.as_bytes().to_vec()
        };
        if raw.len() > max {
            return Err(IngestError::TooLarge(format!(
                "body is {} bytes; the limit is {max}",
                raw.len()
            )));
        }
        if !gzip {
            return Ok(raw);
        }
        decode::gunzip_capped(&raw, self.cfg.max_decompressed_bytes).map_err(|e| match e {
            DecodeError::TooLarge(_) => IngestError::TooLarge(e.to_string()),
            other => bad("invalid_gzip", other.to_string()),
        })
    }

    /// All the CPU work of a batch, no I/O: reads the body, validates every event and encodes
    /// the objects. Public so that its cost can be measured on its own.
    pub fn prepare(
        &self,
        req: &HttpRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Prepared, IngestError> {
        let body = self.body(req)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(
                "invalid_json",
                "body is empty; send a batch {\"agent\":{...},\"batch_id\":\"...\",\"events\":[...]}",
            ));
        }
        let batch: Batch<'_> = serde_json::from_slice(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => bad("invalid_batch", format!("not a batch: {e}")),
            _ => bad("invalid_json", format!("body is not valid JSON: {e}")),
        })?;
        if !decode::is_identifier(&batch.agent.id, 64) {
            return Err(bad(
                "invalid_batch",
                "agent.id must be 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if !decode::is_identifier(&batch.batch_id, 128) {
            return Err(bad(
                "invalid_batch",
                "batch_id must be 1-128 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let total = batch.events.len();
        if total > self.cfg.max_events {
            return Err(IngestError::TooLarge(format!(
                "{total} events in one batch; the limit is {}",
                self.cfg.max_events
            )));
        }
        if let Some((i, e)) = batch
            .events
            .iter()
            .enumerate()
            .find(|(_, e)| e.get().len() > self.cfg.max_event_bytes)
        {
            return Err(IngestError::TooLarge(format!(
                "event {i} is {} bytes; the limit is {}",
                e.get().len(),
                self.cfg.max_event_bytes
            )));
        }

        // Validate every event before writing anything.
        let mut normalized = Vec::with_capacity(total);
        let (mut invalid, mut details) = (0, Vec::new());
        for (i, raw) in batch.events.iter().enumerate() {
            let parsed: Result<Value, String> =
                serde_json::from_str(raw.get()).map_err(|e| e.to_string());
            match parsed.and_then(|v| normalize(&v)) {
                Ok(n) => normalized.push(n),
                Err(reason) => {
                    invalid += 1;
                    if details.len() < MAX_REPORTED_ERRORS {
                        details.push((i, reason));
                    }
                }
            }
        }
        if invalid > 0 {
            return Err(IngestError::InvalidEvents {
                total,
                invalid,
                details,
            });
        }

        // Objects: one per (category, day) of the batch, named by agent and batch id so that a
        // retry after a lost reply rewrites the same keys.
        let agent = &batch.agent;
        let mut objects: BTreeMap<(Category, NaiveDate), ObjectEncoder> = BTreeMap::new();
        let mut line = Vec::with_capacity(4096);
        let received_at = api_time(now);
        for (raw, n) in batch.events.iter().zip(&normalized) {
            line.clear();
            write_line(
                &mut line,
                n,
                &agent.id,
                &batch.batch_id,
                &received_at,
                raw.get().as_bytes(),
            );
            objects
                .entry((n.category, n.time.date_naive()))
                .or_default()
                .push_line(&line);
        }
        let objects = objects
            .into_iter()
            .map(|((c, d), enc)| {
                let key = format!(
                    "{}category={}/dt={}/{}_{}.jsonl.gz",
                    self.cfg.prefix,
                    c.as_str(),
                    d.format("%Y-%m-%d"),
                    agent.id,
                    batch.batch_id
                );
                (key, enc.finish())
            })
            .collect();
        Ok(Prepared {
            agent: batch.agent.clone(),
            batch_id: batch.batch_id.clone(),
            events: total,
            body_sha256: hex::encode(Sha256::digest(&body)),
            objects,
        })
    }

    async fn ingest(
        &self,
        req: HttpRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<BatchReceipt, IngestError> {
        let Prepared {
            agent,
            batch_id,
            events,
            body_sha256,
            objects,
        } = self.prepare(&req, now)?;
        let marker_key = format!(
            "{}_state/batches/{}/{batch_id}.json",
            self.cfg.prefix, agent.id
        );
        if let Some(prev) = self.sink.get(&marker_key).await? {
            let mut receipt: BatchReceipt = serde_json::from_slice(&prev.body).map_err(|e| {
                IngestError::Unavailable(format!("unreadable batch marker {marker_key}: {e}"))
            })?;
            if receipt.body_sha256 != body_sha256 {
                tracing::warn!(agent = %agent.id, %batch_id, "batch id reused with different content; kept the first");
            }
            receipt.status = "duplicate".into();
            self.touch_agent(&agent, 0, now).await;
            return Ok(receipt);
        }
        let keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
        let puts = objects
            .into_iter()
            .map(|(key, body)| async move { self.sink.put_ndjson_gz(&key, body).await });
        for r in futures_util::future::join_all(puts).await {
            r?;
        }
        let receipt = BatchReceipt {
            status: "accepted".into(),
            batch_id,
            events,
            keys,
            received_at: now,
            body_sha256,
        };
        match self
            .sink
            .put_json_if(
                &marker_key,
                serde_json::to_vec(&receipt).expect("receipt"),
                &Condition::Absent,
            )
            .await
        {
            // A concurrent copy of the same batch got there first: same keys, same events.
            Ok(_) | Err(SinkError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.touch_agent(&agent, events as u64, now).await;
        tracing::info!(agent = %agent.id, batch_id = %receipt.batch_id, events, objects = receipt.keys.len(), "batch accepted");
        Ok(receipt)
    }

    /// Updates the agent list. The events are already durable, so a failure here is logged,
    /// not returned: the agent must not resend a stored batch because of a counter.
    async fn touch_agent(&self, agent: &decode::AgentInfo, events: u64, now: DateTime<Utc>) {
        if let Err(e) = self
            .agents
            .record(
                &agent.id,
                agent.hostname.as_deref(),
                agent.version.as_deref(),
                events,
                now,
            )
            .await
        {
            tracing::warn!(agent = %agent.id, error = %e, "could not update the agent list");
        }
    }
}

fn write_line(
    out: &mut Vec<u8>,
    n: &events::Normalized,
    agent_id: &str,
    batch_id: &str,
    received_at: &str,
    raw: &[u8],
) {
    let s =
        |out: &mut Vec<u8>, v: &str| serde_json::to_writer(&mut *out, v).expect("in-memory write");
    out.extend_from_slice(b"{\"time\":");
    s(out, &api_time(n.time));
    out.extend_from_slice(
        format!(
            ",\"event_id\":{},\"category\":\"{}\",\"computer\":",
            n.event_id,
            n.category.as_str()
        )
        .as_bytes(),
    );
    s(out, &n.computer);
    out.extend_from_slice(b",\"channel\":");
    serde_json::to_writer(&mut *out, &n.channel).expect("in-memory write");
    out.extend_from_slice(b",\"record_id\":");
    serde_json::to_writer(&mut *out, &n.record_id).expect("in-memory write");
    out.extend_from_slice(b",\"provider\":");
    serde_json::to_writer(&mut *out, &n.provider).expect("in-memory write");
    out.extend_from_slice(b",\"shape\":");
    serde_json::to_writer(&mut *out, &n.shape).expect("in-memory write");
    out.extend_from_slice(b",\"agent_id\":");
    s(out, agent_id);
    out.extend_from_slice(b",\"batch_id\":");
    s(out, batch_id);
    out.extend_from_slice(b",\"received_at\":");
    s(out, received_at);
    out.extend_from_slice(b",\"event\":");
    push_compact(raw, out);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_route_is_served() {
        for (method, path) in ROUTES {
            assert!(route(method, path).is_ok(), "{method} {path}");
        }
    }

    #[test]
    fn routes() {
        assert!(matches!(route("POST", "/v1/events"), Ok(Route::Events)));
        assert!(matches!(
            route("POST", "/lambda-url/ad-ingest/v1/events"),
            Ok(Route::Events)
        ));
        assert!(matches!(
            route("GET", "/prod/v1/agents/"),
            Ok(Route::Agents)
        ));
        assert!(matches!(route("HEAD", "/v1/health"), Ok(Route::Health)));
        assert_eq!(route("GET", "/v1/events").err().unwrap().status(), 405);
        assert_eq!(route("DELETE", "/v1/agents").err().unwrap().status(), 405);
        assert_eq!(route("GET", "/v2/events").err().unwrap().status(), 404);
        assert_eq!(route("GET", "/").err().unwrap().status(), 404);
    }

    #[test]
    fn lines_keep_the_event_and_add_normalised_fields() {
        let raw = br#"{"event_id":4624,"time":"2026-11-21T10:00:00Z","computer":"DC01","data":{"x":"y\nz"}}"#;
        let n = normalize(&serde_json::from_slice(raw).unwrap()).unwrap();
        let mut out = Vec::new();
        write_line(&mut out, &n, "dc01-7f3a", "b1", "2026-11-21T10:00:05Z", raw);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event_id"], 4624);
        assert_eq!(v["category"], "logon");
        assert_eq!(v["record_id"], Value::Null);
        assert_eq!(v["agent_id"], "dc01-7f3a");
        assert_eq!(v["shape"], "native");
        assert_eq!(v["event"], serde_json::from_slice::<Value>(raw).unwrap());
        assert!(!out.contains(&b'\n'));
    }
}
