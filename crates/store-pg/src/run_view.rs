//! One run as the API and the UI show it on PostgreSQL: the SQLite store's
//! `run_view.rs` ([`ci_slo_store::RunView`] with a [`TestSlice`] of its
//! tests, its reports, failures, change, dependencies and what they changed
//! since the previous run), with the same answers.

use crate::{PgStore, PgStoreError};
use ci_slo_core::model::{DurationLimits, FailureEvidence, TestOutcome, durations};
use ci_slo_store::{ChangeView, ReportView, RunView, TestSlice, TestView, from_ms};
use std::collections::BTreeMap;

/// The run's row ($1) with its change (when it has one) and how many tests
/// it has (the length of its `run_results` row: schema migration 4): one
/// round trip.
const RUN_SQL: &str = "SELECT r.id, repo.forge, repo.path, r.context, r.commit_sha, r.external_id, r.attempt,
        r.trigger, r.state, r.queued_at, r.started_at, r.finished_at, r.url, r.log_url, r.source, c.id,
        c.number, c.merged_at, c.outcome, c.retries,
        coalesce((SELECT cardinality(rr.test_ids)::bigint FROM run_results rr WHERE rr.run_id = r.id), 0)
     FROM runs r JOIN repositories repo ON repo.id = r.repository_id
     LEFT JOIN changes c ON c.id = r.change_id
     WHERE r.id = $1";

