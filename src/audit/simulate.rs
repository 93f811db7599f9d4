//! A faithful fake of the Vision One audit logs endpoint, for `make run` and the tests.
//!
//! It does what the real API does and what the puller must survive: bearer check, `top`
//! validation, second-precision bounds with an inclusive start (and, by default, an inclusive
//! end), `nextLink` paging with expiring skip tokens and literal spaces, both timestamp forms,
//! bursts of entries within one second, entries that become visible only after a delay, and
//! switchable faults (429 with or without `Retry-After`, a request budget per 60 s, 5xx, slow
//! responses, 403, a `nextLink` to a foreign host).
//!
//! Control endpoints under `/_sim/` switch faults and inspect the data; tests can also drive a
//! [`Simulator`] in-process.

use crate::audit::stream::Stream;
use crate::timefmt::api_time;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One audit log entry held by the simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimEntry {
    /// `loggedDateTime`, whole seconds.
    pub logged: DateTime<Utc>,
    /// When the entry starts being served.
    pub visible_at: DateTime<Utc>,
    /// The item exactly as served.
    pub json: String,
    /// When a newer version replaced it (alerts): from then on it is no longer served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_at: Option<DateTime<Utc>>,
}

/// Switchable faults. All off by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Statuses to answer the next requests with, in order (e.g. `[503, 429]`).
    pub fail_next: Vec<u16>,
    /// Probability (0–1) of a 503 on any request.
    pub error_rate: f64,
    /// Requests allowed per 60 s window; 429 beyond it.
    pub rate_limit_per_minute: Option<u32>,
    /// `Retry-After` seconds sent with 429s (none when `None`).
    pub retry_after_secs: Option<u64>,
    /// Delay added to every response.
    pub delay_ms: u64,
    /// Random extra delay, up to this much.
    pub delay_jitter_ms: u64,
    /// Answer 403 (role lacks API access).
    pub forbidden: bool,
    /// Answer the next this-many `skipToken` requests with error 1010550 (token expired).
    pub expire_skip_tokens: u32,
    /// Serve `nextLink`s on this origin instead of the simulator's own.
    pub foreign_next_link: Option<String>,
    /// Serve the items of the next this-many pages in reverse order (an API breaking its
    /// ordering promise within a page).
    pub reverse_pages: u32,
}

/// How the simulator behaves besides its faults.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimSettings {
    /// The accepted bearer token.
    pub token: String,
    /// Skip tokens expire after this long.
    pub skip_token_ttl: Duration,
    /// Whether `endDateTime` is inclusive (undocumented on the real API; both are possible).
    pub end_inclusive: bool,
    /// Whether `startDateTime` is inclusive (the same; public connectors disagree).
    #[serde(default = "inclusive")]
    pub start_inclusive: bool,
}

fn inclusive() -> bool {
    true
}

/// Parameters of generated data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Generate {
    /// Entries to create.
    pub count: usize,
    /// First `loggedDateTime`.
    pub from: DateTime<Utc>,
    /// Last `loggedDateTime` (exclusive).
    pub to: DateTime<Utc>,
    /// Every this many entries, a burst of `burst_size` entries shares one second.
    pub burst_every: usize,
    /// Entries in a burst.
    pub burst_size: usize,
    /// Fraction (0–1) of entries that become visible late.
    pub late_fraction: f64,
    /// Shortest visibility delay of a late entry.
    pub late_min_secs: u64,
    /// Longest visibility delay of a late entry.
    pub late_max_secs: u64,
    /// How delays spread between the two.
    pub late_spread: Spread,
    /// Fraction (0–1) of entries that are exact repeats of the previous one.
    pub repeat_fraction: f64,
    /// Seed: the same seed gives the same data.
    pub seed: u64,
}

/// A distribution of delays between a shortest and a longest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// Every delay equally likely.
    #[default]
    Uniform,
    /// Every order of magnitude equally likely: as many delays of minutes as of hours, which
    /// is how late-arriving data tends to look.
    LogUniform,
}

impl Spread {
    fn pick(self, rng: &mut SplitMix, min: u64, max: u64) -> u64 {
        let (min, max) = (min.min(max), max.max(min));
        match self {
            Spread::Uniform => min + rng.below(max - min + 1),
            Spread::LogUniform => {
                let (lo, hi) = ((min.max(1) as f64).ln(), (max.max(1) as f64).ln());
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                ((lo + u * (hi - lo)).exp().round() as u64).clamp(min, max)
            }
        }
    }
}

