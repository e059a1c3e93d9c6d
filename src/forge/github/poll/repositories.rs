//! Which repositories are polled: the listed ones and the owners' matching
//! ones (the owner listings are conditional on their ETag), on a shard only
//! those it owns.

use super::{PollError, Poller};
use crate::forge::github::wire;
use crate::store::SyncState;

impl Poller {
    /// The repositories to poll: the listed ones and the owners' matching
    /// ones; on a shard, only those it owns.
    pub async fn repositories(&self) -> Result<Vec<String>, PollError> {
        let mut repos = self.all_repositories().await?;
        if self.shard.is_sharded() {
            let before = repos.len();
            repos.retain(|r| self.shard.owns(r));
            tracing::debug!(shard = %self.shard, owned = repos.len(), of = before, "GitHub repositories of this shard");
        }
        Ok(repos)
    }

    async fn all_repositories(&self) -> Result<Vec<String>, PollError> {
        let mut repos: Vec<String> = self.config.repositories.clone();
        for o in &self.config.owners {
            let pattern = o.pattern.as_deref().map(regex::Regex::new).transpose()?;
            let scope = format!("owner:{}", o.owner);
            let state = self.sync_state(&scope, "repos").await?;
            let url = self
                .client
                .url(&format!("/orgs/{}/repos?per_page=100", o.owner));
            let first = match self.client.get("repos", &url, state.etag.as_deref()).await {
                Err(PollError::Status { status: 404, .. }) => {
                    let url = self
                        .client
                        .url(&format!("/users/{}/repos?per_page=100", o.owner));
                    self.client.get("repos", &url, None).await?
                }
                other => other?,
            };
            let names: Vec<String> = if first.not_modified {
                serde_json::from_str(state.cursor.as_deref().unwrap_or("[]")).unwrap_or_default()
            } else {
                let mut items: Vec<wire::RepoItem> =
                    self.client.decode("repos", &url, &first.body)?;
                if let Some(next) = &first.next {
                    items.extend(
                        self.client
                            .get_all("repos", next, |b| serde_json::from_slice(b))
                            .await?,
                    );
                }
                let names: Vec<String> = items
                    .into_iter()
                    .filter(|r| !r.archived)
                    .map(|r| r.full_name)
                    .collect();
                self.set_sync_state(
                    &scope,
                    "repos",
                    SyncState {
                        cursor: Some(serde_json::to_string(&names).unwrap_or_default()),
                        etag: first.etag.clone(),
                        // Not a repository: kept out of ci_exporter_last_sync_timestamp_seconds.
                        last_success: None,
                    },
                )
                .await?;
                names
            };
            for full in names {
                let name = full.rsplit('/').next().unwrap_or(&full);
                if pattern.as_ref().is_none_or(|p| p.is_match(name)) && !repos.contains(&full) {
                    repos.push(full);
                }
            }
        }
        Ok(repos)
    }
}
