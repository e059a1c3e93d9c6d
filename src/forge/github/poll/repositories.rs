//! Which repositories are polled: the listed ones and the owners' matching
//! ones (the owner listings are conditional on their ETag), on a shard only
//! those it owns.

use super::{PollError, Poller};
use crate::forge::client::FetchError;
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
            let mut pages = self.client.pages("repos", &url, state.etag.as_deref());
            let first = match pages.next_json::<Vec<wire::RepoItem>>().await {
                Err(FetchError::Status { status: 404, .. }) => {
                    let url = self
                        .client
                        .url(&format!("/users/{}/repos?per_page=100", o.owner));
                    pages = self.client.pages("repos", &url, None);
                    pages.next_json().await?
                }
                other => other?,
            };
            // Nothing on the first page: a 304.
            let names: Vec<String> = if let Some(first) = first {
                let etag = first.etag;
                let mut items = first.items;
                while let Some(page) = pages.next_json::<Vec<wire::RepoItem>>().await? {
                    items.extend(page.items);
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
                        // A listing cut at the page limit is read again next time.
                        etag: etag.filter(|_| !pages.cut()),
                        // Not a repository: kept out of ci_exporter_last_sync_timestamp_seconds.
                        last_success: None,
                    },
                )
                .await?;
                names
            } else {
                serde_json::from_str(state.cursor.as_deref().unwrap_or("[]")).unwrap_or_default()
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
