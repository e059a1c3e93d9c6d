//! `backfill-openmetrics`: the stored history as an OpenMetrics file with
//! timestamps, for `promtool tsdb create-blocks-from openmetrics`.

use crate::config::Config;
use anyhow::{Context, Result};
use chrono::Utc;

pub(super) fn backfill_openmetrics(
    config: &Config,
    args: crate::cli::BackfillOpenmetricsArgs,
) -> Result<()> {
    let db = args.db.unwrap_or_else(|| config.store.path.clone());
    let store_config = crate::store_open::with_db(&config.store, &db);
    if let crate::config::database::StoreBackend::Sqlite(path) =
        crate::store_open::backend(&store_config)?
    {
        anyhow::ensure!(path.exists(), "database {} does not exist", path.display());
    }
    anyhow::ensure!(args.step.as_secs() >= 1, "--step must be at least 1s");
    anyhow::ensure!(
        !args.job.is_empty() && !args.instance.is_empty(),
        "--job and --instance must not be empty: they are the labels Prometheus gives the scraped series"
    );
    let store = crate::store_open::open(&store_config)?;
    let until = args.until.unwrap_or_else(Utc::now);
    let range = crate::metrics::history::HistoryRange {
        since: until - chrono::Duration::from_std(args.since).context("--since is too long")?,
        until,
        step: chrono::Duration::from_std(args.step).context("--step is too long")?,
        target_labels: vec![
            ("job".to_string(), args.job),
            ("instance".to_string(), args.instance),
        ],
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let report = crate::metrics::history::write_history(&*store, config, &range, &mut out)
        .map_err(|e| match e {
            crate::metrics::history::HistoryError::Write(io) => crate::output::write_error(io),
            e => e.into(),
        })?;
    std::io::Write::flush(&mut out).map_err(crate::output::write_error)?;
    eprintln!(
        "wrote {} samples of {} series ({:.1} MB) from {} to {}, every {} around each change",
        report.samples,
        report.series,
        report.bytes as f64 / 1e6,
        range.since.to_rfc3339(),
        range.until.to_rfc3339(),
        humantime::format_duration(args.step)
    );
    for (family, n) in &report.uncounted {
        eprintln!(
            "warning: {n} stored events of {family} were never counted by the live counters \
             (stored as backdated, or history loaded after the first serve); the history shows \
             them only as far as the live total leaves room"
        );
    }
    Ok(())
}
