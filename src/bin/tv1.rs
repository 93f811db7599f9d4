//! `tv1`: the operator CLI. Runs the same library code as the Lambda function.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;
use tv1_connector::ad::evtx_import::{ImportConfig, Importer, Progress as ImportProgress};
use tv1_connector::ad::tls::{CertFiles, ReloadingCert};
use tv1_connector::ad::{Compactor, Ingest, serve};
#[cfg(feature = "simulator")]
use tv1_connector::audit::simulate::{
    Generate, GenerateAlerts, SimSettings, Simulator, Spread, generate, generate_alerts,
    generate_detections,
};
use tv1_connector::audit::stream::Stream;
use tv1_connector::audit::{Progress, Puller};
use tv1_connector::config::IngestConfig;
use tv1_connector::{aws, config::PullerConfig, telemetry, timefmt};

#[derive(Parser)]
#[command(
    name = "tv1",
    version,
    about = "Trend Vision One → S3 connector: operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The Vision One stream (`audit`, `alerts`, `oat`) that `pull`, `backfill`, `status`,
    /// `test-connection` and `checkpoint` work on. `pull`, `status` and `test-connection`
    /// without it cover every stream TV1_STREAMS names; `backfill` and `checkpoint` default to
    /// `audit`.
    #[arg(long, global = true, value_parser = Stream::parse)]
    stream: Option<Stream>,
}

