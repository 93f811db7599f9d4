//! The audit puller end to end: LocalStack S3 + SSM and the Vision One simulator.

use crate::common::*;
use chrono::Duration as D;
use std::time::Duration;
use tokio::time::Instant;
use tv1_connector::audit::simulate::{Faults, SimEntry};
use tv1_connector::audit::vision_one::VisionOneError;
use tv1_connector::audit::{Outcome, PullError};

/// Runs until a run completes the window, as a scheduler would (see [`run_as_scheduled`]).
async fn run_to_completion(env: &TestEnv) -> tv1_connector::audit::RunSummary {
    let mut runs = run_as_scheduled(env, 200, |_| false).await;
    runs.pop().expect("one complete run")
}

#[tokio::test]
async fn first_run_lands_every_entry_once_in_hourly_partitions() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    let now = now_s();
    env.load(3000, now - D::hours(5), now - D::seconds(5), |_| {});
    let s = env.puller().run(deadline(60)).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!(s.checkpoint_before, None);
    let window = s.window.unwrap();
    let after = now_s();
    assert!(
        window.from >= now - D::hours(12) && window.from <= after - D::hours(12),
        "first run starts at the initial lookback: {window:?}"
    );
    assert!(
        window.to >= now - D::seconds(1) && window.to <= after - D::seconds(1),
        "ends at now - lag: {window:?}"
    );
    assert_eq!(s.checkpoint_after, Some(window.to));
    assert!(s.pages >= 15, "followed nextLink over {} pages", s.pages);
    assert!(
        s.objects >= 5 && s.objects < 20,
        "objects per hour, not per page: {}",
        s.objects
    );
    assert_eq!(s.records, 3000);
    assert_eq!(env.assert_exactly_once(window.from, window.to).await, 3000);
    let cp = env.checkpoint().await.unwrap();
    assert!(
        cp.get("pending").is_none(),
        "no pending segment after a clean run: {cp}"
    );
    // Fields are unchanged: both timestamp forms survive byte for byte.
    let lake = env.lake().await;
    assert!(
        lake.iter()
            .any(|(_, l)| l["loggedDateTime"].as_str().unwrap().contains(' '))
    );
    assert!(
        lake.iter()
            .any(|(_, l)| l["loggedDateTime"].as_str().unwrap().ends_with('Z'))
    );
}

#[tokio::test]
async fn next_run_adds_only_new_entries_and_an_idle_run_adds_nothing() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    let now = now_s();
    env.load(500, now - D::hours(2), now - D::seconds(5), |_| {});
    let first = env.puller().run(deadline(60)).await.unwrap();
    let cut = first.checkpoint_after.unwrap();
    // New entries: some exactly at the old window's end (the API's start bound is inclusive).
    let more: Vec<SimEntry> = (0..300)
        .map(|i| {
            let logged = cut + D::seconds(i / 150);
            SimEntry {
                logged,
                visible_at: logged,
                json: format!(
                    r#"{{"loggedDateTime":"{}","activity":"new","n":{i}}}"#,
                    tv1_connector::timefmt::api_time(logged)
                ),
                superseded_at: None,
            }
        })
        .collect();
    env.sim.add_entries(more);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let second = env.puller().run(deadline(60)).await.unwrap();
    assert_eq!(second.checkpoint_before, Some(cut));
    assert_eq!(second.records, 300);
    let idle = env.puller().run(deadline(60)).await.unwrap();
    assert_eq!(idle.records, 0);
    env.assert_exactly_once(now - D::hours(12), idle.checkpoint_after.unwrap())
        .await;
}

#[tokio::test]
async fn end_bound_read_either_way() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::with_settings(|s| s.end_inclusive = false).await;
    let now = now_s();
    env.load(2000, now - D::hours(3), now - D::seconds(2), |_| {});
    let s = run_to_completion(&env).await;
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

