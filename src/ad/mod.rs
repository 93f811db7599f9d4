//! The AD ingest pipeline: route → auth → decode → events → encode → sink (→ OCSF) → agents.
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
pub mod hec;
pub mod serve;

use crate::config::IngestConfig;
use crate::lake::encode::{ObjectEncoder, push_compact};
use crate::lake::ocsf::Dataset;
use crate::lake::ocsf::writer::{Landed, OcsfError, OcsfWriter};
use crate::lake::sink::{Condition, Created, S3Sink, SinkError};
use crate::lake::state::StateError;
use crate::timefmt::api_time;
use agents::Registry;
use auth::{ApiKey, AuthError, presented_key};
use chrono::{DateTime, NaiveDate, Utc};
use decode::{BatchError, DecodeError};
use events::{Category, normalize_with};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The routes: method and path. The SAM template declares the same (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/events"),
    ("GET", "/v1/agents"),
    ("GET", "/v1/health"),
    ("POST", "/services/collector"),
    ("POST", "/services/collector/event"),
    ("POST", "/services/collector/event/1.0"),
    ("GET", "/services/collector/health"),
    ("GET", "/services/collector/health/1.0"),
];

/// Content types of a body: the envelope or a JSON array (`application/json`, which may also
/// carry one event per line), NDJSON.
const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// Most invalid events listed in a 422 reply.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Longest reason given for one invalid event (values in it are cut shorter still), so that a
/// 422 reply stays under ~25 KB whatever was sent.
pub const MAX_REASON_CHARS: usize = 200;

/// Data objects of one batch written at once.
const PUT_CONCURRENCY: usize = 8;

/// S3 user metadata on every AD data object: the SHA-256 of the body it came from. It tells a
/// retry of the same batch from a reused `batch_id`, even after the batch marker has expired.
pub const BODY_SHA_META: &str = "tv1-body-sha256";

/// Oldest event accepted, before the time of receipt.
pub const MAX_EVENT_AGE_DAYS: i64 = 365;
/// Newest event accepted, after the time of receipt (clock skew of the domain controller).
pub const MAX_EVENT_LEAD_DAYS: i64 = 1;

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
    /// The body.
    pub body: Body<'a>,
    /// Who sent a body of bare events (`X-Agent-*`, `Idempotency-Key` headers).
    pub sender: Sender<'a>,
}

/// The headers that name the agent and the batch when the body is bare events (a JSON array,
/// NDJSON, or concatenated objects) rather than the `{"agent","batch_id","events"}` envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sender<'a> {
    /// `X-Agent-Id` (required for bare events).
    pub agent_id: Option<&'a str>,
    /// `X-Agent-Hostname`.
    pub hostname: Option<&'a str>,
    /// `X-Agent-Version`.
    pub version: Option<&'a str>,
    /// `Idempotency-Key`, else `X-Batch-Id`; absent: the batch id is the body's hash.
    pub batch_id: Option<&'a str>,
    /// `X-Splunk-Request-Channel` (HEC): names the agent when `X-Agent-Id` does not.
    pub channel: Option<&'a str>,
}

impl<'a> Sender<'a> {
    /// Reads the headers through `get` (a case-insensitive lookup).
    pub fn from_headers(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Sender {
            agent_id: get("x-agent-id"),
            hostname: get("x-agent-hostname"),
            version: get("x-agent-version"),
            batch_id: get("idempotency-key").or_else(|| get("x-batch-id")),
            channel: get("x-splunk-request-channel"),
        }
    }
}