#[derive(Subcommand)]
enum Command {
    /// One scheduled run now of every stream TV1_STREAMS names (or of `--stream`); prints each
    /// run's summary as JSON.
    Pull,
    /// Pulls a past range into the same layout without moving the checkpoint.
    Backfill {
        /// Start (RFC 3339, e.g. 2026-11-01T00:00:00Z, or a date).
        #[arg(long, value_parser = parse_time)]
        from: chrono::DateTime<chrono::Utc>,
        /// End (exclusive).
        #[arg(long, value_parser = parse_time)]
        to: chrono::DateTime<chrono::Utc>,
    },
    /// Reads the token and makes one small request to each stream's endpoint; prints one JSON
    /// report per stream.
    TestConnection,
    /// Last successful run, records, current lag, last error: one JSON report per stream.
    Status,
    /// Shows or repairs a stream's checkpoint (instead of deleting it).
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Generates a new ad-ingest API key, stores it in SSM (SecureString) and prints it once.
    /// The previous key stops working within the function's key cache time (at most 5 minutes).
    RotateKey {
        /// SSM parameter of the key.
        #[arg(long, env = "API_KEY_PARAM")]
        param: String,
        /// KMS key for the SecureString (default: the account's aws/ssm key).
        #[arg(long)]
        kms_key_id: Option<String>,
    },
    /// Serves the ad-ingest endpoint: the same routes, limits and replies as the Lambda
    /// function, configured by the same environment (API_KEY_PARAM, BUCKET, AD_*). HTTPS with
    /// --tls-cert and --tls-key; plain HTTP only on a loopback address (a TLS terminator on the
    /// same host) or with --allow-plain-http. Stops cleanly on SIGTERM.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: std::net::SocketAddr,
        /// Certificate chain (PEM, the server's certificate first) to serve HTTPS with. Read
        /// again every few seconds: a renewed certificate is presented without a restart.
        #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The certificate's private key (PEM: PKCS#8, RSA or EC).
        #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Serve plain HTTP on a non-loopback address. Every agent request carries the API key:
        /// only behind a TLS terminator on a network no one else reads.
        #[arg(long, env = "ALLOW_PLAIN_HTTP", conflicts_with = "tls_cert")]
        allow_plain_http: bool,
        /// Do not compact closed windows in the background (another `tv1 serve`, `tv1 compact`
        /// or the ad-compact function does; any number may run at once).
        #[arg(long)]
        no_compact: bool,
    },
    /// Compacts the closed windows of landed AD batches into the lake, its OCSF output and the
    /// agent list (what ad-compact does on its schedule, and `tv1 serve` in the background);
    /// prints the summary as JSON. Configured by ad-ingest's environment (BUCKET, AD_PREFIX,
    /// AD_WINDOW, AD_SETTLE, OCSF_*).
    Compact {
        /// First wait until the window open now has closed, so that every batch landed before
        /// the command started is compacted.
        #[arg(long)]
        wait: bool,
    },
    /// Prints the AWS CLI commands that register the OCSF output's sources (one per dataset and
    /// class) as Security Lake custom sources.
    OcsfSources {
        /// The role Security Lake's crawlers run as (the stack output SecurityLakeCrawlerRoleArn).
        #[arg(long)]
        crawler_role_arn: String,
        /// External id the sources' provider roles trust.
        #[arg(long, default_value = "tv1-connector")]
        external_id: String,
    },
    /// Imports Windows event log files (.evtx) into the AD layout, each event exactly once
    /// however often a file, or an overlapping export of the same log, is imported, and
    /// whatever stops an import (run it again). Configured by ad-ingest's BUCKET, AD_PREFIX and
    /// OCSF_*; progress on a terminal, the summary as JSON.
    ImportEvtx {
        /// The .evtx files, imported in this order.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Most records of one computer's log in one step (the unit that is redone after a
        /// crash); keep it the same when running a stopped import again.
        #[arg(long, default_value_t = tv1_connector::ad::evtx_import::DEFAULT_STEP_RECORDS)]
        step_records: usize,
        /// How long a step this import claims stays its own: if the import dies, an import of
        /// another file takes the step over after this long (it stops a step that runs for half
        /// of it). Running the same file again redoes the step at once.
        #[arg(long, default_value = "10m", value_parser = cli_duration)]
        stale_after: Duration,
    },
    /// Serves the Vision One simulator on 127.0.0.1 (built with the `simulator` feature).
    #[cfg(feature = "simulator")]
    Simulate(SimulateArgs),
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Prints the checkpoint, whether it is readable, and where the data in S3 ends.
    Show,
    /// Sets `committed_to` (conditional write; the origin and the rest are kept). Refuses to move
    /// it back, to drop a pending segment or to race a live run, unless --force.
    Set {
        /// Every entry logged before this instant is in S3 (e.g. `lake_ends_at` from `show`).
        #[arg(long, value_parser = parse_time)]
        committed_to: chrono::DateTime<chrono::Utc>,
        /// Where scheduled collection began (needed when the checkpoint is missing or
        /// unreadable; default: the committed time).
        #[arg(long, value_parser = parse_time)]
        origin: Option<chrono::DateTime<chrono::Utc>>,
        /// Allow moving back or dropping a pending segment.
        #[arg(long)]
        force: bool,
    },
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    timefmt::parse_user_time(s)
        .ok_or_else(|| format!("{s:?} is not a time; use e.g. 2026-11-01T00:00:00Z"))
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The streams a command covers: `--stream`, else every stream `TV1_STREAMS` names.
fn streams(chosen: Option<Stream>) -> anyhow::Result<Vec<Stream>> {
    Ok(match chosen {
        Some(s) => vec![s],
        None => PullerConfig::streams(&std::env::vars().collect())?,
    })
}

async fn puller(stream: Option<Stream>) -> anyhow::Result<Puller> {
    let env = std::env::vars().collect();
    let cfg = PullerConfig::for_stream(&env, stream.unwrap_or(Stream::Audit))?;
    if let Some(ocsf) = &cfg.ocsf {
        ocsf.require_account()?;
    }
    let sdk = aws::load().await;
    Ok(Puller::new(
        cfg,
        aws::s3_client(&sdk),
        aws::ssm_client(&sdk),
    ))
}

