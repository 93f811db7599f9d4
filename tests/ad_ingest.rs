//! ad-ingest end to end against LocalStack (real S3 + SSM).

use crate::common::*;
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tv1_connector::ad::{Body, HttpRequest, HttpResponse, Ingest};
use tv1_connector::config::IngestConfig;

struct Env {
    bucket: String,
    param: String,
    key: String,
    s3: aws_sdk_s3::Client,
    ssm: aws_sdk_ssm::Client,
    vars: HashMap<String, String>,
}

impl Env {
    async fn new() -> Env {
        let AdLake {
            s3,
            ssm,
            bucket,
            param,
            key,
        } = ad_lake().await;
        let vars = [
            ("API_KEY_PARAM", param.as_str()),
            ("BUCKET", bucket.as_str()),
        ]
        .iter()
        .chain(&AD_TEST_WINDOWS)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Env {
            bucket,
            param,
            key,
            s3,
            ssm,
            vars,
        }
    }

    fn ingest(&self) -> Ingest {
        Ingest::new(
            IngestConfig::from_map(&self.vars).unwrap(),
            self.s3.clone(),
            self.ssm.clone(),
        )
    }

    async fn keys(&self) -> Vec<String> {
        bucket_keys(&self.s3, &self.bucket).await
    }

    async fn lines(&self) -> Vec<(String, Value)> {
        lake_lines(&self.s3, &self.bucket).await
    }
    async fn quarantined(&self) -> Vec<(String, Value)> {
        quarantine_lines(&self.s3, &self.bucket).await
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A POST as API Gateway delivers it: binary (gzip) bodies base64-encoded.
struct Post {
    body: Vec<u8>,
    gzip: bool,
    auth: Option<String>,
    content_type: Option<String>,
    encoding: Option<String>,
    base64: Option<bool>,
    method: &'static str,
    path: &'static str,
}

impl Post {
    fn json(v: &Value, key: &str) -> Post {
        Post::raw(serde_json::to_vec(v).unwrap(), key)
    }
    fn raw(body: Vec<u8>, key: &str) -> Post {
        Post {
            body,
            gzip: false,
            auth: Some(format!("Bearer {key}")),
            content_type: Some("application/json".into()),
            encoding: None,
            base64: None,
            method: "POST",
            path: "/v1/events",
        }
    }
    fn gzipped(mut self) -> Post {
        self.gzip = true;
        self
    }
    async fn send(&self, ingest: &Ingest) -> HttpResponse {
        let body = if self.gzip {
            gzip(&self.body)
        } else {
            self.body.clone()
        };
        let encoding = self
            .encoding
            .clone()
            .or(self.gzip.then(|| "gzip".to_owned()));
        let base64 = self.base64.unwrap_or(self.gzip);
        let text = if base64 {
            b64(&body)
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        let req = HttpRequest {
            method: self.method,
            path: self.path,
            authorization: self.auth.as_deref(),
            x_api_key: None,
            content_type: self.content_type.as_deref(),
            content_encoding: encoding.as_deref(),
            body: Body::apigw(Some(&text), base64),
            sender: Default::default(),
        };
        ingest.handle(req, chrono::Utc::now()).await
    }
}

/// The day the sample batches are moved to: ad-ingest accepts events up to a year old, and
/// the samples were written on 2026-11-21.
fn sample_day() -> String {
    (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string()
}

fn sample(name: &str) -> Value {
    let path = format!("{}/events/ad/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text.replace("2026-11-21", &sample_day())).unwrap()
}

fn get(path: &'static str, key: Option<&str>) -> Post {
    Post {
        method: "GET",
        path,
        auth: key.map(|k| format!("Bearer {k}")),
        ..Post::raw(Vec::new(), "")
    }
}

#[tokio::test]
async fn the_three_shapes_land_with_normalised_fields_and_the_original_event() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let ingest = env.ingest();
    let expected = [
        (
            "winlogbeat-batch.json",
            5,
            vec![
                "logon",
                "logon",
                "account_management",
                "object_access",
                "system",
            ],
        ),
        (
            "nxlog-batch.json",
            3,
            vec!["logon", "account_management", "object_access"],
        ),
        ("native-batch.json", 2, vec!["logon", "system"]),
    ];
    for (file, n, _) in &expected {
        let r = Post::json(&sample(file), &env.key).send(&ingest).await;
        assert_eq!(r.status, 200, "{file}: {}", r.body);
        assert_eq!(r.body["status"], "accepted");
        assert_eq!(r.body["events"], *n);
    }
    let lines = env.lines().await;
    assert_eq!(lines.len(), 10);
    for (file, _, cats) in &expected {
        let batch = sample(file);
        let agent = batch["agent"]["id"].as_str().unwrap();
        for (i, ev) in batch["events"].as_array().unwrap().iter().enumerate() {
            let (key, line) = lines
                .iter()
                .find(|(_, l)| &l["event"] == ev)
                .unwrap_or_else(|| panic!("{file} event {i} missing"));
            assert_eq!(line["category"], cats[i], "{file} {i}");
            assert_eq!(line["agent_id"], agent);
            assert!(
                key.starts_with(&format!(
                    "active-directory/category={}/dt={}/",
                    cats[i],
                    sample_day()
                )) && key.ends_with("Z.jsonl.gz"),
                "{key}"
            );
            assert!(
                line["time"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{}T10:", sample_day()))
            );
            assert!(line["event_id"].as_u64().unwrap() > 0);
            assert!(line["record_id"].as_u64().is_some());
            assert!(line["computer"].as_str().unwrap().starts_with("DC0"));
            assert!(line["received_at"].is_string());
        }
    }
}

#[tokio::test]
async fn gzip_and_base64_bodies_through_the_api_gateway_payload() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let ingest = env.ingest();
    // The sample API Gateway event (gzip, base64), with this test's key.
    let text = std::fs::read_to_string(format!(
        "{}/events/ad-ingest-post.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    // Its gzip body moved to the sample day, as `sample` does for the plain ones.
    let mut raw: Value = serde_json::from_str(&text.replace("REPLACE_WITH_KEY", &env.key)).unwrap();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(raw["body"].as_str().unwrap())
        .unwrap();
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut json).unwrap();
    raw["body"] = json!(b64(&gzip(
        json.replace("2026-11-21", &sample_day()).as_bytes()
    )));
    let ev: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest =
        serde_json::from_value(raw).unwrap();
    let resp = ingest.handle_apigw(&ev, chrono::Utc::now()).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(resp.headers["content-type"], "application/json");
    // Plain JSON, base64-encoded by API Gateway (e.g. no text content type seen).
    let mut p = Post::json(&sample("nxlog-batch.json"), &env.key);
    p.base64 = Some(true);
    assert_eq!(p.send(&ingest).await.status, 200);
    // x-gzip, X-Api-Key, charset parameter.
    let mut p = Post::json(&sample("native-batch.json"), &env.key).gzipped();
    p.encoding = Some("x-gzip".into());
    p.content_type = Some("application/json; charset=utf-8".into());
    p.auth = None;
    let body = gzip(&p.body);
    let text = b64(&body);
    let req = HttpRequest {
        method: "POST",
        path: "/v1/events",
        authorization: None,
        x_api_key: Some(&env.key),
        content_type: p.content_type.as_deref(),
        content_encoding: p.encoding.as_deref(),
        body: Body::apigw(Some(&text), true),
        sender: Default::default(),
    };
    assert_eq!(ingest.handle(req, chrono::Utc::now()).await.status, 200);
    assert_eq!(env.lines().await.len(), 10);
}

/// A REST API proxy event (payload 1.0, the shape in API Gateway's developer guide, "Input
/// format of a Lambda function for proxy integration") as the template's binary-safe front door
/// sends it, with `body` in place.
fn rest_event(key: &str, body: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/data/apigw-rest-proxy-event.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_str(
        &text
            .replace("REPLACE_WITH_KEY", key)
            .replace("REPLACE_WITH_BODY", body),
    )
    .unwrap()
}

#[tokio::test]
async fn the_rest_api_front_door_passes_gzip_json_whether_or_not_it_gunzipped_it() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let ingest = env.ingest();
    let now = chrono::Utc::now;
    let batch = |id: &str| {
        let mut b = sample("native-batch.json");
        b["batch_id"] = json!(id);
        serde_json::to_vec(&b).unwrap()
    };
    // gzip JSON, passed base64-encoded (binaryMediaTypes */*).
    let ev = rest_event(&env.key, &b64(&gzip(&batch("rest-gzip"))));
    let resp = ingest.handle_event(ev, now()).await.unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    let per_batch = env.lines().await.len();
    assert!(per_batch > 0);
    // The same, gunzipped by API Gateway on the way, its Content-Encoding header left in place.
    let ev = rest_event(&env.key, &b64(&batch("rest-gunzipped")));
    let resp = ingest.handle_event(ev, now()).await.unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    // Body that is not base64: refused, nothing stored.
    let ev = rest_event(&env.key, "%%% not base64 %%%");
    let resp = ingest.handle_event(ev, now()).await.unwrap();
    assert_eq!(resp["statusCode"], 400, "{resp}");
    // A wrong key, through the same door.
    let ev = rest_event("not-the-key", &b64(&gzip(&batch("rest-wrong-key"))));
    let resp = ingest.handle_event(ev, now()).await.unwrap();
    assert_eq!(resp["statusCode"], 403, "{resp}");
    // The HTTP API's payload 2.0 goes through the same entry point.
    let text = std::fs::read_to_string(format!(
        "{}/events/ad-ingest-health.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let resp = ingest
        .handle_event(serde_json::from_str(&text).unwrap(), now())
        .await
        .unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(env.lines().await.len(), 2 * per_batch);
}

#[tokio::test]
async fn every_error_class_is_json_with_the_right_status_and_writes_nothing() {
    if skip_without_localstack() {
        return;
    }
    let mut env = Env::new().await;
    env.vars.insert("AD_MAX_BODY_BYTES".into(), "200000".into());
    env.vars
        .insert("AD_MAX_TEXT_BODY_BYTES".into(), "200000".into());
    env.vars
        .insert("AD_MAX_DECOMPRESSED_BYTES".into(), "400000".into());
    env.vars.insert("AD_MAX_EVENTS".into(), "200".into());
    env.vars.insert("AD_MAX_EVENT_BYTES".into(), "2000".into());
    let ingest = env.ingest();
    let k = env.key.clone();
    let good = sample("native-batch.json");
    let with_events =
        |events: Vec<Value>| json!({"agent": {"id": "dc9"}, "batch_id": "b1", "events": events});

    let mut cases: Vec<(Post, u16, &str)> = vec![
        (Post::raw(b"{not json".to_vec(), &k), 400, "invalid_json"),
        (Post::raw(Vec::new(), &k), 400, "invalid_json"),
        (Post::json(&json!({"events": []}), &k), 400, "invalid_batch"),
        (
            Post::json(
                &json!({"agent": {"id": "a/b"}, "batch_id": "b", "events": []}),
                &k,
            ),
            400,
            "invalid_batch",
        ),
        (
            Post::json(
                &json!({"agent": {"id": "a"}, "batch_id": "", "events": []}),
                &k,
            ),
            400,
            "invalid_batch",
        ),
        (
            Post {
                auth: None,
                ..Post::json(&good, &k)
            },
            401,
            "missing_api_key",
        ),
        (Post::json(&good, "wrong-key"), 403, "invalid_api_key"),
        (
            Post {
                path: "/v1/nope",
                ..Post::json(&good, &k)
            },
            404,
            "not_found",
        ),
        (
            Post {
                method: "PUT",
                ..Post::json(&good, &k)
            },
            405,
            "method_not_allowed",
        ),
        (
            Post {
                content_type: Some("text/plain".into()),
                ..Post::json(&good, &k)
            },
            415,
            "unsupported_media_type",
        ),
        (
            Post {
                content_type: None,
                ..Post::json(&good, &k)
            },
            415,
            "unsupported_media_type",
        ),
        (
            Post {
                encoding: Some("br".into()),
                ..Post::json(&good, &k)
            },
            415,
            "unsupported_media_type",
        ),
        (Post::raw(vec![b' '; 250_000], &k), 413, "payload_too_large"),
        (
            Post::json(&with_events(vec![json!({}); 201]), &k),
            413,
            "payload_too_large",
        ),
    ];
    // Malformed base64 and gzip.
    // A gzip body that is not gzip (API Gateway base64-encodes it).
    let mut not_gzip = Post::raw(b"this is not gzip".to_vec(), &k);
    not_gzip.encoding = Some("gzip".into());
    not_gzip.base64 = Some(true);
    cases.push((not_gzip, 400, "invalid_gzip"));
    // A real gzip batch passed to the function as UTF-8 text (what an HTTP API may do to
    // Content-Type: application/json): its 0x8b became U+FFFD; the reply says what happened.
    let mut as_text = Post::json(&with_events(vec![json!({"event_id": 4624})]), &k);
    as_text.gzip = true;
    as_text.base64 = Some(false);
    cases.push((as_text, 400, "gzip_body_lost_in_transit"));
    // A gzip bomb: 10 MiB of spaces in a 10 kB body.
    let bomb = gzip(&vec![b' '; 10 << 20]);
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    let bomb_text = b64(&bomb);
    for (post, status, code) in &cases {
        let r = post.send(&ingest).await;
        assert_eq!(r.status, *status, "{code}: {}", r.body);
        assert_eq!(r.body["error"]["code"], *code, "{}", r.body);
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let b64_bad = HttpRequest {
        method: "POST",
        path: "/v1/events",
        authorization: Some(&format!("Bearer {k}")),
        x_api_key: None,
        content_type: Some("application/json"),
        content_encoding: None,
        body: Body::apigw(Some("@@@ not base64 @@@"), true),
        sender: Default::default(),
    };
    let r = ingest.handle(b64_bad, chrono::Utc::now()).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("invalid_base64"))
    );
    let bomb_req = HttpRequest {
        method: "POST",
        path: "/v1/events",
        authorization: Some(&format!("Bearer {k}")),
        x_api_key: None,
        content_type: Some("application/json"),
        content_encoding: Some("gzip"),
        body: Body::apigw(Some(&bomb_text), true),
        sender: Default::default(),
    };
    let r = ingest.handle(bomb_req, chrono::Utc::now()).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{}",
        r.body
    );

    // 405 says what is allowed.
    assert_eq!(cases[8].0.send(&ingest).await.allow, Some("POST"));

    assert!(
        env.keys().await.is_empty(),
        "a rejected request writes nothing: {:?}",
        env.keys().await
    );
}

#[tokio::test]
async fn s3_or_ssm_unavailable_is_503_so_agents_retry() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let dead = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let cfg = IngestConfig::from_map(&env.vars).unwrap();
    // S3 down, SSM up.
    let ingest = Ingest::new(
        cfg.clone(),
        tv1_connector::aws::s3_client(&dead),
        env.ssm.clone(),
    );
    let r = Post::json(&sample("native-batch.json"), &env.key)
        .send(&ingest)
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{}",
        r.body
    );
    // SSM down.
    let ingest = Ingest::new(
        cfg.clone(),
        env.s3.clone(),
        tv1_connector::aws::ssm_client(&dead),
    );
    let r = Post::json(&sample("native-batch.json"), &env.key)
        .send(&ingest)
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    // Health needs neither.
    let ingest = Ingest::new(
        cfg,
        tv1_connector::aws::s3_client(&dead),
        tv1_connector::aws::ssm_client(&dead),
    );
    let r = get("/v1/health", None).send(&ingest).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    assert!(!r.body.to_string().contains(&env.key));
    assert!(env.keys().await.is_empty());
}

#[tokio::test]
async fn a_rotated_key_works_at_once_and_the_old_one_stops_within_the_cache_bound() {
    if skip_without_localstack() {
        return;
    }
    let mut env = Env::new().await;
    env.vars.insert("AD_KEY_CACHE_TTL".into(), "3s".into());
    env.vars
        .insert("AD_KEY_REFRESH_INTERVAL".into(), "0s".into());
    let (a, b) = (env.ingest(), env.ingest());
    let batch = |n: u32| {
        let mut b = sample("native-batch.json");
        b["batch_id"] = json!(format!("rot-{n}"));
        b
    };
    // Both instances have the old key cached.
    assert_eq!(Post::json(&batch(1), &env.key).send(&a).await.status, 200);
    assert_eq!(Post::json(&batch(2), &env.key).send(&b).await.status, 200);

    // `tv1 rotate-key` prints the new key once and stores it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .arg("rotate-key")
        .env("API_KEY_PARAM", &env.param)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(new_key.len(), 43);
    assert_ne!(new_key, env.key);

    // The new key works at once on an instance that cached the old one...
    assert_eq!(
        Post::json(&batch(3), &new_key).send(&a).await.status,
        200,
        "new key without waiting"
    );
    // ...and that instance now refuses the old key.
    let r = Post::json(&batch(4), &env.key).send(&a).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (403, Some("invalid_api_key"))
    );
    // Any instance refuses the old key once its cache bound has passed.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        Post::json(&batch(5), &env.key).send(&b).await.status,
        403,
        "old key after the cache bound"
    );
    assert_eq!(Post::json(&batch(6), &new_key).send(&b).await.status, 200);
}

