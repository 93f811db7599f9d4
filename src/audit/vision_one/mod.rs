//! The Vision One audit logs API client: requests, `nextLink` paging, errors and retries.
//!
//! The bearer token is attached only to requests for the configured origin; a `nextLink`
//! elsewhere is refused, redirects are never followed, and the token never enters an error.

mod retry;

pub use retry::Backoff;

pub use crate::audit::stream::Stream;
use crate::secret::{SecretError, SsmSecret};
use chrono::{DateTime, Utc};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Error number of an expired `skipToken`.
pub const PAGE_TOKEN_EXPIRED: i64 = 1_010_550;

/// A failure talking to Vision One, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum VisionOneError {
    /// 401.
    #[error(
        "token rejected: expired or revoked (HTTP 401{detail}); create a new API key in Vision One and store it in the SSM parameter"
    )]
    Unauthorized {
        /// Vision One's own message, prefixed with `: ` when present.
        detail: String,
    },
    /// 403.
    #[error(
        "account lacks API access: role Master Administrator with Console & APIs is required (HTTP 403{detail})"
    )]
    Forbidden {
        /// Vision One's own message, prefixed with `: ` when present.
        detail: String,
    },
    /// 400 with error number 1010550.
    #[error("page token expired (error 1010550); the query must be restarted")]
    PageTokenExpired,
    /// Another 4xx: the request itself is wrong.
    #[error("Vision One rejected the request (HTTP {status}): {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Vision One's message.
        detail: String,
    },
    /// 429/5xx/network errors persisted through every attempt.
    #[error("Vision One unavailable after {attempts} attempts: {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The run deadline came before the request could complete.
    #[error("run deadline reached{}", last.as_ref().map(|l| format!(" while retrying ({l})")).unwrap_or_default())]
    Deadline {
        /// The failure being retried, if any.
        last: Option<String>,
    },
    /// A `nextLink` pointing away from the configured origin.
    #[error(
        "refusing to follow nextLink to {found}: not the configured Vision One origin {expected}"
    )]
    ForeignNextLink {
        /// Origin of the link.
        found: String,
        /// Configured origin.
        expected: String,
    },
    /// A body that is not the documented shape.
    #[error("invalid response from Vision One: {0}")]
    InvalidResponse(String),
    /// The token could not be read.
    #[error(transparent)]
    Token(#[from] SecretError),
}

impl VisionOneError {
    /// Whether the caller can stop gracefully (commit what it has) rather than fail.
    pub fn is_deadline(&self) -> bool {
        matches!(self, VisionOneError::Deadline { .. })
    }
}

/// One page of audit log entries.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Entries, each kept as the exact JSON the API sent.
    pub items: Vec<Box<RawValue>>,
    /// Absolute URL of the next page, while more remain.
    #[serde(rename = "nextLink", default)]
    pub next_link: Option<String>,
}

/// Client settings that are not the origin or the token.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The stream read: its endpoint and query.
    pub stream: Stream,
    /// `TMV1-Filter`, sent with every request of a query (its first page and each `nextLink`,
    /// as Trend's SDK does).
    pub filter: Option<String>,
    /// Raw JSON one range of a newest-first stream may hold while it is put in order.
    pub ordered_range_bytes: usize,
    /// `top`: 50, 100 or 200.
    pub page_size: u32,
    /// Timeout of one request.
    pub http_timeout: Duration,
    /// Attempts on retryable failures.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
}

/// The Vision One audit logs client. Build once, share by reference.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: SsmSecret,
    settings: Settings,
    /// `429` answers so far: reconciliation yields to the pull once Vision One throttles.
    throttled: AtomicU64,
}

/// `{"error":{"code","message","number"}}` or the flat `{"code","message"}`.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorDetail>,
    #[serde(flatten)]
    flat: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    number: Option<i64>,
}

enum Attempt {
    Done(Page),
    Retry {
        last: String,
        after: Option<Duration>,
        throttled: bool,
    },
    Fail(VisionOneError),
}