/// A request body as it reached the handler.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// A text body from API Gateway (it JSON-escapes it inside its event).
    Text(&'a str),
    /// A binary body from API Gateway, base64-encoded (gzip, for instance).
    Base64(&'a str),
    /// Bytes as they came off the wire (`tv1 serve`).
    Bytes(&'a [u8]),
}

impl<'a> Body<'a> {
    /// The body of an API Gateway event: `body` and `isBase64Encoded`.
    pub fn apigw(body: Option<&'a str>, is_base64_encoded: bool) -> Self {
        let text = body.unwrap_or("");
        if is_base64_encoded {
            Body::Base64(text)
        } else {
            Body::Text(text)
        }
    }
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
    /// A `batch_id` this agent already used for different content.
    #[error(
        "batch_id {batch_id} was already used by this agent for a batch with different content (first received {first}); nothing was stored: send new events under a new batch_id"
    )]
    BatchIdConflict {
        /// The id.
        batch_id: String,
        /// When the first batch under this id was received, if known.
        first: String,
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
    /// A HEC body HEC itself would refuse (its codes 5, 6, 12, 13).
    #[error("HEC: {}", .0.parts().2)]
    Hec(hec::HecFormat),
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
            IngestError::Auth(AuthError::Missing | AuthError::Malformed) => 401,
            IngestError::Auth(AuthError::Invalid) => 403,
            IngestError::Auth(AuthError::Unavailable(_)) | IngestError::Unavailable(_) => 503,
            IngestError::UnsupportedMediaType(_) => 415,
            IngestError::TooLarge(_) => 413,
            IngestError::BadRequest { .. } => 400,
            IngestError::InvalidEvents { .. } => 422,
            IngestError::BatchIdConflict { .. } => 409,
            IngestError::Hec(f) => f.parts().0,
        }
    }

    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::NotFound(_) => "not_found",
            IngestError::MethodNotAllowed { .. } => "method_not_allowed",
            IngestError::Auth(AuthError::Missing | AuthError::Malformed) => "missing_api_key",
            IngestError::Auth(AuthError::Invalid) => "invalid_api_key",
            IngestError::Auth(AuthError::Unavailable(_)) | IngestError::Unavailable(_) => {
                "unavailable"
            }
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::TooLarge(_) => "payload_too_large",
            IngestError::BadRequest { code, .. } => code,
            IngestError::InvalidEvents { .. } => "invalid_events",
            IngestError::BatchIdConflict { .. } => "batch_id_conflict",
            IngestError::Hec(_) => "invalid_json",
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
        HttpResponse {
            status: self.status(),
            body: json!({ "error": error }),
            allow: self.allow(),
        }
    }

    /// The `Allow` header a 405 carries.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            IngestError::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        }
    }
}

impl From<SinkError> for IngestError {
    fn from(e: SinkError) -> Self {
        IngestError::Unavailable(format!("storage unavailable: {e}"))
    }
}

impl From<OcsfError> for IngestError {
    fn from(e: OcsfError) -> Self {
        IngestError::Unavailable(format!("OCSF output unavailable: {e}"))
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
    /// OCSF records written for this batch (with `OCSF_OUTPUT=on`; a duplicate writes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsf_records: Option<u64>,
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
    ocsf: Option<OcsfWriter>,
}

enum Route {
    Events,
    Agents,
    Health,
    HecEvent,
    HecHealth,
}

fn route(method: &str, raw_path: &str) -> Result<Route, IngestError> {
    let not_allowed = |path, allow| IngestError::MethodNotAllowed {
        method: method.chars().take(20).collect(),
        path,
        allow,
    };
    match hec::route_of(raw_path) {
        Some(hec::HecRoute::Event) if method == "POST" => return Ok(Route::HecEvent),
        Some(hec::HecRoute::Event) => return Err(not_allowed("/services/collector/event", "POST")),
        Some(hec::HecRoute::Health) if method == "GET" || method == "HEAD" => {
            return Ok(Route::HecHealth);
        }
        Some(hec::HecRoute::Health) => {
            return Err(not_allowed("/services/collector/health", "GET, HEAD"));
        }
        Some(hec::HecRoute::Unknown) => {
            return Err(IngestError::NotFound(raw_path.chars().take(200).collect()));
        }
        None => {}
    }
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
        let ocsf = cfg.ocsf.as_ref().map(|o| OcsfWriter::new(o, s3.clone()));
        let sink = S3Sink::new(s3, cfg.bucket.clone());
        let agents = Registry::new(sink.clone(), &cfg.prefix);
        Ingest {
            cfg,
            key,
            sink,
            agents,
            ocsf,
        }
    }

    /// The OCSF output, when on.
    pub fn ocsf(&self) -> Option<&OcsfWriter> {
        self.ocsf.as_ref()
    }

