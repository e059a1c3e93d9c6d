//! `backfill gitlab` and `backfill github`: one resumable round over the
//! configured projects or repositories from N days ago (the forges' shared
//! driver, `forge::driver::backfill`, with its progress), then the merge
//! decisions it makes possible.

use crate::cli::{BackfillArgs, BackfillGithubArgs};
use crate::config::{Config, Secrets};
use crate::forge::context::Context;
use crate::forge::driver::{self, PollError, Source, Summary};
use crate::forge::{github, gitlab};
use crate::store::{Policy, SettleStats};
use anyhow::Result;
use chrono::Utc;
use std::path::PathBuf;
use std::sync::Arc;

/// What both backfills do: the database (`--db`), the policy (with
/// `--history`), the forge's poller, one round from `days` ago (`restart`:
/// forgetting what earlier ones covered), then the merge decisions; fails
/// with `nothing` unless the forge has something to backfill. Answers the
/// poller, the round and the decisions.
fn backfill<P: Source>(
    mut config: Config,
    (db, history, days, restart): (Option<PathBuf>, bool, u32, bool),
    (polls, nothing): (fn(&Config) -> bool, &str),
    poller: impl FnOnce(Context, &Config) -> Result<P, PollError>,
) -> Result<(P, Result<Summary, PollError>, SettleStats)> {
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
    // Opened before the runtime starts: PostgreSQL's synchronous client
    // connects by blocking on a runtime of its own, which panics on a thread
    // of another runtime.
    let store = crate::store_open::start(&config.store)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ctx = Context {
            deps: Arc::new(config.dependency_extractor()?),
            shard: config.shard,
            ..Context::new(store.clone(), policy.clone(), classifier)
        };
        let poller = poller(ctx, &config)?;
        let round = driver::backfill(&poller, days, restart).await;
        // The merge decisions the backfilled runs make possible.
        let settled = store
            .write(move |s| s.settle(&policy, Utc::now(), None))
            .await?;
        Ok((poller, round, settled))
    })
}

/// `backfill gitlab --days N`: one resumable round over the configured
/// projects from N days ago, with progress (a bar on a terminal, else lines).
pub(super) fn gitlab(config: Config, secrets: Secrets, args: BackfillArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (poller, round, settled) = backfill(
        config,
        (args.db, args.history, args.days, false),
        (
            |c| c.gitlab.enabled(),
            "set gitlab.projects or gitlab.groups in the config",
        ),
        |ctx, c| gitlab::poll::Poller::new(ctx, c.gitlab.clone(), secrets.gitlab_token),
    )?;
    let s = round?;
    crate::output::line(serde_json::json!({
        "projects": s.scopes, "pipelines": s.pipelines, "runs": s.runs,
        "traces": s.logs, "merges": s.merges, "failed": s.failed,
        "changes_decided": settled.changes_decided, "api_calls": poller.counts().requests(),
        "seconds": started.elapsed().as_secs_f64(),
    }))?;
    if !s.failed.is_empty() {
        anyhow::bail!(
            "{} project(s) failed; run the backfill again to resume: {}",
            s.failed.len(),
            s.failed.join(", ")
        );
    }
    Ok(())
}

/// What `backfill github` prints.
#[derive(serde::Serialize)]
struct GithubSummary {
    repositories: usize,
    not_modified: usize,
    pull_requests: usize,
    runs: usize,
    logs: usize,
    scheduled_runs: usize,
    errors: usize,
}

/// `backfill github --days N [--restart] [--db PATH]`.
pub(super) fn github(config: Config, secrets: Secrets, args: BackfillGithubArgs) -> Result<()> {
    let (_, round, _) = backfill(
        config,
        (args.db, args.history, args.days, args.restart),
        (
            |c| c.github.polls(),
            "list github.repositories or github.owners in the config file",
        ),
        |ctx, c| github::poll::Poller::new(ctx, c.github.clone(), secrets.github_token),
    )?;
    let (s, errors) = match round {
        Ok(s) => {
            let errors = s.failed.len();
            (s, errors)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot list GitHub repositories");
            (Summary::default(), 1)
        }
    };
    crate::output::line(serde_json::to_string(&GithubSummary {
        repositories: s.scopes,
        not_modified: s.not_modified,
        pull_requests: s.merges,
        runs: s.runs,
        logs: s.logs,
        scheduled_runs: s.scheduled_runs,
        errors,
    })?)?;
    if errors > 0 {
        anyhow::bail!(
            "{errors} repositories failed (see the log); run the backfill again to resume"
        );
    }
    Ok(())
}
