//! ci-slo-store, SQLite persistence: migrations, idempotent upserts,
//! exactly-once counting. It builds on `ci-slo-core` only; the exporter
//! builds on both.
//!
//! One `Store` is one connection. The server gives the only writing `Store` to
//! a dedicated thread ([`writer::StoreHandle`]) so writes never contend; reads use
//! their own connection (WAL lets them run beside the writer). Every write
//! happens in one `BEGIN IMMEDIATE` transaction, or in a savepoint of the
//! writer thread's group commit: a crash leaves either the whole run (with its
//! counters) or nothing.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod bulk;
mod fresh;
pub mod github;
mod hourly;
mod plausible;
mod results;
mod revision;
pub mod schema;
pub mod tally;
pub mod test_index;
pub mod test_slo;
pub mod timeline;
pub mod ui;
pub mod writer;

// The core's modules, so that `crate::model::…` paths in this crate name
// them, as they did when the store was a module of the exporter.
use ci_slo_core::{classify, deps, flaky, model, redact};
#[cfg(test)]
use ci_slo_core::{config, ingest};

use chrono::{DateTime, TimeZone, Utc};
use ci_slo_core::catalog;
use ci_slo_core::config::Config;
use ci_slo_core::model::{
    DataQualityIssue, DurationLimits, FailureEvidence, Forge, MergeOutcome, NewRun, RepositoryRef,
    RunState, TestOutcome, Trigger, durations,
};
use ci_slo_core::slo::{self, ContextAttempt, EventCounts, RunThresholds, SloId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tally::{ExemplarRef, Labels};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this exporter knows ({known}); upgrade the exporter"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("{0}")]
    Refused(String),
    #[error("the store's writer thread has stopped")]
    WriterGone,
}

/// The configuration the store needs to decide and count events.
#[derive(Debug, Clone)]
pub struct Policy {
    pub thresholds: RunThresholds,
    pub limits: DurationLimits,
    pub queue_buckets: Vec<f64>,
    pub run_buckets: Vec<f64>,
    /// History loaded on purpose (`--history`): on a database that has
    /// served, it does not move the live counters.
    pub history: bool,
    /// Times further ahead than this are impossible (`ingest.max_future_skew`).
    pub max_future_skew_ms: i64,
    pub merge_settle_ms: i64,
    pub lost_after_ms: i64,
    /// How long a run whose trigger is pending waits for it before it is
    /// counted with the trigger it has (`other`).
    pub trigger_wait_ms: i64,
    pub required: HashMap<(Forge, String), Vec<String>>,
    /// Secrets are removed from every text of a run before it is stored.
    pub redactor: std::sync::Arc<crate::redact::Redactor>,
}

impl Policy {
    pub fn from_config(c: &Config) -> Policy {
        Policy {
            thresholds: c.run_thresholds(),
            limits: DurationLimits {
                max_queue_seconds: c.slo.max_plausible_queue_time.as_secs_f64(),
                max_run_seconds: c.slo.max_plausible_run_time.as_secs_f64(),
            },
            queue_buckets: c.queue_buckets(),
            run_buckets: c.run_buckets(),
            history: false,
            max_future_skew_ms: c.ingest.max_future_skew.as_millis() as i64,
            merge_settle_ms: c.slo.merge_settle.as_millis() as i64,
            lost_after_ms: c.slo.lost_after.as_millis() as i64,
            trigger_wait_ms: c.github.trigger_wait.as_millis() as i64,
            required: c
                .repositories
                .iter()
                .map(|r| ((r.forge, r.path.clone()), r.required_contexts.clone()))
                .collect(),
            // The config was validated: its patterns compile.
            redactor: std::sync::Arc::new(
                crate::redact::Redactor::from_config(&c.redact).unwrap_or_default(),
            ),
        }
    }

    fn required_contexts(&self, forge: Forge, path: &str) -> &[String] {
        self.required
            .get(&(forge, path.to_string()))
            .or_else(|| self.required.get(&(Forge::Generic, path.to_string())))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    Created,
    Updated,
    /// An identical replay (or a part with nothing new): nothing changed.
    Unchanged,
    /// The run is finished and the report contradicts it: nothing changed
    /// (`Ingested::differing` names the fields; counted as a data-quality
    /// rejection, reason `finished_run_changed`).
    Conflict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ingested {
    pub id: i64,
    pub status: IngestStatus,
    /// With [`IngestStatus::Conflict`]: the fields in which the report
    /// differs from the finished run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differing: Vec<&'static str>,
}

impl Ingested {
    pub fn new(id: i64, status: IngestStatus) -> Ingested {
        Ingested {
            id,
            status,
            differing: Vec::new(),
        }
    }
}

pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub struct Store {
    conn: Connection,
}

/// The transaction of one write: its own `BEGIN IMMEDIATE` transaction, or a
/// savepoint when the write runs inside a larger one (the writer thread's
/// group commit, see [`writer`]). Either way it is all or nothing, and
/// dropping it without `commit` rolls it back.
enum WriteTx<'a> {
    Own(Transaction<'a>),
    Nested(rusqlite::Savepoint<'a>),
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            WriteTx::Own(t) => t,
            WriteTx::Nested(s) => s,
        }
    }
}

impl WriteTx<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            WriteTx::Own(t) => t.commit(),
            WriteTx::Nested(s) => s.commit(),
        }
    }
}

/// The id of repository (forge ?1, path ?2), for queries by repository.
/// A subquery rather than a join: SQLite re-prepares a join on `repositories`
/// with bound forge and path at each use of a cached statement.
const REPOSITORY_ID: &str = "(SELECT id FROM repositories WHERE forge = ?1 AND path = ?2)";

/// A migration about to run on an existing database: from version `from`
/// (what the file had when opened) through `to` (this step), of `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrating {
    pub from: i64,
    pub to: i64,
    pub latest: i64,
}

impl std::fmt::Display for Migrating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "migrating the database from version {} to {} (now running migration {})",
            self.from, self.latest, self.to
        )
    }
}

const META_SERVING_SINCE: &str = "serving_since";
const META_DEMO: &str = "demo";

