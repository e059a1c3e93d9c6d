//! Merged merge requests since the MR cursor, recorded as merges (their head
//! pipeline fetched when none of its runs is stored).

use super::http::{encode, rfc3339};
use super::{KIND_MERGES, Poller};
use crate::forge::driver::PollError;
use crate::forge::driver::Summary;
use crate::forge::event::Event;
use crate::forge::gitlab::parse_time;
use crate::forge::gitlab::wire::{ApiMergeRequest, ApiPipeline};
use crate::store::SyncState;
use chrono::{DateTime, Utc};

impl Poller {
    /// Merged MRs since the MR cursor; their head pipeline when none of its runs is stored.
    pub(super) async fn sync_merges(
        &self,
        project: &str,
        floor: DateTime<Utc>,
        report: &mut Summary,
    ) -> Result<(), PollError> {
        let state = self.sync_state(project, KIND_MERGES).await?;
        let start = state
            .cursor
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(floor);
        let enc = encode(project);
        let url = self.client.url(
            &format!("/projects/{enc}/merge_requests"),
            &[
                ("state", "merged".into()),
                ("updated_after", rfc3339(start)),
                ("order_by", "updated_at".into()),
                ("sort", "asc".into()),
                ("per_page", "100".into()),
            ],
        );
        let mrs: Vec<ApiMergeRequest> = self
            .client
            .all("merge_requests", url, |l: Vec<ApiMergeRequest>| l)
            .await?;
        let repo = crate::forge::gitlab::project(project);
        let mut newest = start;
        for mr in mrs {
            let Some(merged_at) = mr.merged_at.as_deref().and_then(parse_time) else {
                continue;
            };
            if let Some(u) = mr.updated_at.as_deref().and_then(parse_time) {
                newest = newest.max(u);
            }
            if let Some(sha) = &mr.sha {
                let (r, s) = (repo.clone(), sha.clone());
                let known = self
                    .ctx
                    .store
                    .read(move |st| st.has_runs_for_commit(&r, &s))
                    .await?;
                if !known {
                    let url = self.client.url(
                        &format!("/projects/{enc}/pipelines"),
                        &[("sha", sha.clone()), ("per_page", "1".into())],
                    );
                    let items: Vec<ApiPipeline> = self.client.json("pipelines", &url).await?;
                    if let Some(head) = items.first() {
                        self.sync_pipeline(project, head, report).await?;
                    }
                }
            }
            let merge = Event::Merge {
                repository: repo.clone(),
                number: mr.iid,
                head_sha: mr.sha.clone(),
                merged_at,
            };
            self.ctx.apply(vec![merge]).await?;
            report.merges += 1;
        }
        self.set_sync_state(
            project,
            KIND_MERGES,
            SyncState {
                cursor: Some(rfc3339(newest)),
                etag: None,
                last_success: Some(Utc::now()),
            },
        )
        .await?;
        Ok(())
    }
}
