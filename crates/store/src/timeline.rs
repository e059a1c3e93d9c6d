//! When each counted event happened: the stored rows behind every persisted
//! counter and histogram, as (family, series, time, observed value).
//!
//! `/metrics` serves counters as running totals; to write their history
//! (`backfill-openmetrics`, the exporter's `metrics::history`) the totals have to be
//! spread back over time. This module reads, for each family, the rows that
//! moved it, with the labels and the event time the live counting gives them
//! (`count_run`, `store_failures`, `decide_changes` and `slo_event` in
//! `counting.rs` and `settle.rs`): queue times at the run's start, final states, run times and
//! failure classes at the run's latest known time, merged changes at their merge,
//! SLO events at their stored time, new fingerprints at their first sighting.
//! The history writer takes the totals themselves from `metric_state`, so the
//! number a backfill ends on is the live number; tests/it/backfill_openmetrics.rs
//! checks on the demo that these events add up to it for every series.

use super::{Store, StoreError, from_ms};
use crate::catalog::{self, FamilyDef};
use crate::model::{DurationLimits, RunState, durations};
use std::collections::HashSet;

/// One event that moved a counter (by 1) or a histogram (by one observation).
#[derive(Debug, Clone)]
pub struct TimedEvent {
    pub family: FamilyDef,
    /// The series' labels, in the order the live counters store them.
    pub labels: Vec<(String, String)>,
    /// Event time, Unix ms.
    pub at_ms: i64,
    /// The observed value, for histograms.
    pub observed: Option<f64>,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn counter(family: FamilyDef, pairs: &[(&str, &str)], at_ms: i64) -> TimedEvent {
    TimedEvent {
        family,
        labels: labels(pairs),
        at_ms,
        observed: None,
    }
}

fn observation(family: FamilyDef, pairs: &[(&str, &str)], at_ms: i64, value: f64) -> TimedEvent {
    TimedEvent {
        family,
        labels: labels(pairs),
        at_ms,
        observed: Some(value),
    }
}

/// A stored run as its events read it: what each engine reads from `runs`
/// (times Unix ms), for [`RunRow::events`].
#[derive(Debug, Clone)]
pub struct RunRow {
    pub repository: String,
    pub context: String,
    pub trigger: String,
    pub state: String,
    pub attempt: u32,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub created_at: i64,
    pub queue_counted: bool,
    pub final_counted: bool,
}

impl RunRow {
    /// Queue time (at the start), final state and run time (at the run's
    /// latest known time), and the data-quality rejections of their
    /// durations. `limits` are the plausibility limits durations were
    /// counted with.
    pub fn events(&self, limits: DurationLimits, emit: &mut dyn FnMut(TimedEvent)) {
        let (repo, context, trigger, state) =
            (&self.repository, &self.context, &self.trigger, &self.state);
        let (queued, started, finished) = (self.queued_at, self.started_at, self.finished_at);
        let (d, issues) = durations(
            queued.map(from_ms),
            started.map(from_ms),
            finished.map(from_ms),
            limits,
        );
        use crate::model::DataQualityIssue as Dq;
        if let (true, Some(started_ms)) = (self.queue_counted, started) {
            for i in issues
                .iter()
                .filter(|i| matches!(i, Dq::NegativeQueueTime | Dq::AbsurdQueueTime))
            {
                emit(counter(
                    catalog::DATA_QUALITY,
                    &[("reason", i.as_str())],
                    started_ms,
                ));
            }
            if let Some(q) = d.queue_seconds {
                emit(observation(
                    catalog::RUN_QUEUE,
                    &[
                        ("repository", repo),
                        ("context", context),
                        ("trigger", trigger),
                    ],
                    started_ms,
                    q,
                ));
            }
        }
        let terminal = state.parse::<RunState>().is_ok_and(|s| s.is_terminal());
        if !(self.final_counted && terminal) {
            return;
        }
        let at = finished.or(started).or(queued).unwrap_or(self.created_at);
        for i in issues
            .iter()
            .filter(|i| matches!(i, Dq::NegativeRunTime | Dq::AbsurdRunTime))
        {
            emit(counter(
                catalog::DATA_QUALITY,
                &[("reason", i.as_str())],
                at,
            ));
        }
        let attempt = if self.attempt == 0 { "first" } else { "retry" };
        emit(counter(
            catalog::RUNS,
            &[
                ("repository", repo),
                ("context", context),
                ("trigger", trigger),
                ("state", state),
                ("attempt", attempt),
            ],
            at,
        ));
        if let Some(seconds) = d.run_seconds {
            emit(observation(
                catalog::RUN_DURATION,
                &[
                    ("repository", repo),
                    ("context", context),
                    ("trigger", trigger),
                    ("state", state),
                ],
                at,
                seconds,
            ));
        }
    }
}

/// The failure classes counted so far in the current run: a class counts
/// once per run, with the category of its first failure in the run. Feed it
/// every failure in (run id, failure id) order.
#[derive(Debug, Default)]
pub struct FailureClasses {
    run: Option<i64>,
    classes: HashSet<String>,
}

impl FailureClasses {
    /// One failure of run `run_id` (class, category; `at`: the run's latest
    /// known time, Unix ms, in repository `repository`).
    pub fn failure(
        &mut self,
        run_id: i64,
        class: &str,
        category: &str,
        repository: &str,
        at: i64,
        emit: &mut dyn FnMut(TimedEvent),
    ) {
        if self.run != Some(run_id) {
            self.run = Some(run_id);
            self.classes.clear();
        }
        if self.classes.insert(class.to_string()) {
            emit(counter(
                catalog::FAILURES,
                &[
                    ("repository", repository),
                    ("class", class),
                    ("category", category),
                ],
                at,
            ));
        }
    }
}

/// A fingerprint first seen at `first_seen` (Unix ms) is new in the
/// repository of the failure that brought it (the one marked new; else its
/// earliest occurrence); none: no failure of it is stored any more.
pub fn fingerprint_event(
    first_seen: i64,
    repository: Option<&str>,
    emit: &mut dyn FnMut(TimedEvent),
) {
    if let Some(repo) = repository {
        emit(counter(
            catalog::FINGERPRINTS_NEW,
            &[("repository", repo)],
            first_seen,
        ));
    }
}

/// A decided merged change (at its merge, Unix ms) with the retries a green
/// one needed; decided without an outcome: merged without runs.
pub fn change_events(
    repository: &str,
    outcome: Option<&str>,
    retries: Option<i64>,
    merged_at: i64,
    emit: &mut dyn FnMut(TimedEvent),
) {
    let Some(outcome) = outcome else {
        emit(counter(
            catalog::DATA_QUALITY,
            &[("reason", "merged_change_without_runs")],
            merged_at,
        ));
        return;
    };
    emit(counter(
        catalog::MERGED_CHANGES,
        &[("repository", repository), ("outcome", outcome)],
        merged_at,
    ));
    if outcome != crate::model::MergeOutcome::MergedRed.as_str() {
        emit(observation(
            catalog::RETRIES_TO_GREEN,
            &[("repository", repository)],
            merged_at,
            retries.unwrap_or(0) as f64,
        ));
    }
}

/// One stored SLO event (a `slo_events` row).
pub fn slo_event(
    slo: &str,
    repository: &str,
    good: bool,
    at: i64,
    emit: &mut dyn FnMut(TimedEvent),
) {
    let result = if good { "good" } else { "bad" };
    emit(counter(
        catalog::SLO_EVENTS,
        &[("slo", slo), ("repository", repository), ("result", result)],
        at,
    ));
}

/// A run's own SLO events, one `run_events` row (migration 13): (at, good)
/// of its queue_time, run_time and runs_completed events, each if recorded.
pub fn run_slo_events(
    repository: &str,
    events: [(Option<i64>, Option<bool>); 3],
    emit: &mut dyn FnMut(TimedEvent),
) {
    use crate::slo::SloId;
    for (slo, (at, good)) in [SloId::QueueTime, SloId::RunTime, SloId::RunsCompleted]
        .into_iter()
        .zip(events)
    {
        if let (Some(at), Some(good)) = (at, good) {
            slo_event(slo.as_str(), repository, good, at, emit);
        }
    }
}

/// A run's test_success events, one `test_events` row (migration 10):
/// `good` good ones of `total`.
pub fn test_slo_events(
    repository: &str,
    good: i64,
    total: i64,
    at: i64,
    emit: &mut dyn FnMut(TimedEvent),
) {
    let slo = crate::slo::SloId::TestSuccess.as_str();
    for i in 0..total {
        slo_event(slo, repository, i < good, at, emit);
    }
}

impl Store {
    /// Every counted event of the persisted families, in no particular order.
    /// `limits` are the plausibility limits durations were counted with.
    pub fn counted_events(
        &self,
        limits: DurationLimits,
        mut emit: impl FnMut(TimedEvent),
    ) -> Result<(), StoreError> {
        let emit: &mut dyn FnMut(TimedEvent) = &mut emit;
        self.run_events(limits, emit)?;
        self.failure_events(emit)?;
        self.change_events(emit)?;
        self.slo_events_timed(emit)?;
        Ok(())
    }

