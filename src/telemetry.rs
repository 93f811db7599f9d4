//! Logging set-up shared by the binaries.

use tracing_subscriber::EnvFilter;

/// JSON lines for Lambda (CloudWatch Logs Insights reads them as fields), human-readable lines
/// on stderr for the CLI. `RUST_LOG` overrides the level (default `info`).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn,evtx=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .with_current_span(false)
            .without_time()
            .init();
    } else {
        // Colours only on a terminal: a log file (`tv1 serve > log`) gets plain text.
        use std::io::IsTerminal;
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
}