impl Client {
    /// A client for `base` (an origin such as `https://api.xdr.trendmicro.com`).
    pub fn new(base: Url, token: SsmSecret, settings: Settings) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tv1-connector/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("TLS backend initialises");
        Client {
            http,
            base,
            token,
            settings,
            throttled: AtomicU64::new(0),
        }
    }

    /// How many `429` answers this client has had (each retried or given up on).
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// The stream this client reads.
    pub fn stream(&self) -> Stream {
        self.settings.stream
    }

    /// Raw JSON one range of a newest-first stream may hold while it is put in order.
    pub fn ordered_range_bytes(&self) -> usize {
        self.settings.ordered_range_bytes
    }

    /// The configured origin.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The SSM parameter the token comes from.
    pub fn token_param(&self) -> &str {
        self.token.param()
    }

    /// First page of a query that covers the stream's items whose time is in `[start, end]`
    /// (oldest first), with `top` = `page_size` where the endpoint takes it. The page may also
    /// hold items of the second before `start`: the caller drops them (see [`Stream::query`]).
    pub async fn first_page(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        page_size: Option<u32>,
        deadline: Instant,
    ) -> Result<Page, VisionOneError> {
        let stream = self.settings.stream;
        let mut url = self.base.join(stream.path()).expect("static path");
        let top = page_size.unwrap_or(self.settings.page_size);
        url.query_pairs_mut()
            .extend_pairs(stream.query(start, end, top));
        self.get(url, deadline).await
    }

    /// The page behind a `nextLink`, which must point to the configured origin.
    pub async fn next_page(
        &self,
        next_link: &str,
        deadline: Instant,
    ) -> Result<Page, VisionOneError> {
        let url = self.check_link(next_link)?;
        self.get(url, deadline).await
    }

    /// Parses a `nextLink` and checks it against the configured origin.
    pub fn check_link(&self, next_link: &str) -> Result<Url, VisionOneError> {
        // Links have been seen with literal spaces; the URL parser percent-encodes them.
        let url = Url::parse(next_link.trim())
            .map_err(|e| VisionOneError::InvalidResponse(format!("nextLink is not a URL ({e})")))?;
        if url.origin() != self.base.origin() {
            return Err(VisionOneError::ForeignNextLink {
                found: url.origin().ascii_serialization(),
                expected: self.base.origin().ascii_serialization(),
            });
        }
        Ok(url)
    }

    async fn get(&self, url: Url, deadline: Instant) -> Result<Page, VisionOneError> {
        let mut reread_token = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.token.current().await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(VisionOneError::Deadline { last: None });
            }
            let mut request = self.http.get(url.clone());
            if let Some(filter) = &self.settings.filter {
                request = request.header("TMV1-Filter", filter);
            }
            let sent = request
                .bearer_auth(token.expose())
                .timeout(self.settings.http_timeout.min(remaining))
                .send()
                .await;
            let outcome = match sent {
                Err(e)
                    if e.is_timeout() && Instant::now() + Duration::from_millis(50) >= deadline =>
                {
                    return Err(VisionOneError::Deadline {
                        last: Some("request timed out".into()),
                    });
                }
                // Without the URL: it carries the query, and reqwest errors never carry headers.
                Err(e) => Attempt::Retry {
                    last: format!("request failed: {}", e.without_url()),
                    after: None,
                    throttled: false,
                },
                Ok(resp) => classify(resp).await,
            };
            match outcome {
                Attempt::Done(p) => return Ok(p),
                Attempt::Fail(VisionOneError::Unauthorized { .. }) if !reread_token => {
                    // The token may have been rotated since it was cached: read it once more,
                    // unless a concurrent request already did (then its value is cached).
                    reread_token = true;
                    attempt -= 1;
                    if self.token.current().await? == token {
                        tracing::warn!(
                            param = self.token.param(),
                            "HTTP 401; re-reading the token from SSM once"
                        );
                        self.token.reload().await?;
                    }
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry {
                    last,
                    after,
                    throttled,
                } => {
                    if throttled {
                        self.throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    if attempt >= self.settings.max_attempts {
                        return Err(VisionOneError::Unavailable {
                            attempts: attempt,
                            last,
                        });
                    }
                    let wait = self.settings.backoff.delay(attempt, after);
                    if Instant::now() + wait >= deadline {
                        return Err(VisionOneError::Deadline { last: Some(last) });
                    }
                    tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %last, "retrying Vision One request");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

async fn classify(resp: reqwest::Response) -> Attempt {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry::parse_retry_after);
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return Attempt::Retry {
                last: format!("reading the response failed: {}", e.without_url()),
                after: None,
                throttled: false,
            };
        }
    };
    if status.is_success() {
        return match serde_json::from_slice::<Page>(&body) {
            Ok(p) => Attempt::Done(p),
            Err(e) => Attempt::Fail(VisionOneError::InvalidResponse(format!(
                "HTTP {status} body is not an audit logs page: {e}"
            ))),
        };
    }
    let (detail, number) = error_detail(&body);
    let sep = |d: &str| {
        if d.is_empty() {
            String::new()
        } else {
            format!(": {d}")
        }
    };
    match status {
        StatusCode::UNAUTHORIZED => Attempt::Fail(VisionOneError::Unauthorized {
            detail: sep(&detail),
        }),
        StatusCode::FORBIDDEN => Attempt::Fail(VisionOneError::Forbidden {
            detail: sep(&detail),
        }),
        StatusCode::BAD_REQUEST if number == Some(PAGE_TOKEN_EXPIRED) => {
            Attempt::Fail(VisionOneError::PageTokenExpired)
        }
        s if s == StatusCode::TOO_MANY_REQUESTS
            || s.is_server_error()
            || s == StatusCode::REQUEST_TIMEOUT =>
        {
            Attempt::Retry {
                last: format!("HTTP {}{}", s.as_u16(), sep(&detail)),
                after: retry_after,
                throttled: s == StatusCode::TOO_MANY_REQUESTS,
            }
        }
        s => Attempt::Fail(VisionOneError::Rejected {
            status: s.as_u16(),
            detail,
        }),
    }
}

