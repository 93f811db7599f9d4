//! Test harness: LocalStack (real S3 + SSM, started by `make test`) and an in-process Vision One
//! simulator. Every test gets its own bucket, token parameter and simulator.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::time::Duration;
use tv1_connector::audit::Puller;
use tv1_connector::audit::simulate::{Generate, SimEntry, SimSettings, Simulator, generate};
use tv1_connector::config::PullerConfig;

pub const LOCALSTACK: &str = "http://127.0.0.1:4566";

/// The audit stream's checkpoint document.
pub const AUDIT_CHECKPOINT: &str = "vision-one/audit/_state/checkpoint.json";

/// The AD compaction windows of every test (and of every `tv1` a test starts): a second long
/// and a second to settle, so that a batch is compacted about three seconds after it landed.
pub const AD_TEST_WINDOWS: [(&str, &str); 2] = [("AD_WINDOW", "1s"), ("AD_SETTLE", "1s")];

/// Points the AWS SDK at LocalStack unless the caller already did; AD windows as
/// [`AD_TEST_WINDOWS`].
pub fn aws_env() {
    for (k, v) in [
        ("AWS_ENDPOINT_URL", LOCALSTACK),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .chain(AD_TEST_WINDOWS)
    {
        if std::env::var_os(k).is_none() {
            // SAFETY: set before any thread of this test reads the environment, same values for all.
            unsafe { std::env::set_var(k, v) };
        }
    }
}

/// A test bucket in LocalStack. Versioned, because LocalStack 4.13 overwrites an unversioned
/// object in place: a PUT cut off mid-body (which the crash tests do on purpose) leaves the live
/// object torn, and every later GET stalls. With versioning each PUT writes its own version,
/// which only becomes current when complete, as S3 itself behaves for any PUT.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket().bucket(bucket).send().await.unwrap_or_else(|e| {
        panic!("cannot create a bucket in LocalStack at {LOCALSTACK} ({e:?}); run the tests with `make test`, which starts it")
    });
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning on the test bucket");
}

/// A deadline `secs` from now, for the API calls a test makes.
pub fn deadline(secs: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(secs)
}

pub fn rand_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rand::random_range(0..16u8)))
        .collect()
}

