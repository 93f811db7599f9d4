//! tv1-connector: lands Trend Vision One security data in an S3 data lake.
//!
//! Two corridors share the same rooms:
//!
//! ```text
//! audit record: config → vision_one → pull (lease, segments, redo) → encode → sink → checkpoint
//! AD event:     apigw / serve → ingest (routes: /v1, HEC) → auth → decode → events → encode
//!               → sink → agents
//! ```
//!
//! Time that is compared across machines is S3's (`clock`). The binaries in `src/bin/` (the
//! `audit-puller` and `ad-ingest` Lambdas and the `tv1` CLI) are thin doors into this library:
//! they parse input, call one function here and print or return its result.

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