/// Pull (with page tokens expiring mid-query, so queries restart at a second that has entries),
/// reconciliation and backfill against an API whose `startDateTime` is inclusive or exclusive,
/// with entries on every hour boundary and the second before it: each lands exactly once.
async fn start_bound_either_way(start_inclusive: bool) {
    let mut env = TestEnv::with_settings(|s| s.start_inclusive = start_inclusive).await;
    env.set("TV1_INITIAL_LOOKBACK", "2h")
        .set("TV1_RECONCILE_HORIZON", "1h")
        .set("TV1_PAGE_SIZE", "100")
        .set("TV1_FETCH_CONCURRENCY", "1");
    let now = now_s();
    let first = tv1_connector::timefmt::floor_hour(now - D::hours(5));
    // Dense enough that the second before a restart's second mostly holds entries too.
    env.load(15_000, first, now - D::seconds(5), |g| {
        g.burst_every = 200;
        g.burst_size = 30;
    });
    let mut edges = Vec::new();
    let mut h = first;
    while h < now - D::minutes(1) {
        for (at, n) in [(h - D::seconds(1), 3), (h, 4)] {
            for i in 0..n {
                edges.push(SimEntry {
                    logged: at,
                    visible_at: at,
                    json: format!(
                        r#"{{"loggedDateTime":"{}","activity":"edge-{i}"}}"#,
                        tv1_connector::timefmt::api_time(at)
                    ),
                    superseded_at: None,
                });
            }
        }
        h += D::hours(1);
    }
    env.sim.add_entries(edges);
    env.sim.set_faults(Faults {
        expire_skip_tokens: 8,
        ..Faults::default()
    });
    let runs = run_as_scheduled(&env, 200, |_| false).await;
    assert!(runs.iter().map(|r| r.query_restarts).sum::<u32>() >= 8);
    let s = runs.last().unwrap();
    let origin = runs[0].window.unwrap().from;
    let b = env
        .puller()
        .backfill(first, origin, deadline(60), &|_| {})
        .await
        .unwrap();
    assert!(b.complete, "{b:?}");
    assert_eq!(b.range.unwrap().from, first);
    env.assert_exactly_once(first, s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test]
async fn start_bound_exclusive_lands_everything_once() {
    if skip_without_localstack() {
        return;
    }
    start_bound_either_way(false).await;
}

#[tokio::test]
async fn start_bound_inclusive_lands_everything_once() {
    if skip_without_localstack() {
        return;
    }
    start_bound_either_way(true).await;
}

#[tokio::test]
async fn late_entries_within_the_lag_are_not_lost() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_LAG", "4s");
    let start = now_s();
    // Entries logged over the next 8 s, each visible only up to 3 s after its logged time.
    env.load(1200, start, start + D::seconds(8), |g| {
        g.late_fraction = 0.5;
        g.late_max_secs = 3;
        g.burst_every = 0;
    });
    let p = env.puller();
    let until = start + D::seconds(14);
    while now_s() < until {
        p.run(deadline(30)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let s = p.run(deadline(30)).await.unwrap();
    assert!(s.checkpoint_after.unwrap() >= start + D::seconds(8));
    assert_eq!(
        env.assert_exactly_once(start - D::hours(12), start + D::seconds(8))
            .await,
        1200
    );
}

#[tokio::test]
async fn long_outage_is_caught_up_over_several_bounded_runs() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_MAX_WINDOW", "1h");
    let now = now_s();
    env.load(1500, now - D::hours(5), now - D::seconds(5), |_| {});
    let p = env.puller();
    let mut runs = 0;
    loop {
        let s = p.run(deadline(60)).await.unwrap();
        runs += 1;
        let w = s.window.unwrap();
        assert!(w.to - w.from <= D::hours(1), "window bounded: {w:?}");
        if w.to >= now - D::seconds(2) {
            break;
        }
    }
    assert_eq!(runs, 12, "12 h of lookback in 1 h windows");
    env.assert_exactly_once(now - D::hours(12), now - D::seconds(1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_in_process_still_exactly_once() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    // Small objects: many segments, so a kill can land between any two steps.
    env.set("TV1_OBJECT_MAX_RECORDS", "120")
        .set("TV1_RUN_TIMEOUT", "2s")
        .set("TV1_LEASE", "2s");
    let now = now_s();
    env.load(4000, now - D::hours(6), now - D::seconds(5), |_| {});
    env.sim.set_faults(Faults {
        delay_ms: 5,
        ..Faults::default()
    });
    let mut recovered = 0;
    for i in 0..40 {
        let p = env.puller();
        let kill_after = Duration::from_millis(rand::random_range(0..400));
        // Dropping the future is a crash at an await point: requests in flight may or may not land.
        let r = tokio::time::timeout(
            kill_after,
            p.run(Instant::now() + Duration::from_millis(1500)),
        )
        .await;
        if let Ok(Ok(s)) = r {
            recovered += s.recovered.is_some() as u32;
            if s.outcome == Outcome::Skipped {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1600)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    env.set("TV1_RUN_TIMEOUT", "60s");
    env.sim.set_faults(Faults::default());
    let s = run_to_completion(&env).await;
    println!(
        "recovered abandoned segments: {recovered} (+{:?})",
        s.recovered
    );
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_at_random_points_still_exactly_once() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_OBJECT_MAX_RECORDS", "150")
        .set("TV1_RUN_TIMEOUT", "3s")
        .set("TV1_LEASE", "2s");
    let now = now_s();
    env.load(5000, now - D::hours(6), now - D::seconds(5), |_| {});
    // Slow enough that a run takes longer than most of the kill delays below.
    env.sim.set_faults(Faults {
        delay_ms: 40,
        delay_jitter_ms: 40,
        ..Faults::default()
    });
    for _ in 0..12 {
        // Budgets and object sizes vary, so a retry cuts segments differently from the run it
        // replaces: an abandoned object is then not simply overwritten, it must be removed.
        let budget = format!("{}ms", rand::random_range(800..3000));
        let records = rand::random_range(100..400).to_string();
        let mut child = env.spawn_pull(&[
            ("TV1_RUN_TIMEOUT", &budget),
            ("TV1_OBJECT_MAX_RECORDS", &records),
        ]);
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..1500))).await;
        child.kill().unwrap(); // SIGKILL: no clean-up of any kind.
        child.wait().unwrap();
    }
    // Leases of killed runs last TV1_LEASE (2 s here); runs skip until then.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.sim.set_faults(Faults::default());
    env.set("TV1_RUN_TIMEOUT", "60s");
    let s = run_to_completion(&env).await;
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_the_loser_writes_nothing() {
    if skip_without_localstack() {
        return;
    }
    for round in 0..4 {
        let mut env = TestEnv::new().await;
        env.set("TV1_OBJECT_MAX_RECORDS", "200");
        let now = now_s();
        env.load(2000, now - D::hours(4), now - D::seconds(5), |_| {});
        env.sim.set_faults(Faults {
            delay_ms: 20,
            ..Faults::default()
        });
        let results = env
            .two_runs_at_once(Duration::from_millis(round * 40))
            .await;
        let winners = results
            .iter()
            .filter(|r| matches!(r, Ok(s) if s.outcome == Outcome::Complete))
            .count();
        let losers = results.iter().filter(|r| lost(r)).count();
        assert_eq!((winners, losers), (1, 1), "round {round}: {results:?}");
        for r in &results {
            if let Ok(s) = r
                && s.outcome == Outcome::Skipped
            {
                assert_eq!(s.records, 0);
            }
        }
        env.sim.set_faults(Faults::default());
        let s = run_to_completion(&env).await;
        env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
            .await;
    }
}

#[tokio::test]
async fn retries_429_and_5xx_with_backoff_and_honours_retry_after() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    // Request-by-request assertions: one query at a time.
    env.set("TV1_FETCH_CONCURRENCY", "1");
    let now = now_s();
    env.load(800, now - D::hours(1), now - D::seconds(5), |_| {});
    env.sim.set_faults(Faults {
        fail_next: vec![503, 429, 502, 500],
        retry_after_secs: Some(2),
        ..Faults::default()
    });
    let s = env.puller().run(deadline(60)).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    let log = env.sim.stats().log;
    let statuses: Vec<u16> = log.iter().map(|r| r.status).take(5).collect();
    assert_eq!(statuses, vec![503, 429, 502, 500, 200]);
    let after_429 = (log[2].at - log[1].at).num_milliseconds();
    assert!(
        after_429 >= 2000,
        "Retry-After: 2 honoured, waited {after_429} ms"
    );
    let gaps: Vec<i64> = log
        .windows(2)
        .take(4)
        .map(|w| (w[1].at - w[0].at).num_milliseconds())
        .collect();
    assert!(gaps[3] >= gaps[0], "backoff grows: {gaps:?}");
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test]
async fn persistent_errors_give_up_with_a_clear_error_and_keep_progress() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    // Request-by-request assertions: one query at a time.
    env.set("TV1_FETCH_CONCURRENCY", "1");
    env.set("TV1_MAX_ATTEMPTS", "3")
        .set("TV1_OBJECT_MAX_RECORDS", "100");
    let now = now_s();
    env.load(1000, now - D::hours(3), now - D::seconds(5), |g| {
        g.burst_every = 0
    });
    // Page 1 and 2 succeed, then the API fails for good.
    env.sim.set_faults(Faults {
        error_rate: 0.0,
        ..Faults::default()
    });
    let p = env.puller();
    let fail_after_two = async {
        while env.sim.stats().requests < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        env.sim.set_faults(Faults {
            error_rate: 1.0,
            ..Faults::default()
        });
    };
    env.sim.set_faults(Faults {
        delay_ms: 50,
        ..Faults::default()
    });
    let (r, _) = tokio::join!(p.run(deadline(60)), fail_after_two);
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            PullError::VisionOne(VisionOneError::Unavailable { attempts: 3, .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("502"), "{e}");
    let cp = env.checkpoint().await.unwrap();
    let committed =
        tv1_connector::timefmt::parse_api_time(cp["committed_to"].as_str().unwrap()).unwrap();
    assert!(
        committed > now - D::hours(12),
        "what was fetched before the failure is committed"
    );
    let status = p.status().await.unwrap();
    assert_eq!(status.state, "Error");
    assert!(
        status
            .last_error
            .unwrap()
            .message
            .contains("unavailable after 3 attempts")
    );
    env.sim.set_faults(Faults::default());
    let s = run_to_completion(&env).await;
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
    assert_eq!(p.status().await.unwrap().state, "Active");
}

#[tokio::test]
async fn retry_after_past_the_deadline_stops_in_time() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    // One query at a time: the 429 must land on the window's first request.
    env.set("TV1_FETCH_CONCURRENCY", "1");
    let now = now_s();
    env.load(300, now - D::hours(1), now - D::seconds(5), |_| {});
    env.sim.set_faults(Faults {
        fail_next: vec![429],
        retry_after_secs: Some(120),
        ..Faults::default()
    });
    let started = Instant::now();
    let s = env.puller().run(deadline(4)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "returned before its deadline"
    );
    assert_eq!(s.outcome, Outcome::Partial);
    assert!(s.stopped_early.unwrap().contains("429"));
    assert_eq!(
        s.checkpoint_after,
        Some(now - D::hours(12)),
        "nothing fetched, nothing moved"
    );
}

#[tokio::test]
async fn deadline_stops_fetching_commits_and_the_next_run_continues() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_DEADLINE_MARGIN", "1s");
    let now = now_s();
    env.load(4000, now - D::hours(4), now - D::seconds(5), |_| {});
    env.sim.set_faults(Faults {
        delay_ms: 200,
        ..Faults::default()
    });
    let started = Instant::now();
    let s = env.puller().run(deadline(3)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "finished before the deadline"
    );
    assert_eq!(s.outcome, Outcome::Partial);
    assert!(s.records > 0 && s.records < 4000, "{}", s.records);
    assert!(s.checkpoint_after.unwrap() < s.window.unwrap().to);
    env.sim.set_faults(Faults::default());
    let next = run_to_completion(&env).await;
    assert_eq!(next.checkpoint_before, s.checkpoint_after);
    env.assert_exactly_once(now - D::hours(12), next.checkpoint_after.unwrap())
        .await;
}