#[tokio::test]
async fn forced_rereads_are_shared_and_spaced_and_never_refuse_a_new_key() {
    if skip_without_localstack() {
        return;
    }
    let mut env = Env::new().await;
    env.vars
        .insert("AD_KEY_REFRESH_INTERVAL".into(), "2s".into());
    let ingest = env.ingest();
    assert_eq!(
        get("/v1/agents", Some("wrong-1"))
            .send(&ingest)
            .await
            .status,
        403
    );
    // A new key right after a wrong one: it waits for the next re-read, it is not refused.
    put_param(&env.ssm, &env.param, "fresh-key-0123456789").await;
    let started = std::time::Instant::now();
    assert_eq!(
        get("/v1/agents", Some("fresh-key-0123456789"))
            .send(&ingest)
            .await
            .status,
        200,
        "a rotated key right after a wrong one"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // Forty wrong keys at once share re-reads spaced by the interval: all are answered within
    // about one interval, not forty.
    let started = std::time::Instant::now();
    let wrong: Vec<_> = (0..40)
        .map(|i| {
            let key = format!("wrong-{i}");
            let ingest = &ingest;
            async move { get("/v1/agents", Some(&key)).send(ingest).await.status }
        })
        .collect();
    let statuses = futures_util::future::join_all(wrong).await;
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        get("/v1/agents", Some("fresh-key-0123456789"))
            .send(&ingest)
            .await
            .status,
        200,
        "the cached key is still valid"
    );
}

