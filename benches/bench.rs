//! `make bench`: the figures of docs/benchmarks.md, each with its anchor. Needs LocalStack
//! (make bench starts it). Prints a Markdown table; never asserts on timings.
//!
//! Select with `cargo bench --bench bench -- <names>`: cpu, e2e, catchup, streams, ingest,
//! requests, worst, serve, coldstart.

use base64::Engine;
use chrono::{DateTime, Duration as D, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tv1_connector::ad::{Body, HttpRequest, Ingest};
use tv1_connector::audit::segment::{Assembler, Item, Limits};
use tv1_connector::audit::simulate::{
    Faults, Generate, GenerateAlerts, SimEntry, SimSettings, Simulator, generate, generate_alerts,
    generate_detections,
};
use tv1_connector::audit::stream::Stream;
use tv1_connector::audit::vision_one::Page;
use tv1_connector::config::IngestConfig;
use tv1_connector::lake::ocsf::Dataset;
use tv1_connector::lake::ocsf::writer::encode_object;

struct Row {
    bench: String,
    figure: String,
    anchor: String,
    ratio: String,
}

fn row(bench: &str, figure: String, anchor: String, ratio: String) -> Row {
    eprintln!("  {bench}: {figure} | {anchor} | {ratio}");
    Row {
        bench: bench.into(),
        figure,
        anchor,
        ratio,
    }
}

fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// User + system CPU seconds of a process (`self` or a pid).
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn aws_env() {
    for (k, v) in [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var_os(k).is_none() {
            // SAFETY: single-threaded at this point.
            unsafe { std::env::set_var(k, v) };
        }
    }
}

fn rand_id() -> String {
    hex::encode(rand::random::<[u8; 5]>())
}

/// `n` simulator entries over the week before `now` (rows 1 and 9 measure the same data).
fn a_week_of_entries(
    n: usize,
    now: chrono::DateTime<Utc>,
) -> Vec<tv1_connector::audit::simulate::SimEntry> {
    generate(&Generate {
        count: n,
        from: now - D::days(7),
        to: now - D::minutes(10),
        late_fraction: 0.0,
        ..Generate::default()
    })
}

/// 1. Vision One pages → gzip JSON Lines, in process, against `gzip -6` on the same JSONL.
fn bench_cpu(rows: &mut Vec<Row>) {
    let n = 200_000;
    let now = Utc::now();
    let entries = a_week_of_entries(n, now);
    let pages: Vec<Vec<u8>> = entries
        .chunks(200)
        .map(|c| {
            let items: Vec<&str> = c.iter().map(|e| e.json.as_str()).collect();
            format!(r#"{{"items":[{}],"nextLink":"https://api.xdr.trendmicro.com/v3.0/audit/logs?skipToken=abc"}}"#, items.join(",")).into_bytes()
        })
        .collect();
    let input: usize = pages.iter().map(Vec::len).sum();
    let limits = Limits {
        max_bytes: 64 << 20,
        max_records: 100_000,
    };
    let run = || {
        let mut asm = Assembler::new("p/", limits, now - D::days(8));
        let mut objects = Vec::new();
        for page in &pages {
            let page: Page = serde_json::from_slice(page).unwrap();
            for raw in page.items {
                let item = Item::parse(&raw).unwrap();
                let time = item.time.expect("generated entries have readable times");
                objects.extend(
                    asm.push(raw, item.hash, time)
                        .unwrap()
                        .into_iter()
                        .flat_map(|s| s.objects),
                );
            }
        }
        objects.extend(asm.finish(now).objects);
        objects
    };
    run(); // warm-up
    let mut best = f64::MAX;
    let mut objects = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        objects = run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mut jsonl = Vec::new();
    for o in &objects {
        flate2::read::GzDecoder::new(&o.body[..])
            .read_to_end(&mut jsonl)
            .unwrap();
    }
    let records: usize = objects.iter().map(|o| o.records).sum();
    assert_eq!(records, n);
    let path = std::env::temp_dir().join(format!("tv1-bench-{}.jsonl", rand_id()));
    std::fs::write(&path, &jsonl).unwrap();
    let mut gz_best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let st = std::process::Command::new("gzip")
            .args(["-6", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        gz_best = gz_best.min(t.elapsed().as_secs_f64());
    }
    std::fs::remove_file(&path).ok();
    let mb = jsonl.len() as f64 / 1e6;
    let ours = mb / best;
    let gzip = mb / gz_best;
    rows.push(row(
        "1. puller CPU path: pages → gzip JSONL (200k records, 1 core)",
        format!(
            "{:.0} records/s, {:.1} MB/s of JSONL ({:.1} MB/s of API pages)",
            n as f64 / best,
            ours,
            input as f64 / 1e6 / best
        ),
        format!("`gzip -6` on the same {mb:.0} MB of JSONL: {gzip:.1} MB/s"),
        format!("{:.2}× (target ≥ 0.9×)", ours / gzip),
    ));
}

/// Encodes each JSONL object as the OCSF output does: records/s, Parquet bytes, gzip bytes.
/// With `TV1_BENCH_PARQUET_DIR` set, the Parquet files are also written there, to be looked at
/// (e.g. DuckDB's `parquet_metadata()`: the bytes of each column).
fn ocsf_pass(
    dataset: Dataset,
    label: &str,
    objects: &[(String, bytes::Bytes)],
) -> (f64, usize, usize, usize) {
    let run = || {
        let mut out = (0, 0);
        for (key, body) in objects {
            for (_, _, rows, parquet) in encode_object(dataset, key, body).unwrap() {
                out.0 += rows;
                out.1 += parquet.len();
            }
        }
        out
    };
    if let Ok(dir) = std::env::var("TV1_BENCH_PARQUET_DIR") {
        let dir = std::path::Path::new(&dir).join(format!("{dataset:?}-{label}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (n, (key, body)) in objects.iter().enumerate() {
            for (class, _, _, parquet) in encode_object(dataset, key, body).unwrap() {
                std::fs::write(dir.join(format!("{n:05}-{}.parquet", class.uid)), parquet).unwrap();
            }
        }
    }
    run(); // warm-up
    let mut best = f64::MAX;
    let mut out = (0, 0);
    for _ in 0..3 {
        let t = Instant::now();
        out = run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gz: usize = objects.iter().map(|(_, b)| b.len()).sum();
    (out.0 as f64 / best, out.0, out.1, gz)
}

/// Row 9, the OCSF Parquet output (issue 10): the CPU work it adds per record, next to the
/// JSONL path on the same data, and its size as a ratio of gzip JSONL.
fn bench_ocsf(rows: &mut Vec<Row>) {
    let n = 200_000;
    let now = Utc::now();
    let entries = a_week_of_entries(n, now);
    let limits = Limits {
        max_bytes: 64 << 20,
        max_records: 100_000,
    };
    // The objects a run every five minutes writes: one per 5-minute segment (per hour within
    // it), as the scheduled puller leaves them.
    let t = Instant::now();
    let five = 300;
    let mut by_window: BTreeMap<i64, Vec<&_>> = BTreeMap::new();
    for e in &entries {
        let raw = serde_json::value::RawValue::from_string(e.json.clone()).unwrap();
        let time = Item::parse(&raw).unwrap().time.unwrap();
        by_window
            .entry(time.timestamp().div_euclid(five))
            .or_default()
            .push(e);
    }
    let mut objects = Vec::new();
    for (w, group) in &by_window {
        let from = DateTime::from_timestamp(w * five, 0).unwrap();
        let mut asm = Assembler::new("p/", limits, from);
        for e in group {
            let raw = serde_json::value::RawValue::from_string(e.json.clone()).unwrap();
            let item = Item::parse(&raw).unwrap();
            objects.extend(
                asm.push(raw, item.hash, item.time.unwrap())
                    .unwrap()
                    .into_iter()
                    .flat_map(|s| s.objects),
            );
        }
        objects.extend(asm.finish(from + D::seconds(five)).objects);
    }
    let jsonl_rate = n as f64 / t.elapsed().as_secs_f64();
    let objects: Vec<(String, bytes::Bytes)> =
        objects.into_iter().map(|o| (o.key, o.body)).collect();
    // Before: one Parquet object per class per segment object.
    let (_, _, per_segment, _) = ocsf_pass(Dataset::Audit, "segment", &objects);
    // Now: a period's objects together (a multi-member gzip body), as `ocsf_periods.rs` reads
    // them: a day (TV1_AUDIT_OCSF_PERIOD's default), and an hour (the alerts' default).
    let periods = |cut: fn(&str) -> usize| {
        let mut periods: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (key, body) in &objects {
            periods
                .entry(format!("{}pull.jsonl.gz", &key[..cut(key)]))
                .or_default()
                .extend_from_slice(body);
        }
        periods
            .into_iter()
            .map(|(k, b)| (k, bytes::Bytes::from(b)))
            .collect::<Vec<_>>()
    };
    let hours = periods(|k| k.rfind('/').unwrap() + 1);
    let (_, _, per_hour, _) = ocsf_pass(Dataset::Audit, "hour", &hours);
    let days = periods(|k| k.find("/hour=").unwrap() + 1);
    let (rate, records, parquet, gz) = ocsf_pass(Dataset::Audit, "day", &days);
    assert_eq!(records, n);
    rows.push(row(
        "9a. OCSF output, audit: 200k entries over a week as a 5-minute schedule writes them → OCSF Parquet (zstd) per day (`TV1_AUDIT_OCSF_PERIOD`), 1 core, in process",
        format!(
            "{rate:.0} records/s; {:.1} MB of Parquet for {:.1} MB of gzip JSONL ({} JSONL objects, {} days); per hour instead: {:.1} MB; one Parquet object per segment: {:.1} MB",
            parquet as f64 / 1e6,
            gz as f64 / 1e6,
            objects.len(),
            days.len(),
            per_hour as f64 / 1e6,
            per_segment as f64 / 1e6,
        ),
        format!("the JSONL path on the same entries: {jsonl_rate:.0} records/s"),
        format!(
            "Parquet = **{:.2}×** gzip JSONL in bytes (per hour: {:.2}×, per segment: {:.2}×); adds {:.1} µs per record",
            parquet as f64 / gz as f64,
            per_hour as f64 / gz as f64,
            per_segment as f64 / gz as f64,
            1e6 / rate
        ),
    ));
    // AD: the objects of one large Winlogbeat batch, as ad-ingest stores them.
    let events: Vec<Value> = (0..10_000).map(winlogbeat_event).collect();
    let ingest = Ingest::offline(&[
        ("AD_MAX_DECOMPRESSED_BYTES", "1000000000"),
        ("AD_MAX_EVENTS", "1000000"),
    ])
    .unwrap();
    let raw =
        serde_json::to_vec(&json!({"agent": {"id": "dc01"}, "batch_id": "b1", "events": events}))
            .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let req = HttpRequest {
        method: "POST",
        path: "/v1/events",
        authorization: None,
        x_api_key: None,
        content_type: Some("application/json"),
        content_encoding: Some("gzip"),
        body: Body::apigw(Some(&body), true),
        sender: Default::default(),
    };
    let t = Instant::now();
    let prepared = ingest.prepare(&req, Utc::now()).unwrap();
    let jsonl_rate = events.len() as f64 / t.elapsed().as_secs_f64();
    // The objects compaction makes of it (its window holding this one batch).
    let (_, objects) = tv1_connector::ad::compact::window_objects(
        "active-directory/",
        Utc::now(),
        &[&prepared.landing[..]],
        tv1_connector::ad::compact::Limits::for_buffer(256 << 20),
    )
    .unwrap();
    let objects: Vec<(String, bytes::Bytes)> =
        objects.into_iter().map(|o| (o.key, o.body)).collect();
    let (rate, records, parquet, gz) = ocsf_pass(Dataset::Ad, "window", &objects);
    assert_eq!(records, events.len());
    rows.push(row(
        "9b. OCSF output, AD: one batch of 10,000 Winlogbeat events (AD_MAX_EVENTS) (the objects its compaction writes) → OCSF Parquet, 1 core",
        format!(
            "{rate:.0} events/s; {:.1} MB of Parquet for {:.1} MB of gzip JSONL",
            parquet as f64 / 1e6,
            gz as f64 / 1e6
        ),
        format!("ad-ingest's own CPU work on the batch: {jsonl_rate:.0} events/s"),
        format!(
            "Parquet = **{:.2}×** gzip JSONL; the batch takes {:.0} ms more",
            parquet as f64 / gz as f64,
            events.len() as f64 / rate * 1000.0
        ),
    ));
}

struct Lake {
    s3: aws_sdk_s3::Client,
    ssm: aws_sdk_ssm::Client,
}

impl Lake {
    async fn new() -> Lake {
        aws_env();
        let sdk = tv1_connector::aws::load().await;
        Lake {
            s3: tv1_connector::aws::s3_client(&sdk),
            ssm: tv1_connector::aws::ssm_client(&sdk),
        }
    }
    async fn bucket(&self) -> String {
        let b = format!("tv1-bench-{}", rand_id());
        self.s3
            .create_bucket()
            .bucket(&b)
            .send()
            .await
            .expect("LocalStack on 127.0.0.1:4566 (make bench starts it)");
        b
    }
    async fn param(&self, value: &str) -> String {
        let name = format!("/tv1-bench/{}", rand_id());
        self.ssm
            .put_parameter()
            .name(&name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap();
        name
    }
}

async fn start_sim(token: &str) -> (Simulator, String) {
    let sim = Simulator::new(SimSettings {
        token: token.into(),
        skip_token_ttl: Duration::from_secs(600),
        end_inclusive: true,
        start_inclusive: true,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sim.clone().serve(listener));
    (sim, url)
}

/// Runs `tv1 <command>` under `/usr/bin/time`; returns (the JSON it prints, peak RSS KiB, wall
/// seconds).
async fn timed_tv1(command: &str, vars: &HashMap<&str, String>) -> (Value, u64, f64) {
    let t = Instant::now();
    let out = tokio::process::Command::new("/usr/bin/time")
        .args(["-f", "TV1BENCH %M"])
        .arg(env!("CARGO_BIN_EXE_tv1"))
        .arg(command)
        .envs(vars.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tv1 {command} failed: {stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("TV1BENCH "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (serde_json::from_slice(&out.stdout).unwrap(), rss, wall)
}

/// 2. End-to-end pull from the simulator into LocalStack S3, peak RSS by backlog size.
async fn bench_e2e(rows: &mut Vec<Row>, lake: &Lake) {
    let mut rss_all = Vec::new();
    for n in [20_000usize, 200_000, 1_000_000] {
        let token = format!("bench-{}", rand_id());
        let (sim, url) = start_sim(&token).await;
        let now = Utc::now();
        sim.set_entries(generate(&Generate {
            count: n,
            from: now - D::days(6),
            to: now - D::minutes(1),
            late_fraction: 0.0,
            ..Generate::default()
        }));
        let vars: HashMap<&str, String> = [
            ("TV1_BASE_URL", url),
            ("TV1_TOKEN_PARAM", lake.param(&token).await),
            ("BUCKET", lake.bucket().await),
            ("TV1_INITIAL_LOOKBACK", "7d".into()),
            ("TV1_MAX_WINDOW", "7d".into()),
            ("TV1_LAG", "1s".into()),
            ("TV1_RUN_TIMEOUT", "30m".into()),
        ]
        .into_iter()
        .collect();
        let (s, rss, wall) = timed_tv1("pull", &vars).await;
        assert_eq!(s["records"].as_u64(), Some(n as u64), "{s}");
        let puts = s["objects"].as_u64().unwrap() + s["checkpoint_writes"].as_u64().unwrap() + 1;
        rss_all.push(format!("{}k: {:.1} MB", n / 1000, rss as f64 / 1024.0));
        if n == 200_000 {
            rows.push(row(
                "2. end-to-end pull, simulator → LocalStack S3 (200k records, one run)",
                format!(
                    "{:.0} records/s; {} S3 PUTs ({} objects + {} checkpoint + 1 status); {} pages; {:.1} s",
                    n as f64 / wall,
                    puts,
                    s["objects"],
                    s["checkpoint_writes"],
                    s["pages"],
                    wall
                ),
                "200 records per request, 1 PUT per hour of data".into(),
                format!("{:.2} records per PUT-equivalent page", n as f64 / puts as f64 / 200.0),
            ));
        }
        drop(sim);
    }
    rows.push(row(
        "2b. peak RSS of `tv1 pull` by backlog size",
        rss_all.join(", "),
        "target ≤ 40 MB regardless of backlog".into(),
        "see figure".into(),
    ));
}

/// Catch-up: drain a 7-day backlog under the simulator's per-minute request limit, with one
/// query at a time and with concurrent slices.
async fn bench_catchup(rows: &mut Vec<Row>, lake: &Lake) {
    let (n, limit, latency_ms) = (48_000usize, 120u32, 800u64);
    let ceiling = limit as f64 * 200.0;
    for concurrency in [1, 4] {
        let token = format!("bench-{}", rand_id());
        let (sim, url) = start_sim(&token).await;
        let now = Utc::now();
        sim.set_entries(generate(&Generate {
            count: n,
            from: now - D::days(7),
            to: now - D::minutes(1),
            late_fraction: 0.0,
            ..Generate::default()
        }));
        sim.set_faults(Faults {
            rate_limit_per_minute: Some(limit),
            retry_after_secs: Some(1),
            delay_ms: latency_ms,
            ..Faults::default()
        });
        let vars: HashMap<&str, String> = [
            ("TV1_BASE_URL", url),
            ("TV1_TOKEN_PARAM", lake.param(&token).await),
            ("BUCKET", lake.bucket().await),
            ("TV1_INITIAL_LOOKBACK", "7d".into()),
            ("TV1_LAG", "1s".into()),
            ("TV1_RUN_TIMEOUT", "30m".into()),
            ("TV1_MAX_ATTEMPTS", "20".into()),
            ("TV1_FETCH_CONCURRENCY", concurrency.to_string()),
        ]
        .into_iter()
        .collect();
        let t = Instant::now();
        let (mut records, mut runs, mut pages) = (0, 0, 0);
        loop {
            let (s, _, _) = timed_tv1("pull", &vars).await;
            runs += 1;
            records += s["records"].as_u64().unwrap();
            pages += s["pages"].as_u64().unwrap();
            if s["lag_seconds"].as_i64().unwrap() < 120 {
                break;
            }
        }
        let minutes = t.elapsed().as_secs_f64() / 60.0;
        let r429 = sim.stats().by_status.get(&429).copied().unwrap_or(0);
        rows.push(row(
            &format!(
                "3. catch-up: 7-day backlog ({}k records) under {limit} requests/min, {latency_ms} ms API latency, TV1_FETCH_CONCURRENCY={concurrency}",
                n / 1000
            ),
            format!(
                "{:.0} records/min ({records} records, {pages} pages, {runs} runs of ≤ 24 h, {r429} × 429, {:.1} min)",
                records as f64 / minutes,
                minutes
            ),
            format!("rate-limit ceiling {ceiling:.0} records/min ({limit} × 200)"),
            format!("{:.2}×", records as f64 / minutes / ceiling),
        ));
    }
}

/// A tenant's data for `stream`: `per_day` items a day over `[from, to)` (alert versions whose
/// later states come after `to`, so every version is current when read).
fn stream_data(
    stream: Stream,
    per_day: usize,
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
) -> Vec<SimEntry> {
    let count = (per_day as f64 * (to - from).num_seconds() as f64 / 86_400.0) as usize;
    match stream {
        Stream::Audit => generate(&Generate {
            count,
            from,
            to,
            late_fraction: 0.0,
            ..Generate::default()
        }),
        Stream::Alerts => generate_alerts(&GenerateAlerts {
            count,
            from,
            to,
            change_after_secs: (400 * 86_400, 500 * 86_400),
            seed: 1,
        }),
        // Ingested up to an hour after detection, as Datadog's samples show minutes.
        Stream::Oat => generate_detections(count, from, to, 3600, 1),
    }
}

fn load(sim: &Simulator, stream: Stream, data: Vec<SimEntry>) {
    match stream {
        Stream::Audit => sim.set_entries(data),
        Stream::Alerts => sim.set_alert_versions(data),
        Stream::Oat => sim.set_detections(data),
    }
}

/// The items one page of `stream` holds: `TV1_PAGE_SIZE` (200) where the endpoint takes
/// `top`, the simulator's 100 for alerts (the real endpoint's page size is not documented).
fn page_items(stream: Stream) -> f64 {
    match stream {
        Stream::Alerts => 100.0,
        _ => 200.0,
    }
}

/// Row 10, catch-up of 30 days of alerts and OAT detections for a busy tenant: `tv1 pull` run
/// after run as the schedule would, under the same rate limit and latency as row 3.
async fn bench_stream_catchup(rows: &mut Vec<Row>, lake: &Lake) {
    let (limit, latency_ms) = (120u32, 800u64);
    for (stream, per_day) in [(Stream::Alerts, 1_000usize), (Stream::Oat, 4_000)] {
        let token = format!("bench-{}", rand_id());
        let (sim, url) = start_sim(&token).await;
        let now = Utc::now();
        let data = stream_data(stream, per_day, now - D::days(30), now - D::minutes(1));
        let n = data.iter().filter(|e| e.logged <= now).count();
        load(&sim, stream, data);
        sim.set_faults(Faults {
            rate_limit_per_minute: Some(limit),
            retry_after_secs: Some(1),
            delay_ms: latency_ms,
            ..Faults::default()
        });
        let vars: HashMap<&str, String> = [
            ("TV1_BASE_URL", url),
            ("TV1_TOKEN_PARAM", lake.param(&token).await),
            ("BUCKET", lake.bucket().await),
            ("TV1_STREAMS", stream.name().into()),
            ("TV1_INITIAL_LOOKBACK", "31d".into()),
            ("TV1_LAG", "1s".into()),
            ("TV1_RUN_TIMEOUT", "30m".into()),
            ("TV1_MAX_ATTEMPTS", "20".into()),
        ]
        .into_iter()
        .collect();
        let t = Instant::now();
        let (mut records, mut runs) = (0, 0);
        loop {
            let (s, _, _) = timed_tv1("pull", &vars).await;
            runs += 1;
            records += s["records"].as_u64().unwrap();
            if s["lag_seconds"].as_i64().unwrap() < 120 {
                break;
            }
        }
        assert_eq!(records, n as u64, "{stream}: every item once");
        let minutes = t.elapsed().as_secs_f64() / 60.0;
        let stats = sim.stats();
        let r429 = stats.by_status.get(&429).copied().unwrap_or(0);
        let ceiling = limit as f64 * page_items(stream);
        rows.push(row(
            &format!(
                "10. catch-up of 30 days of `{stream}` ({per_day}/day, {}k items) under {limit} requests/min, {latency_ms} ms API latency, default settings",
                n / 1000
            ),
            format!(
                "{:.0} items/min ({:.1} min, {runs} runs, {} requests, {r429} × 429)",
                records as f64 / minutes,
                minutes,
                stats.requests
            ),
            format!(
                "rate-limit ceiling {ceiling:.0} items/min ({limit} × {} a page)",
                page_items(stream)
            ),
            format!("**{:.2}×**", records as f64 / minutes / ceiling),
        ));
    }
}

/// Makes reconciliation start at `from` in the checkpoint of `prefix`, as if the runs that
/// pulled the time since had read it while it was young (steady state): a replay of old data
/// has its pull read settled time, which reconciliation rightly passes over.
async fn reconcile_from(lake: &Lake, bucket: &str, prefix: &str, from: chrono::DateTime<Utc>) {
    let key = format!("{prefix}_state/checkpoint.json");
    let got = lake
        .s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let mut cp: Value =
        serde_json::from_slice(&got.body.collect().await.unwrap().into_bytes()).unwrap();
    cp["reconcile"] =
        json!({"checked_to": tv1_connector::timefmt::api_time(from), "late_entries": 0});
    lake.s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(serde_json::to_vec(&cp).unwrap().into())
        .send()
        .await
        .unwrap();
}

/// One day of a tenant on the default schedule (a run every 5 minutes), replayed run by run in
/// process over data a day and more old (`TV1_MAX_WINDOW=5m`: one scheduled run's worth of
/// time per run), then reconciliation of that day as the schedule does it a horizon later.
/// Returns (pull requests, reconciliation requests, data PUTs, checkpoint PUTs, reconciliation
/// S3 GETs, ranges re-read).
async fn replay_day(lake: &Lake, stream: Stream, per_day: usize) -> (u64, u64, u64, u64, u64, u64) {
    let token = format!("bench-{}", rand_id());
    let (sim, url) = start_sim(&token).await;
    let now = Utc::now();
    let day = tv1_connector::timefmt::floor_hour(now) - D::hours(50);
    let data = stream_data(stream, per_day, day, day + D::days(1));
    // An alert's later states come a year on: only its first is served now.
    let n = data.iter().filter(|e| e.logged <= now).count() as u64;
    load(&sim, stream, data);
    let bucket = lake.bucket().await;
    let mut vars: HashMap<String, String> = [
        ("TV1_BASE_URL", url),
        ("TV1_TOKEN_PARAM", lake.param(&token).await),
        ("BUCKET", bucket.clone()),
        (
            "TV1_INITIAL_LOOKBACK",
            format!("{}s", (now - day).num_seconds()),
        ),
        ("TV1_MAX_WINDOW", "5m".into()),
        ("TV1_RUN_TIMEOUT", "60s".into()),
        ("TV1_RECONCILE_HORIZON", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cfg = tv1_connector::config::PullerConfig::for_stream(&vars, stream).unwrap();
    let prefix = cfg.prefix.clone();
    let puller = tv1_connector::audit::Puller::new(cfg, lake.s3.clone(), lake.ssm.clone());
    let (mut records, mut objects, mut cp_writes) = (0, 0, 0);
    for _ in 0..288 {
        let s = puller
            .run(tokio::time::Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
        records += s.records;
        objects += s.objects;
        cp_writes += s.checkpoint_writes;
    }
    assert_eq!(records, n, "{stream}: every item once");
    let pull = sim.stats().requests;
    if !stream.reconciles() {
        return (pull, 0, objects, cp_writes, 0, 0);
    }
    // The day's reconciliation, with the default horizon, as the schedule does it.
    vars.remove("TV1_RECONCILE_HORIZON");
    reconcile_from(lake, &bucket, &prefix, day).await;
    let cfg = tv1_connector::config::PullerConfig::for_stream(&vars, stream).unwrap();
    let puller = tv1_connector::audit::Puller::new(cfg, lake.s3.clone(), lake.ssm.clone());
    let (mut ranges, mut reads, mut pull_pages) = (0, 0, 0);
    for _ in 0..100 {
        let s = puller
            .run(tokio::time::Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
        cp_writes += s.checkpoint_writes;
        // These runs pull too (the next minutes of the day after): theirs are the pull's.
        pull_pages += s.pages;
        let Some(r) = &s.reconcile else { break };
        ranges += r.ranges as u64;
        reads += r.objects_read;
        if r.checked_to >= day + D::days(1) {
            break;
        }
    }
    let rec = sim.stats().requests - pull - pull_pages;
    (pull, rec, objects, cp_writes, reads, ranges)
}

/// Row 11, what each stream costs a day on the default schedule, reconciliation included.
async fn bench_stream_day(rows: &mut Vec<Row>, lake: &Lake) {
    for (stream, per_day) in [
        (Stream::Audit, 5_000usize),
        (Stream::Alerts, 300),
        (Stream::Oat, 5_000),
    ] {
        let (pull, rec, objects, cp_writes, reads, ranges) =
            replay_day(lake, stream, per_day).await;
        rows.push(row(
            &format!(
                "11. one day of `{stream}` on the default schedule (288 runs, defaults), a tenant with {per_day} items/day"
            ),
            format!(
                "**{} API requests** (pull {pull}, reconciliation {rec} in {ranges} ranges); S3: {objects} data PUTs, {cp_writes} checkpoint PUTs, {reads} reconciliation GETs",
                pull + rec
            ),
            "288 runs a day".into(),
            format!("{:.2} requests a run", (pull + rec) as f64 / 288.0),
        ));
    }
}

/// Reconciliation's API cost: one day of a tenant on the default schedule (a run every 5 min),
/// replayed run by run, then that day reconciled as the schedule does a horizon later. Counts
/// the pull's requests and reconciliation's separately.
async fn bench_reconcile(rows: &mut Vec<Row>, lake: &Lake) {
    for per_day in [50_000usize, 5_000] {
        let t = Instant::now();
        let (pull, rec, _, _, reads, ranges) = replay_day(lake, Stream::Audit, per_day).await;
        let secs = t.elapsed().as_secs_f64();
        rows.push(row(
            &format!(
                "8. reconciliation's API cost: a tenant with {}k entries/day, one day of scheduled runs (288, `TV1_RECONCILE_HORIZON=24h`, `TV1_RECONCILE_STEP=1h`), replayed in {secs:.0} s",
                per_day / 1000
            ),
            format!(
                "pull: {pull} requests; reconciliation: **{rec} requests** ({ranges} ranges re-read) and {reads} S3 GETs + {ranges} LISTs"
            ),
            format!("the pull's own {pull} requests"),
            format!("**{:.0} %**", rec as f64 * 100.0 / pull as f64),
        ));
    }
}

fn winlogbeat_event(i: usize) -> Value {
    let ids = [4624, 4625, 4634, 4662, 4720, 4728, 4769, 5136, 7045, 1102];
    let id = ids[i % ids.len()];
    json!({
        "@timestamp": format!("{}T{:02}:{:02}:{:02}.{:03}Z", (Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d"), (i / 3600) % 24, (i / 60) % 60, i % 60, i % 1000),
        "event": {"code": id.to_string(), "kind": "event", "provider": "Microsoft-Windows-Security-Auditing", "outcome": "success"},
        "host": {"name": format!("DC{:02}", i % 7), "hostname": format!("dc{:02}", i % 7), "os": {"family": "windows", "version": "10.0"}},
        "agent": {"type": "winlogbeat", "version": "8.15.0", "id": "7f3a1c2e-5d1b-4e0a-9c1d-1a2b3c4d5e6f"},
        "winlog": {
            "channel": "Security", "computer_name": format!("DC{:02}.corp.example", i % 7), "event_id": id.to_string(),
            "record_id": 1_000_000 + i, "provider_name": "Microsoft-Windows-Security-Auditing",
            "provider_guid": "{54849625-5478-4994-a5ba-3e3b0328c30d}", "task": "Logon", "keywords": ["Audit Success"],
            "process": {"pid": 780, "thread": {"id": 1000 + i % 64}},
            "event_data": {
                "SubjectUserSid": "S-1-5-18", "SubjectUserName": format!("DC{:02}$", i % 7), "SubjectDomainName": "CORP",
                "SubjectLogonId": "0x3e7", "TargetUserSid": format!("S-1-5-21-1004336348-1177238915-682003330-{}", 1000 + i % 5000),
                "TargetUserName": format!("user{}", i % 5000), "TargetDomainName": "CORP", "TargetLogonId": format!("0x{:x}", 0x3e7a1c + i),
                "LogonType": (i % 11).to_string(), "LogonProcessName": "Kerberos", "AuthenticationPackageName": "Kerberos",
                "WorkstationName": "-", "LogonGuid": format!("{{{:08x}-1e2f-4a5b-8c9d-0e1f2a3b4c5d}}", i),
                "TransmittedServices": "-", "LmPackageName": "-", "KeyLength": "0", "ProcessId": "0x0", "ProcessName": "-",
                "IpAddress": format!("10.{}.{}.{}", i % 256, (i / 256) % 256, i % 200), "IpPort": (49152 + i % 16000).to_string(),
                "ImpersonationLevel": "%%1833", "VirtualAccount": "%%1843", "ElevatedToken": "%%1842"
            }
        },
        "message": "An account was successfully logged on."
    })
}

/// 4. ad-ingest: one ~4.4 MB gzip batch of Winlogbeat events, in process.
async fn bench_ingest(rows: &mut Vec<Row>, lake: &Lake) {
    // Size the batch from a sample's compressed size per event, to ~5 MB of gzip.
    let sample: Vec<Value> = (0..5000).map(winlogbeat_event).collect();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&serde_json::to_vec(&sample).unwrap()).unwrap();
    let per_event = e.finish().unwrap().len() as f64 / 5000.0;
    // Just under AD_MAX_BODY_BYTES (4.5 MB), the most a binary body may be in Lambda's 6 MB.
    let events: Vec<Value> = (0..(4_400_000.0 / per_event) as usize)
        .map(winlogbeat_event)
        .collect();
    let n_events = events.len();
    let key = format!("bench-key-{}", rand_id());
    let bucket = lake.bucket().await;
    let param = lake.param(&key).await;
    let vars: HashMap<String, String> = [
        ("API_KEY_PARAM", param.as_str()),
        ("BUCKET", bucket.as_str()),
        ("AD_MAX_DECOMPRESSED_BYTES", "1000000000"),
        ("AD_MAX_EVENTS", "1000000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ingest = Ingest::new(
        IngestConfig::from_map(&vars).unwrap(),
        lake.s3.clone(),
        lake.ssm.clone(),
    );
    let iterations = 12;
    let bodies: Vec<(String, usize, usize)> = (0..iterations)
        .map(|i| {
            let raw = serde_json::to_vec(&json!({"agent": {"id": "dc01", "hostname": "DC01"}, "batch_id": format!("b{i}"), "events": events})).unwrap();
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&raw).unwrap();
            let gz = e.finish().unwrap();
            (base64::engine::general_purpose::STANDARD.encode(&gz), gz.len(), raw.len())
        })
        .collect();
    let auth = format!("Bearer {key}");
    fn req<'a>(auth: &'a str, body: &'a str) -> HttpRequest<'a> {
        HttpRequest {
            method: "POST",
            path: "/v1/events",
            authorization: Some(auth),
            x_api_key: None,
            content_type: Some("application/json"),
            content_encoding: Some("gzip"),
            body: Body::apigw(Some(body), true),
            sender: Default::default(),
        }
    }
    // Without S3: all the CPU work of a request.
    let _ = ingest
        .prepare(&req(&auth, &bodies[0].0), Utc::now())
        .unwrap();
    let (mut lat, cpu0) = (Vec::new(), cpu_seconds());
    for (b, _, _) in &bodies {
        let t = Instant::now();
        let p = ingest.prepare(&req(&auth, b), Utc::now()).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(p.events, n_events);
    }
    let cpu_ms = (cpu_seconds() - cpu0) * 1000.0 / iterations as f64;
    let (p50, p99) = (
        percentile(&mut lat.clone(), 0.5),
        percentile(&mut lat, 0.99),
    );
    // With the S3 writes (LocalStack on this machine).
    let mut lat_s3 = Vec::new();
    for (b, _, _) in &bodies {
        let t = Instant::now();
        let r = ingest.handle(req(&auth, b), Utc::now()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        lat_s3.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (q50, q99) = (
        percentile(&mut lat_s3.clone(), 0.5),
        percentile(&mut lat_s3, 0.99),
    );
    rows.push(row(
        &format!(
            "4. ad-ingest: {:.1} MB gzip batch ({:.0} MB JSON, {} Winlogbeat events), {iterations} batches",
            bodies[0].1 as f64 / 1e6,
            bodies[0].2 as f64 / 1e6,
            n_events
        ),
        format!(
            "{cpu_ms:.0} CPU ms/batch, {:.0} events/s per core; handler p50/p99 {p50:.0}/{p99:.0} ms without S3, {q50:.0}/{q99:.0} ms with S3 (LocalStack)",
            n_events as f64 / (cpu_ms / 1000.0)
        ),
        "API Gateway's 30 s integration timeout".into(),
        format!("{:.3} of it at p99 with S3", q99 / 30_000.0),
    ));
}

/// S3 requests a client sends, by kind (each attempt counts: S3 bills every one).
#[derive(Debug, Default)]
struct S3Requests {
    put: std::sync::atomic::AtomicU64,
    get: std::sync::atomic::AtomicU64,
    head: std::sync::atomic::AtomicU64,
    list: std::sync::atomic::AtomicU64,
    delete: std::sync::atomic::AtomicU64,
}

impl S3Requests {
    fn take(&self) -> [u64; 5] {
        use std::sync::atomic::Ordering::Relaxed;
        [&self.put, &self.get, &self.head, &self.list, &self.delete].map(|c| c.swap(0, Relaxed))
    }
}

#[derive(Debug, Clone)]
struct CountS3(std::sync::Arc<S3Requests>);

impl aws_sdk_s3::config::Intercept for CountS3 {
    fn name(&self) -> &'static str {
        "CountS3"
    }
    fn read_before_transmit(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use std::sync::atomic::Ordering::Relaxed;
        let r = ctx.request();
        let c = match (r.method(), r.uri().contains("list-type=")) {
            ("PUT", _) => &self.0.put,
            ("GET", true) => &self.0.list,
            ("GET", false) => &self.0.get,
            ("HEAD", _) => &self.0.head,
            ("DELETE", _) => &self.0.delete,
            _ => return Ok(()),
        };
        c.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Row 13, S3 requests and new objects per accepted ad-ingest batch (issue 20): batches of 1
/// (NXLog's `om_http` posts one event per request), 20 (a one-second flush of Fluent Bit or
/// Vector at 20 events/s) and 1,000 events over two categories (logon and account management),
/// from two agents, with the OCSF output off and on; counted by an interceptor on the S3 client,
/// for ad-ingest (per batch) and for the compaction of their windows (per batch read, and per
/// window), with 5-second windows so that the bench waits seconds, not minutes.
async fn bench_requests(rows: &mut Vec<Row>, lake: &Lake) {
    let counts = std::sync::Arc::new(S3Requests::default());
    let s3 = aws_sdk_s3::Client::from_conf(
        lake.s3
            .config()
            .to_builder()
            .interceptor(CountS3(counts.clone()))
            .build(),
    );
    let auth_key = format!("bench-key-{}", rand_id());
    let param = lake.param(&auth_key).await;
    // The reference deployment (docs/cost.md): 10 DCs flushing every second, 5-minute windows.
    let per_window = 10.0 * 300.0;
    for ocsf in ["off", "on"] {
        for size in [1usize, 20, 1000] {
            let bucket = lake.bucket().await;
            let vars: HashMap<String, String> = [
                ("API_KEY_PARAM", param.as_str()),
                ("BUCKET", bucket.as_str()),
                ("OCSF_OUTPUT", ocsf),
                ("OCSF_ACCOUNT_ID", "123456789012"),
                ("OCSF_REGION", "us-east-1"),
                ("AD_WINDOW", "5s"),
                ("AD_SETTLE", "1s"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let cfg = IngestConfig::from_map(&vars).unwrap();
            let ingest = Ingest::new(cfg.clone(), s3.clone(), lake.ssm.clone());
            let auth = format!("Bearer {auth_key}");
            let batch = |b: usize| {
                let events: Vec<Value> = (0..size)
                    .map(|i| winlogbeat_event(10 * (b * size + i) + if i % 2 == 0 { 0 } else { 4 }))
                    .collect();
                let agent = format!("dc0{}", b % 2);
                serde_json::to_string(&json!({"agent": {"id": agent, "hostname": agent}, "batch_id": format!("b{b}"), "events": events})).unwrap()
            };
            // Batch 0 warms up the key read, which is a one-off.
            let batches = 20;
            for b in 0..=batches {
                let body = batch(b);
                let r = ingest
                    .handle(
                        HttpRequest {
                            method: "POST",
                            path: "/v1/events",
                            authorization: Some(&auth),
                            x_api_key: None,
                            content_type: Some("application/json"),
                            content_encoding: None,
                            body: Body::Bytes(body.as_bytes()),
                            sender: Default::default(),
                        },
                        Utc::now(),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                if b == 0 {
                    counts.take();
                }
            }
            let ingest_counts = counts.take();
            // The compaction of their windows, once they have closed.
            tokio::time::sleep(Duration::from_secs(7)).await;
            let summary = tv1_connector::ad::Compactor::new(&cfg, s3.clone())
                .run(None)
                .await
                .unwrap();
            let compact_counts = counts.take();
            let keys: Vec<String> = {
                let mut keys = Vec::new();
                let mut pages = lake
                    .s3
                    .list_objects_v2()
                    .bucket(&bucket)
                    .into_paginator()
                    .send();
                while let Some(p) = pages.next().await {
                    keys.extend(
                        p.unwrap()
                            .contents()
                            .iter()
                            .filter_map(|o| o.key().map(str::to_owned)),
                    );
                }
                keys
            };
            let lake_objects = keys
                .iter()
                .filter(|k| {
                    (k.contains("/category=") || k.contains("/quarantine/"))
                        || k.ends_with(".parquet")
                })
                .count();
            // Batch 0's requests were not counted.
            let per = |n: u64| n as f64 / batches as f64;
            let [put, get, head, list, delete] = ingest_counts;
            let at_ingest = per(put + get + head + list + delete);
            let compact_total: u64 = compact_counts.iter().sum();
            // Compaction reads each batch once (a GET); the rest is per window.
            let read = summary.batches;
            let fixed = (compact_total - read) as f64 / summary.windows.max(1) as f64;
            let reference = at_ingest + 1.0 + fixed / per_window;
            rows.push(row(
                &format!("13. S3 requests per accepted AD batch of {size} events (two categories, two agents), `OCSF_OUTPUT={ocsf}`, landing + compaction"),
                format!(
                    "ad-ingest **{at_ingest:.1} a batch** ({:.1} PUT, {:.1} GET, {:.1} HEAD); compaction {compact_total} for {read} batches in {} windows ({} PUT, {} GET, {} HEAD, {} LIST) = 1 GET a batch + {fixed:.0} a non-empty window; {lake_objects} lake objects{} for {} batches",
                    per(put), per(get), per(head), summary.windows,
                    compact_counts[0], compact_counts[1], compact_counts[2], compact_counts[3],
                    if ocsf == "on" { " (JSONL and Parquet)" } else { "" },
                    batches + 1
                ),
                "goal (issue 20): ≤ 2 a batch at ingest; objects per window, not per batch".into(),
                format!(
                    "reference (3,000 batches a 5-min window): **{reference:.2} a batch** ({:.2} PUT), {:.1} per 1,000 events",
                    per(put) + (compact_counts[0] as f64 / summary.windows.max(1) as f64) / per_window,
                    reference * 1000.0 / size as f64
                ),
            ));
        }
    }
}

/// 13b. ad-compact's memory for one large window: peak RSS of `tv1 compact` by
/// `AD_COMPACT_BUFFER_MIB`, the same window compacted again each time (the checkpoint rewound:
/// the objects are kept, the work and the memory are the same).
async fn bench_compact(rows: &mut Vec<Row>, lake: &Lake) {
    let auth_key = format!("bench-key-{}", rand_id());
    let param = lake.param(&auth_key).await;
    let bucket = lake.bucket().await;
    let mut vars: HashMap<&str, String> = [
        ("API_KEY_PARAM", param.clone()),
        ("BUCKET", bucket.clone()),
        ("AD_WINDOW", "3m".to_owned()),
        ("AD_SETTLE", "1s".to_owned()),
        ("AD_MAX_EVENTS", "10000".to_owned()),
    ]
    .into_iter()
    .collect();
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let cfg = IngestConfig::from_map(&env).unwrap();
    let ingest = Ingest::new(cfg.clone(), lake.s3.clone(), lake.ssm.clone());
    let windows = tv1_connector::ad::landing::Windows::new(cfg.window, cfg.settle);
    // Every batch in one window: start with the next one.
    let next = windows.start_of(Utc::now()) + D::from_std(cfg.window).unwrap();
    tokio::time::sleep((next - Utc::now()).to_std().unwrap_or_default()).await;
    let batches = 200;
    let auth = format!("Bearer {auth_key}");
    let mut landed = 0usize;
    for b in 0..batches {
        let events: Vec<Value> = (0..10_000)
            .map(|i| winlogbeat_event(b * 10_000 + i))
            .collect();
        let raw = serde_json::to_vec(
            &json!({"agent": {"id": format!("dc{:02}", b % 10)}, "batch_id": format!("b{b}"), "events": events}),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let r = ingest
            .handle(
                HttpRequest {
                    method: "POST",
                    path: "/v1/events",
                    authorization: Some(&auth),
                    x_api_key: None,
                    content_type: Some("application/json"),
                    content_encoding: Some("gzip"),
                    body: Body::apigw(Some(&body), true),
                    sender: Default::default(),
                },
                Utc::now(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body["window"].as_str(),
            Some(tv1_connector::timefmt::api_time(next).as_str()),
            "the batches took longer than a window to land"
        );
    }
    let mut pages = lake
        .s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("{}_landing/", cfg.prefix))
        .into_paginator()
        .send();
    while let Some(p) = pages.next().await {
        for o in p.unwrap().contents() {
            landed += o.size().unwrap_or(0) as usize;
        }
    }
    let closed = windows.closed_at(next);
    tokio::time::sleep((closed - Utc::now()).to_std().unwrap_or_default()).await;
    let checkpoint = format!("{}{}", cfg.prefix, tv1_connector::ad::landing::CHECKPOINT);
    let mut figures = Vec::new();
    for (n, buffer) in [4096, 256, 32].into_iter().enumerate() {
        if n > 0 {
            // The same window again.
            let body = lake
                .s3
                .get_object()
                .bucket(&bucket)
                .key(&checkpoint)
                .send()
                .await
                .unwrap();
            let mut cp: Value =
                serde_json::from_slice(&body.body.collect().await.unwrap().into_bytes()).unwrap();
            cp["next"] = cp["since"].clone();
            lake.s3
                .put_object()
                .bucket(&bucket)
                .key(&checkpoint)
                .body(cp.to_string().into_bytes().into())
                .send()
                .await
                .unwrap();
        }
        vars.insert("AD_COMPACT_BUFFER_MIB", buffer.to_string());
        let (summary, rss, wall) = timed_tv1("compact", &vars).await;
        assert_eq!(summary["batches"], batches, "{summary}");
        figures.push(format!(
            "`{buffer}`: **{:.0} MB** peak RSS, {} GETs of batches, {} objects, {wall:.1} s",
            rss as f64 / 1024.0,
            summary["landing_reads"],
            summary["objects"].as_u64().unwrap() + summary["kept_existing"].as_u64().unwrap(),
        ));
    }
    rows.push(row(
        &format!("13b. ad-compact's memory: one window of {batches} batches of 10,000 Winlogbeat events ({:.0} MB landed, gzip) → `tv1 compact` by `AD_COMPACT_BUFFER_MIB`", landed as f64 / 1e6),
        figures.join("; "),
        "ad-compact's MemorySize: 1024 MB".into(),
        "memory set by the buffer, not by the window".into(),
    ));
}

/// 5. Cold start: process start → first poll of a fake Lambda runtime API; zip sizes.
async fn bench_coldstart(rows: &mut Vec<Row>) {
    let mut figures = Vec::new();
    for (bin, path, extra) in [
        (
            "audit-puller",
            env!("CARGO_BIN_EXE_audit-puller"),
            [("TV1_TOKEN_PARAM", "/t"), ("BUCKET", "b")],
        ),
        (
            "ad-ingest",
            env!("CARGO_BIN_EXE_ad-ingest"),
            [("API_KEY_PARAM", "/k"), ("BUCKET", "b")],
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..15 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let start = Instant::now();
            let mut child = lambda_process(path, bin, 256, &addr)
                .envs(extra)
                .env("AWS_REGION", "us-east-1")
                .spawn()
                .unwrap();
            let (mut sock, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
                .await
                .expect("first poll")
                .unwrap();
            let mut buf = [0u8; 256];
            let n = tokio::io::AsyncReadExt::read(&mut sock, &mut buf)
                .await
                .unwrap();
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            assert!(String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next"));
            times.push(elapsed);
            child.kill().await.ok();
        }
        let bytes = std::fs::read(path).unwrap();
        let zip = zipped_len(&bytes);
        figures.push(format!(
            "{bin}: {:.1} ms median ({:.1} p90), binary {:.1} MB, zip {:.1} MB",
            percentile(&mut times.clone(), 0.5),
            percentile(&mut times, 0.9),
            bytes.len() as f64 / 1e6,
            zip as f64 / 1e6
        ));
    }
    rows.push(row(
        "5. cold start: exec → first poll of the runtime API (fake, loopback)",
        figures.join("; "),
        "Lambda's own init for provided.al2023 is ~100 ms on top".into(),
        "see figure".into(),
    ));
}

/// A Lambda function binary set up as the Lambda service starts it, polling the runtime API at
/// `runtime_api`; output discarded, killed when dropped.
fn lambda_process(
    path: &str,
    name: &str,
    memory_mb: u32,
    runtime_api: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(path);
    cmd.env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs the `ad-ingest` function binary on one API Gateway event through a fake Lambda runtime
/// API; returns (status code, reply bytes, peak RSS KiB of the function process).
async fn invoke_ad_ingest(event: Value, vars: &HashMap<String, String>) -> (i64, usize, u64) {
    use axum::routing::{get, post};
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    let event = std::sync::Arc::new(std::sync::Mutex::new(Some(event.to_string())));
    let app = axum::Router::new()
        .route(
            "/2018-06-01/runtime/invocation/next",
            get(move || {
                let event = event.lock().unwrap().take();
                async move {
                    let Some(body) = event else {
                        // One invocation only: later polls wait until the process is stopped.
                        std::future::pending::<()>().await;
                        unreachable!()
                    };
                    let deadline = (Utc::now().timestamp_millis() + 29_000).to_string();
                    axum::response::Response::builder()
                        .header("lambda-runtime-aws-request-id", "bench-1")
                        .header("lambda-runtime-deadline-ms", deadline)
                        .header(
                            "lambda-runtime-invoked-function-arn",
                            "arn:aws:lambda:us-east-1:000000000000:function:ad-ingest",
                        )
                        .body(axum::body::Body::from(body))
                        .unwrap()
                }
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(move |body: String| {
                let tx = tx.clone();
                async move {
                    tx.send(body).await.ok();
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut child = lambda_process(env!("CARGO_BIN_EXE_ad-ingest"), "ad-ingest", 512, &addr)
        .envs(vars)
        .spawn()
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(120), rx.recv())
        .await
        .expect("a reply")
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id().unwrap())).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    child.kill().await.ok();
    let v: Value = serde_json::from_str(&reply).unwrap();
    (v["statusCode"].as_i64().unwrap_or(0), reply.len(), hwm)
}

/// 6. ad-ingest under the worst batch each cap allows: peak RSS of the function process.
async fn bench_ingest_worst(rows: &mut Vec<Row>, lake: &Lake) {
    let key = format!("bench-key-{}", rand_id());
    let vars: HashMap<String, String> = [
        ("API_KEY_PARAM", lake.param(&key).await),
        ("BUCKET", lake.bucket().await),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let gz = |raw: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    };
    let apigw = |body: String, binary: bool| {
        let mut headers =
            json!({"authorization": format!("Bearer {key}"), "content-type": "application/json"});
        if binary {
            headers["content-encoding"] = json!("gzip");
        }
        json!({
            "version": "2.0", "routeKey": "POST /v1/events", "rawPath": "/v1/events", "rawQueryString": "",
            "headers": headers,
            "requestContext": {"accountId": "0", "apiId": "bench", "domainName": "x", "domainPrefix": "x",
                "http": {"method": "POST", "path": "/v1/events", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
                "requestId": "r", "routeKey": "POST /v1/events", "stage": "$default", "time": "23/Nov/2026:10:00:00 +0000", "timeEpoch": 0},
            "body": body, "isBase64Encoded": binary
        })
    };
    let now = Utc::now();
    let ids = [4624, 4720, 4662, 1102, 1];
    // 10,000 events (the count cap) of ~6.5 KB, 64 MiB in all (the decompressed cap), over 400
    // (category, day) objects (the partition cap), compressible enough to fit 4.5 MB of gzip.
    let pad = "A".repeat(6_400);
    let events: Vec<Value> = (0..10_000)
        .map(|i| {
            let t = now - chrono::Duration::days((i / 5 % 80) as i64);
            json!({"event_id": ids[i % 5], "time": tv1_connector::timefmt::api_time(t), "computer": "DC01", "n": i, "pad": pad})
        })
        .collect();
    let raw = serde_json::to_vec(
        &json!({"agent": {"id": "worst"}, "batch_id": "caps", "events": events}),
    )
    .unwrap();
    let body = gz(&raw);
    // The same batch again with the OCSF output on (a fresh bucket: the first holds its marker).
    let mut with_ocsf = vars.clone();
    with_ocsf.insert("BUCKET".into(), lake.bucket().await);
    with_ocsf.insert("OCSF_OUTPUT".into(), "on".into());
    with_ocsf.insert("OCSF_ACCOUNT_ID".into(), "123456789012".into());
    let caps = format!(
        "every cap at once ({:.1} MB gzip → {:.1} MiB, 10,000 events, 400 objects)",
        body.len() as f64 / 1e6,
        raw.len() as f64 / 1048576.0
    );
    let mut figures = Vec::new();
    for (what, env) in [
        (caps, &vars),
        ("the same with `OCSF_OUTPUT=on`".to_owned(), &with_ocsf),
    ] {
        let event = apigw(
            base64::engine::general_purpose::STANDARD.encode(&body),
            true,
        );
        let (st, _, rss) = invoke_ad_ingest(event, env).await;
        figures.push(format!("{what}: HTTP {st}, {:.0} MB", rss as f64 / 1024.0));
    }
    // The same caps with nothing the lake can take (no computer name): every event goes to
    // the quarantine object, which holds them all (64 MiB of events in one object).
    let unreadable: Vec<Value> = (0..10_000)
        .map(|i| json!({"event_id": ids[i % 5], "time": tv1_connector::timefmt::api_time(now), "n": i, "pad": pad}))
        .collect();
    let raw_q = serde_json::to_vec(
        &json!({"agent": {"id": "worst"}, "batch_id": "quarantine", "events": unreadable}),
    )
    .unwrap();
    let (st, _, rss) = invoke_ad_ingest(
        apigw(
            base64::engine::general_purpose::STANDARD.encode(gz(&raw_q)),
            true,
        ),
        &vars,
    )
    .await;
    figures.push(format!(
        "10,000 events, {:.1} MiB, all quarantined: HTTP {st}, {:.0} MB",
        raw_q.len() as f64 / 1048576.0,
        rss as f64 / 1024.0
    ));
    // An archive: 10,000 events from seven years ago, over 400 (category, day) partitions.
    let archive: Vec<Value> = (0..10_000)
        .map(|i| {
            let t = now - chrono::Duration::days(7 * 365 + (i / 5 % 80) as i64);
            json!({"event_id": ids[i % 5], "time": tv1_connector::timefmt::api_time(t), "computer": "DC01", "n": i, "pad": pad})
        })
        .collect();
    let raw_a = serde_json::to_vec(
        &json!({"agent": {"id": "worst"}, "batch_id": "archive", "events": archive}),
    )
    .unwrap();
    let (st, _, rss) = invoke_ad_ingest(
        apigw(
            base64::engine::general_purpose::STANDARD.encode(gz(&raw_a)),
            true,
        ),
        &vars,
    )
    .await;
    figures.push(format!(
        "the caps' batch seven years old (400 partitions in {}): HTTP {st}, {:.0} MB",
        (now - chrono::Duration::days(7 * 365)).format("%Y"),
        rss as f64 / 1024.0
    ));
    // A gzip bomb: stopped at the 64 MiB cap.
    let bomb = gz(&vec![b' '; 256 << 20]);
    let (st, _, rss) = invoke_ad_ingest(
        apigw(
            base64::engine::general_purpose::STANDARD.encode(&bomb),
            true,
        ),
        &vars,
    )
    .await;
    figures.push(format!(
        "gzip bomb (256 MiB in {:.1} MB): HTTP {st}, {:.0} MB",
        bomb.len() as f64 / 1e6,
        rss as f64 / 1024.0
    ));
    // Millions of tiny elements: refused at the 10,001st.
    let mut zeros = br#"{"agent":{"id":"z"},"batch_id":"z","events":["#.to_vec();
    zeros.extend(std::iter::repeat_n(b"0,".as_slice(), 30_000_000).flatten());
    zeros.extend(b"0]}");
    let zbody = gz(&zeros);
    let (st, _, rss) = invoke_ad_ingest(
        apigw(
            base64::engine::general_purpose::STANDARD.encode(&zbody),
            true,
        ),
        &vars,
    )
    .await;
    figures.push(format!(
        "30 M-element array ({:.1} MB gzip): HTTP {st}, {:.0} MB",
        zbody.len() as f64 / 1e6,
        rss as f64 / 1024.0
    ));
    // The largest plain JSON body (3 MB, nearly all quotes and backslashes: the most escaping
    // API Gateway does to a valid JSON body), as 12 valid events under the 256 KiB event cap.
    let esc = "\\\"".repeat(3_000_000 / 4 / 12 - 40);
    let t = tv1_connector::timefmt::api_time(now);
    let events: Vec<Value> = (0..12)
        .map(|i| json!({"event_id": 4624, "time": t, "computer": "DC01", "record_id": i, "data": {"x": esc}}))
        .collect();
    let text =
        serde_json::to_string(&json!({"agent": {"id": "t"}, "batch_id": "t", "events": events}))
            .unwrap();
    let event = apigw(text.clone(), false);
    let event_len = event.to_string().len();
    let (st, reply, rss) = invoke_ad_ingest(event, &vars).await;
    figures.push(format!(
        "{:.1} MB plain JSON, all escapes: Lambda event {:.2} MB (limit 6.29), HTTP {st}, reply {reply} B, {:.0} MB",
        text.len() as f64 / 1e6, event_len as f64 / 1e6, rss as f64 / 1024.0
    ));
    rows.push(row(
        "6. ad-ingest, worst batch each cap allows: peak RSS of the function process",
        figures.join("; "),
        "the 512 MB function".into(),
        "see figure".into(),
    ));
}

/// A process's peak and current resident memory (KiB) and its open file descriptors.
fn process_figures(pid: u32) -> (u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (kb("VmHWM:"), kb("VmRSS:"), fds)
}

/// `tv1 serve` on a fresh bucket and key, answering: the process, its URL and the key.
async fn start_serve(lake: &Lake) -> (tokio::process::Child, String, String) {
    let key = format!("bench-key-{}", rand_id());
    let (bucket, param) = (lake.bucket().await, lake.param(&key).await);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = tokio::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("API_KEY_PARAM", &param)
        .env("BUCKET", &bucket)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    while http.get(format!("{url}/v1/health")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, url, key)
}

/// 7b. `tv1 serve` under clients without the key: 400 connections that never finish their
/// headers and 100 key-less uploads announcing 4 MB, while an agent sends 20 batches.
async fn bench_siege(rows: &mut Vec<Row>, lake: &Lake) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut server, url, key) = start_serve(lake).await;
    let http = reqwest::Client::new();
    let pid = server.id().unwrap();
    let addr = url.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..500 {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        let head = if i < 400 {
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: appl".to_owned()
        } else {
            "POST /services/collector/event HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n"
                .to_owned()
        };
        let _ = s.write_all(head.as_bytes()).await;
        slow.push(s);
    }
    let (_, _, fds_under_siege) = process_figures(pid);
    // The agent meanwhile: 20 batches of 100 events.
    let mut latencies = Vec::new();
    for b in 0..20 {
        let events: Vec<Value> = (0..100).map(|i| winlogbeat_event(b * 100 + i)).collect();
        let body = serde_json::to_vec(
            &json!({"agent": {"id": "dc01"}, "batch_id": format!("siege-{b}"), "events": events}),
        )
        .unwrap();
        let t = Instant::now();
        let r = http
            .post(format!("{url}/v1/events"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    // How long until the server has cut every slow client off.
    let mut cut_off = 0.0f64;
    for s in &mut slow {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(_)) => continue, // a 401 first, then the close
            }
        }
        cut_off = cut_off.max(started.elapsed().as_secs_f64());
    }
    let (hwm, rss, fds_after) = process_figures(pid);
    server.kill().await.ok();
    rows.push(row(
        "7b. `tv1 serve` under 400 slow-header clients and 100 key-less 4 MB uploads, an agent sending meanwhile",
        format!(
            "agent batches (100 events) {:.0} ms median, {:.0} ms worst of 20; {} fds open under siege, {} after; every slow client cut off within {:.1} s of connecting (header timeout 10 s); peak RSS {:.0} MB, {:.0} MB after",
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1],
            fds_under_siege,
            fds_after,
            cut_off,
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        ),
        "connections bounded at 512".into(),
        "see figure".into(),
    ));
}

/// 7. `tv1 serve`: the same Winlogbeat events as HEC bodies and as envelopes, CPU of the server.
async fn bench_serve(rows: &mut Vec<Row>, lake: &Lake) {
    let (mut server, url, key) = start_serve(lake).await;
    let http = reqwest::Client::new();
    let pid = server.id().unwrap().to_string();
    let gz = |raw: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    };
    let (batches, per_batch) = (20, 2_000);
    let mut figures = Vec::new();
    for form in ["hec", "envelope"] {
        let bodies: Vec<Vec<u8>> = (0..batches)
            .map(|b| {
                let events = (0..per_batch).map(|i| winlogbeat_event(b * per_batch + i));
                let raw = if form == "hec" {
                    events
                        .map(|e| format!("{}\n", json!({"time": Utc::now().timestamp(), "host": "DC01", "event": e})))
                        .collect::<String>()
                        .into_bytes()
                } else {
                    let events: Vec<Value> = events.collect();
                    serde_json::to_vec(&json!({"agent": {"id": "dc01"}, "batch_id": format!("{form}-{b}"), "events": events})).unwrap()
                };
                gz(&raw)
            })
            .collect();
        let (path, auth) = if form == "hec" {
            ("/services/collector/event", format!("Splunk {key}"))
        } else {
            ("/v1/events", format!("Bearer {key}"))
        };
        let cpu0 = cpu_seconds_of(&pid);
        let t = Instant::now();
        for body in bodies {
            let r = http
                .post(format!("{url}{path}"))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{form}");
        }
        let (cpu, wall) = (cpu_seconds_of(&pid) - cpu0, t.elapsed().as_secs_f64());
        let events = (batches * per_batch) as f64;
        figures.push((form, events / cpu, events / wall));
    }
    server.kill().await.ok();
    rows.push(row(
        "7. `tv1 serve`: 40,000 Winlogbeat events in 20 gzip requests per form, one at a time, S3 writes to LocalStack included",
        figures
            .iter()
            .map(|(f, per_cpu, per_wall)| format!("{f}: {per_cpu:.0} events per server CPU second ({per_wall:.0}/s wall)"))
            .collect::<Vec<_>>()
            .join("; "),
        "the envelope path on the same events".into(),
        format!("HEC at {:.2}× the envelope's events per CPU second", figures[0].1 / figures[1].1),
    ));
}

/// Size of `bootstrap` in a deflate-9 zip, as `cargo lambda build --output-format zip` makes.
fn zipped_len(bytes: &[u8]) -> usize {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap().len() + 2 * (30 + 46 + "bootstrap".len()) + 22
}

fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benchmarks run with `make bench` (cargo bench)");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let started = Instant::now();
    if want("cpu") {
        eprintln!("bench cpu...");
        bench_cpu(&mut rows);
    }
    if want("ocsf") {
        eprintln!("bench ocsf...");
        bench_ocsf(&mut rows);
    }
    rt.block_on(async {
        let lake = Lake::new().await;
        if want("e2e") {
            eprintln!("bench e2e...");
            bench_e2e(&mut rows, &lake).await;
        }
        if want("catchup") {
            eprintln!("bench catchup...");
            bench_catchup(&mut rows, &lake).await;
        }
        if want("streams") {
            eprintln!("bench streams...");
            bench_stream_day(&mut rows, &lake).await;
            bench_stream_catchup(&mut rows, &lake).await;
        }
        if want("reconcile") {
            eprintln!("bench reconcile...");
            bench_reconcile(&mut rows, &lake).await;
        }
        if want("ingest") {
            eprintln!("bench ingest...");
            bench_ingest(&mut rows, &lake).await;
        }
        if want("compact") {
            eprintln!("bench compact...");
            bench_compact(&mut rows, &lake).await;
        }
        if want("requests") {
            eprintln!("bench requests...");
            bench_requests(&mut rows, &lake).await;
        }
        if want("serve") {
            eprintln!("bench serve...");
            bench_serve(&mut rows, &lake).await;
        }
        if want("siege") {
            eprintln!("bench siege...");
            bench_siege(&mut rows, &lake).await;
        }
        if want("worst") {
            eprintln!("bench worst...");
            bench_ingest_worst(&mut rows, &lake).await;
        }
        if want("coldstart") {
            eprintln!("bench coldstart...");
            bench_coldstart(&mut rows).await;
        }
    });
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']))
        .unwrap_or("?");
    println!(
        "\nMachine: {model}, {} cores, {}; {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        os(),
        Utc::now().format("%Y-%m-%d")
    );
    println!(
        "Total bench time: {:.0} s\n",
        started.elapsed().as_secs_f64()
    );
    println!("| Benchmark | Figure | Anchor | Ratio |\n| --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.bench, r.figure, r.anchor, r.ratio
        );
    }
}

fn os() -> String {
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: u64 = mem
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!("{:.0} GiB RAM", kb as f64 / 1024.0 / 1024.0)
}