#[tokio::test]
async fn expired_page_tokens_restart_from_where_written_data_ends() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    let now = now_s();
    // Bursts of 450 entries in one second straddle pages: restarts land inside them.
    env.load(3000, now - D::hours(2), now - D::seconds(5), |g| {
        g.burst_every = 700
    });
    env.sim.set_faults(Faults {
        expire_skip_tokens: 4,
        ..Faults::default()
    });
    let s = env.puller().run(deadline(60)).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!(s.query_restarts, 4);
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_slices_with_expiring_tokens_and_errors_stay_exactly_once() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_FETCH_CONCURRENCY", "4")
        .set("TV1_OBJECT_MAX_RECORDS", "300");
    let now = now_s();
    // Entries in every slice of the 12 h window, with bursts straddling pages.
    env.load(
        6000,
        now - D::hours(12) + D::seconds(30),
        now - D::seconds(5),
        |g| g.burst_every = 900,
    );
    env.sim.set_faults(Faults {
        expire_skip_tokens: 6,
        fail_next: vec![503, 429, 500],
        retry_after_secs: Some(1),
        delay_ms: 5,
        delay_jitter_ms: 30,
        ..Faults::default()
    });
    let s = env.puller().run(deadline(120)).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!(s.query_restarts, 6);
    assert_eq!(s.records, 6000);
    env.assert_exactly_once(now - D::hours(13), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test]
