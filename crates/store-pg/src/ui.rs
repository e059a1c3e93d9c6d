//! The reads of the drill-down UI and its JSON API on PostgreSQL: the SQLite
//! store's `ui.rs` (repositories, SLO events per hour and per repository,
//! bad events, failures, a test's executions, a run's other attempts and
//! last green run, the nightly grid, dependencies since green), with the
//! same answers. Text is ordered byte-wise (`COLLATE "C"`, SQLite's
//! `BINARY`) and every order is total (ties by id), so both engines list
//! the same rows in the same order.

use crate::{PgStore, PgStoreError};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{DurationLimits, TestOutcome, durations};
use ci_slo_core::slo::{EventCounts, SloId};
use ci_slo_store::ui::{
    AttemptRef, BadEvent, FailureKey, FailureOccurrence, NightlyFailure, NightlyRun, RepositoryRow,
    RunFilter, RunRelated, SinceGreen, SloBucket, SloRepositoryCounts, TestExecutionRow,
    bad_event_of,
};
use ci_slo_store::{from_ms, run_event_columns, to_ms};
use postgres::Row;
use std::collections::HashMap;

const HOUR_MS: i64 = 3_600_000;

/// A window's bad events of one SLO of `slo_events`, newest first ($1 slo,
/// $2 since, $3 limit, $4 offset).
const BAD_EVENTS_SQL: &str = r#"SELECT e.subject, e.at, repo.forge, repo.path
     FROM slo_events e JOIN repositories repo ON repo.id = e.repository_id
     WHERE e.at >= $2 AND e.slo = $1 AND e.good = 0
     ORDER BY e.at DESC, e.subject COLLATE "C" DESC LIMIT $3 OFFSET $4"#;

/// One repository's ($3) bad events of one SLO, newest first ($1 slo, $2
/// since, $4 limit, $5 offset).
const REPOSITORY_BAD_EVENTS_SQL: &str = r#"SELECT e.subject, e.at, repo.forge, repo.path
     FROM repositories repo
     JOIN slo_events e ON e.slo = $1 AND e.repository_id = repo.id AND e.good = 0 AND e.at >= $2
     WHERE repo.path = $3
     ORDER BY e.at DESC, e.subject COLLATE "C" DESC LIMIT $4 OFFSET $5"#;

/// The failed test results of the runs counted by test_success since $1,
/// optionally of one repository ($2), newest first ($3 limit, $4 offset).
/// A run's failed tests come from `run_failed_tests` (schema migration 4),
/// run by run in the order of the page: a page reads the runs it shows, not
/// every result of the period.
const BAD_TEST_EVENTS_SQL: &str = r#"SELECT 'test:' || e.run_id || ':' || t.name, e.at, repo.forge, repo.path
     FROM test_events e
     JOIN repositories repo ON repo.id = e.repository_id
     CROSS JOIN LATERAL run_failed_tests(e.run_id) AS r(test_id)
     JOIN tests t ON t.id = r.test_id
     WHERE e.at >= $1 AND e.good < e.total
       AND ($2::text IS NULL OR repo.path = $2)
     ORDER BY e.at DESC, e.run_id DESC, t.name COLLATE "C" DESC LIMIT $3 OFFSET $4"#;

/// A window's bad events of one of a run's SLOs (`run_events` columns `at`
/// and `good`), newest first ($1 since, $2 limit, $3 offset).
fn bad_run_events_sql(at: &str, good: &str) -> String {
    format!(
        r#"SELECT 'run:' || e.run_id, e.{at}, repo.forge, repo.path
         FROM run_events e JOIN repositories repo ON repo.id = e.repository_id
         WHERE e.{at} >= $1 AND e.{at} IS NOT NULL AND e.{good} = 0
         ORDER BY e.{at} DESC, ('run:' || e.run_id) COLLATE "C" DESC LIMIT $2 OFFSET $3"#
    )
}

/// One repository's ($2) bad events of one of a run's SLOs, newest first
/// ($1 since, $3 limit, $4 offset).
fn repository_bad_run_events_sql(at: &str, good: &str) -> String {
    format!(
        r#"SELECT 'run:' || e.run_id, e.{at}, repo.forge, repo.path
         FROM repositories repo
         JOIN run_events e ON e.repository_id = repo.id AND e.{good} = 0 AND e.{at} >= $1
         WHERE repo.path = $2
         ORDER BY e.{at} DESC, ('run:' || e.run_id) COLLATE "C" DESC LIMIT $3 OFFSET $4"#
    )
}

