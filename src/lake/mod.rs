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