async fn tokens_that_expire_by_time_are_recovered_too() {
    if skip_without_localstack() {
        return;
    }
    // Some tokens outlive the gap to the next request, some do not.
    let env = TestEnv::with_settings(|s| s.skip_token_ttl = Duration::from_millis(500)).await;
    let now = now_s();
    env.load(2000, now - D::hours(2), now - D::seconds(5), |g| {
        g.burst_every = 0
    });
    env.sim.set_faults(Faults {
        delay_ms: 150,
        delay_jitter_ms: 600,
        ..Faults::default()
    });
    let s = env.puller().run(deadline(120)).await.unwrap();
    env.sim.set_faults(Faults::default());
    assert!(s.query_restarts > 0, "some tokens expired");
    let s = if s.outcome == Outcome::Complete {
        s
    } else {
        run_to_completion(&env).await
    };
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_refused_and_gets_no_token() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    // A "foreign" server that records what reaches it.
    let foreign = TestEnv::new().await;
    let now = now_s();
    env.load(500, now - D::hours(1), now - D::seconds(5), |_| {});
    env.sim.set_faults(Faults {
        foreign_next_link: Some(foreign.sim_url.clone()),
        ..Faults::default()
    });
    let e = env.puller().run(deadline(30)).await.unwrap_err();
    assert!(
        matches!(
            e,
            PullError::VisionOne(VisionOneError::ForeignNextLink { .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&foreign.sim_url), "{e}");
    assert!(!e.to_string().contains(&env.token));
    assert_eq!(
        foreign.sim.stats().requests,
        0,
        "nothing was sent to the foreign origin"
    );
}

#[tokio::test]
async fn the_token_never_appears_in_logs_or_errors() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    let now = now_s();
    env.load(400, now - D::hours(1), now - D::seconds(5), |_| {});
    env.sim.set_faults(Faults {
        fail_next: vec![503, 401],
        ..Faults::default()
    });
    env.set("RUST_LOG", "trace");
    let run = |cmd: &str, vars: &std::collections::HashMap<String, String>| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
            .arg(cmd)
            .envs(vars.clone())
            .output()
    };
    let ok = run("pull", &env.vars).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A rejected token: the error path.
    put_param(&env.ssm, &env.token_param, "tok-wrong-value-123456").await;
    let bad = run("test-connection", &env.vars).await.unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("token rejected: expired or revoked"),
        "{stderr}"
    );
    for out in [&ok, &bad] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.len() > 1000, "trace logging was on");
        assert!(!text.contains(&env.token), "token leaked into output");
        assert!(
            !text.contains("tok-wrong-value-123456"),
            "token leaked into output"
        );
    }
}

#[tokio::test]
async fn a_rotated_token_is_read_again_on_401() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    // Request-by-request assertions: one query at a time.
    env.set("TV1_FETCH_CONCURRENCY", "1");
    let now = now_s();
    env.load(300, now - D::hours(1), now - D::seconds(5), |_| {});
    let p = env.puller();
    assert!(p.test_connection().await.ok);
    // Rotated in Vision One and in SSM after the token was cached.
    env.sim.set_token("tok-rotated-abcdef");
    put_param(&env.ssm, &env.token_param, "tok-rotated-abcdef").await;
    let s = p.run(deadline(30)).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    let log = env.sim.stats().log;
    assert_eq!(
        log.iter().filter(|r| r.status == 401).count(),
        1,
        "one 401, then the fresh token"
    );
}

#[tokio::test]
async fn rejected_tokens_and_missing_roles_are_actionable() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    let p = env.puller();
    let ok = p.test_connection().await;
    assert!(ok.ok);
    assert_eq!(ok.message, "Connection successful");
    assert!((chrono::Utc::now() - ok.at).num_seconds() < 60);

    env.sim.set_faults(Faults {
        forbidden: true,
        ..Faults::default()
    });
    let c = p.test_connection().await;
    assert!(!c.ok);
    assert!(
        c.message
            .contains("account lacks API access: role Master Administrator with Console & APIs"),
        "{}",
        c.message
    );

    env.sim.set_faults(Faults::default());
    env.sim.set_token("tok-revoked-in-console");
    let c = p.test_connection().await;
    assert!(!c.ok);
    assert!(
        c.message.starts_with("token rejected: expired or revoked"),
        "{}",
        c.message
    );
    let e = p.run(deadline(30)).await.unwrap_err();
    assert!(e.to_string().starts_with("token rejected"), "{e}");
    assert_eq!(p.status().await.unwrap().state, "Error");
}

