//! The integration tests, as one binary: LocalStack S3 + SSM, the in-process Vision One
//! simulator, real `tv1` processes and real forwarding agents. One binary links the SDK stack
//! once and shares the fixtures in `common`. Tests that need LocalStack say `SKIPPED` and pass
//! when it is not running, unless `TV1_REQUIRE_LOCALSTACK` is set (`make test` sets it).

mod common;

mod ad_ingest;
mod agents;
mod alerts;
mod audit_puller;
mod compaction;
mod corpus;
mod field_cases;
mod import_evtx;
mod infra;
mod oat;
mod ocsf_output;
mod ocsf_schema;
mod reconcile;
mod s3_denied;
mod serve;
mod simulator;
