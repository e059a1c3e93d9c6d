//! `ingest`: one run from the command line or a JSON file, through the same
//! preparation and store path as `POST /api/v1/runs`.

use crate::cli::IngestArgs;
use crate::config::Config;
use crate::ingest::{ChangeRequest, ReportInput, ReportKind, RunRequest};
use crate::store::Policy;
use anyhow::{Context, Result};
use chrono::Utc;
use std::io::Read;

fn read_text(path: &std::path::Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read stdin")?;
        return Ok(s);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub(super) fn ingest(config: &Config, args: IngestArgs) -> Result<()> {
    let mut request = match &args.json {
        Some(path) => serde_json::from_str::<RunRequest>(&read_text(path)?)
            .with_context(|| format!("invalid run in {}", path.display()))?,
        None => RunRequest {
            repository: args.repository.clone().unwrap_or_default(),
            forge: Some(
                args.forge
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--forge: {e}"))?,
            ),
            context: args.context.clone().unwrap_or_default(),
            commit: args.commit.clone().unwrap_or_default(),
            external_id: args.external_id.clone(),
            attempt: args.attempt,
            trigger: Some(
                args.trigger
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--trigger: {e}"))?,
            ),
            state: match &args.state {
                Some(s) => Some(s.parse().map_err(|e| anyhow::anyhow!("--state: {e}"))?),
                None => None,
            },
            queued_at: args.queued_at,
            started_at: args.started_at,
            finished_at: args.finished_at,
            url: args.url.clone(),
            log_url: args.log_url.clone(),
            change: args.change.map(|number| ChangeRequest {
                number,
                merged_at: args.merged_at,
            }),
            ..RunRequest::default()
        },
    };
    if let Some(log) = &args.log {
        request.log = Some(read_text(log)?);
    }
    let mut reports = Vec::new();
    for (kind, paths) in [
        (ReportKind::Tap, &args.tap),
        (ReportKind::Junit, &args.junit),
    ] {
        for path in paths {
            reports.push(ReportInput {
                format: kind,
                name: path.display().to_string(),
                content: read_text(path)?,
            });
        }
    }
    let repository = request.repository.trim();
    if !config.shard.owns(repository) {
        anyhow::bail!(
            "repository {repository:?} belongs to shard {}, not to this shard {} (shard in the config): ingest it into that shard's database",
            config.shard.owner(repository),
            config.shard
        );
    }
    let policy = Policy {
        history: args.history,
        ..Policy::from_config(config)
    };
    if let Err(impossible) =
        crate::ingest::validate::check_times(&request, Utc::now(), config.ingest.max_future_skew)
    {
        crate::store_open::open(&crate::store_open::with_db(&config.store, &args.db))?
            .count_rejection(impossible.reason())?;
        anyhow::bail!("invalid run: {impossible}");
    }
    let prepared = request.prepare(
        "cli",
        reports,
        &config.classifier()?,
        &config.dependency_extractor()?,
    )?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    let mut store = crate::store_open::open(&crate::store_open::with_db(&config.store, &args.db))?;
    let now = Utc::now();
    let ingested = store.ingest_run(&prepared.run, &policy, now)?;
    store.settle(&policy, now, None)?;
    if ingested.status == crate::store::IngestStatus::Conflict {
        anyhow::bail!(
            "{}",
            crate::http::api::conflict_message(ingested.id, &ingested.differing)
        );
    }
    crate::output::line(
        serde_json::json!({ "id": ingested.id, "status": ingested.status, "warnings": prepared.warnings }),
    )?;
    Ok(())
}
