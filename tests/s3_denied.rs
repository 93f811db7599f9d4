//! Real S3 answers `403 AccessDenied` for a missing key when the caller lacks `s3:ListBucket`;
//! LocalStack enforces no IAM, so this test serves S3's own error document from a stand-in
//! endpoint and checks that neither function takes it as "absent".

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tv1_connector::ad::{Body, HttpRequest, Ingest};
use tv1_connector::audit::Puller;
use tv1_connector::config::{IngestConfig, PullerConfig};

/// What S3 sends for a denied request (error code and body as documented for AccessDenied).
const ACCESS_DENIED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>4442587FB7D0A2F9</RequestId><HostId>x</HostId></Error>"#;

type Log = Arc<Mutex<Vec<(String, String)>>>;

/// Denies every S3 request; answers SSM GetParameter with `key`.
const NO_SUCH_KEY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>2</RequestId></Error>"#;

const PRECONDITION_FAILED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-None-Match</Condition><RequestId>1</RequestId></Error>"#;

/// An S3 (and SSM) stand-in: the API key from SSM; `403 AccessDenied` for every S3 request but
/// a create-only PUT, which gets `412` (the object exists), and the AD compaction checkpoint,
/// `404` (not written yet).
async fn stand_in(log: Log) -> String {
    let app = axum::Router::new().fallback(move |req: Request| {
        let log = log.clone();
        async move {
            let target = req
                .headers()
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if target.ends_with("GetParameter") {
                let body = r#"{"Parameter":{"Name":"/k","Type":"SecureString","Value":"the-key","Version":1}}"#;
                return ([("content-type", "application/x-amz-json-1.1")], body).into_response();
            }
            log.lock()
                .unwrap()
                .push((req.method().to_string(), req.uri().path().to_owned()));
            // The compactor has not run yet (ad-ingest reads its checkpoint once per instance).
            if req.uri().path().ends_with("/_state/compaction.json") {
                return Response::builder()
                    .status(404)
                    .header("content-type", "application/xml")
                    .body(axum::body::Body::from(NO_SUCH_KEY))
                    .unwrap();
            }
            // A create-only PUT finds the object there (the batch marker of a retry).
            if req.method() == "PUT" && req.headers().contains_key("if-none-match") {
                return Response::builder()
                    .status(412)
                    .header("content-type", "application/xml")
                    .body(axum::body::Body::from(PRECONDITION_FAILED))
                    .unwrap();
            }
            Response::builder()
                .status(403)
                .header("content-type", "application/xml")
                .body(axum::body::Body::from(ACCESS_DENIED))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn clients(url: &str) -> (aws_sdk_s3::Client, aws_sdk_ssm::Client) {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKID", "secret", None, None, "test",
        ))
        .load()
        .await;
    (
        tv1_connector::aws::s3_client(&sdk),
        tv1_connector::aws::ssm_client(&sdk),
    )
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn the_puller_never_reads_a_denied_checkpoint_as_a_first_run() {
    let log = Log::default();
    let url = stand_in(log.clone()).await;
    let (s3, ssm) = clients(&url).await;
    let cfg = PullerConfig::from_map(&vars(&[
        ("TV1_TOKEN_PARAM", "/t"),
        ("BUCKET", "lake-bucket"),
        ("TV1_BASE_URL", "http://127.0.0.1:9"),
    ]))
    .unwrap();
    let p = Puller::new(cfg, s3, ssm);
    let err = p.run(p.default_deadline()).await.unwrap_err();
    let e = err.to_string();
    assert!(
        e.contains("s3:ListBucket on arn:aws:s3:::lake-bucket"),
        "names the permission: {e}"
    );
    assert!(e.contains("GetObject") && e.contains("403"), "{e}");
    // S3's own error stays reachable as the source; what `tv1` prints stops before it.
    let causes: Vec<String> =
        std::iter::successors(std::error::Error::source(&err), |c| c.source())
            .map(ToString::to_string)
            .collect();
    assert!(
        causes.iter().any(|c| c.contains("AccessDenied")),
        "the SDK's error is the source: {causes:?}"
    );
    assert_eq!(tv1_connector::aws::report(&err), e);
    let st = p.status().await.unwrap_err().to_string();
    assert!(
        st.contains("s3:ListBucket on arn:aws:s3:::lake-bucket"),
        "{st}"
    );
    // Nothing but the checkpoint read (and the status document's read and write) was tried.
    let writes: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p)| m != "GET" && !p.ends_with("_state/status.json"))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test]
async fn ad_ingest_never_reads_a_denied_batch_marker_as_a_new_batch() {
    let log = Log::default();
    let url = stand_in(log.clone()).await;
    let (s3, ssm) = clients(&url).await;
    let cfg = IngestConfig::from_map(&vars(&[("API_KEY_PARAM", "/k"), ("BUCKET", "lake-bucket")]))
        .unwrap();
    let ingest = Ingest::new(cfg, s3, ssm);
    let body = r#"{"agent":{"id":"dc01"},"batch_id":"b1","events":[{"event_id":4624,"time":"2026-11-21T10:00:00Z","computer":"DC01"}]}"#;
    let resp = ingest
        .handle(
            HttpRequest {
                method: "POST",
                path: "/v1/events",
                authorization: Some("Bearer the-key"),
                x_api_key: None,
                content_type: Some("application/json"),
                content_encoding: None,
                body: Body::apigw(Some(body), false),
                sender: Default::default(),
            },
            chrono::Utc::now(),
        )
        .await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    let msg = resp.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("s3:ListBucket on arn:aws:s3:::lake-bucket"),
        "{msg}"
    );
    // The compaction checkpoint (absent), the marker's create-only PUT (refused: it exists),
    // then its GET (denied), and nothing after: a marker S3 will not show is not taken as absent.
    let requests = log.lock().unwrap().clone();
    assert_eq!(
        requests,
        [
            (
                "GET".to_owned(),
                "/lake-bucket/active-directory/_state/compaction.json".to_owned()
            ),
            (
                "PUT".to_owned(),
                "/lake-bucket/active-directory/_state/batches/dc01/b1.json".to_owned()
            ),
            (
                "GET".to_owned(),
                "/lake-bucket/active-directory/_state/batches/dc01/b1.json".to_owned()
            ),
        ],
        "a refused batch writes nothing"
    );
}
