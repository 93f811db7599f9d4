//! The AD ingest pipeline: route → auth → decode → events → encode → landing; then, per closed
//! window, compaction → lake (→ OCSF) → agents.
//!
//! [`Ingest::handle`] takes a request as API Gateway (HTTP API, payload 2.0) delivers it and
//! returns the response; the Lambda binary only converts types. Here: the request and response
//! types, the routes, the key check and the error model. Every rejection is a JSON
//! `{"error":{"code","message"}}` (HEC's codes on HEC routes, see [`hec`]) with the status that
//! tells an agent whether to retry (5xx) or fix its request (4xx), and a rejected request
//! writes nothing. A batch then goes through `batch.rs` (body → validated, encoded landing
//! object, no I/O) and `store.rs` (marker and landing object in S3, exactly once); `compact.rs`
//! turns closed windows of landed batches into the lake, its OCSF output and the agent list.

pub mod agents;
pub mod apigw;
pub mod auth;
mod batch;
pub mod compact;
pub mod decode;
pub mod event_time;
pub mod events;
pub mod evtx_import;
pub mod hec;
pub mod landing;
#[cfg(test)]
mod never_panics;
pub mod serve;
mod store;
pub mod tls;
pub mod windows_xml;

pub use batch::{MAX_REASON_CHARS, MAX_REPORTED_ERRORS, Prepared, QUARANTINE_DIR};
pub use compact::{CompactError, CompactSummary, Compactor};
pub use store::{
    BODY_SHA_META, BatchReceipt, METRIC_QUARANTINED, METRIC_STORED, Quarantined, emf_line,
};

use crate::config::IngestConfig;
use crate::lake::sink::{S3Sink, SinkError};
use crate::lake::state::StateError;
use crate::timefmt::api_time;
use agents::Registry;
use auth::{ApiKey, AuthError, presented_key};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

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
    /// `X-Agent-Timezone`: the IANA zone of times the agent writes without one (NXLog CE).
    pub timezone: Option<&'a str>,
}

impl<'a> Sender<'a> {
    /// Reads the headers through `get` (a case-insensitive lookup).
    pub fn from_headers(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Sender {
            agent_id: get("x-agent-id"),
            hostname: get("x-agent-hostname"),
            version: get("x-agent-version"),
            batch_id: get("idempotency-key").or_else(|| get("x-batch-id")),
            timezone: get("x-agent-timezone"),
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
    /// The client was too slow (`tv1 serve`).
    #[error("{0}")]
    Timeout(String),
    /// Malformed base64 / gzip / JSON, or an invalid batch envelope.
    #[error("{message}")]
    BadRequest {
        /// `invalid_base64`, `invalid_gzip`, `gzip_body_lost_in_transit`, `invalid_json`,
        /// `invalid_batch`.
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
            IngestError::Timeout(_) => 408,
            IngestError::BadRequest { .. } => 400,
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
            IngestError::Timeout(_) => "request_timeout",
            IngestError::BadRequest { code, .. } => code,
            IngestError::BatchIdConflict { .. } => "batch_id_conflict",
            IngestError::Hec(_) => "invalid_json",
        }
    }

    /// The response for this error.
    pub fn response(&self) -> HttpResponse {
        let error = json!({"code": self.code(), "message": self.to_string()});
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

/// The AD ingest function: configuration and shared clients, built once.
#[derive(Debug)]
pub struct Ingest {
    cfg: IngestConfig,
    key: ApiKey,
    sink: S3Sink,
    agents: Registry,
    /// The compaction windows batches land in.
    windows: landing::Windows,
    /// Requests reading their body (decompressing, parsing, encoding) at once: each may hold
    /// up to `AD_MAX_DECOMPRESSED_BYTES`, so this bounds memory as well as CPU.
    cpu: tokio::sync::Semaphore,
    /// Set once this instance has read the compactor's checkpoint (which also gives it S3's
    /// clock) and found its windows the same as the compactor's.
    windows_checked: tokio::sync::OnceCell<()>,
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
        let windows = landing::Windows::new(cfg.window, cfg.settle);
        let sink = S3Sink::new(s3, cfg.bucket.clone());
        let agents = Registry::new(sink.clone(), &cfg.prefix);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ingest {
            cfg,
            key,
            sink,
            agents,
            windows,
            cpu: tokio::sync::Semaphore::new(cpus.max(2)),
            windows_checked: tokio::sync::OnceCell::new(),
        }
    }

    /// An ingest function whose clients never reach AWS ([`crate::aws::offline_config`]), for
    /// the request's CPU work alone ([`Ingest::prepare`]): the tests and the benchmark. `vars`
    /// add to `API_KEY_PARAM=/k` and `BUCKET=b`.
    ///
    /// Errors: a variable [`IngestConfig::from_map`] refuses.
    pub fn offline(vars: &[(&str, &str)]) -> Result<Self, crate::config::ConfigError> {
        let env = [("API_KEY_PARAM", "/k"), ("BUCKET", "b")]
            .iter()
            .chain(vars)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sdk = crate::aws::offline_config();
        Ok(Ingest::new(
            IngestConfig::from_map(&env)?,
            crate::aws::s3_client(&sdk),
            crate::aws::ssm_client(&sdk),
        ))
    }

    /// Runs the CPU-bound `f` (a request's decompression, parsing and encoding) with one of the
    /// [`Ingest::cpu`] slots, off the async workers where the runtime can move them
    /// (`block_in_place` on a multi-threaded runtime): a large body does not stall the other
    /// connections' I/O.
    async fn cpu_bound<T>(&self, f: impl FnOnce() -> T) -> T {
        let _slot = self.cpu.acquire().await.expect("never closed");
        crate::lake::cpu_heavy(f)
    }

    /// Handles one request at `now`. HEC routes answer in HEC's form, the rest in ours.
    pub async fn handle(&self, req: HttpRequest<'_>, now: DateTime<Utc>) -> HttpResponse {
        let path = req.path;
        match self.dispatch(req, now).await {
            Ok(body) => HttpResponse {
                status: 200,
                body,
                allow: None,
            },
            Err(e) => Self::refusal(path, e),
        }
    }

    /// Whether a request may go on to its body: its route and, where the route needs one, its
    /// key, from the headers alone. `tv1 serve` asks before reading a body, so that a client
    /// without the key cannot make it read (or wait for) one. The refusal is the reply.
    pub async fn admit(&self, req: &HttpRequest<'_>) -> Result<(), HttpResponse> {
        match self.route_and_key(req).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Self::refusal(req.path, e)),
        }
    }