/// Every scheduled run of a window, its first failure; repository and
/// context filter in the query.
const NIGHTLY_RUNS_SQL: &str = r#"SELECT r.id, repo.forge, repo.path, r.context, r.commit_sha, r.state, r.queued_at,
        r.started_at, r.finished_at, r.url, coalesce(r.queued_at, r.started_at, r.created_at) AS t,
        f.class, f.category, f.evidence
     FROM runs r
     JOIN repositories repo ON repo.id = r.repository_id
     LEFT JOIN failures f ON f.id = (SELECT min(x.id) FROM failures x WHERE x.run_id = r.id)
     WHERE r.trigger = 'schedule' AND coalesce(r.queued_at, r.started_at, r.created_at) >= $1
       AND coalesce(r.queued_at, r.started_at, r.created_at) < $2
       AND ($3::text IS NULL OR repo.path = $3)
       AND ($4::text IS NULL OR r.context = $4)
     ORDER BY repo.path COLLATE "C", repo.forge COLLATE "C", t, r.id"#;

/// The failures of a window, for aggregation (index `failures_window`).
const FAILURE_KEYS_SQL: &str =
    "SELECT f.id, f.run_id, f.at, f.fingerprint_id, f.class, f.category, f.repository_id,
        f.run_context, f.test_name
     FROM failures f
     WHERE f.at >= $1 AND f.at < $2
       AND ($3::text IS NULL OR f.repository_id IN (SELECT id FROM repositories WHERE path = $3))
       AND ($4::text IS NULL OR f.run_context = $4)
       AND ($5::text IS NULL OR (SELECT r.trigger FROM runs r WHERE r.id = f.run_id) = $5)
     ORDER BY f.at DESC, f.run_id DESC, f.id";

/// One failure with its run and fingerprint, by the failure's id.
const FAILURE_SQL: &str = "SELECT r.id, coalesce(r.queued_at, r.started_at, r.created_at) AS t, repo.forge,
        repo.path, r.context, r.url, f.class, f.category, f.evidence, f.test_name, fp.hash, fp.normalized,
        fp.first_seen
     FROM failures f
     JOIN runs r ON r.id = f.run_id
     JOIN repositories repo ON repo.id = r.repository_id
     LEFT JOIN fingerprints fp ON fp.id = f.fingerprint_id
     WHERE f.id = $1";

/// A test's executions: its runs of the context by time.
const TEST_HISTORY_SQL: &str = "SELECT r.id, coalesce(r.queued_at, r.started_at, r.created_at) AS t, r.commit_sha,
        r.attempt, r.state, tr.outcome, tr.retries, tr.retry_reasons, tr.message, tr.duration_seconds
     FROM repositories repo
     JOIN runs r ON r.repository_id = repo.id
     JOIN test_results tr ON tr.run_id = r.id
         AND tr.id = (SELECT t.id FROM tests t WHERE t.repository_id = repo.id AND t.context = $2 AND t.name = $3)
     WHERE repo.path = $1 AND r.context = $2 AND coalesce(r.queued_at, r.started_at, r.created_at) >= $4
     ORDER BY t, r.id";

/// The last successful run before run $1 of its repository and context.
const LAST_GREEN_SQL: &str = "SELECT p.id FROM runs r JOIN runs p
       ON p.repository_id = r.repository_id AND p.context = r.context
     WHERE r.id = $1 AND p.id != r.id AND p.state = 'success'
       AND coalesce(p.queued_at, p.started_at, p.created_at) < coalesce(r.queued_at, r.started_at, r.created_at)
     ORDER BY coalesce(p.queued_at, p.started_at, p.created_at) DESC, p.id DESC LIMIT 1";

/// [`LAST_GREEN_SQL`] among the runs that recorded their dependencies.
const LAST_GREEN_WITH_DEPENDENCIES_SQL: &str = "SELECT p.id FROM runs r JOIN runs p
       ON p.repository_id = r.repository_id AND p.context = r.context
     WHERE r.id = $1 AND p.id != r.id AND p.state = 'success'
       AND coalesce(p.queued_at, p.started_at, p.created_at) < coalesce(r.queued_at, r.started_at, r.created_at)
       AND EXISTS (SELECT 1 FROM dependency_snapshots d WHERE d.run_id = p.id)
     ORDER BY coalesce(p.queued_at, p.started_at, p.created_at) DESC, p.id DESC LIMIT 1";