#[tokio::test]
async fn a_retried_batch_is_a_duplicate_not_a_second_copy() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let ingest = env.ingest();
    let post = Post::json(&sample("winlogbeat-batch.json"), &env.key).gzipped();
    let first = post.send(&ingest).await;
    assert_eq!(first.body["status"], "accepted");
    let again = post.send(&ingest).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(again.body["keys"], first.body["keys"]);
    // Even when the retry reaches another instance, concurrently.
    let other = env.ingest();
    let (a, b) = tokio::join!(post.send(&ingest), post.send(&other));
    assert_eq!(
        (a.body["status"].as_str(), b.body["status"].as_str()),
        (Some("duplicate"), Some("duplicate"))
    );
    assert_eq!(env.lines().await.len(), 5);
    let agents = get("/v1/agents", Some(&env.key)).send(&ingest).await;
    assert_eq!(
        agents.body["agents"][0]["events_received"], 5,
        "duplicates are not counted"
    );
}

#[tokio::test]
async fn the_agent_list_after_batches_from_several_agents() {
    if skip_without_localstack() {
        return;
    }
    let mut env = Env::new().await;
    env.vars.insert("AD_AGENT_TIMEOUT".into(), "2s".into());
    let ingest = env.ingest();
    for f in [
        "winlogbeat-batch.json",
        "nxlog-batch.json",
        "native-batch.json",
    ] {
        assert_eq!(
            Post::json(&sample(f), &env.key).send(&ingest).await.status,
            200
        );
    }
    let mut second = sample("native-batch.json");
    second["batch_id"] = json!("dc03-2d40-000002");
    second["agent"]["version"] = json!("0.9.1");
    assert_eq!(
        Post::json(&second, &env.key).send(&ingest).await.status,
        200
    );
    // The list is kept by the compaction of each window.
    compact_landed(&env.s3, &env.bucket).await;
    let r = get("/v1/agents", Some(&env.key)).send(&ingest).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["count"], 3);
    let agents = r.body["agents"].as_array().unwrap();
    let ids: Vec<&str> = agents.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["dc01-7f3a", "dc02-91bc", "dc03-2d40"]);
    let dc03 = &agents[2];
    assert_eq!(dc03["events_received"], 4);
    assert_eq!(dc03["batches_received"], 2);
    assert_eq!(dc03["version"], "0.9.1");
    assert_eq!(dc03["hostname"], "DC03.corp.example");
    assert!(dc03["first_seen"].as_str().unwrap() <= dc03["last_seen"].as_str().unwrap());
    assert!(agents.iter().all(|a| a["status"] == "connected"));
    assert_eq!(get("/v1/agents", None).send(&ingest).await.status, 401);

    // Disconnected once the timeout and the compaction lag (at most two 1 s windows and the 1 s
    // settle time here) have passed since the last batch.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let r = get("/v1/agents", Some(&env.key)).send(&ingest).await;
    assert!(
        r.body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "disconnected")
    );
}