impl Store {
    /// Open (creating if needed) and migrate a database file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_reporting(path, &mut |_| {})
    }

    /// [`Store::open`], telling `progress` before each migration it runs (a
    /// migration of a large database can take minutes: the server says so
    /// on `/readyz` and in the log meanwhile).
    pub fn open_reporting(
        path: &Path,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let mut store = Store { conn };
        store.configure()?;
        store.migrate(&path.display().to_string(), progress)?;
        Ok(store)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let mut store = Store {
            conn: Connection::open_in_memory()?,
        };
        store.configure()?;
        store.migrate(":memory:", &mut |_| {})?;
        Ok(store)
    }

    fn configure(&self) -> Result<(), StoreError> {
        self.conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // One ingest runs a few dozen distinct statements: keep them all
        // prepared (rusqlite's default of 16 would re-parse most of them).
        self.conn.set_prepared_statement_cache_capacity(256);
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    fn migrate(
        &mut self,
        path: &str,
        progress: &mut dyn FnMut(Migrating),
    ) -> Result<(), StoreError> {
        let known = schema::MIGRATIONS.len() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.to_string(),
                found: version,
                known,
            });
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            if version > 0 {
                // A new database is created in an instant; an existing one
                // may hold millions of rows to move.
                progress(Migrating {
                    from: version,
                    to: (i + 1) as i64,
                    latest: known,
                });
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Begin one write (see [`WriteTx`]).
    fn write_tx(&mut self) -> rusqlite::Result<WriteTx<'_>> {
        Ok(if self.conn.is_autocommit() {
            WriteTx::Own(
                self.conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?,
            )
        } else {
            WriteTx::Nested(self.conn.savepoint()?)
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Record that a server started on this database. From then on, history
    /// loaded with `--history` no longer moves the live counters.
    pub fn mark_serving(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.meta(META_SERVING_SINCE)?.is_none() {
            self.set_meta(META_SERVING_SINCE, &now.to_rfc3339())?;
        }
        Ok(())
    }

    pub fn is_demo(&self) -> Result<bool, StoreError> {
        Ok(self.meta(META_DEMO)?.is_some())
    }

    pub fn mark_demo(&self, seed_info: &str) -> Result<(), StoreError> {
        self.set_meta(META_DEMO, seed_info)
    }

    pub fn run_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?)
    }

    /// Store one run with its tests, reports and failures, and count what it
    /// newly makes final. A replay of identical content changes nothing.
    pub fn ingest_run(
        &mut self,
        run: &NewRun,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError> {
        let tx = self.write_tx()?;
        let ingested = ingest_in(&tx, run, policy, to_ms(now))?;
        tx.commit()?;
        Ok(ingested)
    }

    /// Count a report refused before it reached the store (an impossible
    /// time, `ingest::validate`) in `ci_exporter_data_quality_rejections_total`.
    pub fn count_rejection(&mut self, reason: &str) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        data_quality(&tx, reason)?;
        tx.commit()?;
        Ok(())
    }

    /// Record that a change was merged (from a forge's merge event, or an
    /// import). Its outcome is decided later, by [`Store::settle`].
    pub fn record_merge(
        &mut self,
        repository: &RepositoryRef,
        number: i64,
        head_sha: Option<&str>,
        merged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        let repository_id = upsert_repository(&tx, repository.forge, &repository.path)?;
        tx.execute(
            "INSERT INTO changes (repository_id, number, head_sha, merged_at, last_activity) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repository_id, number) DO UPDATE SET
                head_sha = coalesce(excluded.head_sha, changes.head_sha),
                merged_at = coalesce(changes.merged_at, excluded.merged_at),
                last_activity = excluded.last_activity",
            params![repository_id, number, head_sha, to_ms(merged_at), to_ms(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remember a webhook delivery; false when it was seen before (a replay).
    pub fn record_delivery(
        &self,
        forge: Forge,
        delivery_id: &str,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO webhook_deliveries (forge, delivery_id, event, received_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![forge.as_str(), delivery_id, event, to_ms(now)])?
            == 1)
    }

    /// Forget webhook delivery ids received before `before` (a redelivery
    /// older than that is then treated as new; the event's own identity,
    /// not its delivery id, keeps it from counting twice).
    pub fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM webhook_deliveries WHERE received_at < ?1",
            [to_ms(before)],
        )?)
    }

    /// The sync state of one scope (a repository, project or group) and kind of listing.
    pub fn sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &str,
    ) -> Result<Option<SyncState>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT cursor, etag, last_success FROM sync_state WHERE forge = ?1 AND scope = ?2 AND kind = ?3",
                params![forge.as_str(), scope, kind],
                |r| {
                    Ok(SyncState {
                        cursor: r.get(0)?,
                        etag: r.get(1)?,
                        last_success: r.get::<_, Option<i64>>(2)?.map(from_ms),
                    })
                },
            )
            .optional()?)
    }

    pub fn set_sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &str,
        state: &SyncState,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO sync_state (forge, scope, kind, cursor, etag, last_success) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (forge, scope, kind) DO UPDATE SET cursor = excluded.cursor, etag = excluded.etag,
                last_success = excluded.last_success",
            params![forge.as_str(), scope, kind, state.cursor, state.etag, state.last_success.map(to_ms)],
        )?;
        Ok(())
    }

    /// The latest successful sync per (forge, scope), Unix ms.
    pub fn last_syncs(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT forge, scope, max(last_success) FROM sync_state WHERE last_success IS NOT NULL
             GROUP BY forge, scope ORDER BY forge, scope",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Each test's statistics since `since` (whole UTC days: the day of
    /// `since` counts whole), from the per-day counters kept at ingest
    /// (migration 10): (repository, context, test, stats). No execution is read.
    pub fn test_stats(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
    ) -> Result<Vec<(String, String, String, crate::flaky::TestStats)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT repo.path, t.context, t.name, d.runs, d.failures, d.commits, d.flaky_commits, d.flips,
                    d.flaky_failures
             FROM (SELECT test_id, sum(runs) AS runs, sum(failures) AS failures, sum(commits) AS commits,
                          sum(flaky_commits) AS flaky_commits, sum(flips) AS flips,
                          sum(flaky_failures) AS flaky_failures
                   FROM test_days WHERE day >= ?1 GROUP BY test_id) d
             JOIN tests t ON t.id = d.test_id JOIN repositories repo ON repo.id = t.repository_id",
        )?;
        let mut rows = stmt.query([to_ms(since).div_euclid(86_400_000)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let counts = results::counts_at(r, 3)?;
            if let Some(stats) = crate::flaky::from_counts(counts, min_runs) {
                out.push((r.get(0)?, r.get(1)?, r.get(2)?, stats));
            }
        }
        Ok(out)
    }

    /// Keep a run's downloaded log (once; a second call for the same run is ignored).
    /// Returns false when the log was already stored.
    pub fn store_log(
        &self,
        run_id: i64,
        content: &str,
        truncated: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO run_logs (run_id, fetched_at, bytes, truncated, content) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, to_ms(now), content.len() as i64, truncated, content],
        )? == 1)
    }

    pub fn has_log(&self, run_id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM run_logs WHERE run_id = ?1", [run_id], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// The highest attempt stored for a context on a commit (outside attempt
    /// groups), with its state.
    pub fn latest_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
    ) -> Result<Option<(u32, RunState)>, StoreError> {
        // The highest is picked here: an ORDER BY would make SQLite re-prepare
        // the cached statement at every use.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT r.attempt, r.state FROM runs r
             WHERE r.repository_id = {REPOSITORY_ID} AND r.context = ?3 AND r.commit_sha = ?4
               AND r.attempt_group = ''"
        ))?;
        let rows = stmt.query_map(
            params![repository.forge.as_str(), repository.path, context, commit],
            |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)),
        )?;
        let mut latest: Option<(u32, String)> = None;
        for row in rows {
            let row = row?;
            if latest.as_ref().is_none_or(|l| row.0 > l.0) {
                latest = Some(row);
            }
        }
        Ok(latest.map(|(a, s)| (a, s.parse().unwrap_or(RunState::Error))))
    }

    /// Decide merged changes whose settle time has passed (both since the merge
    /// and since their last run arrived), count scheduled runs that never
    /// finished as lost, and count runs that waited `trigger_wait` for their
    /// trigger in vain. `settle_ms` overrides the policy (0 after a bulk load).
    pub fn settle(
        &mut self,
        policy: &Policy,
        now: DateTime<Utc>,
        settle_ms: Option<i64>,
    ) -> Result<SettleStats, StoreError> {
        let tx = self.write_tx()?;
        let now_ms = to_ms(now);
        let settle = settle_ms.unwrap_or(policy.merge_settle_ms);
        // Runs that waited long enough for their trigger are counted as they are.
        let expired = decide_pending(
            &tx,
            "r.created_at <= ?1",
            &[&(now_ms - policy.trigger_wait_ms)],
            None,
            policy,
            now_ms,
        )?;
        for _ in &expired {
            data_quality(&tx, "unknown_trigger")?;
        }
        let stats = SettleStats {
            changes_decided: decide_changes(&tx, policy, now_ms, settle)?,
            runs_lost: count_lost_runs(&tx, policy, now_ms)?,
            triggers_expired: expired.len(),
        };
        tx.commit()?;
        Ok(stats)
    }

    /// The trigger of an attempt group (a GitHub workflow run) is known: its
    /// runs that waited for it get it and are counted. Returns their ids.
    pub fn decide_trigger(
        &mut self,
        repository: &RepositoryRef,
        attempt_group: &str,
        trigger: Trigger,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        let tx = self.write_tx()?;
        let ids = decide_pending(
            &tx,
            &format!("r.repository_id = {REPOSITORY_ID} AND r.attempt_group = ?3"),
            &[&repository.forge.as_str(), &repository.path, &attempt_group],
            Some(trigger),
            policy,
            to_ms(now),
        )?;
        tx.commit()?;
        Ok(ids)
    }

    /// SLO event counts since `since`, per SLO: [`Store::slo_counts_in`]
    /// over every repository.
    pub fn slo_counts_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<HashMap<String, EventCounts>, StoreError> {
        self.slo_counts_in(since, None)
    }

    /// [`Store::slo_counts_in`] for each window ending at `now`, in the
    /// order of `windows`: what every SLO number is computed from.
    pub fn slo_counts_in_windows(
        &self,
        now: DateTime<Utc>,
        windows: &[std::time::Duration],
        repository: Option<&str>,
    ) -> Result<Vec<HashMap<String, EventCounts>>, StoreError> {
        windows
            .iter()
            .map(|w| {
                let w = chrono::Duration::from_std(*w).unwrap_or(chrono::Duration::MAX);
                let since = now
                    .checked_sub_signed(w)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                self.slo_counts_in(since, repository)
            })
            .collect()
    }

    /// The events of an SLO window: every event stored at or after `since`,
    /// per SLO, of one repository (by path) or of all. This is the one
    /// counting rule of every SLO number (docs/metrics.md "Windows"): `/metrics`
    /// (`ci_slo_*` gauges), the UI and its JSON read their windows here, so the
    /// numbers agree. A window is rolling and exact to the millisecond: whole
    /// hours come from the hourly rollup (migration 5, kept by triggers), the
    /// part of the first hour from the events themselves, so a month of events
    /// is not read on every snapshot. Events stamped after now (clock skew) are
    /// in every window.
    pub fn slo_counts_in(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<HashMap<String, EventCounts>, StoreError> {
        const HOUR_MS: i64 = 3_600_000;
        let since_ms = to_ms(since);
        let first_whole_hour = since_ms.div_euclid(HOUR_MS) * HOUR_MS
            + if since_ms.rem_euclid(HOUR_MS) == 0 {
                0
            } else {
                HOUR_MS
            };
        let mut out: HashMap<String, EventCounts> = HashMap::new();
        let mut add = |slo: String, good: i64, total: i64| {
            let c = out.entry(slo).or_default();
            c.good += good as u64;
            c.total += total as u64;
        };
        // Repository 0 of the rollup is every repository; `?3` is the path
        // (NULL: all). Two texts rather than `?3 IS NULL OR ...`, so that each
        // uses its index (the rollup's primary key, `slo_events_at`).
        let (hourly_repo, repo) = match repository {
            Some(_) => (
                "repository_id IN (SELECT id FROM repositories WHERE path = ?3)",
                "AND repository_id IN (SELECT id FROM repositories WHERE path = ?3)",
            ),
            None => ("repository_id = 0 AND ?3 IS NULL", "AND ?3 IS NULL"),
        };
        let hourly = format!(
            "SELECT slo, sum(good), sum(total) FROM slo_hourly
             WHERE {hourly_repo} AND hour >= ?1 GROUP BY slo"
        );
        let params = rusqlite::params![first_whole_hour, since_ms, repository];
        let mut hours = self.conn.prepare_cached(&hourly)?;
        let mut rows = hours.query(params)?;
        while let Some(r) = rows.next()? {
            add(r.get(0)?, r.get(1)?, r.get(2)?);
        }
        let mut edge = self.conn.prepare_cached(&format!(
            "SELECT slo, coalesce(sum(good), 0), count(*) FROM slo_events
             WHERE at >= ?2 AND at < ?1 {repo} GROUP BY slo"
        ))?;
        let mut rows = edge.query(params)?;
        while let Some(r) = rows.next()? {
            add(r.get(0)?, r.get(1)?, r.get(2)?);
        }
        // The test_success events of a run are one row (migration 10).
        let (good, total): (i64, i64) = self
            .conn
            .prepare_cached(&format!(
                "SELECT coalesce(sum(good), 0), coalesce(sum(total), 0) FROM test_events
                 WHERE at >= ?2 AND at < ?1 {repo}"
            ))?
            .query_row(params, |r| Ok((r.get(0)?, r.get(1)?)))?;
        if total > 0 {
            add(SloId::TestSuccess.as_str().to_string(), good, total);
        }
        Ok(out)
    }

    /// Every persisted counter and histogram.
    pub fn metric_state(&self) -> Result<MetricState, StoreError> {
        let mut counters = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT family, labels, value FROM metric_counters ORDER BY family, labels",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })?;
        for row in rows {
            let (family, labels, value) = row?;
            counters.push(CounterRow {
                family,
                labels: tally::parse_labels(&labels),
                value,
            });
        }
        let mut histograms: Vec<HistogramRow> = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT h.family, h.labels, h.sum, h.count, b.le, b.count, b.exemplar_run_id, b.exemplar_value, b.exemplar_ts
             FROM metric_histograms h JOIN metric_buckets b ON b.family = h.family AND b.labels = h.labels
             ORDER BY h.family, h.labels, b.le",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let family: String = r.get(0)?;
            let labels: String = r.get(1)?;
            let bucket = BucketRow {
                le: r.get(4)?,
                count: r.get::<_, i64>(5)? as u64,
                exemplar: match (
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<f64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ) {
                    (Some(run_id), Some(value), Some(at_ms)) => Some((run_id, value, at_ms)),
                    _ => None,
                },
            };
            let same = histograms
                .last()
                .is_some_and(|h| h.family == family && h.labels_json == labels);
            if !same {
                histograms.push(HistogramRow {
                    family,
                    labels: tally::parse_labels(&labels),
                    labels_json: labels,
                    sum: r.get(2)?,
                    count: r.get::<_, i64>(3)? as u64,
                    buckets: Vec::new(),
                });
            }
            histograms
                .last_mut()
                .expect("pushed above")
                .buckets
                .push(bucket);
        }
        Ok(MetricState {
            counters,
            histograms,
        })
    }

    /// One run with everything stored about it.
    pub fn run(&self, id: i64) -> Result<Option<RunView>, StoreError> {
        run_view(&self.conn, id, TestSlice::ALL)
    }

    /// One run with a slice of its tests (`RunView::tests_total` says how
    /// many there are); messages cut at `TestSlice::message_chars`.
    pub fn run_slice(&self, id: i64, slice: TestSlice) -> Result<Option<RunView>, StoreError> {
        run_view(&self.conn, id, slice)
    }

    /// Delete runs (with their tests, reports and failures) that ended before
    /// `before`, and SLO events older than `events_before`. Counters are not touched.
    pub fn prune(
        &mut self,
        before: DateTime<Utc>,
        events_before: DateTime<Utc>,
    ) -> Result<PruneStats, StoreError> {
        let tx = self.write_tx()?;
        let runs = tx.execute(
            "DELETE FROM runs WHERE final_counted = 1
               AND coalesce(finished_at, started_at, queued_at, created_at) < ?1",
            [to_ms(before)],
        )?;
        let changes = tx.execute(
            "DELETE FROM changes WHERE decided_at IS NOT NULL AND coalesce(merged_at, last_activity) < ?1
               AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.change_id = changes.id)",
            [to_ms(before)],
        )?;
        let events = tx.execute(
            "DELETE FROM slo_events WHERE at < ?1",
            [to_ms(events_before)],
        )? + tx.execute(
            "DELETE FROM test_events WHERE at < ?1",
            [to_ms(events_before)],
        )?;
        // Per-test state of what is gone: the days before `before`, and the
        // commits no stored run has any more (their results went with their
        // runs). A test's all-time counters in `tests` stay.
        tx.execute(
            "DELETE FROM test_days WHERE day < ?1",
            [to_ms(before).div_euclid(86_400_000)],
        )?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS gone_commits (id INTEGER PRIMARY KEY);
             DELETE FROM gone_commits;
             INSERT INTO gone_commits SELECT c.id FROM commits c
               WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.repository_id = c.repository_id AND r.commit_sha = c.sha);
             DELETE FROM test_commits WHERE commit_id IN (SELECT id FROM gone_commits);
             DELETE FROM commits WHERE id IN (SELECT id FROM gone_commits);
             DELETE FROM gone_commits;",
        )?;
        tx.execute(
            "DELETE FROM fingerprints WHERE NOT EXISTS (SELECT 1 FROM failures WHERE failures.fingerprint_id = fingerprints.id)
               AND last_seen < ?1",
            [to_ms(before)],
        )?;
        tx.commit()?;
        Ok(PruneStats {
            runs,
            changes,
            events,
        })
    }
}

