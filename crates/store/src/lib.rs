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
mod error;
mod forge_state;
mod fresh;
pub mod github;
mod hourly;
mod logs;
mod plausible;
mod policy;
mod prune;
mod reads;
mod results;
mod revision;
mod run_view;
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
use ci_slo_core::model::{
    DataQualityIssue, FailureEvidence, Forge, MergeOutcome, NewRun, RepositoryRef, RunState,
    Trigger, durations,
};
use ci_slo_core::slo::{self, ContextAttempt, SloId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use std::path::Path;
use tally::{ExemplarRef, Labels};

pub use error::StoreError;
pub use forge_state::{ExternalRun, SyncState};
pub use policy::Policy;
use policy::moves_live_counters;
pub use prune::PruneStats;
pub use reads::{BucketRow, CounterRow, HistogramRow, MetricState};
pub use run_view::{ChangeView, ReportView, RunView, TestSlice, TestView};

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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleStats {
    pub changes_decided: usize,
    pub runs_lost: usize,
    /// Runs counted with trigger `other` after waiting `trigger_wait` for theirs.
    pub triggers_expired: usize,
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

impl Store {}

#[cfg(test)]
mod tests;