#[tokio::test]
async fn status_shows_the_last_run_and_lag() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    let p = env.puller();
    assert_eq!(p.status().await.unwrap().state, "Never run");
    let now = now_s();
    env.load(700, now - D::hours(2), now - D::seconds(5), |_| {});
    p.run(deadline(60)).await.unwrap();
    let st = p.status().await.unwrap();
    assert_eq!(st.state, "Active");
    assert_eq!(st.last_success_records, Some(700));
    assert!(st.lag_seconds.unwrap() >= 1 && st.lag_seconds.unwrap() < 30);
    assert!(st.last_error.is_none());
    // `tv1 status` prints the same from the documents in S3, one report per configured stream.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .arg("status")
        .envs(&env.vars)
        .env("TV1_STREAMS", "audit,alerts")
        .output()
        .await
        .unwrap();
    let reports: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let v = &reports[0];
    assert_eq!(
        (v["stream"].as_str(), v["state"].as_str()),
        (Some("audit"), Some("Active"))
    );
    assert_eq!(v["last_success_records"], 700);
    assert_eq!(
        (reports[1]["stream"].as_str(), reports[1]["state"].as_str()),
        (Some("alerts"), Some("Never run"))
    );
}

#[tokio::test]
async fn backfill_fills_before_the_origin_without_moving_the_checkpoint_or_duplicating() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    // Backfilled time must be older than the reconciliation horizon (see the next test).
    env.set("TV1_INITIAL_LOOKBACK", "2h")
        .set("TV1_RECONCILE_HORIZON", "1h")
        .set("TV1_OBJECT_MAX_RECORDS", "250");
    let now = now_s();
    env.load(3000, now - D::hours(8), now - D::seconds(5), |_| {});
    let p = env.puller();
    let first = p.run(deadline(60)).await.unwrap();
    let origin = first.window.unwrap().from;
    let cp_before = env.checkpoint().await.unwrap();

    // Asks for more than it may have: the part from the origin on is the puller's.
    let b = p
        .backfill(
            now - D::hours(7) - D::minutes(20),
            now,
            deadline(60),
            &|_| {},
        )
        .await
        .unwrap();
    assert!(b.complete);
    assert_eq!(b.range.unwrap().to, origin);
    assert_eq!(
        b.range.unwrap().from,
        tv1_connector::timefmt::floor_hour(now - D::hours(7) - D::minutes(20))
    );
    assert!(b.note.unwrap().contains("clamped"));
    assert_eq!(
        env.checkpoint().await.unwrap()["committed_to"],
        cp_before["committed_to"],
        "checkpoint unmoved"
    );
    let lake_from = b.range.unwrap().from;
    let n = env
        .assert_exactly_once(lake_from, first.checkpoint_after.unwrap())
        .await;

    // Re-running it, or an overlapping one, adds nothing.
    let again = p
        .backfill(
            now - D::hours(6),
            origin - D::minutes(1),
            deadline(60),
            &|_| {},
        )
        .await
        .unwrap();
    assert!(again.records > 0);
    assert_eq!(
        env.assert_exactly_once(lake_from, first.checkpoint_after.unwrap())
            .await,
        n
    );

    // Through the CLI, same result.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .args([
            "backfill",
            "--from",
            &tv1_connector::timefmt::api_time(now - D::hours(7)),
            "--to",
            &tv1_connector::timefmt::api_time(origin),
        ])
        .envs(&env.vars)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["complete"], true);
    assert_eq!(
        env.assert_exactly_once(lake_from, first.checkpoint_after.unwrap())
            .await,
        n
    );
}

#[tokio::test]
async fn backfill_cut_by_the_horizon_and_run_again_later_writes_each_hour_once() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_INITIAL_LOOKBACK", "30m")
        .set("TV1_RECONCILE_HORIZON", "1h");
    let now = now_s();
    let first = tv1_connector::timefmt::floor_hour(now - D::hours(4));
    env.load(3000, first, now - D::seconds(5), |_| {});
    let run = env.puller().run(deadline(60)).await.unwrap();
    let (origin, pulled_to) = (run.window.unwrap().from, run.checkpoint_after.unwrap());
    // The horizon (now - 1h) falls inside an hour: the backfill stops at that hour's start.
    let b = env
        .puller()
        .backfill(first, origin, deadline(60), &|_| {})
        .await
        .unwrap();
    let cut = tv1_connector::timefmt::floor_hour(now - D::hours(1));
    assert_eq!(b.range.unwrap().to, cut, "{b:?}");
    assert!(
        b.note
            .unwrap()
            .contains("run the same backfill again later")
    );
    // Later (a horizon that has moved past it), the advised rerun fills the rest.
    env.set("TV1_RECONCILE_HORIZON", "2s");
    let later = env
        .puller()
        .backfill(first, origin, deadline(60), &|_| {})
        .await
        .unwrap();
    assert_eq!(later.range.unwrap().to, origin);
    let n = env.assert_exactly_once(first, pulled_to).await;
    // A part of an hour under another name (as an earlier version cut it) is found and removed.
    let keys = bucket_keys(&env.s3, &env.bucket).await;
    let part = keys
        .iter()
        .find(|k| k.contains(&cut.format("hour=%H/backfill_").to_string()))
        .expect("a backfill part of the cut hour");
    // The part's range is its hour, or up to the origin when the origin cuts that hour: the old
    // name ends halfway, inside it.
    let name = part.rsplit('/').next().unwrap();
    // backfill_<from: 16 chars>_<to: 16 chars>-NNN.jsonl.gz
    let to = &name[26..42];
    let to_time = tv1_connector::timefmt::parse_compact_time(to).unwrap();
    let half = cut + (to_time - cut) / 2;
    let old_name = part.replace(
        &format!("_{to}-"),
        &format!("_{}-", tv1_connector::timefmt::compact_time(half)),
    );
    assert_ne!(&old_name, part);
    env.s3
        .copy_object()
        .bucket(&env.bucket)
        .copy_source(format!("{}/{part}", env.bucket))
        .key(&old_name)
        .send()
        .await
        .unwrap();
    let again = env
        .puller()
        .backfill(first, origin, deadline(60), &|_| {})
        .await
        .unwrap();
    assert_eq!(again.removed, 1);
    assert_eq!(env.assert_exactly_once(first, pulled_to).await, n);
}

