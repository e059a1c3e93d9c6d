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

impl Store {
    /// Every counted event of the persisted families, in no particular order.
    /// `limits` are the plausibility limits durations were counted with.
    pub fn counted_events(
        &self,
        limits: DurationLimits,
        mut emit: impl FnMut(TimedEvent),
    ) -> Result<(), StoreError> {
        self.run_events(limits, &mut emit)?;
        self.failure_events(&mut emit)?;
        self.change_events(&mut emit)?;
        self.slo_events_timed(&mut emit)?;
        Ok(())
    }

    /// Queue time (at the start), final state and run time (at the run's
    /// latest known time), and the data-quality rejections of their durations.
    fn run_events(
        &self,
        limits: DurationLimits,
        emit: &mut impl FnMut(TimedEvent),
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, r.context, r.trigger, r.state, r.attempt, r.queued_at, r.started_at,
                    r.finished_at, r.created_at, r.queue_counted, r.final_counted
             FROM runs r JOIN repositories repo ON repo.id = r.repository_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (repo, context, trigger, state): (String, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let attempt: u32 = r.get(4)?;
            let (queued, started, finished, created): (Option<i64>, Option<i64>, Option<i64>, i64) =
                (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?);
            let (queue_counted, final_counted): (bool, bool) = (r.get(9)?, r.get(10)?);
            let (d, issues) = durations(
                queued.map(from_ms),
                started.map(from_ms),
                finished.map(from_ms),
                limits,
            );
            use crate::model::DataQualityIssue as Dq;
            if let (true, Some(started_ms)) = (queue_counted, started) {
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
                            ("repository", &repo),
                            ("context", &context),
                            ("trigger", &trigger),
                        ],
                        started_ms,
                        q,
                    ));
                }
            }
            let terminal = state.parse::<RunState>().is_ok_and(|s| s.is_terminal());
            if !(final_counted && terminal) {
                continue;
            }
            let at = finished.or(started).or(queued).unwrap_or(created);
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
            let attempt = if attempt == 0 { "first" } else { "retry" };
            emit(counter(
                catalog::RUNS,
                &[
                    ("repository", &repo),
                    ("context", &context),
                    ("trigger", &trigger),
                    ("state", &state),
                    ("attempt", attempt),
                ],
                at,
            ));
            if let Some(seconds) = d.run_seconds {
                emit(observation(
                    catalog::RUN_DURATION,
                    &[
                        ("repository", &repo),
                        ("context", &context),
                        ("trigger", &trigger),
                        ("state", &state),
                    ],
                    at,
                    seconds,
                ));
            }
        }
        Ok(())
    }

    /// Failure classes (once per run and class, with the category of the
    /// class's first failure in the run) and new fingerprints.
    fn failure_events(&self, emit: &mut impl FnMut(TimedEvent)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT f.run_id, f.class, f.category, repo.path,
                    coalesce(r.finished_at, r.started_at, r.queued_at, r.created_at)
             FROM failures f JOIN runs r ON r.id = f.run_id JOIN repositories repo ON repo.id = r.repository_id
             ORDER BY f.run_id, f.id",
        )?;
        let mut rows = stmt.query([])?;
        let mut run: Option<i64> = None;
        let mut classes: HashSet<String> = HashSet::new();
        while let Some(r) = rows.next()? {
            let (run_id, class, category, repo, at): (i64, String, String, String, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            if run != Some(run_id) {
                run = Some(run_id);
                classes.clear();
            }
            if classes.insert(class.clone()) {
                emit(counter(
                    catalog::FAILURES,
                    &[
                        ("repository", &repo),
                        ("class", &class),
                        ("category", &category),
                    ],
                    at,
                ));
            }
        }
        // A fingerprint is new in the repository of the failure that brought it
        // (the one marked new; else its earliest occurrence).
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
            if let Some(repo) = repo {
                emit(counter(
                    catalog::FINGERPRINTS_NEW,
                    &[("repository", &repo)],
                    at,
                ));
            }
        }
        Ok(())
    }

    /// Decided merged changes (at their merge) with the retries green ones needed.
    fn change_events(&self, emit: &mut impl FnMut(TimedEvent)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, c.outcome, c.retries, c.merged_at
             FROM changes c JOIN repositories repo ON repo.id = c.repository_id
             WHERE c.decided_at IS NOT NULL AND c.merged_at IS NOT NULL",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (repo, outcome, retries, at): (String, Option<String>, Option<i64>, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let Some(outcome) = outcome else {
                emit(counter(
                    catalog::DATA_QUALITY,
                    &[("reason", "merged_change_without_runs")],
                    at,
                ));
                continue;
            };
            emit(counter(
                catalog::MERGED_CHANGES,
                &[("repository", &repo), ("outcome", &outcome)],
                at,
            ));
            if outcome != crate::model::MergeOutcome::MergedRed.as_str() {
                emit(observation(
                    catalog::RETRIES_TO_GREEN,
                    &[("repository", &repo)],
                    at,
                    retries.unwrap_or(0) as f64,
                ));
            }
        }
        Ok(())
    }

    fn slo_events_timed(&self, emit: &mut impl FnMut(TimedEvent)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT e.slo, repo.path, e.good, e.at FROM slo_events e
             JOIN repositories repo ON repo.id = e.repository_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (slo, repo, good, at): (String, String, bool, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let result = if good { "good" } else { "bad" };
            emit(counter(
                catalog::SLO_EVENTS,
                &[("slo", &slo), ("repository", &repo), ("result", result)],
                at,
            ));
        }
        // A run's own events are one row since migration 13.
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, e.queue_at, e.queue_good, e.run_time_at, e.run_time_good, e.completed_at,
                    e.completed_good
             FROM run_events e JOIN repositories repo ON repo.id = e.repository_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let repo: String = r.get(0)?;
            for (slo, column) in [
                (crate::slo::SloId::QueueTime, 1),
                (crate::slo::SloId::RunTime, 3),
                (crate::slo::SloId::RunsCompleted, 5),
            ] {
                let (at, good): (Option<i64>, Option<bool>) = (r.get(column)?, r.get(column + 1)?);
                if let (Some(at), Some(good)) = (at, good) {
                    let result = if good { "good" } else { "bad" };
                    emit(counter(
                        catalog::SLO_EVENTS,
                        &[
                            ("slo", slo.as_str()),
                            ("repository", &repo),
                            ("result", result),
                        ],
                        at,
                    ));
                }
            }
        }
        // A run's test_success events are one row (good, total) since migration 10.
        let mut stmt = self.conn.prepare(
            "SELECT repo.path, e.good, e.total, e.at FROM test_events e
             JOIN repositories repo ON repo.id = e.repository_id",
        )?;
        let mut rows = stmt.query([])?;
        let slo = crate::slo::SloId::TestSuccess.as_str();
        while let Some(r) = rows.next()? {
            let (repo, good, total, at): (String, i64, i64, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            for i in 0..total {
                let result = if i < good { "good" } else { "bad" };
                emit(counter(
                    catalog::SLO_EVENTS,
                    &[("slo", slo), ("repository", &repo), ("result", result)],
                    at,
                ));
            }
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
