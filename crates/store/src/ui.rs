//! Read queries of the drill-down UI and its JSON API (docs/design.md §7).
//!
//! Each query reads one bounded slice (a time window, one run, one test) with
//! an index, in a handful of statements: no query per row of a page, except
//! the nightly grid's per-failing-cell dependency diff (bounded by the grid).

use super::{Store, StoreError, from_ms, to_ms};
use crate::run_view::dependencies_of;
use crate::slo::EventCounts;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// The time of a run used by every UI query: queued, else started, else stored.
/// Indexed by migration 4 (keep the expression identical).
pub const RUN_AT: &str = "coalesce(r.queued_at, r.started_at, r.created_at)";

/// Filters shared by the pages (all optional; exact matches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub repository: Option<String>,
    pub context: Option<String>,
    pub trigger: Option<String>,
}

/// SLO events of one SLO in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloBucket {
    pub slo: String,
    /// Start of the hour, Unix ms.
    pub hour_ms: i64,
    pub counts: EventCounts,
}

/// One failure of a window as the failures page groups it: no text but names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureKey {
    /// The failure's id (for [`Store::failure_occurrence`]).
    pub id: i64,
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub fingerprint_id: Option<i64>,
    pub class: String,
    pub category: String,
    pub repository_id: i64,
    pub context: String,
    pub test_name: Option<String>,
}

/// One failure with its run and fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureOccurrence {
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub forge: String,
    pub repository: String,
    pub context: String,
    pub url: Option<String>,
    pub class: String,
    pub category: String,
    pub evidence: String,
    pub test_name: Option<String>,
    pub fingerprint: Option<String>,
    pub normalized: Option<String>,
    pub first_seen: Option<DateTime<Utc>>,
}

/// One execution of a test, with its run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestExecutionRow {
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub commit: String,
    pub attempt: u32,
    pub run_state: String,
    pub outcome: crate::model::TestOutcome,
    pub retries: u32,
    pub retry_reasons: Vec<String>,
    pub message: Option<String>,
    pub duration_seconds: Option<f64>,
}

/// A repository known to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryRow {
    pub forge: String,
    pub path: String,
}

/// Dependency changes of a run since the last green run of its repository and context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SinceGreen {
    pub last_green_run_id: Option<i64>,
    pub changes: Vec<crate::deps::DependencyChange>,
}

/// One repository's events of one SLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloRepositoryCounts {
    pub forge: String,
    pub repository: String,
    pub counts: EventCounts,
}

/// A bad SLO event with what it is about: a run (run time, queue time, run
/// completed), a test execution of a run, or a merged change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadEvent {
    pub at: DateTime<Utc>,
    pub forge: String,
    pub repository: String,
    /// `run`, `test` or `change`.
    pub kind: String,
    /// The run (for a change: its latest run that did not succeed, else its latest run).
    pub run_id: Option<i64>,
    pub context: Option<String>,
    pub state: Option<String>,
    pub commit: Option<String>,
    pub test: Option<String>,
    pub change_number: Option<i64>,
    /// A change's outcome (`failed_runs`, `retried`, ...).
    pub change_outcome: Option<String>,
}

/// Another attempt of a run's context and commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRef {
    pub run_id: i64,
    pub attempt: u32,
    pub state: String,
    pub trigger: String,
}

/// What a run page links besides the run itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RunRelated {
    /// The other runs of the same repository, context and commit, by attempt.
    pub attempts: Vec<AttemptRef>,
    /// The last successful run of the repository and context before this one.
    pub last_green_run_id: Option<i64>,
    /// Dependency changes since the last green run that recorded dependencies.
    pub since_green: SinceGreen,
}

/// A window's bad events of one SLO, newest first: index `slo_events_at`
/// walked backwards from now (ties of one millisecond sorted on the way),
/// which stops after a page: the primary key would read every event the SLO
/// ever had.
const BAD_EVENTS_SQL: &str = "SELECT e.subject, e.at, repo.forge, repo.path
     FROM slo_events e INDEXED BY slo_events_at
     CROSS JOIN repositories repo ON repo.id = e.repository_id
     WHERE e.at >= ?2 AND e.slo = ?1 AND e.good = 0
       AND (?3 IS NULL OR repo.path = ?3)
     ORDER BY e.at DESC, e.subject DESC LIMIT ?4 OFFSET ?5";

/// The failed test results of the runs counted by test_success since ?1,
/// newest first (subject `test:RUN:NAME`, like `slo_events`' subjects).
const BAD_TEST_EVENTS_SQL: &str =
    "SELECT 'test:' || e.run_id || ':' || t.name, e.at, repo.forge, repo.path
     FROM test_events e INDEXED BY test_events_at
     CROSS JOIN repositories repo ON repo.id = e.repository_id
     CROSS JOIN results r ON r.run_id = e.run_id AND r.outcome IN (1, 2)
     CROSS JOIN tests t ON t.id = r.test_id
     WHERE e.at >= ?1 AND e.good < e.total
       AND (?2 IS NULL OR repo.path = ?2)
     ORDER BY e.at DESC, e.run_id DESC, t.name DESC LIMIT ?3 OFFSET ?4";

/// One repository's bad events of one SLO, newest first (index
/// `slo_events_repository (slo, repository_id, at) WHERE good = 0`,
/// migrations 11 and 12).
const REPOSITORY_BAD_EVENTS_SQL: &str = "SELECT e.subject, e.at, repo.forge, repo.path
     FROM repositories repo
     CROSS JOIN slo_events e INDEXED BY slo_events_repository
       ON e.slo = ?1 AND e.repository_id = repo.id AND e.good = 0 AND e.at >= ?2
     WHERE repo.path = ?3
     ORDER BY e.at DESC, e.subject DESC LIMIT ?4 OFFSET ?5";

