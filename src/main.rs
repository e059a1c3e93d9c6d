#![deny(clippy::unwrap_used)]

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = ci_slo_exporter::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CI_SLO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match ci_slo_exporter::app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `… | head`: the reader has what it wanted.
        Err(e) if ci_slo_exporter::output::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
