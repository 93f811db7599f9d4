//! Real forwarding agents against `tv1 serve` + LocalStack: syslog-ng's `http()` destination
//! (Debian) posting NDJSON to `/v1/events`, and Splunk's own JavaScript HEC library
//! (`splunk-logging`, npm) posting to `/services/collector/event/1.0`.
//!
//! `make agents` installs both; without them these tests say they are skipped, unless
//! `TV1_REQUIRE_AGENTS` is set (CI), when they fail instead.

use crate::common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Whether `what` is installed; when not, skips (or fails under `TV1_REQUIRE_AGENTS`).
fn present(what: &str, ok: bool) -> bool {
    if !ok {
        assert!(
            std::env::var_os("TV1_REQUIRE_AGENTS").is_none(),
            "{what} is not installed and TV1_REQUIRE_AGENTS is set: run `make agents`"
        );
        eprintln!("SKIPPED: {what} is not installed; `make agents` installs it");
    }
    ok
}

/// Record ids in the lake, by how often each appears.
async fn record_ids(s3: &aws_sdk_s3::Client, bucket: &str) -> HashMap<u64, usize> {
    let mut ids = HashMap::new();
    for (_, line) in lake_lines(s3, bucket).await {
        *ids.entry(line["record_id"].as_u64().unwrap()).or_default() += 1;
    }
    ids
}

