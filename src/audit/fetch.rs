//! Fetching a window as consecutive slices, several at once, delivered in order.
//!
//! A long window (a catch-up after an outage) is cut into up to `TV1_FETCH_CONCURRENCY` slices.
//! Each slice is its own query, paged by its own `nextLink` chain, fetched ahead into a small
//! bounded channel; the consumer reads slice 1 to its end, then slice 2, and so on, so entries
//! still arrive in time order and the checkpoint still moves in order. With one slice this is
//! the plain sequential pull. Memory stays bounded: at most `CHANNEL_PAGES + 1` pages per
//! slice in flight.

use super::run::Stop;
use super::{MAX_RESTARTS_WITHOUT_PROGRESS, Window};
use crate::audit::vision_one::{self, Page, VisionOneError};
use crate::lake::encode::top_level_field;
use crate::timefmt::{api_time, floor_second, parse_api_time};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Pages fetched ahead per slice. Enough for a later slice to be fetched whole while the
/// consumer works through an earlier one (a slice of a 24 h catch-up window is typically a
/// dozen pages), small enough to bound memory: 4 slices × 13 pages × ~100 kB ≈ 5 MB.
const CHANNEL_PAGES: usize = 12;

/// What a slice's fetcher hands over, in order.
pub(super) enum Fetched {
    /// The next page of the slice.
    Page(Page),
    /// The page token expired; the query restarts at this second (inclusive), so entries of
    /// this second received so far will come again and must be forgotten.
    Restart(DateTime<Utc>),
    /// A range of a newest-first stream is read again before any of it was handed over:
    /// it was too large to order (`halved`), or its page token expired.
    Reread {
        /// Whether the range was halved (else its token expired).
        halved: bool,
    },
    /// The slice cannot go on; nothing after it may be used.
    Stopped(Stop),
}

/// Cuts `w` into at most `n` slices of at least an hour, on whole seconds.
pub(super) fn slices(w: Window, n: usize) -> Vec<Window> {
    let secs = (w.to - w.from).num_seconds().max(1);
    let n = (n as i64).min((secs + 3599) / 3600).max(1);
    let len = (secs + n - 1) / n;
    (0..n)
        .map(|i| Window {
            from: w.from + TimeDelta::seconds(i * len),
            to: (w.from + TimeDelta::seconds((i + 1) * len)).min(w.to),
        })
        .filter(|s| s.from < s.to)
        .collect()
}

/// Drops the page's items logged before `query_start` (the query asked from a second earlier,
/// see [`vision_one::Client::first_page`]) and returns the latest second among the rest inside
/// `slice`. A restarted query begins there: the assembler holds back exactly that second (its
/// newest), so it is the one to forget and read again, and every earlier second is complete
/// even if the page was not in order. Items without a readable time are kept (they land by
/// their content, see [`crate::audit::segment::unreadable_key`]).
fn keep_from(
    page: &mut Page,
    time_field: &str,
    query_start: DateTime<Utc>,
    slice: Window,
) -> Option<DateTime<Utc>> {
    let mut max = None;
    page.items.retain(|raw| match item_time(raw, time_field) {
        Some(t) if t < query_start => false,
        Some(t) => {
            if t < slice.to {
                max = max.max(Some(t));
            }
            true
        }
        None => true,
    });
    max
}