impl Default for Generate {
    fn default() -> Self {
        let now = Utc::now();
        Generate {
            count: 5_000,
            from: now - chrono::Duration::hours(26),
            to: now + chrono::Duration::minutes(30),
            burst_every: 1_000,
            burst_size: 450,
            late_fraction: 0.02,
            late_min_secs: 0,
            late_max_secs: 120,
            late_spread: Spread::Uniform,
            repeat_fraction: 0.01,
            seed: 42,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: u64,
    log: Vec<Served>,
    by_status: HashMap<u16, u64>,
    window_start: i64,
    window_count: u32,
}

struct Inner {
    settings: Mutex<SimSettings>,
    entries: Mutex<Vec<SimEntry>>,
    /// Workbench alert versions, by `updatedDateTime`.
    alerts: Mutex<Vec<SimEntry>>,
    /// OAT detections, by `ingestedDateTime`.
    detections: Mutex<Vec<SimEntry>>,
    faults: Mutex<Faults>,
    counters: Mutex<Counters>,
}

/// The simulator: shared state plus the HTTP routes.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

/// One answered request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Served {
    /// When the answer was sent.
    pub at: DateTime<Utc>,
    /// Its status.
    pub status: u16,
    /// Whether it carried the right bearer token.
    pub authorized: bool,
}

/// Request/served statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// Requests to the audit logs endpoint.
    pub requests: u64,
    /// Every answer, in order.
    pub log: Vec<Served>,
    /// Responses by status.
    pub by_status: HashMap<u16, u64>,
}

#[derive(Clone, Serialize, Deserialize)]
struct SkipToken {
    /// The list the query reads.
    #[serde(default = "audit_stream")]
    stream: Stream,
    start: i64,
    end: i64,
    top: usize,
    asc: bool,
    /// Entries of the range (visible or not) already passed, in query order.
    offset: usize,
    as_of: i64,
    /// Epoch milliseconds.
    issued: i64,
}

/// A small deterministic generator (SplitMix64) so that a seed always gives the same data.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 % 1.0 < p
    }
}

const USERS: &[(&str, &str, &str)] = &[
    ("Root Account", "Master Administrator", "root@example.com"),
    ("Alice Analyst", "SOC Analyst", "alice@example.com"),
    ("Bob Builder", "Operator", "bob@example.com"),
    ("svc-siem", "Master Administrator", "siem@example.com"),
];
const ACTIVITIES: &[(&str, &str)] = &[
    ("Logon and Logoff", "Log on"),
    ("Logon and Logoff", "Log off"),
    ("Account Management", "Add user account"),
    ("Account Management", "Edit user account"),
    ("Workbench", "Change alert status"),
    ("Response Management", "Isolate endpoint"),
    ("API Keys", "Generate API key"),
];
const ACCESS: &[&str] = &["Console", "API", "Service Gateway", "Mobile App"];

/// Parameters of generated Workbench alerts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateAlerts {
    /// Alerts to create.
    pub count: usize,
    /// First `createdDateTime`.
    pub from: DateTime<Utc>,
    /// Last `createdDateTime` (exclusive).
    pub to: DateTime<Utc>,
    /// Shortest and longest time between two states of an alert, in seconds.
    pub change_after_secs: (u64, u64),
    /// Seed: the same seed gives the same data.
    pub seed: u64,
}

/// The states an alert goes through: (`status`, `investigationStatus`, `investigationResult`).
const ALERT_STATES: [(&str, &str, &str); 3] = [
    ("Open", "New", "No Findings"),
    ("In Progress", "In Progress", "Noteworthy"),
    ("Closed", "Closed", "True Positive"),
];

