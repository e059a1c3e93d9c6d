//! One round over a forge's scopes (repositories, projects), for both forges
//! and both uses: `serve`'s polls and `backfill`. The driver lists the
//! scopes, forgets what a backfill covered when asked to restart, syncs each
//! scope from where it starts ([`Since`]) and reports progress; a scope that
//! fails is logged and reported, the others go on, and the next round
//! resumes it from its cursor (each adapter's `sync` moves its cursors only
//! after what they cover is committed). Settling is the caller's
//! (`app::backfill`, `app::settler`).

use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Mutex;

/// Where a round starts for a scope without (or regardless of) its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// `serve`: from the cursor; without one, from this time.
    Poll(DateTime<Utc>),
    /// `backfill --days N`: from this time, or the backfill cursor when later.
    Backfill(DateTime<Utc>),
}

/// A forge's side of a round.
pub(crate) trait Source: Sync {
    /// What a round adds up (the counts of the progress line and summary).
    type Report: Default + Send;
    type Error: std::fmt::Display + Send;
    /// What the scopes are, for the log (`GitHub repository`).
    const SCOPE: &'static str;
    /// The backfill's progress label and unit (`backfill github`, `repositories`).
    const LABEL: &'static str;
    const UNIT: &'static str;

    /// The counts so far, for the progress line.
    fn message(&self, report: &Self::Report) -> String;

    /// The scopes to sync, on a shard only those it owns.
    fn scopes(&self) -> impl Future<Output = Result<Vec<String>, Self::Error>> + Send;

    /// Forget what earlier backfills of `scopes` covered (`--restart`).
    fn forget(&self, scopes: &[String]) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = scopes;
        async { Ok(()) }
    }

    /// Sync one scope, adding to `report`; `tick` reports progress within
    /// the scope.
    fn sync(
        &self,
        scope: &str,
        since: Since,
        report: &mut Self::Report,
        tick: &(dyn Fn(&Self::Report) + Sync),
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What a round did.
#[derive(Debug, Default)]
pub(crate) struct Round<R> {
    pub report: R,
    /// The scopes listed.
    pub scopes: usize,
    /// The scopes whose sync failed (they resume from their cursor next time).
    pub failed: Vec<String>,
}

/// `progress(done, total, report)`: scopes done of the scopes listed, and
/// the counts so far.
pub(crate) type Progress<'a, R> = &'a (dyn Fn(usize, usize, &R) + Sync);

/// One round over every scope of `source`: an error only when the scopes
/// cannot be listed (or a restart cannot forget them).
pub(crate) async fn round<S: Source>(
    source: &S,
    since: Since,
    restart: bool,
    progress: Progress<'_, S::Report>,
) -> Result<Round<S::Report>, S::Error> {
    let scopes = source.scopes().await?;
    if restart {
        source.forget(&scopes).await?;
    }
    let total = scopes.len();
    let mut round = Round {
        report: S::Report::default(),
        scopes: total,
        failed: Vec::new(),
    };
    progress(0, total, &round.report);
    for (done, scope) in scopes.iter().enumerate() {
        let tick = |r: &S::Report| progress(done, total, r);
        if let Err(e) = source.sync(scope, since, &mut round.report, &tick).await {
            tracing::warn!(
                scope,
                error = %e,
                "{} sync failed; it resumes from its cursor",
                S::SCOPE
            );
            round.failed.push(scope.clone());
        }
        progress(done + 1, total, &round.report);
    }
    Ok(round)
}

/// A backfill: one round with its progress shown (a bar on a terminal
/// when `show`, else a log line every ten seconds and at the end).
pub(crate) async fn backfill<S: Source>(
    source: &S,
    since: Since,
    restart: bool,
    show: bool,
) -> Result<Round<S::Report>, S::Error> {
    let bar = Mutex::new(super::progress::Progress::new(
        show,
        S::LABEL.into(),
        S::UNIT,
    ));
    let progress = |done: usize, total: usize, r: &S::Report| {
        let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
        bar.step(done, total, &source.message(r));
    };
    let round = round(source, since, restart, &progress).await;
    bar.lock().unwrap_or_else(|p| p.into_inner()).finish();
    round
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
        type Report = usize;
        type Error = String;
        const SCOPE: &'static str = "fake scope";
        const LABEL: &'static str = "fake";
        const UNIT: &'static str = "scopes";

        fn message(&self, report: &usize) -> String {
            report.to_string()
        }

        async fn scopes(&self) -> Result<Vec<String>, String> {
            Ok(vec!["a".into(), "b".into(), "c".into()])
        }

        async fn forget(&self, scopes: &[String]) -> Result<(), String> {
            self.forgotten.lock().unwrap().extend_from_slice(scopes);
            Ok(())
        }

        async fn sync(
            &self,
            scope: &str,
            _since: Since,
            report: &mut usize,
            tick: &(dyn Fn(&usize) + Sync),
        ) -> Result<(), String> {
            let mut failed = self.failed_once.lock().unwrap();
            if scope == "b" && !*failed {
                *failed = true;
                return Err("boom".into());
            }
            *report += 1;
            tick(report);
            self.synced.lock().unwrap().push(scope.to_string());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failed_scope_is_reported_the_others_go_on_and_it_resumes_next_round() {
        let fake = Fake::default();
        let since = Since::Backfill(Utc::now());
        let steps = Mutex::new(Vec::new());
        let progress = |done: usize, total: usize, r: &usize| {
            steps.lock().unwrap().push((done, total, *r));
        };
        let first = round(&fake, since, false, &progress).await.unwrap();
        assert_eq!((first.scopes, first.report), (3, 2));
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