    /// Each run's events ([`RunRow::events`]).
    fn run_events(
        &self,
        limits: DurationLimits,
        emit: &mut dyn FnMut(TimedEvent),
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, r.context, r.trigger, r.state, r.attempt, r.queued_at, r.started_at,
                    r.finished_at, r.created_at, r.queue_counted, r.final_counted
             FROM runs r JOIN repositories repo ON repo.id = r.repository_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            RunRow {
                repository: r.get(0)?,
                context: r.get(1)?,
                trigger: r.get(2)?,
                state: r.get(3)?,
                attempt: r.get(4)?,
                queued_at: r.get(5)?,
                started_at: r.get(6)?,
                finished_at: r.get(7)?,
                created_at: r.get(8)?,
                queue_counted: r.get(9)?,
                final_counted: r.get(10)?,
            }
            .events(limits, emit);
        }
        Ok(())
    }

    /// Failure classes ([`FailureClasses`]) and new fingerprints.
    fn failure_events(&self, emit: &mut dyn FnMut(TimedEvent)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT f.run_id, f.class, f.category, repo.path,
                    coalesce(r.finished_at, r.started_at, r.queued_at, r.created_at)
             FROM failures f JOIN runs r ON r.id = f.run_id JOIN repositories repo ON repo.id = r.repository_id
             ORDER BY f.run_id, f.id",
        )?;
        let mut rows = stmt.query([])?;
        let mut classes = FailureClasses::default();
        while let Some(r) = rows.next()? {
            let (run_id, class, category, repo, at): (i64, String, String, String, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            classes.failure(run_id, &class, &category, &repo, at, emit);
        }
        let mut stmt = self.conn.prepare(
            "SELECT fp.first_seen,
                    (SELECT repo.path FROM failures f JOIN runs r ON r.id = f.run_id
                       JOIN repositories repo ON repo.id = r.repository_id
                     WHERE f.fingerprint_id = fp.id ORDER BY f.is_new DESC, f.id LIMIT 1)
             FROM fingerprints fp",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (at, repo): (i64, Option<String>) = (r.get(0)?, r.get(1)?);
            fingerprint_event(at, repo.as_deref(), emit);
        }
        Ok(())
    }

