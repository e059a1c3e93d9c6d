//! Command-line interface: the flags are a contract (issues, docs and users'
//! scripts rely on them), so they are spelled out here once.

use crate::config::DEFAULT_DB_PATH;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ci-slo-exporter",
    version,
    about = "Turns CI history into SLIs, error budgets and failure intelligence for Prometheus.",
    long_about = None
)]
pub struct Cli {
    /// TOML configuration file (every key is optional; see docs/configuration.md).
    #[arg(long, global = true, value_name = "FILE", env = "CI_SLO_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long, global = true)]
    pub print_config: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server: /metrics, the ingest API, health endpoints.
    Serve(ServeArgs),
    /// Store one run (with its tests and reports) in the database.
    Ingest(Box<IngestArgs>),
    /// Classify log files with the configured rules: one JSON object per file,
    /// {"file","class","category","line","evidence","fingerprint","context","context_before","candidates"}
    /// (class null when nothing failed; candidates: up to 3 further {"line","text","class"}).
    Classify(ClassifyArgs),
    /// Summarise TAP or JUnit XML reports: one JSON object per file,
    /// {"file","format","tests","passed","failed","errored","skipped","retried","flaky"}.
    Report(ReportArgs),
    /// Write stored history as OpenMetrics with timestamps to stdout, for
    /// `promtool tsdb create-blocks-from openmetrics FILE DIR`.
    BackfillOpenmetrics(BackfillOpenmetricsArgs),
    /// Fetch a forge's CI history into the database (resumable).
    #[command(subcommand)]
    Backfill(BackfillCommand),
    /// Import history from another tool's database.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct BackfillOpenmetricsArgs {
    /// SQLite database file [default: ci-slo-exporter.db, or store.path from the config].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// How far back to write samples (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,

    /// The scrape interval the history stands in for: samples are written on
    /// this grid within 4 steps before and after each change of a series (so
    /// rate() over Grafana's $__rate_interval, at least 4 scrape intervals,
    /// sees every change), and once at the end. Use Prometheus' scrape_interval.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub step: std::time::Duration,

    /// End of the history (RFC 3339) [default: now]. Set it to when Prometheus
    /// started scraping the exporter, so backfilled and live samples do not overlap.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,

    /// The scrape job's name: the `job` label of every series (Prometheus adds
    /// it to scraped series; the history must have it to be the same series).
    #[arg(long, value_name = "NAME", default_value = "ci-slo-exporter")]
    pub job: String,

    /// The exporter's address as Prometheus' scrape config names it (the
    /// `instance` label), e.g. `exporter:9787`.
    #[arg(long, value_name = "HOST:PORT")]
    pub instance: String,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Log files to classify ("-" for stdin). Any size; read as a stream.
    #[arg(value_name = "LOG", required = true)]
    pub logs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Report files: `.xml` is JUnit, `.tap` is TAP, others are detected from their content.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BackfillCommand {
    /// Pipelines, jobs, failed-job traces and merged MRs of the configured
    /// `[gitlab]` projects and groups (token from CI_SLO_GITLAB_TOKEN).
    Gitlab(BackfillArgs),
    /// GitHub (`[github]` in the config): merged pull requests with their statuses,
    /// check runs and Actions jobs, and scheduled workflow runs. Resumable.
    Github(BackfillGithubArgs),
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// How many days back.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub days: u32,

    /// SQLite database file (created if missing) [default: store.path from the config].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Load this as history: on a database that has served, it is stored
    /// without moving the live counters (it reaches Prometheus through
    /// `backfill-openmetrics`). Without it, everything new counts when it
    /// arrives, however old (docs/configuration.md, History and live counters).
    #[arg(long)]
    pub history: bool,
}

#[derive(Debug, Args)]
pub struct BackfillGithubArgs {
    /// How many days back to fill. Run again, it continues from its cursor; with
    /// more days than before, it also fills the older days.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub days: u32,

    /// Forget what earlier backfills covered and fetch the whole window again
    /// (stored runs are updated, never duplicated).
    #[arg(long)]
    pub restart: bool,

    /// SQLite database file [default: ci-slo-exporter.db, or store.path from the config].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Load this as history: on a database that has served, it is stored
    /// without moving the live counters (it reaches Prometheus through
    /// `backfill-openmetrics`). Without it, everything new counts when it
    /// arrives, however old (docs/configuration.md, History and live counters).
    #[arg(long)]
    pub history: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: ImportSource,
}

#[derive(Debug, Subcommand)]
pub enum ImportSource {
    /// A Cockpit test-results.db (tables TestRuns, Tests, TestCoverage). Importing twice changes nothing.
    Cockpit(ImportCockpitArgs),
}

#[derive(Debug, Args)]
pub struct ImportCockpitArgs {
    /// The Cockpit database file.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// SQLite database file [default: ci-slo-exporter.db, or store.path from the config].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Load this as history: on a database that has served, it is stored
    /// without moving the live counters (it reaches Prometheus through
    /// `backfill-openmetrics`). Without it, everything new counts when it
    /// arrives, however old (docs/configuration.md, History and live counters).
    #[arg(long)]
    pub history: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// SQLite database file (created if missing) [default: ci-slo-exporter.db, or store.path from the config].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:9787, or server.listen_address from the config].
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    pub listen_address: Option<String>,

