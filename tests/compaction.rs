//! The compacted AD layout, exactly once: batches that land after their window was planned,
//! compactors racing each other, killed mid-window and paused past their window, a paused
//! `tv1 serve` whose landings end late. Every test ends with each event once in the lake and each
//! agent's counts exact.

use crate::common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tv1_connector::ad::{Body, HttpRequest, Ingest};

fn batch(agent: &str, id: &str, first: u32, n: u32) -> Value {
    let t = tv1_connector::timefmt::api_time(chrono::Utc::now());
    let events: Vec<Value> = (first..first + n)
        .map(|i| json!({"event_id": if i % 2 == 0 { 4624 } else { 4720 }, "time": t, "computer": agent, "record_id": i}))
        .collect();
    json!({"agent": {"id": agent}, "batch_id": id, "events": events})
}

fn post<'a>(key: &'a str, body: &'a str) -> HttpRequest<'a> {
    HttpRequest {
        method: "POST",
        path: "/v1/events",
        authorization: Some(key),
        x_api_key: None,
        content_type: Some("application/json"),
        content_encoding: None,
        body: Body::apigw(Some(body), false),
        sender: Default::default(),
    }
}

/// ad-ingest over `lake`, configured by `vars` (as [`ad_config`] reads them).
fn ingest_of(lake: &AdLake, vars: &[(&str, &str)]) -> Ingest {
    Ingest::new(
        ad_config(&lake.bucket, vars),
        lake.s3.clone(),
        lake.ssm.clone(),
    )
}

/// A batch of `n` events one day apart in turn over the ten days up to `now` (ten partitions
/// of one category), `record_id`s from `first`, each with 128 random hex digits (about as
/// compressible as ids).
fn ten_day_batch(
    agent: &str,
    id: &str,
    first: u32,
    n: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let t = now - chrono::Duration::days(i64::from(i % 10));
            json!({"event_id": 4624, "time": tv1_connector::timefmt::api_time(t),
                "computer": "DC1", "record_id": first + i, "note": rand_hex(64)})
        })
        .collect();
    json!({"agent": {"id": agent}, "batch_id": id, "events": events}).to_string()
}

/// Writes the batch marker that an attempt which claimed the batch `body` (an envelope) in
/// `window` leaves when it stops before landing the batch.
async fn claimed_marker(lake: &AdLake, body: &str, window: &str) {
    let v: Value = serde_json::from_str(body).unwrap();
    let (agent, id) = (
        v["agent"]["id"].as_str().unwrap(),
        v["batch_id"].as_str().unwrap(),
    );
    let sha = Ingest::offline(&[])
        .unwrap()
        .prepare(&post("", body), chrono::Utc::now())
        .unwrap()
        .body_sha256;
    let marker = json!({"status": "accepted", "batch_id": id, "events": v["events"].as_array().unwrap().len(),
        "keys": [], "received_at": window, "body_sha256": sha, "window": window});
    let key = format!("active-directory/_state/batches/{agent}/{id}.json");
    put_bytes(
        &lake.s3,
        &lake.bucket,
        &key,
        marker.to_string().into_bytes(),
    )
    .await;
}

/// `record_id`s in the lake, with how often each is there.
async fn stored(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<u64, usize> {
    count_records(lake_lines(s3, bucket).await)
}

fn count_records(lines: Vec<(String, Value)>) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for (_, l) in lines {
        *seen.entry(l["record_id"].as_u64().unwrap()).or_default() += 1;
    }
    seen
}

fn agent_record(list: &Value, id: &str) -> Value {
    list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no agent {id} in {list}"))
}