/// Waits up to 60 s for `n` distinct records in the lake; fails with the agent's log and the
/// server's when they do not arrive.
async fn wait_for_records(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    n: usize,
    agent_log: &Path,
    served: &Served,
) {
    let all_in = async || record_ids(s3, bucket).await.len() == n;
    if tokio::time::timeout(Duration::from_secs(60), async {
        while !all_in().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_err()
    {
        let log = std::fs::read_to_string(agent_log).unwrap_or_default();
        let server = std::fs::read_to_string(&served.log).unwrap_or_default();
        panic!(
            "{} of {n} events in S3 after 60 s\nagent:\n{log}\nserver:\n{server}",
            record_ids(s3, bucket).await.len()
        );
    }
}

async fn agents(url: &str, key: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/agents"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// syslog-ng's `http()` destination with its defaults, the options a user sets for this
/// endpoint, and with `ca` (HTTPS) the authority it verifies the server against.
fn syslog_ng_conf(dir: &Path, url: &str, key: &str, agent: &str, ca: Option<&Path>) -> PathBuf {
    let conf = dir.join(format!("{agent}.conf"));
    let tls = ca
        .map(|ca| format!("tls(ca-file(\"{}\") peer-verify(yes))", ca.display()))
        .unwrap_or_default();
    let text = format!(
        r#"@version: 3.38
options {{ stats-freq(0); }};
source s_in {{ file("{input}" follow-freq(0.1) flags(no-parse)); }};
destination d_tv1 {{
  http(
    url("{url}/v1/events")
    method("POST")
    headers("Authorization: Bearer {key}", "X-Agent-Id: {agent}", "X-Agent-Hostname: DC09.corp.example", "Content-Type: application/x-ndjson")
    body("${{MESSAGE}}")
    batch-lines(25)
    batch-timeout(300)
    # Without a reliable disk buffer syslog-ng drops what it has read but not yet sent when it
    # stops (seen here: 5 of 300 events across a SIGTERM restart on a busy machine).
    disk-buffer(reliable(yes) dir("{dir}") disk-buf-size(1048576) mem-buf-size(163840))
    {tls}
  );
}};
log {{ source(s_in); destination(d_tv1); }};
"#,
        input = dir.join(format!("{agent}.jsonl")).display(),
        dir = dir.display(),
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

fn start_syslog_ng(dir: &Path, conf: &Path, name: &str) -> Child {
    Command::new("syslog-ng")
        .args(["-F", "--no-caps", "-e", "-f"])
        .arg(conf)
        .arg(format!(
            "--persist-file={}",
            dir.join(format!("{name}.persist")).display()
        ))
        .arg(format!(
            "--pidfile={}",
            dir.join(format!("{name}.pid")).display()
        ))
        .arg(format!(
            "--control={}",
            dir.join(format!("{name}.ctl")).display()
        ))
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{name}.log")))
                .unwrap(),
        )
        .spawn()
        .expect("syslog-ng starts")
}

fn append_events(path: &Path, ids: std::ops::Range<u64>, t: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in ids {
        let ev = json!({"event_id": 4624, "time": t, "computer": "DC09.corp.example", "channel": "Security", "record_id": i});
        writeln!(f, "{ev}").unwrap();
    }
}

fn stop(child: &mut Child) {
    signal(child.id(), "-TERM");
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_ng_http_destination_posts_ndjson_exactly_once_across_a_restart() {
    if skip_without_localstack() {
        return;
    }
    let has_http = std::fs::read_dir("/usr/lib/syslog-ng")
        .map(|d| d.flatten().any(|v| v.path().join("libhttp.so").exists()))
        .unwrap_or(false);
    if !present("syslog-ng with its http module", has_http) {
        return;
    }
    let (s3, bucket, key, served) = lake_and_server().await;
    let dir = std::env::temp_dir().join(format!("tv1-syslog-ng-{}", rand_hex(8)));
    std::fs::create_dir_all(&dir).unwrap();
    let t = tv1_connector::timefmt::api_time(chrono::Utc::now());
    let agent = "syslog-ng-dc09";
    let input = dir.join(format!("{agent}.jsonl"));
    let conf = syslog_ng_conf(&dir, &served.url, &key, agent, None);
    let mut sng = start_syslog_ng(&dir, &conf, agent);
    // Events keep coming while syslog-ng is stopped (SIGTERM) and started again.
    for round in 0..30u64 {
        append_events(&input, round * 10..round * 10 + 10, &t);
        if round == 12 {
            stop(&mut sng);
        }
        if round == 18 {
            sng = start_syslog_ng(&dir, &conf, agent);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_records(
        &s3,
        &bucket,
        300,
        &dir.join(format!("{agent}.log")),
        &served,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids = record_ids(&s3, &bucket).await;
    let doubled: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    assert!((0..300).all(|i| ids.contains_key(&i)));
    let a = agents(&served.url, &key).await;
    assert_eq!(a["agents"][0]["id"], agent);
    assert_eq!(a["agents"][0]["hostname"], "DC09.corp.example");
    assert_eq!(a["agents"][0]["events_received"], 300);
    stop(&mut sng);

    // A wrong key: refused with 403, which syslog-ng reports; nothing is stored.
    let wrong = "syslog-ng-wrong-key";
    let conf = syslog_ng_conf(&dir, &served.url, "not-the-key", wrong, None);
    append_events(&dir.join(format!("{wrong}.jsonl")), 1000..1010, &t);
    let mut sng = start_syslog_ng(&dir, &conf, wrong);
    let sng_log = dir.join(format!("{wrong}.log"));
    wait_until(30, "syslog-ng to report the refusal", async || {
        std::fs::read_to_string(&sng_log).is_ok_and(|l| l.contains("403"))
    })
    .await;
    stop(&mut sng);
    let server_log = std::fs::read_to_string(&served.log).unwrap();
    assert!(server_log.contains("status=403") && server_log.contains("invalid_api_key"));
    assert_eq!(
        record_ids(&s3, &bucket).await.len(),
        300,
        "nothing from the wrong key"
    );
    assert!(!server_log.contains(&key), "the key is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_ng_over_https_sends_on_through_a_certificate_renewal() {
    if skip_without_localstack() {
        return;
    }
    let has_http = std::fs::read_dir("/usr/lib/syslog-ng")
        .map(|d| d.flatten().any(|v| v.path().join("libhttp.so").exists()))
        .unwrap_or(false);
    if !present("syslog-ng with its http module", has_http) {
        return;
    }
    let lake = ad_lake().await;
    let dir = std::env::temp_dir().join(format!("tv1-syslog-ng-tls-{}", rand_hex(8)));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    let (cert, key, _) = ca.issue("first");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let vars = [
        ("API_KEY_PARAM", lake.param.as_str()),
        ("BUCKET", &lake.bucket),
    ];
    let served = serve_tls(&vars, &cert_file, &key_file, &ca).await;

    let t = tv1_connector::timefmt::api_time(chrono::Utc::now());
    let agent = "syslog-ng-tls-dc09";
    let input = dir.join(format!("{agent}.jsonl"));
    let conf = syslog_ng_conf(&dir, &served.url, &lake.key, agent, Some(&ca_file));
    let mut sng = start_syslog_ng(&dir, &conf, agent);
    // The certificate is renewed while events keep coming, and then renewed again. Between
    // them the agent falls silent until its kept-alive connection is closed as idle, and after
    // the second it is restarted: both times it connects again and is shown the renewed
    // certificate.
    let renewal = tv1_connector::ad::tls::RELOAD_INTERVAL;
    for round in 0..40u64 {
        append_events(&input, round * 10..round * 10 + 10, &t);
        if round == 10 || round == 25 {
            let (cert, key, _) = ca.issue(&format!("renewed at {round}"));
            std::fs::write(&cert_file, cert).unwrap();
            std::fs::write(&key_file, key).unwrap();
        }
        if round == 18 {
            tokio::time::sleep(tv1_connector::ad::serve::HEADER_TIMEOUT + renewal).await;
        }
        if round == 32 {
            stop(&mut sng);
            sng = start_syslog_ng(&dir, &conf, agent);
        }
        tokio::time::sleep(renewal / 8).await;
    }
    let sng_log = dir.join(format!("{agent}.log"));
    wait_for_records(&lake.s3, &lake.bucket, 400, &sng_log, &served).await;
    stop(&mut sng);
    let ids = record_ids(&lake.s3, &lake.bucket).await;
    assert!(ids.values().all(|n| *n == 1), "stored twice: {ids:?}");
    let server = std::fs::read_to_string(&served.log).unwrap();
    assert_eq!(
        server.matches("certificate reloaded").count(),
        2,
        "{server}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn hec_send(url: &str, token: &str, first: u64, count: u64, pause_ms: u64, time: i64) -> Child {
    Command::new("node")
        .arg(format!("{ROOT}/tools/hec-client/send.js"))
        .args([
            url,
            token,
            &first.to_string(),
            &count.to_string(),
            "10",
            &pause_ms.to_string(),
        ])
        .env("EVENT_TIME", time.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunks_own_hec_library_lands_events_once_even_when_killed_and_rerun() {
    if skip_without_localstack() {
        return;
    }
    let lib = Path::new(ROOT).join("tools/hec-client/node_modules/splunk-logging");
    if !present("splunk-logging (npm) with node", lib.exists()) {
        return;
    }
    let (s3, bucket, key, served) = lake_and_server().await;
    let time = chrono::Utc::now().timestamp();

    // A wrong token: the library reports HEC's "Invalid token" (code 4); nothing is stored.
    let out = hec_send(&served.url, "not-the-key", 0, 10, 0, time)
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Invalid token") && err.contains("\"code\":4"),
        "{err}"
    );
    assert!(lake_lines(&s3, &bucket).await.is_empty());

    // Killed after three acknowledged batches of ten...
    let mut first = hec_send(&served.url, &key, 0, 100, 300, time);
    let stdout = first.stdout.take().unwrap();
    let acked = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(3)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(acked, 3);
    first.kill().unwrap();
    first.wait().unwrap();
    let partial = record_ids(&s3, &bucket).await.len();
    assert!(
        (30..100).contains(&partial),
        "{partial} stored before the kill"
    );
    // ...and run again from the start: the batches it had sent are byte-identical, so they are
    // no-ops; the rest lands.
    let out = hec_send(&served.url, &key, 0, 100, 0, time)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = record_ids(&s3, &bucket).await;
    assert_eq!(ids.len(), 100);
    assert!(ids.values().all(|n| *n == 1), "stored twice: {ids:?}");
    let lines = lake_lines(&s3, &bucket).await;
    assert_eq!(lines[0].1["shape"], "winlogbeat");
    assert_eq!(lines[0].1["hec"]["sourcetype"], "WinEventLog");
    let a = agents(&served.url, &key).await;
    assert_eq!(a["agents"][0]["id"], "dc05.corp.example");
    assert_eq!(a["agents"][0]["events_received"], 100);
}