    /// Fill an empty database with a deterministic 30-day demo history first
    /// (a no-op on a demo database; refused on a database with real data).
    #[arg(long)]
    pub demo: bool,

    /// For tests: fix the clock at T (RFC 3339) instead of reading the system
    /// clock. Everything computed relative to now (the demo history, SLO and
    /// page windows, settling, pruning) then uses T and the answers do not
    /// change with the time of day. Never set it in production.
    #[arg(long, value_name = "T", env = "CI_SLO_NOW", value_parser = parse_time)]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["json", "repository"]))]
pub struct IngestArgs {
    /// SQLite database file (created if missing).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DB_PATH)]
    pub db: PathBuf,

    /// Read the run from a JSON file with the body of POST /api/v1/runs ("-" for stdin).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["repository", "context", "commit"])]
    pub json: Option<PathBuf>,

    /// Repository path, e.g. owner/name or group/sub/project.
    #[arg(long, value_name = "R", requires_all = ["context", "commit"])]
    pub repository: Option<String>,

    /// Forge of the repository: github, gitlab or generic.
    #[arg(long, value_name = "FORGE", default_value = "generic")]
    pub forge: String,

    /// CI context: a status context, "workflow / job", a job name, or a pipeline.
    #[arg(long, value_name = "C")]
    pub context: Option<String>,

    /// Commit SHA the run tested.
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,

    /// Attempt number: 0 for the first try, n for the n-th retry.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub attempt: u32,

    /// Run state: success, failure, error, cancelled, timed_out, skipped, pending, running
    /// [default: derived from the tests: failure if any failed, else success].
    #[arg(long, value_name = "S")]
    pub state: Option<String>,

    /// Why the run started: pull_request, push, schedule, manual, other.
    #[arg(long, value_name = "T", default_value = "other")]
    pub trigger: String,

    /// When the run was requested (RFC 3339, e.g. 2026-11-23T10:00:00Z).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub queued_at: Option<DateTime<Utc>>,

    /// When the run started (RFC 3339).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub started_at: Option<DateTime<Utc>>,

    /// When the run finished (RFC 3339).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub finished_at: Option<DateTime<Utc>>,

    /// The PR/MR number the commit belongs to.
    #[arg(long, value_name = "N")]
    pub change: Option<i64>,

    /// When the change was merged (RFC 3339); its outcome is decided from its head commit's runs.
    #[arg(long, value_name = "T", value_parser = parse_time, requires = "change")]
    pub merged_at: Option<DateTime<Utc>>,

    /// The CI system's own id for the run; runs are deduplicated by it.
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,

    /// Web page of the run (http or https).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Link to the run's log (http or https).
    #[arg(long, value_name = "URL")]
    pub log_url: Option<String>,

    /// A log file to classify (failure class, evidence line, fingerprint).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// A TAP report (repeatable).
    #[arg(long, value_name = "FILE")]
    pub tap: Vec<PathBuf>,

    /// A JUnit XML report (repeatable).
    #[arg(long, value_name = "FILE")]
    pub junit: Vec<PathBuf>,

    /// Load this as history: on a database that has served, it is stored
    /// without moving the live counters (it reaches Prometheus through
    /// `backfill-openmetrics`). Without it, everything new counts when it
    /// arrives, however old (docs/configuration.md, History and live counters).
    #[arg(long)]
    pub history: bool,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-11-23T10:00:00Z)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_takes_the_contracted_flags() {
        let cli = Cli::try_parse_from([
            "ci-slo-exporter",
            "serve",
            "--db",
            "x.db",
            "--web.listen-address",
            "127.0.0.1:1",
            "--demo",
            "--config",
            "c.toml",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.db.unwrap(), PathBuf::from("x.db"));
        assert_eq!(s.listen_address.unwrap(), "127.0.0.1:1");
        assert!(s.demo);
        assert_eq!(cli.config.unwrap(), PathBuf::from("c.toml"));
    }

    #[test]
    fn backfill_gitlab_takes_days_and_db() {
        let cli = Cli::try_parse_from(["x", "backfill", "gitlab", "--days", "7", "--db", "b.db"])
            .unwrap();
        let Command::Backfill(BackfillCommand::Gitlab(b)) = cli.command else {
            panic!("not backfill gitlab")
        };
        assert_eq!((b.days, b.db.unwrap()), (7, PathBuf::from("b.db")));
    }

    #[test]
    fn ingest_needs_either_json_or_the_run_identity() {
        assert!(Cli::try_parse_from(["x", "ingest", "--db", "d"]).is_err());
        assert!(Cli::try_parse_from(["x", "ingest", "--repository", "a/b"]).is_err());
        assert!(
            Cli::try_parse_from(["x", "ingest", "--json", "f", "--repository", "a/b"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "x",
            "ingest",
            "--repository",
            "a/b",
            "--context",
            "c",
            "--commit",
            "abc",
            "--tap",
            "1.tap",
            "--tap",
            "2.tap",
            "--merged-at",
            "2026-11-01T00:00:00Z",
            "--change",
            "5",
        ])
        .unwrap();
        let Command::Ingest(i) = cli.command else {
            panic!("not ingest")
        };
        assert_eq!(i.tap.len(), 2);
        assert_eq!(i.change, Some(5));
        assert!(
            Cli::try_parse_from(["x", "ingest", "--json", "f", "--started-at", "yesterday"])
                .is_err()
        );
    }
}
