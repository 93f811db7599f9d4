//! The OCSF Parquet output end to end (LocalStack S3, the simulator, real `tv1` processes): with
//! `OCSF_OUTPUT=on` every stored JSON Lines record has exactly one OCSF record, whatever fails
//! between the two writes, and the Parquet reads back with DuckDB as valid OCSF 1.1.0.

use crate::common::*;
use chrono::{Duration as D, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tv1_connector::audit::simulate::{Generate, SimEntry, generate};
use tv1_connector::lake::ocsf::Dataset;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// Puts `cp` back as the audit checkpoint, its lease dropped (the run that held it died), and
/// runs once: what that run wrote of the OCSF output.
async fn run_from(env: &TestEnv, mut cp: Value) -> tv1_connector::lake::ocsf::writer::Landed {
    cp["lease"] = Value::Null;
    env.put_checkpoint(&cp).await;
    let summary = env.puller().run(deadline(60)).await.unwrap();
    summary.ocsf.expect("the OCSF output ran")
}

/// How many times each value occurs.
fn counts<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_runs_that_fail_or_are_killed_between_the_outputs_leave_one_ocsf_record_per_line() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    let ocsf_bucket = format!("{}-ocsf", env.bucket);
    env.set("OCSF_OUTPUT", "on")
        .set("OCSF_ACCOUNT_ID", ACCOUNT)
        .set("OCSF_BUCKET", &ocsf_bucket)
        .set("AWS_REGION", REGION)
        .set("TV1_PAGE_SIZE", "50")
        .set("TV1_LEASE", "2s")
        .set("TV1_OBJECT_MAX_RECORDS", "250")
        .set("TV1_RECONCILE_STEP", "5m")
        .set("TV1_RECONCILE_HORIZON", "5h")
        // Hour periods, so that the hour two hours back is a whole period before the run ends
        // (day periods: `audit_day_periods_...` below).
        .set("TV1_AUDIT_OCSF_PERIOD", "1h");
    let hour = two_hours_back(&mut env);
    // Real-looking entries (every category and access type, so every class), repeats included;
    // every tenth one served only after the pull has committed its time.
    let entries = generate(&Generate {
        count: 2500,
        from: hour,
        to: hour + D::hours(1),
        late_fraction: 0.0,
        repeat_fraction: 0.02,
        seed: rand::random(),
        ..Generate::default()
    });
    env.sim
        .set_entries(served_late(&entries, |i, _| i % 10 == 0));

    // 1. The OCSF bucket does not exist: the run commits the hour's JSONL, then fails writing
    //    the hour's Parquet, which stays to do (`ocsf_to` still at the hour).
    let err = env.puller().run(deadline(60)).await.unwrap_err();
    assert!(err.to_string().contains(&ocsf_bucket), "{err}");
    assert!(
        !env.lake().await.is_empty(),
        "the segment's JSONL object landed"
    );
    let cp = env.checkpoint().await.unwrap();
    assert_eq!(
        cp["ocsf_to"].as_str(),
        Some(tv1_connector::timefmt::api_time(hour).as_str()),
        "{cp}"
    );
    create_bucket(&env.s3, &ocsf_bucket).await;

    // 2. Pulls killed at random points, on a slow API, then runs until settled.
    kill_pulls_on_a_slow_api(&env, 8).await;
    run_until_settled(&env).await;

    // 3. The late entries are served; reconciliation, killed too, lands them.
    env.sim.set_entries(entries.clone());
    env.set("TV1_RECONCILE_HORIZON", "1h");
    kill_pulls_on_a_slow_api(&env, 6).await;
    run_until_settled(&env).await;

    let lake = env.lake().await;
    assert_exactly_once(&entries, &lake);
    assert!(
        lake.iter().any(|(k, _)| k.contains("/late_")),
        "late objects"
    );
    let rows = ocsf_rows(&env.s3, &ocsf_bucket, "ext/").await;
    let jsonl_ids = counts(
        lake.iter()
            .map(|(_, l)| l["_id"].as_str().unwrap().to_owned()),
    );
    let ocsf_ids = counts(
        rows.iter()
            .map(|r| r.event["metadata"]["uid"].as_str().unwrap().to_owned()),
    );
    assert_eq!(ocsf_ids.len(), jsonl_ids.len());
    assert!(ocsf_ids == jsonl_ids, "OCSF ids differ from JSONL ids");
    let classes = counts(rows.iter().map(|r| r.event["class_uid"].as_u64().unwrap()));
    assert_eq!(
        classes.keys().copied().collect::<Vec<_>>(),
        [3002, 3004, 6003]
    );
    assert_ocsf_layout(&rows, Dataset::Audit, REGION, ACCOUNT);
    // Runs that were killed cannot report what they wrote; the rest count theirs.
    let status = env.puller().status().await.unwrap();
    let ocsf = status.ocsf.expect("the status shows the OCSF output");
    assert!(
        ocsf.records_total > 0 && ocsf.records_total <= rows.len() as u64,
        "{ocsf:?}"
    );
    assert_eq!(ocsf.location, format!("s3://{ocsf_bucket}/ext/"));
    // The pull's records are in one object per class for the hour, however many segments and
    // runs made it; reconciliation's late objects have their own.
    let pull_files: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r.file.as_str())
        .filter(|f| !f.contains("late_"))
        .collect();
    assert_eq!(pull_files.len(), 3, "{pull_files:?}");
    assert!(
        pull_files.iter().all(|f| f.ends_with("_pull.parquet")),
        "{pull_files:?}"
    );
    // A run that wrote the hour's objects and died before moving `ocsf_to` is redone: the same
    // objects, kept, and no record twice.
    let mut cp = env.checkpoint().await.unwrap();
    cp["ocsf_to"] = json!(tv1_connector::timefmt::api_time(hour));
    cp["ocsf_until"] = json!(tv1_connector::timefmt::api_time(hour + D::hours(1)));
    let landed = run_from(&env, cp).await;
    assert_eq!((landed.objects, landed.kept_existing), (0, 3), "{landed:?}");
    assert_eq!(
        ocsf_rows(&env.s3, &ocsf_bucket, "ext/").await.len(),
        rows.len()
    );
    println!("{} records, classes {classes:?}", rows.len());
}

