//! Splunk HTTP Event Collector compatibility: what Fluent Bit (`splunk`), Vector
//! (`splunk_hec_logs`), the OpenTelemetry Collector (`splunkhec`), Cribl and NXLog send.
//!
//! Routes `POST /services/collector[/event[/1.0]]` and `GET /services/collector/health[/1.0]`;
//! a body of HEC event objects one after another (newline-separated or not); replies in HEC's
//! own form (`{"text","code"}` with HEC's codes and statuses), so the clients' retry logic does
//! the right thing. HEC has no batch id: the batch is identified by the SHA-256 of the body per
//! agent, so an exact retry of a request is a no-op.
//!
//! The agent is the forwarding host, stable across restarts: `X-Agent-Id`, else a real HEC
//! `host`, else the computer its events come from. Never the `X-Splunk-Request-Channel`:
//! Vector draws a new random channel each time it starts (`HttpRequestBuilder::new`), so a
//! replay after a restart would be a new agent and its events stored twice.

use super::IngestError;
use super::auth::AuthError;
use super::decode::{AgentInfo, Batch, MAX_HOSTNAME};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The HEC routes: method and path.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/services/collector"),
    ("POST", "/services/collector/event"),
    ("POST", "/services/collector/event/1.0"),
    ("GET", "/services/collector/health"),
    ("GET", "/services/collector/health/1.0"),
];

/// What a path asks of HEC, if it is a HEC path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HecRoute {
    /// Events.
    Event,
    /// Health.
    Health,
    /// Anything else under `/services/collector` (e.g. `raw`, `ack`: not offered).
    Unknown,
}

/// The HEC route of `path` (a stage prefix is tolerated), `None` when it is not under
/// `/services/collector`.
pub fn route_of(path: &str) -> Option<HecRoute> {
    let at = path.find("/services/collector")?;
    Some(match path[at..].trim_end_matches('/') {
        "/services/collector" | "/services/collector/event" | "/services/collector/event/1.0" => {
            HecRoute::Event
        }
        "/services/collector/health" | "/services/collector/health/1.0" => HecRoute::Health,
        _ => HecRoute::Unknown,
    })
}

/// HEC's own refusals of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HecFormat {
    /// Code 5: nothing in the body.
    NoData,
    /// Code 6: not HEC JSON at event `n` (0-based).
    InvalidDataFormat(usize),
    /// Code 12: event `n` has no `event` field.
    EventRequired(usize),
    /// Code 13: event `n` has an empty `event` field.
    EventBlank(usize),
}

impl HecFormat {
    /// `(HTTP status, HEC code, text, invalid event number)`.
    pub fn parts(self) -> (u16, u16, &'static str, Option<usize>) {
        match self {
            HecFormat::NoData => (400, 5, "No data", None),
            HecFormat::InvalidDataFormat(n) => (400, 6, "Invalid data format", Some(n)),
            HecFormat::EventRequired(n) => (400, 12, "Event field is required", Some(n)),
            HecFormat::EventBlank(n) => (400, 13, "Event field cannot be blank", Some(n)),
        }
    }
}

#[derive(Deserialize)]
struct HecEvent<'a> {
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    host: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sourcetype: Option<&'a RawValue>,
    #[serde(borrow, default)]
    index: Option<&'a RawValue>,
    #[serde(borrow, default)]
    fields: Option<&'a RawValue>,
}

impl HecEvent<'_> {
    /// HEC's metadata of the event, kept next to it in the stored line (`"hec": {...}`).
    fn metadata(&self) -> String {
        let mut out = String::from("{");
        for (name, v) in [
            ("time", self.time),
            ("host", self.host),
            ("source", self.source),
            ("sourcetype", self.sourcetype),
            ("index", self.index),
            ("fields", self.fields),
        ] {
            if let Some(v) = v {
                if out.len() > 1 {
                    out.push(',');
                }
                out.push_str(&format!("\"{name}\":{}", v.get()));
            }
        }
        out.push('}');
        out
    }
}