/// Where a forge listing stopped, and its validator for conditional requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    pub cursor: Option<String>,
    pub etag: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleStats {
    pub changes_decided: usize,
    pub runs_lost: usize,
    /// Runs counted with trigger `other` after waiting `trigger_wait` for theirs.
    pub triggers_expired: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub runs: usize,
    pub changes: usize,
    pub events: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CounterRow {
    pub family: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BucketRow {
    pub le: f64,
    /// Non-cumulative count of this bucket.
    pub count: u64,
    /// (run id, observed value, Unix ms).
    pub exemplar: Option<(i64, f64, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistogramRow {
    pub family: String,
    pub labels: Vec<(String, String)>,
    labels_json: String,
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<BucketRow>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricState {
    pub counters: Vec<CounterRow>,
    pub histograms: Vec<HistogramRow>,
}

/// Whether what this write newly stores moves the live counters: always,
/// however old its timestamps, except history loaded on purpose into a
/// database that has served (a command given `--history`), which is counted
/// in `ci_exporter_backdated_events_total` instead. Into a database that has
/// never served, everything counts: Prometheus has not seen these series yet,
/// so they appear with their values (not a rate), and `backfill-openmetrics`
/// ends where they stand (docs/configuration.md, *History and live counters*).
fn moves_live_counters(tx: &Connection, policy: &Policy) -> rusqlite::Result<bool> {
    if !policy.history {
        return Ok(true);
    }
    let served = tx
        .prepare_cached("SELECT 1 FROM meta WHERE key = ?1")?
        .query_row([META_SERVING_SINCE], |_| Ok(()))
        .optional()?
        .is_some();
    Ok(!served)
}

fn content_hash(run: &NewRun) -> String {
    use sha2::{Digest, Sha256};
    /// The Debug text goes straight into the hash, never into a string.
    struct Hashing(Sha256);
    impl std::fmt::Write for Hashing {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.update(s.as_bytes());
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new());
    // Debug output of the plain data types is a stable, complete rendering of
    // the content (field order is fixed by the struct definitions).
    std::fmt::Write::write_fmt(&mut h, format_args!("{run:?}"))
        .expect("hashing never fails to take text");
    let digest = h.0.finalize();
    let mut hex = String::with_capacity(32);
    for b in digest.iter().take(16) {
        let _ = std::fmt::Write::write_fmt(&mut hex, format_args!("{b:02x}"));
    }
    hex
}

fn upsert_repository(tx: &Connection, forge: Forge, path: &str) -> rusqlite::Result<i64> {
    let mut select =
        tx.prepare_cached("SELECT id FROM repositories WHERE forge = ?1 AND path = ?2")?;
    if let Some(id) = select
        .query_row([forge.as_str(), path], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    tx.prepare_cached("INSERT INTO repositories (forge, path) VALUES (?1, ?2)")?
        .execute([forge.as_str(), path])?;
    Ok(tx.last_insert_rowid())
}

/// Record an SLO event once; count it when it is new and live.
#[allow(clippy::too_many_arguments)]
fn slo_event(
    tx: &Connection,
    slo: SloId,
    subject: &str,
    repository_id: i64,
    repository: &str,
    at_ms: i64,
    good: bool,
    live: bool,
) -> rusqlite::Result<bool> {
    // A fresh load appends its events to a scratch table, written into
    // `slo_events` in key order at its end (`fresh::SloEvents`): they are
    // all new (the store held no event, each subject is a new run).
    let sql = if fresh::appends_slo_events() {
        "INSERT INTO temp.fresh_slo (slo, subject, repository_id, at, good) VALUES (?1, ?2, ?3, ?4, ?5)"
    } else {
        "INSERT OR IGNORE INTO slo_events (slo, subject, repository_id, at, good) VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    let inserted = tx.prepare_cached(sql)?.execute(params![
        slo.as_str(),
        subject,
        repository_id,
        at_ms,
        good
    ])? == 1;
    if inserted {
        hourly::add(repository_id, at_ms, slo.as_str(), i64::from(good), 1);
        if live {
            let (result, other) = if good {
                ("good", "bad")
            } else {
                ("bad", "good")
            };
            let series = |result| {
                [
                    ("slo", slo.as_str()),
                    ("repository", repository),
                    ("result", result),
                ]
            };
            // Both results exist from the first event on: a repository's first
            // bad event must be an increase, not a new series, for rate() to see it.
            tally::ensure(tx, catalog::SLO_EVENTS, &series(other))?;
            tally::inc(tx, catalog::SLO_EVENTS, &series(result), 1.0)?;
        } else {
            tally::inc(tx, catalog::BACKDATED, &[("kind", "slo_event")], 1.0)?;
        }
    }
    Ok(inserted)
}

fn data_quality(tx: &Connection, reason: &str) -> rusqlite::Result<()> {
    tally::inc(tx, catalog::DATA_QUALITY, &[("reason", reason)], 1.0)
}

/// A stored run whose identity matched an ingested one.
struct Existing {
    row: revision::Row,
    hash: String,
    trigger: Trigger,
    queue_counted: bool,
    final_counted: bool,
    trigger_pending: bool,
}

/// The stored run a report is about: with an external id, the run with that
/// id in its repository (and nothing else); without one, the run without an
/// external id with the same context, commit, attempt group and attempt.
fn find_existing(
    tx: &Connection,
    repository_id: i64,
    run: &NewRun,
    group: &str,
) -> rusqlite::Result<Option<Existing>> {
    const COLUMNS: &str = "r.id, r.content_hash, r.trigger, r.queue_counted, r.final_counted, r.trigger_pending,
        r.context, r.commit_sha, r.attempt_group, r.attempt, r.state, r.queued_at, r.started_at, r.finished_at,
        r.url, r.log_url, (SELECT number FROM changes c WHERE c.id = r.change_id)";
    let read = |r: &rusqlite::Row<'_>| {
        let trigger: String = r.get(2)?;
        Ok(Existing {
            hash: r.get(1)?,
            trigger: trigger.parse().unwrap_or(Trigger::Other),
            queue_counted: r.get(3)?,
            final_counted: r.get(4)?,
            trigger_pending: r.get(5)?,
            row: revision::Row {
                id: r.get(0)?,
                context: r.get(6)?,
                commit: r.get(7)?,
                attempt_group: r.get(8)?,
                attempt: r.get(9)?,
                trigger,
                trigger_pending: r.get(5)?,
                state: r.get(10)?,
                times: [r.get(11)?, r.get(12)?, r.get(13)?],
                url: r.get(14)?,
                log_url: r.get(15)?,
                change: r.get(16)?,
            },
        })
    };
    match &run.external_id {
        Some(external_id) => tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs r WHERE r.repository_id = ?1 AND r.external_id = ?2"
            ))?
            .query_row(params![repository_id, external_id], read)
            .optional(),
        None => tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs r
                 WHERE r.repository_id = ?1 AND r.external_id IS NULL AND r.context = ?2
                   AND r.commit_sha = ?3 AND r.attempt_group = ?4 AND r.attempt = ?5"
            ))?
            .query_row(
                params![repository_id, run.context, run.commit, group, run.attempt],
                read,
            )
            .optional(),
    }
}

