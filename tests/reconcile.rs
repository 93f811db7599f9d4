//! Reconciliation end to end: entries Vision One serves only after the pull has committed their
//! time land anyway, exactly once, whatever fails (LocalStack S3 + SSM and the simulator).

use crate::common::*;
use chrono::{DateTime, Duration as D, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

use tv1_connector::audit::simulate::{Faults, SimEntry};
use tv1_connector::timefmt::api_time;

fn entry(logged: DateTime<Utc>, n: usize) -> SimEntry {
    SimEntry {
        logged,
        visible_at: logged,
        json: format!(
            r#"{{"loggedDateTime":"{}","activity":"Edit user account","n":{n}}}"#,
            api_time(logged)
        ),
        superseded_at: None,
    }
}

/// `count` distinct entries spread over the hour starting at `hour`.
fn hour_of_entries(hour: DateTime<Utc>, count: usize) -> Vec<SimEntry> {
    (0..count)
        .map(|i| entry(hour + D::seconds((i * 3600 / count) as i64), i))
        .collect()
}

/// The pull commits `entries` while those `late` picks are not served yet (reconciliation
/// cannot reach that time yet); then they are served. Returns them all, as now visible.
async fn committed_then_served_late(
    env: &mut TestEnv,
    entries: Vec<SimEntry>,
    mut late: impl FnMut(usize, &SimEntry) -> bool,
) -> Vec<SimEntry> {
    env.sim.set_entries(served_late(&entries, &mut late));
    env.set("TV1_RECONCILE_HORIZON", "5h");
    let runs = run_until_settled(env).await;
    assert!(
        runs.iter().all(|s| s.reconcile.is_none()),
        "nothing reconcilable yet: {runs:?}"
    );
    env.sim.set_entries(entries.clone());
    env.set("TV1_RECONCILE_HORIZON", "1h");
    entries
}

fn late_keys(lake: &[(String, serde_json::Value)]) -> Vec<&str> {
    let mut keys: Vec<&str> = lake
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.contains("/late_"))
        .collect();
    keys.dedup();
    keys
}