/// Alert versions: each alert is created, then changes state one to two times; each state is a
/// version served from its `updatedDateTime` until the next one replaces it. Items carry the
/// fields of the v3.0 alert schema (`schemaVersion` 1.15) with made-up values.
pub fn generate_alerts(g: &GenerateAlerts) -> Vec<SimEntry> {
    let mut rng = SplitMix(g.seed);
    let span = (g.to - g.from).num_seconds().max(1) as u64;
    let mut out = Vec::new();
    for n in 0..g.count {
        let created = g.from + chrono::Duration::seconds(rng.below(span) as i64);
        let id = format!("WB-9002-{}-{:05}", created.format("%Y%m%d"), n);
        let severity = ["low", "medium", "high", "critical"][rng.below(4) as usize];
        let states = 1 + rng.below(3) as usize;
        let mut at = created;
        let mut times = vec![created];
        for _ in 1..states {
            let (lo, hi) = g.change_after_secs;
            at += chrono::Duration::seconds((lo + rng.below(hi.saturating_sub(lo) + 1)) as i64);
            times.push(at);
        }
        for (i, updated) in times.iter().enumerate() {
            let (status, inv_status, result) =
                ALERT_STATES[i.min(2) + (states == 2 && i == 1) as usize];
            let item = serde_json::json!({
                "schemaVersion": "1.15",
                "id": id,
                "investigationStatus": inv_status,
                "status": status,
                "investigationResult": result,
                "workbenchLink": format!("https://portal.xdr.trendmicro.com/index.html#/workbench/alerts/{id}"),
                "alertProvider": "SAE",
                "modelId": "7b4a9d2e-1c3f-4e5a-8b6c-0d1e2f3a4b5c",
                "model": "Possible Credential Dumping via Registry",
                "modelType": "preset",
                "score": 40 + rng.below(60),
                "severity": severity,
                "createdDateTime": crate::timefmt::api_time(created),
                "updatedDateTime": crate::timefmt::api_time(*updated),
                "impactScope": {
                    "desktopCount": 1, "serverCount": 0, "accountCount": 1,
                    "emailAddressCount": 0, "containerCount": 0, "cloudIdentityCount": 0,
                    "entities": [{
                        "entityId": "35fa11da-a24e-40cf-8b56-baf8828cc15e",
                        "entityType": "host",
                        "entityValue": {"guid": "35fa11da-a24e-40cf-8b56-baf8828cc15e", "name": format!("DESKTOP-{:04}", n % 10_000), "ips": ["10.10.58.51"]},
                        "relatedEntities": [],
                        "relatedIndicatorIds": [1],
                        "provenance": ["Alert"]
                    }]
                },
                "description": "A process read the SAM registry hive.",
                "matchedRules": [{
                    "id": "5f52d1f1-53e7-411a-b74f-745ee81fa30b",
                    "name": "Credential Dumping via Registry",
                    "matchedFilters": [{
                        "id": "a9b3f2c0-8e4d-4c1b-9f2a-6d7e8f901234",
                        "name": "Dump Registry Hive via reg.exe",
                        "matchedDateTime": crate::timefmt::api_time(created),
                        "mitreTechniqueIds": ["V9.T1003.002", "T1003"],
                        "matchedEvents": []
                    }]
                }],
                "indicators": [{
                    "id": 1, "type": "command_line", "field": "processCmd",
                    "value": "reg save HKLM\\SAM C:\\temp\\sam.save",
                    "relatedEntities": ["35fa11da-a24e-40cf-8b56-baf8828cc15e"],
                    "filterIds": ["a9b3f2c0-8e4d-4c1b-9f2a-6d7e8f901234"],
                    "provenance": ["Alert"]
                }]
            });
            out.push(SimEntry {
                logged: *updated,
                visible_at: *updated,
                json: item.to_string(),
                superseded_at: times.get(i + 1).copied(),
            });
        }
    }
    out.sort_by_key(|e| e.logged);
    out
}

/// OAT detections ingested in `[from, to)`: each detected up to `max_ingest_delay_secs` before
/// it was ingested, served from its `ingestedDateTime`. Items carry the fields of the v3.0
/// detection schema (endpoint activity) with made-up values.
pub fn generate_detections(
    count: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max_ingest_delay_secs: u64,
    seed: u64,
) -> Vec<SimEntry> {
    let mut rng = SplitMix(seed);
    let span = (to - from).num_seconds().max(1) as u64;
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let ingested = from + chrono::Duration::seconds(rng.below(span) as i64);
        let detected =
            ingested - chrono::Duration::seconds(rng.below(max_ingest_delay_secs + 1) as i64);
        let uuid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            rng.next() as u32,
            rng.below(0x10000),
            rng.below(0x1000),
            rng.below(0x1000),
            rng.next() & 0xffff_ffff_ffff
        );
        let risk = ["info", "low", "medium", "high", "critical"][rng.below(5) as usize];
        let host = format!("DESKTOP-{:04}", n % 10_000);
        let item = serde_json::json!({
            "source": "endpointActivityData",
            "uuid": uuid,
            "filters": [{
                "id": "F4231",
                "name": "Suspicious Scheduled Task Creation",
                "description": "A scheduled task was created from the command line.",
                "mitreTacticIds": ["TA0002", "TA0003"],
                "mitreTechniqueIds": ["T1053.005"],
                "highlightedObjects": [{"type": "command_line", "field": "processCmd", "value": "schtasks /create /tn upd /tr c:\\temp\\u.exe /sc minute"}],
                "riskLevel": risk,
                "type": "preset"
            }],
            "endpoint": {"endpointName": host, "agentGuid": "cb9c8412-1f64-4fa0-a36b-76bf41a07ede", "ips": ["10.10.58.51"]},
            "entityType": "endpoint",
            "entityName": format!("{host}(10.10.58.51)"),
            "detectedDateTime": crate::timefmt::api_time(detected),
            "ingestedDateTime": crate::timefmt::api_time(ingested),
            "detail": {
                "eventTime": (detected.timestamp_millis()).to_string(),
                "endpointHostName": host,
                "processCmd": "schtasks /create /tn upd /tr c:\\temp\\u.exe /sc minute",
                "processName": "c:\\windows\\system32\\schtasks.exe",
                "tags": ["MITREV9.T1053.005", "XSAE.F4231"],
                "uuid": uuid
            }
        });
        out.push(SimEntry {
            logged: ingested,
            visible_at: ingested,
            json: item.to_string(),
            superseded_at: None,
        });
    }
    out.sort_by_key(|e| e.logged);
    out
}

