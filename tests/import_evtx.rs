//! `tv1 import-evtx` as a user runs it (the real binary, LocalStack S3), on real `.evtx` files
//! (`tests/data/evtx/`, see its SOURCES.md). The truth every test checks against is read with
//! the `evtx` crate's JSON output, independently of the XML the importer stores.

use crate::common::*;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tv1_connector::lake::ocsf::Dataset;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const PREFIX: &str = "active-directory/";

/// One record as the `evtx` crate's JSON output gives it.
#[derive(Debug, Clone)]
struct Truth {
    computer: String,
    channel: String,
    record_id: u64,
    time: DateTime<Utc>,
    subject: Option<String>,
    target: Option<String>,
}

impl Truth {
    /// (computer, channel, record id, second): what tells two events apart (a log whose ids
    /// start again has the same ids at other times).
    fn id(&self) -> (String, String, u64, i64) {
        (
            self.computer.clone(),
            self.channel.clone(),
            self.record_id,
            self.time.timestamp(),
        )
    }
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/evtx")
        .join(name)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Every record of `path`, from the `evtx` crate's JSON.
fn truth(path: &Path) -> Vec<Truth> {
    let mut parser = evtx::EvtxParser::from_path(path).unwrap();
    parser
        .records_json_value()
        .filter_map(Result::ok)
        .map(|r| {
            let e = &r.data["Event"];
            let sys = &e["System"];
            let data = |k: &str| {
                text(&e["EventData"][k])
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty() && s != "-")
            };
            Truth {
                computer: text(&sys["Computer"]).unwrap(),
                channel: text(&sys["Channel"]).unwrap(),
                record_id: sys["EventRecordID"].as_u64().unwrap(),
                time: DateTime::parse_from_rfc3339(
                    sys["TimeCreated"]["#attributes"]["SystemTime"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap()
                .with_timezone(&Utc),
                subject: data("SubjectUserName"),
                target: data("TargetUserName"),
            }
        })
        .collect()
}

/// A fresh bucket, and the environment `tv1 import-evtx` runs with (`AWS_*` come from the
/// test process, pointed at LocalStack).
async fn lake(ocsf: bool) -> (aws_sdk_s3::Client, String, Vec<(String, String)>) {
    aws_env();
    let sdk = tv1_connector::aws::load().await;
    let s3 = tv1_connector::aws::s3_client(&sdk);
    let bucket = format!("tv1-evtx-{}", rand_hex(10));
    create_bucket(&s3, &bucket).await;
    let mut vars = vec![("BUCKET".to_owned(), bucket.clone())];
    if ocsf {
        for (k, v) in [
            ("OCSF_OUTPUT", "on"),
            ("OCSF_ACCOUNT_ID", ACCOUNT),
            ("OCSF_REGION", REGION),
        ] {
            vars.push((k.into(), v.into()));
        }
    }
    (s3, bucket, vars)
}

fn tv1(vars: &[(String, String)], args: &[&str], files: &[&Path]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tv1"));
    cmd.arg("import-evtx")
        .args(args)
        .args(files)
        .envs(vars.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs `tv1 import-evtx` to the end; its summary.
fn import(vars: &[(String, String)], args: &[&str], files: &[&Path]) -> Value {
    let out = tv1(vars, args, files).output().unwrap();
    assert!(
        out.status.success(),
        "tv1 import-evtx failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The identity of a stored line.
fn line_id(l: &Value) -> (String, String, u64, i64) {
    let t = tv1_connector::timefmt::parse_api_time(l["time"].as_str().unwrap()).unwrap();
    (
        l["computer"].as_str().unwrap().to_owned(),
        l["channel"].as_str().unwrap().to_owned(),
        l["record_id"].as_u64().unwrap(),
        t.timestamp(),
    )
}

/// The lake holds each of `truth` exactly once and nothing else, each in the partition of its
/// own category and day, under a key of `[A-Za-z0-9._-~]`.
fn assert_each_once(truth: &[Truth], lines: &[(String, Value)]) {
    let mut want: BTreeMap<_, usize> = BTreeMap::new();
    for t in truth {
        *want.entry(t.id()).or_default() += 1;
    }
    assert!(
        want.values().all(|&n| n == 1),
        "the truth names one event twice"
    );
    let mut got: BTreeMap<_, usize> = BTreeMap::new();
    for (key, l) in lines {
        *got.entry(line_id(l)).or_default() += 1;
        let day = tv1_connector::timefmt::parse_api_time(l["time"].as_str().unwrap())
            .unwrap()
            .format("/dt=%Y-%m-%d/")
            .to_string();
        assert!(key.contains(&day), "{key} holds an event of {day}");
        let category = format!("{PREFIX}category={}/", l["category"].as_str().unwrap());
        assert!(key.starts_with(&category), "{key}");
        let name = key.rsplit('/').next().unwrap();
        assert!(name.starts_with("evtx~"), "{key}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b)),
            "{key}"
        );
        assert_eq!(l["shape"], "windows_xml");
    }
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).take(3).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(3)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} lines for {} records; missing {missing:?}, extra {extra:?}",
        lines.len(),
        truth.len()
    );
    assert_eq!(lines.len(), truth.len());
}

/// The OCSF output holds one row per stored line, and each row's attributes are its record's
/// own: time, computer, uid, the acting and the target user.
fn assert_ocsf_matches(truth: &[Truth], rows: &[OcsfRow]) {
    assert_eq!(rows.len(), truth.len(), "one OCSF row per record");
    let by_uid: HashMap<String, &Truth> = truth
        .iter()
        .map(|t| (format!("{}/{}/{}", t.computer, t.channel, t.record_id), t))
        .collect();
    let mut seen = BTreeSet::new();
    let (mut actors, mut targets) = (0, 0);
    for r in rows {
        let e = &r.event;
        let uid = e["metadata"]["uid"].as_str().unwrap();
        assert!(
            seen.insert(uid.to_owned()),
            "{uid} twice in the OCSF output"
        );
        let t = by_uid
            .get(uid)
            .unwrap_or_else(|| panic!("{uid} is no record"));
        let time = e["time"].as_i64().unwrap();
        let ms = t.time.timestamp_millis();
        assert!(
            time == ms || time == t.time.timestamp() * 1000,
            "{uid}: time {time} for SystemTime {}",
            t.time
        );
        assert_eq!(e["device"]["hostname"], t.computer.as_str(), "{uid}");
        assert_eq!(e["metadata"]["log_name"], t.channel.as_str(), "{uid}");
        if let Some(s) = &t.subject {
            assert_eq!(e["actor"]["user"]["name"], s.as_str(), "{uid}");
            actors += 1;
        }
        // Authentication, account change and user access: the user is the target account.
        let class = e["class_uid"].as_u64().unwrap();
        if let (Some(target), 3001 | 3002 | 3005) = (&t.target, class) {
            assert_eq!(e["user"]["name"], target.as_str(), "{uid} ({class})");
            targets += 1;
        }
    }
    assert!(
        actors > 1000 && targets > 100,
        "{actors} actors, {targets} targets checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_of_real_logs_lands_once_with_its_own_ocsf_attributes() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, vars) = lake(true).await;
    let files = [
        "security-2016.evtx",
        "system-2012.evtx",
        "security-greendale-2015.evtx",
    ]
    .map(sample);
    let truth: Vec<Truth> = files.iter().flat_map(|f| truth(f)).collect();
    assert_eq!(truth.len(), 2261 + 1601 + 194);
    let started = std::time::Instant::now();
    let summary = import(&vars, &[], &files.each_ref().map(|p| p.as_path()));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(summary["records_read"], truth.len());
    assert_eq!(summary["events_landed"], truth.len());
    assert_eq!(summary["already_present"], 0);
    assert_eq!(summary["unreadable_records"], 0);
    assert_eq!(summary["ocsf"]["records"], truth.len(), "{summary}");
    let logs = summary["logs"].as_array().unwrap();
    let security = logs
        .iter()
        .find(|l| l["computer"] == "WIN-03DLIIOFRRA")
        .unwrap();
    assert_eq!(
        (
            &security["records_read"],
            &security["first_record_id"],
            &security["last_record_id"]
        ),
        (&2219.into(), &43.into(), &2261.into())
    );
    let lines = lake_lines(&s3, &bucket).await;
    assert_each_once(&truth, &lines);
    let rows = ocsf_rows(&s3, &bucket, "ext/").await;
    assert_ocsf_matches(&truth, &rows);
    assert_ocsf_layout(&rows, Dataset::Ad, REGION, ACCOUNT);
    println!(
        "{} records in {secs:.1} s ({:.0}/s, debug build, OCSF on), {} objects",
        truth.len(),
        truth.len() as f64 / secs,
        summary["objects_written"]
    );
}

#[tokio::test]
async fn importing_the_same_file_again_stores_nothing() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, vars) = lake(false).await;
    let file = sample("security-2016.evtx");
    let first = import(&vars, &[], &[&file]);
    assert_eq!(first["events_landed"], 2261);
    let keys: BTreeSet<String> = bucket_keys(&s3, &bucket).await.into_iter().collect();
    let before = manifests(&s3, &bucket).await;
    let again = import(&vars, &["--step-records", "500"], &[&file, &file]);
    assert_eq!(again["records_read"], 2 * 2261);
    assert_eq!(again["events_landed"], 0);
    assert_eq!(again["already_present"], 2 * 2261);
    assert_eq!(again["objects_written"], 0);
    let after: BTreeSet<String> = bucket_keys(&s3, &bucket).await.into_iter().collect();
    assert_eq!(after, keys, "no object added");
    assert_eq!(manifests(&s3, &bucket).await, before, "no manifest changed");
    assert_each_once(&truth(&file), &lake_lines(&s3, &bucket).await);
}

/// Every manifest, by key.
async fn manifests(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for key in bucket_keys(s3, bucket).await {
        if key.starts_with(&format!("{PREFIX}_state/imports/")) {
            let body = object_bytes(s3, bucket, &key).await;
            out.insert(key, serde_json::from_slice(&body).unwrap());
        }
    }
    out
}

/// Two exports of one log, as Windows writes them: the file header and chunks `chunks` of
/// `security.evtx` (64 KiB chunks after a 4 KiB header), in a temporary directory.
fn export(chunks: std::ops::Range<usize>, name: &str) -> PathBuf {
    let data = std::fs::read(sample("security-2016.evtx")).unwrap();
    let (header, body) = data.split_at(4096);
    let mut out = header.to_vec();
    out.extend_from_slice(&body[chunks.start * 65536..chunks.end * 65536]);
    let dir = std::env::temp_dir().join(format!("tv1-evtx-{}", rand_hex(8)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, out).unwrap();
    path
}

#[tokio::test]
async fn overlapping_exports_of_one_log_store_each_event_once() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, vars) = lake(false).await;
    // An earlier export (chunks 0-19: records 1-1766) and a later one (12-32: 1064-2261).
    let (a, b) = (export(0..20, "early.evtx"), export(12..33, "late.evtx"));
    let (ta, tb) = (truth(&a), truth(&b));
    let ids = |t: &[Truth]| t.iter().map(Truth::id).collect::<BTreeSet<_>>();
    let shared = ids(&ta).intersection(&ids(&tb)).count();
    assert!(shared > 500 && shared < tb.len(), "{shared} records shared");
    let first = import(&vars, &["--step-records", "400"], &[&a]);
    assert_eq!(first["events_landed"], ta.len());
    let second = import(&vars, &["--step-records", "300"], &[&b]);
    assert_eq!(second["already_present"], shared, "{second}");
    assert_eq!(second["events_landed"], tb.len() - shared);
    let whole = truth(&sample("security-2016.evtx"));
    assert_each_once(&whole, &lake_lines(&s3, &bucket).await);
    // The second export continued the first's records: one span per log, not one per step.
    let m = manifests(&s3, &bucket).await;
    let win = m
        .values()
        .find(|m| m["computer"] == "WIN-03DLIIOFRRA")
        .unwrap();
    assert_eq!(win["landed"].as_array().unwrap().len(), 1, "{win}");
    assert_eq!(
        (&win["landed"][0][0], &win["landed"][0][1]),
        (&43.into(), &2261.into())
    );
    assert!(win["pending"].is_null());

    let again = import(&vars, &[], &[&sample("security-2016.evtx"), &a, &b]);
    assert_eq!(again["events_landed"], 0, "{again}");
}

#[tokio::test]
async fn events_years_old_land_in_their_own_day_partitions() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, vars) = lake(true).await;
    let files = [
        sample("security-greendale-2015.evtx"),
        sample("system-2012.evtx"),
    ];
    import(&vars, &[], &files.each_ref().map(|p| p.as_path()));
    let keys = bucket_keys(&s3, &bucket).await;
    let days: BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| k.split("/dt=").nth(1))
        .map(|rest| &rest[..10])
        .collect();
    assert!(days.contains("2012-03-14"), "{days:?}");
    let truth: Vec<Truth> = files.iter().flat_map(|f| truth(f)).collect();
    let want: BTreeSet<String> = truth
        .iter()
        .map(|t| t.time.format("%Y-%m-%d").to_string())
        .collect();
    assert_eq!(days, want.iter().map(String::as_str).collect());
    assert!(days.len() > 20, "{} days", days.len());
    let ocsf_days: BTreeSet<String> = keys
        .iter()
        .filter_map(|k| k.split("/eventDay=").nth(1))
        .map(|rest| rest[..8].to_owned())
        .collect();
    assert!(ocsf_days.contains("20120314"), "{ocsf_days:?}");
    assert_eq!(ocsf_days, want.iter().map(|d| d.replace('-', "")).collect());
    assert_each_once(&truth, &lake_lines(&s3, &bucket).await);
}

