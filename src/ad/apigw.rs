//! API Gateway HTTP API (payload 2.0) ↔ [`HttpRequest`]/[`HttpResponse`].
//!
//! The function takes the payload itself rather than `lambda_http::Request`: lambda_http
//! decodes a base64 body with `expect`, so a malformed one would panic instead of getting the
//! 400 it deserves. The types still come from lambda_http (`aws_lambda_events`).

use super::{Body as RequestBody, HttpRequest, HttpResponse, Ingest, Sender};
use chrono::{DateTime, Utc};
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
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
