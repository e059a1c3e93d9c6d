//! The forge pollers `serve` runs in the background while this replica
//! leads (`leadership`), each until its stop watch turns true.

use crate::forge::context::Context;
use crate::forge::driver::serve;
use crate::forge::{github, gitlab};
use crate::http::AppState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The GitLab poller when `[gitlab]` lists projects or groups, the GitHub
/// poller when `[github]` lists repositories or owners: built once when
/// `serve` starts (so a bad setting stops it then), and again for each
/// term of leadership after the first.
pub(super) struct Pollers {
    ctx: Context,
    state: AppState,
    built: Option<(Option<gitlab::poll::Poller>, Option<github::poll::Poller>)>,
}

impl Pollers {
    pub(super) fn new(state: &AppState) -> anyhow::Result<Pollers> {
        let config = &state.config;
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
        let mut pollers = Pollers {
            ctx,
            state: state.clone(),
            built: None,
        };
        pollers.built = Some(pollers.build()?);
        Ok(pollers)
    }

    fn build(
        &self,
    ) -> anyhow::Result<(Option<gitlab::poll::Poller>, Option<github::poll::Poller>)> {
        let (config, secrets) = (&self.state.config, &self.state.secrets);
        let gitlab = match config.gitlab.enabled() {
            true => Some(gitlab::poll::Poller::new(
                self.ctx.clone(),
                config.gitlab.clone(),
                secrets.gitlab_token.clone(),
            )?),
            false => None,
        };
        let github = match config.github.polls() {
            true => Some(github::poll::Poller::new(
                self.ctx.clone(),
                config.github.clone(),
                secrets.github_token.clone(),
            )?),
            false => None,
        };
        Ok((gitlab, github))
    }

    /// Start the pollers, each until `stop`.
    pub(super) fn spawn(&mut self, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let (gitlab, github) = match self.built.take().map_or_else(|| self.build(), Ok) {
            Ok(built) => built,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the forge pollers");
                return Vec::new();
            }
        };
        let mut pollers = Vec::new();
        if let Some(poller) = gitlab {
            pollers.push(tokio::spawn(serve(poller, stop.clone())));
        }
        if let Some(poller) = github {
            let config = &self.state.config.github;
            tracing::info!(
                every = ?config.poll_interval,
                repositories = config.repositories.len(),
                owners = config.owners.len(),
                "polling GitHub"
            );
            pollers.push(tokio::spawn(serve(poller, stop.clone())));
        }
        pollers
    }
}
