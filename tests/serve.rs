//! `tv1 serve`: the ad-ingest handler over plain HTTP, as a real process against LocalStack.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn the_endpoint_over_plain_http_with_gzip_retries_refusals_and_a_clean_stop() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, key, mut served) = lake_and_server().await;
    let http = reqwest::Client::new();
    let t = tv1_connector::timefmt::api_time(chrono::Utc::now());
    let events: Vec<Value> = (0..50)
        .map(|i| json!({"event_id": if i % 2 == 0 { 4624 } else { 4720 }, "time": t, "computer": "DC01", "record_id": i}))
        .collect();
    let batch = json!({"agent": {"id": "dc01", "hostname": "DC01.corp.example"}, "batch_id": "b1", "events": events});
    let body = gzip(&serde_json::to_vec(&batch).unwrap());
    let post = |auth: String, body: Vec<u8>| {
        http.post(format!("{}/v1/events", served.url))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
    };
    let r = post(format!("Bearer {key}"), body.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = json_of(r).await;
    assert_eq!(v["status"], "accepted", "{v}");
    assert_eq!(v["events"], 50);
    // An agent retrying after a lost reply.
    let v: Value = json_of(post(format!("Bearer {key}"), body.clone()).await.unwrap()).await;
    assert_eq!(v["status"], "duplicate");
    // A wrong key: our JSON error, nothing written.
    let r = post("Bearer not-the-key".into(), body.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = json_of(r).await;
    assert_eq!(v["error"]["code"], "invalid_api_key");
    // A body over every limit is refused without being read whole.
    let r = post(format!("Bearer {key}"), vec![b'x'; 8 << 20])
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // The agent list is kept by the compaction of each window.
    compact_landed(&s3, &bucket).await;
    let r = http
        .get(format!("{}/v1/agents", served.url))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    let v: Value = json_of(r).await;
    assert_eq!(v["agents"][0]["id"], "dc01");
    assert_eq!(v["agents"][0]["events_received"], 50);
    let r = http
        .delete(format!("{}/v1/agents", served.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    // Bare NDJSON, the agent named by headers (as Fluent Bit's or Vector's `http` output sends).
    let ndjson: String = (100..110)
        .map(|i| {
            format!(
                "{}\n",
                json!({"event_id": 4624, "time": t, "computer": "DC02", "record_id": i})
            )
        })
        .collect();
    let r = http
        .post(format!("{}/v1/events", served.url))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/x-ndjson")
        .header("x-agent-id", "dc02")
        .header("x-agent-hostname", "DC02.corp.example")
        .header("idempotency-key", "dc02-000001")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    let v = json_of(r).await;
    assert_eq!(v["status"], "accepted", "{v}");
    assert_eq!(v["batch_id"], "dc02-000001", "{v}");
    assert_eq!(lake_lines(&s3, &bucket).await.len(), 60, "exactly once");

    // SIGTERM: a clean stop.
    signal(served.child.id(), "-TERM");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = served.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&served.log).unwrap();
    assert!(
        log.lines().filter(|l| l.contains("request")).count() >= 7,
        "an access log line per request:\n{log}"
    );
    assert!(
        log.contains("status=403") && log.contains("invalid_api_key"),
        "{log}"
    );
    assert!(
        !log.contains(&key) && !log.contains("not-the-key"),
        "a key in the log"
    );
}

#[tokio::test]
async fn splunk_hec_routes_replies_and_retries() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, key, served) = lake_and_server().await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", served.url);
    let r = http
        .get(url("/services/collector/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json_of(r).await,
        json!({"text": "HEC is healthy", "code": 17})
    );

    let t = tv1_connector::timefmt::api_time(chrono::Utc::now());
    let hec_event = |i: u32| {
        json!({"time": chrono::Utc::now().timestamp(), "host": "DC01.corp.example", "sourcetype": "WinEventLog:Security",
            "fields": {"site": "hq"},
            "event": {"@timestamp": t, "winlog": {"event_id": 4624, "computer_name": "DC01.corp.example", "record_id": i, "channel": "Security"}}})
    };
    let body: String = (0..3).map(|i| format!("{}\n", hec_event(i))).collect();
    let send = |auth: Option<String>, path: &'static str, body: Vec<u8>| {
        let mut r = http
            .post(url(path))
            .header(
                "x-splunk-request-channel",
                "0f9a1c2e-7d3b-4e6a-9c1f-5b2d8e4a7c01",
            )
            .header("content-encoding", "gzip")
            .body(gzip(&body));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let splunk = Some(format!("Splunk {key}"));
    for path in [
        "/services/collector/event",
        "/services/collector/event/1.0",
        "/services/collector",
    ] {
        // The same body on every route: stored once, the retries are no-ops.
        let r = send(splunk.clone(), path, body.clone().into_bytes())
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(json_of(r).await, json!({"text": "Success", "code": 0}));
    }
    let lines = lake_lines(&s3, &bucket).await;
    assert_eq!(lines.len(), 3, "exactly once");
    let (_, l) = &lines[0];
    // The agent is the host, not the channel (Vector draws a new one on every start).
    assert_eq!(l["agent_id"], "dc01.corp.example");
    assert_eq!(l["shape"], "winlogbeat");
    assert_eq!(l["hec"]["fields"]["site"], "hq");
    assert_eq!(l["hec"]["sourcetype"], "WinEventLog:Security");
    assert_eq!(l["event"]["winlog"]["event_id"], 4624);

    // Refusals in HEC's codes; none writes anything.
    let cases: Vec<(Option<String>, &str, u16, Value)> = vec![
        (
            None,
            &body,
            401,
            json!({"text": "Token is required", "code": 2}),
        ),
        (
            Some("Basic Zm9vOmJhcg==".into()),
            &body,
            401,
            json!({"text": "Invalid authorization", "code": 3}),
        ),
        (
            Some("Splunk wrong".into()),
            &body,
            403,
            json!({"text": "Invalid token", "code": 4}),
        ),
        (
            splunk.clone(),
            "\n",
            400,
            json!({"text": "No data", "code": 5}),
        ),
        (
            splunk.clone(),
            "{\"event\":{\"x\":1}}\n{\"event\":",
            400,
            json!({"text": "Invalid data format", "code": 6, "invalid-event-number": 1}),
        ),
        (
            splunk.clone(),
            "{\"host\":\"h\"}",
            400,
            json!({"text": "Event field is required", "code": 12, "invalid-event-number": 0}),
        ),
        (
            splunk.clone(),
            "{\"event\":\"\"}",
            400,
            json!({"text": "Event field cannot be blank", "code": 13, "invalid-event-number": 0}),
        ),
    ];
    for (auth, b, status, want) in cases {
        let r = send(auth, "/services/collector/event", b.as_bytes().to_vec())
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{want}");
        assert_eq!(json_of(r).await, want);
    }
    // An event the connector cannot read as a Windows event: a HEC success (agents drop a
    // request answered 400), the event kept in quarantine with its reason, the other stored.
    let odd = format!(
        "{}\n{}",
        hec_event(7),
        json!({"event": {"message": "not a windows event"}})
    );
    let r = send(
        splunk.clone(),
        "/services/collector/event",
        odd.into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    assert_eq!(v, json!({"text": "Success", "code": 0, "quarantined": 1}));
    let q = quarantine_lines(&s3, &bucket).await;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].1["index"], 1);
    assert!(
        q[0].1["reason"]
            .as_str()
            .unwrap()
            .contains("unrecognised event shape"),
        "{q:?}"
    );
    let r = http
        .post(url("/services/collector/raw"))
        .header("authorization", splunk.clone().unwrap())
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json_of(r).await["code"], 404);
    assert_eq!(
        lake_lines(&s3, &bucket).await.len(),
        4,
        "refusals wrote nothing; of the quarantined request, its good event"
    );
}

