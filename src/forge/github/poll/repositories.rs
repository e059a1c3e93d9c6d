//! Which repositories are polled: the listed ones and the owners' matching
//! ones (the owner listings are conditional on their ETag,
//! `forge::pages::cached_names`), on a shard only those it owns.

use super::Poller;
use crate::forge::client::FetchError;
use crate::forge::driver::PollError;
use crate::forge::github::wire;
use crate::forge::pages::cached_names;

impl Poller {
    /// The repositories to poll: the listed ones and the owners' matching
    /// ones; on a shard, only those it owns.
    pub async fn repositories(&self) -> Result<Vec<String>, PollError> {
        Ok(self
            .ctx
            .owned(self.all_repositories().await?, "GitHub repositories"))
    }

    async fn all_repositories(&self) -> Result<Vec<String>, PollError> {
        let mut repos: Vec<String> = self.config.repositories.clone();
        for o in &self.config.owners {
            let pattern = o.pattern.as_deref().map(regex::Regex::new).transpose()?;
            let scope = format!("owner:{}", o.owner);
            let names: Vec<String> = cached_names::<_, _, PollError, _>(
                &self.ctx,
                (&scope, "repos"),
                async |etag: Option<String>| {
                    let url = |kind| {
                        let path = format!("/{kind}/{}/repos?per_page=100", o.owner);
                        self.client.url(&path, &[])
                    };
                    let mut pages = self.client.pages("repos", url("orgs"), etag);
                    let first = match pages.next_json().await {
                        // Not an organisation: a user.
                        Err(FetchError::Status { status: 404, .. }) => {
                            pages = self.client.pages("repos", url("users"), None);
                            pages.next_json().await?
                        }
                        other => other?,
                    };
                    Ok((pages, first))
                },
                |r: wire::RepoItem| (!r.archived).then_some(r.full_name),
            )
            .await?;
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