/// The hour a stored line's key places it in (`.../dt=YYYY-MM-DD/hour=HH/...`).
fn hour_of_key(key: &str) -> chrono::DateTime<Utc> {
    let dt = &key[key.find("dt=").unwrap() + 3..][..10];
    let hour = &key[key.find("hour=").unwrap() + 5..][..2];
    format!("{dt}T{hour}:00:00Z").parse().unwrap()
}

/// With the default audit period (a day), a day's pull is one Parquet object per class, written
/// once the day is committed; the day the pull started in is a shorter period, up to midnight.
/// A run that died after writing some of a day's objects is redone as that day even after the
/// period is changed to an hour, which takes effect from the next period boundary: no record
/// twice, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_day_periods_are_one_object_per_class_and_a_changed_period_waits_for_the_boundary() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    let ocsf_bucket = ocsf_on(&mut env, ACCOUNT, REGION).await;
    env.set("TV1_RECONCILE_HORIZON", "0")
        .set("TV1_MAX_WINDOW", "3d");
    let now = now_s();
    // Midnight of the day that is surely committed by the time the pull settles.
    let today = (now - D::minutes(15))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let origin = today - D::hours(26); // 22:00 the day before yesterday
    env.set(
        "TV1_INITIAL_LOOKBACK",
        &format!("{}s", (now - origin).num_seconds()),
    );
    let entries = generate(&Generate {
        count: 3000,
        from: origin,
        to: now - D::minutes(10),
        late_fraction: 0.0,
        seed: rand::random(),
        ..Generate::default()
    });
    env.sim.set_entries(entries.clone());
    run_until_settled(&env).await;
    // A run writes at most a day's hours of periods: yesterday comes after the first, shorter
    // period, in the next run.
    env.puller().run(deadline(60)).await.unwrap();

    let lake = env.lake().await;
    assert_exactly_once(&entries, &lake);
    // The lines that have OCSF rows: those of hours before `covered`; each exactly once.
    let s3 = env.s3.clone();
    let check = async |covered: chrono::DateTime<Utc>| {
        let want = counts(
            lake.iter()
                .filter(|(k, _)| hour_of_key(k) < covered)
                .map(|(_, l)| l["_id"].as_str().unwrap().to_owned()),
        );
        let rows = ocsf_rows(&s3, &ocsf_bucket, "ext/").await;
        let got = counts(
            rows.iter()
                .map(|r| r.event["metadata"]["uid"].as_str().unwrap().to_owned()),
        );
        assert!(!want.is_empty());
        assert_eq!(got.len(), want.len(), "covered to {covered}");
        assert!(
            got == want,
            "OCSF ids differ from the JSONL ids before {covered}"
        );
        assert_ocsf_layout(&rows, Dataset::Audit, REGION, ACCOUNT);
        rows.iter()
            .map(|r| {
                (
                    r.source.clone(),
                    r.file.rsplit('/').next().unwrap().to_owned(),
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let name = |t: chrono::DateTime<Utc>| format!("{}_pull.parquet", t.format("%Y-%m-%d_%H"));
    let files = check(today).await;
    let classes = ["tv1-audit-auth", "tv1-audit-entity", "tv1-audit-api"];
    let mut expected = std::collections::BTreeSet::new();
    for start in [origin, today - D::days(1)] {
        for c in classes {
            expected.insert((c.to_owned(), name(start)));
        }
    }
    assert_eq!(files, expected);
    let cp = env.checkpoint().await.unwrap();
    let at = |t: chrono::DateTime<Utc>| json!(tv1_connector::timefmt::api_time(t));
    let shown = env.puller().status().await.unwrap().ocsf.unwrap();
    assert_eq!(
        (shown.written_to, shown.period_seconds),
        (Some(today), 86_400)
    );
    assert_eq!(
        (&cp["ocsf_to"], &cp["ocsf_until"]),
        (&at(today), &at(today + D::days(1))),
        "{cp}"
    );

    // A run dies after writing two of yesterday's three objects; then the period is changed.
    let yesterday = today - D::days(1);
    let lost = bucket_keys(&env.s3, &ocsf_bucket)
        .await
        .into_iter()
        .find(|k| k.contains("tv1-audit-entity/") && k.ends_with(&name(yesterday)))
        .unwrap();
    env.s3
        .delete_object()
        .bucket(&ocsf_bucket)
        .key(&lost)
        .send()
        .await
        .unwrap();
    let mut cp = cp;
    cp["ocsf_to"] = at(yesterday);
    cp["ocsf_until"] = at(today);
    env.set("TV1_AUDIT_OCSF_PERIOD", "1h");
    let landed = run_from(&env, cp).await;
    // The day again, as a day: the lost object written, the two others kept. A run writes at
    // most a day's hours, so it stops there, and hour periods start at the boundary.
    assert_eq!((landed.objects, landed.kept_existing), (1, 2), "{landed:?}");
    let cp = env.checkpoint().await.unwrap();
    assert_eq!(
        (&cp["ocsf_to"], &cp["ocsf_until"]),
        (&at(today), &at(today + D::hours(1))),
        "{cp}"
    );
    // A run with the output off, while today's hour periods are not written yet: they stay to
    // do, and are written once it is on again.
    env.set("OCSF_OUTPUT", "off");
    env.puller().run(deadline(60)).await.unwrap();
    let off = env.checkpoint().await.unwrap();
    assert_eq!(
        (&off["ocsf_to"], &off["ocsf_until"]),
        (&cp["ocsf_to"], &cp["ocsf_until"])
    );
    env.set("OCSF_OUTPUT", "on");
    // The next run writes today's whole hours, an object per class each.
    env.puller().run(deadline(60)).await.unwrap();
    let cp = env.checkpoint().await.unwrap();
    let committed: chrono::DateTime<Utc> = cp["committed_to"].as_str().unwrap().parse().unwrap();
    let covered = tv1_connector::timefmt::floor_hour(committed);
    let files = check(covered).await;
    assert_eq!(
        (&cp["ocsf_to"], &cp["ocsf_until"]),
        (&at(covered), &at(covered + D::hours(1))),
        "{cp}"
    );
    let hours: std::collections::BTreeSet<_> = files
        .iter()
        .map(|(_, f)| f.clone())
        .filter(|f| f.starts_with(&today.format("%Y-%m-%d").to_string()))
        .collect();
    // One name per whole hour of today that has lines (an object per class of it).
    let want: std::collections::BTreeSet<_> = lake
        .iter()
        .map(|(k, _)| hour_of_key(k))
        .filter(|h| *h >= today && *h < covered)
        .map(name)
        .collect();
    assert_eq!(hours, want);

    if covered == today {
        println!(
            "{} objects (no whole hour of today yet); {landed:?}",
            files.len()
        );
        return;
    }
    // A checkpoint of the version before periods (`ocsf_to`, no `ocsf_until`), back at
    // midnight, with the day period configured again: its period is finished as the hour that
    // version may have begun (its objects kept), and the day period starts at the next grid
    // boundary, not before.
    let mut cp = env.checkpoint().await.unwrap();
    cp["ocsf_to"] = at(today);
    cp.as_object_mut().unwrap().remove("ocsf_until");
    env.set("TV1_AUDIT_OCSF_PERIOD", "24h");
    let kept = run_from(&env, cp).await;
    assert_eq!((kept.objects, kept.kept_existing), (0, 3), "{kept:?}");
    let cp = env.checkpoint().await.unwrap();
    assert_eq!(
        (&cp["ocsf_to"], &cp["ocsf_until"]),
        (&at(today + D::hours(1)), &at(today + D::days(1))),
        "{cp}"
    );
    println!("{} objects; {landed:?}", files.len());
}

/// One real-looking native event of every kind the mapping knows, numbered `n`.
fn native_event(n: usize, day_back: i64) -> Value {
    const IDS: [u32; 16] = [
        4624, 4625, 4634, 4768, 4769, 4776, 4672, 4720, 4726, 4740, 4728, 4733, 5136, 7045, 1102,
        4704,
    ];
    let id = IDS[n % IDS.len()];
    let time = Utc::now() - D::days(day_back) - D::seconds(n as i64);
    json!({"time": tv1_connector::timefmt::api_time(time), "event_id": id, "computer": "DC05.corp.example",
        "channel": "Security", "record_id": 700_000 + n, "provider": "Microsoft-Windows-Security-Auditing",
        "data": {"SubjectUserName": "admin", "SubjectDomainName": "CORP", "TargetUserName": format!("user{}", n % 37),
            "TargetDomainName": "CORP", "LogonType": "3", "IpAddress": "10.1.2.3", "IpPort": "50000",
            "Status": if id == 4776 { "0xc000006a" } else { "0x0" }, "MemberName": "CN=svc-backup,OU=Service,DC=corp,DC=example",
            "ObjectDN": "CN=Policies,CN=System,DC=corp,DC=example", "ServiceName": "PSEXESVC",
            "PrivilegeList": "SeBackupPrivilege SeDebugPrivilege"}})
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    batch: &Value,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{url}/v1/events"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(batch.to_string().as_bytes()))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_batches_refused_retried_duplicated_and_killed_leave_one_ocsf_record_per_event() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    let ocsf_bucket = format!("{}-ocsf", lake.bucket);
    let vars = [
        ("API_KEY_PARAM", lake.param.as_str()),
        ("BUCKET", lake.bucket.as_str()),
        ("OCSF_OUTPUT", "on"),
        ("OCSF_ACCOUNT_ID", ACCOUNT),
        ("OCSF_BUCKET", ocsf_bucket.as_str()),
        ("AWS_REGION", REGION),
    ];
    let mut served = serve(&vars).await;
    let http = reqwest::Client::new();
    let key = lake.key.as_str();
    let envelopes: Vec<Value> = [
        "winlogbeat-batch.json",
        "nxlog-batch.json",
        "native-batch.json",
    ]
    .iter()
    .map(|n| serde_json::from_str(&sample_moved_to_yesterday(n)).unwrap())
    .collect();

    // 1. The OCSF bucket is missing: batches still land (ad-ingest writes no OCSF), and the
    //    compaction of their window fails, naming the output, until it exists; then the next
    //    run writes it whole.
    let r = post(&http, &served.url, key, &envelopes[0]).await.unwrap();
    assert_eq!(r.status(), 200);
    let err = tv1_connector::ad::Compactor::new(&ad_config(&lake.bucket, &vars), lake.s3.clone());
    let windows = ad_config(&lake.bucket, &[]);
    tokio::time::sleep(windows.window + windows.settle + Duration::from_secs(2)).await;
    let e = err.run(None).await.unwrap_err();
    assert!(e.to_string().contains(&ocsf_bucket), "{e}");
    create_bucket(&lake.s3, &ocsf_bucket).await;

    // 2. Every sample shape (the first one retried), then every batch again as a duplicate.
    let mut sent = 0;
    for round in ["accepted", "duplicate"] {
        for (i, b) in envelopes.iter().enumerate() {
            let v = json_of(post(&http, &served.url, key, b).await.unwrap()).await;
            let retried = round == "accepted" && i == 0;
            let want = if retried { "duplicate" } else { round };
            assert_eq!(v["status"], want, "{v}");
        }
        for (name, agent) in [
            ("fluentbit-winevtlog.ndjson", "fluent-bit-dc06"),
            ("fluentbit-winlog.ndjson", "fluent-bit-dc07"),
            ("vector-windows-event-log.ndjson", "vector-dc08"),
        ] {
            let body = sample_moved_to_yesterday(name);
            let r = http
                .post(format!("{}/v1/events", served.url))
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/x-ndjson")
                .header("x-agent-id", agent)
                .body(body)
                .send()
                .await
                .unwrap();
            let v = json_of(r).await;
            assert_eq!(v["status"], round, "{name}: {v}");
        }
        for name in [
            "otel-windowseventlog-hec.json",
            "windows-xml-hec.json",
            "windows-text-hec.json",
        ] {
            let r = http
                .post(format!("{}/services/collector/event", served.url))
                .header("authorization", format!("Splunk {key}"))
                .body(sample_moved_to_yesterday(name))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name}");
        }
        sent += 1;
    }
    assert_eq!(sent, 2);

    // 3. A large batch over three days, with `tv1 serve` killed at random points while it
    //    stores it; the agent resends to the restarted server until it is stored.
    let big = json!({"agent": {"id": "dc05-big", "hostname": "DC05.corp.example"}, "batch_id": "dc05-big-000001",
        "events": (0..3000).map(|n| native_event(n, 1 + (n % 3) as i64)).collect::<Vec<_>>()});
    for _ in 0..6 {
        let url = served.url.clone();
        let (http2, big2, key2) = (http.clone(), big.clone(), key.to_owned());
        let request = tokio::spawn(async move { post(&http2, &url, &key2, &big2).await });
        tokio::time::sleep(Duration::from_millis(rand::random_range(20..600))).await;
        signal(served.child.id(), "-KILL");
        let _ = request.await;
        served = serve(&vars).await;
    }
    let v = json_of(post(&http, &served.url, key, &big).await.unwrap()).await;
    assert!(
        v["status"] == "accepted" || v["status"] == "duplicate",
        "{v}"
    );

    // Every stored event has exactly one OCSF record: same batch, same original event. (The
    // served compactor, killed with the server, may have compacted some windows already.)
    compact_ad(&lake.s3, &lake.bucket, &vars).await;
    let lines = lake_lines(&lake.s3, &lake.bucket).await;
    let rows = ocsf_rows(&lake.s3, &ocsf_bucket, "ext/").await;
    let original = |batch: &str, event: &Value| (batch.to_owned(), event.to_string());
    let stored = counts(
        lines
            .iter()
            .map(|(_, l)| original(l["batch_id"].as_str().unwrap(), &l["event"])),
    );
    let mapped = counts(rows.iter().map(|r| {
        let raw = r.event["raw_data"].as_str().unwrap();
        let event = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        original(r.event["unmapped"]["batch_id"].as_str().unwrap(), &event)
    }));
    assert_eq!(rows.len(), lines.len());
    assert!(
        stored == mapped,
        "OCSF records differ from the stored events"
    );
    let classes = counts(rows.iter().map(|r| r.event["class_uid"].as_u64().unwrap()));
    assert_eq!(
        classes.keys().copied().collect::<Vec<_>>(),
        [3001, 3002, 3003, 3004, 3005, 3006]
    );
    assert_ocsf_layout(&rows, Dataset::Ad, REGION, ACCOUNT);
    println!("{} records, classes {classes:?}", rows.len());
}

/// A backfill replaces its parts on every rerun; their Parquet objects follow: replaced, and
/// deleted where a part or a class is gone.
#[tokio::test]
async fn a_rerun_backfill_leaves_parquet_equal_to_its_parts() {
    if skip_without_localstack() {
        return;
    }
    let mut env = TestEnv::new().await;
    env.set("OCSF_OUTPUT", "on")
        .set("OCSF_ACCOUNT_ID", ACCOUNT)
        .set("AWS_REGION", REGION)
        .set("TV1_RECONCILE_HORIZON", "0")
        .set("TV1_OBJECT_MAX_RECORDS", "100");
    let hour = tv1_connector::timefmt::floor_hour(Utc::now()) - D::hours(30);
    // No burst: 450 entries in one second make one part whatever is removed around them, and
    // then a rerun may have as many parts as the first run (nothing stale to remove).
    let entries = generate(&Generate {
        count: 900,
        from: hour,
        to: hour + D::hours(2),
        late_fraction: 0.0,
        burst_every: 0,
        seed: rand::random(),
        ..Generate::default()
    });
    let ids_match = async |env: &TestEnv| {
        let lake = env.lake().await;
        let rows = ocsf_rows(&env.s3, &env.bucket, "ext/").await;
        let jsonl = counts(
            lake.iter()
                .map(|(_, l)| l["_id"].as_str().unwrap().to_owned()),
        );
        let ocsf = counts(
            rows.iter()
                .map(|r| r.event["metadata"]["uid"].as_str().unwrap().to_owned()),
        );
        assert_ocsf_layout(&rows, Dataset::Audit, REGION, ACCOUNT);
        assert!(
            jsonl == ocsf,
            "{} JSONL records, {} OCSF",
            lake.len(),
            rows.len()
        );
        (
            lake.len(),
            counts(rows.iter().map(|r| r.event["class_uid"].as_u64().unwrap())),
        )
    };
    let backfill = async |env: &TestEnv| {
        env.puller()
            .backfill(
                hour,
                hour + D::hours(2),
                tokio::time::Instant::now() + Duration::from_secs(60),
                &|_| {},
            )
            .await
            .unwrap()
    };
    env.sim.set_entries(entries.clone());
    let first = backfill(&env).await;
    assert_eq!(first.ocsf.as_ref().unwrap().records, 900);
    let (n, classes) = ids_match(&env).await;
    assert_eq!(n, 900);
    assert!(classes.contains_key(&3002), "{classes:?}");
    // The same range again, with the logons gone and so fewer parts: their Parquet goes too.
    let rest: Vec<SimEntry> = entries
        .into_iter()
        .filter(|e| !e.json.contains("Logon and Logoff"))
        .collect();
    let kept = rest.len();
    env.sim.set_entries(rest);
    let second = backfill(&env).await;
    assert!(second.removed > 0, "{second:?}");
    let (n, classes) = ids_match(&env).await;
    assert_eq!(n, kept);
    assert!(!classes.contains_key(&3002), "{classes:?}");
}