    /// Decided merged changes ([`change_events`]).
    fn change_events(&self, emit: &mut dyn FnMut(TimedEvent)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, c.outcome, c.retries, c.merged_at
             FROM changes c JOIN repositories repo ON repo.id = c.repository_id
             WHERE c.decided_at IS NOT NULL AND c.merged_at IS NOT NULL",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (repo, outcome, retries, at): (String, Option<String>, Option<i64>, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            change_events(&repo, outcome.as_deref(), retries, at, emit);
        }
        Ok(())
    }

    fn slo_events_timed(&self, emit: &mut dyn FnMut(TimedEvent)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT e.slo, repo.path, e.good, e.at FROM slo_events e
             JOIN repositories repo ON repo.id = e.repository_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (slo, repo, good, at): (String, String, bool, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            slo_event(&slo, &repo, good, at, emit);
        }
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, e.queue_at, e.queue_good, e.run_time_at, e.run_time_good, e.completed_at,
                    e.completed_good
             FROM run_events e JOIN repositories repo ON repo.id = e.repository_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let repo: String = r.get(0)?;
            let events = [
                (r.get(1)?, r.get(2)?),
                (r.get(3)?, r.get(4)?),
                (r.get(5)?, r.get(6)?),
            ];
            run_slo_events(&repo, events, emit);
        }
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, e.good, e.total, e.at FROM test_events e
             JOIN repositories repo ON repo.id = e.repository_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (repo, good, total, at): (String, i64, i64, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            test_slo_events(&repo, good, total, at, emit);
        }
        Ok(())
    }
}

/// One test's counters per UTC day (day number, counts), in day order.
pub type TestDays = ((String, String, String), Vec<(i64, crate::flaky::Counts)>);

impl Store {
    /// Every test's per-day counters (migration 10) from day `since_day` to
    /// `until_day` (UTC day numbers, both included), grouped by (repository,
    /// context, test): what [`Store::test_stats`] adds up for a window.
    pub fn test_day_counts(
        &self,
        since_day: i64,
        until_day: i64,
    ) -> Result<Vec<TestDays>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, t.context, t.name, d.day, d.runs, d.failures, d.commits, d.flaky_commits, d.flips,
                    d.flaky_failures
             FROM test_days d JOIN tests t ON t.id = d.test_id JOIN repositories repo ON repo.id = t.repository_id
             WHERE d.day >= ?1 AND d.day <= ?2
             ORDER BY repo.path, t.context, t.name, d.day",
        )?;
        let mut rows = stmt.query([since_day, until_day])?;
        let mut out: Vec<TestDays> = Vec::new();
        while let Some(r) = rows.next()? {
            let key = (
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            );
            let day: i64 = r.get(3)?;
            let counts = super::results::counts_at(r, 4)?;
            match out.last_mut() {
                Some((k, days)) if *k == key => days.push((day, counts)),
                _ => out.push((key, vec![(day, counts)])),
            }
        }
        Ok(out)
    }
}