/// A batch whose landing ends after its window was sealed and planned without it (a function
/// paused between choosing the window and landing) is moved to an open window by its marker, and
/// compacted there once; the object it left in the old window is never compacted.
#[tokio::test]
async fn a_batch_landing_after_its_window_was_planned_moves_to_an_open_one() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    let vars: Vec<(&str, &str)> = vec![("API_KEY_PARAM", &lake.param)];
    let first = ingest_of(&lake, &vars);
    let auth = format!("Bearer {}", lake.key);
    let early = batch("dc01", "early", 0, 4).to_string();
    let r = first.handle(post(&auth, &early), chrono::Utc::now()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let early_window = r.body["window"].as_str().unwrap().to_owned();
    // Its window is sealed and planned (with the early batch only).
    let planned = compact_ad(&lake.s3, &lake.bucket, &vars).await;
    assert_eq!(planned.batches, 1, "{planned:?}");

    // A function that claimed the late batch in that window (its marker) and was paused before
    // landing it, as the marker of that attempt reads; the agent's retry, or the paused
    // function going on, lands it now.
    let late = batch("dc01", "late", 100, 6).to_string();
    claimed_marker(&lake, &late, &early_window).await;
    let paused = ingest_of(&lake, &vars);
    let r = paused.handle(post(&auth, &late), chrono::Utc::now()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "accepted");
    assert!(
        r.body["window"].as_str().unwrap() > early_window.as_str(),
        "moved to a window open when it landed: {}",
        r.body
    );
    let keys = bucket_keys(&lake.s3, &lake.bucket).await;
    let landed: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/_landing/") && k.ends_with("dc01~late.jsonl.gz"))
        .collect();
    assert_eq!(
        landed.len(),
        2,
        "the late object and the moved one: {landed:?}"
    );
    // A retry of it now is a duplicate, wherever it looks first.
    let r = paused.handle(post(&auth, &late), chrono::Utc::now()).await;
    assert_eq!(r.body["status"], "duplicate", "{}", r.body);

    let seen = stored(&lake.s3, &lake.bucket).await;
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    let list = first
        .handle(
            HttpRequest {
                method: "GET",
                path: "/v1/agents",
                ..post(&auth, "")
            },
            chrono::Utc::now(),
        )
        .await;
    let dc01 = agent_record(&list.body, "dc01");
    assert_eq!(
        (
            dc01["events_received"].as_u64(),
            dc01["batches_received"].as_u64()
        ),
        (Some(10), Some(2)),
        "{dc01}"
    );
}