/// Makes entries from `g` (pure; the same `g` gives the same entries).
pub fn generate(g: &Generate) -> Vec<SimEntry> {
    let mut rng = SplitMix(g.seed);
    let span = (g.to - g.from).num_seconds().max(1) as u64;
    let mut out: Vec<SimEntry> = Vec::with_capacity(g.count);
    let mut burst_left = 0usize;
    let mut burst_at = 0u64;
    for i in 0..g.count {
        if g.burst_every > 0 && i % g.burst_every == g.burst_every / 2 {
            burst_left = g.burst_size;
            burst_at = rng.below(span);
        }
        let offset = if burst_left > 0 {
            burst_left -= 1;
            burst_at
        } else {
            rng.below(span)
        };
        let logged = g.from + chrono::Duration::seconds(offset as i64);
        let delay = if rng.chance(g.late_fraction) {
            g.late_spread
                .pick(&mut rng, g.late_min_secs, g.late_max_secs) as i64
        } else {
            0
        };
        let visible_at = logged + chrono::Duration::seconds(delay);
        if i > 0 && rng.chance(g.repeat_fraction) {
            // A repeat of the previous entry: same second, its own visibility delay.
            let prev = out.last().expect("i > 0").clone();
            out.push(SimEntry {
                visible_at: prev.logged + chrono::Duration::seconds(delay),
                ..prev
            });
            continue;
        }
        let (user, role, mail) = USERS[rng.below(USERS.len() as u64) as usize];
        let (category, activity) = ACTIVITIES[rng.below(ACTIVITIES.len() as u64) as usize];
        // Both timestamp forms seen in the field.
        let when = if i % 3 == 0 {
            logged.format("%Y-%m-%d %H:%M:%S").to_string()
        } else {
            api_time(logged)
        };
        let item = serde_json::json!({
            "loggedDateTime": when,
            "loggedUser": user,
            "loggedRole": role,
            "loggedUserId": format!("{:08x}", rng.below(1 << 32)),
            "loggedUserMailAddress": mail,
            "accessType": ACCESS[rng.below(ACCESS.len() as u64) as usize],
            "category": category,
            "activity": activity,
            "result": if rng.chance(0.9) { "Successful" } else { "Unsuccessful" },
            "details": {"sequence": i, "sourceIp": format!("10.0.{}.{}", rng.below(256), rng.below(256)), "note": "line\nbreak \"quoted\""},
        });
        out.push(SimEntry {
            logged,
            visible_at,
            json: item.to_string(),
            superseded_at: None,
        });
    }
    out.sort_by_key(|e| e.logged);
    out
}

fn vision_error(status: StatusCode, code: &str, message: &str, number: Option<i64>) -> Response {
    let mut err = serde_json::json!({"code": code, "message": message});
    if let Some(n) = number {
        err["number"] = n.into();
    }
    (status, Json(serde_json::json!({ "error": err }))).into_response()
}