pub struct TestEnv {
    pub sim: Simulator,
    pub sim_url: String,
    pub token: String,
    pub bucket: String,
    pub token_param: String,
    pub s3: aws_sdk_s3::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub vars: HashMap<String, String>,
    _server: tokio::task::JoinHandle<()>,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        Self::with_settings(|_| {}).await
    }

    pub async fn with_settings(tweak: impl FnOnce(&mut SimSettings)) -> TestEnv {
        aws_env();
        let sdk = tv1_connector::aws::load().await;
        let s3 = tv1_connector::aws::s3_client(&sdk);
        let ssm = tv1_connector::aws::ssm_client(&sdk);
        let id = rand_hex(10);
        let bucket = format!("tv1-test-{id}");
        create_bucket(&s3, &bucket).await;
        let token = format!("tok-{}", rand_hex(24));
        let token_param = format!("/tv1-test/{id}/token");
        put_param(&ssm, &token_param, &token).await;

        let mut settings = SimSettings {
            token: token.clone(),
            skip_token_ttl: Duration::from_secs(300),
            end_inclusive: true,
            start_inclusive: true,
        };
        tweak(&mut settings);
        let sim = Simulator::new(settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn({
            let sim = sim.clone();
            async move {
                sim.serve(listener).await.unwrap();
            }
        });
        let vars: HashMap<String, String> = [
            ("TV1_BASE_URL", sim_url.as_str()),
            ("TV1_TOKEN_PARAM", token_param.as_str()),
            ("BUCKET", bucket.as_str()),
            ("TV1_LAG", "1s"),
            ("TV1_INITIAL_LOOKBACK", "12h"),
            ("TV1_DEADLINE_MARGIN", "300ms"),
            ("TV1_RUN_TIMEOUT", "60s"),
            ("TV1_LEASE", "5s"),
            ("TV1_HTTP_TIMEOUT", "10s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        TestEnv {
            sim,
            sim_url,
            token,
            bucket,
            token_param,
            s3,
            ssm,
            vars,
            _server: server,
        }
    }

    pub fn set(&mut self, k: &str, v: &str) -> &mut Self {
        self.vars.insert(k.into(), v.into());
        self
    }

    pub fn config(&self) -> PullerConfig {
        PullerConfig::from_map(&self.vars).expect("test config is valid")
    }

    pub fn puller(&self) -> Puller {
        Puller::new(self.config(), self.s3.clone(), self.ssm.clone())
    }

    /// A puller of `stream` with the test's settings.
    pub fn puller_of(&self, stream: tv1_connector::audit::stream::Stream) -> Puller {
        let cfg = PullerConfig::for_stream(&self.vars, stream).expect("test config is valid");
        Puller::new(cfg, self.s3.clone(), self.ssm.clone())
    }

    /// Loads generated entries: `count` entries logged in `[now - back, now - fwd_gap)`.
    pub fn load(
        &self,
        count: usize,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tweak: impl FnOnce(&mut Generate),
    ) {
        let mut g = Generate {
            count,
            from,
            to,
            late_fraction: 0.0,
            seed: rand::random(),
            ..Generate::default()
        };
        tweak(&mut g);
        self.sim.set_entries(generate(&g));
    }

    /// Every data line in the bucket (state documents excluded), with its key.
    pub async fn lake(&self) -> Vec<(String, Value)> {
        lake_lines(&self.s3, &self.bucket).await
    }

    /// Replaces the audit checkpoint document with `cp` (a test standing in for the past).
    pub async fn put_checkpoint(&self, cp: &Value) {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(AUDIT_CHECKPOINT)
            .body(serde_json::to_vec(cp).unwrap().into())
            .send()
            .await
            .unwrap();
    }

    pub async fn checkpoint(&self) -> Option<Value> {
        let key = AUDIT_CHECKPOINT;
        let obj = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(serde_json::from_slice(&obj.body.collect().await.unwrap().into_bytes()).unwrap())
    }

    /// Two runs started `stagger` apart, each with its own puller (as two Lambda invocations).
    pub async fn two_runs_at_once(
        &self,
        stagger: Duration,
    ) -> [Result<tv1_connector::audit::RunSummary, tv1_connector::audit::PullError>; 2] {
        let (a, b) = (self.puller(), self.puller());
        let deadline = || tokio::time::Instant::now() + Duration::from_secs(60);
        // Boxed: two whole runs side by side overflow a test thread's stack in debug builds.
        let (ra, rb) = tokio::join!(Box::pin(a.run(deadline())), async {
            tokio::time::sleep(stagger).await;
            Box::pin(b.run(deadline())).await
        });
        [ra, rb]
    }

    /// A `tv1 pull` process with the test's settings overridden by `extra`, output discarded:
    /// for tests that kill, pause or race real processes.
    pub fn spawn_pull(&self, extra: &[(&str, &str)]) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
            .arg("pull")
            .envs(&self.vars)
            .envs(extra.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tv1 starts")
    }

    /// Asserts the lake holds each entry logged in `[from, to)` exactly once and nothing else.
    pub async fn assert_exactly_once(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
        let entries: Vec<SimEntry> = self
            .sim
            .visible_entries()
            .into_iter()
            .filter(|e| e.logged >= from && e.logged < to)
            .collect();
        let lake = self.lake().await;
        assert_exactly_once(&entries, &lake);
        lake.len()
    }
}

/// The bytes of the object `key` in `bucket` (it must exist).
pub async fn object_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bytes::Bytes {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
}

/// Puts `body` as the object `key` in `bucket`, over whatever is there (a test standing in for
/// the past, or for a hand edit).
pub async fn put_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

/// Every key in `bucket`.
pub async fn bucket_keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    while let Some(p) = pages.next().await {
        keys.extend(
            p.unwrap()
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    keys
}

/// Every data line in `bucket` (state documents and landed AD batches excluded), with its key,
/// once the AD batches landed so far are compacted ([`compact_landed`]); checks each object's
/// content headers on the way.
pub async fn lake_lines(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, Value)> {
    compact_landed(s3, bucket).await;
    compacted_lines(s3, bucket).await
}

/// The lines of the AD lake objects compacted so far (for a test that compacts with its own
/// window settings).
pub async fn compacted_lines(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, Value)> {
    jsonl_lines(s3, bucket, |k| {
        !k.contains("/_state/")
            && !k.contains("/_landing/")
            && !k.contains("/quarantine/")
            && k.ends_with(".jsonl.gz")
    })
    .await
}

/// The lines of the AD quarantine objects, once the batches landed so far are compacted.
pub async fn quarantine_lines(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, Value)> {
    compact_landed(s3, bucket).await;
    jsonl_lines(s3, bucket, |k| k.contains("/quarantine/")).await
}

/// The AD configuration of a test's compactor: `bucket`, [`AD_TEST_WINDOWS`], then `vars`.
pub fn ad_config(bucket: &str, vars: &[(&str, &str)]) -> tv1_connector::config::IngestConfig {
    let env: HashMap<String, String> = [("API_KEY_PARAM", "/unused"), ("BUCKET", bucket)]
        .into_iter()
        .chain(AD_TEST_WINDOWS)
        .chain(vars.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    tv1_connector::config::IngestConfig::from_map(&env).unwrap()
}

/// Waits until the window open now has closed, then compacts (a compactor configured by
/// [`ad_config`]): every batch landed before the call is then in the lake.
pub async fn compact_ad(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    vars: &[(&str, &str)],
) -> tv1_connector::ad::CompactSummary {
    let cfg = ad_config(bucket, vars);
    let windows = tv1_connector::ad::landing::Windows::new(cfg.window, cfg.settle);
    let now = Utc::now();
    let closed = windows.closed_at(windows.start_of(now));
    tokio::time::sleep((closed - now).to_std().unwrap_or_default()).await;
    tv1_connector::ad::Compactor::new(&cfg, s3.clone())
        .run(None)
        .await
        .unwrap()
}

/// Compacts the AD batches landed in `bucket` so far (default prefix, no OCSF output; a test of
/// the OCSF output compacts with its own configuration first), if there are any.
pub async fn compact_landed(s3: &aws_sdk_s3::Client, bucket: &str) {
    let landed = bucket_keys(s3, bucket)
        .await
        .into_iter()
        .any(|k| k.starts_with("active-directory/_landing/"));
    if landed {
        compact_ad(s3, bucket, &[]).await;
    }
}

async fn jsonl_lines(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for key in bucket_keys(s3, bucket)
        .await
        .into_iter()
        .filter(|k| keep(k))
    {
        let obj = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(obj.content_type(), Some("application/x-ndjson"), "{key}");
        assert_eq!(obj.content_encoding(), Some("gzip"), "{key}");
        let body = obj.body.collect().await.unwrap().into_bytes();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines() {
            let value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{key}: bad line {line}: {e}"));
            out.push((key.clone(), value));
        }
    }
    out
}

pub async fn put_param(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .expect("SSM put-parameter in LocalStack");
}

/// Canonical text of a JSON value with the connector's `_` fields removed.
pub fn source_form(v: &Value) -> String {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !k.starts_with('_'));
    }
    canonical(&v)
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
            let parts: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The multiset of source entries equals the multiset of lake lines (minus `_` fields), every
/// `_id` is unique, and every line sits in the partition of its own hour.
pub fn assert_exactly_once(entries: &[SimEntry], lake: &[(String, Value)]) {
    let mut want: HashMap<String, i64> = HashMap::new();
    for e in entries {
        *want
            .entry(source_form(&serde_json::from_str(&e.json).unwrap()))
            .or_default() += 1;
    }
    let mut got: HashMap<String, i64> = HashMap::new();
    let mut ids = HashSet::new();
    for (key, line) in lake {
        *got.entry(source_form(line)).or_default() += 1;
        let id = line["_id"]
            .as_str()
            .expect("every line has an _id")
            .to_owned();
        assert!(ids.insert(id.clone()), "duplicate _id {id} in {key}");
        if key.contains("/_unreadable/") {
            assert!(line["_time_error"].is_string(), "{key}");
            continue;
        }
        // An audit entry's time, an alert version's, or a detection's.
        let time = line["loggedDateTime"]
            .as_str()
            .or(line["updatedDateTime"].as_str())
            .or(line["ingestedDateTime"].as_str())
            .expect("a time field");
        let t = tv1_connector::timefmt::parse_api_time(time).unwrap();
        assert!(
            key.contains(&t.format("/dt=%Y-%m-%d/hour=%H/").to_string()),
            "{key} holds an entry logged at {t}"
        );
    }
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(*k).copied().unwrap_or(0) < **n)
        .map(|(k, _)| k.clone())
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k).copied().unwrap_or(0) < **n)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "lake has {} lines for {} entries; {} missing (e.g. {:?}), {} extra/duplicated (e.g. {:?})",
        lake.len(),
        entries.len(),
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
}