/// Agents sending through a `tv1 serve` that is paused (SIGSTOP) at random points, while
/// `tv1 compact` processes race its own compactor and are killed at random points: each event is
/// in the lake once, and each agent's count is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_servers_and_killed_racing_compactors_store_each_event_once() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    let vars = [
        ("API_KEY_PARAM", lake.param.as_str()),
        ("BUCKET", lake.bucket.as_str()),
    ];
    let served = serve(&vars).await;
    let (url, key) = (served.url.clone(), lake.key.clone());
    // Four agents, each sending 20 batches of 10 events one after the other, a few hundred ms
    // apart, resending a batch until it is accepted (as agents do after a timeout or a 5xx).
    let senders: Vec<_> = (0..4)
        .map(|a| {
            let (url, key) = (url.clone(), key.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(3))
                    .build()
                    .unwrap();
                for b in 0..20u32 {
                    tokio::time::sleep(Duration::from_millis(rand::random_range(100..500))).await;
                    let first = a * 1000 + b * 10;
                    let body = batch(&format!("dc{a}"), &format!("b{b}"), first, 10).to_string();
                    loop {
                        let r = http
                            .post(format!("{url}/v1/events"))
                            .header("authorization", format!("Bearer {key}"))
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 200 => break,
                            Ok(r) => assert!(r.status().is_server_error(), "{}", r.status()),
                            Err(_) => {}
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect();
    let compact = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
            .arg("compact")
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let pid = served.child.id();
    let mut rounds = 0;
    while !senders.iter().all(|s| s.is_finished()) {
        rounds += 1;
        // Two compactors at once, one killed at a random point.
        let (mut a, mut b) = (compact(), compact());
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..700))).await;
        let _ = a.kill();
        // The server paused past its window and the settle time: what it lands when it goes on
        // lands late.
        signal(pid, "-STOP");
        tokio::time::sleep(Duration::from_millis(rand::random_range(500..3500))).await;
        signal(pid, "-CONT");
        let _ = (a.wait(), b.wait());
        tokio::time::sleep(Duration::from_millis(rand::random_range(100..800))).await;
        assert!(rounds < 200, "the agents never finished");
    }
    for s in senders {
        s.await.unwrap();
    }
    let seen = stored(&lake.s3, &lake.bucket).await;
    assert_eq!(seen.len(), 4 * 20 * 10, "every event stored");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let list = json_of(
        reqwest::Client::new()
            .get(format!("{url}/v1/agents"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for a in 0..4 {
        let rec = agent_record(&list, &format!("dc{a}"));
        assert_eq!(rec["events_received"], 200, "{rec}");
        assert_eq!(rec["batches_received"], 20, "{rec}");
    }
    let late = std::fs::read_to_string(&served.log)
        .unwrap()
        .matches("landing it in a newer one")
        .count();
    println!("{rounds} rounds; {late} batches landed late and moved");
}

/// A `tv1 serve` whose landing PUT is held (a slow S3 connection) until its window has been
/// sealed and planned without it: the late landing is found out, the batch moves to an open
/// window, and it is in the lake once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landing_held_past_its_window_moves_and_is_stored_once() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    // The first landing passes (compaction has begun when the second is held), the second is
    // held.
    let proxy = HoldingProxy::start(LOCALSTACK, 1).await;
    let vars = [
        ("API_KEY_PARAM", lake.param.as_str()),
        ("BUCKET", lake.bucket.as_str()),
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
    ];
    let served = serve(&vars).await;
    let first = reqwest::Client::new()
        .post(format!("{}/v1/events", served.url))
        .header("authorization", format!("Bearer {}", lake.key))
        .header("content-type", "application/json")
        .body(batch("dc01", "first", 100, 2).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let body = batch("dc01", "held", 0, 8).to_string();
    let (url, key) = (served.url.clone(), lake.key.clone());
    let request = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/events"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        json_of(r).await
    });
    wait_until(10, "the landing PUT to be held", async || {
        !proxy.held().is_empty()
    })
    .await;
    // Its window closes and is compacted without it.
    let summary = compact_ad(&lake.s3, &lake.bucket, &[]).await;
    assert!(summary.next.is_some(), "{summary:?}");
    proxy.release();
    let reply = request.await.unwrap();
    assert_eq!(reply["status"], "accepted", "{reply}");
    let held = &proxy.held()[0];
    let moved_to =
        tv1_connector::ad::landing::window_name(reply["window"].as_str().unwrap().parse().unwrap());
    assert!(!held.contains(&moved_to), "moved from {held} to {moved_to}");
    let log = std::fs::read_to_string(&served.log).unwrap();
    assert!(log.contains("landing it in a newer one"), "{log}");
    let seen = stored(&lake.s3, &lake.bucket).await;
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}

/// A retry of a batch whose first attempt claimed its id (the marker names a window) and died
/// before landing it, in a window before compaction began: that window never had a plan, so the
/// batch is not "stored" but lands now, and is in the lake once.
#[tokio::test]
async fn a_claimed_batch_from_before_compaction_began_lands_on_retry() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    let vars: Vec<(&str, &str)> = vec![("API_KEY_PARAM", &lake.param)];
    let ingest = ingest_of(&lake, &vars);
    let auth = format!("Bearer {}", lake.key);
    // Compaction begins with another batch.
    let other = batch("dc02", "other", 500, 3).to_string();
    assert_eq!(
        ingest
            .handle(post(&auth, &other), chrono::Utc::now())
            .await
            .status,
        200
    );
    compact_ad(&lake.s3, &lake.bucket, &vars).await;
    // The orphan's marker, as an attempt 30 s ago left it: claimed, never landed.
    let orphan = batch("dc01", "orphan", 0, 4).to_string();
    let then =
        tv1_connector::timefmt::floor_second(chrono::Utc::now()) - chrono::TimeDelta::seconds(30);
    claimed_marker(&lake, &orphan, &tv1_connector::timefmt::api_time(then)).await;
    let r = ingest
        .handle(post(&auth, &orphan), chrono::Utc::now())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "accepted", "{}", r.body);
    let seen = stored(&lake.s3, &lake.bucket).await;
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 500, 501, 502]
    );
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}

