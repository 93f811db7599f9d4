//! Writing to the lake, shared by both pipelines.
//!
//! Both pipelines end the same way: records become gzip JSON Lines objects ([`encode`]) that
//! are created once and never overwritten ([`sink`]), optionally followed by their OCSF Parquet
//! twins ([`ocsf`]), and only then is the state that says "this is done" written ([`state`]:
//! the puller's checkpoint, ad-ingest's batch markers and agent records). Every instant that is
//! compared across machines is taken on S3's clock ([`clock`]).

pub mod clock;
pub mod encode;
pub mod ocsf;
pub mod sink;
pub mod state;

/// Runs the CPU-heavy `f` (encoding a window or an hour of records: up to seconds) off the async
/// workers where the runtime can move them (`block_in_place` on a multi-threaded runtime), so
/// that other tasks (`tv1 serve`'s requests) are not kept waiting; on a current-thread runtime,
/// in place.
pub(crate) fn cpu_heavy<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
