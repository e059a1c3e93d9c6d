//! Which projects are polled: the listed ones and the groups' projects, on a
//! shard only those it owns.

use super::Poller;
use super::http::encode;
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
            let projects: Vec<ApiProject> = self.client.all("group_projects", url).await?;
            for p in projects {
                if !p.archived
                    && pattern
                        .as_ref()
                        .is_none_or(|re| re.is_match(&p.path_with_namespace))
                    && !out.contains(&p.path_with_namespace)
                {
                    out.push(p.path_with_namespace);
                }
            }
        }
        Ok(out)
    }
}
