//! The `oat` stream: Observed Attack Techniques detections, read by ingestion time from an
//! endpoint that serves newest first whatever it is asked; each detection (`uuid`) lands once,
//! through expiring page tokens, kills and concurrent runs, and a detection ingested late is
//! read when it is ingested.

use crate::common::*;
use chrono::{DateTime, Duration as D, Utc};
use std::collections::HashMap;
use std::time::Duration;
use tv1_connector::audit::Puller;
use tv1_connector::audit::simulate::{Faults, SimEntry, generate_detections};
use tv1_connector::audit::stream::Stream;
use tv1_connector::lake::ocsf::Dataset;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

fn oat_puller(env: &TestEnv) -> Puller {
    env.puller_of(Stream::Oat)
}

async fn run_oat_to_completion(env: &TestEnv) -> tv1_connector::audit::RunSummary {
    let mut runs = run_puller_as_scheduled(oat_puller(env), 50, |_| false).await;
    runs.pop().expect("one complete run")
}

fn ingested_in(env: &TestEnv, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<SimEntry> {
    env.sim
        .detections()
        .into_iter()
        .filter(|d| d.logged >= from && d.logged < to && d.visible_at <= Utc::now())
        .collect()
}

/// Every `uuid` in the lake exactly once, and each line in the hour of its `ingestedDateTime`.
async fn assert_each_detection_once(env: &TestEnv, want: &[SimEntry]) {
    let lake = env.lake().await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, l) in &lake {
        *seen.entry(l["uuid"].as_str().unwrap().into()).or_default() += 1;
        let t = tv1_connector::timefmt::parse_api_time(l["ingestedDateTime"].as_str().unwrap())
            .unwrap();
        assert!(
            key.starts_with(&format!(
                "vision-one/oat/{}",
                t.format("dt=%Y-%m-%d/hour=%H/")
            )),
            "{key}"
        );
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    let missing: Vec<String> = want
        .iter()
        .filter_map(|d| {
            let v: serde_json::Value = serde_json::from_str(&d.json).unwrap();
            let uuid = v["uuid"].as_str().unwrap();
            (!seen.contains_key(uuid)).then(|| format!("{uuid} ingested {}", d.logged))
        })
        .collect();
    assert!(missing.is_empty(), "not stored: {missing:?}");
    assert_eq!(seen.len(), want.len());
    assert_exactly_once(want, &lake);
}

#[tokio::test]
async fn every_detection_lands_once_from_a_newest_first_endpoint() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_STREAMS", "oat")
        .set("TV1_INITIAL_LOOKBACK", "6h")
        .set("TV1_PAGE_SIZE", "50")
        .set("TV1_MAX_WINDOW", "2h")
        // Ranges of about 200 detections: a 2 h window is halved before it is put in order.
        .set("TV1_ORDERED_RANGE_KIB", "256");
    let ocsf_bucket = ocsf_on(&mut env, ACCOUNT, REGION).await;
    let now = now_s();
    let from = now - D::hours(6);
    // Ingested over the last six hours, detected up to a day before.
    env.sim.set_detections(generate_detections(
        3000,
        from,
        now - D::seconds(5),
        86_400,
        rand::random(),
    ));
    // Page tokens expire mid-query: each range is read again whole.
    env.sim.set_faults(Faults {
        expire_skip_tokens: 5,
        ..Faults::default()
    });
    let mut last = None;
    let mut origin = None;
    let (mut halved, mut rereads) = (0, 0);
    for _ in 0..10 {
        let s = run_oat_to_completion(&env).await;
        halved += s.ranges_halved;
        rereads += s.query_restarts;
        // The first run starts TV1_INITIAL_LOOKBACK before its own now (S3's clock), a moment
        // after `from`: what was ingested before that is not the stream's.
        origin = origin.or(s.window.map(|w| w.from));
        let done = s.checkpoint_after.is_some_and(|c| c >= now - D::seconds(5));
        last = Some(s);
        if done {
            break;
        }
    }
    assert!(halved > 0, "ranges over TV1_ORDERED_RANGE_KIB are halved");
    assert!(
        rereads > 0,
        "ranges whose page token expired are read again"
    );
    let to = last.unwrap().checkpoint_after.unwrap();
    let from = origin.unwrap();
    assert!(from >= now - D::hours(6) && from < now - D::hours(6) + D::seconds(30));
    assert_each_detection_once(&env, &ingested_in(&env, from, to)).await;

    // More detections arrive, some ingested only now though detected hours ago; they land
    // through killed processes, two runs at once and the schedule.
    let later = now_s();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut all = env.sim.detections();
    all.extend(generate_detections(
        600,
        later,
        later + D::seconds(4),
        6 * 3600,
        rand::random(),
    ));
    env.sim.set_detections(all);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // `tv1 pull` pulls TV1_STREAMS, the oat stream here.
    kill_pulls_on_a_slow_api(&env, 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the killed runs' leases lapse
    let (a, b) = (oat_puller(&env), oat_puller(&env));
    let (ra, rb) = tokio::join!(Box::pin(a.run(deadline(60))), Box::pin(b.run(deadline(60))));
    assert!(ra.is_ok() || rb.is_ok(), "{ra:?} {rb:?}");
    let s = run_oat_to_completion(&env).await;
    assert!(s.reconcile.is_none(), "the oat stream is not reconciled");
    let to = s.checkpoint_after.unwrap();
    assert!(to >= later + D::seconds(4));
    assert_each_detection_once(&env, &ingested_in(&env, from, to)).await;
    // Each detection is one Detection Finding (source tv1-oat) on the day it was detected.
    let lake = env.lake().await;
    let rows =
        assert_one_ocsf_row_per_line(&env, &ocsf_bucket, &lake, Dataset::Oat, REGION, ACCOUNT)
            .await;
    assert!(rows.iter().all(|r| r.event["activity_id"] == 1));
    assert!(
        rows.iter().any(|r| r.event["time"].as_i64().unwrap()
            < r.event["metadata"]["logged_time"].as_i64().unwrap() - 3_600_000),
        "detections ingested hours after they were detected are at their detection time"
    );
}

/// A run paused (SIGSTOP) past its lease while its PUT of a pending object is held is fenced:
/// the run that takes over lands each detection once, and the paused run's late PUT is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oat_pull_paused_past_its_lease_is_fenced() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_STREAMS", "oat")
        .set("TV1_INITIAL_LOOKBACK", "5h")
        .set("TV1_PAGE_SIZE", "200")
        .set("TV1_LEASE", "2s");
    let ocsf_bucket = ocsf_on(&mut env, ACCOUNT, REGION).await;
    let now = now_s();
    env.sim.set_detections(generate_detections(
        3000,
        now - D::hours(4),
        now - D::seconds(5),
        3600,
        rand::random(),
    ));
    let (proxy, paused) = a_pull_paused_past_its_lease(&env, async |_| {}).await;
    env.set("TV1_OBJECT_MAX_RECORDS", "170");
    let s = run_oat_to_completion(&env).await;
    assert!(s.recovered.is_some(), "redid the pending segment: {s:?}");
    a_paused_run_is_refused_and_stops(&proxy, paused).await;
    let to = s.checkpoint_after.unwrap();
    assert_each_detection_once(&env, &ingested_in(&env, now - D::hours(5), to)).await;
    let lake = env.lake().await;
    assert_one_ocsf_row_per_line(&env, &ocsf_bucket, &lake, Dataset::Oat, REGION, ACCOUNT).await;
}