#[tokio::test]
async fn backfill_before_any_run_pins_the_origin_for_the_schedule() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_RECONCILE_HORIZON", "1h");
    let now = now_s();
    env.load(1000, now - D::hours(5), now - D::seconds(5), |_| {});
    let p = env.puller();
    let b = p
        .backfill(now - D::hours(5), now - D::hours(2), deadline(60), &|_| {})
        .await
        .unwrap();
    let end = b.range.unwrap().to;
    let s = run_to_completion(&env).await;
    assert_eq!(
        s.checkpoint_before,
        Some(end),
        "the schedule starts where the backfill ended"
    );
    env.assert_exactly_once(b.range.unwrap().from, s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test]
async fn invalid_backfill_ranges_are_refused() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    let p = env.puller();
    let now = now_s();
    let e = p
        .backfill(now, now - D::hours(1), deadline(5), &|_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not before"), "{e}");
    let e = p
        .backfill(now - D::days(200), now - D::days(199), deadline(5), &|_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("180 days"), "{e}");
}

#[test]
fn a_bad_setting_fails_at_start_with_one_line_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .arg("pull")
        .env_remove("BUCKET")
        .env("TV1_TOKEN_PARAM", "/x")
        .env("TV1_REGION", "mars")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("TV1_REGION"), "{stderr}");
}

#[tokio::test]
async fn the_lambda_handler_dispatches_events() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    let now = now_s();
    env.load(200, now - D::hours(1), now - D::seconds(5), |_| {});
    let p = env.puller();
    let scheduled: serde_json::Value =
        serde_json::from_str(include_str!("../events/schedule.json")).unwrap();
    // What the function returns is the reply as JSON.
    let json = |r| serde_json::to_value(r).unwrap();
    let s = json(p.handle(&scheduled, deadline(30)).await.unwrap());
    assert_eq!(s["action"], "pull");
    assert_eq!(s["records"], 200);
    let tc = json(
        p.handle(
            &serde_json::json!({"action": "test-connection"}),
            deadline(30),
        )
        .await
        .unwrap(),
    );
    assert_eq!(tc["message"], "Connection successful");
    let e = p
        .handle(&serde_json::json!({"action": "nope"}), deadline(30))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown action"));
}