/// A slice of the run's tests in an order ($1 run, $2 limit, $3 offset, $4
/// longest message in characters): the `test_results` view's columns, the
/// slice taken from the run's results (`results`, one `run_results` row:
/// schema migration 4) before their tests' names are joined, so a page
/// joins its own rows only. `$inner` orders `results`, `$outer` the slice.
macro_rules! tests_slice {
    ($inner:literal, $outer:literal) => {
        concat!(
            "SELECT t.name,
                CASE p.outcome WHEN 0 THEN 'passed' WHEN 1 THEN 'failed' WHEN 2 THEN 'errored' ELSE 'skipped' END,
                p.duration_seconds, p.retries, coalesce(p.retry_reasons, '[]'), substr(p.message, 1, $4)
             FROM (SELECT * FROM results WHERE run_id = $1 ORDER BY ",
            $inner,
            " LIMIT $2 OFFSET $3) p
             JOIN tests t ON t.id = p.test_id ORDER BY ",
            $outer
        )
    };
}

/// A slice of the run's tests in report order.
const TESTS_SQL: &str = tests_slice!("test_id", "p.test_id");

/// [`TESTS_SQL`], failed and errored tests first.
const TESTS_FAILURES_FIRST_SQL: &str = tests_slice!(
    "CASE WHEN outcome IN (1, 2) THEN 0 ELSE 1 END, test_id",
    "CASE WHEN p.outcome IN (1, 2) THEN 0 ELSE 1 END, p.test_id"
);

/// The previous run of the same repository and context that recorded its
/// dependencies (by started, else queued, else stored time).
const PREVIOUS_WITH_DEPENDENCIES_SQL: &str = "SELECT p.id FROM runs p JOIN runs r ON r.id = $1
     WHERE p.repository_id = r.repository_id AND p.context = r.context AND p.id != r.id
       AND coalesce(p.started_at, p.queued_at, p.created_at) < coalesce(r.started_at, r.queued_at, r.created_at)
       AND EXISTS (SELECT 1 FROM dependency_snapshots d WHERE d.run_id = p.id)
     ORDER BY coalesce(p.started_at, p.queued_at, p.created_at) DESC, p.id DESC LIMIT 1";

fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// One run with a slice of its tests (`RunView::tests_total` says how
    /// many there are); messages cut at `TestSlice::message_chars`.
    pub fn run_slice(&self, id: i64, slice: TestSlice) -> Result<Option<RunView>, PgStoreError> {
        let mut view = {
            let mut client = self.reader();
            let Some(r) = client.query_opt(RUN_SQL, &[&id])? else {
                return Ok(None);
            };
            let at = |i: usize| r.get::<_, Option<i64>>(i).map(from_ms);
            let (queued_at, started_at, finished_at) = (at(9), at(10), at(11));
            let (d, _) = durations(
                queued_at,
                started_at,
                finished_at,
                DurationLimits::default(),
            );
            let change = r.get::<_, Option<i64>>(15).map(|_| ChangeView {
                number: r.get(16),
                merged_at: r.get::<_, Option<i64>>(17).map(from_ms),
                outcome: r.get(18),
                retries: r
                    .get::<_, Option<i64>>(19)
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            });
            let tests_total: i64 = r.get(20);
            let message_chars = i32::try_from(slice.message_chars.min(1 << 30)).unwrap_or(1 << 30);
            let tests = client
                .query(
                    if slice.failures_first {
                        TESTS_FAILURES_FIRST_SQL
                    } else {
                        TESTS_SQL
                    },
                    &[
                        &id,
                        &clamp(slice.limit),
                        &clamp(slice.offset),
                        &message_chars,
                    ],
                )?
                .iter()
                .map(|t| TestView {
                    name: t.get(0),
                    outcome: t
                        .get::<_, String>(1)
                        .parse()
                        .unwrap_or(TestOutcome::Errored),
                    duration_seconds: t.get(2),
                    retries: u32::try_from(t.get::<_, i64>(3)).unwrap_or(u32::MAX),
                    retry_reasons: serde_json::from_str(t.get(4)).unwrap_or_default(),
                    message: t.get(5),
                })
                .collect();
            let failures = client
                .query(
                    "SELECT f.class, f.category, f.line, f.evidence, f.context, fp.hash, f.test_name,
                        f.context_before, f.candidates
                     FROM failures f LEFT JOIN fingerprints fp ON fp.id = f.fingerprint_id
                     WHERE f.run_id = $1 ORDER BY f.id",
                    &[&id],
                )?
                .iter()
                .map(|f| FailureEvidence {
                    class: f.get(0),
                    category: f.get(1),
                    line: f.get::<_, Option<i64>>(2).map(|l| l as u64),
                    evidence: f.get(3),
                    context: serde_json::from_str(f.get(4)).unwrap_or_default(),
                    fingerprint: f.get(5),
                    test_name: f.get(6),
                    context_before: f
                        .get::<_, Option<i64>>(7)
                        .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                    candidates: f
                        .get::<_, Option<String>>(8)
                        .and_then(|s| serde_json::from_str(&s).ok())
                        .unwrap_or_default(),
                })
                .collect();
            let reports = client
                .query(
                    "SELECT format, name, length(content)::bigint FROM reports WHERE run_id = $1 ORDER BY id",
                    &[&id],
                )?
                .iter()
                .map(|p| ReportView {
                    format: p.get(0),
                    name: p.get(1),
                    bytes: p.get(2),
                })
                .collect();
            RunView {
                id: r.get(0),
                forge: r.get(1),
                repository: r.get(2),
                context: r.get(3),
                commit: r.get(4),
                external_id: r.get(5),
                attempt: u32::try_from(r.get::<_, i64>(6)).unwrap_or(u32::MAX),
                trigger: r.get(7),
                state: r.get(8),
                queued_at,
                started_at,
                finished_at,
                queue_seconds: d.queue_seconds,
                run_seconds: d.run_seconds,
                url: r.get(12),
                log_url: r.get(13),
                source: r.get(14),
                change,
                tests,
                tests_total: usize::try_from(tests_total).unwrap_or(0),
                tests_offset: slice.offset,
                failures,
                reports,
                dependencies: BTreeMap::new(),
                dependency_changes: Vec::new(),
            }
        };
        view.dependencies = self.dependencies_of(id)?;
        if !view.dependencies.is_empty() {
            let previous: Option<i64> = self
                .reader()
                .query_opt(PREVIOUS_WITH_DEPENDENCIES_SQL, &[&id])?
                .map(|r| r.get(0));
            if let Some(previous) = previous {
                view.dependency_changes =
                    ci_slo_core::deps::diff(&self.dependencies_of(previous)?, &view.dependencies);
            }
        }
        Ok(Some(view))
    }

    /// The package versions a run used.
    pub(crate) fn dependencies_of(
        &self,
        run_id: i64,
    ) -> Result<BTreeMap<String, String>, PgStoreError> {
        Ok(self
            .reader()
            .query(
                "SELECT package, version FROM dependency_snapshots WHERE run_id = $1",
                &[&run_id],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}