/// Windows of another length, once compaction has cut some: the compactor stops with an error
/// and ad-ingest answers 503, naming both settings, rather than land or compact batches on
/// another grid (whose windows the compaction would skip).
#[tokio::test]
async fn other_window_settings_are_refused_once_compaction_has_begun() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    let vars: Vec<(&str, &str)> = vec![("API_KEY_PARAM", &lake.param)];
    let auth = format!("Bearer {}", lake.key);
    let ingest = ingest_of(&lake, &vars);
    let body = batch("dc01", "b1", 0, 2).to_string();
    assert_eq!(
        ingest
            .handle(post(&auth, &body), chrono::Utc::now())
            .await
            .status,
        200
    );
    compact_ad(&lake.s3, &lake.bucket, &vars).await;

    let other: Vec<(&str, &str)> = vec![("API_KEY_PARAM", &lake.param), ("AD_WINDOW", "2s")];
    let e = tv1_connector::ad::Compactor::new(&ad_config(&lake.bucket, &other), lake.s3.clone())
        .run(None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("(2s/1s)") && e.to_string().contains("(1s/1s)"),
        "{e}"
    );
    let moved = ingest_of(&lake, &other);
    let body = batch("dc01", "b2", 10, 2).to_string();
    let r = moved.handle(post(&auth, &body), chrono::Utc::now()).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AD_WINDOW"),
        "{}",
        r.body
    );
    // Nothing of the refused batch landed; the first is in the lake once.
    let keys = bucket_keys(&lake.s3, &lake.bucket).await;
    assert!(!keys.iter().any(|k| k.contains("b2")), "{keys:?}");
    assert_eq!(stored(&lake.s3, &lake.bucket).await.len(), 2);
}

/// A window larger than the compactor's buffer (`AD_COMPACT_BUFFER_MIB=1`: half a MiB of
/// landed batches kept, half a MiB of open objects) is compacted all the same, in bounded
/// memory: batches past the buffer are read again, objects are closed sooner, and each event is
/// stored once. A redo of the window (the checkpoint rewound) by a compactor with a larger
/// buffer cuts in the same places, the plan's: every object is kept, none written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_larger_than_the_buffer_is_compacted_once_in_bounded_memory() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    let vars: Vec<(&str, &str)> = vec![
        ("API_KEY_PARAM", &lake.param),
        ("AD_COMPACT_BUFFER_MIB", "1"),
        ("AD_WINDOW", "20s"),
        ("AD_SETTLE", "1s"),
    ];
    let ingest = ingest_of(&lake, &vars);
    let auth = format!("Bearer {}", lake.key);
    let (batches, per_batch) = (8u32, 3000u32);
    let now = chrono::Utc::now();
    for b in 0..batches {
        let (agent, id) = (format!("dc{}", b % 2), format!("b{b}"));
        let body = ten_day_batch(&agent, &id, b * per_batch, per_batch, now);
        let r = ingest.handle(post(&auth, &body), chrono::Utc::now()).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let first = compact_ad(&lake.s3, &lake.bucket, &vars).await;
    assert_eq!(first.batches, u64::from(batches), "{first:?}");
    assert!(first.landing_reads > first.batches, "read again: {first:?}");
    // Ten partitions (a day each, one category), cut into more objects than that.
    assert!(first.objects > 10, "{first:?}");
    let seen = count_records(compacted_lines(&lake.s3, &lake.bucket).await);
    assert_eq!(seen.len(), (batches * per_batch) as usize);
    assert!(seen.values().all(|&n| n == 1));

    // The window again, from its plan.
    let key = format!(
        "active-directory/{}",
        tv1_connector::ad::landing::CHECKPOINT
    );
    let mut cp: Value =
        serde_json::from_slice(&object_bytes(&lake.s3, &lake.bucket, &key).await).unwrap();
    cp["next"] = cp["since"].clone();
    put_bytes(&lake.s3, &lake.bucket, &key, cp.to_string().into_bytes()).await;
    // By a compactor with another buffer: the plan's cut points hold.
    let mut other = vars.clone();
    other[1] = ("AD_COMPACT_BUFFER_MIB", "256");
    let redo = compact_ad(&lake.s3, &lake.bucket, &other).await;
    assert_eq!(
        (redo.objects, redo.kept_existing),
        (0, first.objects),
        "{redo:?}"
    );
    assert_eq!(
        count_records(compacted_lines(&lake.s3, &lake.bucket).await),
        seen
    );
    println!("{first:?}");
}