#[tokio::main]
async fn main() {
    telemetry::init(false);
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {}", aws::report(e.as_ref()));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pull => {
            // Each stream runs whatever another one did; the exit status says if any failed.
            let mut failed = Vec::new();
            for stream in streams(cli.stream)? {
                let p = puller(Some(stream)).await?;
                match p.run(p.default_deadline()).await {
                    Ok(summary) => print_json(&summary)?,
                    Err(e) => {
                        eprintln!("error: {stream}: {}", aws::report(&e));
                        failed.push(stream.name());
                    }
                }
            }
            anyhow::ensure!(
                failed.is_empty(),
                "streams that failed: {}",
                failed.join(", ")
            );
            Ok(())
        }
        Command::Backfill { from, to } => backfill(cli.stream, from, to).await,
        Command::TestConnection => {
            let mut failed = Vec::new();
            for stream in streams(cli.stream)? {
                let check = puller(Some(stream)).await?.test_connection().await;
                print_json(&check)?;
                if !check.ok {
                    failed.push(format!("{stream}: {}", check.message));
                }
            }
            anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
            Ok(())
        }
        Command::Status => {
            for stream in streams(cli.stream)? {
                print_json(&puller(Some(stream)).await?.status().await?)?;
            }
            Ok(())
        }
        Command::Checkpoint(CheckpointCommand::Show) => {
            print_json(&puller(cli.stream).await?.checkpoint_show().await?)
        }
        Command::Checkpoint(CheckpointCommand::Set {
            committed_to,
            origin,
            force,
        }) => {
            let cp = puller(cli.stream)
                .await?
                .checkpoint_set(committed_to, origin, force)
                .await?;
            print_json(&cp)
        }
        Command::RotateKey { param, kms_key_id } => rotate_key(&param, kms_key_id).await,
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            allow_plain_http,
            no_compact,
        } => {
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| CertFiles { cert, key });
            serve_endpoint(listen, tls, allow_plain_http, !no_compact).await
        }
        Command::Compact { wait } => compact(wait).await,
        Command::ImportEvtx {
            files,
            step_records,
            stale_after,
        } => import_evtx(&files, step_records, stale_after).await,
        Command::OcsfSources {
            crawler_role_arn,
            external_id,
        } => {
            for c in
                tv1_connector::lake::ocsf::registration_commands(&crawler_role_arn, &external_id)
            {
                println!("{c}");
            }
            Ok(())
        }
        #[cfg(feature = "simulator")]
        Command::Simulate(args) => simulate(args).await,
    }
}