/// `tv1 backfill --stream oat` lands the detections ingested before the stream's origin, once,
/// with their Detection Findings on the days they were detected. A rerun after Vision One
/// stopped serving some of them keeps the hours it finished; an unfinished hour is rewritten,
/// and the OCSF objects of the days its detections alone were on are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_oat_lands_each_detection_once_with_its_findings_on_their_days() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_STREAMS", "oat")
        .set("TV1_INITIAL_LOOKBACK", "2h")
        .set("TV1_PAGE_SIZE", "50")
        .set("TV1_OBJECT_MAX_RECORDS", "150");
    let ocsf_bucket = ocsf_on(&mut env, ACCOUNT, REGION).await;
    let now = now_s();
    // Ingested over the last 6 hours, detected up to three days before.
    let all = generate_detections(
        2000,
        now - D::hours(6),
        now - D::seconds(5),
        3 * 86_400,
        rand::random(),
    );
    env.sim.set_detections(all.clone());
    let first = run_oat_to_completion(&env).await;
    let origin = first.window.unwrap().from;
    let p = oat_puller(&env);
    let s = Box::pin(p.backfill(now - D::hours(7), origin, deadline(60), &|_| {}))
        .await
        .unwrap();
    assert!(s.complete && s.records > 0, "{s:?}");
    let to = first.checkpoint_after.unwrap();
    assert_each_detection_once(&env, &ingested_in(&env, now - D::hours(7), to)).await;
    let lake = env.lake().await;
    let rows =
        assert_one_ocsf_row_per_line(&env, &ocsf_bucket, &lake, Dataset::Oat, REGION, ACCOUNT)
            .await;
    let day = |t: &serde_json::Value| {
        chrono::DateTime::from_timestamp_millis(t.as_i64().unwrap())
            .unwrap()
            .date_naive()
    };
    let days: std::collections::BTreeSet<_> = rows.iter().map(|r| day(&r.event["time"])).collect();
    assert!(days.len() >= 3, "findings on the days detected: {days:?}");

    // Vision One no longer serves the detections detected on the earliest day (retention).
    // Rerunning the backfill keeps the hours it finished as they are: nothing stored is lost.
    let gone = *days.first().unwrap();
    let detected_on_gone_day = |d: &SimEntry| {
        let v: serde_json::Value = serde_json::from_str(&d.json).unwrap();
        let t = tv1_connector::timefmt::parse_api_time(v["detectedDateTime"].as_str().unwrap())
            .unwrap();
        t.date_naive() == gone && d.logged < origin
    };
    let kept: Vec<SimEntry> = all
        .iter()
        .filter(|d| !detected_on_gone_day(d))
        .cloned()
        .collect();
    assert!(kept.len() < all.len());
    env.sim.set_detections(kept);
    let again = Box::pin(p.backfill(now - D::hours(7), origin, deadline(60), &|_| {}))
        .await
        .unwrap();
    assert!(again.complete && again.hours_kept == s.hours, "{again:?}");
    assert_eq!((again.records, again.removed), (0, 0), "{again:?}");
    let lake_again = env.lake().await;
    assert_eq!(lake_again.len(), lake.len(), "nothing stored is lost");

    // An hour a backfill did not finish (its marker is not there) is read again, and its
    // findings follow its parts: those of the day no longer served are deleted.
    for key in bucket_keys(&env.s3, &env.bucket).await {
        if key.ends_with(".done") {
            env.s3
                .delete_object()
                .bucket(&env.bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
        }
    }
    let redo = Box::pin(p.backfill(now - D::hours(7), origin, deadline(60), &|_| {}))
        .await
        .unwrap();
    assert!(redo.complete && redo.hours_kept == 0, "{redo:?}");
    let served: Vec<SimEntry> = all
        .into_iter()
        .filter(|d| !detected_on_gone_day(d))
        .collect();
    let still = served
        .iter()
        .filter(|d| d.logged >= now - D::hours(7) && d.logged < to)
        .cloned()
        .collect::<Vec<_>>();
    assert_each_detection_once(&env, &still).await;
    let lake = env.lake().await;
    let rows =
        assert_one_ocsf_row_per_line(&env, &ocsf_bucket, &lake, Dataset::Oat, REGION, ACCOUNT)
            .await;
    assert!(
        rows.iter().all(|r| day(&r.event["time"]) != gone
            || r.event["metadata"]["logged_time"].as_i64().unwrap() >= origin.timestamp_millis()),
        "no finding of the day no longer served is left from the backfill"
    );
}