/// A window's bad events of one of a run's SLOs (`run_events` columns `at`
/// and `good`, migration 13), newest first: its time index walked backwards,
/// like [`BAD_EVENTS_SQL`] (`?1`, the SLO, is implied by the columns).
fn bad_run_events_sql(at: &str, good: &str) -> String {
    format!(
        "SELECT 'run:' || e.run_id AS subject, e.{at} AS at, repo.forge, repo.path
         FROM run_events e INDEXED BY run_events_{index}_at
         CROSS JOIN repositories repo ON repo.id = e.repository_id
         WHERE e.{at} >= ?2 AND e.{at} IS NOT NULL AND e.{good} = 0 AND ?1 IS NOT NULL
           AND (?3 IS NULL OR repo.path = ?3)
         ORDER BY at DESC, subject DESC LIMIT ?4 OFFSET ?5",
        index = at.trim_end_matches("_at")
    )
}

/// One repository's bad events of one of a run's SLOs, newest first (index
/// `run_events_<slo>_bad (repository_id, at) WHERE good = 0`).
fn repository_bad_run_events_sql(at: &str, good: &str) -> String {
    format!(
        "SELECT 'run:' || e.run_id AS subject, e.{at} AS at, repo.forge, repo.path
         FROM repositories repo
         CROSS JOIN run_events e INDEXED BY run_events_{index}_bad
           ON e.repository_id = repo.id AND e.{good} = 0 AND e.{at} >= ?2
         WHERE repo.path = ?3 AND ?1 IS NOT NULL
         ORDER BY at DESC, subject DESC LIMIT ?4 OFFSET ?5",
        index = at.trim_end_matches("_at")
    )
}

/// One SLO's events per repository since an hour (primary key of
/// `slo_hourly` per repository).
const SLO_BY_REPOSITORY_SQL: &str = "SELECT repo.forge, repo.path, sum(h.good), sum(h.total)
     FROM repositories repo
     CROSS JOIN slo_hourly h ON h.repository_id = repo.id AND h.hour >= ?2 AND h.slo = ?1
     GROUP BY repo.id HAVING sum(h.total) > 0";

/// One scheduled run of the nightly grid, with its first failure evidence.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NightlyRun {
    pub forge: String,
    pub repository: String,
    /// UTC day of the run (by queued, else started, else stored time).
    pub day: chrono::NaiveDate,
    pub run_id: i64,
    pub context: String,
    pub commit: String,
    pub state: String,
    pub duration_seconds: Option<f64>,
    pub url: Option<String>,
    pub failure: Option<NightlyFailure>,
}

/// The first failure evidence of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NightlyFailure {
    pub class: String,
    pub category: String,
    pub evidence: String,
}

/// Every scheduled run of a window (index `runs_trigger_at`), its first
/// failure by `failures_run`; repository and context filter in the query.
const NIGHTLY_RUNS_SQL: &str =
    "SELECT r.id, repo.forge, repo.path, r.context, r.commit_sha, r.state, r.queued_at, r.started_at,
        r.finished_at, r.url, coalesce(r.queued_at, r.started_at, r.created_at) AS t,
        f.class, f.category, f.evidence
     FROM runs r
     JOIN repositories repo ON repo.id = r.repository_id
     LEFT JOIN failures f ON f.id = (SELECT min(x.id) FROM failures x WHERE x.run_id = r.id)
     WHERE r.trigger = 'schedule' AND coalesce(r.queued_at, r.started_at, r.created_at) >= ?1
       AND coalesce(r.queued_at, r.started_at, r.created_at) < ?2
       AND (?3 IS NULL OR repo.path = ?3)
       AND (?4 IS NULL OR r.context = ?4)
     ORDER BY repo.path, repo.forge, t, r.id";

/// The failures of a window, for aggregation: read from the covering index
/// `failures_window` alone (each failure carries its run's time, repository
/// and context). The trigger filter is the one that visits the runs.
const FAILURE_KEYS_SQL: &str =
    "SELECT f.id, f.run_id, f.at, f.fingerprint_id, f.class, f.category, f.repository_id,
        f.run_context, f.test_name
     FROM failures f
     WHERE f.at >= ?1 AND f.at < ?2
       AND (?3 IS NULL OR f.repository_id IN (SELECT id FROM repositories WHERE path = ?3))
       AND (?4 IS NULL OR f.run_context = ?4)
       AND (?5 IS NULL OR (SELECT r.trigger FROM runs r WHERE r.id = f.run_id) = ?5)
     ORDER BY f.at DESC, f.run_id DESC, f.id";

/// One failure with its run and fingerprint, by the failure's id.
const FAILURE_SQL: &str = "SELECT r.id, coalesce(r.queued_at, r.started_at, r.created_at) AS t, repo.forge, repo.path,
        r.context, r.url, f.class, f.category, f.evidence, f.test_name, fp.hash, fp.normalized, fp.first_seen
     FROM failures f
     CROSS JOIN runs r ON r.id = f.run_id
     CROSS JOIN repositories repo ON repo.id = r.repository_id
     LEFT JOIN fingerprints fp ON fp.id = f.fingerprint_id
     WHERE f.id = ?1";

/// A test's executions: the repository first, then its runs of the context by time.
fn test_history_sql() -> String {
    format!(
        "SELECT r.id, {RUN_AT} AS t, r.commit_sha, r.attempt, r.state, tr.outcome, tr.retries,
                tr.retry_reasons, tr.message, tr.duration_seconds
         FROM repositories repo
         CROSS JOIN runs r ON r.repository_id = repo.id
         CROSS JOIN test_results tr ON tr.run_id = r.id
             AND tr.id = (SELECT t.id FROM tests t WHERE t.repository_id = repo.id AND t.context = ?2 AND t.name = ?3)
         WHERE repo.path = ?1 AND r.context = ?2 AND {RUN_AT} >= ?4
         ORDER BY t, r.id"
    )
}