/// A run that did nothing because another held or took the checkpoint.
pub fn lost(r: &Result<tv1_connector::audit::RunSummary, tv1_connector::audit::PullError>) -> bool {
    use tv1_connector::audit::{Outcome, PullError};
    use tv1_connector::lake::state::StateError;
    matches!(r, Err(PullError::State(StateError::LostRace)))
        || matches!(r, Ok(s) if s.outcome == Outcome::Skipped)
}

pub fn now_s() -> DateTime<Utc> {
    tv1_connector::timefmt::floor_second(Utc::now())
}

/// An HTTP proxy in front of LocalStack that holds back data-object PUTs (keys under `dt=`, and
/// landed AD batches under `_landing/`) after the first `pass` of them, until [`HoldingProxy::release`]: a stalled PUT, under the
/// test's control. Held requests are forwarded from their own task, so they reach S3 even if
/// the client that sent them has gone.
pub struct HoldingProxy {
    pub url: String,
    open: tokio::sync::watch::Sender<bool>,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    data_puts: usize,
    held: Vec<String>,
    /// `(path, status)` of every held request once forwarded.
    released: Vec<(String, u16)>,
}

impl HoldingProxy {
    pub async fn start(upstream: &str, pass: usize) -> HoldingProxy {
        use axum::extract::Request;
        let (open, gate) = tokio::sync::watch::channel(false);
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let http = reqwest::Client::new();
        let upstream = upstream.to_owned();
        let st = state.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let (http, upstream, st, mut gate) =
                (http.clone(), upstream.clone(), st.clone(), gate.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 512 << 20).await.unwrap();
                let path = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let data =
                    path.contains("/dt=") || path.contains("/dt%3D") || path.contains("/_landing/");
                let hold = parts.method == "PUT" && data && {
                    let mut s = st.lock().unwrap();
                    s.data_puts += 1;
                    let hold = s.data_puts > pass && !*gate.borrow();
                    if hold {
                        s.held.push(path.clone());
                    }
                    hold
                };
                if hold {
                    let _ = gate.wait_for(|open| *open).await;
                }
                let mut headers = parts.headers.clone();
                for h in [
                    "host",
                    "content-length",
                    "transfer-encoding",
                    "expect",
                    "connection",
                ] {
                    headers.remove(h);
                }
                let forward = http
                    .request(parts.method.clone(), format!("{upstream}{path}"))
                    .headers(headers)
                    .body(body)
                    .send();
                let (st2, path2) = (st.clone(), path.clone());
                let resp = tokio::spawn(async move {
                    let resp = forward.await.unwrap();
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let bytes = resp.bytes().await.unwrap();
                    if hold {
                        st2.lock().unwrap().released.push((path2, status.as_u16()));
                    }
                    (status, headers, bytes)
                })
                .await
                .unwrap();
                let mut out = axum::response::Response::new(axum::body::Body::from(resp.2));
                *out.status_mut() = resp.0;
                for (k, v) in resp.1.iter() {
                    if !["transfer-encoding", "connection", "content-length"].contains(&k.as_str())
                    {
                        out.headers_mut().insert(k.clone(), v.clone());
                    }
                }
                out
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        HoldingProxy { url, open, state }
    }

