//! The `alerts` stream: every version of a Workbench alert (its state at one `updatedDateTime`)
//! that a run can see lands once, as its own line, through kills and concurrent runs; a status
//! change is a new line, and the newest line of an `id` is its current state.

use crate::common::*;
use chrono::{DateTime, Duration as D, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tv1_connector::audit::Puller;
use tv1_connector::audit::simulate::{GenerateAlerts, SimEntry, generate_alerts};
use tv1_connector::audit::stream::Stream;
use tv1_connector::lake::ocsf::Dataset;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

fn alerts_puller(env: &TestEnv) -> Puller {
    env.puller_of(Stream::Alerts)
}

/// Runs the alerts puller as the schedule would until a run reads its whole window.
async fn run_alerts_to_completion(env: &TestEnv) -> tv1_connector::audit::RunSummary {
    let mut runs = run_puller_as_scheduled(alerts_puller(env), 50, |_| false).await;
    runs.pop().expect("one complete run")
}

/// Every version served at some point up to now whose `updatedDateTime` is in `[from, to)`.
fn seen_versions(env: &TestEnv, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<SimEntry> {
    let now = Utc::now();
    env.sim
        .alert_versions()
        .into_iter()
        .filter(|v| v.logged >= from && v.logged < to && v.visible_at <= now)
        .collect()
}

/// A new state, logged now, of every `every`-th alert version that is current: it replaces
/// that version. Returns how many changed.
fn change_state(env: &TestEnv, every: usize, status: &str) -> usize {
    let now = now_s();
    let mut versions = env.sim.alert_versions();
    let mut changed = 0;
    let mut newer = Vec::new();
    for (i, v) in versions.iter_mut().enumerate() {
        let current = v.visible_at <= now && v.superseded_at.is_none_or(|s| s > now);
        if i % every != 0 || !current {
            continue;
        }
        let mut item: Value = serde_json::from_str(&v.json).unwrap();
        item["status"] = status.into();
        item["updatedDateTime"] = tv1_connector::timefmt::api_time(now).into();
        // It lasts until the alert's next scheduled state, as the one it replaces would have.
        let until = v.superseded_at.replace(now);
        newer.push(SimEntry {
            logged: now,
            visible_at: now,
            json: item.to_string(),
            superseded_at: until,
        });
        changed += 1;
    }
    versions.extend(newer);
    env.sim.set_alert_versions(versions);
    changed
}

#[tokio::test]
async fn every_alert_version_lands_once_through_kills_and_concurrent_runs() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_STREAMS", "alerts")
        .set("TV1_INITIAL_LOOKBACK", "3h")
        .set("TV1_RECONCILE_HORIZON", "0");
    let ocsf_bucket = ocsf_on(&mut env, ACCOUNT, REGION).await;
    let now = now_s();
    let from = now - D::hours(3);
    // Created over the last two hours; their later states come hours from now.
    env.sim.set_alert_versions(generate_alerts(&GenerateAlerts {
        count: 400,
        from: now - D::hours(2),
        to: now - D::seconds(10),
        change_after_secs: (6 * 3600, 9 * 3600),
        seed: rand::random(),
    }));
    let first = run_alerts_to_completion(&env).await;
    assert!(first.records >= 400, "{first:?}");
    let to = first.checkpoint_after.unwrap();
    assert_exactly_once(&seen_versions(&env, from, to), &env.lake().await);

    // A third of them change state now: the new versions land through killed processes, two
    // runs at once, and the schedule; the earlier lines stay as they were.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changed = change_state(&env, 3, "In Progress");
    assert!(changed > 50, "{changed}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // `tv1 pull` pulls TV1_STREAMS, the alerts stream here.
    kill_pulls_on_a_slow_api(&env, 4).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the killed runs' leases lapse
    let (a, b) = (alerts_puller(&env), alerts_puller(&env));
    let (ra, rb) = tokio::join!(Box::pin(a.run(deadline(60))), Box::pin(b.run(deadline(60))));
    assert!(ra.is_ok() || rb.is_ok(), "{ra:?} {rb:?}");
    let last = run_alerts_to_completion(&env).await;
    let to = last.checkpoint_after.unwrap();
    let lake = env.lake().await;
    let seen = seen_versions(&env, from, to);
    assert_eq!(seen.len(), first.records as usize + changed);
    assert_exactly_once(&seen, &lake);
    // The newest line of an id is its current state.
    let mut newest: HashMap<String, (String, String)> = HashMap::new();
    for (_, l) in &lake {
        let (id, at) = (
            l["id"].as_str().unwrap(),
            l["updatedDateTime"].as_str().unwrap(),
        );
        let e = newest
            .entry(id.into())
            .or_insert((at.into(), String::new()));
        if at >= e.0.as_str() {
            *e = (at.into(), l["status"].as_str().unwrap().into());
        }
    }
    let in_progress = newest.values().filter(|(_, s)| s == "In Progress").count();
    assert_eq!(in_progress, changed);
    // Each line is one Detection Finding (read back with DuckDB, valid OCSF 1.1.0, source
    // tv1-alerts): the first state of every alert a Create, each change an Update.
    let rows =
        assert_one_ocsf_row_per_line(&env, &ocsf_bucket, &lake, Dataset::Alerts, REGION, ACCOUNT)
            .await;
    // Each row's activity follows its line (lines of the hour in progress get their rows when it
    // is over: `ocsf_to`).
    let line_of: HashMap<&str, &Value> = lake
        .iter()
        .map(|(_, l)| (l["_id"].as_str().unwrap(), l))
        .collect();
    let mut activities = HashMap::new();
    for r in &rows {
        let l = line_of[r.event["metadata"]["uid"].as_str().unwrap()];
        let want = if l["updatedDateTime"] == l["createdDateTime"] {
            1
        } else {
            2
        };
        assert_eq!(r.event["activity_id"], want, "{l}");
        *activities.entry(want).or_insert(0usize) += 1;
    }
    assert!(activities[&1] > 0, "{activities:?}");
    assert!(
        rows.iter()
            .all(|r| r.event["finding_info"]["uid"].is_string())
    );
    // The lines are under the alerts prefix, in hourly partitions of updatedDateTime.
    for (key, l) in &lake {
        let t =
            tv1_connector::timefmt::parse_api_time(l["updatedDateTime"].as_str().unwrap()).unwrap();
        assert!(
            key.starts_with(&format!(
                "vision-one/alerts/{}",
                t.format("dt=%Y-%m-%d/hour=%H/")
            )),
            "{key}"
        );
    }
}

/// A run paused (SIGSTOP) past its lease while its PUT of a pending object is held is fenced:
/// the run that takes over lands the versions once, and the paused run's late PUT is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerts_pull_paused_past_its_lease_is_fenced() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_STREAMS", "alerts")
        .set("TV1_INITIAL_LOOKBACK", "5h")
        .set("TV1_RECONCILE_HORIZON", "0")
        .set("TV1_LEASE", "2s");
    let ocsf_bucket = ocsf_on(&mut env, ACCOUNT, REGION).await;
    let now = now_s();
    env.sim.set_alert_versions(generate_alerts(&GenerateAlerts {
        count: 1500,
        from: now - D::hours(4),
        to: now - D::seconds(10),
        change_after_secs: (6 * 3600, 9 * 3600),
        seed: rand::random(),
    }));
    let (proxy, paused) = a_pull_paused_past_its_lease(&env, async |_| {}).await;
    env.set("TV1_OBJECT_MAX_RECORDS", "170");
    let s = run_alerts_to_completion(&env).await;
    assert!(s.recovered.is_some(), "redid the pending segment: {s:?}");
    a_paused_run_is_refused_and_stops(&proxy, paused).await;
    let to = s.checkpoint_after.unwrap();
    let lake = env.lake().await;
    let seen = seen_versions(&env, now - D::hours(5), to);
    assert_eq!(seen.len(), 1500);
    assert_exactly_once(&seen, &lake);
    assert_one_ocsf_row_per_line(&env, &ocsf_bucket, &lake, Dataset::Alerts, REGION, ACCOUNT).await;
}
