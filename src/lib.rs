//! tv1-connector: lands Trend Vision One security data in an S3 data lake.
//!
//! Two corridors share the same rooms:
//!
//! ```text
//! audit record: config → vision_one → pull → encode → sink → checkpoint
//! ```
//!
//! The binaries in `src/bin/` (the `audit-puller` Lambda and the `tv1` CLI) are thin doors
//! into this library: they parse input, call one function here and print or return its result.

pub mod aws;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod encode;
pub mod ingest;
pub mod pull;
pub mod secret;
pub mod segment;
pub mod simulate;
pub mod sink;
pub mod telemetry;
pub mod timefmt;
pub mod vision_one;
