//! Which projects are polled: the listed ones and the groups' projects (the
//! group listings are conditional on their ETag), on a shard only those it
//! owns.

use super::Poller;
use super::http::encode;
use crate::store::SyncState;

/// The sync-state kind of a group's stored project list (with its ETag).
const KIND_GROUP_PROJECTS: &str = "group_projects";
use crate::forge::gitlab::GitlabError;
use crate::forge::gitlab::wire::ApiProject;

impl Poller {
    /// The projects to poll: the listed ones, then each group's matching
    /// ones; on a shard, only those it owns.
    pub async fn projects(&self) -> Result<Vec<String>, GitlabError> {
        let mut out = self.all_projects().await?;
        if self.shard.is_sharded() {
            let before = out.len();
            out.retain(|p| self.shard.owns(p));
            tracing::debug!(shard = %self.shard, owned = out.len(), of = before, "GitLab projects of this shard");
        }
        Ok(out)
    }

    pub(super) async fn all_projects(&self) -> Result<Vec<String>, GitlabError> {
        let mut out: Vec<String> = self.config.projects.clone();
        for g in &self.config.groups {
            let pattern = match &g.pattern {
                Some(p) => {
                    Some(regex::Regex::new(p).map_err(|e| GitlabError::Config(e.to_string()))?)
                }
                None => None,
            };
            let url = self.url(
                &format!("/groups/{}/projects", encode(&g.group)),
                &[
                    ("include_subgroups", g.include_subgroups.to_string()),
                    ("archived", "false".into()),
                    ("simple", "true".into()),
                    ("per_page", "100".into()),
                    ("order_by", "id".into()),
                    ("sort", "asc".into()),
                ],
            )?;
            // Conditional, like GitHub's owner listings: an unchanged group
            // is a 304 and its stored list.
            let scope = format!("group:{}", g.group);
            let state = self.sync_state(&scope, KIND_GROUP_PROJECTS).await?;
            let mut pages = self.client.pages("group_projects", url, state.etag.clone());
            let names: Vec<String> = match pages.next_json::<Vec<ApiProject>>().await? {
                None => serde_json::from_str(state.cursor.as_deref().unwrap_or("[]"))
                    .unwrap_or_default(),
                Some(first) => {
                    let mut projects = first.items;
                    while let Some(page) = pages.next_json::<Vec<ApiProject>>().await? {
                        projects.extend(page.items);
                    }
                    let names: Vec<String> = projects
                        .into_iter()
                        .filter(|p| !p.archived)
                        .map(|p| p.path_with_namespace)
                        .collect();
                    let state = SyncState {
                        cursor: Some(serde_json::to_string(&names).unwrap_or_default()),
                        // A listing cut at the page limit is read again next time.
                        etag: first.etag.filter(|_| !pages.cut()),
                        // Not a project: kept out of ci_exporter_last_sync_timestamp_seconds.
                        last_success: None,
                    };
                    self.set_sync_state(&scope, KIND_GROUP_PROJECTS, state)
                        .await?;
                    names
                }
            };
            for name in names {
                if pattern.as_ref().is_none_or(|re| re.is_match(&name)) && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }
}
