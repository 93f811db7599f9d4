//! Time the puller can trust: S3's clock, read from the `Date` of its responses.
//!
//! The window end (`now − TV1_LAG`), the lease a run holds on the checkpoint, and the origin a
//! backfill pins are all compared across machines. A local clock that runs ahead would move
//! `committed_to` into the real future and skip what is logged in between; two machines whose
//! clocks disagree would disagree on whether a lease has expired. So every such instant is taken
//! on one clock, S3's: every S3 response carries `Date` (RFC 7231, whole seconds), and the time
//! since the last one is measured on the monotonic clock, which no clock step can move.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The local wall clock, shifted by a fixed offset that tests inject to simulate skew.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: TimeDelta,
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Self {
        Clock::default()
    }

    /// The machine's clock running `offset` ahead (negative: behind).
    pub fn skewed(offset: TimeDelta) -> Self {
        Clock { offset }
    }

    /// Now, as this clock reads it.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// A `Date` S3 sent, and the monotonic instant it arrived.
type Reading = (DateTime<Utc>, Instant);

/// The latest `Date` S3 sent, and when (monotonic) it arrived. Shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct ServerTime(Arc<Mutex<Option<Reading>>>);

impl ServerTime {
    /// S3's time now: the last `Date` plus the monotonic time since it arrived. `Date` is
    /// truncated to the second, so this reads up to a second early, which errs on the safe
    /// side everywhere it is used (a shorter window, a lease that looks younger).
    pub fn now(&self) -> Option<DateTime<Utc>> {
        let (date, at) = (*self.0.lock().unwrap())?;
        Some(date + TimeDelta::from_std(at.elapsed()).unwrap_or_default())
    }

    /// Records a `Date` header value received now, unless the reading held already says a later
    /// time: both are S3's time or earlier, so the later one is the better bound, and the clock
    /// never goes back. (Concurrent requests deliver their responses in any order: ad-ingest's
    /// late-landing check needs a clock at least as late as its own PUT's `Date`.)
    pub fn observe(&self, http_date: &str) {
        if let Ok(d) = DateTime::parse_from_rfc2822(http_date.trim()) {
            let d = d.with_timezone(&Utc);
            let mut reading = self.0.lock().unwrap();
            let held = reading
                .map(|(date, at)| date + TimeDelta::from_std(at.elapsed()).unwrap_or_default());
            if held.is_none_or(|h| d > h) {
                *reading = Some((d, Instant::now()));
            }
        }
    }

    /// The SDK interceptor that feeds this from every response of a client.
    pub fn interceptor(&self) -> DateObserver {
        DateObserver(self.clone())
    }
}

/// An S3 client interceptor recording the `Date` of every response.
#[derive(Debug)]
pub struct DateObserver(ServerTime);

impl Intercept for DateObserver {
    fn name(&self) -> &'static str {
        "tv1::DateObserver"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(d) = context.response().headers().get("date") {
            self.0.observe(d);
        }
        Ok(())
    }
}

/// The instants a run compares across machines, all on S3's clock.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    anchor: DateTime<Utc>,
    at: tokio::time::Instant,
    /// Local clock minus S3's when the run started (positive: the local clock runs ahead).
    pub skew: TimeDelta,
}

impl RunClock {
    /// Anchors on S3's time when known (after any S3 response), else on `local` (with a warning:
    /// real S3 always sends `Date`).
    pub fn new(server: &ServerTime, local: &Clock) -> Self {
        let local_now = local.now();
        let anchor = server.now().unwrap_or_else(|| {
            tracing::warn!("S3 sent no Date header; using the local clock");
            local_now
        });
        let skew = local_now - anchor;
        if skew.num_seconds().abs() >= 5 {
            tracing::warn!(
                skew_seconds = skew.num_seconds(),
                "the local clock differs from S3's; using S3's"
            );
        }
        RunClock {
            anchor,
            at: tokio::time::Instant::now(),
            skew,
        }
    }

    /// Now on S3's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.anchor + TimeDelta::from_std(self.at.elapsed()).unwrap_or_default()
    }

    /// The monotonic instant at which S3's clock reads `t` (now if `t` has passed).
    pub fn instant_at(&self, t: DateTime<Utc>) -> tokio::time::Instant {
        let ahead = (t - self.now()).to_std().unwrap_or_default();
        tokio::time::Instant::now() + ahead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_date_delivered_later_does_not_move_the_clock_back() {
        let t = ServerTime::default();
        t.observe("Mon, 30 Nov 2026 09:00:10 GMT");
        t.observe("Mon, 30 Nov 2026 09:00:05 GMT");
        assert!(t.now().unwrap() >= "2026-11-30T09:00:10Z".parse::<DateTime<Utc>>().unwrap());
        t.observe("Mon, 30 Nov 2026 09:00:20 GMT");
        assert!(t.now().unwrap() >= "2026-11-30T09:00:20Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn server_time_reads_http_dates_and_advances_monotonically() {
        let st = ServerTime::default();
        assert!(st.now().is_none());
        st.observe("Mon, 23 Nov 2026 10:34:53 GMT");
        let t = st.now().unwrap();
        assert_eq!(
            crate::timefmt::api_time(t),
            "2026-11-23T10:34:53Z",
            "within the same second"
        );
        st.observe("not a date");
        assert_eq!(
            crate::timefmt::api_time(st.now().unwrap()),
            "2026-11-23T10:34:53Z"
        );
    }

    #[test]
    fn a_run_clock_follows_s3_not_a_skewed_local_clock() {
        let st = ServerTime::default();
        let real = Utc::now();
        st.observe(&real.to_rfc2822());
        let rc = RunClock::new(&st, &Clock::skewed(TimeDelta::minutes(30)));
        assert!((rc.now() - real).num_seconds().abs() <= 1);
        assert!((rc.skew - TimeDelta::minutes(30)).num_seconds().abs() <= 1);
        // Without any S3 response the local clock is all there is.
        let rc = RunClock::new(&ServerTime::default(), &Clock::skewed(TimeDelta::hours(1)));
        assert!((rc.now() - real - TimeDelta::hours(1)).num_seconds().abs() <= 1);
    }
}
