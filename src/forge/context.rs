//! What both pollers work with, built once by `serve` or `backfill` for
//! either forge: the store and the policy they write with, the classifier and
//! dependency rules for downloaded logs, the shard, the self-metrics their
//! client counts into, and the snapshot refresh they wake after a change.

use super::event::{Applied, Event, apply};
use crate::classify::Classifier;
use crate::deps::Extractor;
use crate::metrics::MetricsHub;
use crate::model::Forge;
use crate::shard::Shard;
use crate::store::writer::StoreHandle;
use crate::store::{Policy, StoreError, SyncState};
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::Notify;

/// What a poller works with, the same for both forges.
#[derive(Clone)]
pub struct Context {
    pub store: StoreHandle,
    pub policy: Arc<Policy>,
    pub classifier: Arc<Classifier>,
    /// Reads package versions from downloaded logs.
    pub deps: Arc<Extractor>,
    /// Only the scopes this shard owns are polled (docs/scaling.md).
    pub shard: Shard,
    /// The self-metrics the forge client counts into.
    pub hub: Option<Arc<MetricsHub>>,
    /// Woken after writes that changed something (the metrics snapshot), when serving.
    pub refresh: Option<Arc<Notify>>,
}

impl Context {
    /// A context with the shipped dependency rules, every shard, no
    /// self-metrics and nothing to wake.
    pub fn new(store: StoreHandle, policy: Arc<Policy>, classifier: Arc<Classifier>) -> Context {
        Context {
            store,
            policy,
            classifier,
            deps: Arc::new(Extractor::with_defaults()),
            shard: Shard::ALL,
            hub: None,
            refresh: None,
        }
    }

    /// Wake the snapshot refresh (when serving).
    pub(crate) fn notify(&self) {
        if let Some(r) = &self.refresh {
            r.notify_one();
        }
    }

    /// Apply events in one write; the refresh is woken when they changed something.
    pub(crate) async fn apply(&self, events: Vec<Event>) -> Result<Applied, StoreError> {
        let policy = self.policy.clone();
        let applied = self
            .store
            .write(move |s| apply(s, &policy, events.clone(), Utc::now()))
            .await?;
        if applied.changed() {
            self.notify();
        }
        Ok(applied)
    }

    /// The scopes this shard owns, of `all` (`what` names them in the log).
    pub(crate) fn owned(&self, mut all: Vec<String>, what: &str) -> Vec<String> {
        if self.shard.is_sharded() {
            let before = all.len();
            all.retain(|r| self.shard.owns(r));
            tracing::debug!(shard = %self.shard, owned = all.len(), of = before, "{what} of this shard");
        }
        all
    }

    /// The sync state `(forge, scope, kind)`, default when none is stored.
    pub(crate) async fn sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &'static str,
    ) -> Result<SyncState, StoreError> {
        let scope = scope.to_string();
        Ok(self
            .store
            .read(move |s| s.sync_state(forge, &scope, kind))
            .await?
            .unwrap_or_default())
    }

    pub(crate) async fn set_sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &'static str,
        state: SyncState,
    ) -> Result<(), StoreError> {
        let scope = scope.to_string();
        self.store
            .write(move |s| s.set_sync_state(forge, &scope, kind, &state))
            .await
    }
}
