//! The forge pollers `serve` runs in the background while this replica
//! leads (`leadership`), each until its stop watch turns true.

use crate::forge::context::Context;
use crate::forge::driver::serve;
use crate::forge::{github, gitlab};
use crate::http::AppState;
use crate::store::writer::StoreHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The GitLab poller when `[gitlab]` lists projects or groups, the GitHub
/// poller when `[github]` lists repositories or owners: built once when
/// `serve` starts (so a bad setting stops it then), and again for each
/// term of leadership whose store is not the one they were built with (a
/// term's store is fenced by the term: `leadership`).
pub(super) struct Pollers {
    ctx: Context,
    state: AppState,
    built: Option<(Option<gitlab::poll::Poller>, Option<github::poll::Poller>)>,
}

type Built = (Option<gitlab::poll::Poller>, Option<github::poll::Poller>);

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
        pollers.built = Some(pollers.build(None)?);
        Ok(pollers)
    }

    /// Build the pollers, writing through `store` (else the state's).
    fn build(&self, store: Option<&StoreHandle>) -> anyhow::Result<Built> {
        let (config, secrets) = (&self.state.config, &self.state.secrets);
        let ctx = Context {
            store: store.unwrap_or(&self.ctx.store).clone(),
            ..self.ctx.clone()
        };
        let gitlab = match config.gitlab.enabled() {
            true => Some(gitlab::poll::Poller::new(
                ctx.clone(),
                config.gitlab.clone(),
                secrets.gitlab_token.clone(),
            )?),
            false => None,
        };
        let github = match config.github.polls() {
            true => Some(github::poll::Poller::new(
                ctx,
                config.github.clone(),
                secrets.github_token.clone(),
            )?),
            false => None,
        };
        Ok((gitlab, github))
    }

    /// Start the pollers, writing through `store`, each until `stop`.
    pub(super) fn spawn(
        &mut self,
        stop: &watch::Receiver<bool>,
        store: &StoreHandle,
    ) -> Vec<JoinHandle<()>> {
        // Built with the state's store: good for a term without a fence.
        let built = self.built.take().filter(|_| store.fence().is_none());
        let (gitlab, github) = match built.map_or_else(|| self.build(Some(store)), Ok) {
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