/// HEC `host` values that name no host: the OpenTelemetry exporter's default without a
/// `resourcedetection` processor, and the usual placeholders.
const PLACEHOLDER_HOSTS: &[&str] = &[
    "unknown",
    "localhost",
    "localhost.localdomain",
    "-",
    "(none)",
    "none",
    "null",
];

/// A HEC `host` that names a real host.
fn real_host(host: &str) -> Option<&str> {
    let h = host.trim();
    (!h.is_empty() && !PLACEHOLDER_HOSTS.iter().any(|p| h.eq_ignore_ascii_case(p))).then_some(h)
}

/// Who sent a HEC request: `X-Agent-Id`, else the first event's real `host` (as an agent id:
/// [`super::agents::id_of_host`]), else to be named after its events' computer (the flag).
fn agent(sender: &super::Sender<'_>, first_host: Option<&str>) -> (AgentInfo, bool) {
    let host = first_host.and_then(real_host);
    let id = sender
        .agent_id
        .map(str::to_owned)
        .or_else(|| host.and_then(super::agents::id_of_host));
    let from_events = id.is_none();
    let info = AgentInfo {
        id: id.unwrap_or_default(),
        hostname: sender
            .hostname
            .or(host)
            .map(|h| h.chars().take(MAX_HOSTNAME).collect()),
        version: sender.version.map(str::to_owned),
        timezone: None, // X-Agent-Timezone is read in `prepare`, for every route
    };
    (info, from_events)
}

/// Parses a HEC body into a batch: the inner `event`s, their HEC metadata, the sender, and the
/// body's hash as the batch id. Counts events as it reads and stops past `max_events`.
pub fn parse<'b>(
    body: &'b [u8],
    max_events: usize,
    sender: &super::Sender<'_>,
) -> Result<Batch<'b>, IngestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::Hec(HecFormat::NoData));
    }
    let (mut events, mut meta, mut times) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_host = None;
    for (n, ev) in serde_json::Deserializer::from_slice(body)
        .into_iter::<HecEvent<'b>>()
        .enumerate()
    {
        let ev = ev.map_err(|_| IngestError::Hec(HecFormat::InvalidDataFormat(n)))?;
        if n == max_events {
            return Err(IngestError::TooLarge(format!(
                "more than {max_events} events in one request; the limit is {max_events}"
            )));
        }
        let Some(inner) = ev.event else {
            return Err(IngestError::Hec(HecFormat::EventRequired(n)));
        };
        if matches!(inner.get().trim(), "\"\"" | "null" | "{}") {
            return Err(IngestError::Hec(HecFormat::EventBlank(n)));
        }
        if n == 0 {
            first_host = ev
                .host
                .and_then(|h| serde_json::from_str::<String>(h.get()).ok());
        }
        meta.push(ev.metadata());
        times.push(ev.time.and_then(|t| super::event_time::epoch(t.get())));
        events.push(inner);
    }
    let (agent, agent_from_events) = agent(sender, first_host.as_deref());
    Ok(Batch {
        agent,
        batch_id: hex::encode(Sha256::digest(body)),
        events,
        meta,
        fallback_times: times,
        agent_from_events,
    })
}