fn parse_bound(s: &str) -> Option<DateTime<Utc>> {
    // The real API wants seconds precision: no milliseconds.
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

impl Simulator {
    /// A simulator with `settings` and no entries.
    pub fn new(settings: SimSettings) -> Self {
        Simulator {
            inner: Arc::new(Inner {
                settings: Mutex::new(settings),
                entries: Mutex::new(Vec::new()),
                alerts: Mutex::new(Vec::new()),
                detections: Mutex::new(Vec::new()),
                faults: Mutex::new(Faults::default()),
                counters: Mutex::new(Counters::default()),
            }),
        }
    }

    /// Replaces the data set.
    pub fn set_entries(&self, mut entries: Vec<SimEntry>) {
        entries.sort_by_key(|e| e.logged);
        *self.inner.entries.lock().unwrap() = entries;
    }

    /// Adds entries.
    pub fn add_entries(&self, more: Vec<SimEntry>) {
        let mut e = self.inner.entries.lock().unwrap();
        e.extend(more);
        e.sort_by_key(|e| e.logged);
    }

    /// Every entry visible now, in time order.
    pub fn visible_entries(&self) -> Vec<SimEntry> {
        let now = Utc::now();
        self.inner
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.visible_at <= now)
            .cloned()
            .collect()
    }

    /// Replaces the Workbench alert versions (`logged` is a version's `updatedDateTime`; it is
    /// served from `visible_at` until `superseded_at`).
    pub fn set_alert_versions(&self, mut versions: Vec<SimEntry>) {
        versions.sort_by_key(|e| e.logged);
        *self.inner.alerts.lock().unwrap() = versions;
    }

    /// Every alert version, in `updatedDateTime` order.
    pub fn alert_versions(&self) -> Vec<SimEntry> {
        self.inner.alerts.lock().unwrap().clone()
    }

    /// Replaces the OAT detections (`logged` is a detection's `ingestedDateTime`).
    pub fn set_detections(&self, mut detections: Vec<SimEntry>) {
        detections.sort_by_key(|e| e.logged);
        *self.inner.detections.lock().unwrap() = detections;
    }

    /// Every OAT detection, in `ingestedDateTime` order.
    pub fn detections(&self) -> Vec<SimEntry> {
        self.inner.detections.lock().unwrap().clone()
    }

    /// Switches faults.
    pub fn set_faults(&self, f: Faults) {
        *self.inner.faults.lock().unwrap() = f;
    }

    /// Changes the accepted token (a rotation on the Vision One side).
    pub fn set_token(&self, token: &str) {
        self.inner.settings.lock().unwrap().token = token.to_owned();
    }

    /// Request statistics.
    pub fn stats(&self) -> Stats {
        let c = self.inner.counters.lock().unwrap();
        Stats {
            requests: c.requests,
            log: c.log.clone(),
            by_status: c.by_status.clone(),
        }
    }

    /// The HTTP routes.
    pub fn router(&self) -> axum::Router {
        // Each stream's endpoint, at the path the connector asks for it.
        let endpoints = Stream::ALL
            .into_iter()
            .fold(axum::Router::new(), |r, stream| {
                r.route(
                    stream.path(),
                    get(
                        move |State(sim): State<Simulator>,
                              headers: HeaderMap,
                              Query(q): Query<HashMap<String, String>>| {
                            serve_stream(sim, headers, q, stream)
                        },
                    ),
                )
            });
        endpoints
            .route("/_sim/faults", post(set_faults).get(get_faults))
            .route("/_sim/entries", get(get_entries).post(post_entries))
            .route("/_sim/generate", post(post_generate))
            .route("/_sim/token", post(post_token))
            .route("/_sim/stats", get(get_stats))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the future is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    fn count(&self, status: StatusCode, authorized: bool) {
        let mut c = self.inner.counters.lock().unwrap();
        *c.by_status.entry(status.as_u16()).or_default() += 1;
        c.log.push(Served {
            at: Utc::now(),
            status: status.as_u16(),
            authorized,
        });
    }

    /// Applies faults; `Some` is the response to send instead of data.
    fn fault(&self) -> Option<Response> {
        let mut f = self.inner.faults.lock().unwrap();
        if !f.fail_next.is_empty() {
            let code = StatusCode::from_u16(f.fail_next.remove(0))
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut r = vision_error(code, "InternalServerError", "injected fault", None);
            if code == StatusCode::TOO_MANY_REQUESTS {
                r = vision_error(code, "TooManyRequests", "Too many requests", None);
                if let Some(s) = f.retry_after_secs {
                    r.headers_mut().insert("retry-after", HeaderValue::from(s));
                }
            }
            return Some(r);
        }
        if f.forbidden {
            return Some(vision_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Insufficient permissions",
                None,
            ));
        }
        if let Some(limit) = f.rate_limit_per_minute {
            let mut c = self.inner.counters.lock().unwrap();
            let now = Utc::now().timestamp();
            if now - c.window_start >= 60 {
                c.window_start = now - now.rem_euclid(60);
                c.window_count = 0;
            }
            c.window_count += 1;
            if c.window_count > limit {
                let mut r = vision_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Rate limit exceeded",
                    None,
                );
                let wait = (c.window_start + 60 - now).max(1) as u64;
                if f.retry_after_secs.is_some() {
                    r.headers_mut()
                        .insert("retry-after", HeaderValue::from(wait));
                }
                return Some(r);
            }
        }
        if f.error_rate > 0.0 && rand::random::<f64>() < f.error_rate {
            return Some(
                (
                    StatusCode::BAD_GATEWAY,
                    "<html><body>502 Bad Gateway</body></html>",
                )
                    .into_response(),
            );
        }
        None
    }
}