#[tokio::test]
async fn every_agent_shape_lands_through_the_endpoint() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, key, served) = lake_and_server().await;
    let http = reqwest::Client::new();
    let mut expected = 0;
    for (name, agent) in [
        ("fluentbit-winevtlog.ndjson", "fluent-bit-dc06"),
        ("fluentbit-winlog.ndjson", "fluent-bit-dc07"),
        ("vector-windows-event-log.ndjson", "vector-dc08"),
    ] {
        let body = sample_moved_to_yesterday(name);
        expected += body.lines().count();
        let r = http
            .post(format!("{}/v1/events", served.url))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/x-ndjson")
            .header("x-agent-id", agent)
            .body(gzip(body.as_bytes()))
            .header("content-encoding", "gzip")
            .send()
            .await
            .unwrap();
        let v = json_of(r).await;
        assert_eq!(v["status"], "accepted", "{name}: {v}");
    }
    for name in [
        "otel-windowseventlog-hec.json",
        "windows-xml-hec.json",
        "windows-text-hec.json",
    ] {
        let body = sample_moved_to_yesterday(name);
        expected += body.lines().count();
        let r = http
            .post(format!("{}/services/collector/event", served.url))
            .header("authorization", format!("Splunk {key}"))
            .body(body)
            .send()
            .await
            .unwrap();
        let v = json_of(r).await;
        assert_eq!(v, json!({"text": "Success", "code": 0}), "{name}");
    }
    let lines = lake_lines(&s3, &bucket).await;
    assert_eq!(lines.len(), expected);
    let mut shapes: Vec<String> = lines
        .iter()
        .map(|(_, l)| l["shape"].as_str().unwrap().to_owned())
        .collect();
    shapes.sort();
    shapes.dedup();
    assert_eq!(
        shapes,
        [
            "fluent_bit_winevtlog",
            "fluent_bit_winlog",
            "otel_windows_event_log",
            "vector_windows_event_log",
            "windows_text",
            "windows_xml"
        ]
    );
}

