//! Which projects are polled: the listed ones and the groups' projects (the
//! group listings are conditional on their ETag,
//! `forge::pages::cached_names`), on a shard only those it owns.

use super::Poller;
use super::http::encode;
use crate::forge::driver::PollError;
use crate::forge::gitlab::wire::ApiProject;
use crate::forge::pages::cached_names;

/// The sync-state kind of a group's stored project list (with its ETag).
const KIND_GROUP_PROJECTS: &str = "group_projects";

impl Poller {
    /// The projects to poll: the listed ones, then each group's matching
    /// ones; on a shard, only those it owns.
    pub async fn projects(&self) -> Result<Vec<String>, PollError> {
        Ok(self
            .ctx
            .owned(self.all_projects().await?, "GitLab projects"))
    }

    pub(super) async fn all_projects(&self) -> Result<Vec<String>, PollError> {
        let mut out: Vec<String> = self.config.projects.clone();
        for g in &self.config.groups {
            let pattern = g.pattern.as_deref().map(regex::Regex::new).transpose()?;
            let url = self.client.url(
                &format!("/groups/{}/projects", encode(&g.group)),
                &[
                    ("include_subgroups", g.include_subgroups.to_string()),
                    ("archived", "false".into()),
                    ("simple", "true".into()),
                    ("per_page", "100".into()),
                    ("order_by", "id".into()),
                    ("sort", "asc".into()),
                ],
            );
            // Conditional, like GitHub's owner listings: an unchanged group
            // is a 304 and its stored list.
            let scope = format!("group:{}", g.group);
            let names: Vec<String> = cached_names::<_, _, PollError, _>(
                &self.ctx,
                (&scope, KIND_GROUP_PROJECTS),
                async |etag| {
                    let mut pages = self.client.pages("group_projects", url, etag);
                    let first = pages.next_json().await?;
                    Ok((pages, first))
                },
                |p: ApiProject| (!p.archived).then_some(p.path_with_namespace),
            )
            .await?;
            for name in names {
                if pattern.as_ref().is_none_or(|re| re.is_match(&name)) && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }
}