/// Random bytes, random JSON and mutated batches: never a panic, never a 5xx, only 4xx or 200.
#[tokio::test]
async fn fuzzed_requests_get_only_4xx() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let ingest = env.ingest();
    let seeds: Vec<Vec<u8>> = [
        "winlogbeat-batch.json",
        "nxlog-batch.json",
        "native-batch.json",
    ]
    .iter()
    .map(|f| serde_json::to_vec(&sample(f)).unwrap())
    .collect();
    let mut accepted = 0;
    for i in 0..1500 {
        let body: Vec<u8> = match i % 4 {
            0 => (0..rand::random_range(0..300))
                .map(|_| rand::random::<u8>())
                .collect(),
            1 => random_json(3).to_string().into_bytes(),
            2 => {
                let mut b = seeds[i % 3].clone();
                for _ in 0..rand::random_range(1..6) {
                    let at = rand::random_range(0..b.len());
                    let junk = b"{}[]\",:0a\\ -\x00\xff";
                    b[at] = junk[rand::random_range(0..junk.len())];
                }
                b
            }
            _ => {
                let mut v: Value = serde_json::from_slice(&seeds[i % 3]).unwrap();
                v["batch_id"] = json!(format!("fz-{i}"));
                let events = v["events"].as_array_mut().unwrap();
                let at = rand::random_range(0..events.len());
                events[at] = random_json(2);
                serde_json::to_vec(&v).unwrap()
            }
        };
        let mut p = Post::raw(body, &env.key);
        if rand::random_range(0..4) == 0 {
            p = p.gzipped();
        }
        if rand::random_range(0..8) == 0 {
            p.encoding = Some("gzip".into());
            p.base64 = Some(rand::random());
        }
        let r = p.send(&ingest).await;
        assert!(
            r.status == 200 || (400..500).contains(&r.status),
            "{}: {}",
            r.status,
            r.body
        );
        assert!(r.body.is_object());
        accepted += (r.status == 200) as u32;
    }
    println!("{accepted} fuzzed requests happened to be valid batches");
}