    /// Paths of the PUTs held so far.
    pub fn held(&self) -> Vec<String> {
        self.state.lock().unwrap().held.clone()
    }

    /// Lets held PUTs (and all later ones) through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// `(path, status)` of held PUTs that have been forwarded.
    pub fn released(&self) -> Vec<(String, u16)> {
        self.state.lock().unwrap().released.clone()
    }
}

/// Sends `signal` (e.g. `-STOP`, `-CONT`, `-KILL`) to a process.
pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// Polls `f` every 20 ms until it is true; panics after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `tv1 serve` process, stopped with SIGTERM when dropped.
pub struct Served {
    pub child: std::process::Child,
    pub url: String,
    pub log: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tv1 serve` over plain HTTP on 127.0.0.1.
pub async fn serve(vars: &[(&str, &str)]) -> Served {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    spawn_serve(&[], port, vars, url, reqwest::Client::new()).await
}

/// `tv1 serve` over HTTPS on 127.0.0.1 with the certificate in `cert` and `key`, its health
/// checked by a client that trusts `ca`.
pub async fn serve_tls(vars: &[(&str, &str)], cert: &Path, key: &Path, ca: &TestCa) -> Served {
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let args = [
        "--tls-cert".to_owned(),
        cert.display().to_string(),
        "--tls-key".to_owned(),
        key.display().to_string(),
    ];
    spawn_serve(&args, port, vars, url, ca.client()).await
}

async fn spawn_serve(
    args: &[String],
    port: u16,
    vars: &[(&str, &str)],
    url: String,
    http: reqwest::Client,
) -> Served {
    let log = std::env::temp_dir().join(format!("tv1-serve-{}.log", rand_hex(8)));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(30, "tv1 serve to answer /v1/health", async || {
        http.get(format!("{url}/v1/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    Served { child, url, log }
}

/// A certificate authority for the TLS tests, and the server certificates it signs for
/// 127.0.0.1.
pub struct TestCa {
    /// The authority's certificate, PEM: what clients trust.
    pub pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tv1 test CA");
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        TestCa {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost named `name`: (certificate PEM, key
    /// PEM, certificate DER).
    pub fn issue(&self, name: &str) -> (String, String, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A client that trusts this authority only, and records the certificate it was shown.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()])
            .tls_info(true)
            .build()
            .unwrap()
    }
}

/// A fresh bucket and an ad-ingest API key (SSM parameter) in LocalStack.
pub struct AdLake {
    pub s3: aws_sdk_s3::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub bucket: String,
    pub param: String,
    pub key: String,
}

pub async fn ad_lake() -> AdLake {
    aws_env();
    let sdk = tv1_connector::aws::load().await;
    let (s3, ssm) = (
        tv1_connector::aws::s3_client(&sdk),
        tv1_connector::aws::ssm_client(&sdk),
    );
    let id = rand_hex(10);
    let bucket = format!("tv1-ad-{id}");
    create_bucket(&s3, &bucket).await;
    let param = format!("/tv1-test/{id}/api-key");
    let key = format!("key-{}", rand_hex(32));
    put_param(&ssm, &param, &key).await;
    AdLake {
        s3,
        ssm,
        bucket,
        param,
        key,
    }
}

/// A bucket and an API key in LocalStack, and `tv1 serve` on them.
pub async fn lake_and_server() -> (aws_sdk_s3::Client, String, String, Served) {
    let lake = ad_lake().await;
    let served = serve(&[("API_KEY_PARAM", &lake.param), ("BUCKET", &lake.bucket)]).await;
    (lake.s3, lake.bucket, lake.key, served)
}

/// Runs `tools/ocsf/validate.py` (the vendored OCSF 1.1.0 definitions) over `events`: (all
/// valid, its report).
pub fn ocsf_validate(events: &[Value]) -> (bool, String) {
    let file = std::env::temp_dir().join(format!("tv1-ocsf-{}.jsonl", rand_hex(8)));
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new("python3")
        .arg(format!(
            "{}/tools/ocsf/validate.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(&file)
        .output()
        .expect("python3 runs the OCSF validator");
    let _ = std::fs::remove_file(&file);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One row of the OCSF Parquet output as DuckDB reads it back (`tools/ocsf/readback.py`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct OcsfRow {
    pub source: String,
    pub region: Value,
    #[serde(rename = "accountId")]
    pub account_id: Value,
    #[serde(rename = "eventDay")]
    pub event_day: Value,
    pub file: String,
    pub event: Value,
}

/// Every Parquet object under `prefix` of `bucket`, copied to a local directory and read back
/// by DuckDB with hive partitioning, as Athena would.
pub async fn ocsf_rows(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<OcsfRow> {
    let dir = std::env::temp_dir().join(format!("tv1-ocsf-read-{}", rand_hex(8)));
    for key in bucket_keys(s3, bucket).await {
        let Some(rel) = key.strip_prefix(prefix).filter(|k| k.ends_with(".parquet")) else {
            continue;
        };
        let obj = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            obj.content_type(),
            Some("application/vnd.apache.parquet"),
            "{key}"
        );
        let body = obj.body.collect().await.unwrap().into_bytes();
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    if !dir.exists() {
        return Vec::new();
    }
    let python = format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(&python)
        .arg(format!(
            "{}/tools/ocsf/readback.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{python} runs DuckDB ({e}); `make test` installs it"));
    assert!(
        out.status.success(),
        "readback failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks what every reader of the output relies on: each object holds one class, the one its
/// source is named for; partitions name the region, the account and the event's own day; rows
/// of an object are sorted by time; and every event is valid OCSF 1.1.0.
pub fn assert_ocsf_layout(
    rows: &[OcsfRow],
    dataset: tv1_connector::lake::ocsf::Dataset,
    region: &str,
    account: &str,
) {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for r in rows {
        let uid = r.event["class_uid"].as_u64().unwrap();
        let class = dataset
            .classes()
            .iter()
            .find(|c| u64::from(c.uid) == uid)
            .unwrap_or_else(|| panic!("class {uid} is not one of the dataset's"));
        assert_eq!(r.source, dataset.source(*class), "{}", r.file);
        assert_eq!(r.region, region);
        assert_eq!(r.account_id.to_string().trim_matches('"'), account);
        let time = r.event["time"].as_i64().unwrap();
        let day = DateTime::from_timestamp_millis(time)
            .unwrap()
            .format("%Y%m%d")
            .to_string();
        assert_eq!(r.event_day.to_string().trim_matches('"'), day, "{}", r.file);
        let prev = last.insert(r.file.as_str(), time);
        assert!(
            prev.is_none_or(|p| p <= time),
            "{} is not sorted by time",
            r.file
        );
    }
    let events: Vec<Value> = rows.iter().map(|r| r.event.clone()).collect();
    let (ok, report) = ocsf_validate(&events);
    assert!(
        ok,
        "{}",
        report.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// Switches the OCSF output on for `env`, into a bucket of its own (created): returns it.
pub async fn ocsf_on(env: &mut TestEnv, account: &str, region: &str) -> String {
    let bucket = format!("{}-ocsf", env.bucket);
    create_bucket(&env.s3, &bucket).await;
    env.set("OCSF_OUTPUT", "on")
        .set("OCSF_ACCOUNT_ID", account)
        .set("OCSF_BUCKET", &bucket)
        .set("AWS_REGION", region);
    bucket
}

/// The OCSF rows of `dataset` in `bucket` (prefix `ext/`), after checking that each stored line
/// of `lake` has exactly one of them (`metadata.uid` is the line's `_id`) and that they are laid
/// out, sorted and valid as [`assert_ocsf_layout`] says.
pub async fn assert_one_ocsf_row_per_line(
    env: &TestEnv,
    bucket: &str,
    lake: &[(String, Value)],
    dataset: tv1_connector::lake::ocsf::Dataset,
    region: &str,
    account: &str,
) -> Vec<OcsfRow> {
    let rows = ocsf_rows(&env.s3, bucket, "ext/").await;
    // The pull's objects are in the OCSF output once their hour is (`ocsf_to`, the first hour
    // that is not); late objects and backfill parts have their own.
    let first = &lake.first().expect("lines").0;
    let prefix = first[..first.find("dt=").expect("a partition")].to_owned();
    let cp = object_bytes(
        &env.s3,
        &env.bucket,
        &format!("{prefix}_state/checkpoint.json"),
    )
    .await;
    let cp: Value = serde_json::from_slice(&cp).unwrap();
    let ocsf_to: DateTime<Utc> = cp["ocsf_to"].as_str().expect("ocsf_to").parse().unwrap();
    let covered = |key: &str| {
        let name = key.rsplit('/').next().unwrap();
        name.starts_with("late_")
            || name.starts_with("backfill_")
            || tv1_connector::audit::segment::hour_of_partition(&prefix, key)
                .is_some_and(|h| h < ocsf_to)
    };
    let mut jsonl: HashMap<String, usize> = HashMap::new();
    for (_, l) in lake.iter().filter(|(k, _)| covered(k)) {
        *jsonl
            .entry(l["_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // Not vacuous: lines the output covers are there (how many depends on the time of day the
    // test runs at: the hour in progress is not covered).
    assert!(
        !jsonl.is_empty(),
        "no line in an hour the OCSF output covers (ocsf_to {ocsf_to}, {} lines)",
        lake.len()
    );
    let mut ocsf: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        *ocsf
            .entry(r.event["metadata"]["uid"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let doubled: Vec<_> = ocsf.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "OCSF rows twice: {doubled:?}");
    let missing = jsonl.keys().filter(|k| !ocsf.contains_key(*k)).count();
    let extra = ocsf.keys().filter(|k| !jsonl.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "JSONL lines without OCSF rows, rows without lines"
    );
    assert_ocsf_layout(&rows, dataset, region, account);
    rows
}

/// An hour that is whole, committed and reconcilable with a 1 h horizon, and an environment
/// whose first run starts just before it (S3's clock may be a second ahead of the test's).
pub fn two_hours_back(env: &mut TestEnv) -> DateTime<Utc> {
    let now = now_s();
    let hour = tv1_connector::timefmt::floor_hour(now) - chrono::Duration::hours(2);
    let lookback = format!("{}s", (now - hour).num_seconds() + 30);
    env.set("TV1_INITIAL_LOOKBACK", &lookback);
    hour
}

/// Runs as a scheduler would, at most `runs` times: a run that skips (a dead run's lease still
/// holds) or fails (an S3 hiccup) is followed by another, and so is a complete one while `more`
/// says it left work. Returns the summaries of the complete runs.
pub async fn run_as_scheduled(
    env: &TestEnv,
    runs: usize,
    more: impl Fn(&tv1_connector::audit::RunSummary) -> bool,
) -> Vec<tv1_connector::audit::RunSummary> {
    // Boxed: a whole run's future is large, and debug builds run tests on small stacks.
    Box::pin(run_puller_as_scheduled(env.puller(), runs, more)).await
}

/// [`run_as_scheduled`] with puller `p` (another stream's, say).
pub async fn run_puller_as_scheduled(
    p: Puller,
    runs: usize,
    more: impl Fn(&tv1_connector::audit::RunSummary) -> bool,
) -> Vec<tv1_connector::audit::RunSummary> {
    use tv1_connector::audit::Outcome;
    let mut failures = 0;
    let mut complete = Vec::new();
    for _ in 0..runs {
        match Box::pin(p.run(deadline(60))).await {
            Ok(s) if s.outcome == Outcome::Complete || s.outcome == Outcome::UpToDate => {
                let again = more(&s);
                complete.push(s);
                if !again {
                    return complete;
                }
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                failures += 1;
                assert!(failures < 5, "runs keep failing: {e}");
                eprintln!("run failed, retrying as the next scheduled run would: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    panic!("no run finished the work in {runs} runs")
}

/// Runs as a scheduler would until a run completes with nothing left for reconciliation.
/// Returns the summaries of the runs that did work.
pub async fn run_until_settled(env: &TestEnv) -> Vec<tv1_connector::audit::RunSummary> {
    run_as_scheduled(env, 300, |s| {
        s.reconcile
            .as_ref()
            .is_some_and(|r| r.stopped_early.is_some() || r.recovered.is_some())
    })
    .await
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A sample from `events/ad/` moved from 2026-11-21 to yesterday (ad-ingest accepts events up
/// to a year old): dates in text and HEC's epoch `time`s alike.
pub fn sample_moved_to_yesterday(name: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/events/ad/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let written = chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let shift = (yesterday - written).num_seconds();
    let mut out = text.replace("2026-11-21", &yesterday.format("%Y-%m-%d").to_string());
    for key in ["\"time\":", "\"date\":"] {
        let mut moved = String::new();
        let mut rest = out.as_str();
        while let Some(at) = rest.find(key) {
            let (head, tail) = rest.split_at(at + key.len());
            moved.push_str(head);
            let end = tail
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(tail.len());
            match tail[..end].parse::<f64>() {
                Ok(t) => moved.push_str(&format!("{:.3}", t + shift as f64)),
                Err(_) => moved.push_str(&tail[..end]),
            }
            rest = &tail[end..];
        }
        moved.push_str(rest);
        out = moved;
    }
    out
}

/// A response's JSON body.
pub async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// Whether a test that needs LocalStack must skip: LocalStack does not answer on
/// 127.0.0.1:4566 and `make test` (which sets `TV1_REQUIRE_LOCALSTACK`) did not ask for it.
/// Says so on the terminal (past the test harness's capture), so plain `cargo test` reports
/// what it did not run.
pub fn skip_without_localstack() -> bool {
    use std::io::Write;
    let addr = "127.0.0.1:4566".parse().expect("an address");
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
        return false;
    }
    assert!(
        std::env::var_os("TV1_REQUIRE_LOCALSTACK").is_none(),
        "LocalStack is not running on {LOCALSTACK} and TV1_REQUIRE_LOCALSTACK is set (`make test` starts it)"
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs LocalStack on {LOCALSTACK} (`make test` starts it)"
    );
    true
}

/// `entries` with the picks of `late` served only a year after their time (as if Vision One
/// had not served them yet); the rest as they are.
pub fn served_late(
    entries: &[SimEntry],
    mut late: impl FnMut(usize, &SimEntry) -> bool,
) -> Vec<SimEntry> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| SimEntry {
            visible_at: if late(i, e) {
                e.logged + chrono::Duration::days(365)
            } else {
                e.logged
            },
            ..e.clone()
        })
        .collect()
}

/// `tv1 pull` processes on a slow API (30 ± 30 ms a page), each SIGKILLed at a random point
/// (0.1 to 2.5 s in), `times` times; then the killed runs' leases (`TV1_LEASE` 2 s) run out.
pub async fn kill_pulls_on_a_slow_api(env: &TestEnv, times: usize) {
    env.sim.set_faults(tv1_connector::audit::simulate::Faults {
        delay_ms: 30,
        delay_jitter_ms: 30,
        ..Default::default()
    });
    for _ in 0..times {
        let mut child = env.spawn_pull(&[]);
        tokio::time::sleep(Duration::from_millis(rand::random_range(100..2500))).await;
        child.kill().unwrap(); // SIGKILL: no clean-up of any kind.
        child.wait().unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.sim.set_faults(Default::default());
}

/// Starts `tv1 pull` (the streams of `env`) with its third object PUT held in a proxy (two go
/// through), and pauses it (SIGSTOP) once that PUT is held, for 3 s: past a `TV1_LEASE` of 2 s.
/// `held` runs while the PUT is held and the run not yet paused. Returns the proxy and the
/// paused process, for [`a_paused_run_is_refused_and_stops`].
pub async fn a_pull_paused_past_its_lease(
    env: &TestEnv,
    held: impl AsyncFnOnce(&HoldingProxy),
) -> (HoldingProxy, std::process::Child) {
    let proxy = HoldingProxy::start(LOCALSTACK, 2).await;
    let paused = env.spawn_pull(&[
        ("AWS_ENDPOINT_URL", &proxy.url),
        ("TV1_OBJECT_MAX_RECORDS", "250"),
        ("TV1_FETCH_CONCURRENCY", "1"),
    ]);
    wait_until(30, "a held PUT", async || !proxy.held().is_empty()).await;
    held(&proxy).await;
    // Paused (laptop sleep, a stalled PUT...) past its lease.
    signal(paused.id(), "-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    (proxy, paused)
}

/// Lets the PUT `proxy` held for the `paused` run through once that run has been taken over:
/// S3 refuses it (412), and the run, continued, stops with an error (it lost the checkpoint).
pub async fn a_paused_run_is_refused_and_stops(proxy: &HoldingProxy, paused: std::process::Child) {
    proxy.release();
    wait_until(30, "the late PUT", async || !proxy.released().is_empty()).await;
    let (path, status) = proxy.released()[0].clone();
    assert_eq!(
        status, 412,
        "the paused run's PUT of {path} is refused by S3"
    );
    signal(paused.id(), "-CONT");
    let mut paused = paused;
    let exit = tokio::task::spawn_blocking(move || paused.wait().unwrap())
        .await
        .unwrap();
    assert!(
        !exit.success(),
        "the paused run stops: it lost the checkpoint"
    );
}

/// One request of a `.http` file (`tests/field-cases/`, `tests/corpus/`): `#` comment lines,
/// the request line, headers, a blank line, the body; `###` between requests.
pub struct HttpFileRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpFileRequest {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The requests of a `.http` file.
pub fn http_file(text: &str) -> Vec<HttpFileRequest> {
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for l in text.lines() {
        if l.starts_with("###") {
            blocks.push(Vec::new());
        } else {
            blocks.last_mut().unwrap().push(l);
        }
    }
    blocks
        .into_iter()
        .filter(|b| {
            b.iter()
                .any(|l| !l.starts_with('#') && !l.trim().is_empty())
        })
        .map(|block| {
            let mut lines = block
                .into_iter()
                .skip_while(|l| l.starts_with('#') || l.trim().is_empty());
            let request_line = lines.next().expect("request line");
            let (method, path) = request_line.split_once(' ').expect("METHOD /path");
            let mut headers = Vec::new();
            for l in lines.by_ref() {
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').expect("header");
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            let body: Vec<&str> = lines.collect();
            HttpFileRequest {
                method: method.into(),
                path: path.trim().into(),
                headers,
                body: body.join("\n").trim_end_matches('\n').to_owned(),
            }
        })
        .collect()
}