/// Runs `tv1 import-evtx` up to `times` times, each SIGKILLed after a random delay unless it
/// finished first; stops after a run that finished. Returns (runs killed while running, of
/// those the ones that left a step pending).
async fn kill_imports(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    vars: &[(String, String)],
    args: &[&str],
    files: &[&Path],
    times: usize,
) -> (usize, usize) {
    let (mut killed, mut pending) = (0, 0);
    for _ in 0..times {
        let mut child = tv1(vars, args, files)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..1200))).await;
        if child.try_wait().unwrap().is_some() {
            return (killed, pending);
        }
        child.kill().unwrap(); // SIGKILL: no clean-up of any kind.
        child.wait().unwrap();
        killed += 1;
        if manifests(s3, bucket)
            .await
            .values()
            .any(|m| m["pending"].is_object())
        {
            pending += 1;
        }
    }
    (killed, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_killed_at_random_points_and_run_again_store_each_event_once() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, vars) = lake(true).await;
    let file = sample("security-2016.evtx");
    let args = ["--step-records", "150"];
    let (killed, pending) = kill_imports(&s3, &bucket, &vars, &args, &[&file], 15).await;
    assert!(killed >= 2, "only {killed} runs were killed while running");
    let summary = import(&vars, &args, &[&file]);
    println!(
        "{killed} runs killed while running, {pending} leaving a step pending; then {} landed, {} already present",
        summary["events_landed"], summary["already_present"]
    );
    let truth = truth(&file);
    assert_each_once(&truth, &lake_lines(&s3, &bucket).await);
    let rows = ocsf_rows(&s3, &bucket, "ext/").await;
    assert_ocsf_matches(&truth, &rows);
    assert!(
        manifests(&s3, &bucket)
            .await
            .values()
            .all(|m| m["pending"].is_null())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_a_killed_import_left_is_taken_over_by_an_import_of_another_file() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, vars) = lake(true).await;
    let (a, b) = (export(0..20, "early.evtx"), export(12..33, "late.evtx"));
    let args = ["--step-records", "100", "--stale-after", "4s"];
    // Kill imports of the later export until one leaves a step pending (theirs for 4 s).
    let mut pending = false;
    for _ in 0..20 {
        if kill_imports(&s3, &bucket, &vars, &args, &[&b], 1).await.1 > 0 {
            pending = true;
            break;
        }
    }
    assert!(pending, "no kill left a step pending");
    // The earlier export cannot redo it; it takes it over once it expires.
    let first = import(&vars, &["--step-records", "100"], &[&a]);
    assert_eq!(first["steps_taken_over"], 1, "{first}");
    let second = import(&vars, &args, &[&b]);
    assert_eq!(second["steps_taken_over"], 0, "{second}");
    let whole = truth(&sample("security-2016.evtx"));
    assert_each_once(&whole, &lake_lines(&s3, &bucket).await);
    let rows = ocsf_rows(&s3, &bucket, "ext/").await;
    assert_ocsf_matches(&whole, &rows);
}
