//! One round over a forge's scopes (repositories, projects), for both forges
//! and both uses: `serve`'s polls ([`serve`], [`poll_once`]) and `backfill`
//! ([`backfill`]), with one summary ([`Summary`]) and one error
//! ([`PollError`]) for both. The driver lists the
//! scopes, forgets what a backfill covered when asked to restart, syncs each
//! scope from where it starts ([`Since`]) and reports progress; a scope that
//! fails is logged and reported, the others go on, and the next round
//! resumes it from its cursor (each adapter's `sync` moves its cursors only
//! after what they cover is committed). Settling is the caller's
//! (`app::backfill`, `app::settler`).

use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// Where a round starts for a scope without (or regardless of) its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// `serve`: from the cursor; without one, from this time.
    Poll(DateTime<Utc>),
    /// `backfill --days N`: from this time, or the backfill cursor when later.
    Backfill(DateTime<Utc>),
}

/// What a round did, one summary for both forges (each counts what it has).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The scopes listed (repositories, projects).
    pub scopes: usize,
    /// The scopes whose sync failed (they resume from their cursor next time).
    pub failed: Vec<String>,
    /// Merges recorded (merged pull requests, merge requests).
    pub merges: usize,
    /// GitLab pipelines synced.
    pub pipelines: usize,
    /// Runs stored (or found unchanged).
    pub runs: usize,
    /// GitHub's scheduled workflow runs (nightlies), polled on their own interval.
    pub scheduled_runs: usize,
    /// Job logs downloaded.
    pub logs: usize,
    /// Scopes whose listing was answered `304` (nothing re-processed).
    pub not_modified: usize,
}

