//! What a run page links besides the run itself: the forge's change and
//! commit, other attempts, the last green run of its context and the
//! dependency changes since (`/api/v1/runs/{id}/related`).

use super::urls::{change_url, commit_url, gitlab_web_base};
use crate::http::{ApiError, AppState};
use serde::Serialize;

/// What a run page links: the forge's change and commit, other attempts, the
/// last green run of its context and the dependency changes since.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunLinksView {
    pub run_id: i64,
    pub change_url: Option<String>,
    pub commit_url: Option<String>,
    #[serde(flatten)]
    pub related: crate::store::ui::RunRelated,
}

pub(crate) async fn run_links(
    state: &AppState,
    run: &crate::store::RunView,
) -> Result<RunLinksView, ApiError> {
    let id = run.id;
    let related = state.store.read(move |s| s.run_related(id)).await?;
    let gitlab_web = gitlab_web_base(&state.config.gitlab.api_url);
    Ok(RunLinksView {
        run_id: run.id,
        change_url: run
            .change
            .as_ref()
            .and_then(|c| change_url(&run.forge, &run.repository, c.number, &gitlab_web)),
        commit_url: commit_url(&run.forge, &run.repository, &run.commit, &gitlab_web),
        related,
    })
}