/// Extracts a readable message (and the error number) from an error body of any shape.
fn error_detail(body: &[u8]) -> (String, Option<i64>) {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        let d = b.error.unwrap_or(b.flat);
        let text = match (d.code, d.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (c, m) => c.or(m).unwrap_or_default(),
        };
        let text = match d.number {
            Some(n) => format!("{text} (error {n})"),
            None => text,
        };
        return (text, d.number);
    }
    // HTML from the edge, or plain text: keep a short, single-line excerpt.
    let text: String = String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (text.chars().take(200).collect(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_every_shape() {
        let (t, n) = error_detail(br#"{"error":{"code":"BadRequest","message":"Request token expired.","number":1010550}}"#);
        assert_eq!(
            (t.as_str(), n),
            (
                "BadRequest: Request token expired. (error 1010550)",
                Some(PAGE_TOKEN_EXPIRED)
            )
        );
        let (t, n) = error_detail(br#"{"code":"TooManyRequests","message":"slow down"}"#);
        assert_eq!((t.as_str(), n), ("TooManyRequests: slow down", None));
        let (t, _) = error_detail(b"<html>\n<body>502 Bad Gateway</body></html>");
        assert_eq!(t, "<html> <body>502 Bad Gateway</body></html>");
    }

    #[test]
    fn messages_are_actionable() {
        let e = VisionOneError::Unauthorized {
            detail: String::new(),
        };
        assert!(
            e.to_string()
                .starts_with("token rejected: expired or revoked")
        );
        let e = VisionOneError::Forbidden {
            detail: String::new(),
        };
        assert!(
            e.to_string()
                .contains("role Master Administrator with Console & APIs")
        );
    }
}