fn audit_stream() -> Stream {
    Stream::Audit
}

async fn serve_stream(
    sim: Simulator,
    headers: HeaderMap,
    q: HashMap<String, String>,
    stream: Stream,
) -> Response {
    sim.inner.counters.lock().unwrap().requests += 1;
    let delay = {
        let f = sim.inner.faults.lock().unwrap();
        f.delay_ms
            + if f.delay_jitter_ms > 0 {
                rand::random_range(0..=f.delay_jitter_ms)
            } else {
                0
            }
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let settings = sim.inner.settings.lock().unwrap().clone();
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == settings.token);
    let r = respond(&sim, &settings, authorized, &headers, &q, stream);
    sim.count(r.status(), authorized);
    r
}

fn respond(
    sim: &Simulator,
    settings: &SimSettings,
    authorized: bool,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    stream: Stream,
) -> Response {
    if !authorized {
        return vision_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Invalid or expired token",
            None,
        );
    }
    if let Some(r) = sim.fault() {
        return r;
    }
    let now = Utc::now();
    // OAT pages with `nextBatchToken`, the others with `skipToken`.
    let token = match q.get("skipToken").or(q.get("nextBatchToken")) {
        Some(raw) => resume(sim, settings, raw, now),
        None => first_query(q, now, stream),
    };
    let token = match token {
        Ok(t) => t,
        Err(refused) => return *refused,
    };
    let (items, next) = page_of(sim, settings, &token);
    let mut body = String::with_capacity(items.len() + 256);
    body.push_str("{\"items\":[");
    body.push_str(&items);
    body.push(']');
    if let Some(next) = next {
        body.push_str(",\"nextLink\":");
        body.push_str(&serde_json::to_string(&next_link(sim, headers, &next)).expect("string"));
    }
    body.push('}');
    ([("content-type", "application/json")], body).into_response()
}

/// The query a `skipToken` continues, or the API's answer to a bad or expired one.
fn resume(
    sim: &Simulator,
    settings: &SimSettings,
    raw: &str,
    now: DateTime<Utc>,
) -> Result<SkipToken, Box<Response>> {
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|b| serde_json::from_slice::<SkipToken>(&b).ok());
    let Some(t) = decoded else {
        return Err(Box::new(vision_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid skip token",
            None,
        )));
    };
    let forced = {
        let mut f = sim.inner.faults.lock().unwrap();
        let forced = f.expire_skip_tokens > 0;
        f.expire_skip_tokens = f.expire_skip_tokens.saturating_sub(1);
        forced
    };
    if forced || now.timestamp_millis() - t.issued > settings.skip_token_ttl.as_millis() as i64 {
        return Err(Box::new(vision_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Request token expired. Please submit a new query to get a new token.",
            Some(crate::audit::vision_one::PAGE_TOKEN_EXPIRED),
        )));
    }
    Ok(t)
}