/// A run as the store keeps it, computed without the database (so a bulk
/// load can compute it on another thread): redacted, impossible future times
/// removed, and its content hash.
pub struct Prepared {
    pub run: NewRun,
    hash: String,
    future_times: bool,
}

impl Prepared {
    pub fn new(report: NewRun, policy: &Policy, now: DateTime<Utc>) -> Prepared {
        // Nothing a run carries is stored with a credential in it (src/redact.rs).
        let report = policy.redactor.redact_run(&report).unwrap_or(report);
        let plausible =
            plausible::without_future_times(&report, to_ms(now) + policy.max_future_skew_ms);
        let future_times = plausible.is_some();
        let run = plausible.unwrap_or(report);
        Prepared {
            hash: content_hash(&run),
            run,
            future_times,
        }
    }
}

fn ingest_in(
    tx: &Connection,
    report: &NewRun,
    policy: &Policy,
    now_ms: i64,
) -> Result<Ingested, StoreError> {
    // Nothing a run carries is stored with a credential in it (src/redact.rs).
    let redacted = policy.redactor.redact_run(report);
    let report = redacted.as_ref().unwrap_or(report);
    let plausible = plausible::without_future_times(report, now_ms + policy.max_future_skew_ms);
    let future_times = plausible.is_some();
    let report = plausible.as_ref().unwrap_or(report);
    let hash = content_hash(report);
    ingest_checked(tx, report, &hash, future_times, policy, now_ms, None)
}