/// Why a scope's sync (or the listing of the scopes) failed, for both forges.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// A request without a usable answer (the forge-neutral client's error).
    #[error("API {0}")]
    Fetch(#[from] super::client::FetchError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("owner or group pattern: {0}")]
    Pattern(#[from] regex::Error),
    #[error(transparent)]
    Github(#[from] super::github::GithubError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl PollError {
    /// A write of a term of leadership that ended (the writer's fence
    /// refused it): a newer leader polls now; not this replica's failure.
    pub fn is_fenced(&self) -> bool {
        matches!(self, PollError::Store(e) if e.is_fenced())
    }
}

/// A forge's side of a round.
pub trait Source: Sync {
    /// The forge, for the log (`GitHub`).
    const NAME: &'static str;
    /// What the scopes are, for the log (`GitHub repository`).
    const SCOPE: &'static str;
    /// The backfill's progress label and unit (`backfill github`, `repositories`).
    const LABEL: &'static str;
    const UNIT: &'static str;

    /// `serve`'s interval between rounds, and how far back a scope without
    /// a cursor is read.
    fn schedule(&self) -> (Duration, Duration);

    /// The counts so far, for the progress line.
    fn message(&self, summary: &Summary) -> String;

    /// The scopes to sync, on a shard only those it owns.
    fn scopes(&self) -> impl Future<Output = Result<Vec<String>, PollError>> + Send;

    /// Forget what earlier backfills of `scopes` covered (`--restart`).
    fn forget(&self, scopes: &[String]) -> impl Future<Output = Result<(), PollError>> + Send {
        let _ = scopes;
        async { Ok(()) }
    }

    /// Sync one scope, adding to `summary`; `tick` reports progress within
    /// the scope.
    fn sync(
        &self,
        scope: &str,
        since: Since,
        summary: &mut Summary,
        tick: &(dyn Fn(&Summary) + Sync),
    ) -> impl Future<Output = Result<(), PollError>> + Send;
}

/// `progress(done, total, summary)`: scopes done of the scopes listed, and
/// the counts so far.
pub type Progress<'a> = &'a (dyn Fn(usize, usize, &Summary) + Sync);

/// One round over every scope of `source`: an error only when the scopes
/// cannot be listed (or a restart cannot forget them).
pub async fn round<S: Source>(
    source: &S,
    since: Since,
    restart: bool,
    progress: Progress<'_>,
) -> Result<Summary, PollError> {
    let scopes = source.scopes().await?;
    if restart {
        source.forget(&scopes).await?;
    }
    let total = scopes.len();
    let mut summary = Summary {
        scopes: total,
        ..Summary::default()
    };
    progress(0, total, &summary);
    for (done, scope) in scopes.iter().enumerate() {
        let tick = |s: &Summary| progress(done, total, s);
        if let Err(e) = source.sync(scope, since, &mut summary, &tick).await {
            if e.is_fenced() {
                tracing::info!(scope, error = %e, "{} sync stopped: leadership lost", S::SCOPE);
                return Err(e);
            }
            tracing::warn!(
                scope,
                error = %e,
                "{} sync failed; it resumes from its cursor",
                S::SCOPE
            );
            summary.failed.push(scope.clone());
        }
        progress(done + 1, total, &summary);
    }
    Ok(summary)
}

/// `serve`'s round: every scope from its cursor, a scope without one from
/// the configured lookback.
pub async fn poll_once<S: Source>(source: &S) -> Result<Summary, PollError> {
    let lookback =
        chrono::Duration::from_std(source.schedule().1).unwrap_or(chrono::Duration::days(1));
    round(
        source,
        Since::Poll(Utc::now() - lookback),
        false,
        &|_, _, _| {},
    )
    .await
}

/// A backfill of `days` (`backfill github|gitlab --days N`): one round
/// with its progress shown (`crate::progress`: a bar on a terminal, else a
/// log line every few seconds and at the end); `restart` forgets what
/// earlier backfills covered.
pub async fn backfill<S: Source>(
    source: &S,
    days: u32,
    restart: bool,
) -> Result<Summary, PollError> {
    let since = Since::Backfill(Utc::now() - chrono::Duration::days(i64::from(days)));
    let bar = Mutex::new(crate::progress::Progress::new(S::LABEL, S::UNIT, 0));
    let progress = |done: usize, total: usize, s: &Summary| {
        let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
        bar.step(done as u64, total as u64, &source.message(s));
    };
    let round = round(source, since, restart, &progress).await;
    let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
    let done = bar.total();
    bar.finish(done);
    round
}

/// `serve`'s background task for one forge: a round every interval (spread
/// at random, `forge::poll_forever`) until `stop`, each logged.
pub async fn serve<S: Source>(source: S, stop: tokio::sync::watch::Receiver<bool>) {
    super::poll_forever(source.schedule().0, stop, || async {
        match poll_once(&source).await {
            Ok(s) => tracing::info!(
                scopes = s.scopes,
                merges = s.merges,
                pipelines = s.pipelines,
                runs = s.runs,
                logs = s.logs,
                failed = s.failed.len(),
                "{} poll done",
                S::NAME
            ),
            Err(e) if e.is_fenced() => {
                tracing::info!(error = %e, "{} poll stopped: leadership lost", S::NAME)
            }
            Err(e) => tracing::warn!(error = %e, "{} poll failed", S::NAME),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scopes `a`..`c`; `b` fails once; records what was synced and forgotten.
    #[derive(Default)]
    struct Fake {
        synced: Mutex<Vec<String>>,
        forgotten: Mutex<Vec<String>>,
        failed_once: Mutex<bool>,
    }

    impl Source for Fake {
        const NAME: &'static str = "Fake";
        const SCOPE: &'static str = "fake scope";
        const LABEL: &'static str = "fake";
        const UNIT: &'static str = "scopes";

        fn schedule(&self) -> (Duration, Duration) {
            (Duration::from_secs(1), Duration::from_secs(1))
        }

        fn message(&self, summary: &Summary) -> String {
            summary.runs.to_string()
        }

        async fn scopes(&self) -> Result<Vec<String>, PollError> {
            Ok(vec!["a".into(), "b".into(), "c".into()])
        }

        async fn forget(&self, scopes: &[String]) -> Result<(), PollError> {
            self.forgotten.lock().unwrap().extend_from_slice(scopes);
            Ok(())
        }

        async fn sync(
            &self,
            scope: &str,
            _since: Since,
            summary: &mut Summary,
            tick: &(dyn Fn(&Summary) + Sync),
        ) -> Result<(), PollError> {
            let mut failed = self.failed_once.lock().unwrap();
            if scope == "b" && !*failed {
                *failed = true;
                return Err(crate::store::StoreError::WriterGone.into());
            }
            summary.runs += 1;
            tick(summary);
            self.synced.lock().unwrap().push(scope.to_string());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failed_scope_is_reported_the_others_go_on_and_it_resumes_next_round() {
        let fake = Fake::default();
        let since = Since::Backfill(Utc::now());
        let steps = Mutex::new(Vec::new());
        let progress = |done: usize, total: usize, s: &Summary| {
            steps.lock().unwrap().push((done, total, s.runs));
        };
        let first = round(&fake, since, false, &progress).await.unwrap();
        assert_eq!((first.scopes, first.runs), (3, 2));
        assert_eq!(first.failed, vec!["b".to_string()]);
        assert!(fake.forgotten.lock().unwrap().is_empty());
        // Start, a tick inside each synced scope, then one step per scope.
        assert_eq!(
            *steps.lock().unwrap(),
            vec![
                (0, 3, 0),
                (0, 3, 1),
                (1, 3, 1),
                (2, 3, 1),
                (2, 3, 2),
                (3, 3, 2)
            ]
        );
        let second = round(&fake, since, true, &|_, _, _| {}).await.unwrap();
        assert!(second.failed.is_empty());
        assert_eq!(*fake.synced.lock().unwrap(), ["a", "c", "a", "b", "c"]);
        assert_eq!(*fake.forgotten.lock().unwrap(), ["a", "b", "c"]);
    }
}
