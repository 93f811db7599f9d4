//! tv1-connector: lands Trend Vision One security data in an S3 data lake, exactly once.
//!
//! # Two pipelines
//!
//! ```text
//! audit entry  EventBridge ─► audit-puller ─► pull::Puller::invoke (pull/invoke.rs)
//!   config ─► vision_one (token from SSM via secret, paging, retries)
//!          ─► pull (window, lease in the checkpoint, fetch ─► segment ─► encode)
//!          ─► sink (create-only PUT of gzip JSON Lines) ─► ocsf::lake (Parquet, optional)
//!          ─► checkpoint (commit) ; later pull/reconcile re-reads for late entries
//!
//! AD event     API Gateway ─► ad-ingest ─► ingest::Ingest::handle_apigw (ingest/apigw.rs)
//!              tv1 serve   ─► ingest::serve (same handler over plain HTTP)
//!   ingest (routes /v1 and HEC) ─► auth (API key from SSM) ─► decode (base64, gzip caps,
//!   envelope / NDJSON / HEC) ─► events (nine agent shapes, normalised) ─► encode
//!          ─► sink (create-only PUT per category and day) ─► ocsf::lake (optional)
//!          ─► batch marker ─► agents (the agent list)
//! ```
//!
//! # Binaries (`src/bin/`)
//! - `audit-puller`: the scheduled Lambda function; hands each invocation to
//!   [`pull::Puller::invoke`].
//! - `ad-ingest`: the API Gateway Lambda function; hands each request to
//!   [`ingest::Ingest::handle_apigw`].
//! - `tv1`: the operator CLI over the same code (`pull`, `backfill`, `status`, `checkpoint`,
//!   `rotate-key`, `serve`, `ocsf-sources`, `simulate`).
//!
//! # Modules
//! - Shared: [`config`] (environment, read once), [`aws`] (SDK clients), [`secret`] (SSM
//!   SecureStrings, never printed), [`timefmt`], [`telemetry`] (logs), [`clock`] (S3's time).
//! - Lake writing, shared by both pipelines: [`encode`] (gzip JSON Lines, `_id`), [`sink`] (S3
//!   objects and conditional state documents), [`checkpoint`] (checkpoint and status
//!   documents), [`ocsf`] (OCSF mappings, Parquet, the optional second output).
//! - Audit pipeline: [`vision_one`] (API client), [`segment`] (entries → objects), [`pull`]
//!   (runs, lease, redo, reconciliation, backfill, operator actions, the Lambda door).
//! - AD pipeline: [`ingest`] (routes, HEC, auth, decode, events, agents, `tv1 serve`).
//! - `simulate` (cargo feature `simulator`, off in the Lambda functions): the Vision One
//!   simulator of `tv1 simulate`, the tests, the bench and `make run`.
//!
//! Time compared across machines is S3's ([`clock`]). Each `main` parses its input, calls one
//! function here and returns or prints its result.

pub mod aws;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod encode;
pub mod ingest;
pub mod ocsf;
pub mod pull;
pub mod secret;
pub mod segment;
#[cfg(feature = "simulator")]
pub mod simulate;
pub mod sink;
pub mod telemetry;
pub mod timefmt;
pub mod vision_one;

/// Counts the bytes a test allocates on its own thread, so memory bounds can be tested.
#[cfg(test)]
pub(crate) mod alloc_meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Meter;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static NOW: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            if ON.with(Cell::get) {
                let n = NOW.with(|c| {
                    c.set(c.get() + l.size());
                    c.get()
                });
                PEAK.with(|p| p.set(p.get().max(n)));
            }
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            if ON.with(Cell::get) {
                NOW.with(|c| c.set(c.get().saturating_sub(l.size())));
            }
            unsafe { System.dealloc(p, l) }
        }
    }

    #[global_allocator]
    static METER: Meter = Meter;

    /// Runs `f` and returns its result with the peak bytes it held allocated on this thread.
    pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
        NOW.with(|c| c.set(0));
        PEAK.with(|c| c.set(0));
        ON.with(|c| c.set(true));
        let out = f();
        ON.with(|c| c.set(false));
        (out, PEAK.with(Cell::get))
    }
}