/// [`ingest_in`] of a run already redacted and checked (`hash` its content
/// hash). `fresh`: a fresh bulk load (`fresh.rs`) — the store holds no run
/// this one could be, and its test results are staged for the load's
/// set-based counting instead of counted here.
fn ingest_checked(
    tx: &Connection,
    report: &NewRun,
    hash: &str,
    future_times: bool,
    policy: &Policy,
    now_ms: i64,
    fresh: Option<&mut fresh::Staging>,
) -> Result<Ingested, StoreError> {
    let live = moves_live_counters(tx, policy)?;
    let repo = &report.repository;
    let repository_id = upsert_repository(tx, repo.forge, &repo.path)?;
    let group = report.attempt_group.as_deref().unwrap_or("");

    let existing = if fresh.is_some() {
        None
    } else {
        find_existing(tx, repository_id, report, group)?
    };
    if let Some(e) = &existing
        && e.hash == hash
    {
        return Ok(Ingested::new(e.row.id, IngestStatus::Unchanged));
    }
    // A finished run is immutable (revision.rs): what the report may still add.
    let merged;
    let run = match &existing {
        Some(e) if e.row.state.parse().is_ok_and(RunState::is_terminal) => {
            let stored = revision::load(tx, &e.row, report)?;
            match revision::judge(&stored, report) {
                revision::Verdict::Unchanged => {
                    return Ok(Ingested::new(e.row.id, IngestStatus::Unchanged));
                }
                revision::Verdict::Conflict(fields) => {
                    tracing::warn!(
                        run = e.row.id,
                        repository = %repo.path,
                        external_id = report.external_id.as_deref().unwrap_or(""),
                        source = %report.source,
                        differing = %fields.join(","),
                        "a report contradicts a finished run: kept as stored"
                    );
                    data_quality(tx, "finished_run_changed")?;
                    return Ok(Ingested {
                        id: e.row.id,
                        status: IngestStatus::Conflict,
                        differing: fields,
                    });
                }
                revision::Verdict::Update(m) => {
                    merged = *m;
                    &merged
                }
            }
        }
        _ => report,
    };
    // A trigger, once decided, stays: the run's counters carry it as a label.
    let (trigger, trigger_pending) = match &existing {
        Some(e) if !e.trigger_pending && run.trigger_pending => (e.trigger, false),
        _ => (run.trigger, run.trigger_pending),
    };

    let change_id = match &run.change {
        None => None,
        Some(change) => {
            tx.prepare_cached(
                "INSERT INTO changes (repository_id, number, merged_at, last_activity) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repository_id, number) DO UPDATE SET
                    merged_at = coalesce(changes.merged_at, excluded.merged_at),
                    last_activity = excluded.last_activity",
            )?
            .execute(params![repository_id, change.number, change.merged_at.map(to_ms), now_ms])?;
            let (id, decided): (i64, bool) = tx
                .prepare_cached("SELECT id, decided_at IS NOT NULL FROM changes WHERE repository_id = ?1 AND number = ?2")?
                .query_row(params![repository_id, change.number], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if decided && existing.is_none() {
                data_quality(tx, "run_after_change_decided")?;
            }
            Some(id)
        }
    };

    let values = params![
        repository_id,
        run.external_id,
        run.context,
        run.commit,
        run.attempt,
        trigger.as_str(),
        run.state.as_str(),
        run.queued_at.map(to_ms),
        run.started_at.map(to_ms),
        run.finished_at.map(to_ms),
        run.url,
        run.log_url,
        change_id,
        run.source,
        hash,
        now_ms,
        group,
        trigger_pending,
    ];
    let (run_id, status, queue_counted, final_counted) = match existing {
        Some(e) => {
            tx.prepare_cached(
                "UPDATE runs SET repository_id = ?1, external_id = coalesce(?2, external_id), context = ?3,
                    commit_sha = ?4, attempt = ?5, trigger = ?6, state = ?7, queued_at = ?8, started_at = ?9,
                    finished_at = ?10, url = ?11, log_url = ?12, change_id = coalesce(?13, change_id),
                    source = ?14, content_hash = ?15, updated_at = ?16, attempt_group = ?17,
                    trigger_pending = ?18
                 WHERE id = ?19",
            )?
            .execute(rusqlite::params_from_iter(values.iter().copied().chain([&e.row.id as &dyn rusqlite::ToSql])))?;
            // An update replaces what it carries; a state-only update (a
            // webhook saying "completed") keeps the tests and reports stored before.
            if !run.reports.is_empty() {
                tx.execute("DELETE FROM reports WHERE run_id = ?1", [e.row.id])?;
            }
            if !run.dependencies.is_empty() {
                tx.execute(
                    "DELETE FROM dependency_snapshots WHERE run_id = ?1",
                    [e.row.id],
                )?;
            }
            (
                e.row.id,
                IngestStatus::Updated,
                e.queue_counted,
                e.final_counted,
            )
        }
        None => {
            // Stored with the flags counting sets below (see `counted_after`),
            // so the row is written once.
            let (queue, done) = counted_after(run, trigger_pending);
            tx.prepare_cached(
                "INSERT INTO runs (repository_id, external_id, context, commit_sha, attempt, trigger, state,
                    queued_at, started_at, finished_at, url, log_url, change_id, source, content_hash,
                    created_at, updated_at, attempt_group, trigger_pending, queue_counted, final_counted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16, ?17, ?18,
                    ?19, ?20)",
            )?
            .execute(rusqlite::params_from_iter(
                values
                    .iter()
                    .copied()
                    .chain([&queue as &dyn rusqlite::ToSql, &done]),
            ))?;
            (tx.last_insert_rowid(), IngestStatus::Created, false, false)
        }
    };

    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO dependency_snapshots (run_id, package, version) VALUES (?1, ?2, ?3)",
        )?;
        for (package, version) in &run.dependencies {
            insert.execute(params![run_id, package, version])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO reports (run_id, format, name, content) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for r in &run.reports {
            insert.execute(params![run_id, r.format, r.name, r.content])?;
        }
    }

    let event_ms = event_ms(run.queued_at, run.started_at, run.finished_at, now_ms);
    // A new run has no failures to replace: only store what it brings.
    if !run.failures.is_empty() {
        store_failures(tx, run_id, &repo.path, &run.failures, event_ms, live)?;
    }

    // Counters carry the trigger as a label: a run whose trigger is not
    // decided yet is counted when it is (Store::decide_trigger, or settle).
    if !trigger_pending {
        count_run(
            tx,
            &Counting {
                run_id,
                repository_id,
                repository: &repo.path,
                context: &run.context,
                attempt: run.attempt,
                trigger,
                state: run.state,
                queued_at: run.queued_at,
                started_at: run.started_at,
                finished_at: run.finished_at,
                queue_counted,
                final_counted,
                row_flags: if status == IngestStatus::Created {
                    counted_after(run, trigger_pending)
                } else {
                    (queue_counted, final_counted)
                },
            },
            policy,
            live,
            now_ms,
        )?;
    }

    // An update replaces the tests it carries; a state-only update (no
    // tests) keeps the ones stored before.
    let of = results::RunOf {
        run_id,
        repository_id,
        repository: &repo.path,
        context: &run.context,
        commit: &run.commit,
        at_ms: event_ms,
    };
    match fresh {
        Some(staging) => staging.stage(tx, &of, &run.tests, live)?,
        None => results::store(tx, &of, &run.tests, status == IngestStatus::Updated, live)?,
    }

    if future_times {
        data_quality(tx, "future_time")?;
    }
    Ok(Ingested::new(run_id, status))
}

