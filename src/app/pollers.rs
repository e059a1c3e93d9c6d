//! The forge pollers `serve` starts in the background, each until `stop`.

use crate::forge::github::poll;
use crate::http::AppState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `serve`: start the GitLab poller when `[gitlab]` lists projects or
/// groups, the GitHub poller when `[github]` lists repositories or owners.
pub(super) fn spawn(
    state: &AppState,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut pollers = Vec::new();
    if state.config.gitlab.enabled() {
        let poller = crate::forge::gitlab::poll::Poller::new(
            state.config.gitlab.clone(),
            state
                .secrets
                .gitlab_token
                .as_ref()
                .map(|s| s.expose().to_string()),
            state.store.clone(),
            state.policy.clone(),
            state.classifier.clone(),
            Some(state.hub.clone()),
        )?
        .with_shard(state.config.shard)
        .with_dependencies(state.deps.clone());
        pollers.push(tokio::spawn(
            poller.run_forever(state.refresh.clone(), stop.clone()),
        ));
    }
    if !state.config.github.polls() {
        return Ok(pollers);
    }
    let client = poll::Client::new(
        &state.config.github,
        state.secrets.github_token.clone(),
        state.hub.clone(),
    )?;
    let poller = poll::Poller {
        client,
        store: state.store.clone(),
        policy: state.policy.clone(),
        config: std::sync::Arc::new(state.config.github.clone()),
        classifier: state.classifier.clone(),
        deps: state.deps.clone(),
        refresh: Some(state.refresh.clone()),
        show_progress: false,
        shard: state.config.shard,
    };
    tracing::info!(
        every = ?state.config.github.poll_interval,
        repositories = state.config.github.repositories.len(),
        owners = state.config.github.owners.len(),
        "polling GitHub"
    );
    pollers.push(tokio::spawn(poll::run_forever(poller, stop.clone())));
    Ok(pollers)
}
