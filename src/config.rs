//! Environment → typed configuration, read once at start-up.
//!
//! Every error names the variable at fault, so a misconfigured function fails on its first
//! line of log output instead of half-way through a run.

use crate::audit::stream::Stream;
use crate::timefmt::parse_duration;
use std::collections::HashMap;
use std::time::Duration;

/// A setting that is missing or cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with it, and what would be accepted.
    pub reason: String,
}

/// The Vision One regions and their API base URLs.
pub const REGIONS: &[(&str, &str)] = &[
    ("us", "https://api.xdr.trendmicro.com"),
    ("eu", "https://api.eu.xdr.trendmicro.com"),
    ("jp", "https://api.xdr.trendmicro.co.jp"),
    ("sg", "https://api.sg.xdr.trendmicro.com"),
    ("au", "https://api.au.xdr.trendmicro.com"),
    ("in", "https://api.in.xdr.trendmicro.com"),
    ("mea", "https://api.mea.xdr.trendmicro.com"),
    ("ca", "https://api.ca.xdr.trendmicro.com"),
    ("uk", "https://api.uk.xdr.trendmicro.com"),
    ("za", "https://api.za.xdr.trendmicro.com"),
    ("id", "https://api.id.xdr.trendmicro.com"),
    ("br", "https://api.br.xdr.trendmicro.com"),
    ("usgov", "https://api.usgov.xdr.trendmicro.com"),
];

/// Everything the audit puller needs, validated.
#[derive(Debug, Clone)]
pub struct PullerConfig {
    /// Vision One origin, e.g. `https://api.xdr.trendmicro.com` (no trailing slash).
    pub base_url: reqwest::Url,
    /// SSM parameter holding the bearer token (SecureString).
    pub token_param: String,
    /// Destination bucket.
    pub bucket: String,
    /// The stream this configuration pulls.
    pub stream: Stream,
    /// Its `TMV1-Filter` header value (`TV1_ALERTS_FILTER`...), sent with every request.
    pub filter: Option<String>,
    /// Key prefix of the stream's objects and state (`AUDIT_PREFIX`, `ALERTS_PREFIX`,
    /// `OAT_PREFIX`); ends
    /// with `/` unless empty.
    pub prefix: String,
    /// How far back the very first run starts.
    pub initial_lookback: Duration,
    /// Entries younger than this are left for a later run (late-arriving entries).
    pub lag: Duration,
    /// API page size: 50, 100 or 200.
    pub page_size: u32,
    /// Longest window one run plans; a backlog is drained over several runs.
    pub max_window: Duration,
    /// Largest uncompressed size of one object before it is closed.
    pub object_max_bytes: usize,
    /// Largest record count of one object before it is closed.
    pub object_max_records: usize,
    /// Raw JSON one range of a newest-first stream (oat) may hold while it is put in order
    /// (`TV1_ORDERED_RANGE_KIB`); a fuller range is halved and read again.
    pub ordered_range_bytes: usize,
    /// Time kept free before the deadline for the final writes.
    pub deadline_margin: Duration,
    /// Run budget when no Lambda deadline applies (the CLI).
    pub run_timeout: Duration,
    /// How long a run's claim on the checkpoint lasts unless renewed (every third of it).
    pub lease: Duration,
    /// Timeout of one HTTP request to Vision One.
    pub http_timeout: Duration,
    /// Attempts per request on `429`/`5xx`/network errors before giving up.
    pub max_attempts: u32,
    /// Slices of a long window fetched at once (1 = strictly sequential).
    pub fetch_concurrency: usize,
    /// Committed time is read again once it is this old, for entries Vision One served late
    /// (zero: never).
    pub reconcile_horizon: Duration,
    /// Length of one re-read range: a whole number of seconds that divides an hour.
    pub reconcile_step: Duration,
    /// How long the bucket keeps data objects (`TV1_DATA_RETENTION_DAYS`, the lifecycle rule's
    /// `ExpirationInDays`); `None` when they are kept. Reconciliation never reads time whose
    /// objects may have expired (see [`RETENTION_MARGIN`]).
    pub data_retention: Option<Duration>,
    /// How much of the pull one OCSF object holds (`TV1_AUDIT_OCSF_PERIOD`, default 24h;
    /// `TV1_ALERTS_OCSF_PERIOD`, `TV1_OAT_OCSF_PERIOD`, default 1h): whole hours dividing a day.
    pub ocsf_period: Duration,
    /// The OCSF Parquet output, when `OCSF_OUTPUT=on`.
    pub ocsf: Option<OcsfConfig>,
}

