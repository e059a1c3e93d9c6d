//! Merged pull requests per repository: the conditional listing down to the
//! cursor, the backfill's covered range (and the gap it fills first), one pull
//! request at a time, then the cursor.

use super::Poller;
use crate::forge::driver::{PollError, Since, Summary};
use crate::forge::event::Event;
use crate::forge::github::wire;
use crate::model::Forge;
use crate::store::SyncState;
use chrono::{DateTime, Utc};

/// The backfill's cursor: the newest merged pull request it processed.
pub(super) const KIND_BACKFILL: &str = "backfill";
/// Where the backfill's covered range starts (its oldest `updated_at`).
pub(super) const KIND_BACKFILL_FROM: &str = "backfill_from";

/// The range a backfill covered: `from` (None before it was recorded) up to
/// its cursor; None when nothing is covered.
fn covered(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    match (from, to) {
        (Some(from), Some(to)) if from <= to => Some((from, to)),
        // A backfill from before the range was recorded: only its cursor is known.
        (None, Some(to)) => Some((to, to)),
        _ => None,
    }
}

impl Poller {
    pub(super) async fn sync_state(
        &self,
        scope: &str,
        kind: &'static str,
    ) -> Result<SyncState, PollError> {
        Ok(self.ctx.sync_state(Forge::Github, scope, kind).await?)
    }

    pub(super) async fn set_sync_state(
        &self,
        scope: &str,
        kind: &'static str,
        state: SyncState,
    ) -> Result<(), PollError> {
        Ok(self
            .ctx
            .set_sync_state(Forge::Github, scope, kind, state)
            .await?)
    }

    pub(super) async fn poll_repository(
        &self,
        repo: &str,
        since: Since,
        stats: &mut Summary,
        tick: &(dyn Fn(&Summary) + Sync),
    ) -> Result<(), PollError> {
        let (kind, floor) = match since {
            Since::Poll(t) => ("pulls", t),
            Since::Backfill(t) => (KIND_BACKFILL, t),
        };
        let state = self.sync_state(repo, kind).await?;
        let parse = |c: Option<&str>| {
            c.and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                .map(|c| c.with_timezone(&Utc))
        };
        let stored = parse(state.cursor.as_deref());
        // Merged PRs updated since `cursor` are processed oldest first; a
        // backfill reaching further back than it did before first fills the
        // `gap` (newest first), see `backfill`.
        let (cursor, gap) = match since {
            Since::Poll(_) => (stored.map_or(floor, |c| c.max(floor)), None),
            Since::Backfill(_) => {
                let from = parse(
                    self.sync_state(repo, KIND_BACKFILL_FROM)
                        .await?
                        .cursor
                        .as_deref(),
                );
                match covered(from, stored) {
                    Some((from, to)) if to >= floor => {
                        (to, (floor < from).then_some((floor, from)))
                    }
                    _ => {
                        // Nothing covered in the window: a fresh backfill from the floor.
                        self.set_backfill_from(repo, floor).await?;
                        (floor, None)
                    }
                }
            }
        };
        let lowest = gap.map_or(cursor, |(floor, _)| floor);

        let url = self.client.url(
            &format!("/repos/{repo}/pulls?state=closed&sort=updated&direction=desc&per_page=100"),
            &[],
        );
        let poll = matches!(since, Since::Poll(_));
        let etag = if poll { state.etag.clone() } else { None };
        let mut pages = self.client.pages("pulls", url, etag);
        // Nothing on the first page: a 304.
        let Some(first) = pages.next_json::<Vec<wire::PullRequest>>().await? else {
            stats.not_modified += 1;
            self.set_sync_state(
                repo,
                kind,
                SyncState {
                    last_success: Some(Utc::now()),
                    ..state
                },
            )
            .await?;
            return self.poll_schedule(repo, since, stats).await;
        };
        let mut pulls: Vec<wire::PullRequest> = Vec::new();
        let new_etag = first.etag.clone();
        let mut page = Some(first);
        while let Some(p) = page.take() {
            let older = p
                .items
                .iter()
                .any(|p| p.updated_at.is_some_and(|u| u < lowest));
            pulls.extend(p.items);
            if !older {
                page = pages.next_json().await?;
            }
        }
        pulls.retain(|p| p.merged_at.is_some());
        let updated = |p: &wire::PullRequest| p.updated_at.unwrap_or_default();
        // The gap, newest first: `from` moves down after each, so the covered
        // range stays one interval whenever the backfill stops.
        let mut older: Vec<&wire::PullRequest> = match gap {
            Some((floor, from)) => pulls
                .iter()
                .filter(|p| p.updated_at.is_some_and(|u| u >= floor && u <= from))
                .collect(),
            None => Vec::new(),
        };
        older.sort_by_key(|p| std::cmp::Reverse((updated(p), p.number)));
        let mut newer: Vec<&wire::PullRequest> = pulls
            .iter()
            .filter(|p| p.updated_at.is_some_and(|u| u >= cursor))
            .filter(|p| !older.iter().any(|o| o.number == p.number))
            .collect();
        newer.sort_by_key(|p| (updated(p), p.number));

        for pr in older {
            self.process_pull(repo, pr, stats).await?;
            self.set_backfill_from(repo, updated(pr)).await?;
            tick(stats);
        }
        if let Some((floor, _)) = gap {
            self.set_backfill_from(repo, floor).await?;
        }
        let mut newest = state.cursor.clone();
        for pr in newer {
            self.process_pull(repo, pr, stats).await?;
            // The cursor moves only after the pull request's data is committed.
            newest = Some(updated(pr).to_rfc3339());
            self.set_sync_state(
                repo,
                kind,
                SyncState {
                    cursor: newest.clone(),
                    etag: state.etag.clone(),
                    last_success: state.last_success,
                },
            )
            .await?;
            tick(stats);
        }
        self.set_sync_state(
            repo,
            kind,
            SyncState {
                cursor: newest,
                etag: if poll { new_etag } else { None },
                last_success: Some(Utc::now()),
            },
        )
        .await?;
        self.poll_schedule(repo, since, stats).await
    }

    /// One merged pull request: its head commit's runs, then the merge.
    pub(super) async fn process_pull(
        &self,
        repo: &str,
        pr: &wire::PullRequest,
        stats: &mut Summary,
    ) -> Result<(), PollError> {
        let Some(merged_at) = pr.merged_at else {
            return Ok(());
        };
        let mut records = self.commit_records(repo, &pr.head.sha, stats).await?;
        records.push(Event::Merge {
            repository: crate::forge::github::repository(repo),
            number: pr.number,
            head_sha: Some(pr.head.sha.clone()),
            merged_at,
        });
        self.apply_and_fetch_logs(records, stats).await?;
        stats.merges += 1;
        Ok(())
    }

    pub(super) async fn set_backfill_from(
        &self,
        repo: &str,
        from: DateTime<Utc>,
    ) -> Result<(), PollError> {
        self.set_sync_state(
            repo,
            KIND_BACKFILL_FROM,
            SyncState {
                cursor: Some(from.to_rfc3339()),
                ..SyncState::default()
            },
        )
        .await
    }
}