fn random_json(depth: u32) -> Value {
    match rand::random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rand::random::<bool>()),
        2 => json!(rand::random::<i64>()),
        3 => json!(rand_hex(rand::random_range(0..12))),
        4 => json!(rand::random::<f64>()),
        5 => Value::Array(
            (0..rand::random_range(0..4))
                .map(|_| random_json(depth - 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "agent", "batch_id", "events", "event_id", "time", "computer", "winlog", "EventID",
                "id", "x",
            ];
            Value::Object(
                (0..rand::random_range(0..5))
                    .map(|_| {
                        (
                            keys[rand::random_range(0..keys.len())].to_owned(),
                            random_json(depth - 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

fn native(n: u32, time: &str) -> Value {
    json!({"event_id": 4624, "time": time, "computer": "DC01", "record_id": n})
}

fn batch(agent: &str, batch_id: &str, events: Vec<Value>) -> Value {
    json!({"agent": {"id": agent}, "batch_id": batch_id, "events": events})
}

fn now_text(offset: chrono::Duration) -> String {
    tv1_connector::timefmt::api_time(chrono::Utc::now() + offset)
}

#[tokio::test]
async fn no_two_agent_and_batch_pairs_share_an_object() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let ingest = env.ingest();
    let t = now_text(chrono::Duration::zero());
    let a = Post::json(&batch("dc01", "x_1", vec![native(1, &t)]), &env.key)
        .send(&ingest)
        .await;
    let b = Post::json(&batch("dc01_x", "1", vec![native(2, &t)]), &env.key)
        .send(&ingest)
        .await;
    assert_eq!(
        (a.body["status"].as_str(), b.body["status"].as_str()),
        (Some("accepted"), Some("accepted"))
    );
    let landed: Vec<String> = env
        .keys()
        .await
        .into_iter()
        .filter(|k| k.contains("/_landing/"))
        .collect();
    assert_eq!(landed.len(), 2, "{landed:?}");
    let records: Vec<i64> = env
        .lines()
        .await
        .iter()
        .map(|(_, l)| l["record_id"].as_i64().unwrap())
        .collect();
    assert_eq!(records.len(), 2, "both batches kept: {records:?}");
}

#[tokio::test]
async fn a_reused_batch_id_with_other_content_is_409_and_writes_nothing() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let ingest = env.ingest();
    let t = now_text(chrono::Duration::zero());
    let first = Post::json(&batch("dc01", "b-7", vec![native(1, &t)]), &env.key);
    assert_eq!(first.send(&ingest).await.body["status"], "accepted");
    let reused = Post::json(&batch("dc01", "b-7", vec![native(2, &t)]), &env.key);
    let r = reused.send(&ingest).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "batch_id_conflict");
    assert_eq!(
        env.keys()
            .await
            .iter()
            .filter(|k| k.contains("/_landing/"))
            .count(),
        1,
        "a refused batch lands nothing"
    );
    // And an exact retry of the first is still a duplicate, not a second copy.
    let r = first.send(&ingest).await;
    assert_eq!(r.body["status"], "duplicate", "{}", r.body);
    assert_eq!(env.lines().await.len(), 1);
}

#[tokio::test]
async fn hostile_batches_are_refused_early_and_replies_stay_small() {
    if skip_without_localstack() {
        return;
    }
    let mut env = Env::new().await;
    env.vars.insert("AD_MAX_PARTITIONS".into(), "10".into());
    let ingest = env.ingest();
    let k = env.key.clone();
    let t = now_text(chrono::Duration::zero());
    // Tens of millions of elements: counted while parsing, refused at the cap.
    let mut zeros = br#"{"agent":{"id":"a"},"batch_id":"z","events":["#.to_vec();
    zeros.extend(std::iter::repeat_n(b"0,".as_slice(), 5_000_000).flatten());
    zeros.extend(b"0]}");
    let r = Post::raw(zeros, &k).gzipped().send(&ingest).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{}",
        r.body
    );
    // Event times far from the time of receipt: an old one is data, in its own day, and so is
    // one from a DC whose clock runs days ahead; a time no Active Directory event can have
    // (before 2000: Windows' zero time, a Unix epoch of 0) is quarantined and named; and an
    // event larger than AD_MAX_EVENT_BYTES is quarantined, not the batch refused.
    let mut huge = native(4, &t);
    huge["pad"] = json!("x".repeat(300 << 10));
    let events = vec![
        native(0, &t),
        native(1, "1970-01-01T00:00:00Z"),
        native(2, &now_text(chrono::Duration::days(3))),
        native(3, "2003-05-01T10:00:00Z"),
        huge,
    ];
    let r = Post::json(&batch("a", "t", events), &k).send(&ingest).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["events"].as_u64(), r.body["quarantined"].as_u64()),
        (Some(5), Some(2))
    );
    let q = &r.body["quarantine"];
    assert_eq!(
        (q[0]["index"].as_u64(), q[1]["index"].as_u64()),
        (Some(1), Some(4)),
        "{q}"
    );
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap()
            .contains("outside 2000-01-01"),
        "{q}"
    );
    assert!(
        q[1]["reason"]
            .as_str()
            .unwrap()
            .contains("the limit is 262144"),
        "{q}"
    );
    let stored = env.lines().await;
    assert!(
        stored.iter().any(|(k, _)| k.contains("/dt=2003-05-01/")),
        "{stored:?}"
    );
    assert_eq!(stored.len(), 3);
    // 110 unreadable events each carrying a 64 KiB value (7 MB if echoed whole, over Lambda's
    // 6 MB response limit): all quarantined, the reply names 100 and echoes only the start of
    // each value.
    let bad: Vec<Value> = (0..110)
        .map(|i| json!({"event_id": 4624, "time": "x".repeat(64 << 10), "computer": "c", "n": i}))
        .collect();
    let mut big = env.vars.clone();
    big.insert("AD_MAX_TEXT_BODY_BYTES".into(), "3000000".into());
    big.insert("AD_MAX_EVENT_BYTES".into(), "100000".into());
    let wide = Ingest::new(
        IngestConfig::from_map(&big).unwrap(),
        env.s3.clone(),
        env.ssm.clone(),
    );
    let body = serde_json::to_vec(&batch("a", "w", bad)).unwrap();
    // Sent gzipped: 7 MB of JSON.
    let r = Post::raw(body, &k).gzipped().send(&wide).await;
    assert_eq!(r.status, 200, "{}", r.body.to_string().len());
    let size = r.body.to_string().len();
    assert!(size < 64 << 10, "reply is {size} bytes");
    assert_eq!(r.body["quarantined"], 110);
    assert_eq!(r.body["quarantine"].as_array().unwrap().len(), 100);
    assert_eq!(
        env.lines().await.len(),
        3,
        "the three stored above, nothing more"
    );
    let q = env.quarantined().await;
    assert_eq!(q.len(), 112, "110 + the two above");
    assert!(
        q.iter()
            .all(|(_, l)| l["reason"].is_string() && l["event"].is_object())
    );
}