/// `tv1 backfill`: progress on a terminal, the summary as JSON.
async fn backfill(
    stream: Option<Stream>,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let p = puller(stream).await?;
    let tty = std::io::stderr().is_terminal();
    let progress = move |p: Progress| {
        if tty {
            eprint!(
                "\rbackfill: {}/{} hours, {} records, through {}   ",
                p.done,
                p.total,
                p.records,
                timefmt::api_time(p.at)
            );
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(365 * 86_400);
    let summary = p.backfill(from, to, deadline, &progress).await?;
    if tty {
        eprintln!();
    }
    print_json(&summary)
}

/// `tv1 rotate-key`: the new key goes to SSM, then to stdout once.
async fn rotate_key(param: &str, kms_key_id: Option<String>) -> anyhow::Result<()> {
    let sdk = aws::load().await;
    let key = tv1_connector::ad::auth::store_new_key(&aws::ssm_client(&sdk), param, kms_key_id)
        .await
        .with_context(|| format!("storing the new key in SSM parameter {param}"))?;
    eprintln!(
        "New API key stored in {param}. It is shown once; configure your forwarding agents with it:"
    );
    println!("{}", key.expose());
    Ok(())
}

/// `tv1 serve`: the ad-ingest handler over HTTPS (or plain HTTP where allowed) until SIGTERM.
async fn serve_endpoint(
    listen: std::net::SocketAddr,
    tls: Option<CertFiles>,
    allow_plain_http: bool,
    compact: bool,
) -> anyhow::Result<()> {
    if tls.is_none() && !listen.ip().is_loopback() && !allow_plain_http {
        anyhow::bail!(
            "refusing to serve plain HTTP on {listen}: every agent request carries the API key, \
             which anyone on the network could read. Give --tls-cert and --tls-key to serve \
             HTTPS, or --allow-plain-http if a TLS terminator in front of this host is the \
             only client"
        );
    }
    let cert = tls.map(ReloadingCert::load).transpose()?;
    let cfg = IngestConfig::from_env()?;
    if let Some(ocsf) = &cfg.ocsf {
        ocsf.require_account()?;
    }
    let sdk = aws::load().await;
    if compact {
        tokio::spawn(compact_forever(
            Compactor::new(&cfg, aws::s3_client(&sdk)),
            cfg.window,
            cfg.settle,
        ));
    }
    let ingest = Ingest::new(cfg, aws::s3_client(&sdk), aws::ssm_client(&sdk));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let scheme = if cert.is_some() { "https" } else { "http" };
    tracing::info!("ad-ingest listening on {scheme}://{listen}");
    serve::serve(Arc::new(ingest), listener, cert, serve::stop_signal()).await?;
    Ok(())
}

/// `tv1 serve`'s compaction: a run as each window settles, logged; a failed run is retried at
/// the next.
async fn compact_forever(compactor: Compactor, window: Duration, settle: Duration) {
    let windows = tv1_connector::ad::landing::Windows::new(window, settle);
    loop {
        match compactor.run(None).await {
            Ok(s) if s.windows > 0 => {
                tracing::info!(summary = %serde_json::to_string(&s).unwrap_or_default(), "compaction run")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "compaction run failed; retried next window"),
        }
        let now = chrono::Utc::now();
        let closes = windows.closed_at(windows.open_from(now));
        let wait = (closes - now).to_std().unwrap_or(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
    }
}

/// `tv1 compact`: one run (after the open window closes, with `wait`), the summary as JSON.
async fn compact(wait: bool) -> anyhow::Result<()> {
    let cfg = IngestConfig::from_env()?;
    if let Some(ocsf) = &cfg.ocsf {
        ocsf.require_account()?;
    }
    let sdk = aws::load().await;
    let compactor = Compactor::new(&cfg, aws::s3_client(&sdk));
    if wait {
        let windows = tv1_connector::ad::landing::Windows::new(cfg.window, cfg.settle);
        let now = chrono::Utc::now();
        let closed = windows.closed_at(windows.start_of(now));
        eprintln!(
            "waiting {}s for the open window to close",
            (closed - now).num_seconds()
        );
        tokio::time::sleep((closed - now).to_std().unwrap_or_default()).await;
    }
    let summary = compactor.run(None).await?;
    print_json(&summary)
}

/// `tv1 import-evtx`: progress on a terminal, the summary as JSON.
async fn import_evtx(
    files: &[std::path::PathBuf],
    step_records: usize,
    stale_after: Duration,
) -> anyhow::Result<()> {
    anyhow::ensure!(step_records > 0, "--step-records must be at least 1");
    let mut cfg = ImportConfig::from_env()?;
    if let Some(ocsf) = &cfg.ocsf {
        ocsf.require_account()?;
    }
    cfg.step_records = step_records;
    cfg.stale_after = stale_after;
    let sdk = aws::load().await;
    let importer = Importer::new(cfg, aws::s3_client(&sdk));
    let tty = std::io::stderr().is_terminal();
    let progress = move |p: &ImportProgress| {
        if tty {
            let name = p.path.file_name().unwrap_or_default().to_string_lossy();
            let waiting = p
                .waiting_for
                .as_ref()
                .map(|l| format!(", waiting for another import's step of {l}"))
                .unwrap_or_default();
            eprint!(
                "\r\x1b[Kimport-evtx: file {}/{} {name}: {} records, {} landed, {} already present{waiting}",
                p.file, p.files, p.records, p.landed, p.present
            );
        }
    };
    let summary = importer.import(files, &progress).await;
    if tty {
        eprintln!();
    }
    let summary = summary?;
    if summary.unreadable_records + summary.unreadable_chunks > 0 {
        eprintln!(
            "warning: {} records and {} chunks could not be read and were not imported (see \"unreadable\")",
            summary.unreadable_records, summary.unreadable_chunks
        );
    }
    print_json(&summary)
}

/// `tv1 simulate`: generated entries, served until stopped.
#[cfg(feature = "simulator")]
async fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let sim = Simulator::new(SimSettings {
        token: a.token,
        skip_token_ttl: Duration::from_secs(a.skip_token_ttl),
        end_inclusive: !a.end_exclusive,
        start_inclusive: !a.start_exclusive,
    });
    let now = chrono::Utc::now();
    sim.set_entries(generate(&Generate {
        count: a.entries,
        from: timefmt::floor_second(now - chrono::Duration::hours(a.hours)),
        to: timefmt::floor_second(now + chrono::Duration::minutes(30)),
        late_fraction: a.late_fraction,
        late_min_secs: a.late_min.as_secs(),
        late_max_secs: a.late_max.as_secs(),
        late_spread: match a.late_spread {
            LateSpread::Uniform => Spread::Uniform,
            LateSpread::LogUniform => Spread::LogUniform,
        },
        seed: a.seed,
        ..Generate::default()
    }));
    if a.alerts > 0 {
        sim.set_alert_versions(generate_alerts(&GenerateAlerts {
            count: a.alerts,
            from: timefmt::floor_second(now - chrono::Duration::hours(a.hours)),
            to: timefmt::floor_second(now),
            change_after_secs: (600, 6 * 3600),
            seed: a.seed,
        }));
    }
    if a.detections > 0 {
        sim.set_detections(generate_detections(
            a.detections,
            timefmt::floor_second(now - chrono::Duration::hours(a.hours)),
            timefmt::floor_second(now),
            3600,
            a.seed,
        ));
    }
    let port = a.port;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    tracing::info!(
        "Vision One simulator listening on http://127.0.0.1:{port} ({} entries)",
        a.entries
    );
    sim.serve(listener).await?;
    Ok(())
}

/// `tv1 simulate`'s options.
#[cfg(feature = "simulator")]
#[derive(clap::Args)]
struct SimulateArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Bearer token the simulator accepts.
    #[arg(long, env = "TV1_SIM_TOKEN", default_value = "sim-token")]
    token: String,
    /// Entries to generate.
    #[arg(long, default_value_t = 5_000)]
    entries: usize,
    /// Hours of history the entries span (they end 30 minutes in the future).
    #[arg(long, default_value_t = 26)]
    hours: i64,
    /// Share (0–1) of entries served late, after their loggedDateTime.
    #[arg(long, default_value_t = 0.02)]
    late_fraction: f64,
    /// Shortest delay of a late entry (a duration: 90s, 5m, 2h).
    #[arg(long, default_value = "0s", value_parser = cli_duration)]
    late_min: Duration,
    /// Longest delay of a late entry.
    #[arg(long, default_value = "2m", value_parser = cli_duration)]
    late_max: Duration,
    /// How delays spread between the two: uniform, or log-uniform (as many of minutes as of hours).
    #[arg(long, value_enum, default_value = "uniform")]
    late_spread: LateSpread,
    /// Seconds after which a skip token expires.
    #[arg(long, default_value_t = 300)]
    skip_token_ttl: u64,
    /// Treat endDateTime as exclusive (the default is inclusive).
    #[arg(long)]
    end_exclusive: bool,
    /// Treat startDateTime as exclusive (the default is inclusive).
    #[arg(long)]
    start_exclusive: bool,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Workbench alerts to generate (created over the same hours; each changes state up to
    /// twice, 10 minutes to 6 hours apart).
    #[arg(long, default_value_t = 0)]
    alerts: usize,
    /// OAT detections to generate (ingested over the same hours, each detected up to an hour
    /// before it was ingested).
    #[arg(long, default_value_t = 0)]
    detections: usize,
}

/// `--late-spread` values.
#[cfg(feature = "simulator")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LateSpread {
    Uniform,
    LogUniform,
}

fn cli_duration(s: &str) -> Result<Duration, String> {
    timefmt::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration (90s, 5m, 2h)"))
}
