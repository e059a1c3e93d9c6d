//! `backfill gitlab` and `backfill github`: one resumable round over the
//! configured projects or repositories from N days ago (the forges' shared
//! driver, `forge::driver::backfill`, with its progress), then the merge
//! decisions it makes possible.

use crate::classify::Classifier;
use crate::cli::{BackfillArgs, BackfillGithubArgs};
use crate::config::{Config, Secrets};
use crate::forge::github::poll;
use crate::store::writer::StoreHandle;
use crate::store::{Policy, SettleStats};
use anyhow::Result;
use chrono::Utc;
use std::path::PathBuf;
use std::sync::Arc;

/// What both backfills start from: the database (`--db`), the policy (with
/// `--history`), the classifier and a runtime; `nothing` unless the forge
/// has something to backfill.
type Setup = (
    Config,
    Arc<Policy>,
    Arc<Classifier>,
    tokio::runtime::Runtime,
);

fn setup(
    mut config: Config,
    db: Option<PathBuf>,
    history: bool,
    polls: fn(&Config) -> bool,
    nothing: &str,
) -> Result<Setup> {
    if let Some(db) = db {
        config.store.path = db;
    }
    if !polls(&config) {
        anyhow::bail!("nothing to backfill: {nothing}");
    }
    let policy = Arc::new(Policy {
        history,
        ..Policy::from_config(&config)
    });
    let classifier = Arc::new(config.classifier()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok((config, policy, classifier, runtime))
}

/// The merge decisions the backfilled runs make possible.
async fn settle(store: &StoreHandle, policy: &Arc<Policy>) -> Result<SettleStats> {
    let policy = policy.clone();
    Ok(store
        .write(move |s| s.settle(&policy, Utc::now(), None))
        .await?)
}

/// `backfill gitlab --days N`: one resumable round over the configured
/// projects from N days ago, with progress (a bar on a terminal, else lines).
pub(super) fn gitlab(config: Config, secrets: Secrets, args: BackfillArgs) -> Result<()> {
    use crate::forge::gitlab::poll::{Poller, Since};
    let (config, policy, classifier, runtime) = setup(
        config,
        args.db,
        args.history,
        |c| c.gitlab.enabled(),
        "set gitlab.projects or gitlab.groups in the config",
    )?;
    runtime.block_on(async move {
        let store = crate::store_open::start(&config.store)?;
        let poller = Poller::new(
            config.gitlab.clone(),
            secrets
                .gitlab_token
                .as_ref()
                .map(|s| s.expose().to_string()),
            store.clone(),
            policy.clone(),
            classifier,
            None,
        )?
        .with_shard(config.shard)
        .with_dependencies(Arc::new(config.dependency_extractor()?));
        let started = std::time::Instant::now();
        let since = Utc::now() - chrono::Duration::days(i64::from(args.days));
        let report = poller.backfill(Since::Backfill(since)).await?;
        let settled = settle(&store, &policy).await?;
        crate::output::line(serde_json::json!({
            "projects": report.projects, "pipelines": report.pipelines, "runs": report.runs,
            "traces": report.traces, "merges": report.merges, "failed": report.failed,
            "changes_decided": settled.changes_decided, "api_calls": poller.stats.requests(),
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
        if !report.failed.is_empty() {
            anyhow::bail!(
                "{} project(s) failed; run the backfill again to resume: {}",
                report.failed.len(),
                report.failed.join(", ")
            );
        }
        Ok(())
    })
}

/// `backfill github --days N [--restart] [--db PATH]`.
pub(super) fn github(config: Config, secrets: Secrets, args: BackfillGithubArgs) -> Result<()> {
    let (config, policy, classifier, runtime) = setup(
        config,
        args.db,
        args.history,
        |c| c.github.polls(),
        "list github.repositories or github.owners in the config file",
    )?;
    let stats = runtime.block_on(async {
        let store = crate::store_open::start(&config.store)?;
        let hub = Arc::new(crate::metrics::MetricsHub::new(
            crate::metrics::SelfMetrics::new(),
        ));
        let poller = poll::Poller {
            client: poll::Client::new(&config.github, secrets.github_token.clone(), hub)?,
            store: store.clone(),
            policy: policy.clone(),
            config: Arc::new(config.github.clone()),
            classifier,
            deps: Arc::new(config.dependency_extractor()?),
            refresh: None,
            show_progress: true,
            shard: config.shard,
        };
        let stats = poller.backfill(args.days, args.restart).await;
        settle(&store, &policy).await?;
        anyhow::Ok(stats)
    })?;
    crate::output::line(serde_json::to_string(&stats)?)?;
    if stats.errors > 0 {
        anyhow::bail!(
            "{} repositories failed (see the log); run the backfill again to resume",
            stats.errors
        );
    }
    Ok(())
}
