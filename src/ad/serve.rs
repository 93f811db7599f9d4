//! `tv1 serve`: the ad-ingest handler over plain HTTP, outside Lambda.
//!
//! Same routes, limits and replies as the Lambda function (it calls the same
//! [`Ingest::handle`]); the body arrives as bytes instead of inside an API Gateway event. For a
//! VM or container next to the domain controllers behind the user's own TLS terminator, and
//! for tests that drive real forwarding agents. One access-log line per request, never a key;
//! a clean stop on SIGTERM or Ctrl-C (requests in flight finish first).

use super::{Body, HttpRequest, HttpResponse, Ingest, IngestError, Sender};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use std::future::Future;
use std::sync::Arc;
use tokio::time::Instant;

fn text(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn reply(resp: HttpResponse) -> Response {
    let mut out = (
        axum::http::StatusCode::from_u16(resp.status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(resp.body),
    )
        .into_response();
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(allow) = resp.allow {
        out.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    out
}

async fn handle(State(ingest): State<Arc<Ingest>>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    // Read at most one byte past the largest body any route accepts: a bigger one gets our
    // 413 without being held in memory.
    let cap = ingest
        .cfg
        .max_body_bytes
        .max(ingest.cfg.max_text_body_bytes);
    let mut unread = false;
    let resp = match axum::body::to_bytes(body, cap + 1).await {
        Err(_) => {
            unread = true;
            IngestError::TooLarge(format!("body is larger than {cap} bytes")).response()
        }
        Ok(bytes) => {
            let h = &parts.headers;
            let request = HttpRequest {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                authorization: text(h, header::AUTHORIZATION),
                x_api_key: text(h, "x-api-key"),
                content_type: text(h, header::CONTENT_TYPE),
                content_encoding: text(h, header::CONTENT_ENCODING),
                body: Body::Bytes(&bytes),
                sender: Sender::from_headers(|n| text(h, n)),
            };
            ingest.handle(request, Utc::now()).await
        }
    };
    let code = resp.body["error"]["code"].as_str().unwrap_or("-");
    tracing::info!(
        method = %parts.method,
        path = %parts.uri.path().chars().take(200).collect::<String>(),
        status = resp.status,
        code = %code,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    let mut out = reply(resp);
    if unread {
        // The rest of the body was never read: the connection cannot carry another request.
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

/// Serves `ingest` on `listener` until `shutdown` completes; requests in flight finish first.
pub async fn serve(
    ingest: Arc<Ingest>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(ingest);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGTERM or SIGINT.
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: finishing requests in flight");
}