/// A bad event as its subject names it (`run:<id>`, `test:<run>:<name>`,
/// `change:<id>`), before its run or change is looked up: the event, and
/// the change's id when it is about one. The engine then fills in the
/// change's number, outcome and run (`change_number`, `change_outcome`,
/// `run_id`) or, for a run or a test, the run's context, state and commit.
/// Shared by both stores' `slo_bad_events`.
pub fn bad_event_of(
    subject: &str,
    at_ms: i64,
    forge: String,
    path: String,
) -> (BadEvent, Option<i64>) {
    let mut e = BadEvent {
        at: from_ms(at_ms),
        forge,
        repository: path,
        kind: String::new(),
        run_id: None,
        context: None,
        state: None,
        commit: None,
        test: None,
        change_number: None,
        change_outcome: None,
    };
    let mut change_id = None;
    let (kind, rest) = subject.split_once(':').unwrap_or((subject, ""));
    match kind {
        "change" => {
            e.kind = "change".into();
            change_id = rest.parse::<i64>().ok();
        }
        "test" => {
            e.kind = "test".into();
            if let Some((id, name)) = rest.split_once(':') {
                e.run_id = id.parse().ok();
                e.test = Some(name.to_string());
            }
        }
        _ => {
            e.kind = "run".into();
            e.run_id = rest.parse().ok();
        }
    }
    (e, change_id)
}