/// The end of the 2 s step holding `t` (the test's `TV1_RECONCILE_STEP`).
fn step_end(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp((s.div_euclid(2) + 1) * 2, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_served_later_than_the_lag_land_once_within_the_horizon() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_LAG", "1s")
        .set("TV1_RECONCILE_HORIZON", "8s")
        .set("TV1_RECONCILE_STEP", "2s");
    let start = now_s() + D::seconds(1);
    // Over 10 s: 40 % of entries are served 2–6 s after their time (the pull, 1 s behind,
    // misses most of them), some entries are exact repeats, some of those late.
    env.load(600, start, start + D::seconds(10), |g| {
        g.late_fraction = 0.4;
        g.late_min_secs = 2;
        g.late_max_secs = 6;
        g.repeat_fraction = 0.05;
        g.burst_every = 0;
    });
    let p = env.puller();
    let horizon = D::seconds(8);
    let (mut runs, mut late_found) = (0, 0u64);
    let mut pull_pages = 0;
    let mut reconcile_pages = 0;
    while now_s() < start + D::seconds(10) + horizon + D::seconds(4) {
        let s = p.run(deadline(30)).await.unwrap();
        runs += 1;
        pull_pages += s.pages;
        if let Some(r) = &s.reconcile {
            late_found += r.late_entries;
            reconcile_pages += r.pages;
            assert!(r.stopped_early.is_none(), "{r:?}");
        }
        // The documented bound: an entry served within the horizon is in S3 after the first run
        // that starts a horizon after the end of its step (S3's clock, whole seconds).
        let lake = env.lake().await;
        let landed: HashMap<String, usize> = lake.iter().fold(HashMap::new(), |mut m, (_, l)| {
            *m.entry(source_form(l)).or_default() += 1;
            m
        });
        let mut want: HashMap<String, usize> = HashMap::new();
        for e in env
            .sim
            .visible_entries()
            .iter()
            .filter(|e| step_end(e.logged) + horizon + D::seconds(1) <= s.started_at)
        {
            *want
                .entry(source_form(&serde_json::from_str(&e.json).unwrap()))
                .or_default() += 1;
        }
        for (k, n) in &want {
            assert!(
                landed.get(k).copied().unwrap_or(0) >= *n,
                "run {runs} (started {}) has not landed {k} although its step ended a horizon ago",
                s.started_at
            );
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let lake = env.lake().await;
    assert_exactly_once(&env.sim.visible_entries(), &lake);
    assert_eq!(lake.len(), 600);
    let in_late_objects = lake.iter().filter(|(k, _)| k.contains("/late_")).count();
    assert!(
        in_late_objects >= 30,
        "most late entries missed by the pull: {in_late_objects}"
    );
    assert_eq!(late_found as usize, in_late_objects);
    let status = p.status().await.unwrap();
    assert_eq!(status.reconcile.late_entries, late_found);
    assert_eq!(status.reconcile.horizon_seconds, 8);
    assert!(status.reconcile.oldest_delay_seconds.unwrap() >= 8);
    let age = status.reconcile.checked_age_seconds.unwrap();
    assert!(
        (8..=20).contains(&age),
        "checked up to a horizon ago: {age}"
    );
    println!(
        "{runs} runs; {late_found} late entries; pages: pull {pull_pages}, reconciliation {reconcile_pages}"
    );
}

#[tokio::test]
async fn identical_twins_where_one_arrives_late_keep_distinct_ids_and_are_never_rewritten() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_RECONCILE_STEP", "10m");
    let hour = two_hours_back(&mut env);
    let mut entries = hour_of_entries(hour, 200);
    // x three times (one late), y twice (both late), z twice (one late), all identical copies.
    let twins = [
        (hour + D::minutes(7), "x", 3, 1),
        (hour + D::minutes(23), "y", 2, 2),
        (hour + D::minutes(23) + D::seconds(1), "z", 2, 1),
    ];
    for (at, name, copies, _) in twins {
        for _ in 0..copies {
            entries.push(SimEntry {
                json: format!(
                    r#"{{"loggedDateTime":"{}","activity":"twin {name}"}}"#,
                    api_time(at)
                ),
                ..entry(at, 0)
            });
        }
    }
    entries.sort_by_key(|e| e.logged);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let entries = committed_then_served_late(&mut env, entries, |_, e| {
        let Some((_, name, copies, late)) = twins
            .iter()
            .find(|t| e.json.contains(&format!("\"twin {}\"", t.1)))
        else {
            return false;
        };
        let n = seen.entry(name.to_string()).or_default();
        *n += 1;
        *n > copies - late
    })
    .await;
    let before = env.lake().await;
    // The visible copies: x twice, z once, y not at all.
    assert_eq!(before.len(), 200 + 2 + 1);
    let runs = run_until_settled(&env).await;
    let lake = env.lake().await;
    assert_exactly_once(&entries, &lake);
    for (_, name, copies, late) in twins {
        let ids: Vec<(&str, &str)> = lake
            .iter()
            .filter(|(_, l)| l["activity"] == format!("twin {name}"))
            .map(|(k, l)| (k.as_str(), l["_id"].as_str().unwrap()))
            .collect();
        assert_eq!(ids.len(), copies, "{name}: {ids:?}");
        let in_late = ids.iter().filter(|(k, _)| k.contains("/late_")).count();
        assert_eq!(in_late, late, "{name}: {ids:?}");
        let base = ids.iter().map(|(_, id)| &id[..32]).collect::<Vec<_>>();
        assert!(base.windows(2).all(|w| w[0] == w[1]), "same content hash");
    }
    assert_eq!(late_keys(&lake).len(), 2, "one object per 10-minute step");
    let found: u64 = runs
        .iter()
        .filter_map(|s| s.reconcile.as_ref())
        .map(|r| r.late_entries)
        .sum();
    assert_eq!(found, 4);

    // Reading the same time again finds nothing new: what is in S3 is never written again.
    let mut cp = env.checkpoint().await.unwrap();
    cp["reconcile"]["checked_to"] = api_time(hour).into();
    env.put_checkpoint(&cp).await;
    let again: Vec<_> = run_until_settled(&env)
        .await
        .into_iter()
        .filter_map(|s| s.reconcile)
        .collect();
    let ranges: u32 = again.iter().map(|r| r.ranges).sum();
    let reread: u64 = again.iter().map(|r| r.entries).sum();
    assert!(ranges >= 6 && reread == 200 + 7, "{again:?}");
    assert!(again.iter().all(|r| r.late_entries == 0), "{again:?}");
    assert_eq!(env.lake().await.len(), lake.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_during_reconciliation_still_exactly_once() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_RECONCILE_STEP", "5m")
        .set("TV1_PAGE_SIZE", "50")
        .set("TV1_LEASE", "2s");
    let hour = two_hours_back(&mut env);
    let mut entries = hour_of_entries(hour, 3000);
    // Identical copies in some seconds, one of them late.
    for i in (0..3000).step_by(97) {
        entries.push(entries[i].clone());
    }
    entries.sort_by_key(|e| e.logged);
    let entries = committed_then_served_late(&mut env, entries, |i, _| i % 5 == 0).await;
    kill_pulls_on_a_slow_api(&env, 12).await;
    let runs = run_until_settled(&env).await;
    let lake = env.lake().await;
    assert_exactly_once(&entries, &lake);
    let cp = env.checkpoint().await.unwrap();
    let checked = cp["reconcile"]["checked_to"].as_str().unwrap();
    assert!(
        tv1_connector::timefmt::parse_api_time(checked).unwrap() >= hour + D::hours(1),
        "{cp}"
    );
    println!(
        "late objects: {}; runs after the kills: {}",
        late_keys(&lake).len(),
        runs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_reconcile_once() {
    if skip_without_localstack() {
        return;
    }
    for round in 0..2 {
        let mut env = TestEnv::new().await;
        env.set("TV1_RECONCILE_STEP", "10m");
        let hour = two_hours_back(&mut env);
        let entries = hour_of_entries(hour, 1500);
        let entries = committed_then_served_late(&mut env, entries, |i, _| i % 4 == 1).await;
        env.sim.set_faults(Faults {
            delay_ms: 20,
            ..Faults::default()
        });
        let results = env
            .two_runs_at_once(Duration::from_millis(round * 40))
            .await;
        let reconciled = results
            .iter()
            .filter(|r| matches!(r, Ok(s) if s.reconcile.as_ref().is_some_and(|r| r.ranges > 0)))
            .count();
        let losers = results.iter().filter(|r| lost(r)).count();
        assert_eq!((reconciled, losers), (1, 1), "round {round}: {results:?}");
        env.sim.set_faults(Faults::default());
        run_until_settled(&env).await;
        assert_exactly_once(&entries, &env.lake().await);
    }
}

#[tokio::test]
async fn page_tokens_expiring_during_re_reads_double_nothing() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_RECONCILE_STEP", "30m")
        .set("TV1_PAGE_SIZE", "50");
    let hour = two_hours_back(&mut env);
    let mut entries = hour_of_entries(hour, 1200);
    // A burst in one second longer than a page, partly late: a restart lands inside it.
    let burst = hour + D::minutes(10);
    for n in 0..130 {
        entries.push(entry(burst, 10_000 + n));
    }
    entries.sort_by_key(|e| e.logged);
    let entries = committed_then_served_late(&mut env, entries, |i, _| i % 3 == 0).await;
    env.sim.set_faults(Faults {
        expire_skip_tokens: 8,
        ..Faults::default()
    });
    let p = env.puller();
    let mut restarts = 0;
    loop {
        let s = p.run(deadline(60)).await.unwrap();
        let r = s.reconcile.expect("reconciliation was due");
        restarts += r.query_restarts;
        if r.stopped_early.is_none() {
            break;
        }
    }
    assert!(
        restarts >= 8,
        "re-reads restarted after expired tokens: {restarts}"
    );
    assert_exactly_once(&entries, &env.lake().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reconciliation_is_refused_its_late_object_after_a_takeover() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_RECONCILE_STEP", "10m").set("TV1_LEASE", "2s");
    let hour = two_hours_back(&mut env);
    let entries = hour_of_entries(hour, 600);
    let entries = committed_then_served_late(&mut env, entries, |i, _| i % 7 == 3).await;
    // Every data PUT now is a late object; the paused run's first one stalls in the proxy.
    let proxy = HoldingProxy::start(LOCALSTACK, 0).await;
    let paused = env.spawn_pull(&[("AWS_ENDPOINT_URL", &proxy.url)]);
    wait_until(30, "a held PUT", async || !proxy.held().is_empty()).await;
    let cp = env.checkpoint().await.unwrap();
    let pending = cp["reconcile"]["pending"]["keys"][0].as_str().unwrap();
    assert!(
        proxy.held()[0].replace("%3D", "=").contains(pending),
        "the held PUT is the pending range's: {:?} vs {cp}",
        proxy.held()
    );
    signal(paused.id(), "-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = run_until_settled(&env).await;
    assert!(
        runs.iter()
            .any(|s| s.reconcile.as_ref().is_some_and(|r| r.recovered.is_some())),
        "redid the pending range: {runs:?}"
    );
    let lake = env.lake().await;
    assert_exactly_once(&entries, &lake);
    a_paused_run_is_refused_and_stops(&proxy, paused).await;
    assert_exactly_once(&entries, &env.lake().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_landing_the_key_first_leaves_the_rest_to_the_next_key() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_RECONCILE_STEP", "10m").set("TV1_LEASE", "2s");
    let hour = two_hours_back(&mut env);
    // One entry every 6 s: the first 100 fill the first 10-minute step. Two sets arrive late
    // there; the second only after the first run read the range.
    let entries = hour_of_entries(hour, 600);
    let first = |i: usize| i < 100 && i % 7 == 3;
    let second = |i: usize| i < 100 && i % 7 == 5;
    let entries = committed_then_served_late(&mut env, entries, |i, _| first(i) || second(i)).await;
    env.sim.set_entries(served_late(&entries, |i, _| second(i)));
    let spawn = |proxy: &HoldingProxy| env.spawn_pull(&[("AWS_ENDPOINT_URL", &proxy.url)]);
    // Run A computes the first set, announces the key, and stalls in its PUT; then pauses.
    let pa = HoldingProxy::start(LOCALSTACK, 0).await;
    let mut a = spawn(&pa);
    wait_until(30, "A's held PUT", async || !pa.held().is_empty()).await;
    signal(a.id(), "-STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The second set is served now. Run B takes over and redoes the range: its S3 view lacks
    // A's object, so it means to land both sets under the same key, and stalls in that PUT.
    env.sim.set_entries(entries.clone());
    let pb = HoldingProxy::start(LOCALSTACK, 0).await;
    let b = spawn(&pb);
    wait_until(30, "B's held PUT", async || !pb.held().is_empty()).await;
    assert_eq!(pa.held()[0], pb.held()[0], "the same key");
    // A's PUT lands first; B's is then refused, and B lands only what is still missing.
    pa.release();
    wait_until(30, "A's PUT", async || !pa.released().is_empty()).await;
    assert_eq!(pa.released()[0].1, 200);
    pb.release();
    let b_exit = tokio::task::spawn_blocking(move || {
        let mut b = b;
        b.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(b_exit.success());
    assert_eq!(pb.released()[0].1, 412, "B's PUT of the key A landed");
    signal(a.id(), "-CONT");
    let a_exit = tokio::task::spawn_blocking(move || a.wait().unwrap())
        .await
        .unwrap();
    assert!(!a_exit.success(), "A lost the checkpoint");
    run_until_settled(&env).await;
    let lake = env.lake().await;
    assert_exactly_once(&entries, &lake);
    let keys = late_keys(&lake);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let count = |k: &str| lake.iter().filter(|(key, _)| key == k).count();
    let firsts = (0..100).filter(|i| first(*i)).count();
    let seconds = (0..100).filter(|i| second(*i)).count();
    assert!(
        keys.iter()
            .any(|k| k.ends_with("Z.jsonl.gz") && count(k) == firsts)
    );
    assert!(
        keys.iter()
            .any(|k| k.ends_with("Z.1.jsonl.gz") && count(k) == seconds)
    );
}

#[tokio::test]
async fn reconciliation_behind_the_data_retention_passes_over_expired_time_unread() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_INITIAL_LOOKBACK", "60h")
        .set("TV1_MAX_WINDOW", "72h")
        .set("TV1_RECONCILE_HORIZON", "0");
    let now = now_s();
    env.load(3000, now - D::hours(60), now - D::seconds(5), |g| {
        g.burst_every = 0
    });
    let pulled = run_as_scheduled(&env, 20, |_| false).await;
    let pulled_to = pulled.last().unwrap().checkpoint_after.unwrap();
    env.assert_exactly_once(now - D::hours(60), pulled_to).await;
    // Two days of retention: the lifecycle rule has expired the objects of the oldest hours.
    let expired_before = now - D::hours(48);
    let mut expired = 0;
    for key in bucket_keys(&env.s3, &env.bucket).await {
        let Some(at) = key.find("dt=") else { continue };
        let hour = format!("{}00", &key[at..at + 21]);
        let hour = chrono::NaiveDateTime::parse_from_str(&hour, "dt=%Y-%m-%d/hour=%H%M")
            .unwrap()
            .and_utc();
        if hour + D::hours(1) <= expired_before {
            env.s3
                .delete_object()
                .bucket(&env.bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            expired += 1;
        }
    }
    assert!(expired > 0);
    // Reconciliation is switched on with its state far behind, at the origin, where a run that
    // died had announced a range (pending) in time whose objects have since expired.
    let mut cp = env.checkpoint().await.unwrap();
    let origin = tv1_connector::timefmt::parse_api_time(cp["origin"].as_str().unwrap()).unwrap();
    let step_end = tv1_connector::timefmt::ceil_hour(origin + D::seconds(1));
    let late = tv1_connector::audit::segment::late_key("vision-one/audit/", origin, step_end, 0);
    cp["reconcile"] = json!({"checked_to": cp["origin"], "pending": {
        "from": cp["origin"], "to": api_time(step_end), "keys": [late]}});
    env.put_checkpoint(&cp).await;
    env.set("TV1_RECONCILE_HORIZON", "1h")
        .set("TV1_DATA_RETENTION_DAYS", "2");
    let runs = run_until_settled(&env).await;
    let sums: Vec<_> = runs.iter().filter_map(|r| r.reconcile.as_ref()).collect();
    let skipped = sums
        .iter()
        .find_map(|r| r.skipped_expired)
        .expect("the expired time is passed over");
    let safe = now - D::hours(24);
    assert!(
        (skipped.to - safe).num_seconds().abs() < 120,
        "skipped to {} (a day of margin before the retention)",
        skipped.to
    );
    assert_eq!(sums.iter().map(|r| r.late_entries).sum::<u64>(), 0);
    assert!(
        sums.iter().map(|r| r.ranges).sum::<u32>() > 0,
        "the rest was read again"
    );
    // Nothing landed again in expired time.
    let relanded = env
        .lake()
        .await
        .iter()
        .filter(|(k, _)| !k.contains("_unreadable/"))
        .filter(|(_, l)| {
            tv1_connector::timefmt::parse_api_time(l["loggedDateTime"].as_str().unwrap()).unwrap()
                < expired_before - D::hours(1)
        })
        .count();
    assert_eq!(relanded, 0);
    // The pending range's key was claimed empty (a late PUT of the dead run is refused).
    assert!(bucket_keys(&env.s3, &env.bucket).await.contains(&late));
    assert_eq!(skipped.from, origin);
}

/// A catch-up reads time that is already the horizon old: that read is the second one, so
/// reconciliation passes over it instead of reading it again (which had doubled a catch-up's
/// requests); only the last horizon, which the pull read while it was younger, is re-read.
#[tokio::test]
async fn a_catch_up_over_settled_time_is_not_read_twice() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_INITIAL_LOOKBACK", "3d")
        .set("TV1_RECONCILE_HORIZON", "1h");
    let now = now_s();
    env.load(3000, now - D::days(3), now - D::seconds(5), |_| {});
    let (runs, pages, reread) = catch_up(&env, 20).await;
    let passed: Vec<_> = runs
        .iter()
        .filter_map(|s| s.reconcile.as_ref()?.read_settled)
        .collect();
    assert!(
        passed.len() >= 3,
        "each catch-up run's settled time: {passed:?}"
    );
    assert!(
        passed.windows(2).all(|w| w[0].to <= w[1].from),
        "{passed:?}"
    );
    let last = runs.last().unwrap();
    let cp = env.checkpoint().await.unwrap();
    let checked =
        tv1_connector::timefmt::parse_api_time(cp["reconcile"]["checked_to"].as_str().unwrap())
            .unwrap();
    assert!(checked >= now - D::hours(1) - D::minutes(2), "{checked}");
    // Only the last horizon (read by the pull while younger) is read a second time.
    assert!(reread * 10 <= pages, "re-read {reread} pages of {pages}");
    env.assert_exactly_once(now - D::days(4), last.checkpoint_after.unwrap())
        .await;
}

/// After an outage, reconciliation is a horizon behind the window the pull catches up on; it
/// remembers the time the pull read already settled and passes over it when it gets there,
/// so the backlog is not read twice.
#[tokio::test]
async fn a_catch_up_after_an_outage_is_not_read_twice() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_INITIAL_LOOKBACK", "10m")
        .set("TV1_RECONCILE_HORIZON", "1h");
    let now = now_s();
    let first = Box::pin(env.puller().run(deadline(60))).await.unwrap();
    assert!(first.checkpoint_after.is_some());
    // Three days down: the checkpoint as the last run before the outage left it (reconciliation
    // a horizon behind what it had committed).
    let down = tv1_connector::timefmt::floor_second(now - D::days(3));
    let mut cp = env.checkpoint().await.unwrap();
    cp["origin"] = api_time(down - D::hours(2)).into();
    cp["committed_to"] = api_time(down).into();
    cp["reconcile"] = json!({"checked_to": api_time(down - D::hours(1)), "late_entries": 0});
    env.put_checkpoint(&cp).await;
    env.load(3000, down, now - D::seconds(5), |_| {});
    let (runs, pages, reread) = catch_up(&env, 40).await;
    let passed = runs
        .iter()
        .filter_map(|s| s.reconcile.as_ref()?.read_settled)
        .fold(D::zero(), |sum, w| sum + (w.to - w.from));
    assert!(
        passed >= D::days(2) + D::hours(12),
        "the backlog passed over: {passed}"
    );
    // The hour before the outage and the last horizon are read again; the backlog is not.
    assert!(reread * 5 <= pages, "re-read {reread} pages of {pages}");
    env.assert_exactly_once(down, runs.last().unwrap().checkpoint_after.unwrap())
        .await;
}

/// Runs as the schedule would (at most `runs` runs) until the backlog is read (a run reads at
/// most a day) and reconciliation did not stop early. Returns the runs, the pages the pull read
/// and the pages reconciliation read again.
async fn catch_up(env: &TestEnv, runs: usize) -> (Vec<tv1_connector::audit::RunSummary>, u64, u64) {
    let runs = run_as_scheduled(env, runs, |s| {
        s.lag_seconds.is_none_or(|l| l > 60)
            || s.reconcile
                .as_ref()
                .is_some_and(|r| r.stopped_early.is_some())
    })
    .await;
    let pages = runs.iter().map(|s| s.pages).sum();
    let reread = runs
        .iter()
        .filter_map(|s| s.reconcile.as_ref())
        .map(|r| r.pages)
        .sum();
    (runs, pages, reread)
}
