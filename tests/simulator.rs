//! The simulator behaves like the real endpoint where the puller depends on it.

use std::time::Duration;
use tv1_connector::audit::simulate::{Faults, SimEntry, SimSettings, Simulator};

async fn start(settings: SimSettings) -> (Simulator, String) {
    let sim = Simulator::new(settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sim.clone().serve(listener));
    (sim, url)
}

fn settings() -> SimSettings {
    SimSettings {
        token: "t0k".into(),
        skip_token_ttl: Duration::from_secs(60),
        end_inclusive: true,
        start_inclusive: true,
    }
}

fn entry(t: &str, n: u32) -> SimEntry {
    let logged = tv1_connector::timefmt::parse_api_time(t).unwrap();
    SimEntry {
        logged,
        visible_at: logged,
        json: format!(r#"{{"loggedDateTime":"{t}","n":{n}}}"#),
        superseded_at: None,
    }
}

async fn get(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default(),
    )
}

#[tokio::test]
async fn validates_like_the_real_api() {
    let (_sim, url) = start(settings()).await;
    let q = |rest: &str| format!("{url}/v3.0/audit/logs?{rest}");
    assert_eq!(get(&q("top=50"), None).await.0, 401);
    assert_eq!(get(&q("top=50"), Some("nope")).await.0, 401);
    let (s, body) = get(&q("top=500"), Some("t0k")).await;
    assert_eq!(s, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("top"));
    let (s, _) = get(&q("startDateTime=2026-11-21T10:00:00.123Z"), Some("t0k")).await;
    assert_eq!(s, 400, "milliseconds are not supported");
    assert_eq!(
        get(
            &q("top=200&orderBy=loggedDateTime%20asc&labels=all"),
            Some("t0k")
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn pages_with_next_links_bounds_and_expiring_tokens() {
    let (sim, url) = start(settings()).await;
    let mut e: Vec<SimEntry> = (0..120).map(|i| entry("2026-11-21T10:00:05Z", i)).collect();
    e.push(entry("2026-11-21 10:00:10", 999));
    e.push(entry("2026-11-21T09:59:59Z", 998));
    sim.set_entries(e);
    let first = format!(
        "{url}/v3.0/audit/logs?startDateTime=2026-11-21T10:00:00Z&endDateTime=2026-11-21T10:00:10Z&top=50"
    );
    let (_, p1) = get(&first, Some("t0k")).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 50);
    let next = p1["nextLink"].as_str().unwrap();
    assert!(
        next.contains("loggedDateTime asc"),
        "links carry a literal space: {next}"
    );
    let (mut total, mut link) = (50, Some(next.to_owned()));
    while let Some(l) = link {
        let (s, p) = get(&l, Some("t0k")).await;
        assert_eq!(s, 200);
        total += p["items"].as_array().unwrap().len();
        link = p["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(
        total, 121,
        "start inclusive, end inclusive by default, earlier entry excluded"
    );

    sim.set_faults(Faults {
        expire_skip_tokens: 1,
        ..Faults::default()
    });
    let (s, body) = get(next, Some("t0k")).await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["number"], 1_010_550);
}

#[tokio::test]
async fn faults_and_late_entries() {
    let (sim, url) = start(settings()).await;
    let now = tv1_connector::timefmt::floor_second(chrono::Utc::now());
    let late = SimEntry {
        logged: now - chrono::Duration::seconds(2),
        visible_at: now + chrono::Duration::seconds(2),
        json: "{}".into(),
        superseded_at: None,
    };
    sim.set_entries(vec![late]);
    let all = format!("{url}/v3.0/audit/logs?top=50");
    let (_, p) = get(&all, Some("t0k")).await;
    assert_eq!(p["items"].as_array().unwrap().len(), 0, "not visible yet");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (_, p) = get(&all, Some("t0k")).await;
    assert_eq!(
        p["items"].as_array().unwrap().len(),
        1,
        "visible after its delay"
    );

    sim.set_faults(Faults {
        rate_limit_per_minute: Some(2),
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|_| get(&all, Some("t0k"))))
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    sim.set_faults(Faults {
        forbidden: true,
        ..Faults::default()
    });
    assert_eq!(get(&all, Some("t0k")).await.0, 403);
}

#[tokio::test]
async fn the_cli_serves_entries_late_by_minutes_to_hours() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .args(["simulate", "--port", &port.to_string(), "--entries", "4000"])
        .args([
            "--late-fraction",
            "0.25",
            "--late-min",
            "5m",
            "--late-max",
            "6h",
        ])
        .args(["--late-spread", "log-uniform"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/_sim/entries");
    let mut entries = None;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await {
            entries =
                Some(serde_json::from_slice::<Vec<SimEntry>>(&r.bytes().await.unwrap()).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let entries = entries.expect("the simulator answered");
    let delays: Vec<i64> = entries
        .iter()
        .map(|e| (e.visible_at - e.logged).num_seconds())
        .filter(|d| *d > 0)
        .collect();
    let share = delays.len() as f64 / entries.len() as f64;
    assert!((0.2..0.3).contains(&share), "{share}");
    assert!(delays.iter().all(|d| (300..=6 * 3600).contains(d)));
    assert!(delays.iter().any(|d| *d < 900) && delays.iter().any(|d| *d > 3 * 3600));
}