    /// The route of `req`, its key checked unless the route is a health check.
    async fn route_and_key(&self, req: &HttpRequest<'_>) -> Result<Route, IngestError> {
        let route = route(req.method, req.path)?;
        if matches!(route, Route::Health | Route::HecHealth) {
            return Ok(route);
        }
        let key = presented_key(req.authorization, req.x_api_key);
        if key.is_none() && req.authorization.is_some_and(|a| !a.trim().is_empty()) {
            return Err(IngestError::Auth(AuthError::Malformed));
        }
        self.key.check(key).await.map_err(IngestError::Auth)?;
        Ok(route)
    }

    /// The reply for a refusal, in HEC's form on HEC routes, logged by its class.
    fn refusal(path: &str, e: IngestError) -> HttpResponse {
        if e.status() >= 500 {
            tracing::error!(code = e.code(), error = %e, "request failed");
        } else {
            tracing::info!(status = e.status(), code = e.code(), error = %e, "request refused");
        }
        if hec::route_of(path).is_some() {
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

    async fn dispatch(
        &self,
        req: HttpRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Value, IngestError> {
        let route = self.route_and_key(&req).await?;
        match route {
            Route::Health => {
                return Ok(
                    json!({"status": "ok", "service": "ad-ingest", "version": env!("CARGO_PKG_VERSION")}),
                );
            }
            Route::HecHealth => return Ok(json!({"text": "HEC is healthy", "code": 17})),
            _ => {}
        }
        match route {
            Route::Agents => {
                // The list is as of the last compacted window: an agent is `connected` if its
                // latest batch there is within the timeout plus how far compaction lags.
                let lag = self.windows.visible_by(now) - now;
                let timeout = self.cfg.agent_timeout + lag.to_std().unwrap_or_default();
                let (agents, truncated, unreadable) = self.agents.list(now, timeout).await?;
                let mut reply = json!({"agents": agents, "count": agents.len(), "truncated": truncated, "at": api_time(now)});
                if !unreadable.is_empty() {
                    reply["unreadable"] = json!(unreadable);
                }
                Ok(reply)
            }
            Route::HecEvent => {
                let receipt = self.ingest(req, now).await?;
                // HEC's own success; clients read `code` (and the status) only, so the count
                // of quarantined events rides along for people reading the reply.
                let mut reply = json!({"text": "Success", "code": 0});
                if receipt.quarantined > 0 {
                    reply["quarantined"] = json!(receipt.quarantined);
                }
                Ok(reply)
            }
            _ => {
                let receipt = self.ingest(req, now).await?;
                Ok(serde_json::to_value(receipt).expect("receipt serialises"))
            }
        }
    }
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
}