/// When a run happened, for the live window: its latest known time.
fn event_ms(
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    now_ms: i64,
) -> i64 {
    finished_at
        .or(started_at)
        .or(queued_at)
        .map(to_ms)
        .unwrap_or(now_ms)
}

/// What counting a run needs: from the run being ingested, or from the
/// stored row when its trigger is decided later.
struct Counting<'a> {
    run_id: i64,
    repository_id: i64,
    repository: &'a str,
    context: &'a str,
    attempt: u32,
    trigger: Trigger,
    state: RunState,
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    queue_counted: bool,
    final_counted: bool,
    /// The (queue_counted, final_counted) flags the stored row has now.
    row_flags: (bool, bool),
}

/// The (queue_counted, final_counted) flags [`count_run`] leaves a run with
/// that was counted for nothing before: the queue once the start is known,
/// the final state once terminal; nothing while the trigger is pending.
fn counted_after(run: &NewRun, trigger_pending: bool) -> (bool, bool) {
    if trigger_pending {
        (false, false)
    } else {
        (run.started_at.is_some(), run.state.is_terminal())
    }
}

/// Count what a run newly makes known, once each: its queue time when its
/// start is known, its final state when it is terminal.
fn count_run(
    tx: &Connection,
    c: &Counting<'_>,
    policy: &Policy,
    live: bool,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let event_ms = event_ms(c.queued_at, c.started_at, c.finished_at, now_ms);
    let (d, issues) = durations(c.queued_at, c.started_at, c.finished_at, policy.limits);
    let subject = format!("run:{}", c.run_id);
    let trigger = c.trigger.as_str();
    let exemplar = Some(ExemplarRef {
        run_id: c.run_id,
        at_ms: event_ms,
    });
    let (mut queue_counted, mut final_counted) = (c.queue_counted, c.final_counted);

    if !c.queue_counted && c.started_at.is_some() {
        for issue in issues.iter().filter(|i| {
            matches!(
                i,
                DataQualityIssue::NegativeQueueTime | DataQualityIssue::AbsurdQueueTime
            )
        }) {
            data_quality(tx, issue.as_str())?;
        }
        if let Some(q) = d.queue_seconds {
            let started_ms = c.started_at.map(to_ms).unwrap_or(now_ms);
            if live {
                let labels: &Labels<'_> = &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                ];
                tally::observe(
                    tx,
                    catalog::RUN_QUEUE,
                    labels,
                    &policy.queue_buckets,
                    q,
                    exemplar,
                )?;
            }
            let (slo, good) = slo::queue_event(q, policy.thresholds);
            slo_event(
                tx,
                slo,
                &subject,
                c.repository_id,
                c.repository,
                started_ms,
                good,
                live,
            )?;
        }
        queue_counted = true;
    }

    if !c.final_counted && c.state.is_terminal() {
        for issue in issues.iter().filter(|i| {
            matches!(
                i,
                DataQualityIssue::NegativeRunTime | DataQualityIssue::AbsurdRunTime
            )
        }) {
            data_quality(tx, issue.as_str())?;
        }
        let state = c.state.as_str();
        if live {
            let attempt = if c.attempt == 0 { "first" } else { "retry" };
            tally::inc(
                tx,
                catalog::RUNS,
                &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                    ("state", state),
                    ("attempt", attempt),
                ],
                1.0,
            )?;
            if let Some(seconds) = d.run_seconds {
                let labels: &Labels<'_> = &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                    ("state", state),
                ];
                tally::observe(
                    tx,
                    catalog::RUN_DURATION,
                    labels,
                    &policy.run_buckets,
                    seconds,
                    exemplar,
                )?;
            }
        } else {
            tally::inc(tx, catalog::BACKDATED, &[("kind", "run")], 1.0)?;
        }
        for (slo, good) in
            slo::finished_run_events(c.state, c.trigger, d.run_seconds, policy.thresholds)
        {
            slo_event(
                tx,
                slo,
                &subject,
                c.repository_id,
                c.repository,
                event_ms,
                good,
                live,
            )?;
        }
        final_counted = true;
    }
    if (queue_counted, final_counted) != c.row_flags {
        tx.prepare_cached("UPDATE runs SET queue_counted = ?2, final_counted = ?3 WHERE id = ?1")?
            .execute(params![c.run_id, queue_counted, final_counted])?;
    }
    Ok(())
}