/// A new query from its parameters (`top`, `orderBy`, `labels`, the time bounds), or the
/// API's answer to an invalid one.
fn first_query(
    q: &HashMap<String, String>,
    now: DateTime<Utc>,
    stream: Stream,
) -> Result<SkipToken, Box<Response>> {
    let bad = |m: &str| {
        Box::new(vision_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            m,
            Some(3_090_003),
        ))
    };
    let (top, asc) = match stream {
        Stream::Audit => {
            let top = q.get("top").map(String::as_str).unwrap_or("50");
            let Ok(top @ (50 | 100 | 200)) = top.parse::<usize>() else {
                return Err(bad(&format!(
                    "Invalid top value {top:?}: allowed values are 50, 100, 200"
                )));
            };
            let asc = match q.get("orderBy").map(String::as_str) {
                None | Some("loggedDateTime asc") => true,
                Some("loggedDateTime desc") => false,
                Some(o) => return Err(bad(&format!("Invalid orderBy {o:?}"))),
            };
            if let Some(l) = q.get("labels")
                && !["none", "matched", "all"].contains(&l.as_str())
            {
                return Err(bad(&format!("Invalid labels {l:?}")));
            }
            (top, asc)
        }
        // Detections by ingestion time, newest first whatever is asked (the endpoint takes no
        // `orderBy`), `top` of 50, 100 or 200.
        Stream::Oat => {
            let top = q.get("top").map(String::as_str).unwrap_or("50");
            let Ok(top @ (50 | 100 | 200)) = top.parse::<usize>() else {
                return Err(bad(&format!(
                    "Invalid top value {top:?}: allowed values are 50, 100, 200"
                )));
            };
            if q.contains_key("detectedStartDateTime") || q.contains_key("detectedEndDateTime") {
                return Err(bad("the simulator serves detections by ingested time only"));
            }
            (top, false)
        }
        // The simulator keeps alert versions by update time: it serves `dateTimeTarget`
        // `updatedDateTime` only (the API's default is `createdDateTime`), a page of 100.
        Stream::Alerts => {
            if q.get("dateTimeTarget").map(String::as_str) != Some("updatedDateTime") {
                return Err(bad(
                    "the simulator serves alerts by dateTimeTarget=updatedDateTime only",
                ));
            }
            if q.contains_key("top") || q.contains_key("labels") {
                return Err(bad("Invalid query parameter for workbench alerts"));
            }
            let asc = match q.get("orderBy").map(String::as_str) {
                Some("updatedDateTime asc") => true,
                None | Some("updatedDateTime desc") => false,
                Some(o) => return Err(bad(&format!("Invalid orderBy {o:?}"))),
            };
            (100, asc)
        }
    };
    let (start_param, end_param) = match stream {
        Stream::Oat => ("ingestedStartDateTime", "ingestedEndDateTime"),
        _ => ("startDateTime", "endDateTime"),
    };
    let start = match q.get(start_param).map(|s| parse_bound(s)) {
        None => now - chrono::Duration::days(180),
        Some(Some(t)) => t,
        Some(None) => {
            return Err(bad(&format!(
                "Invalid {start_param}: use yyyy-MM-ddThh:mm:ssZ"
            )));
        }
    };
    let end = match q.get(end_param).map(|s| parse_bound(s)) {
        None => now,
        Some(Some(t)) => t,
        Some(None) => {
            return Err(bad(&format!(
                "Invalid {end_param}: use yyyy-MM-ddThh:mm:ssZ"
            )));
        }
    };
    Ok(SkipToken {
        stream,
        start: start.timestamp(),
        end: end.timestamp(),
        top,
        asc,
        offset: 0,
        as_of: now.timestamp(),
        issued: now.timestamp_millis(),
    })
}

/// One page of the query `token` (its items' JSON, comma-separated), and the token of the
/// next page when more entries are visible.
///
/// Paging is over a snapshot (visibility as of the first request), as a search index would.
/// The token holds a position in the time-sorted list, so a page costs O(page), not O(data).
fn page_of(
    sim: &Simulator,
    settings: &SimSettings,
    token: &SkipToken,
) -> (String, Option<SkipToken>) {
    let entries = match token.stream {
        Stream::Audit => sim.inner.entries.lock().unwrap(),
        Stream::Alerts => sim.inner.alerts.lock().unwrap(),
        Stream::Oat => sim.inner.detections.lock().unwrap(),
    };
    let lo = entries.partition_point(|e| {
        let t = e.logged.timestamp();
        if settings.start_inclusive {
            t < token.start
        } else {
            t <= token.start
        }
    });
    let hi = entries.partition_point(|e| {
        let t = e.logged.timestamp();
        if settings.end_inclusive {
            t <= token.end
        } else {
            t < token.end
        }
    });
    let range = &entries[lo..hi.max(lo)];
    let visible = |e: &&SimEntry| {
        e.visible_at.timestamp() <= token.as_of
            && e.superseded_at.is_none_or(|s| s.timestamp() > token.as_of)
    };
    let mut page: Vec<&str> = Vec::with_capacity(token.top);
    let mut consumed = 0;
    let ordered: Box<dyn Iterator<Item = &SimEntry>> = if token.asc {
        Box::new(range.iter())
    } else {
        Box::new(range.iter().rev())
    };
    for e in ordered.skip(token.offset) {
        if page.len() == token.top {
            break;
        }
        consumed += 1;
        if visible(&e) {
            page.push(e.json.as_str());
        }
    }
    {
        let mut f = sim.inner.faults.lock().unwrap();
        if f.reverse_pages > 0 {
            f.reverse_pages -= 1;
            page.reverse();
        }
    }
    let next_offset = token.offset + consumed;
    let rest = if token.asc {
        &range[next_offset.min(range.len())..]
    } else {
        &range[..range.len().saturating_sub(next_offset)]
    };
    let next = rest.iter().any(|e| visible(&e)).then(|| SkipToken {
        offset: next_offset,
        issued: Utc::now().timestamp_millis(),
        ..token.clone()
    });
    (page.join(","), next)
}

