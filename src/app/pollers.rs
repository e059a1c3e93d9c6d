//! The forge pollers `serve` starts in the background, each until `stop`.

use crate::forge::context::Context;
use crate::forge::driver::serve;
use crate::forge::{github, gitlab};
use crate::http::AppState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `serve`: start the GitLab poller when `[gitlab]` lists projects or
/// groups, the GitHub poller when `[github]` lists repositories or owners.
pub(super) fn spawn(
    state: &AppState,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let (config, secrets) = (&state.config, &state.secrets);
    let ctx = Context {
        deps: state.deps.clone(),
        shard: config.shard,
        hub: Some(state.hub.clone()),
        refresh: Some(state.refresh.clone()),
        ..Context::new(
            state.store.clone(),
            state.policy.clone(),
            state.classifier.clone(),
        )
    };
    let mut pollers = Vec::new();
    if config.gitlab.enabled() {
        let token = secrets.gitlab_token.clone();
        let poller = gitlab::poll::Poller::new(ctx.clone(), config.gitlab.clone(), token)?;
        pollers.push(tokio::spawn(serve(poller, stop.clone())));
    }
    if config.github.polls() {
        let token = secrets.github_token.clone();
        let poller = github::poll::Poller::new(ctx, config.github.clone(), token)?;
        tracing::info!(
            every = ?config.github.poll_interval,
            repositories = config.github.repositories.len(),
            owners = config.github.owners.len(),
            "polling GitHub"
        );
        pollers.push(tokio::spawn(serve(poller, stop.clone())));
    }
    Ok(pollers)
}