/// A batch with events the lake cannot take, `tv1 serve` killed at random points while it
/// stores it, the agent resending until answered: every event once, in the lake or in the
/// quarantine, whatever the kills interrupted.
#[tokio::test]
async fn quarantined_events_are_stored_exactly_once_through_kills_and_resends() {
    if skip_without_localstack() {
        return;
    }
    let lake = ad_lake().await;
    let vars = [
        ("API_KEY_PARAM", lake.param.as_str()),
        ("BUCKET", lake.bucket.as_str()),
    ];
    let mut served = serve(&vars).await;
    let now = chrono::Utc::now();
    // 3,000 events over 60 days of the past (a backlog); every 7th has no computer name.
    let events: Vec<Value> = (0..3000)
        .map(|n| {
            let t = tv1_connector::timefmt::api_time(now - chrono::Duration::days((n % 60) as i64));
            if n % 7 == 0 {
                json!({"event_id": 4624, "time": t, "record_id": n})
            } else {
                json!({"event_id": 4624, "time": t, "computer": "DC09", "record_id": n})
            }
        })
        .collect();
    let body = gzip(
        &serde_json::to_vec(
            &json!({"agent": {"id": "dc09"}, "batch_id": "backlog-1", "events": events}),
        )
        .unwrap(),
    );
    let post = |url: String, body: Vec<u8>, key: String| async move {
        reqwest::Client::new()
            .post(format!("{url}/v1/events"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await
    };
    for _ in 0..6 {
        let request = tokio::spawn(post(served.url.clone(), body.clone(), lake.key.clone()));
        tokio::time::sleep(Duration::from_millis(rand::random_range(20..500))).await;
        signal(served.child.id(), "-KILL");
        let _ = request.await;
        served = serve(&vars).await;
    }
    let r = post(served.url.clone(), body.clone(), lake.key.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json_of(r).await;
    assert_eq!(
        (v["events"].as_u64(), v["quarantined"].as_u64()),
        (Some(3000), Some(429)),
        "{v}"
    );
    let stored = lake_lines(&lake.s3, &lake.bucket).await;
    let quarantined = quarantine_lines(&lake.s3, &lake.bucket).await;
    let mut seen = vec![0; 3000];
    for (_, l) in &stored {
        seen[l["record_id"].as_u64().unwrap() as usize] += 1;
    }
    for (_, l) in &quarantined {
        assert!(
            l["reason"]
                .as_str()
                .unwrap()
                .contains("computer name is missing"),
            "{l}"
        );
        assert_eq!(l["index"], l["event"]["record_id"]);
        seen[l["index"].as_u64().unwrap() as usize] += 1;
    }
    assert!(
        seen.iter().all(|n| *n == 1),
        "not once: {:?}",
        seen.iter()
            .enumerate()
            .filter(|(_, n)| **n != 1)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!((stored.len(), quarantined.len()), (2571, 429));
    // Once more: a duplicate, which says what the batch was.
    let v = json_of(
        post(served.url.clone(), body, lake.key.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (v["status"].as_str(), v["quarantined"].as_u64()),
        (Some("duplicate"), Some(429)),
        "{v}"
    );
}

/// Raw HTTP over TCP: what a client that sends its request slowly, or not at all, looks like.
async fn raw(url: &str, request: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    s
}

/// What the server says on `s` within `within`: its reply's first line, `closed`, or `open`.
async fn answer(s: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Err(_) => "open".into(),
        Ok(Ok(0)) | Ok(Err(_)) => "closed".into(),
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_key_or_too_slow_are_refused_early_and_cut_off() {
    if skip_without_localstack() {
        return;
    }
    let (s3, bucket, key, served) = lake_and_server().await;
    // An upload announcing 4 MB and no key: refused from its headers, before any body.
    let mut upload = raw(
        &served.url,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n",
    )
    .await;
    assert!(
        answer(&mut upload, Duration::from_secs(2))
            .await
            .contains(" 401 ")
    );
    // With the key but over the limit: 413 from Content-Length, the body never read.
    let mut big = raw(
        &served.url,
        &format!("POST /services/collector/event HTTP/1.1\r\nHost: x\r\nAuthorization: Splunk {key}\r\nContent-Length: 9000000\r\n\r\n"),
    )
    .await;
    assert!(
        answer(&mut big, Duration::from_secs(2))
            .await
            .contains(" 413 ")
    );
    // Fifty clients that start a request and never finish its headers.
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(
            raw(
                &served.url,
                "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: appl",
            )
            .await,
        );
    }
    // Meanwhile an agent is served.
    let t = tv1_connector::timefmt::api_time(chrono::Utc::now());
    let batch = json!({"agent": {"id": "dc01"}, "batch_id": "b-slow", "events": [{"event_id": 4624, "time": t, "computer": "DC01"}]});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events", served.url))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(lake_lines(&s3, &bucket).await.len(), 1);
    // Every slow client is cut off once the header timeout has passed.
    let timeout = tv1_connector::ad::serve::HEADER_TIMEOUT;
    let started = tokio::time::Instant::now();
    for s in &mut slow {
        let left = (timeout + Duration::from_secs(3)).saturating_sub(started.elapsed());
        assert_eq!(
            answer(s, left).await,
            "closed",
            "a slow client still connected"
        );
    }
}

/// The certificate `client` was shown for `url`.
async fn shown_certificate(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let r = client.get(format!("{url}/v1/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS connection")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_renewed_in_place_and_no_plain_http_on_the_network() {
    if skip_without_localstack() {
        return;
    }
    // Plain HTTP on an address others reach: refused before anything listens.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tv1"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("refusing to serve plain HTTP on 0.0.0.0:0") && said.contains("--tls-cert"),
        "{said}"
    );

    let lake = ad_lake().await;
    let vars = [
        ("API_KEY_PARAM", lake.param.as_str()),
        ("BUCKET", &lake.bucket),
    ];
    let dir = std::env::temp_dir().join(format!("tv1-tls-{}", rand_hex(8)));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    let install = |(cert, key, _): &(String, String, Vec<u8>)| {
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
    };
    let first = ca.issue("first");
    install(&first);
    let served = serve_tls(&vars, &cert_file, &key_file, &ca).await;

    // curl, verifying against the authority.
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&ca_file)
        .arg(format!("{}/v1/health", served.url))
        .output()
        .unwrap();
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    // A plain-HTTP request to the HTTPS port gets no HTTP answer; a client that connects and
    // never starts its handshake is cut off like a slow-header client.
    let plain = served.url.replace("https://", "http://");
    let mut cleartext = raw(
        &plain,
        &format!(
            "GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            lake.key
        ),
    )
    .await;
    assert!(
        !answer(&mut cleartext, Duration::from_secs(3))
            .await
            .starts_with("HTTP/")
    );
    let mut silent = raw(&plain, "").await;

    let agent = ca.client();
    let send = async |client: &reqwest::Client, batch: &str, ids: std::ops::Range<u64>| {
        let t = tv1_connector::timefmt::api_time(chrono::Utc::now());
        let events: Vec<_> = ids.map(|i| json!({"event_id": 4624, "time": t, "computer": "DC01", "channel": "Security", "record_id": i})).collect();
        let r = client
            .post(format!("{}/v1/events", served.url))
            .header("authorization", format!("Bearer {}", lake.key))
            .header("content-type", "application/json")
            .body(json!({"agent": {"id": "dc01"}, "batch_id": batch, "events": events}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    };
    send(&agent, "b1", 0..10).await;
    assert_eq!(shown_certificate(&agent, &served.url).await, first.2);

    // Renewed in place: new connections are shown the new certificate within the reload
    // interval; the agent's client, made before, goes on sending.
    let second = ca.issue("second");
    install(&second);
    let wait = tv1_connector::ad::tls::RELOAD_INTERVAL.as_secs() * 3;
    wait_until(
        wait,
        "the renewed certificate to be presented",
        async || shown_certificate(&ca.client(), &served.url).await == second.2,
    )
    .await;
    send(&agent, "b2", 10..20).await;
    // A renewal half done (a new certificate, the old key) is not taken: the endpoint stays up
    // with the second certificate.
    let third = ca.issue("third");
    std::fs::write(&cert_file, &third.0).unwrap();
    tokio::time::sleep(tv1_connector::ad::tls::RELOAD_INTERVAL * 2).await;
    assert_eq!(shown_certificate(&ca.client(), &served.url).await, second.2);
    send(&agent, "b3", 20..30).await;
    let log = std::fs::read_to_string(&served.log).unwrap();
    assert!(
        log.contains("certificate reloaded") && log.contains("do not load"),
        "{log}"
    );
    assert!(!log.contains(&lake.key), "the key is never logged");

    let timeout = tv1_connector::ad::serve::HEADER_TIMEOUT;
    assert_eq!(
        answer(&mut silent, timeout + Duration::from_secs(3)).await,
        "closed"
    );
    let mut ids: Vec<u64> = lake_lines(&lake.s3, &lake.bucket)
        .await
        .iter()
        .map(|(_, l)| l["record_id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    if skip_without_localstack() {
        return;
    }
    let (_s3, _bucket, _key, served) = lake_and_server().await;
    let mut s = raw(&served.url, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        answer(&mut s, Duration::from_secs(5))
            .await
            .contains(" 200 ")
    );
    let timeout = tv1_connector::ad::serve::HEADER_TIMEOUT;
    let started = tokio::time::Instant::now();
    assert_eq!(
        answer(&mut s, timeout + Duration::from_secs(3)).await,
        "closed"
    );
    assert!(started.elapsed() >= timeout - Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if skip_without_localstack() {
        return;
    }
    let (_s3, _bucket, _key, served) = lake_and_server().await;
    let addr: std::net::SocketAddr = served.url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let s = socket.connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // Thousands of pipelined requests that need no key, their replies never read: the
    // server's writes stall once the client's receive window is full.
    let writer = tokio::spawn(async move {
        let one = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..20_000 {
            if wr.write_all(one).await.is_err() {
                return;
            }
        }
        // Held open, as such a client would.
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
    let timeout = tv1_connector::ad::serve::WRITE_TIMEOUT;
    tokio::time::sleep(timeout + Duration::from_secs(5)).await;
    // Now read: a connection the server gave up on ends (EOF or reset); one it still serves
    // sends the remaining replies and then falls silent.
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(3), rd.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
        }
    };
    writer.abort();
    assert!(
        ended,
        "the server still holds a connection whose replies are never read"
    );
}