    /// Handles one request at `now`. HEC routes answer in HEC's form, the rest in ours.
    pub async fn handle(&self, req: HttpRequest<'_>, now: DateTime<Utc>) -> HttpResponse {
        let hec = hec::route_of(req.path).is_some();
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
                if hec {
                    let (status, body) = hec::refusal(&e);
                    HttpResponse {
                        status,
                        body,
                        allow: e.allow(),
                    }
                } else {
                    e.response()
                }
            }
        }
    }

    async fn dispatch(
        &self,
        req: HttpRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Value, IngestError> {
        let route = route(req.method, req.path)?;
        match route {
            Route::Health => {
                return Ok(
                    json!({"status": "ok", "service": "ad-ingest", "version": env!("CARGO_PKG_VERSION")}),
                );
            }
            Route::HecHealth => return Ok(json!({"text": "HEC is healthy", "code": 17})),
            _ => {}
        }
        let key = presented_key(req.authorization, req.x_api_key);
        if key.is_none() && req.authorization.is_some_and(|a| !a.trim().is_empty()) {
            return Err(IngestError::Auth(AuthError::Malformed));
        }
        self.key.check(key).await.map_err(IngestError::Auth)?;
        match route {
            Route::Agents => {
                let (agents, truncated) = self.agents.list(now, self.cfg.agent_timeout).await?;
                Ok(
                    json!({"agents": agents, "count": agents.len(), "truncated": truncated, "at": api_time(now)}),
                )
            }
            Route::HecEvent => {
                self.ingest(req, now).await?;
                Ok(json!({"text": "Success", "code": 0}))
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
        // HEC clients send application/json, text/plain or nothing: HEC reads the body anyway.
        let hec = hec::route_of(req.path).is_some();
        if !hec && ![JSON, NDJSON].iter().any(|m| mime.eq_ignore_ascii_case(m)) {
            return Err(IngestError::UnsupportedMediaType(format!(
                "Content-Type {:?} is not supported; send application/json or application/x-ndjson",
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
        // API Gateway escapes a text body inside its event JSON (up to twice its size), a
        // binary one is base64 (4/3): each has the limit that keeps the event under Lambda's
        // 6 MB request limit (see `config::LAMBDA_REQUEST_LIMIT`). Off Lambda the same limits
        // apply by what the body is: compressed or plain.
        let (max, approx) = match req.body {
            Body::Text(t) => (self.cfg.max_text_body_bytes, t.len()),
            // Refuse before decoding: base64 is 4/3 of the bytes it carries.
            Body::Base64(t) => (self.cfg.max_body_bytes, t.len() / 4 * 3),
            Body::Bytes(b) if gzip => (self.cfg.max_body_bytes, b.len()),
            Body::Bytes(b) => (self.cfg.max_text_body_bytes, b.len()),
        };
        if approx > max + 3 {
            return Err(IngestError::TooLarge(format!(
                "body is larger than {max} bytes"
            )));
        }
        let raw: std::borrow::Cow<'_, [u8]> = match req.body {
            Body::Text(t) => t.as_bytes().into(),
            Body::Base64(t) => decode::base64_body(t)
                .map_err(|e| bad("invalid_base64", e.to_string()))?
                .into(),
            Body::Bytes(b) => b.into(),
        };
        if raw.len() > max {
            return Err(IngestError::TooLarge(format!(
                "body is {} bytes; the limit is {max}",
                raw.len()
            )));
        }
        if !gzip {
            return Ok(raw.into_owned());
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
        // (A HEC body has HEC's own answer to this: code 5.)
        if hec::route_of(req.path).is_none() && body.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(
                "invalid_json",
                "body is empty; send a batch {\"agent\":{...},\"batch_id\":\"...\",\"events\":[...]}",
            ));
        }
        let batch = self.parse(req, &body)?;
        check_agent(&batch.agent, &batch.batch_id)?;
        let total = batch.events.len();
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
        let normalized = validate(&batch.events, &batch.fallback_times, now)?;
        let objects = self.encode(&batch, &normalized, now)?;
        Ok(Prepared {
            agent: batch.agent.clone(),
            batch_id: batch.batch_id.clone(),
            events: total,
            body_sha256: hex::encode(Sha256::digest(&body)),
            objects,
        })
    }

    /// The batch in a body: the envelope, or bare events named by the `X-Agent-*` headers.
    fn parse<'b>(
        &self,
        req: &HttpRequest<'_>,
        body: &'b [u8],
    ) -> Result<decode::Batch<'b>, IngestError> {
        let max = self.cfg.max_events;
        if hec::route_of(req.path) == Some(hec::HecRoute::Event) {
            return hec::parse(body, max, &req.sender);
        }
        let too_large = |e: BatchError| match e {
            BatchError::TooManyEvents(n) => IngestError::TooLarge(format!(
                "more than {n} events in one batch; the limit is {n}"
            )),
            BatchError::Shape(_) => bad("invalid_batch", e.to_string()),
            BatchError::Syntax(_) => bad("invalid_json", e.to_string()),
        };
        let Some(agent_id) = req.sender.agent_id else {
            return decode::parse_batch(body, max).map_err(|e| match e {
                BatchError::Shape(_) => bad(
                    "invalid_batch",
                    format!("{e}; bare events (a JSON array or one object per line) need the X-Agent-Id header"),
                ),
                other => too_large(other),
            });
        };
        let events = decode::parse_events(body, max).map_err(too_large)?;
        let batch_id = match req.sender.batch_id {
            Some(id) => id.trim().to_owned(),
            None => hex::encode(Sha256::digest(body)),
        };
        Ok(decode::Batch {
            agent: decode::AgentInfo {
                id: agent_id.trim().to_owned(),
                hostname: req.sender.hostname.map(|h| h.trim().to_owned()),
                version: req.sender.version.map(|v| v.trim().to_owned()),
            },
            batch_id,
            events,
            meta: Vec::new(),
            fallback_times: Vec::new(),
        })
    }

    /// The objects of a batch: one per (category, day), encoded one at a time so that memory
    /// holds one open encoder however many partitions a batch spans. Named by agent and batch
    /// id, so that a retry after a lost reply meets the same keys.
    fn encode(
        &self,
        batch: &decode::Batch<'_>,
        normalized: &[events::Normalized],
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, bytes::Bytes)>, IngestError> {
        let part = |i: usize| (normalized[i].category, normalized[i].time.date_naive());
        let mut order: Vec<usize> = (0..normalized.len()).collect();
        order.sort_by_key(|&i| part(i)); // stable: events keep their order within an object
        let partitions = 1 + order
            .windows(2)
            .filter(|w| part(w[0]) != part(w[1]))
            .count();
        if !order.is_empty() && partitions > self.cfg.max_partitions {
            return Err(IngestError::TooLarge(format!(
                "the events span {partitions} (category, day) partitions; the limit is {}: send fewer days per batch",
                self.cfg.max_partitions
            )));
        }
        let received_at = api_time(now);
        let mut objects = Vec::new();
        let mut line = Vec::with_capacity(4096);
        for group in order.chunk_by(|&a, &b| part(a) == part(b)) {
            let (category, day) = part(group[0]);
            let mut enc = ObjectEncoder::new();
            for &i in group {
                line.clear();
                write_line(
                    &mut line,
                    &normalized[i],
                    &batch.agent.id,
                    &batch.batch_id,
                    &received_at,
                    batch.events[i].get().as_bytes(),
                    batch.meta.get(i).map(String::as_str),
                );
                enc.push_line(&line);
            }
            objects.push((
                data_key(
                    &self.cfg.prefix,
                    category,
                    day,
                    &batch.agent.id,
                    &batch.batch_id,
                ),
                enc.finish(),
            ));
        }
        Ok(objects)
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
                return Err(IngestError::BatchIdConflict {
                    batch_id,
                    first: api_time(receipt.received_at),
                });
            }
            receipt.status = "duplicate".into();
            self.touch_agent(&agent, 0, now).await;
            return Ok(receipt);
        }
        // No marker (a new batch, or one whose marker expired or was never written because the
        // function stopped half-way): the objects themselves say whether this id was used.
        let keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
        let found = self.existing(&keys, &body_sha256, &batch_id).await?;
        let (created, landed) = self
            .create_objects(objects, &body_sha256, &batch_id)
            .await?;
        let receipt = BatchReceipt {
            status: if found == keys.len() && created == 0 {
                "duplicate".into()
            } else {
                "accepted".into()
            },
            batch_id,
            events,
            keys,
            received_at: now,
            body_sha256,
            ocsf_records: self.ocsf.as_ref().map(|_| landed.records),
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
        self.touch_agent(&agent, created.min(1) as u64 * events as u64, now)
            .await;
        tracing::info!(agent = %agent.id, batch_id = %receipt.batch_id, events, objects = receipt.keys.len(), status = %receipt.status, "batch stored");
        Ok(receipt)
    }

    /// How many of `keys` exist already, all from this very body; a key written from another
    /// body is a reused `batch_id`, refused before anything is written.
    async fn existing(
        &self,
        keys: &[String],
        sha: &str,
        batch_id: &str,
    ) -> Result<usize, IngestError> {
        let heads = futures_util::stream::iter(keys.iter().cloned())
            .map(|k| async move { self.sink.head_meta(&k, BODY_SHA_META).await })
            .buffer_unordered(PUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut found = 0;
        for head in heads {
            match head? {
                None => {}
                Some(Some(s)) if s == sha => found += 1,
                Some(_) => {
                    return Err(IngestError::BatchIdConflict {
                        batch_id: batch_id.to_owned(),
                        first: "earlier".into(),
                    });
                }
            }
        }
        Ok(found)
    }

    /// Writes the objects create-only, a few at a time, each followed by its OCSF objects;
    /// returns how many JSONL objects were new, and the OCSF records written.
    async fn create_objects(
        &self,
        objects: Vec<(String, bytes::Bytes)>,
        sha: &str,
        batch_id: &str,
    ) -> Result<(usize, Landed), IngestError> {
        let timeout = Duration::from_secs(20);
        let puts = futures_util::stream::iter(objects)
            .map(|(key, body)| async move {
                let made = self
                    .sink
                    .create_ndjson_gz_with(&key, body.clone(), timeout, &[(BODY_SHA_META, sha)])
                    .await?;
                // Appeared since the check: a concurrent copy of this batch, or of another
                // batch under the same id.
                if made == Created::AlreadyExists
                    && self
                        .sink
                        .head_meta(&key, BODY_SHA_META)
                        .await?
                        .flatten()
                        .as_deref()
                        != Some(sha)
                {
                    return Err(IngestError::BatchIdConflict {
                        batch_id: batch_id.to_owned(),
                        first: "just now".into(),
                    });
                }
                let written = (made == Created::New).then_some(body);
                let landed = self.land_ocsf(&key, written, timeout).await?;
                Ok::<_, IngestError>((made == Created::New, landed))
            })
            .buffer_unordered(PUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let (mut created, mut landed) = (0, Landed::default());
        for r in puts {
            let (new, l) = r?;
            created += new as usize;
            landed.add(&l);
        }
        Ok((created, landed))
    }

    /// The OCSF objects of the JSONL object `key`, when the output is on: from `written` when
    /// this request wrote it, else from the object S3 kept (an earlier attempt's; see
    /// [`crate::lake::ocsf::writer`]).
    async fn land_ocsf(
        &self,
        key: &str,
        written: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Landed, IngestError> {
        let Some(ocsf) = &self.ocsf else {
            return Ok(Landed::default());
        };
        let (sink, prefix) = (&self.sink, &self.cfg.prefix);
        Ok(ocsf
            .land_object(Dataset::Ad, sink, prefix, key, written, timeout)
            .await?)
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

/// The key of a batch's object for one (category, day). `~` is not an identifier character, so
/// no two (agent, batch) pairs can share a key.
fn data_key(prefix: &str, c: Category, day: NaiveDate, agent: &str, batch_id: &str) -> String {
    format!(
        "{prefix}category={}/dt={}/{agent}~{batch_id}.jsonl.gz",
        c.as_str(),
        day.format("%Y-%m-%d")
    )
}

/// Checks the agent fields and batch id that go into keys and the agent list.
fn check_agent(agent: &decode::AgentInfo, batch_id: &str) -> Result<(), IngestError> {
    if !decode::is_identifier(&agent.id, 64) {
        return Err(bad(
            "invalid_batch",
            "agent.id must be 1-64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    if !decode::is_identifier(batch_id, 128) {
        return Err(bad(
            "invalid_batch",
            "batch_id must be 1-128 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    for (field, value, max) in [
        ("agent.hostname", &agent.hostname, decode::MAX_HOSTNAME),
        ("agent.version", &agent.version, decode::MAX_VERSION),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(bad(
                "invalid_batch",
                format!("{field} is longer than {max} characters"),
            ));
        }
    }
    Ok(())
}

/// Validates and normalises every event (nothing is written unless all are valid), including
/// a time within [receipt − 365 days, receipt + 1 day]: an event outside it is a clock or
/// parsing error, and accepting it would open a partition per stray day.
fn validate(
    raw: &[&serde_json::value::RawValue],
    fallback_times: &[Option<DateTime<Utc>>],
    now: DateTime<Utc>,
) -> Result<Vec<events::Normalized>, IngestError> {
    let earliest = now - chrono::Duration::days(MAX_EVENT_AGE_DAYS);
    let latest = now + chrono::Duration::days(MAX_EVENT_LEAD_DAYS);
    let mut normalized = Vec::with_capacity(raw.len());
    let (mut invalid, mut details) = (0, Vec::new());
    for (i, ev) in raw.iter().enumerate() {
        let parsed: Result<Value, String> =
            serde_json::from_str(ev.get()).map_err(|e| e.to_string());
        let fallback = fallback_times.get(i).copied().flatten();
        let checked = parsed.and_then(|v| normalize_with(&v, fallback)).and_then(|n| {
            if n.time < earliest || n.time > latest {
                Err(format!(
                    "time {} is outside the accepted range {} to {} ({MAX_EVENT_AGE_DAYS} days before receipt to {MAX_EVENT_LEAD_DAYS} day after)",
                    api_time(n.time),
                    api_time(earliest),
                    api_time(latest)
                ))
            } else {
                Ok(n)
            }
        });
        match checked {
            Ok(n) => normalized.push(n),
            Err(reason) => {
                invalid += 1;
                if details.len() < MAX_REPORTED_ERRORS {
                    details.push((i, reason.chars().take(MAX_REASON_CHARS).collect()));
                }
            }
        }
    }
    if invalid > 0 {
        return Err(IngestError::InvalidEvents {
            total: raw.len(),
            invalid,
            details,
        });
    }
    Ok(normalized)
}

fn write_line(
    out: &mut Vec<u8>,
    n: &events::Normalized,
    agent_id: &str,
    batch_id: &str,
    received_at: &str,
    raw: &[u8],
    meta: Option<&str>,
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
    if let Some(meta) = meta {
        out.extend_from_slice(b",\"hec\":");
        push_compact(meta.as_bytes(), out);
    }
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

    fn offline_ingest(vars: &[(&str, &str)]) -> Ingest {
        let mut env: std::collections::HashMap<String, String> =
            [("API_KEY_PARAM", "/k"), ("BUCKET", "b")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let sdk = crate::aws::offline_config();
        Ingest::new(
            IngestConfig::from_map(&env).unwrap(),
            crate::aws::s3_client(&sdk),
            crate::aws::ssm_client(&sdk),
        )
    }

    #[test]
    fn a_batch_over_many_days_holds_one_encoder_at_a_time() {
        // 10,000 events over a year in all five categories: 1,825 objects. An encoder per
        // object open at once would hold ~0.3 MB of compressor state each (over 500 MB).
        let ingest = offline_ingest(&[("AD_MAX_PARTITIONS", "5000")]);
        let now = Utc::now();
        let ids = [4624, 4720, 4662, 1102, 1];
        let events: Vec<Value> = (0..10_000)
            .map(|i| {
                let t = now - chrono::Duration::days((i / 5 % 365) as i64);
                json!({"event_id": ids[i % 5], "time": api_time(t), "computer": "DC01", "n": i})
            })
            .collect();
        let body = serde_json::to_string(
            &json!({"agent": {"id": "a"}, "batch_id": "b", "events": events}),
        )
        .unwrap();
        let req = HttpRequest {
            method: "POST",
            path: "/v1/events",
            authorization: None,
            x_api_key: None,
            content_type: Some("application/json"),
            content_encoding: None,
            body: Body::apigw(Some(&body), false),
            sender: Default::default(),
        };
        let (prepared, peak) = crate::alloc_meter::peak(|| ingest.prepare(&req, now).unwrap());
        assert_eq!(prepared.objects.len(), 1825);
        println!("peak while preparing: {} KB", peak >> 10);
        assert!(peak < 64 << 20, "preparing held {} MB", peak >> 20);
    }

    #[test]
    fn lines_keep_the_event_and_add_normalised_fields() {
        let raw = br#"{"event_id":4624,"time":"2026-11-21T10:00:00Z","computer":"DC01","data":{"x":"y\nz"}}"#;
        let n = events::normalize(&serde_json::from_slice(raw).unwrap()).unwrap();
        let mut out = Vec::new();
        write_line(
            &mut out,
            &n,
            "dc01-7f3a",
            "b1",
            "2026-11-21T10:00:05Z",
            raw,
            None,
        );
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