/// The time of an item: its field `field`, to the second.
fn item_time(raw: &RawValue, field: &str) -> Option<DateTime<Utc>> {
    top_level_field(raw.get(), field)
        .and_then(|v| serde_json::from_str::<std::borrow::Cow<'_, str>>(v.get()).ok())
        .and_then(|t| parse_api_time(&t))
        .map(floor_second)
}

/// Fetches one slice into `tx` until it ends, fails, or the receiver is gone.
pub(super) async fn fetch_slice(
    api: &vision_one::Client,
    slice: Window,
    deadline: Instant,
    tx: mpsc::Sender<Fetched>,
) {
    if api.stream().newest_first() {
        return fetch_slice_ordered(api, slice, deadline, tx).await;
    }
    let mut query_start = slice.from;
    let mut next: Option<String> = None;
    let mut last_sent: Option<DateTime<Utc>> = None;
    let mut restarts_without_progress = 0;
    loop {
        let page = match &next {
            None => api.first_page(query_start, slice.to, None, deadline).await,
            Some(link) => api.next_page(link, deadline).await,
        };
        let msg = match page {
            Ok(mut page) => {
                last_sent = last_sent.max(keep_from(
                    &mut page,
                    api.stream().time_field(),
                    query_start,
                    slice,
                ));
                next = page.next_link.clone();
                Fetched::Page(page)
            }
            Err(VisionOneError::PageTokenExpired) => {
                let resume = last_sent.unwrap_or(query_start).max(query_start);
                restarts_without_progress = if resume > query_start {
                    0
                } else {
                    restarts_without_progress + 1
                };
                if restarts_without_progress > MAX_RESTARTS_WITHOUT_PROGRESS {
                    let _ = tx.send(Fetched::Stopped(Stop::Churn)).await;
                    return;
                }
                tracing::warn!(resume = %api_time(resume), "page token expired; restarting the query");
                query_start = resume;
                next = None;
                Fetched::Restart(resume)
            }
            Err(e) if e.is_deadline() => Fetched::Stopped(Stop::Deadline(e.to_string())),
            Err(e) => Fetched::Stopped(Stop::Api(e)),
        };
        let last = matches!(&msg, Fetched::Stopped(_))
            || matches!(&msg, Fetched::Page(p) if p.next_link.is_none());
        if tx.send(msg).await.is_err() || last {
            return;
        }
    }
}

/// [`fetch_slice`] for a stream served newest first (OAT detections): the slice is read in
/// ranges, each read whole, put oldest first and handed over as one page, so the consumer sees
/// the same time order as from any other stream. A range whose items pass
/// `TV1_ORDERED_RANGE_KIB` is halved and read again, so memory holds one bounded range. An
/// expired page token restarts the range being read: none of it was handed over yet.
async fn fetch_slice_ordered(
    api: &vision_one::Client,
    slice: Window,
    deadline: Instant,
    tx: mpsc::Sender<Fetched>,
) {
    // A range is as wide as the last one that fitted (the slice at first), twice that when it
    // held less than half the bound: a stream whose ranges must be halved does not halve
    // again from the whole rest of the slice each time.
    let mut range = slice;
    let mut restarts = 0;
    while range.from < slice.to {
        let msg = match read_ordered(api, range, deadline).await {
            Ok(Some((page, bytes))) => {
                // A range well under the bound lets the next one be twice as wide again, so a
                // burst that forced halving does not narrow the rest of the slice for good.
                let mut width = range.to - range.from;
                if bytes < api.ordered_range_bytes() / 2 {
                    width = width * 2;
                }
                range = Window {
                    from: range.to,
                    to: (range.to + width).min(slice.to),
                };
                restarts = 0;
                Fetched::Page(page)
            }
            Ok(None) => {
                let half = (range.to - range.from) / 2;
                let half = TimeDelta::seconds(half.num_seconds().max(1));
                tracing::info!(from = %api_time(range.from), to = %api_time(range.to), "a range of a newest-first stream is too large to order in memory; halving it");
                range.to = range.from + half;
                Fetched::Reread { halved: true }
            }
            Err(VisionOneError::PageTokenExpired) if restarts < MAX_RESTARTS_WITHOUT_PROGRESS => {
                restarts += 1;
                tracing::warn!(from = %api_time(range.from), "page token expired; reading the range again");
                Fetched::Reread { halved: false }
            }
            Err(VisionOneError::PageTokenExpired) => Fetched::Stopped(Stop::Churn),
            Err(e) if e.is_deadline() => Fetched::Stopped(Stop::Deadline(e.to_string())),
            Err(e) => Fetched::Stopped(Stop::Api(e)),
        };
        let stop = matches!(msg, Fetched::Stopped(_));
        if tx.send(msg).await.is_err() || stop {
            return;
        }
    }
}

/// A range's items with their times, and their bytes.
type RangeItems = (Vec<(Option<DateTime<Utc>>, Box<RawValue>)>, usize);

/// Every item of `range` (its time in `[from, to)`, or unreadable), with that time, read
/// through all its pages, and their bytes; `None` when they pass `TV1_ORDERED_RANGE_KIB` (only
/// a range of more than a second: one second is read whatever its size).
async fn read_range(
    api: &vision_one::Client,
    range: Window,
    field: &str,
    deadline: Instant,
) -> Result<Option<RangeItems>, VisionOneError> {
    let mut items = Vec::new();
    let mut bytes = 0;
    let mut page = api.first_page(range.from, range.to, None, deadline).await?;
    loop {
        for raw in page.items {
            // The query asks from a second early and its end may be inclusive: what lies
            // outside the range is another range's.
            let time = item_time(&raw, field);
            if time.is_some_and(|t| !range.contains(t)) {
                continue;
            }
            bytes += raw.get().len();
            items.push((time, raw));
        }
        if bytes > api.ordered_range_bytes() && range.to - range.from > TimeDelta::seconds(1) {
            return Ok(None);
        }
        match page.next_link {
            Some(link) => page = api.next_page(&link, deadline).await?,
            None => return Ok(Some((items, bytes))),
        }
    }
}

/// Every item of `range` of a newest-first stream in time order, as one page, with their
/// bytes; `None` when they pass `TV1_ORDERED_RANGE_KIB`.
pub(super) async fn read_ordered(
    api: &vision_one::Client,
    range: Window,
    deadline: Instant,
) -> Result<Option<(Page, usize)>, VisionOneError> {
    let Some((mut items, bytes)) =
        read_range(api, range, api.stream().time_field(), deadline).await?
    else {
        return Ok(None);
    };
    items.sort_by_key(|(time, _)| *time);
    let page = Page {
        items: items.into_iter().map(|(_, raw)| raw).collect(),
        next_link: None,
    };
    Ok(Some((page, bytes)))
}

/// A bounded channel per slice.
pub(super) fn channels(n: usize) -> (Vec<mpsc::Sender<Fetched>>, Vec<mpsc::Receiver<Fetched>>) {
    (0..n).map(|_| mpsc::channel(CHANNEL_PAGES)).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_api_time(s).unwrap()
    }

    #[test]
    fn slicing() {
        let w = Window {
            from: t("2026-11-20T00:00:00Z"),
            to: t("2026-11-21T00:00:00Z"),
        };
        let s = slices(w, 4);
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].from, s[0].to), (w.from, t("2026-11-20T06:00:00Z")));
        assert_eq!(s[3].to, w.to);
        assert!(s.windows(2).all(|p| p[0].to == p[1].from), "contiguous");
        // Short windows stay whole: a slice is at least an hour.
        let short = Window {
            from: t("2026-11-20T00:00:00Z"),
            to: t("2026-11-20T00:05:00Z"),
        };
        assert_eq!(slices(short, 4), vec![short]);
        let odd = Window {
            from: t("2026-11-20T00:00:00Z"),
            to: t("2026-11-20T02:00:01Z"),
        };
        let s = slices(odd, 4);
        assert_eq!(s.len(), 3);
        assert_eq!(s.last().unwrap().to, odd.to);
        assert_eq!(slices(w, 1), vec![w]);
    }
}
