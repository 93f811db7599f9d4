//! `tv1 serve`: the ad-ingest handler over HTTPS (or plain HTTP on loopback), outside Lambda.
//!
//! Same routes, limits and replies as the Lambda function (it calls the same
//! [`Ingest::handle`]); the body arrives as bytes instead of inside an API Gateway event. For a
//! VM or container next to the domain controllers, and for tests that drive real forwarding
//! agents. TLS, with a certificate renewed in place, is [`super::tls`]. One access-log line per
//! request, never a key; a clean stop on SIGTERM or Ctrl-C (requests in flight finish first,
//! for at most [`SHUTDOWN_WAIT`]).
//!
//! A client without the key gets nothing from it: method, route and key are checked from the
//! headers before any body is read, a body larger than the limits is refused from its
//! `Content-Length`, headers must arrive within [`HEADER_TIMEOUT`] and a body within
//! [`BODY_TIMEOUT`] (hyper's own header timer, a timeout around the body), a reply the client
//! does not read ends the connection after [`WRITE_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] connections are open at once (the next wait in the listen queue).

use super::tls::ReloadingCert;
use super::{Body, HttpRequest, HttpResponse, Ingest, IngestError, Sender};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a client may take to send a request's headers, counted from when the connection is
/// ready for them (opened, or its previous reply sent): also how long a kept-alive connection
/// may stay idle, and how long a TLS handshake may take.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client may make no progress: a client that stops reading its replies
/// (pipelining requests into a closed receive window) is cut off after this long instead of
/// holding its connection for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's body once admitted (4.5 MB at 1 Mbit/s is
/// 36 s).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once; the next ones wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a stop waits for requests in flight.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

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
    let h = &parts.headers;
    let head = HttpRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        authorization: text(h, header::AUTHORIZATION),
        x_api_key: text(h, "x-api-key"),
        content_type: text(h, header::CONTENT_TYPE),
        content_encoding: text(h, header::CONTENT_ENCODING),
        body: Body::Bytes(&[]),
        sender: Sender::from_headers(|n| text(h, n)),
    };
    // At most one byte past the largest body any route accepts is read: a bigger one gets our
    // 413 without being held in memory, from its Content-Length when it says so.
    let cap = ingest
        .cfg
        .max_body_bytes
        .max(ingest.cfg.max_text_body_bytes);
    let declared: Option<usize> = text(h, header::CONTENT_LENGTH).and_then(|l| l.parse().ok());
    let too_large = || IngestError::TooLarge(format!("body is larger than {cap} bytes"));
    let mut unread = true;
    let resp = if let Err(refused) = ingest.admit(&head).await {
        refused
    } else if declared.is_some_and(|n| n > cap) {
        // An agent that holds the key gets to read its 413: the reply goes at once, and its
        // body is drained (never held), up to a bound, so that it is not cut off while still
        // sending.
        tokio::spawn(tokio::time::timeout(BODY_TIMEOUT, drain(body, DRAIN_LIMIT)));
        too_large().response()
    } else {
        match tokio::time::timeout(BODY_TIMEOUT, read_body(body, cap)).await {
            Err(_) => IngestError::Timeout(format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ))
            .response(),
            Ok(Err(BodyError::TooLarge)) => too_large().response(),
            // The client went away: nobody reads a reply, but the log says what happened.
            Ok(Err(BodyError::Aborted)) => IngestError::BadRequest {
                code: "aborted",
                message: "the client stopped sending its body".into(),
            }
            .response(),
            Ok(Ok(bytes)) => {
                unread = false;
                let request = HttpRequest {
                    body: Body::Bytes(&bytes),
                    ..head
                };
                ingest.handle(request, Utc::now()).await
            }
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
        // The body was not read (whole): the connection cannot carry another request.
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

/// Most of an over-large body read and dropped so that its sender reads the 413.
const DRAIN_LIMIT: usize = 64 << 20;

/// Why a body was not read.
enum BodyError {
    /// Over the cap.
    TooLarge,
    /// The connection broke off before its end.
    Aborted,
}

/// The body, if it is at most `cap` bytes; memory holds at most `cap` plus one frame.
async fn read_body(body: axum::body::Body, cap: usize) -> Result<bytes::Bytes, BodyError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Aborted)?;
        if out.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Reads and drops up to `limit` bytes of `body`.
async fn drain(body: axum::body::Body, limit: usize) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > limit {
            return;
        }
    }
}

/// Serves `ingest` on `listener` until `shutdown` completes; requests in flight then finish
/// (for at most [`SHUTDOWN_WAIT`]). With `tls`, every connection is HTTPS and must finish its
/// handshake within [`HEADER_TIMEOUT`]; a plain-HTTP request to it gets no answer. HTTP/1.1
/// only: agents speak it, and h2c's many streams per connection would get around the
/// connection bound.
///
/// hyper's header timer also closes a kept-alive connection that stays idle for
/// [`HEADER_TIMEOUT`]: it starts again when a reply has been sent (hyper 1.x `Conn::poll_read_head`).
pub async fn serve(
    ingest: Arc<Ingest>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ReloadingCert>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(ingest);
    let watching = tls.as_ref().map(|cert| tokio::spawn(cert.clone().watch()));
    let acceptor = tls.map(|cert| tokio_rustls::TlsAcceptor::from(cert.server_config()));
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: the next accept may succeed.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (app, http, watcher, acceptor) = (
            app.clone(),
            http.clone(),
            graceful.watcher(),
            acceptor.clone(),
        );
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(WRITE_TIMEOUT));
            let stream = Box::pin(stream);
            // A client cut off (slow headers, a failed or slow handshake, a reset) is a closed
            // connection, nothing more.
            match acceptor {
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(conn).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if let Some(task) = watching {
        task.abort();
    }
    if tokio::time::timeout(SHUTDOWN_WAIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("stopped with requests still in flight after {SHUTDOWN_WAIT:?}");
    }
    Ok(())
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
