//! The Vision One streams the engine pulls, and what each one is.
//!
//! The engine (checkpoint, lease, pending, commit, redo, deadline, retries, page-token
//! restarts, reconciliation) is the same for every stream; a stream differs only in what is
//! described here: its endpoint, the query that reads a time range of it, the time field that
//! orders it, and where it lands. Facts about the endpoints are gathered, with their sources, in
//! `docs/research/vision-one-streams.md`.

use crate::timefmt::api_time;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// One stream of Vision One data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// `GET /v3.0/audit/logs`: audit log entries, read by `loggedDateTime`.
    Audit,
    /// `GET /v3.0/workbench/alerts`: Workbench alerts, read by `updatedDateTime`, so that every
    /// state an alert is seen in (a version, `(id, updatedDateTime)`) is its own line.
    Alerts,
    /// `GET /v3.0/oat/detections`: Observed Attack Techniques detections, read by
    /// `ingestedDateTime`: a detection Vision One ingests late is read when it is ingested.
    Oat,
}

impl Stream {
    /// Every stream, in the order `tv1 pull` runs them.
    pub const ALL: [Stream; 3] = [Stream::Audit, Stream::Alerts, Stream::Oat];

    /// The name in `TV1_STREAMS`, `--stream`, payloads, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Audit => "audit",
            Stream::Alerts => "alerts",
            Stream::Oat => "oat",
        }
    }

    /// The stream called `name`.
    pub fn from_name(name: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.name() == name.trim())
    }

    /// The stream called `name`, or an error that lists the streams.
    pub fn parse(name: &str) -> Result<Stream, UnknownStream> {
        Stream::from_name(name).ok_or_else(|| UnknownStream(name.trim().to_owned()))
    }

    /// The endpoint's path on the regional origin.
    pub fn path(self) -> &'static str {
        match self {
            Stream::Audit => "/v3.0/audit/logs",
            Stream::Alerts => "/v3.0/workbench/alerts",
            Stream::Oat => "/v3.0/oat/detections",
        }
    }

    /// The item field whose time orders the stream and places an item in its partition.
    pub fn time_field(self) -> &'static str {
        match self {
            Stream::Audit => "loggedDateTime",
            Stream::Alerts => "updatedDateTime",
            Stream::Oat => "ingestedDateTime",
        }
    }

    /// The variable naming the stream's key prefix, and its default.
    pub fn prefix_var(self) -> (&'static str, &'static str) {
        match self {
            Stream::Audit => ("AUDIT_PREFIX", "vision-one/audit/"),
            Stream::Alerts => ("ALERTS_PREFIX", "vision-one/alerts/"),
            Stream::Oat => ("OAT_PREFIX", "vision-one/oat/"),
        }
    }

    /// The variable setting how much of the stream's pull one OCSF Parquet object holds (see
    /// `ocsf_periods.rs`), and its default: a day of audit entries (Security Lake's longest
    /// delivery increment, and what keeps their Parquet no larger than their gzip JSON Lines,
    /// `docs/benchmarks.md` note 15), an hour of alerts and detections, which are read for
    /// response.
    pub fn ocsf_period_var(self) -> (&'static str, &'static str) {
        match self {
            Stream::Audit => ("TV1_AUDIT_OCSF_PERIOD", "24h"),
            Stream::Alerts => ("TV1_ALERTS_OCSF_PERIOD", "1h"),
            Stream::Oat => ("TV1_OAT_OCSF_PERIOD", "1h"),
        }
    }

    /// The variable holding the stream's `TMV1-Filter`, if the endpoint takes one.
    pub fn filter_var(self) -> Option<&'static str> {
        match self {
            Stream::Audit => None,
            Stream::Alerts => Some("TV1_ALERTS_FILTER"),
            Stream::Oat => Some("TV1_OAT_FILTER"),
        }
    }

    /// Whether the endpoint serves a query newest first whatever it is asked (OAT detections:
    /// it takes no `orderBy`). The engine then reads a range whole and orders it before use
    /// (see `fetch::fetch_slice`).
    pub fn newest_first(self) -> bool {
        matches!(self, Stream::Oat)
    }

    /// Whether reading a past hour again gives every item a first read gave. Audit entries
    /// never change and are kept 180 days. An alert's superseded versions are no longer served
    /// (only its current state is), and OAT detections age out of Vision One's data lake (its
    /// retention depends on the tenant's licence; not confirmed here): a backfill never rewrites
    /// such an hour it finished.
    pub fn rereads_same(self) -> bool {
        matches!(self, Stream::Audit)
    }

    /// Whether committed time is read again for items served late (`TV1_RECONCILE_HORIZON`).
    /// Not for a stream read by its ingestion time: an item that becomes visible later has a
    /// later ingestion time, and the pull reads it there.
    pub fn reconciles(self) -> bool {
        !matches!(self, Stream::Oat)
    }

    /// The query parameters that read items whose time is in `[start, end]` (oldest first, except
    /// where [`Self::newest_first`]), `top` items a page where the endpoint takes it.
    ///
    /// The range asked for starts one second before `start`: Vision One does not say whether
    /// an item of exactly `startDateTime` is in the range, and public connectors disagree, so
    /// the caller drops what precedes `start` and the result is the same either way.
    pub fn query(
        self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        top: u32,
    ) -> Vec<(&'static str, String)> {
        let from = api_time(start - TimeDelta::seconds(1));
        let to = api_time(end);
        match self {
            Stream::Audit => vec![
                ("startDateTime", from),
                ("endDateTime", to),
                ("dateTimeTarget", "loggedDateTime".into()),
                ("orderBy", "loggedDateTime asc".into()),
                ("top", top.to_string()),
                ("labels", "all".into()),
            ],
            // No `top`: neither Trend's SDK nor its API descriptions give one for this
            // endpoint (the server's page size applies).
            Stream::Alerts => vec![
                ("startDateTime", from),
                ("endDateTime", to),
                ("dateTimeTarget", "updatedDateTime".into()),
                ("orderBy", "updatedDateTime asc".into()),
            ],
            Stream::Oat => vec![
                ("ingestedStartDateTime", from),
                ("ingestedEndDateTime", to),
                ("top", top.to_string()),
            ],
        }
    }
}

/// A name that is no stream's (in `TV1_STREAMS`, `--stream`, a payload's `"stream"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown stream {0:?}; the streams are {streams}",
    streams = Stream::ALL.map(Stream::name).join(", ")
)]
pub struct UnknownStream(pub String);

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_queries_start_a_second_early() {
        for s in Stream::ALL {
            assert_eq!(Stream::from_name(s.name()), Some(s));
            let start = crate::timefmt::parse_api_time("2026-11-30T10:00:00Z").unwrap();
            let q = s.query(start, start + TimeDelta::hours(1), 200);
            assert!(
                q.iter()
                    .any(|(k, v)| k.ends_with("tartDateTime") && v == "2026-11-30T09:59:59Z"),
                "{q:?}"
            );
        }
        assert_eq!(Stream::from_name("nope"), None);
    }
}