/// Decide the trigger of waiting runs (`trigger_pending`) chosen by `filter`
/// (a condition on `r`, binding `args`) and count them. `trigger` None keeps
/// the stored one (`other`).
fn decide_pending(
    tx: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    trigger: Option<Trigger>,
    policy: &Policy,
    now_ms: i64,
) -> rusqlite::Result<Vec<i64>> {
    let live = moves_live_counters(tx, policy)?;
    type Row = (
        i64,
        i64,
        String,
        String,
        u32,
        String,
        String,
        [Option<i64>; 3],
        bool,
        bool,
    );
    let mut rows: Vec<Row> = tx
        .prepare_cached(&format!(
            "SELECT r.id, r.repository_id, (SELECT path FROM repositories WHERE id = r.repository_id),
                    r.context, r.attempt, r.trigger, r.state,
                    r.queued_at, r.started_at, r.finished_at, r.queue_counted, r.final_counted
             FROM runs r WHERE r.trigger_pending = 1 AND {filter}"
        ))?
        .query_map(args, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                [r.get(7)?, r.get(8)?, r.get(9)?],
                r.get(10)?,
                r.get(11)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    // In the order they were stored (sorted here: an ORDER BY would make
    // SQLite re-prepare the cached statement at every use).
    rows.sort_by_key(|r| r.0);
    let mut ids = Vec::with_capacity(rows.len());
    for (id, repository_id, path, context, attempt, stored, state, times, qc, fc) in rows {
        let trigger = trigger.unwrap_or_else(|| stored.parse().unwrap_or(Trigger::Other));
        tx.prepare_cached(
            "UPDATE runs SET trigger = ?2, trigger_pending = 0, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![id, trigger.as_str(), now_ms])?;
        let [queued_at, started_at, finished_at] = times.map(|t| t.map(from_ms));
        count_run(
            tx,
            &Counting {
                run_id: id,
                repository_id,
                repository: &path,
                context: &context,
                attempt,
                trigger,
                state: state.parse().unwrap_or(RunState::Error),
                queued_at,
                started_at,
                finished_at,
                queue_counted: qc,
                final_counted: fc,
                row_flags: (qc, fc),
            },
            policy,
            live,
            now_ms,
        )?;
        ids.push(id);
    }
    Ok(ids)
}

/// Replace a run's failures. Failure counters move only for classes the run
/// did not have before, so a replay or an update never counts twice.
fn store_failures(
    tx: &Connection,
    run_id: i64,
    repository: &str,
    failures: &[FailureEvidence],
    event_ms: i64,
    live: bool,
) -> rusqlite::Result<()> {
    let before: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT class FROM failures WHERE run_id = ?1")?
        .query_map([run_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tx.prepare_cached("DELETE FROM failures WHERE run_id = ?1")?
        .execute([run_id])?;
    let mut counted = before.clone();
    for f in failures {
        let mut fingerprint_id = None;
        let mut is_new = false;
        if let Some(hash) = &f.fingerprint {
            // One statement: a new fingerprint is stored with its first
            // occurrence (occurrences = 1), a known one moves on.
            let (id, occurrences): (i64, i64) = tx
                .prepare_cached(
                    "INSERT INTO fingerprints (hash, normalized, first_seen, last_seen, occurrences)
                     VALUES (?1, ?2, ?3, ?3, 1)
                     ON CONFLICT (hash) DO UPDATE SET first_seen = min(first_seen, excluded.first_seen),
                        last_seen = max(last_seen, excluded.last_seen), occurrences = occurrences + 1
                     RETURNING id, occurrences",
                )?
                .query_row(
                    params![hash, crate::classify::normalize_fingerprint(&f.evidence), event_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
            is_new = occurrences == 1;
            if is_new && live {
                tally::inc(
                    tx,
                    catalog::FINGERPRINTS_NEW,
                    &[("repository", repository)],
                    1.0,
                )?;
            }
            fingerprint_id = Some(id);
        }
        tx.prepare_cached(
            "INSERT INTO failures (run_id, test_name, class, category, line, evidence, context, fingerprint_id, is_new,
               context_before, candidates)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            run_id,
            f.test_name,
            f.class,
            f.category,
            f.line.map(|l| l as i64),
            f.evidence,
            serde_json::to_string(&f.context).unwrap_or_else(|_| "[]".into()),
            fingerprint_id,
            is_new,
            f.context_before,
            (!f.candidates.is_empty())
                .then(|| serde_json::to_string(&f.candidates).unwrap_or_else(|_| "[]".into())),
        ])?;
        if !counted.contains(&f.class) {
            counted.push(f.class.clone());
            if live {
                tally::inc(
                    tx,
                    catalog::FAILURES,
                    &[
                        ("repository", repository),
                        ("class", &f.class),
                        ("category", &f.category),
                    ],
                    1.0,
                )?;
            }
        }
    }
    Ok(())
}

fn decide_changes(
    tx: &Connection,
    policy: &Policy,
    now_ms: i64,
    settle_ms: i64,
) -> Result<usize, StoreError> {
    let live = moves_live_counters(tx, policy)?;
    let due: Vec<(i64, i64, String, String, Option<String>, i64)> = tx
        .prepare_cached(
            "SELECT c.id, c.repository_id, r.forge, r.path, c.head_sha, c.merged_at
             FROM changes c JOIN repositories r ON r.id = c.repository_id
             WHERE c.decided_at IS NULL AND c.merged_at IS NOT NULL
               AND c.merged_at <= ?1 AND c.last_activity <= ?1",
        )?
        .query_map([now_ms - settle_ms], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (change_id, repository_id, forge, path, head_sha, merged_at) in &due {
        let forge: Forge = forge.parse().unwrap_or(Forge::Generic);
        let head = match head_sha {
            Some(h) => Some(h.clone()),
            None => tx
                .prepare_cached(
                    "SELECT commit_sha FROM runs WHERE change_id = ?1
                     ORDER BY coalesce(queued_at, started_at, finished_at, created_at) DESC, id DESC LIMIT 1",
                )?
                .query_row([change_id], |r| r.get(0))
                .optional()?,
        };
        let mut runs = Vec::new();
        if let Some(head) = &head {
            let mut stmt = tx.prepare_cached(
                "SELECT context, attempt_group, attempt, state FROM runs
                 WHERE repository_id = ?1 AND commit_sha = ?2 AND trigger != 'schedule'",
            )?;
            let rows = stmt.query_map(params![repository_id, head], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            for row in rows {
                let (context, group, attempt, state) = row?;
                let state = state.parse().unwrap_or(RunState::Error);
                runs.push(ContextAttempt {
                    context,
                    group,
                    attempt,
                    state,
                });
            }
        }
        let evaluation = slo::evaluate_merge(policy.required_contexts(forge, path), &runs);
        let Some(e) = evaluation else {
            tx.execute(
                "UPDATE changes SET decided_at = ?2, head_sha = ?3 WHERE id = ?1",
                params![change_id, now_ms, head],
            )?;
            data_quality(tx, "merged_change_without_runs")?;
            continue;
        };
        tx.execute(
            "UPDATE changes SET decided_at = ?2, head_sha = ?3, outcome = ?4, retries = ?5, missing = ?6 WHERE id = ?1",
            params![
                change_id,
                now_ms,
                head,
                e.outcome.as_str(),
                e.retries,
                serde_json::to_string(&e.missing_contexts).unwrap_or_default()
            ],
        )?;
        if live {
            tally::inc(
                tx,
                catalog::MERGED_CHANGES,
                &[("repository", path), ("outcome", e.outcome.as_str())],
                1.0,
            )?;
            if e.outcome != MergeOutcome::MergedRed {
                tally::observe(
                    tx,
                    catalog::RETRIES_TO_GREEN,
                    &[("repository", path)],
                    catalog::RETRIES_BUCKETS,
                    e.retries as f64,
                    None,
                )?;
            }
        } else {
            tally::inc(tx, catalog::BACKDATED, &[("kind", "merged_change")], 1.0)?;
        }
        let subject = format!("change:{change_id}");
        for (slo, good) in slo::merge_events(e.outcome) {
            slo_event(
                tx,
                slo,
                &subject,
                *repository_id,
                path,
                *merged_at,
                good,
                live,
            )?;
        }
    }
    Ok(due.len())
}

fn count_lost_runs(tx: &Connection, policy: &Policy, now_ms: i64) -> Result<usize, StoreError> {
    let live = moves_live_counters(tx, policy)?;
    let lost: Vec<(i64, i64, String, i64)> = tx
        .prepare_cached(
            "SELECT runs.id, runs.repository_id, r.path, coalesce(started_at, queued_at, created_at)
             FROM runs JOIN repositories r ON r.id = runs.repository_id
             WHERE final_counted = 0 AND trigger = 'schedule'
               AND coalesce(started_at, queued_at, created_at) <= ?1
               AND NOT EXISTS (SELECT 1 FROM slo_events e WHERE e.slo = 'runs_completed' AND e.subject = 'run:' || runs.id)",
        )?
        .query_map([now_ms - policy.lost_after_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (run_id, repository_id, path, since_ms) in &lost {
        let at_ms = since_ms + policy.lost_after_ms;
        slo_event(
            tx,
            SloId::RunsCompleted,
            &format!("run:{run_id}"),
            *repository_id,
            path,
            at_ms,
            false,
            live,
        )?;
    }
    Ok(lost.len())
}

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

fn run_view(conn: &Connection, id: i64, slice: TestSlice) -> Result<Option<RunView>, StoreError> {
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
                 ORDER BY coalesce(p.started_at, p.queued_at, p.created_at) DESC LIMIT 1",
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

fn dependencies_of(
    conn: &Connection,
    run_id: i64,
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT package, version FROM dependency_snapshots WHERE run_id = ?1")?;
    let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A run found by its source's id: what a forge needs to keep attempts and
/// triggers stable across sources (webhook and poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRun {
    pub id: i64,
    pub attempt: u32,
    pub trigger: Trigger,
}

impl Store {
    /// Whether a webhook delivery was recorded before (read-only; record it
    /// with [`Store::record_delivery`] after the event is committed).
    pub fn delivery_seen(&self, forge: Forge, delivery_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM webhook_deliveries WHERE forge = ?1 AND delivery_id = ?2",
            )?
            .query_row(params![forge.as_str(), delivery_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The stored run with this external id, if any.
    pub fn external_run(
        &self,
        repository: &RepositoryRef,
        external_id: &str,
    ) -> Result<Option<ExternalRun>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT r.id, r.attempt, r.trigger FROM runs r
                 WHERE r.repository_id = {REPOSITORY_ID} AND r.external_id = ?3"
            ))?
            .query_row(
                params![repository.forge.as_str(), repository.path, external_id],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?
            .map(|(id, attempt, trigger)| ExternalRun {
                id,
                attempt,
                trigger: trigger.parse().unwrap_or(Trigger::Other),
            }))
    }

    /// Whether any run of this commit is stored.
    pub fn has_runs_for_commit(
        &self,
        repository: &RepositoryRef,
        commit: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT 1 FROM runs r
                 WHERE r.repository_id = {REPOSITORY_ID} AND r.commit_sha = ?3 LIMIT 1"
            ))?
            .query_row(
                params![repository.forge.as_str(), repository.path, commit],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Keep a run's log section timings (GitLab `section_start`/`section_end`),
    /// replacing earlier ones.
    pub fn store_sections(
        &mut self,
        run_id: i64,
        sections: &[(String, u64)],
    ) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM run_sections WHERE run_id = ?1", [run_id])?;
        for (ord, (name, seconds)) in sections.iter().enumerate() {
            tx.execute(
                "INSERT INTO run_sections (run_id, ord, name, seconds) VALUES (?1, ?2, ?3, ?4)",
                params![
                    run_id,
                    ord as i64,
                    name,
                    i64::try_from(*seconds).unwrap_or(i64::MAX)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A run's log section timings, in the order they ended.
    pub fn sections(&self, run_id: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, seconds FROM run_sections WHERE run_id = ?1 ORDER BY ord",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored log of a run: (content, truncated).
    pub fn log(&self, run_id: i64) -> Result<Option<(String, bool)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT content, truncated FROM run_logs WHERE run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests;