#[test]
fn body_limits_that_could_exceed_lambdas_request_limit_are_refused() {
    let env = |k: &str, v: &str| -> HashMap<String, String> {
        [("API_KEY_PARAM", "/k"), ("BUCKET", "b"), (k, v)]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let c = IngestConfig::from_map(&env("X", "1")).unwrap();
    // The defaults fit: base64 of 4.5 MB, or 3 MB of JSON escaped at most twice over.
    assert!(c.max_body_bytes * 4 / 3 + 65_536 <= 6_291_456);
    assert!(c.max_text_body_bytes * 2 + 65_536 <= 6_291_456);
    for (var, v) in [
        ("AD_MAX_BODY_BYTES", "4700000"),
        ("AD_MAX_TEXT_BODY_BYTES", "3200000"),
    ] {
        let e = IngestConfig::from_map(&env(var, v)).unwrap_err();
        assert_eq!(e.var, var, "{e}");
        assert!(e.to_string().contains("request limit"), "{e}");
    }
}

async fn post_bare(
    ingest: &Ingest,
    key: &str,
    ctype: &str,
    body: &[u8],
    sender: tv1_connector::ad::Sender<'_>,
) -> HttpResponse {
    let gz = b64(&gzip(body));
    let auth = format!("Bearer {key}");
    let req = HttpRequest {
        method: "POST",
        path: "/v1/events",
        authorization: Some(&auth),
        x_api_key: None,
        content_type: Some(ctype),
        content_encoding: Some("gzip"),
        body: Body::Base64(&gz),
        sender,
    };
    ingest.handle(req, chrono::Utc::now()).await
}

#[tokio::test]
async fn bare_events_as_ndjson_an_array_or_concatenated_objects_with_agent_headers() {
    if skip_without_localstack() {
        return;
    }
    use tv1_connector::ad::Sender;
    let mut env = Env::new().await;
    env.vars.insert("AD_MAX_EVENTS".into(), "3".into());
    let ingest = env.ingest();
    let t = now_text(chrono::Duration::zero());
    let line = |n: u32| serde_json::to_string(&native(n, &t)).unwrap();
    let ndjson = format!("{}\n{}\n", line(1), line(2));
    let who = Sender {
        agent_id: Some("dc07"),
        hostname: Some("DC07.corp.example"),
        version: Some("fluent-bit-3.2"),
        batch_id: Some("6f1d2c3a-0b4e-4c1f-9e7a-2b8d5f0a1c9e"),
        timezone: None,
    };
    let r = post_bare(
        &ingest,
        &env.key,
        "application/x-ndjson",
        ndjson.as_bytes(),
        who,
    )
    .await;
    assert_eq!(r.body["status"], "accepted", "{}", r.body);
    assert_eq!(r.body["batch_id"], "6f1d2c3a-0b4e-4c1f-9e7a-2b8d5f0a1c9e");
    assert!(
        env.keys()
            .await
            .iter()
            .any(|k| k.ends_with("/dc07~6f1d2c3a-0b4e-4c1f-9e7a-2b8d5f0a1c9e.jsonl.gz")),
        "landed under the agent and the Idempotency-Key"
    );
    let r = post_bare(
        &ingest,
        &env.key,
        "application/x-ndjson",
        ndjson.as_bytes(),
        who,
    )
    .await;
    assert_eq!(r.body["status"], "duplicate");
    // The same Idempotency-Key for other events: 409.
    let other = format!("{}\n", line(3));
    let r = post_bare(
        &ingest,
        &env.key,
        "application/x-ndjson",
        other.as_bytes(),
        who,
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("batch_id_conflict"))
    );
    // A bare array with no batch id: the body's hash is the id, so a resend is a duplicate.
    let anon = Sender {
        agent_id: Some("dc08"),
        ..Sender::default()
    };
    let array = format!("[{},{}]", line(4), line(5));
    let r = post_bare(
        &ingest,
        &env.key,
        "application/json",
        array.as_bytes(),
        anon,
    )
    .await;
    assert_eq!(r.body["status"], "accepted", "{}", r.body);
    assert_eq!(r.body["batch_id"].as_str().unwrap().len(), 64);
    let r = post_bare(
        &ingest,
        &env.key,
        "application/json",
        array.as_bytes(),
        anon,
    )
    .await;
    assert_eq!(r.body["status"], "duplicate");
    // Concatenated objects under application/json.
    let cat = format!("{}{}", line(6), line(7));
    let r = post_bare(&ingest, &env.key, "application/json", cat.as_bytes(), anon).await;
    assert_eq!(r.body["status"], "accepted", "{}", r.body);
    // Refusals speak the same language as the envelope's.
    let r = post_bare(
        &ingest,
        &env.key,
        "application/json",
        array.as_bytes(),
        Sender::default(),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("invalid_batch"))
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Agent-Id")
    );
    let four = format!("{}\n{}\n{}\n{}\n", line(8), line(9), line(10), line(11));
    let r = post_bare(
        &ingest,
        &env.key,
        "application/x-ndjson",
        four.as_bytes(),
        anon,
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    let bad = format!("{}\n{{\"event_id\":4624}}\n", line(12));
    let r = post_bare(
        &ingest,
        &env.key,
        "application/x-ndjson",
        bad.as_bytes(),
        anon,
    )
    .await;
    // One event without a time: the other is stored, it is quarantined and named.
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["quarantine"][0]["index"], 1);
    let r = post_bare(&ingest, &env.key, "text/plain", bad.as_bytes(), anon).await;
    assert_eq!(r.status, 415);
    // Seven events stored, each once; both agents listed with their headers.
    assert_eq!(env.lines().await.len(), 7, "1,2 + 4,5 + 6,7 + 12");
    assert_eq!(env.quarantined().await.len(), 1);
    let agents = get("/v1/agents", Some(&env.key)).send(&ingest).await;
    let a = &agents.body["agents"];
    assert_eq!(
        (
            a[0]["id"].as_str(),
            a[0]["hostname"].as_str(),
            a[0]["version"].as_str()
        ),
        (
            Some("dc07"),
            Some("DC07.corp.example"),
            Some("fluent-bit-3.2")
        )
    );
    assert_eq!(a[1]["id"], "dc08");
    assert_eq!(
        (
            a[1]["events_received"].as_u64(),
            a[1]["events_quarantined"].as_u64()
        ),
        (Some(6), Some(1)),
        "{a}"
    );
}