fn ms(r: &Row, i: usize) -> Option<DateTime<Utc>> {
    r.get::<_, Option<i64>>(i).map(from_ms)
}

/// A count read from PostgreSQL (BIGINT), as SQLite's `u32` columns.
fn count_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// An hour's start at or before `since`, Unix ms.
fn hour_of(since: DateTime<Utc>) -> i64 {
    to_ms(since).div_euclid(HOUR_MS) * HOUR_MS
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Every repository, by path.
    pub fn repositories(&self) -> Result<Vec<RepositoryRow>, PgStoreError> {
        Ok(self
            .reader()
            .query(
                r#"SELECT forge, path FROM repositories ORDER BY path COLLATE "C", forge COLLATE "C""#,
                &[],
            )?
            .iter()
            .map(|r| RepositoryRow {
                forge: r.get(0),
                path: r.get(1),
            })
            .collect())
    }

    /// Every repository by its id.
    pub fn repositories_by_id(&self) -> Result<HashMap<i64, RepositoryRow>, PgStoreError> {
        Ok(self
            .reader()
            .query("SELECT id, forge, path FROM repositories", &[])?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    RepositoryRow {
                        forge: r.get(1),
                        path: r.get(2),
                    },
                )
            })
            .collect())
    }

    /// SLO events since `since` per SLO and hour (oldest first), optionally
    /// of one repository.
    pub fn slo_hourly(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<Vec<SloBucket>, PgStoreError> {
        let since_hour = hour_of(since);
        let rows = match repository {
            None => self.reader().query(
                r#"SELECT slo, hour, good, total FROM slo_hourly
                   WHERE repository_id = 0 AND hour >= $1 ORDER BY slo COLLATE "C", hour"#,
                &[&since_hour],
            )?,
            Some(path) => self.reader().query(
                r#"SELECT slo, hour, sum(good)::bigint, sum(total)::bigint FROM slo_hourly
                   WHERE repository_id IN (SELECT id FROM repositories WHERE path = $2) AND hour >= $1
                   GROUP BY slo, hour ORDER BY slo COLLATE "C", hour"#,
                &[&since_hour, &path],
            )?,
        };
        Ok(rows
            .iter()
            .map(|r| SloBucket {
                slo: r.get(0),
                hour_ms: r.get(1),
                counts: EventCounts {
                    good: r.get::<_, i64>(2) as u64,
                    total: r.get::<_, i64>(3) as u64,
                },
            })
            .collect())
    }

    /// One SLO's good and total events since `since` per repository (by id).
    pub fn slo_by_repository(
        &self,
        slo: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SloRepositoryCounts>, PgStoreError> {
        Ok(self
            .reader()
            .query(
                "SELECT repo.forge, repo.path, sum(h.good)::bigint, sum(h.total)::bigint
                 FROM repositories repo
                 JOIN slo_hourly h ON h.repository_id = repo.id AND h.hour >= $2 AND h.slo = $1
                 GROUP BY repo.id HAVING sum(h.total) > 0 ORDER BY repo.id",
                &[&slo, &hour_of(since)],
            )?
            .iter()
            .map(|r| SloRepositoryCounts {
                forge: r.get(0),
                repository: r.get(1),
                counts: EventCounts {
                    good: r.get::<_, i64>(2).max(0) as u64,
                    total: r.get::<_, i64>(3).max(0) as u64,
                },
            })
            .collect())
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
    ) -> Result<Vec<BadEvent>, PgStoreError> {
        let (since, n, skip) = (to_ms(since), self::limit(limit), self::limit(offset));
        let mut client = self.reader();
        let rows = if slo == "test_success" {
            client.query(BAD_TEST_EVENTS_SQL, &[&since, &repository, &n, &skip])?
        } else {
            let run_columns = slo.parse::<SloId>().ok().and_then(run_event_columns);
            match (run_columns, repository) {
                (Some((at, good)), Some(path)) => client.query(
                    &repository_bad_run_events_sql(at, good),
                    &[&since, &path, &n, &skip],
                )?,
                (Some((at, good)), None) => {
                    client.query(&bad_run_events_sql(at, good), &[&since, &n, &skip])?
                }
                (None, Some(path)) => {
                    client.query(REPOSITORY_BAD_EVENTS_SQL, &[&slo, &since, &path, &n, &skip])?
                }
                (None, None) => client.query(BAD_EVENTS_SQL, &[&slo, &since, &n, &skip])?,
            }
        };
        // The page's runs and changes in one query each (not one per event).
        let events: Vec<(BadEvent, Option<i64>)> = rows
            .iter()
            .map(|r| bad_event_of(r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let change_ids: Vec<i64> = events.iter().filter_map(|(_, c)| *c).collect();
        let run_ids: Vec<i64> = events
            .iter()
            .filter(|(e, c)| c.is_none() && e.kind != "change")
            .filter_map(|(e, _)| e.run_id)
            .collect();
        let changes: HashMap<i64, (i64, Option<String>, Option<i64>)> = if change_ids.is_empty() {
            HashMap::new()
        } else {
            client
                .query(
                    "SELECT c.id, c.number, c.outcome,
                        coalesce((SELECT max(r.id) FROM runs r WHERE r.change_id = c.id AND r.state != 'success'),
                                 (SELECT max(r.id) FROM runs r WHERE r.change_id = c.id))
                     FROM changes c WHERE c.id = ANY($1)",
                    &[&change_ids],
                )?
                .iter()
                .map(|c| (c.get(0), (c.get(1), c.get(2), c.get(3))))
                .collect()
        };
        let runs: HashMap<i64, (String, String, String)> = if run_ids.is_empty() {
            HashMap::new()
        } else {
            client
                .query(
                    "SELECT id, context, state, commit_sha FROM runs WHERE id = ANY($1)",
                    &[&run_ids],
                )?
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
                .collect()
        };
        let mut out = Vec::with_capacity(events.len());
        for (mut e, change_id) in events {
            if let Some(id) = change_id {
                if let Some((number, outcome, run_id)) = changes.get(&id) {
                    e.change_number = Some(*number);
                    e.change_outcome = outcome.clone();
                    e.run_id = *run_id;
                }
            } else if e.kind != "change"
                && let Some(id) = e.run_id
                && let Some((context, state, commit)) = runs.get(&id)
            {
                e.context = Some(context.clone());
                e.state = Some(state.clone());
                e.commit = Some(commit.clone());
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Every failure of runs in `[since, until)` that match `filter`, newest
    /// first, as names only.
    pub fn failure_keys_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: &RunFilter,
    ) -> Result<Vec<FailureKey>, PgStoreError> {
        Ok(self
            .reader()
            .query(
                FAILURE_KEYS_SQL,
                &[
                    &to_ms(since),
                    &to_ms(until),
                    &filter.repository,
                    &filter.context,
                    &filter.trigger,
                ],
            )?
            .iter()
            .map(|r| FailureKey {
                id: r.get(0),
                run_id: r.get(1),
                at: from_ms(r.get(2)),
                fingerprint_id: r.get(3),
                class: r.get(4),
                category: r.get(5),
                repository_id: r.get(6),
                context: r.get(7),
                test_name: r.get(8),
            })
            .collect())
    }

    /// One failure with its evidence, run and fingerprint.
    pub fn failure_occurrence(&self, id: i64) -> Result<Option<FailureOccurrence>, PgStoreError> {
        Ok(self
            .reader()
            .query_opt(FAILURE_SQL, &[&id])?
            .map(|r| FailureOccurrence {
                run_id: r.get(0),
                at: from_ms(r.get(1)),
                forge: r.get(2),
                repository: r.get(3),
                context: r.get(4),
                url: r.get(5),
                class: r.get(6),
                category: r.get(7),
                evidence: r.get(8),
                test_name: r.get(9),
                fingerprint: r.get(10),
                normalized: r.get(11),
                first_seen: ms(&r, 12),
            }))
    }

    /// A test's executions in one repository and context since `since`,
    /// oldest first.
    pub fn test_history(
        &self,
        repository: &str,
        context: &str,
        test: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<TestExecutionRow>, PgStoreError> {
        Ok(self
            .reader()
            .query(
                TEST_HISTORY_SQL,
                &[&repository, &context, &test, &to_ms(since)],
            )?
            .iter()
            .map(|r| TestExecutionRow {
                run_id: r.get(0),
                at: from_ms(r.get(1)),
                commit: r.get(2),
                attempt: count_u32(r.get(3)),
                run_state: r.get(4),
                outcome: r
                    .get::<_, String>(5)
                    .parse()
                    .unwrap_or(TestOutcome::Errored),
                retries: count_u32(r.get(6)),
                retry_reasons: serde_json::from_str(r.get(7)).unwrap_or_default(),
                message: r.get(8),
                duration_seconds: r.get(9),
            })
            .collect())
    }

    /// The other attempts of a run and the last green run of its context.
    pub fn run_related(&self, run_id: i64) -> Result<RunRelated, PgStoreError> {
        let (attempts, last_green_run_id) = {
            let mut client = self.reader();
            let attempts = client
                .query(
                    "SELECT o.id, o.attempt, o.state, o.trigger FROM runs r
                     JOIN runs o ON o.repository_id = r.repository_id AND o.commit_sha = r.commit_sha
                      AND o.context = r.context AND o.id != r.id
                     WHERE r.id = $1 ORDER BY o.attempt, o.id",
                    &[&run_id],
                )?
                .iter()
                .map(|r| AttemptRef {
                    run_id: r.get(0),
                    attempt: count_u32(r.get(1)),
                    state: r.get(2),
                    trigger: r.get(3),
                })
                .collect();
            let last_green = client
                .query_opt(LAST_GREEN_SQL, &[&run_id])?
                .map(|r| r.get(0));
            (attempts, last_green)
        };
        Ok(RunRelated {
            attempts,
            last_green_run_id,
            since_green: self.dependencies_since_green(run_id)?,
        })
    }

    /// A fingerprint's id by its hash.
    pub fn fingerprint_id(&self, hash: &str) -> Result<Option<i64>, PgStoreError> {
        Ok(self
            .reader()
            .query_opt("SELECT id FROM fingerprints WHERE hash = $1", &[&hash])?
            .map(|r| r.get(0)))
    }

    /// When each of these fingerprints was first seen (unknown ids are left
    /// out).
    pub fn fingerprints_first_seen(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, DateTime<Utc>>, PgStoreError> {
        Ok(self
            .reader()
            .query(
                "SELECT id, first_seen FROM fingerprints WHERE id = ANY($1)",
                &[&ids],
            )?
            .iter()
            .map(|r| (r.get(0), from_ms(r.get(1))))
            .collect())
    }

    /// Every scheduled run queued in `[since, until)` of the repository and
    /// context of `filter` (when given), by repository then time, each with
    /// its first failure evidence.
    pub fn nightly_runs(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: &RunFilter,
    ) -> Result<Vec<NightlyRun>, PgStoreError> {
        Ok(self
            .reader()
            .query(
                NIGHTLY_RUNS_SQL,
                &[
                    &to_ms(since),
                    &to_ms(until),
                    &filter.repository,
                    &filter.context,
                ],
            )?
            .iter()
            .map(|r| {
                let (d, _) = durations(ms(r, 6), ms(r, 7), ms(r, 8), DurationLimits::default());
                NightlyRun {
                    run_id: r.get(0),
                    forge: r.get(1),
                    repository: r.get(2),
                    context: r.get(3),
                    commit: r.get(4),
                    state: r.get(5),
                    duration_seconds: d.run_seconds,
                    url: r.get(9),
                    day: from_ms(r.get(10)).date_naive(),
                    failure: r.get::<_, Option<String>>(11).map(|class| NightlyFailure {
                        class,
                        category: r.get(12),
                        evidence: r.get(13),
                    }),
                }
            })
            .collect())
    }

    /// What changed in a run's dependencies since the last green run
    /// (success) of the same repository and context that recorded its
    /// dependencies.
    pub fn dependencies_since_green(&self, run_id: i64) -> Result<SinceGreen, PgStoreError> {
        let green: Option<i64> = self
            .reader()
            .query_opt(LAST_GREEN_WITH_DEPENDENCIES_SQL, &[&run_id])?
            .map(|r| r.get(0));
        let Some(green) = green else {
            return Ok(SinceGreen::default());
        };
        let now = self.dependencies_of(run_id)?;
        let then = self.dependencies_of(green)?;
        Ok(SinceGreen {
            last_green_run_id: Some(green),
            changes: if now.is_empty() {
                Vec::new()
            } else {
                ci_slo_core::deps::diff(&then, &now)
            },
        })
    }
}
