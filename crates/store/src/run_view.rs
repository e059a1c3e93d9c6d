//! One run as the API and the UI show it ([`RunView`]): its tests (a
//! [`TestSlice`] of them), reports, failures, change, dependencies and what
//! they changed since the previous run.

use crate::error::StoreError;
use crate::{Store, from_ms};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{DurationLimits, FailureEvidence, TestOutcome, durations};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Which of a run's tests a [`RunView`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestSlice {
    pub offset: usize,
    pub limit: usize,
    /// Failed and errored tests first (else in report order).
    pub failures_first: bool,
    /// Longest message kept, in characters.
    pub message_chars: usize,
}

impl TestSlice {
    pub const ALL: TestSlice = TestSlice {
        offset: 0,
        limit: usize::MAX,
        failures_first: false,
        message_chars: usize::MAX,
    };
}

/// A run as the API and the UI show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunView {
    pub id: i64,
    pub forge: String,
    pub repository: String,
    pub context: String,
    pub commit: String,
    pub external_id: Option<String>,
    pub attempt: u32,
    pub trigger: String,
    pub state: String,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub queue_seconds: Option<f64>,
    pub run_seconds: Option<f64>,
    pub url: Option<String>,
    pub log_url: Option<String>,
    pub source: String,
    pub change: Option<ChangeView>,
    pub tests: Vec<TestView>,
    /// All tests of the run (`tests` may be a slice of them).
    pub tests_total: usize,
    /// Index of the first of `tests` among all of them.
    pub tests_offset: usize,
    pub failures: Vec<FailureEvidence>,
    pub reports: Vec<ReportView>,
    /// Package versions the run used.
    pub dependencies: std::collections::BTreeMap<String, String>,
    /// What changed since the previous run of the same repository and context
    /// that recorded its dependencies (empty when there is none to compare).
    pub dependency_changes: Vec<crate::deps::DependencyChange>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChangeView {
    pub number: i64,
    pub merged_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TestView {
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_seconds: Option<f64>,
    pub retries: u32,
    pub retry_reasons: Vec<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportView {
    pub format: String,
    pub name: String,
    pub bytes: i64,
}

pub(crate) fn run_view(
    conn: &Connection,
    id: i64,
    slice: TestSlice,
) -> Result<Option<RunView>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT r.id, repo.forge, repo.path, r.context, r.commit_sha, r.external_id, r.attempt, r.trigger,
                    r.state, r.queued_at, r.started_at, r.finished_at, r.url, r.log_url, r.source, r.change_id
             FROM runs r JOIN repositories repo ON repo.id = r.repository_id WHERE r.id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                RunView {
                    id: r.get(0)?,
                    forge: r.get(1)?,
                    repository: r.get(2)?,
                    context: r.get(3)?,
                    commit: r.get(4)?,
                    external_id: r.get(5)?,
                    attempt: r.get(6)?,
                    trigger: r.get(7)?,
                    state: r.get(8)?,
                    queued_at: r.get::<_, Option<i64>>(9)?.map(from_ms),
                    started_at: r.get::<_, Option<i64>>(10)?.map(from_ms),
                    finished_at: r.get::<_, Option<i64>>(11)?.map(from_ms),
                    queue_seconds: None,
                    run_seconds: None,
                    url: r.get(12)?,
                    log_url: r.get(13)?,
                    source: r.get(14)?,
                    change: None,
                    tests: Vec::new(),
                    tests_total: 0,
                    tests_offset: slice.offset,
                    failures: Vec::new(),
                    reports: Vec::new(),
                    dependencies: Default::default(),
                    dependency_changes: Vec::new(),
                },
                r.get::<_, Option<i64>>(15)?,
            ))
        })
        .optional()?;
    let Some((mut view, change_id)) = row else {
        return Ok(None);
    };
    let (d, _) = durations(
        view.queued_at,
        view.started_at,
        view.finished_at,
        DurationLimits::default(),
    );
    view.queue_seconds = d.queue_seconds;
    view.run_seconds = d.run_seconds;
    if let Some(change_id) = change_id {
        view.change = conn
            .prepare_cached(
                "SELECT number, merged_at, outcome, retries FROM changes WHERE id = ?1",
            )?
            .query_row([change_id], |r| {
                Ok(ChangeView {
                    number: r.get(0)?,
                    merged_at: r.get::<_, Option<i64>>(1)?.map(from_ms),
                    outcome: r.get(2)?,
                    retries: r.get(3)?,
                })
            })
            .optional()?;
    }
    view.tests_total = conn
        .prepare_cached("SELECT count(*) FROM test_results WHERE run_id = ?1")?
        .query_row([id], |r| r.get::<_, i64>(0))? as usize;
    let order = if slice.failures_first {
        "CASE WHEN outcome IN ('failed', 'errored') THEN 0 ELSE 1 END, id"
    } else {
        "id"
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT name, outcome, duration_seconds, retries, retry_reasons, substr(message, 1, ?4)
         FROM test_results WHERE run_id = ?1 ORDER BY {order} LIMIT ?2 OFFSET ?3"
    ))?;
    let clamp = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    view.tests = stmt
        .query_map(
            params![
                id,
                clamp(slice.limit),
                clamp(slice.offset),
                clamp(slice.message_chars.min(1 << 30))
            ],
            |r| {
                Ok(TestView {
                    name: r.get(0)?,
                    outcome: r
                        .get::<_, String>(1)?
                        .parse()
                        .unwrap_or(TestOutcome::Errored),
                    duration_seconds: r.get(2)?,
                    retries: r.get(3)?,
                    retry_reasons: serde_json::from_str(&r.get::<_, String>(4)?)
                        .unwrap_or_default(),
                    message: r.get(5)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT f.class, f.category, f.line, f.evidence, f.context, fp.hash, f.test_name, f.context_before,
                f.candidates
         FROM failures f LEFT JOIN fingerprints fp ON fp.id = f.fingerprint_id WHERE f.run_id = ?1 ORDER BY f.id",
    )?;
    view.failures = stmt
        .query_map([id], |r| {
            Ok(FailureEvidence {
                class: r.get(0)?,
                category: r.get(1)?,
                line: r.get::<_, Option<i64>>(2)?.map(|l| l as u64),
                evidence: r.get(3)?,
                context: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                fingerprint: r.get(5)?,
                test_name: r.get(6)?,
                context_before: r.get(7)?,
                candidates: r
                    .get::<_, Option<String>>(8)?
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT format, name, length(content) FROM reports WHERE run_id = ?1 ORDER BY id",
    )?;
    view.reports = stmt
        .query_map([id], |r| {
            Ok(ReportView {
                format: r.get(0)?,
                name: r.get(1)?,
                bytes: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    view.dependencies = dependencies_of(conn, id)?;
    if !view.dependencies.is_empty() {
        let previous: Option<i64> = conn
            .prepare_cached(
                "SELECT p.id FROM runs p JOIN runs r ON r.id = ?1
                 WHERE p.repository_id = r.repository_id AND p.context = r.context AND p.id != r.id
                   AND coalesce(p.started_at, p.queued_at, p.created_at) < coalesce(r.started_at, r.queued_at, r.created_at)
                   AND EXISTS (SELECT 1 FROM dependency_snapshots d WHERE d.run_id = p.id)
                 ORDER BY coalesce(p.started_at, p.queued_at, p.created_at) DESC, p.id DESC LIMIT 1",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if let Some(previous) = previous {
            view.dependency_changes =
                crate::deps::diff(&dependencies_of(conn, previous)?, &view.dependencies);
        }
    }
    Ok(Some(view))
}

pub(crate) fn dependencies_of(
    conn: &Connection,
    run_id: i64,
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT package, version FROM dependency_snapshots WHERE run_id = ?1")?;
    let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Store {
    /// One run with everything stored about it.
    pub fn run(&self, id: i64) -> Result<Option<RunView>, StoreError> {
        run_view(&self.conn, id, TestSlice::ALL)
    }

    /// One run with a slice of its tests (`RunView::tests_total` says how
    /// many there are); messages cut at `TestSlice::message_chars`.
    pub fn run_slice(&self, id: i64, slice: TestSlice) -> Result<Option<RunView>, StoreError> {
        run_view(&self.conn, id, slice)
    }
}