/// The `nextLink` of `next`: this server (or the fault's foreign origin), with a literal space
/// in `orderBy` as the real API sends it (clients must encode it).
fn next_link(sim: &Simulator, headers: &HeaderMap, next: &SkipToken) -> String {
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(next).expect("token"));
    let origin = sim
        .inner
        .faults
        .lock()
        .unwrap()
        .foreign_next_link
        .clone()
        .unwrap_or_else(|| {
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            format!("http://{host}")
        });
    match next.stream {
        Stream::Oat => format!("{origin}{}?nextBatchToken={encoded}", next.stream.path()),
        // With the literal space real links have been seen with.
        _ => format!(
            "{origin}{}?orderBy={} asc&skipToken={encoded}",
            next.stream.path(),
            next.stream.time_field()
        ),
    }
}

async fn set_faults(State(sim): State<Simulator>, Json(f): Json<Faults>) -> Json<Faults> {
    sim.set_faults(f.clone());
    Json(f)
}

async fn get_faults(State(sim): State<Simulator>) -> Json<Faults> {
    Json(sim.inner.faults.lock().unwrap().clone())
}

async fn get_entries(State(sim): State<Simulator>) -> Json<Vec<SimEntry>> {
    Json(sim.visible_entries())
}

async fn post_entries(
    State(sim): State<Simulator>,
    Json(e): Json<Vec<SimEntry>>,
) -> Json<serde_json::Value> {
    let n = e.len();
    sim.add_entries(e);
    Json(serde_json::json!({ "added": n }))
}

async fn post_generate(
    State(sim): State<Simulator>,
    Json(g): Json<Generate>,
) -> Json<serde_json::Value> {
    let e = generate(&g);
    let n = e.len();
    sim.set_entries(e);
    Json(serde_json::json!({ "entries": n }))
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

async fn post_token(State(sim): State<Simulator>, Json(t): Json<TokenBody>) -> StatusCode {
    sim.set_token(&t.token);
    StatusCode::NO_CONTENT
}

async fn get_stats(State(sim): State<Simulator>) -> Json<Stats> {
    Json(sim.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_bursty() {
        let from = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        let g = Generate {
            count: 3000,
            from,
            to: from + chrono::Duration::hours(2),
            ..Generate::default()
        };
        let a = generate(&g);
        let b = generate(&g);
        assert_eq!(a.len(), 3000);
        assert_eq!(
            a.iter().map(|e| &e.json).collect::<Vec<_>>(),
            b.iter().map(|e| &e.json).collect::<Vec<_>>()
        );
        let mut per_second: HashMap<i64, usize> = HashMap::new();
        for e in &a {
            *per_second.entry(e.logged.timestamp()).or_default() += 1;
            assert!(e.logged >= from && e.logged < g.to);
        }
        assert!(
            per_second.values().any(|&n| n > 200),
            "a burst spans more than one page"
        );
        assert!(
            a.iter()
                .any(|e| e.json.contains("\"loggedDateTime\":\"2026-11-20 ")),
            "zone-less form present"
        );
        assert!(
            a.windows(2).any(|w| w[0].json == w[1].json),
            "exact repeats present"
        );
    }

    #[test]
    fn late_delays_follow_the_spread() {
        let from = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        let g = Generate {
            count: 20_000,
            from,
            to: from + chrono::Duration::hours(6),
            late_fraction: 0.5,
            late_min_secs: 60,
            late_max_secs: 6 * 3600,
            late_spread: Spread::LogUniform,
            ..Generate::default()
        };
        let delays: Vec<i64> = generate(&g)
            .iter()
            .map(|e| (e.visible_at - e.logged).num_seconds())
            .filter(|d| *d > 0)
            .collect();
        let share = delays.len() as f64 / 20_000.0;
        assert!((0.45..0.55).contains(&share), "{share}");
        assert!(delays.iter().all(|d| (60..=6 * 3600).contains(d)));
        // Log-uniform over 1 min–6 h: about as many under 10 min as over 1 h.
        let minutes = delays.iter().filter(|d| **d < 600).count() as f64;
        let hours = delays.iter().filter(|d| **d >= 3600).count() as f64;
        assert!(minutes > 0.3 * delays.len() as f64, "{minutes}");
        assert!(hours > 0.25 * delays.len() as f64, "{hours}");
    }
}