/// A landing object that is not whole (cut short here; a bug or a hand edit in the field) is
/// found before anything of its window is written, even when the window's objects are written
/// as they close (a 1 MiB buffer, and a first batch that fills it): the run fails naming the
/// object, and the window is left to compact once it is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landing_object_that_is_not_whole_stops_its_window_before_anything_is_written() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    let vars: Vec<(&str, &str)> = vec![
        ("API_KEY_PARAM", &lake.param),
        ("AD_COMPACT_BUFFER_MIB", "1"),
        ("AD_WINDOW", "20s"),
        ("AD_SETTLE", "1s"),
    ];
    let cfg = ad_config(&lake.bucket, &vars);
    let ingest = ingest_of(&lake, &vars);
    let auth = format!("Bearer {}", lake.key);
    // Both batches in one window: start with a fresh one if less than 10 s are left of this.
    let w = tv1_connector::ad::landing::Windows::new(cfg.window, cfg.settle);
    let end = w.start_of(chrono::Utc::now()) + chrono::Duration::seconds(20);
    if end - chrono::Utc::now() < chrono::Duration::seconds(10) {
        tokio::time::sleep((end - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    }
    let now = chrono::Utc::now();
    let mut windows = std::collections::BTreeSet::new();
    for (b, n) in [(0u32, 4000u32), (1, 10)] {
        let body = ten_day_batch("dc1", &format!("b{b}"), b * 10_000, n, now);
        let r = ingest.handle(post(&auth, &body), chrono::Utc::now()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        windows.insert(r.body["window"].as_str().unwrap().to_owned());
    }
    // The second batch's landing object loses its last lines.
    let keys = bucket_keys(&lake.s3, &lake.bucket).await;
    let cut = keys
        .iter()
        .find(|k| k.contains("/_landing/") && k.ends_with("dc1~b1.jsonl.gz"))
        .unwrap();
    let body = object_bytes(&lake.s3, &lake.bucket, cut).await;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&body[..]), &mut text)
        .unwrap();
    let short: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    put_bytes(&lake.s3, &lake.bucket, cut, gzip(short.as_bytes())).await;

    assert_eq!(windows.len(), 1, "{windows:?}");
    let last = windows.iter().next_back().unwrap().parse().unwrap();
    let closed = w.closed_at(last);
    tokio::time::sleep((closed - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    let err = tv1_connector::ad::Compactor::new(&cfg, lake.s3.clone())
        .run(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(cut.as_str()) && err.contains("inconsistent"),
        "{err}"
    );
    // Nothing of the cut batch's window is in the lake.
    let window_of_cut = cut.split('/').rev().nth(1).unwrap();
    let written: Vec<String> = bucket_keys(&lake.s3, &lake.bucket)
        .await
        .into_iter()
        .filter(|k| !k.contains("/_") && k.contains(window_of_cut))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}
