//! API Gateway ↔ [`HttpRequest`]/[`HttpResponse`]: the HTTP API (payload 2.0) and the REST API
//! (Lambda proxy, payload 1.0) the template puts in front of ad-ingest.
//!
//! Two front doors because of gzip bodies. An HTTP API decides from `Content-Type` alone
//! whether a body reaches the function as text or base64 (AWS Compute Blog, "Handling binary
//! data using Amazon API Gateway HTTP APIs"; AWS documents no list), and `application/json` is
//! passed as text: a gzip body sent so loses its bytes (see `gzip_body_lost_in_transit`). A REST
//! API with `binaryMediaTypes: ["*/*"]` passes every body base64-encoded ("Binary media types for
//! REST APIs": "*/* includes all content types"), so agents that compress JSON use that one.
//!
//! The function takes the payload itself rather than `lambda_http::Request`: lambda_http
//! decodes a base64 body with `expect`, so a malformed one would panic instead of getting the
//! 400 it deserves. The types still come from lambda_http (`aws_lambda_events`).

use super::{Body as RequestBody, HttpRequest, HttpResponse, Ingest, Sender};
use chrono::{DateTime, Utc};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyResponse, ApiGatewayV2httpRequest,
    ApiGatewayV2httpResponse,
};
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::http::{HeaderMap, HeaderValue, header};

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Converts an API Gateway response body into the payload 2.0 response.
pub fn to_apigw(resp: HttpResponse) -> ApiGatewayV2httpResponse {
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = resp.status as i64;
    out.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out.headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(allow) = resp.allow {
        out.headers
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    out.body = Some(Body::Text(resp.body.to_string()));
    out
}

impl Ingest {
    /// Handles one API Gateway HTTP API event.
    pub async fn handle_apigw(
        &self,
        ev: &ApiGatewayV2httpRequest,
        now: DateTime<Utc>,
    ) -> ApiGatewayV2httpResponse {
        let h = &ev.headers;
        let method = ev.request_context.http.method.as_str();
        let path = ev
            .raw_path
            .as_deref()
            .or(ev.request_context.http.path.as_deref())
            .unwrap_or("/");
        let req = HttpRequest {
            method,
            path,
            authorization: header(h, "authorization"),
            x_api_key: header(h, "x-api-key"),
            content_type: header(h, "content-type"),
            content_encoding: header(h, "content-encoding"),
            body: RequestBody::apigw(ev.body.as_deref(), ev.is_base64_encoded),
            sender: Sender::from_headers(|n| header(h, n)),
        };
        to_apigw(self.handle(req, now).await)
    }
}

/// The payload 1.0 response of `resp`.
pub fn to_rest(resp: HttpResponse) -> ApiGatewayProxyResponse {
    let v2 = to_apigw(resp);
    let mut out = ApiGatewayProxyResponse::default();
    out.status_code = v2.status_code;
    out.headers = v2.headers;
    out.body = v2.body;
    out
}

/// The `Content-Encoding` that still applies to a REST API event's body.
///
/// A REST API may gunzip a `Content-Encoding: gzip` request body itself ("Payload compression for
/// REST APIs": "By default, API Gateway supports decompression of the method request payload")
/// and passes the header on unchanged, so whether the body is still gzip is read from its first
/// bytes, not from the header: gzip begins 1f 8b 08 (RFC 1952, 2.3.1), `H4sI` in base64. Only
/// those four characters are looked at: the body is decoded after the key has been checked.
fn rest_encoding<'a>(declared: Option<&'a str>, body: &str, base64: bool) -> Option<&'a str> {
    let gzip = declared.is_some_and(super::decode::is_gzip_coding);
    let still_gzip = if base64 {
        body.trim_start().starts_with("H4sI")
    } else {
        // A gzip body as text was mangled on the way: keep the header so the reply says so.
        body.starts_with('\u{1f}')
    };
    if gzip && !still_gzip { None } else { declared }
}

impl Ingest {
    /// Handles one API Gateway REST API event (Lambda proxy integration).
    pub async fn handle_rest(
        &self,
        ev: &ApiGatewayProxyRequest,
        now: DateTime<Utc>,
    ) -> ApiGatewayProxyResponse {
        let h = &ev.headers;
        let text = ev.body.as_deref().unwrap_or("");
        let req = HttpRequest {
            method: ev.http_method.as_str(),
            path: ev.path.as_deref().unwrap_or("/"),
            authorization: header(h, "authorization"),
            x_api_key: header(h, "x-api-key"),
            content_type: header(h, "content-type"),
            content_encoding: rest_encoding(
                header(h, "content-encoding"),
                text,
                ev.is_base64_encoded,
            ),
            body: RequestBody::apigw(ev.body.as_deref(), ev.is_base64_encoded),
            sender: Sender::from_headers(|n| header(h, n)),
        };
        to_rest(self.handle(req, now).await)
    }

    /// Handles one invocation from either front door: a payload 2.0 event (`"version":
    /// "2.0"`, the HTTP API) or a payload 1.0 one (the REST API). Errors when the payload is
    /// neither (a misrouted invocation: the runtime reports it).
    pub async fn handle_event(
        &self,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value, serde_json::Error> {
        if payload.get("version").and_then(|v| v.as_str()) == Some("2.0") {
            let ev: ApiGatewayV2httpRequest = serde_json::from_value(payload)?;
            serde_json::to_value(Box::pin(self.handle_apigw(&ev, now)).await)
        } else {
            let ev: ApiGatewayProxyRequest = serde_json::from_value(payload)?;
            serde_json::to_value(Box::pin(self.handle_rest(&ev, now)).await)
        }
    }
}
