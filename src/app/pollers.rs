//! The forge pollers `serve` starts in the background.

use crate::forge::github::poll;
use crate::http::AppState;

/// `serve`: start the poller when `[github]` lists repositories or owners.
pub(super) fn spawn_github(state: &AppState) -> anyhow::Result<()> {
    if !state.config.github.polls() {
        return Ok(());
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
    tokio::spawn(poll::run_forever(poller));
    Ok(())
}