#[tokio::test]
async fn heartbeats_hidden_ids_and_a_broken_agent_record() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let ingest = env.ingest();
    let k = env.key.clone();
    // A first heartbeat is accepted; the same heartbeat again is a duplicate.
    let r = Post::json(&batch("dc01", "hb-1", vec![]), &k)
        .send(&ingest)
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("accepted")),
        "{}",
        r.body
    );
    let r = Post::json(&batch("dc01", "hb-1", vec![]), &k)
        .send(&ingest)
        .await;
    assert_eq!(r.body["status"], "duplicate", "{}", r.body);
    // An agent id Athena would hide (a leading `_` or `.`): its objects stay visible.
    let t = now_text(chrono::Duration::zero());
    for agent in ["_hidden", ".dot"] {
        let r = Post::json(&batch(agent, "b1", vec![native(1, &t)]), &k)
            .send(&ingest)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let key = r.body["keys"][0].as_str().unwrap();
        let name = key.rsplit('/').next().unwrap();
        assert!(!name.starts_with(['_', '.']), "{key}");
    }
    assert_eq!(env.lines().await.len(), 2);
    // One unreadable agent record is skipped and named; the others are listed.
    env.s3
        .put_object()
        .bucket(&env.bucket)
        .key("active-directory/_state/agents/broken.json")
        .body(b"{not json".to_vec().into())
        .send()
        .await
        .unwrap();
    let a = get("/v1/agents", Some(&k)).send(&ingest).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["count"], 3, "{}", a.body);
    assert_eq!(
        a.body["unreadable"],
        json!(["active-directory/_state/agents/broken.json"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bodies_under_one_batch_id_at_once_one_is_stored_and_the_409_is_true() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let (a, b) = (env.ingest(), env.ingest());
    let days = |from: i64, n: i64| -> Vec<Value> {
        (from..from + n)
            .map(|d| native(d as u32, &now_text(-chrono::Duration::days(d))))
            .collect()
    };
    let mut winners = Vec::new();
    for trial in 0..10 {
        let id = format!("race-{trial}");
        // Different events, one day in common: each body writes objects the other does not.
        let (one, two) = (
            batch("race", &id, [days(1, 1), days(10, 10)].concat()),
            batch("race", &id, [days(1, 1), days(30, 10)].concat()),
        );
        let (pa, pb) = (Post::json(&one, &env.key), Post::json(&two, &env.key));
        let (ra, rb) = tokio::join!(pa.send(&a), pb.send(&b));
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "{} / {}", ra.body, rb.body);
        let (won, lost) = if ra.status == 200 {
            (&ra, &one)
        } else {
            (&rb, &two)
        };
        let _ = lost;
        let landed: Vec<String> = env
            .keys()
            .await
            .into_iter()
            .filter(|k| k.contains("/_landing/") && k.ends_with(&format!("race~{id}.jsonl.gz")))
            .collect();
        assert_eq!(landed.len(), 1, "one landing object per batch: {landed:?}");
        winners.push((
            id,
            won.body["events"].as_u64().unwrap(),
            if ra.status == 200 { one } else { two },
        ));
    }
    // The lake holds each winner's events and nothing of the refused bodies.
    let lines = env.lines().await;
    for (id, events, body) in &winners {
        let stored: Vec<&Value> = lines
            .iter()
            .filter(|(_, l)| l["batch_id"] == id.as_str())
            .map(|(_, l)| &l["event"])
            .collect();
        assert_eq!(stored.len() as u64, *events, "{id}");
        for ev in body["events"].as_array().unwrap() {
            assert!(
                stored.contains(&ev),
                "{id}: {ev} of the stored body is missing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_a_new_batch_are_counted_once() {
    if skip_without_localstack() {
        return;
    }
    let env = Env::new().await;
    let instances: Vec<Ingest> = (0..8).map(|_| env.ingest()).collect();
    // Over 29 days: 29 objects, which the copies race to create.
    let events: Vec<Value> = (0..29)
        .map(|n| native(n, &now_text(-chrono::Duration::days(n as i64))))
        .collect();
    let post = Post::json(&batch("dc11", "copies-1", events), &env.key);
    let replies = futures_util::future::join_all(instances.iter().map(|i| post.send(i))).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(env.lines().await.len(), 29);
    let a = get("/v1/agents", Some(&env.key)).send(&instances[0]).await;
    let agent = &a.body["agents"][0];
    assert_eq!(
        (
            agent["events_received"].as_u64(),
            agent["batches_received"].as_u64()
        ),
        (Some(29), Some(1)),
        "{agent}"
    );
}