impl Store {
    /// Every repository, by path.
    pub fn repositories(&self) -> Result<Vec<RepositoryRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT forge, path FROM repositories ORDER BY path, forge")?;
        let rows = stmt.query_map([], |r| {
            Ok(RepositoryRow {
                forge: r.get(0)?,
                path: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every repository by its id.
    pub fn repositories_by_id(
        &self,
    ) -> Result<std::collections::HashMap<i64, RepositoryRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, forge, path FROM repositories")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                RepositoryRow {
                    forge: r.get(1)?,
                    path: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// SLO events since `since` per SLO and hour (oldest first), optionally of
    /// one repository: enough for SLIs, budgets and the recovery date.
    pub fn slo_hourly(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<Vec<SloBucket>, StoreError> {
        let map = |r: &rusqlite::Row<'_>| {
            Ok(SloBucket {
                slo: r.get(0)?,
                hour_ms: r.get(1)?,
                counts: EventCounts {
                    good: r.get::<_, i64>(2)? as u64,
                    total: r.get::<_, i64>(3)? as u64,
                },
            })
        };
        let since_hour = to_ms(since).div_euclid(3_600_000) * 3_600_000;
        let rows = match repository {
            None => self
                .conn
                .prepare_cached(
                    "SELECT slo, hour, good, total FROM slo_hourly
                     WHERE repository_id = 0 AND hour >= ?1 ORDER BY slo, hour",
                )?
                .query_map([since_hour], map)?
                .collect::<Result<Vec<_>, _>>()?,
            Some(path) => self
                .conn
                .prepare_cached(
                    "SELECT slo, hour, sum(good), sum(total) FROM slo_hourly
                     WHERE repository_id IN (SELECT id FROM repositories WHERE path = ?2) AND hour >= ?1
                     GROUP BY slo, hour ORDER BY slo, hour",
                )?
                .query_map(params![since_hour, path], map)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(rows)
    }

    /// Every failure of runs in `[since, until)` that match `filter`, newest
    /// first, as names only (one covering-index scan).
    pub fn failure_keys_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: &RunFilter,
    ) -> Result<Vec<FailureKey>, StoreError> {
        let mut stmt = self.conn.prepare_cached(FAILURE_KEYS_SQL)?;
        let rows = stmt.query_map(
            params![
                to_ms(since),
                to_ms(until),
                filter.repository,
                filter.context,
                filter.trigger
            ],
            |r| {
                Ok(FailureKey {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    at: from_ms(r.get(2)?),
                    fingerprint_id: r.get(3)?,
                    class: r.get(4)?,
                    category: r.get(5)?,
                    repository_id: r.get(6)?,
                    context: r.get(7)?,
                    test_name: r.get(8)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One failure with its evidence, run and fingerprint.
    pub fn failure_occurrence(&self, id: i64) -> Result<Option<FailureOccurrence>, StoreError> {
        let mut stmt = self.conn.prepare_cached(FAILURE_SQL)?;
        Ok(stmt
            .query_row([id], |r| {
                Ok(FailureOccurrence {
                    run_id: r.get(0)?,
                    at: from_ms(r.get(1)?),
                    forge: r.get(2)?,
                    repository: r.get(3)?,
                    context: r.get(4)?,
                    url: r.get(5)?,
                    class: r.get(6)?,
                    category: r.get(7)?,
                    evidence: r.get(8)?,
                    test_name: r.get(9)?,
                    fingerprint: r.get(10)?,
                    normalized: r.get(11)?,
                    first_seen: r.get::<_, Option<i64>>(12)?.map(from_ms),
                })
            })
            .optional()?)
    }

    /// A test's executions in one repository and context since `since`, oldest first.
    pub fn test_history(
        &self,
        repository: &str,
        context: &str,
        test: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<TestExecutionRow>, StoreError> {
        let sql = test_history_sql();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![repository, context, test, to_ms(since)], |r| {
            Ok(TestExecutionRow {
                run_id: r.get(0)?,
                at: from_ms(r.get(1)?),
                commit: r.get(2)?,
                attempt: r.get(3)?,
                run_state: r.get(4)?,
                outcome: r
                    .get::<_, String>(5)?
                    .parse()
                    .unwrap_or(crate::model::TestOutcome::Errored),
                retries: r.get(6)?,
                retry_reasons: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
                message: r.get(8)?,
                duration_seconds: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The other attempts of a run and the last green run of its context
    /// (indexes `runs_commit` and `runs_repo_context_at`).
    pub fn run_related(&self, run_id: i64) -> Result<RunRelated, StoreError> {
        let attempts = self
            .conn
            .prepare_cached(
                "SELECT o.id, o.attempt, o.state, o.trigger FROM runs r
                 JOIN runs o ON o.repository_id = r.repository_id AND o.commit_sha = r.commit_sha
                  AND o.context = r.context AND o.id != r.id
                 WHERE r.id = ?1 ORDER BY o.attempt, o.id",
            )?
            .query_map([run_id], |r| {
                Ok(AttemptRef {
                    run_id: r.get(0)?,
                    attempt: r.get(1)?,
                    state: r.get(2)?,
                    trigger: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let last_green_run_id = self
            .conn
            .prepare_cached(
                "SELECT p.id FROM runs r JOIN runs p
                   ON p.repository_id = r.repository_id AND p.context = r.context
                 WHERE r.id = ?1 AND p.id != r.id AND p.state = 'success'
                   AND coalesce(p.queued_at, p.started_at, p.created_at) < coalesce(r.queued_at, r.started_at, r.created_at)
                 ORDER BY coalesce(p.queued_at, p.started_at, p.created_at) DESC, p.id DESC LIMIT 1",
            )?
            .query_row([run_id], |r| r.get(0))
            .optional()?;
        Ok(RunRelated {
            attempts,
            last_green_run_id,
            since_green: self.dependencies_since_green(run_id)?,
        })
    }

    /// A fingerprint's id by its hash.
    pub fn fingerprint_id(&self, hash: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM fingerprints WHERE hash = ?1")?
            .query_row([hash], |r| r.get(0))
            .optional()?)
    }

    /// When each of these fingerprints was first seen.
    pub fn fingerprints_first_seen(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, DateTime<Utc>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT first_seen FROM fingerprints WHERE id = ?1")?;
        let mut out = std::collections::HashMap::new();
        for id in ids {
            if let Some(t) = stmt
                .query_row([id], |r| r.get::<_, Option<i64>>(0))
                .optional()?
                .flatten()
            {
                out.insert(*id, from_ms(t));
            }
        }
        Ok(out)
    }

    /// One SLO's good and total events since `since` per repository.
    pub fn slo_by_repository(
        &self,
        slo: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SloRepositoryCounts>, StoreError> {
        let since_hour = to_ms(since).div_euclid(3_600_000) * 3_600_000;
        let mut stmt = self.conn.prepare_cached(SLO_BY_REPOSITORY_SQL)?;
        let rows = stmt.query_map(params![slo, since_hour], |r| {
            Ok(SloRepositoryCounts {
                forge: r.get(0)?,
                repository: r.get(1)?,
                counts: EventCounts {
                    good: r.get::<_, i64>(2)?.max(0) as u64,
                    total: r.get::<_, i64>(3)?.max(0) as u64,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Bad events of one SLO since `since`, newest first, `limit` from
    /// `offset`, optionally of one repository, each with its run or change.
    pub fn slo_bad_events(
        &self,
        slo: &str,
        since: DateTime<Utc>,
        repository: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<BadEvent>, StoreError> {
        let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
        // test_success counts per run in `test_events` (migration 10): its
        // bad events are the failed results of those runs.
        let raw: Vec<(String, i64, String, String)> = if slo == "test_success" {
            self.conn
                .prepare_cached(BAD_TEST_EVENTS_SQL)?
                .query_map(
                    params![to_ms(since), repository, limit as i64, offset as i64],
                    row,
                )?
                .collect::<Result<_, _>>()?
        } else {
            let run_columns = slo
                .parse::<crate::slo::SloId>()
                .ok()
                .and_then(crate::counting::run_event_columns);
            let sql = match (run_columns, repository.is_some()) {
                (Some((at, good)), true) => repository_bad_run_events_sql(at, good),
                (Some((at, good)), false) => bad_run_events_sql(at, good),
                (None, true) => REPOSITORY_BAD_EVENTS_SQL.to_string(),
                (None, false) => BAD_EVENTS_SQL.to_string(),
            };
            self.conn
                .prepare_cached(&sql)?
                .query_map(
                    params![slo, to_ms(since), repository, limit as i64, offset as i64],
                    row,
                )?
                .collect::<Result<_, _>>()?
        };
        let mut run = self
            .conn
            .prepare_cached("SELECT context, state, commit_sha FROM runs WHERE id = ?1")?;
        let mut change = self.conn.prepare_cached(
            "SELECT c.number, c.outcome,
                    coalesce((SELECT max(r.id) FROM runs r WHERE r.change_id = c.id AND r.state != 'success'),
                             (SELECT max(r.id) FROM runs r WHERE r.change_id = c.id))
             FROM changes c WHERE c.id = ?1",
        )?;
        let mut out = Vec::with_capacity(raw.len());
        for (subject, at, forge, path) in raw {
            let (mut e, change_id) = bad_event_of(&subject, at, forge, path);
            if let Some(id) = change_id {
                if let Some((number, outcome, run_id)) = change
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?
                {
                    e.change_number = Some(number);
                    e.change_outcome = outcome;
                    e.run_id = run_id;
                }
            } else if e.kind != "change"
                && let Some(id) = e.run_id
                && let Some((context, state, commit)) = run
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?
            {
                e.context = Some(context);
                e.state = Some(state);
                e.commit = Some(commit);
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Every scheduled run queued in `[since, until)` of the repository and
    /// context of `filter` (when given), by repository then time, each with
    /// its first failure evidence: the nightly grids summarise them per day.
    pub fn nightly_runs(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: &RunFilter,
    ) -> Result<Vec<NightlyRun>, StoreError> {
        let mut stmt = self.conn.prepare_cached(NIGHTLY_RUNS_SQL)?;
        let rows = stmt.query_map(
            params![
                to_ms(since),
                to_ms(until),
                filter.repository,
                filter.context
            ],
            |r| {
                let opt = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
                    Ok(r.get::<_, Option<i64>>(i)?.map(from_ms))
                };
                let (d, _) = crate::model::durations(
                    opt(6)?,
                    opt(7)?,
                    opt(8)?,
                    crate::model::DurationLimits::default(),
                );
                let class: Option<String> = r.get(11)?;
                Ok(NightlyRun {
                    run_id: r.get(0)?,
                    forge: r.get(1)?,
                    repository: r.get(2)?,
                    context: r.get(3)?,
                    commit: r.get(4)?,
                    state: r.get(5)?,
                    duration_seconds: d.run_seconds,
                    url: r.get(9)?,
                    day: from_ms(r.get(10)?).date_naive(),
                    failure: match class {
                        Some(class) => Some(NightlyFailure {
                            class,
                            category: r.get(12)?,
                            evidence: r.get(13)?,
                        }),
                        None => None,
                    },
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What changed in a run's dependencies since the last green run (success)
    /// of the same repository and context that recorded its dependencies.
    pub fn dependencies_since_green(&self, run_id: i64) -> Result<SinceGreen, StoreError> {
        let sql = "SELECT p.id FROM runs r JOIN runs p
                 ON p.repository_id = r.repository_id AND p.context = r.context
                WHERE r.id = ?1 AND p.id != r.id AND p.state = 'success'
                  AND coalesce(p.queued_at, p.started_at, p.created_at) < coalesce(r.queued_at, r.started_at, r.created_at)
                  AND EXISTS (SELECT 1 FROM dependency_snapshots d WHERE d.run_id = p.id)
                ORDER BY coalesce(p.queued_at, p.started_at, p.created_at) DESC, p.id DESC LIMIT 1";
        let green: Option<i64> = self
            .conn
            .prepare_cached(sql)?
            .query_row([run_id], |r| r.get(0))
            .optional()?;
        let Some(green) = green else {
            return Ok(SinceGreen::default());
        };
        let now = dependencies_of(&self.conn, run_id)?;
        let then = dependencies_of(&self.conn, green)?;
        Ok(SinceGreen {
            last_green_run_id: Some(green),
            changes: if now.is_empty() {
                Vec::new()
            } else {
                crate::deps::diff(&then, &now)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use crate::ingest::{RunRequest, TestRequest};
    use crate::model::{Forge, RunState, TestOutcome, Trigger};
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        "2026-11-01T00:00:00Z".parse().unwrap()
    }

    fn store() -> Store {
        Store::open_in_memory().unwrap()
    }

    fn policy() -> Policy {
        Policy::from_config(&crate::config::Config::default())
    }

    #[allow(clippy::too_many_arguments)]
    fn ingest(
        s: &mut Store,
        repo: &str,
        context: &str,
        commit: &str,
        trigger: Trigger,
        at: DateTime<Utc>,
        state: RunState,
        log: Option<&str>,
        tests: Vec<TestRequest>,
    ) -> i64 {
        let request = RunRequest {
            repository: repo.into(),
            forge: Some(Forge::Github),
            context: context.into(),
            commit: commit.into(),
            trigger: Some(trigger),
            state: Some(state),
            queued_at: Some(at),
            started_at: Some(at + Duration::seconds(30)),
            finished_at: Some(at + Duration::minutes(10)),
            log: log.map(str::to_string),
            tests,
            ..RunRequest::default()
        };
        let prepared = request
            .prepare(
                "test",
                Vec::new(),
                &crate::classify::Classifier::with_defaults(),
                &crate::deps::Extractor::with_defaults(),
            )
            .unwrap();
        s.ingest_run(&prepared.run, &policy(), at + Duration::hours(1))
            .unwrap()
            .id
    }

    const OOM: &str = "boot\nOut of memory: Killed process 42 (qemu)\nKilled";

    #[test]
    fn failure_keys_filter_by_window_repository_context_and_trigger() {
        let mut s = store();
        let a = ingest(
            &mut s,
            "o/a",
            "ci",
            "c1",
            Trigger::PullRequest,
            t0(),
            RunState::Failure,
            Some(OOM),
            vec![],
        );
        let b = ingest(
            &mut s,
            "o/b",
            "nightly",
            "c2",
            Trigger::Schedule,
            t0() + Duration::hours(2),
            RunState::Failure,
            Some(OOM),
            vec![],
        );
        ingest(
            &mut s,
            "o/a",
            "ci",
            "c3",
            Trigger::PullRequest,
            t0() - Duration::days(3),
            RunState::Failure,
            Some(OOM),
            vec![],
        );
        let keys = s
            .failure_keys_between(t0(), t0() + Duration::days(1), &RunFilter::default())
            .unwrap();
        assert_eq!(
            keys.iter().map(|f| f.run_id).collect::<Vec<_>>(),
            vec![b, a]
        );
        // Each key carries its run's time, repository and context.
        let repos = s.repositories_by_id().unwrap();
        assert_eq!(keys[0].at, t0() + Duration::hours(2));
        assert_eq!(repos[&keys[0].repository_id].path, "o/b");
        assert_eq!(keys[0].context, "nightly");
        assert_eq!(repos[&keys[1].repository_id].path, "o/a");
        assert_eq!(keys[0].fingerprint_id, keys[1].fingerprint_id);
        let all: Vec<FailureOccurrence> = keys
            .iter()
            .map(|k| s.failure_occurrence(k.id).unwrap().unwrap())
            .collect();
        assert_eq!(all.iter().map(|f| f.run_id).collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(all[0].fingerprint, all[1].fingerprint);
        assert!(all[0].fingerprint.is_some());
        assert_eq!(all[0].repository, "o/b");
        assert!(all[0].evidence.contains("Out of memory"), "{:?}", all[0]);
        // First seen when the oldest run finished.
        assert_eq!(
            all[0].first_seen,
            Some(t0() - Duration::days(3) + Duration::minutes(10))
        );
        assert_eq!(s.failure_occurrence(i64::MAX).unwrap(), None);
        let by_repo = RunFilter {
            repository: Some("o/a".into()),
            ..RunFilter::default()
        };
        let got = s
            .failure_keys_between(t0(), t0() + Duration::days(1), &by_repo)
            .unwrap();
        assert_eq!(got.iter().map(|f| f.run_id).collect::<Vec<_>>(), vec![a]);
        let by_trigger = RunFilter {
            trigger: Some("schedule".into()),
            context: Some("nightly".into()),
            ..RunFilter::default()
        };
        let got = s
            .failure_keys_between(t0(), t0() + Duration::days(1), &by_trigger)
            .unwrap();
        assert_eq!(got.iter().map(|f| f.run_id).collect::<Vec<_>>(), vec![b]);
    }

    #[test]
    fn test_history_is_chronological_per_repository_context_and_name() {
        let mut s = store();
        let test = |outcome, retries| TestRequest {
            name: "T.a".into(),
            outcome,
            duration_seconds: Some(1.0),
            retries,
            message: None,
        };
        let r2 = ingest(
            &mut s,
            "o/a",
            "ci",
            "c1",
            Trigger::PullRequest,
            t0() + Duration::hours(1),
            RunState::Failure,
            None,
            vec![test(TestOutcome::Failed, 0)],
        );
        let r1 = ingest(
            &mut s,
            "o/a",
            "ci",
            "c0",
            Trigger::PullRequest,
            t0(),
            RunState::Success,
            None,
            vec![test(TestOutcome::Passed, 1)],
        );
        ingest(
            &mut s,
            "o/a",
            "other",
            "c1",
            Trigger::PullRequest,
            t0(),
            RunState::Success,
            None,
            vec![test(TestOutcome::Passed, 0)],
        );
        let h = s
            .test_history("o/a", "ci", "T.a", t0() - Duration::days(1))
            .unwrap();
        assert_eq!(h.iter().map(|e| e.run_id).collect::<Vec<_>>(), vec![r1, r2]);
        assert_eq!(h[0].retries, 1);
        assert_eq!(h[1].outcome, TestOutcome::Failed);
        assert!(s.test_history("o/a", "ci", "T.b", t0()).unwrap().is_empty());
    }

    #[test]
    fn slo_hourly_groups_events_per_slo_and_hour_and_filters_a_repository() {
        let mut s = store();
        ingest(
            &mut s,
            "o/a",
            "ci",
            "c1",
            Trigger::Schedule,
            t0(),
            RunState::Success,
            None,
            vec![],
        );
        ingest(
            &mut s,
            "o/b",
            "ci",
            "c2",
            Trigger::Schedule,
            t0() + Duration::minutes(5),
            RunState::Error,
            None,
            vec![],
        );
        let all = s.slo_hourly(t0() - Duration::days(1), None).unwrap();
        let completed: Vec<_> = all.iter().filter(|b| b.slo == "runs_completed").collect();
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].counts, EventCounts { good: 1, total: 2 });
        let one = s.slo_hourly(t0() - Duration::days(1), Some("o/b")).unwrap();
        let completed: Vec<_> = one.iter().filter(|b| b.slo == "runs_completed").collect();
        assert_eq!(completed[0].counts, EventCounts { good: 0, total: 1 });
    }

    #[test]
    fn slo_counts_in_counts_from_the_first_millisecond_of_all_or_one_repository() {
        let mut s = store();
        // runs_completed events at the runs' ends: o/a at t0 + 10 min, o/b at t0 + 15 min.
        for (repo, commit, at, state) in [
            ("o/a", "c1", t0(), RunState::Success),
            ("o/b", "c2", t0() + Duration::minutes(5), RunState::Error),
        ] {
            ingest(
                &mut s,
                repo,
                "ci",
                commit,
                Trigger::Schedule,
                at,
                state,
                None,
                vec![],
            );
        }
        let completed = |since: DateTime<Utc>, repo: Option<&str>| {
            s.slo_counts_in(since, repo)
                .unwrap()
                .get("runs_completed")
                .copied()
                .unwrap_or_default()
        };
        let c = |good, total| EventCounts { good, total };
        // Whole hours (the rollup), one repository or all.
        let day = t0() - Duration::days(1);
        assert_eq!(completed(day, None), c(1, 2));
        assert_eq!(completed(day, Some("o/a")), c(1, 1));
        assert_eq!(completed(day, Some("o/b")), c(0, 1));
        assert_eq!(completed(day, Some("o/none")), c(0, 0));
        // A window starting within an hour counts from its first millisecond.
        let ten = t0() + Duration::minutes(10);
        assert_eq!(completed(ten, None), c(1, 2));
        assert_eq!(completed(ten + Duration::milliseconds(1), None), c(0, 1));
        assert_eq!(
            completed(ten + Duration::milliseconds(1), Some("o/a")),
            c(0, 0)
        );
        assert_eq!(completed(ten, Some("o/a")), c(1, 1));
        assert_eq!(
            s.slo_counts_since(day).unwrap(),
            s.slo_counts_in(day, None).unwrap()
        );
    }

    #[test]
    fn the_hourly_rollup_follows_inserts_and_prunes() {
        let mut s = store();
        for i in 0..6 {
            let state = if i % 3 == 0 {
                RunState::Error
            } else {
                RunState::Success
            };
            let repo = if i % 2 == 0 { "o/a" } else { "o/b" };
            let at = t0() + Duration::hours(i * 5);
            ingest(
                &mut s,
                repo,
                "n",
                &format!("c{i}"),
                Trigger::Schedule,
                at,
                state,
                None,
                vec![],
            );
        }
        let sum = |s: &Store, repo: Option<&str>| {
            let mut m: std::collections::BTreeMap<String, EventCounts> = Default::default();
            for b in s.slo_hourly(t0() - Duration::days(1), repo).unwrap() {
                let e = m.entry(b.slo).or_default();
                e.good += b.counts.good;
                e.total += b.counts.total;
            }
            m
        };
        let raw: std::collections::BTreeMap<String, EventCounts> = s
            .slo_counts_since(t0() - Duration::days(1))
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(sum(&s, None), raw);
        assert_eq!(
            sum(&s, Some("o/a"))["runs_completed"],
            EventCounts { good: 2, total: 3 }
        );
        s.prune(t0() - Duration::days(30), t0() + Duration::hours(12))
            .unwrap();
        let raw: std::collections::BTreeMap<String, EventCounts> = s
            .slo_counts_since(t0() - Duration::days(1))
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(sum(&s, None), raw);
        assert_eq!(raw["runs_completed"].total, 3);
    }

    #[test]
    fn dependencies_since_green_compares_with_the_last_successful_run() {
        let mut s = store();
        let log = |v: &str| format!("Successfully installed urllib3-{v} requests-2.32.3");
        let green = ingest(
            &mut s,
            "o/a",
            "n",
            "c1",
            Trigger::Schedule,
            t0(),
            RunState::Success,
            Some(&log("2.2.2")),
            vec![],
        );
        ingest(
            &mut s,
            "o/a",
            "n",
            "c2",
            Trigger::Schedule,
            t0() + Duration::days(1),
            RunState::Failure,
            Some(&log("2.2.3")),
            vec![],
        );
        let red = ingest(
            &mut s,
            "o/a",
            "n",
            "c3",
            Trigger::Schedule,
            t0() + Duration::days(2),
            RunState::Failure,
            Some(&log("2.2.4")),
            vec![],
        );
        let since = s.dependencies_since_green(red).unwrap();
        assert_eq!(since.last_green_run_id, Some(green));
        assert_eq!(since.changes.len(), 1);
        assert_eq!(since.changes[0].package, "urllib3");
        assert_eq!(since.changes[0].before.as_deref(), Some("2.2.2"));
        assert_eq!(since.changes[0].after.as_deref(), Some("2.2.4"));
        assert_eq!(
            s.dependencies_since_green(green).unwrap(),
            SinceGreen::default()
        );
    }

    #[test]
    fn bad_events_name_their_run_or_test_newest_first_and_counts_split_by_repository() {
        let mut s = store();
        let failed_test = TestRequest {
            name: "T.a".into(),
            outcome: TestOutcome::Failed,
            duration_seconds: Some(1.0),
            retries: 0,
            message: None,
        };
        let a = ingest(
            &mut s,
            "o/a",
            "ci",
            "c1",
            Trigger::Schedule,
            t0(),
            RunState::Error,
            None,
            vec![],
        );
        let b = ingest(
            &mut s,
            "o/b",
            "nightly",
            "c2",
            Trigger::Schedule,
            t0() + Duration::hours(2),
            RunState::Failure,
            None,
            vec![failed_test],
        );
        ingest(
            &mut s,
            "o/b",
            "nightly",
            "c3",
            Trigger::Schedule,
            t0() + Duration::hours(3),
            RunState::Success,
            None,
            vec![],
        );
        let since = t0() - Duration::days(1);
        let lost = s
            .slo_bad_events("runs_completed", since, None, 0, 10)
            .unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(
            (
                lost[0].kind.as_str(),
                lost[0].run_id,
                lost[0].repository.as_str()
            ),
            ("run", Some(a), "o/a")
        );
        assert_eq!(lost[0].state.as_deref(), Some("error"));
        assert_eq!(lost[0].context.as_deref(), Some("ci"));
        let tests = s
            .slo_bad_events("test_success", since, None, 0, 10)
            .unwrap();
        assert_eq!(tests.len(), 1);
        assert_eq!(tests[0].kind, "test");
        assert_eq!(
            (tests[0].run_id, tests[0].test.as_deref()),
            (Some(b), Some("T.a"))
        );
        assert!(
            s.slo_bad_events("runs_completed", since, Some("o/b"), 0, 10)
                .unwrap()
                .is_empty()
        );
        let only_a = s
            .slo_bad_events("runs_completed", since, Some("o/a"), 0, 10)
            .unwrap();
        assert_eq!(
            only_a.iter().map(|e| e.run_id).collect::<Vec<_>>(),
            [Some(a)]
        );
        // A repository's events over several hours, a page at a time.
        let mut ids = Vec::new();
        for h in 0..4 {
            ids.push(ingest(
                &mut s,
                "o/c",
                "nightly",
                &format!("d{h}"),
                Trigger::Schedule,
                t0() + Duration::hours(10 + 3 * h),
                RunState::Error,
                None,
                vec![],
            ));
        }
        let page = |offset| {
            s.slo_bad_events("runs_completed", since, Some("o/c"), offset, 2)
                .unwrap()
                .iter()
                .map(|e| e.run_id.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(page(0), [ids[3], ids[2]]);
        assert_eq!(page(2), [ids[1], ids[0]]);
        assert!(page(4).is_empty());
        assert!(
            s.slo_bad_events("runs_completed", since, None, 5, 10)
                .unwrap()
                .is_empty(),
            "offset"
        );
        let mut per_repo = s.slo_by_repository("runs_completed", since).unwrap();
        per_repo.sort_by(|x, y| x.repository.cmp(&y.repository));
        assert_eq!(
            per_repo
                .iter()
                .map(|r| (r.repository.as_str(), r.counts))
                .collect::<Vec<_>>(),
            [
                ("o/a", EventCounts { good: 0, total: 1 }),
                ("o/b", EventCounts { good: 2, total: 2 }),
                ("o/c", EventCounts { good: 0, total: 4 })
            ]
        );
    }

    #[test]
    fn a_run_knows_its_other_attempts_and_the_last_green_run_of_its_context() {
        let mut s = store();
        let green = ingest(
            &mut s,
            "o/a",
            "ci",
            "c0",
            Trigger::Push,
            t0(),
            RunState::Success,
            None,
            vec![],
        );
        ingest(
            &mut s,
            "o/a",
            "other",
            "c0",
            Trigger::Push,
            t0() + Duration::hours(1),
            RunState::Success,
            None,
            vec![],
        );
        let mut attempt = |n: u32, state: RunState, hours: i64| {
            let at = t0() + Duration::hours(hours);
            let request = RunRequest {
                repository: "o/a".into(),
                forge: Some(Forge::Github),
                context: "ci".into(),
                commit: "c1".into(),
                attempt: n,
                trigger: Some(Trigger::Push),
                state: Some(state),
                queued_at: Some(at),
                started_at: Some(at),
                finished_at: Some(at + Duration::minutes(5)),
                ..RunRequest::default()
            };
            let prepared = request
                .prepare(
                    "test",
                    Vec::new(),
                    &crate::classify::Classifier::with_defaults(),
                    &crate::deps::Extractor::with_defaults(),
                )
                .unwrap();
            s.ingest_run(&prepared.run, &policy(), at + Duration::hours(1))
                .unwrap()
                .id
        };
        let first = attempt(1, RunState::Failure, 2);
        let second = attempt(2, RunState::Success, 3);
        let r = s.run_related(first).unwrap();
        assert_eq!(
            r.attempts
                .iter()
                .map(|a| (a.run_id, a.attempt))
                .collect::<Vec<_>>(),
            [(second, 2)]
        );
        assert_eq!(
            r.last_green_run_id,
            Some(green),
            "not the later retry, not another context"
        );
        let r = s.run_related(second).unwrap();
        assert_eq!(r.attempts[0].run_id, first);
        assert_eq!(r.attempts[0].state, "failure");
        assert_eq!(s.run_related(green).unwrap().last_green_run_id, None);
    }

    #[test]
    fn ui_queries_use_indexes() {
        let s = store();
        let plan = |sql: &str| -> String {
            let mut stmt = s
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(r) = rows.next().unwrap() {
                out.push(r.get::<_, String>(3).unwrap());
            }
            out.join("\n")
        };
        let p = plan(FAILURE_KEYS_SQL);
        assert!(p.contains("COVERING INDEX failures_window"), "{p}");
        let p = plan(FAILURE_SQL);
        assert!(!p.contains("SCAN"), "{p}");
        let p = plan(BAD_EVENTS_SQL);
        assert!(p.contains("INDEX slo_events_at"), "{p}");
        assert!(!p.contains("TEMP B-TREE FOR ORDER BY"), "{p}");
        // Sorted after the index range: one repository's bad events of the period.
        let p = plan(REPOSITORY_BAD_EVENTS_SQL);
        assert!(
            p.contains("COVERING INDEX slo_events_repository (slo=? AND repository_id=? AND at>?)"),
            "{p}"
        );
        // A run's events (migration 13): its time index backwards, one
        // repository's from the partial index of bad events.
        let p = plan(&bad_run_events_sql("queue_at", "queue_good"));
        assert!(p.contains("INDEX run_events_queue_at"), "{p}");
        assert!(!p.contains("TEMP B-TREE FOR ORDER BY"), "{p}");
        let p = plan(&repository_bad_run_events_sql(
            "run_time_at",
            "run_time_good",
        ));
        assert!(
            p.contains("INDEX run_events_run_time_bad (repository_id=? AND run_time_at>?)"),
            "{p}"
        );
        let p = plan(SLO_BY_REPOSITORY_SQL);
        assert!(p.contains("PRIMARY KEY"), "{p}");
        let p = plan(
            "SELECT p.id FROM runs r JOIN runs p
               ON p.repository_id = r.repository_id AND p.context = r.context
             WHERE r.id = 1 AND p.id != r.id AND p.state = 'success'
               AND coalesce(p.queued_at, p.started_at, p.created_at) < coalesce(r.queued_at, r.started_at, r.created_at)
             ORDER BY coalesce(p.queued_at, p.started_at, p.created_at) DESC, p.id DESC LIMIT 1",
        );
        assert!(p.contains("runs_repo_context_at"), "{p}");
        let p = plan(NIGHTLY_RUNS_SQL);
        assert!(p.contains("runs_trigger_at"), "{p}");
        assert!(p.contains("failures_run"), "{p}");
        let p = plan(&test_history_sql());
        assert!(p.contains("runs_repo_context_at"), "{p}");
        let p = plan(
            "SELECT slo, hour, good, total FROM slo_hourly WHERE repository_id = 0 AND hour >= 1",
        );
        assert!(p.contains("PRIMARY KEY"), "{p}");
        let p = plan(
            "SELECT r.id FROM runs r WHERE r.trigger = 'schedule' AND coalesce(r.queued_at, r.started_at, r.created_at) >= 1
               AND coalesce(r.queued_at, r.started_at, r.created_at) < 2",
        );
        assert!(p.contains("runs_trigger_at"), "{p}");
    }
}