/// The HEC reply for a refusal: HEC's status and code where HEC has one.
pub fn refusal(e: &IngestError) -> (u16, Value) {
    let reply =
        |status: u16, code: u16, text: String| (status, json!({"text": text, "code": code}));
    match e {
        IngestError::Hec(f) => {
            let (status, code, text, n) = f.parts();
            let mut body = json!({"text": text, "code": code});
            if let Some(n) = n {
                body["invalid-event-number"] = json!(n);
            }
            (status, body)
        }
        IngestError::Auth(AuthError::Missing) => reply(401, 2, "Token is required".into()),
        IngestError::Auth(AuthError::Malformed) => reply(401, 3, "Invalid authorization".into()),
        IngestError::Auth(AuthError::Invalid) => reply(403, 4, "Invalid token".into()),
        IngestError::Auth(AuthError::Unavailable(_)) | IngestError::Unavailable(_) => {
            reply(503, 9, "Server is busy".into())
        }
        IngestError::BadRequest { message, .. } => {
            reply(400, 6, format!("Invalid data format: {message}"))
        }
        // HEC has no code for these; the HTTP status tells the client what to do.
        IngestError::TooLarge(m) => reply(413, 6, format!("Request too large: {m}")),
        IngestError::Timeout(m) => reply(408, 6, m.clone()),
        IngestError::UnsupportedMediaType(m) => reply(415, 6, m.clone()),
        IngestError::NotFound(_) => reply(
            404,
            404,
            "The requested URL was not found on this server.".into(),
        ),
        IngestError::MethodNotAllowed { .. } => reply(405, 405, e.to_string()),
        // A body hash cannot be reused for other content; kept total for the compiler.
        IngestError::BatchIdConflict { .. } => reply(409, 6, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender<'a>() -> super::super::Sender<'a> {
        super::super::Sender::default()
    }

    #[test]
    fn paths() {
        assert_eq!(route_of("/services/collector/event"), Some(HecRoute::Event));
        assert_eq!(route_of("/services/collector"), Some(HecRoute::Event));
        assert_eq!(
            route_of("/prod/services/collector/event/1.0"),
            Some(HecRoute::Event)
        );
        assert_eq!(
            route_of("/services/collector/health/1.0"),
            Some(HecRoute::Health)
        );
        assert_eq!(route_of("/services/collector/raw"), Some(HecRoute::Unknown));
        assert_eq!(route_of("/v1/events"), None);
    }

    #[test]
    fn bodies_of_several_events_with_their_metadata() {
        let body = br#"{"time":1763719200.5,"host":"DC01.corp.example","sourcetype":"WinEventLog","event":{"event_id":4624}}
{"time":"1763719201","event":{"event_id":4625},"fields":{"dc":"01"}}{"event":{"event_id":1}}"#;
        let b = parse(body, 10, &sender()).unwrap();
        assert_eq!(b.events.len(), 3);
        assert_eq!(b.agent.id, "dc01.corp.example");
        assert_eq!(b.agent.hostname.as_deref(), Some("DC01.corp.example"));
        let m: Value = serde_json::from_str(&b.meta[1]).unwrap();
        assert_eq!(m["fields"]["dc"], "01");
        assert_eq!(m["time"], "1763719201");
        assert_eq!(b.meta[2], "{}");
        assert_eq!(b.batch_id.len(), 64);
        // A channel is not an agent: Vector draws a new one each time it starts.
        let ch = super::super::Sender {
            agent_id: None,
            ..sender()
        };
        assert_eq!(parse(body, 10, &ch).unwrap().agent.id, "dc01.corp.example");
    }

    /// The events of a sample (NDJSON or a HEC body), normalised as ad-ingest does.
    fn sample(name: &str, hec: bool) -> Vec<crate::ad::events::Normalized> {
        let path = format!("{}/events/ad/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(path).unwrap();
        let (events, times) = if hec {
            let b = parse(&body, 100, &sender()).unwrap();
            let events: Vec<Value> = b
                .events
                .iter()
                .map(|e| serde_json::from_str(e.get()).unwrap())
                .collect();
            (events, b.fallback_times)
        } else {
            let events: Vec<Value> = serde_json::Deserializer::from_slice(&body)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let n = events.len();
            (events, vec![None; n])
        };
        events
            .iter()
            .zip(times)
            .map(|(e, t)| crate::ad::events::normalize_with(e, t).unwrap())
            .collect()
    }

    #[test]
    fn a_sample_per_shape() {
        use crate::ad::events::{Category, Shape};
        use crate::timefmt::api_time;
        let fb = sample("fluentbit-winevtlog.ndjson", false);
        assert_eq!(fb[0].shape, Shape::FluentBitWinevtlog);
        assert_eq!((fb[0].event_id, fb[0].record_id), (4624, Some(884211)));
        assert_eq!(
            api_time(fb[0].time),
            "2026-11-21T10:00:05Z",
            "local time +0100 to UTC"
        );
        assert_eq!(fb[0].computer, "DC06.corp.example");
        assert_eq!(fb[1].category, Category::AccountManagement);

        let wl = sample("fluentbit-winlog.ndjson", false);
        assert_eq!(
            (wl[0].shape, wl[0].event_id),
            (Shape::FluentBitWinlog, 4625)
        );
        assert_eq!(api_time(wl[0].time), "2026-11-21T10:00:10Z");
        assert_eq!(
            wl[0].provider.as_deref(),
            Some("Microsoft-Windows-Security-Auditing")
        );

        let v = sample("vector-windows-event-log.ndjson", false);
        assert_eq!(
            (v[0].shape, v[0].event_id, v[0].record_id),
            (Shape::VectorWindowsEventLog, 4728, Some(77120))
        );
        assert_eq!(api_time(v[0].time), "2026-11-21T10:00:12Z");

        let o = sample("otel-windowseventlog-hec.json", true);
        assert_eq!(
            (o[0].shape, o[0].event_id, o[0].category),
            (Shape::OtelWindowsEventLog, 5136, Category::ObjectAccess)
        );
        assert_eq!(
            o[0].provider.as_deref(),
            Some("Microsoft-Windows-Security-Auditing")
        );
        assert_eq!(
            (o[1].event_id, o[1].channel.as_deref()),
            (7045, Some("System"))
        );

        let x = sample("windows-xml-hec.json", true);
        assert!(x.iter().all(|n| n.shape == Shape::WindowsXml));
        assert_eq!((x[0].event_id, x[0].record_id), (4740, Some(552301)));
        assert_eq!(api_time(x[0].time), "2026-11-21T10:00:20Z");
        // No TimeCreated in the XML: HEC's `time` stands in.
        assert_eq!(
            (x[1].event_id, api_time(x[1].time).as_str()),
            (1102, "2026-11-21T10:00:21Z")
        );
        assert_eq!(x[1].category, Category::System);
        let t = sample("windows-text-hec.json", true);
        assert!(t.iter().all(|n| n.shape == Shape::WindowsText));
        // Splunk's classic text: the first line's local time has no zone, so HEC's time is used.
        assert_eq!((t[0].event_id, t[0].record_id), (4740, Some(662001)));
        assert_eq!(api_time(t[0].time), "2026-11-21T10:00:30Z");
        assert_eq!(t[0].channel.as_deref(), Some("Security"));
        // Fluent Bit's render_event_as_text, with its own TimeCreated.
        assert_eq!(
            (t[1].event_id, t[1].computer.as_str()),
            (4625, "DC11.corp.example")
        );
        assert_eq!(api_time(t[1].time), "2026-11-21T10:00:31Z");
        // Fluent Bit's render_event_as_xml record.
        assert_eq!(
            (x[2].event_id, x[2].computer.as_str()),
            (4769, "DC10.corp.example")
        );
    }

    #[test]
    fn refusals_in_hecs_codes() {
        let code = |body: &[u8]| match parse(body, 2, &sender()) {
            Err(e) => refusal(&e).1,
            Ok(_) => json!("ok"),
        };
        assert_eq!(code(b" \n"), json!({"text": "No data", "code": 5}));
        assert_eq!(
            code(br#"{"event":{"a":1}}{"event":"#),
            json!({"text": "Invalid data format", "code": 6, "invalid-event-number": 1})
        );
        assert_eq!(code(br#"{"host":"x"}"#)["code"], 12);
        assert_eq!(code(br#"{"event":""}"#)["code"], 13);
        assert!(
            code(br#"{"event":1}{"event":2}{"event":3}"#)["text"]
                .as_str()
                .unwrap()
                .starts_with("Request too large")
        );
        let (s, b) = refusal(&IngestError::Auth(AuthError::Missing));
        assert_eq!((s, b["code"].as_u64()), (401, Some(2)));
        let (s, b) = refusal(&IngestError::Auth(AuthError::Invalid));
        assert_eq!((s, b["code"].as_u64()), (403, Some(4)));
        let (s, b) = refusal(&IngestError::Unavailable("s3".into()));
        assert_eq!((s, b["code"].as_u64()), (503, Some(9)));
    }
}