/// The longest `TV1_DATA_RETENTION_DAYS` (a hundred years): longer is keeping.
pub const MAX_RETENTION_DAYS: u64 = 36_500;

/// Reconciliation reads only time whose objects have at least this long before a lifecycle rule
/// can expire them: S3 expires an object `ExpirationInDays` after its creation, rounded up to
/// the next midnight UTC (S3 User Guide, "Lifecycle configuration elements", Days), and an
/// object is created after its entries were logged, so the objects of time logged at `t` last at
/// least until `t + retention`.
pub const RETENTION_MARGIN: Duration = Duration::from_secs(86_400);

/// The longest reconciliation horizon: Vision One keeps 180 days of audit logs, and a range
/// must still be there when it is read again.
pub const MAX_RECONCILE_HORIZON: Duration = Duration::from_secs(170 * 86_400);

impl PullerConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads the given variables (the environment, or a test's map) for the audit stream.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::for_stream(env, Stream::Audit)
    }

    /// The streams `TV1_STREAMS` names (a comma list of `audit`, `alerts`, `oat`; default `audit`),
    /// each once, in [`Stream::ALL`]'s order.
    pub fn streams(env: &HashMap<String, String>) -> Result<Vec<Stream>, ConfigError> {
        let list = env
            .get("TV1_STREAMS")
            .map(String::as_str)
            .unwrap_or("audit");
        let mut out = Vec::new();
        for name in list.split(',').filter(|n| !n.trim().is_empty()) {
            let s = Stream::parse(name).map_err(|e| ConfigError {
                var: "TV1_STREAMS",
                reason: e.to_string(),
            })?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        if out.is_empty() {
            return Err(ConfigError {
                var: "TV1_STREAMS",
                reason: "names no stream".into(),
            });
        }
        out.sort();
        Ok(out)
    }

    /// The configuration of every stream `TV1_STREAMS` names.
    pub fn all_from_map(env: &HashMap<String, String>) -> Result<Vec<Self>, ConfigError> {
        Self::streams(env)?
            .into_iter()
            .map(|s| Self::for_stream(env, s))
            .collect()
    }

    /// Reads the given variables for `stream`: one line per variable, then the checks that
    /// involve several. Every stream shares the token, region and engine settings; each has its
    /// own prefix (so its own checkpoint, lease and status) and filter.
    pub fn for_stream(env: &HashMap<String, String>, stream: Stream) -> Result<Self, ConfigError> {
        let base_url = base_url(env)?;
        let page_size = number(env, "TV1_PAGE_SIZE", 200)?;
        if ![50, 100, 200].contains(&page_size) {
            return Err(ConfigError {
                var: "TV1_PAGE_SIZE",
                reason: format!("{page_size} is not one of 50, 100, 200"),
            });
        }
        let cfg = PullerConfig {
            base_url,
            token_param: required(env, "TV1_TOKEN_PARAM")?,
            bucket: required(env, "BUCKET")?,
            stream,
            filter: stream
                .filter_var()
                .and_then(|v| env.get(v))
                .map(|f| f.trim().to_owned())
                .filter(|f| !f.is_empty()),
            prefix: {
                let (var, default) = stream.prefix_var();
                prefix(env, var, default)
            },
            initial_lookback: duration(env, "TV1_INITIAL_LOOKBACK", "24h")?,
            lag: duration(env, "TV1_LAG", "5m")?,
            page_size,
            max_window: duration(env, "TV1_MAX_WINDOW", "24h")?,
            object_max_bytes: number::<usize>(env, "TV1_OBJECT_MAX_MIB", 64)? << 20,
            object_max_records: number(env, "TV1_OBJECT_MAX_RECORDS", 100_000)?,
            ordered_range_bytes: number::<usize>(env, "TV1_ORDERED_RANGE_KIB", 32 << 10)? << 10,
            deadline_margin: duration(env, "TV1_DEADLINE_MARGIN", "20s")?,
            run_timeout: duration(env, "TV1_RUN_TIMEOUT", "14m")?,
            lease: duration(env, "TV1_LEASE", "60s")?,
            http_timeout: duration(env, "TV1_HTTP_TIMEOUT", "60s")?,
            max_attempts: number(env, "TV1_MAX_ATTEMPTS", 8)?,
            fetch_concurrency: number(env, "TV1_FETCH_CONCURRENCY", 4)?,
            reconcile_horizon: duration(env, "TV1_RECONCILE_HORIZON", "24h")?,
            reconcile_step: duration(env, "TV1_RECONCILE_STEP", "1h")?,
            data_retention: match number::<u64>(env, "TV1_DATA_RETENTION_DAYS", 0)? {
                0 => None,
                days if days <= MAX_RETENTION_DAYS => Some(Duration::from_secs(days * 86_400)),
                _ => {
                    return Err(ConfigError {
                        var: "TV1_DATA_RETENTION_DAYS",
                        reason: format!("must be 0 (kept) or at most {MAX_RETENTION_DAYS} days"),
                    });
                }
            },
            ocsf_period: {
                let (var, default) = stream.ocsf_period_var();
                ocsf_period(env, var, default)?
            },
            ocsf: OcsfConfig::from_map(env)?,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// The checks that involve a variable's meaning, or several variables.
    fn check(&self) -> Result<(), ConfigError> {
        let h = self.reconcile_horizon;
        if let Some(kept) = self.data_retention
            && !h.is_zero()
            && h + RETENTION_MARGIN >= kept
        {
            return Err(ConfigError {
                var: "TV1_RECONCILE_HORIZON",
                reason: format!(
                    "must be more than a day shorter than the data retention (TV1_DATA_RETENTION_DAYS = {} days): reconciliation compares Vision One with the objects of its hour, and expired objects would look like missing entries and be landed again",
                    kept.as_secs() / 86_400
                ),
            });
        }
        if !h.is_zero() && (h <= self.lag || h > MAX_RECONCILE_HORIZON) {
            return Err(ConfigError {
                var: "TV1_RECONCILE_HORIZON",
                reason: format!(
                    "must be 0 (off) or longer than TV1_LAG ({}s) and at most 170d (Vision One keeps 180 days)",
                    self.lag.as_secs()
                ),
            });
        }
        let step = self.reconcile_step;
        if step.subsec_nanos() != 0 || step.is_zero() || 3600 % step.as_secs() != 0 {
            return Err(ConfigError {
                var: "TV1_RECONCILE_STEP",
                reason: "must be a whole number of seconds that divides an hour (1h, 30m, 10m, 1m, 10s...)".into(),
            });
        }
        if self.lease < Duration::from_secs(2) {
            return Err(ConfigError {
                var: "TV1_LEASE",
                reason: "must be at least 2s (it is renewed every third of it)".into(),
            });
        }
        if !(1..=16).contains(&self.fetch_concurrency) {
            return Err(ConfigError {
                var: "TV1_FETCH_CONCURRENCY",
                reason: format!("{} is not between 1 and 16", self.fetch_concurrency),
            });
        }
        for (var, zero) in [
            ("TV1_MAX_WINDOW", self.max_window.is_zero()),
            ("TV1_OBJECT_MAX_MIB", self.object_max_bytes == 0),
            ("TV1_OBJECT_MAX_RECORDS", self.object_max_records == 0),
            ("TV1_RUN_TIMEOUT", self.run_timeout.is_zero()),
            ("TV1_HTTP_TIMEOUT", self.http_timeout.is_zero()),
            ("TV1_MAX_ATTEMPTS", self.max_attempts == 0),
        ] {
            if zero {
                return Err(ConfigError {
                    var,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// `TV1_BASE_URL` if set, else the URL of `TV1_REGION` (default `us`).
fn base_url(env: &HashMap<String, String>) -> Result<reqwest::Url, ConfigError> {
    if let Some(url) = value(env, "TV1_BASE_URL") {
        return parse_base_url(url);
    }
    let region = value(env, "TV1_REGION")
        .unwrap_or("us")
        .to_ascii_lowercase();
    let (_, url) = REGIONS
        .iter()
        .find(|(r, _)| *r == region)
        .ok_or_else(|| ConfigError {
            var: "TV1_REGION",
            reason: format!(
                "unknown region {region:?}; expected one of {}",
                REGIONS
                    .iter()
                    .map(|(r, _)| *r)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    Ok(reqwest::Url::parse(url).expect("built-in region URLs are valid"))
}

/// Lambda's synchronous invocation request limit ("6 MB"), in bytes.
pub const LAMBDA_REQUEST_LIMIT: usize = 6_291_456;

/// Room kept in the Lambda event for everything besides the body: API Gateway's request context
/// and the headers (HTTP API caps request headers at 10 KB; the rest is a few KB).
pub const EVENT_ENVELOPE_BYTES: usize = 64 * 1024;

/// Everything the AD ingest function needs, validated.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// SSM parameter holding the API key (SecureString).
    pub api_key_param: String,
    /// Destination bucket.
    pub bucket: String,
    /// Key prefix for AD events; ends with `/` unless empty.
    pub prefix: String,
    /// Largest request body that API Gateway delivers base64-encoded (binary, e.g. gzip).
    pub max_body_bytes: usize,
    /// Largest request body that API Gateway delivers as text (uncompressed JSON).
    pub max_text_body_bytes: usize,
    /// Most (category, day) objects one batch may produce.
    pub max_partitions: usize,
    /// Largest body after gzip decompression.
    pub max_decompressed_bytes: usize,
    /// Most events in one batch.
    pub max_events: usize,
    /// Largest single event (its JSON text).
    pub max_event_bytes: usize,
    /// How long the API key is cached (at most 5 minutes).
    pub key_cache_ttl: Duration,
    /// Shortest interval between two re-reads forced by an unknown key.
    pub key_refresh_interval: Duration,
    /// An agent seen within this long is `connected`.
    pub agent_timeout: Duration,
    /// The OCSF Parquet output, when `OCSF_OUTPUT=on`.
    pub ocsf: Option<OcsfConfig>,
    /// The Lambda function's name (`AWS_LAMBDA_FUNCTION_NAME`, set by Lambda): when set, each
    /// stored batch prints its CloudWatch embedded-metric line.
    pub function_name: Option<String>,
    /// Length of a compaction window (`AD_WINDOW`, default 5m, 1s to 1h, a divisor of a day):
    /// batches received in one window become one object per (category, day) and OCSF class.
    pub window: Duration,
    /// How long after a window ends it is compacted (`AD_SETTLE`, default 1m, at least 1s and
    /// at most the window): the clock skew between ad-ingest and S3 tolerated is half of it.
    pub settle: Duration,
    /// Memory the compactor gives a window's landed batches and its open objects, half each
    /// (`AD_COMPACT_BUFFER_MIB`, default 256, a quarter of ad-compact's 1024 MB): a window
    /// larger than that is compacted all the same, reading batches again and closing objects
    /// sooner.
    pub compact_buffer_bytes: usize,
}

impl IngestConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads the given variables.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let cfg = IngestConfig {
            api_key_param: required(env, "API_KEY_PARAM")?,
            bucket: required(env, "BUCKET")?,
            prefix: prefix(env, "AD_PREFIX", "active-directory/"),
            max_body_bytes: number(env, "AD_MAX_BODY_BYTES", 4_500_000)?,
            max_text_body_bytes: number(env, "AD_MAX_TEXT_BODY_BYTES", 3_000_000)?,
            max_partitions: number(env, "AD_MAX_PARTITIONS", 400)?,
            max_decompressed_bytes: number(env, "AD_MAX_DECOMPRESSED_BYTES", 64 << 20)?,
            max_events: number(env, "AD_MAX_EVENTS", 10_000)?,
            max_event_bytes: number(env, "AD_MAX_EVENT_BYTES", 256 << 10)?,
            key_cache_ttl: duration(env, "AD_KEY_CACHE_TTL", "5m")?,
            key_refresh_interval: duration(env, "AD_KEY_REFRESH_INTERVAL", "5s")?,
            agent_timeout: duration(env, "AD_AGENT_TIMEOUT", "10m")?,
            ocsf: OcsfConfig::from_map(env)?,
            function_name: value(env, "AWS_LAMBDA_FUNCTION_NAME").map(str::to_owned),
            window: duration(env, "AD_WINDOW", "5m")?,
            settle: duration(env, "AD_SETTLE", "1m")?,
            compact_buffer_bytes: number::<usize>(env, "AD_COMPACT_BUFFER_MIB", 256)?
                .saturating_mul(1 << 20),
        };
        if cfg.compact_buffer_bytes == 0 {
            return Err(ConfigError {
                var: "AD_COMPACT_BUFFER_MIB",
                reason: "must be at least 1".into(),
            });
        }
        let whole = |d: Duration| d.subsec_nanos() == 0 && d.as_secs() > 0;
        if !whole(cfg.window) || cfg.window.as_secs() > 3600 || 86_400 % cfg.window.as_secs() != 0 {
            return Err(ConfigError {
                var: "AD_WINDOW",
                reason: "must be whole seconds from 1s to 1h that divide a day (e.g. 1m, 5m, 15m)"
                    .into(),
            });
        }
        if !whole(cfg.settle) || cfg.settle > cfg.window {
            return Err(ConfigError {
                var: "AD_SETTLE",
                reason: "must be whole seconds, at least 1s and at most AD_WINDOW".into(),
            });
        }
        // API Gateway puts the body into the event Lambda receives: base64 (4/3 of it) for a
        // binary body, JSON-escaped for a text body (a valid JSON body at most doubles: every
        // `"`, `\\` and newline gains a backslash). Larger than Lambda's request limit, the agent
        // would get API Gateway's 500 instead of our 413.
        for (var, max, factor) in [
            ("AD_MAX_BODY_BYTES", cfg.max_body_bytes, 4.0 / 3.0),
            ("AD_MAX_TEXT_BODY_BYTES", cfg.max_text_body_bytes, 2.0),
        ] {
            let event = max as f64 * factor + EVENT_ENVELOPE_BYTES as f64;
            if event > LAMBDA_REQUEST_LIMIT as f64 {
                return Err(ConfigError {
                    var,
                    reason: format!(
                        "{max} bytes can become a {event:.0}-byte Lambda event, over Lambda's {LAMBDA_REQUEST_LIMIT}-byte request limit"
                    ),
                });
            }
        }
        if cfg.key_cache_ttl > Duration::from_secs(300) {
            return Err(ConfigError {
                var: "AD_KEY_CACHE_TTL",
                reason: "must be at most 5m: a rotated key must stop working within 5 minutes"
                    .into(),
            });
        }
        for (var, zero) in [
            ("AD_MAX_BODY_BYTES", cfg.max_body_bytes == 0),
            ("AD_MAX_TEXT_BODY_BYTES", cfg.max_text_body_bytes == 0),
            ("AD_MAX_PARTITIONS", cfg.max_partitions == 0),
            ("AD_MAX_DECOMPRESSED_BYTES", cfg.max_decompressed_bytes == 0),
            ("AD_MAX_EVENTS", cfg.max_events == 0),
            ("AD_MAX_EVENT_BYTES", cfg.max_event_bytes == 0),
            ("AD_AGENT_TIMEOUT", cfg.agent_timeout.is_zero()),
        ] {
            if zero {
                return Err(ConfigError {
                    var,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        Ok(cfg)
    }
}

/// Reads a required, non-empty variable.
/// The optional OCSF Parquet output of either function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcsfConfig {
    /// Bucket of the Parquet objects (`OCSF_BUCKET`, default `BUCKET`): Security Lake's bucket
    /// when the sources are registered there.
    pub bucket: String,
    /// Key prefix (`OCSF_PREFIX`, default `ext/`, where Security Lake puts custom sources).
    pub prefix: String,
    /// The `region=` partition (`OCSF_REGION`, default the function's `AWS_REGION`).
    pub region: String,
    /// The `accountId=` partition (`OCSF_ACCOUNT_ID`); in Lambda, taken from the invoked
    /// function's ARN when unset.
    pub account_id: Option<String>,
}

impl OcsfConfig {
    /// Reads `OCSF_*`: `None` when `OCSF_OUTPUT` is `off` (the default).
    pub fn from_map(env: &HashMap<String, String>) -> Result<Option<Self>, ConfigError> {
        match value(env, "OCSF_OUTPUT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("off") => return Ok(None),
            Some("on") => {}
            Some(other) => {
                return Err(ConfigError {
                    var: "OCSF_OUTPUT",
                    reason: format!("{other:?} is neither on nor off"),
                });
            }
        }
        let bucket = match value(env, "OCSF_BUCKET") {
            Some(b) => b.to_owned(),
            None => required(env, "BUCKET")?,
        };
        let region = value(env, "OCSF_REGION")
            .or_else(|| value(env, "AWS_REGION"))
            .or_else(|| value(env, "AWS_DEFAULT_REGION"))
            .ok_or_else(|| ConfigError {
                var: "OCSF_REGION",
                reason: "is not set, nor is AWS_REGION: the region= partition needs one".into(),
            })?;
        if !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError {
                var: "OCSF_REGION",
                reason: format!("{region:?} is not an AWS region name (e.g. eu-west-1)"),
            });
        }
        let account_id = value(env, "OCSF_ACCOUNT_ID").map(str::to_owned);
        if let Some(a) = &account_id
            && !is_account_id(a)
        {
            return Err(ConfigError {
                var: "OCSF_ACCOUNT_ID",
                reason: format!("{a:?} is not a 12-digit AWS account id"),
            });
        }
        Ok(Some(OcsfConfig {
            bucket,
            prefix: prefix(env, "OCSF_PREFIX", "ext/"),
            region: region.to_owned(),
            account_id,
        }))
    }

    /// Outside Lambda the account id must be given: there is no function ARN to take it from.
    pub fn require_account(&self) -> Result<(), ConfigError> {
        match self.account_id {
            Some(_) => Ok(()),
            None => Err(ConfigError {
                var: "OCSF_ACCOUNT_ID",
                reason: "is required with OCSF_OUTPUT=on outside Lambda (the accountId= partition)"
                    .into(),
            }),
        }
    }
}

/// Whether `s` is an AWS account id: 12 digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The value of `var` trimmed, when it is set and not blank.
fn value<'a>(env: &'a HashMap<String, String>, var: &str) -> Option<&'a str> {
    env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
}

pub fn required(env: &HashMap<String, String>, var: &'static str) -> Result<String, ConfigError> {
    value(env, var)
        .map(str::to_owned)
        .ok_or_else(|| ConfigError {
            var,
            reason: "is not set".into(),
        })
}

/// Reads a key prefix, normalised to end with `/` (an empty prefix stays empty).
pub fn prefix(env: &HashMap<String, String>, var: &str, default: &str) -> String {
    let p = env
        .get(var)
        .map(|v| v.trim().trim_start_matches('/'))
        .unwrap_or(default);
    if p.is_empty() || p.ends_with('/') {
        p.to_owned()
    } else {
        format!("{p}/")
    }
}

/// Reads a duration (`300`, `500ms`, `90s`, `5m`, `24h`, `7d`).
pub fn duration(
    env: &HashMap<String, String>,
    var: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = value(env, var).unwrap_or(default);
    parse_duration(raw).ok_or_else(|| ConfigError {
        var,
        reason: format!("{raw:?} is not a duration (examples: 300, 500ms, 90s, 5m, 24h, 7d)"),
    })
}

/// Reads an OCSF period: whole hours that divide a day (1h, 2h, 3h, 4h, 6h, 8h, 12h, 24h), so
/// that periods start on a grid from midnight UTC and never span two `eventDay` partitions.
fn ocsf_period(
    env: &HashMap<String, String>,
    var: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let period = duration(env, var, default)?;
    let secs = period.as_secs();
    if period.subsec_nanos() != 0 || secs == 0 || secs % 3600 != 0 || 86_400 % secs != 0 {
        return Err(ConfigError {
            var,
            reason: "must be a number of whole hours that divides a day: 1h, 2h, 3h, 4h, 6h, 8h, 12h or 24h".into(),
        });
    }
    Ok(period)
}

/// Reads a non-negative integer.
pub fn number<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match value(env, var) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|_| ConfigError {
            var,
            reason: format!("{raw:?} is not a whole number"),
        }),
    }
}

/// `TV1_BASE_URL`: https anywhere, plain http only on loopback (tests, the simulator).
fn parse_base_url(raw: &str) -> Result<reqwest::Url, ConfigError> {
    let err = |reason: String| ConfigError {
        var: "TV1_BASE_URL",
        reason,
    };
    let url = reqwest::Url::parse(raw).map_err(|e| err(format!("{raw:?} is not a URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(err(format!("{raw:?} has no host"))),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(err(format!(
                "{raw:?}: plain http is only allowed for loopback hosts; use https"
            )));
        }
        s => return Err(err(format!("{raw:?}: unsupported scheme {s:?}"))),
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(err(format!(
            "{raw:?}: give the origin only, e.g. https://api.xdr.trendmicro.com"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> =
            [("TV1_TOKEN_PARAM", "/tv1/token"), ("BUCKET", "lake")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn ocsf_output_is_off_unless_asked_and_checked_when_on() {
        let m = |pairs: &[(&str, &str)]| env(pairs);
        assert_eq!(OcsfConfig::from_map(&m(&[])).unwrap(), None);
        let on = OcsfConfig::from_map(&m(&[("OCSF_OUTPUT", "on"), ("AWS_REGION", "eu-west-1")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                on.bucket.as_str(),
                on.prefix.as_str(),
                on.region.as_str(),
                &on.account_id
            ),
            ("lake", "ext/", "eu-west-1", &None)
        );
        for (pairs, var) in [
            (vec![("OCSF_OUTPUT", "yes")], "OCSF_OUTPUT"),
            (vec![("OCSF_OUTPUT", "on")], "OCSF_REGION"),
            (
                vec![
                    ("OCSF_OUTPUT", "on"),
                    ("AWS_REGION", "x"),
                    ("OCSF_ACCOUNT_ID", "12"),
                ],
                "OCSF_ACCOUNT_ID",
            ),
        ] {
            assert_eq!(OcsfConfig::from_map(&m(&pairs)).unwrap_err().var, var);
        }
        assert_eq!(on.require_account().unwrap_err().var, "OCSF_ACCOUNT_ID");
    }

    #[test]
    fn defaults() {
        let c = PullerConfig::from_map(&env(&[])).unwrap();
        assert_eq!(c.base_url.as_str(), "https://api.xdr.trendmicro.com/");
        assert_eq!(c.prefix, "vision-one/audit/");
        assert_eq!(c.page_size, 200);
        assert_eq!(c.lag, Duration::from_secs(300));
        assert_eq!(c.initial_lookback, Duration::from_secs(86_400));
        assert_eq!(c.reconcile_horizon, Duration::from_secs(86_400));
        assert_eq!(c.reconcile_step, Duration::from_secs(3600));
        let off = PullerConfig::from_map(&env(&[("TV1_RECONCILE_HORIZON", "0")])).unwrap();
        assert!(off.reconcile_horizon.is_zero());
        assert_eq!(c.data_retention, None);
    }

    #[test]
    fn ocsf_periods_are_a_day_of_audit_an_hour_of_alerts_and_divide_a_day() {
        let period = |pairs: &[(&str, &str)], stream| {
            PullerConfig::for_stream(&env(pairs), stream).map(|c| c.ocsf_period.as_secs() / 3600)
        };
        assert_eq!(period(&[], Stream::Audit).unwrap(), 24);
        assert_eq!(period(&[], Stream::Alerts).unwrap(), 1);
        assert_eq!(period(&[], Stream::Oat).unwrap(), 1);
        assert_eq!(
            period(&[("TV1_AUDIT_OCSF_PERIOD", "6h")], Stream::Audit).unwrap(),
            6
        );
        assert_eq!(
            period(&[("TV1_OAT_OCSF_PERIOD", "1d")], Stream::Oat).unwrap(),
            24
        );
        for bad in ["5h", "30m", "0", "48h", "90m", "1h30m", "soon"] {
            let e = period(&[("TV1_ALERTS_OCSF_PERIOD", bad)], Stream::Alerts).unwrap_err();
            assert_eq!(e.var, "TV1_ALERTS_OCSF_PERIOD", "{bad}");
        }
    }

    #[test]
    fn a_horizon_that_reaches_expired_objects_is_refused() {
        // The default 24 h horizon needs more than two days of retention.
        let e = PullerConfig::from_map(&env(&[("TV1_DATA_RETENTION_DAYS", "2")])).unwrap_err();
        assert_eq!(e.var, "TV1_RECONCILE_HORIZON");
        assert!(e.reason.contains("expired objects"), "{}", e.reason);
        let ok = PullerConfig::from_map(&env(&[("TV1_DATA_RETENTION_DAYS", "3")])).unwrap();
        assert_eq!(ok.data_retention, Some(Duration::from_secs(3 * 86_400)));
        let off = [
            ("TV1_DATA_RETENTION_DAYS", "1"),
            ("TV1_RECONCILE_HORIZON", "0"),
        ];
        assert!(PullerConfig::from_map(&env(&off)).is_ok());
        let absurd = [("TV1_DATA_RETENTION_DAYS", "300000000000000")];
        assert_eq!(
            PullerConfig::from_map(&env(&absurd)).unwrap_err().var,
            "TV1_DATA_RETENTION_DAYS"
        );
    }

    #[test]
    fn region_and_override() {
        let c = PullerConfig::from_map(&env(&[("TV1_REGION", "EU")])).unwrap();
        assert_eq!(c.base_url.host_str(), Some("api.eu.xdr.trendmicro.com"));
        let c = PullerConfig::from_map(&env(&[
            ("TV1_REGION", "eu"),
            ("TV1_BASE_URL", "http://127.0.0.1:9000"),
        ]))
        .unwrap();
        assert_eq!(c.base_url.as_str(), "http://127.0.0.1:9000/");
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("TV1_REGION", "mars")], "TV1_REGION"),
            (&[("TV1_BASE_URL", "http://example.com")], "TV1_BASE_URL"),
            (
                &[("TV1_BASE_URL", "https://example.com/v3.0")],
                "TV1_BASE_URL",
            ),
            (&[("TV1_PAGE_SIZE", "500")], "TV1_PAGE_SIZE"),
            (&[("TV1_LAG", "soon")], "TV1_LAG"),
            (&[("TV1_MAX_WINDOW", "0")], "TV1_MAX_WINDOW"),
            (&[("TV1_FETCH_CONCURRENCY", "0")], "TV1_FETCH_CONCURRENCY"),
            (&[("TV1_FETCH_CONCURRENCY", "64")], "TV1_FETCH_CONCURRENCY"),
            (&[("BUCKET", "")], "BUCKET"),
            (&[("TV1_RECONCILE_HORIZON", "5m")], "TV1_RECONCILE_HORIZON"),
            (
                &[("TV1_RECONCILE_HORIZON", "200d")],
                "TV1_RECONCILE_HORIZON",
            ),
            (&[("TV1_RECONCILE_STEP", "7m")], "TV1_RECONCILE_STEP"),
            (&[("TV1_RECONCILE_STEP", "0")], "TV1_RECONCILE_STEP"),
            (&[("TV1_RECONCILE_STEP", "1500ms")], "TV1_RECONCILE_STEP"),
        ];
        for (pairs, var) in cases {
            let e = PullerConfig::from_map(&env(pairs)).unwrap_err();
            assert_eq!(e.var, *var, "{e}");
            assert!(e.to_string().contains(var));
        }
        let mut m = env(&[]);
        m.remove("TV1_TOKEN_PARAM");
        assert_eq!(
            PullerConfig::from_map(&m).unwrap_err().var,
            "TV1_TOKEN_PARAM"
        );
    }

    #[test]
    fn ingest_config() {
        let mut m: HashMap<String, String> = [("API_KEY_PARAM", "/k"), ("BUCKET", "b")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c = IngestConfig::from_map(&m).unwrap();
        assert_eq!(c.prefix, "active-directory/");
        assert_eq!(c.key_cache_ttl, Duration::from_secs(300));
        m.insert("AD_KEY_CACHE_TTL".into(), "10m".into());
        assert_eq!(
            IngestConfig::from_map(&m).unwrap_err().var,
            "AD_KEY_CACHE_TTL"
        );
        m.remove("AD_KEY_CACHE_TTL");
        m.remove("API_KEY_PARAM");
        assert_eq!(IngestConfig::from_map(&m).unwrap_err().var, "API_KEY_PARAM");
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(
            PullerConfig::from_map(&env(&[("AUDIT_PREFIX", "/raw/tv1")]))
                .unwrap()
                .prefix,
            "raw/tv1/"
        );
    }
}
