//! tv1-connector: lands Trend Vision One security data in an S3 data lake, exactly once.
//!
//! The tree is the architecture: [`audit`] is one pipeline, [`ad`] the other, [`lake`] what
//! both write through, and the files at the top are the plumbing they share.
//!
//! # Where an audit entry goes
//!
//! ```text
//! EventBridge ─► bin/audit-puller.rs ─► audit::Puller::invoke        (audit/invoke.rs)
//!   ─► audit::Puller::run: lease + window in the checkpoint           (audit/run.rs, checkpoint.rs)
//!   ─► audit::vision_one: token from SSM (secret), paging, retries    (audit/vision_one/, fetch.rs)
//!   ─► audit::segment: entries cut into objects, `_id` per entry      (audit/segment.rs)
//!   ─► lake::encode + lake::sink: create-only gzip JSON Lines          (lake/encode.rs, sink.rs)
//!   ─► lake::ocsf::writer: the same records as OCSF Parquet, optional (lake/ocsf/)
//!   ─► checkpoint commit; later runs re-read for late entries         (audit/reconcile.rs)
//! ```
//!
//! # Where an AD event goes
//!
//! ```text
//! API Gateway ─► bin/ad-ingest.rs ─► ad::Ingest::handle_event         (ad/apigw.rs)
//! HTTPS       ─► tv1 serve        ─► ad::tls, ad::serve               (ad/tls.rs, serve.rs)
//!   ─► ad::Ingest::handle: route (/v1, HEC) ─► ad::auth (key in SSM)  (ad/mod.rs, auth.rs, hec.rs)
//!   ─► Ingest::prepare: body, caps, shape, every event normalised     (ad/batch.rs)
//!        ad::decode: base64, gzip caps, envelope / NDJSON / HEC        (ad/decode.rs)
//!        ad::events: nine agent shapes, one normalised event           (ad/events.rs)
//!        ad::windows_xml, ad::event_time: the XML, the true UTC time   (ad/windows_xml.rs, event_time.rs)
//!        lake::encode: the batch's landing object, its lines grouped by
//!        category and day, then those the lake cannot take           (lake/encode.rs)
//!   ─► store: the batch claimed (its marker, naming its window), its
//!        landing object create-only; late ones checked against plans  (ad/store.rs, landing.rs)
//! EventBridge ─► bin/ad-compact.rs, or tv1 serve/compact ─► ad::Compactor:
//!   closed windows sealed, listed, planned; one object per category,
//!   day and window, OCSF (lake::ocsf), the agent list, exactly once   (ad/compact.rs, agents.rs)
//! .evtx files ─► tv1 import-evtx ─► ad::evtx_import: records read with
//!   the evtx crate, normalised as agents' XML, landed step by step     (ad/evtx_import.rs)
//! ```
//!
//! # Binaries (`src/bin/`)
//! - `audit-puller`: the scheduled Lambda function; hands each invocation to
//!   [`audit::Puller::invoke`].
//! - `ad-ingest`: the API Gateway Lambda function; hands each request to
//!   [`ad::Ingest::handle_apigw`].
//! - `ad-compact`: the scheduled Lambda function; runs [`ad::Compactor::run`].
//! - `tv1`: the operator CLI over the same code (`pull`, `backfill`, `status`, `checkpoint`,
//!   `rotate-key`, `serve`, `compact`, `import-evtx`, `ocsf-sources`, `simulate`).
//!
//! # Modules
//! - [`audit`]: the audit pipeline: runs, lease, redo, reconciliation, backfill, operator
//!   actions, the Lambda door; [`audit::vision_one`] (API client), [`audit::segment`],
//!   [`audit::checkpoint`] (checkpoint and status documents). `audit::simulate` (cargo feature
//!   `simulator`, off in the Lambda functions) is the Vision One simulator of `tv1 simulate`,
//!   the tests, the bench and `make run`.
//! - [`ad`]: the AD pipeline: routes, HEC, API key, decoding, the event shapes, the agent list,
//!   `tv1 serve`, `tv1 import-evtx` ([`ad::evtx_import`]).
//! - [`lake`]: [`lake::encode`] (gzip JSON Lines, `_id`), [`lake::sink`] (create-only objects,
//!   conditional documents), [`lake::state`] (state documents and their error),
//!   [`lake::clock`] (S3's time), [`lake::ocsf`] (OCSF mappings, Parquet, the second output).
//! - Shared plumbing: [`config`] (environment, read once), [`aws`] (SDK clients), [`secret`]
//!   (SSM SecureStrings, never printed), [`timefmt`], [`telemetry`] (logs).
//!
//! Each `main` parses its input, calls one function here and returns or prints its result.

pub mod ad;
pub mod audit;
pub mod aws;
pub mod config;
pub mod lake;
pub mod secret;
pub mod telemetry;
pub mod timefmt;

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