fn pending_keys(cp: &serde_json::Value) -> Vec<String> {
    cp["pending"]["keys"]
        .as_array()
        .map(|a| a.iter().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_paused_past_its_lease_is_fenced_from_the_segment_the_next_run_took_over() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_LEASE", "2s");
    let now = now_s();
    env.load(3000, now - D::hours(5), now - D::seconds(5), |_| {});
    let (proxy, paused) = a_pull_paused_past_its_lease(&env, async |proxy| {
        let cp = env.checkpoint().await.unwrap();
        let held = &proxy.held()[0];
        assert!(
            pending_keys(&cp)
                .iter()
                .any(|k| held.replace("%3D", "=").contains(k.as_str())),
            "the held PUT is the pending segment's: {held} vs {cp}"
        );
    })
    .await;
    // Another run, cutting objects differently, takes over and reads the whole window.
    env.set("TV1_OBJECT_MAX_RECORDS", "170");
    let s = run_to_completion(&env).await;
    assert!(s.recovered.is_some(), "redid the pending segment: {s:?}");
    // The paused run's PUT reaches S3 only now, after the other run committed that range.
    a_paused_run_is_refused_and_stops(&proxy, paused).await;
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_next_run_takes_over_within_the_lease() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_LEASE", "3s");
    let now = now_s();
    env.load(3000, now - D::hours(5), now - D::seconds(5), |_| {});
    env.sim.set_faults(Faults {
        delay_ms: 100,
        ..Faults::default()
    });
    let mut child = env.spawn_pull(&[
        ("TV1_OBJECT_MAX_RECORDS", "200"),
        ("TV1_FETCH_CONCURRENCY", "1"),
    ]);
    wait_until(30, "the child's pending segment", async || {
        env.checkpoint()
            .await
            .is_some_and(|cp| !pending_keys(&cp).is_empty())
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    // Its lease still holds: the next run waits rather than racing a run that may be alive.
    let s = env.puller().run(deadline(30)).await.unwrap();
    assert_eq!(s.outcome, Outcome::Skipped, "{s:?}");
    env.sim.set_faults(Faults::default());
    let p = env.puller();
    let s = loop {
        let s = p.run(deadline(60)).await.unwrap();
        if s.outcome != Outcome::Skipped {
            break s;
        }
        // The lease, plus up to a second because S3's `Date` is whole seconds (read early on
        // purpose), plus the runs themselves on a busy machine.
        assert!(
            killed.elapsed() < Duration::from_secs(7),
            "no takeover {:?} after the kill with a 3 s lease",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("took over {:?} after kill -9", killed.elapsed());
    assert!(s.recovered.is_some() && s.records > 0, "{s:?}");
    let s = run_to_completion(&env).await;
    env.assert_exactly_once(now - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_renews_its_lease_and_is_never_taken_over() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    // Renewed every second; a busy CI machine may delay a renewal, not by two seconds.
    env.set("TV1_LEASE", "3s");
    let now = now_s();
    env.load(1500, now - D::hours(3), now - D::seconds(5), |_| {});
    // ~8 s of fetching: over two leases long.
    env.sim.set_faults(Faults {
        delay_ms: 250,
        ..Faults::default()
    });
    let mut live = tokio::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .arg("pull")
        .envs(&env.vars)
        .env("TV1_PAGE_SIZE", "50")
        .env("TV1_FETCH_CONCURRENCY", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let p = env.puller();
    let (mut skipped, mut ran) = (0, Vec::new());
    let status = loop {
        tokio::select! {
            st = live.wait() => break st.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                let s = p.run(deadline(30)).await.unwrap();
                match s.outcome {
                    Outcome::Skipped => skipped += 1,
                    // The live run may have finished (and released) before its process exits.
                    _ => ran.push(s),
                }
            }
        }
    };
    // Taken over, the live run would have lost the checkpoint and failed.
    assert!(status.success());
    assert!(
        skipped >= 10,
        "only {skipped} runs skipped during the live run"
    );
    let out = live.wait_with_output().await.unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome"], "complete", "{summary}");
    assert_eq!(summary["records"], 1500);
    let live_end =
        tv1_connector::timefmt::parse_api_time(summary["checkpoint_after"].as_str().unwrap());
    for s in &ran {
        assert!(
            s.recovered.is_none() && s.checkpoint_before >= live_end,
            "a run started before the live run had finished: {s:?}"
        );
    }
    env.assert_exactly_once(now - D::hours(12), now).await;
}

#[tokio::test]
async fn a_clock_running_ahead_skips_nothing() {
    if skip_without_localstack() {
        return;
    }
    let env = TestEnv::new().await;
    let now = now_s();
    // Entries keep coming in for a few more seconds, each visible from its logged time.
    env.load(600, now - D::hours(2), now + D::seconds(4), |g| {
        g.burst_every = 0
    });
    let ahead = tv1_connector::lake::clock::Clock::skewed(D::minutes(30));
    let p = env.puller().with_clock(ahead);
    let first = p.run(deadline(30)).await.unwrap();
    let to = first.window.unwrap().to;
    assert!(
        to <= now_s(),
        "window ends at S3's now minus the lag, not in the future: {to}"
    );
    assert!(
        (first.clock_skew_seconds - 1800).abs() <= 2,
        "{}",
        first.clock_skew_seconds
    );
    // A backfill asked to reach into the (local) future pins no origin past S3's now either.
    let b = p
        .backfill(now - D::hours(3), now + D::hours(1), deadline(30), &|_| {})
        .await
        .unwrap();
    assert!(b.range.is_none_or(|r| r.to <= now_s()), "{b:?}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = p.run(deadline(30)).await.unwrap();
    assert_eq!(
        env.assert_exactly_once(now - D::hours(12), now + D::seconds(4))
            .await,
        600,
        "entries logged after the first run are collected too"
    );
    assert!(s.checkpoint_after.unwrap() <= now_s());
}

#[tokio::test]
async fn an_out_of_order_page_then_an_expired_token_doubles_nothing() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_FETCH_CONCURRENCY", "1");
    // All in one hour, so the reversed page stays inside the open segment.
    let hour = tv1_connector::timefmt::floor_hour(now_s() - D::hours(3));
    env.load(1000, hour + D::minutes(5), hour + D::minutes(55), |g| {
        g.burst_every = 0
    });
    // Page 1 comes newest-first; the token of page 2 has expired: the query restarts.
    env.sim.set_faults(Faults {
        reverse_pages: 1,
        expire_skip_tokens: 1,
        ..Faults::default()
    });
    let s = env.puller().run(deadline(60)).await.unwrap();
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!(s.query_restarts, 1);
    assert_eq!(s.records, 1000);
    env.assert_exactly_once(now_s() - D::hours(12), s.checkpoint_after.unwrap())
        .await;
}

#[tokio::test]
async fn an_entry_of_the_previous_hour_out_of_order_lands_in_its_own_hour_once() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_FETCH_CONCURRENCY", "1")
        .set("TV1_PAGE_SIZE", "50")
        .set("TV1_INITIAL_LOOKBACK", "3h")
        .set("TV1_RECONCILE_HORIZON", "1h");
    // One page across an hour's end, served newest first: hour H's entries open the segment,
    // then the previous hour's come.
    let h = tv1_connector::timefmt::floor_hour(now_s() - D::hours(2));
    env.load(50, h - D::minutes(1), h + D::minutes(1), |g| {
        g.burst_every = 0
    });
    env.sim.set_faults(Faults {
        reverse_pages: 1,
        ..Faults::default()
    });
    let runs = run_until_settled(&env).await;
    let late: u64 = runs
        .iter()
        .filter_map(|r| r.reconcile.as_ref())
        .map(|r| r.late_entries)
        .sum();
    assert_eq!(late, 0, "nothing was missing from its hour");
    env.assert_exactly_once(
        h - D::hours(3),
        runs.last().unwrap().checkpoint_after.unwrap(),
    )
    .await;
    // Each entry is in its own hour's partition.
    for (key, line) in env.lake().await {
        let t = tv1_connector::timefmt::parse_api_time(line["loggedDateTime"].as_str().unwrap())
            .unwrap();
        assert!(
            key.contains(&t.format("dt=%Y-%m-%d/hour=%H/").to_string()),
            "{key}: {t}"
        );
    }
}

#[tokio::test]
async fn entries_without_a_readable_time_land_once_even_at_slice_and_window_ends() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_MAX_WINDOW", "4h")
        .set("TV1_FETCH_CONCURRENCY", "4");
    let x = now_s() - D::hours(8);
    // The schedule stands at x: the next window is [x, x+4h) in four 1 h slices.
    let cp = serde_json::json!({"version": 2, "origin": x, "committed_to": x,
        "updated_at": x, "run_id": "test"});
    env.put_checkpoint(&cp).await;
    env.load(800, x, x + D::hours(7), |g| g.burst_every = 0);
    // Unreadable times at a slice end (x+1h) and at the window end (x+4h): the API's inclusive
    // end bound returns them to both adjacent queries.
    let odd: Vec<SimEntry> = [(1, "garbage-1"), (4, "garbage-4"), (2, "")]
        .iter()
        .map(|(h, t)| SimEntry {
            logged: x + D::hours(*h),
            visible_at: x,
            json: format!(r#"{{"loggedDateTime":"{t}","activity":"odd-{h}"}}"#),
            superseded_at: None,
        })
        .collect();
    env.sim.add_entries(odd);
    let mut runs = 0;
    loop {
        let s = env.puller().run(deadline(60)).await.unwrap();
        runs += 1;
        if s.checkpoint_after.unwrap() >= now_s() - D::seconds(2) || runs > 5 {
            break;
        }
    }
    let lake = env.lake().await;
    let odd: Vec<_> = lake
        .iter()
        .filter(|(k, _)| k.contains("/_unreadable/"))
        .collect();
    assert_eq!(odd.len(), 3, "{odd:?}");
    env.assert_exactly_once(x, now_s() - D::seconds(1)).await;
}

async fn tv1(env: &TestEnv, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .args(args)
        .envs(&env.vars)
        .output()
        .await
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_lost_or_corrupt_checkpoint_is_repaired_not_restarted() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("TV1_INITIAL_LOOKBACK", "3h");
    let now = now_s();
    env.load(1500, now - D::hours(3), now + D::seconds(3), |g| {
        g.burst_every = 0
    });
    let first = env.puller().run(deadline(60)).await.unwrap();
    let origin = first.window.unwrap().from;
    let key = "vision-one/audit/_state/checkpoint.json";

    // Lost (an expiry rule, a careless delete): the next run refuses to start over.
    env.s3
        .delete_object()
        .bucket(&env.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let e = env
        .puller()
        .run(deadline(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the checkpoint was lost") && e.contains("tv1 checkpoint set --committed-to"),
        "{e}"
    );
    let (ok, show, _) = tv1(&env, &["checkpoint", "show"]).await;
    assert!(ok);
    assert_eq!(show["state"], "missing");
    let ends = show["lake_ends_at"].as_str().unwrap().to_owned();
    assert_eq!(
        tv1_connector::timefmt::parse_api_time(&ends),
        first.checkpoint_after,
        "the newest object ends where the checkpoint stood"
    );
    let (ok, cp, err) = tv1(
        &env,
        &[
            "checkpoint",
            "set",
            "--committed-to",
            &ends,
            "--origin",
            &tv1_connector::timefmt::api_time(origin),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(cp["committed_to"], ends.as_str());

    // Corrupt: the run says how to repair it, and the repair keeps the origin.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = env.puller().run(deadline(60)).await.unwrap();
    assert_eq!(
        second.checkpoint_before,
        tv1_connector::timefmt::parse_api_time(&ends)
    );
    env.s3
        .put_object()
        .bucket(&env.bucket)
        .key(key)
        .body(b"{not json".to_vec().into())
        .send()
        .await
        .unwrap();
    let e = env
        .puller()
        .run(deadline(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tv1 checkpoint set") && !e.contains("fix or delete it"),
        "{e}"
    );
    let (_, show, _) = tv1(&env, &["checkpoint", "show"]).await;
    assert_eq!(show["state"], "unreadable");
    let ends = show["lake_ends_at"].as_str().unwrap().to_owned();
    let origin_s = tv1_connector::timefmt::api_time(origin);
    let (ok, _, err) = tv1(
        &env,
        &[
            "checkpoint",
            "set",
            "--committed-to",
            &ends,
            "--origin",
            &origin_s,
        ],
    )
    .await;
    assert!(ok, "{err}");
    // Moving back would write entries again: refused without --force.
    let back = tv1_connector::timefmt::api_time(origin + D::minutes(1));
    let (ok, _, err) = tv1(&env, &["checkpoint", "set", "--committed-to", &back]).await;
    assert!(!ok && err.contains("moving committed_to back"), "{err}");
    let last = run_to_completion(&env).await;
    let cp = env.checkpoint().await.unwrap();
    assert_eq!(cp["origin"], origin_s.as_str(), "origin kept");
    env.assert_exactly_once(now - D::hours(12), last.checkpoint_after.unwrap())
        .await;
}
