//! A fresh bulk load: history loaded on purpose (issue 12 §4) into a store
//! that holds no run, test, commit or SLO event yet (the first `import cockpit`).
//!
//! The whole load is one transaction (a crash leaves the store as it was,
//! still fresh), written through a rollback journal rather than the
//! store's write-ahead log when no other connection has the file open
//! (`rollback_journal`: SQLite journals no page past the file's end as it
//! was, so each new page is written once, into the file, instead of into
//! the log and again when the log is checkpointed; the store is in WAL mode
//! again when the load ends, finished or not). Each run is stored and counted by the per-run ingest code
//! (`ingest_checked`: its row, reports, failures, SLO events and metric
//! counters, exactly as `Store::ingest_batch` stores a new run, the counters
//! added up per batch of the same size), but
//!
//! - nothing is looked up that the load already knows (`FreshRuns`): whether
//!   counters move live, the repositories' ids, the changes it wrote;
//! - a failure fingerprint is upserted once, at its first occurrence in the
//!   load; the others move its row in memory, written once at the end
//!   (`fingerprints.rs`);
//! - no foreign key is checked row by row (`PRAGMA foreign_keys` is off for
//!   the load's transaction and on again when it ends, finished or not):
//!   every reference a load writes is an id it wrote itself just before (a
//!   run's repository and change, a result's, failure's or event's run), and
//!   the checks were a parent lookup for each of millions of rows (3 % of the
//!   storing thread's instructions, docs/benchmarks.md). The tests run
//!   `PRAGMA foreign_key_check` on what a load wrote;
//! - nothing is looked up first: the store holds no run this one could be
//!   (the external ids' uniqueness is checked once, when `runs_external`, the
//!   unique index of their 64-bit keys, is built again at the end, and a
//!   duplicate fails the whole load);
//! - a run's SLO events go to its `run_events` row (gathered in memory and
//!   appended once per run, in run order),
//!   other SLO events to `temp.fresh_slo`, written into `slo_events`
//!   sorted by its key at the end (the store held none);
//! - the secondary indexes of `tests` (`tests_name`, its unique text index:
//!   migration 16), `runs`, `slo_events`, `run_events`, `test_events` and
//!   `failures` are dropped for the load and built once at the end from their stored SQL
//!   (a sort rather than a random insert per row), the hourly rollup
//!   triggers suspended for the whole load (`hourly::Suspended`);
//! - tests and commits are interned in memory (`Staging`): a new commit
//!   gets its row and id at once, a new test its id (its row is written at
//!   the end, with its counters, and its unique text index is built after
//!   them: no random insert into it); each result goes straight into `results` with
//!   its test id, a run's test_success events into its `test_events` row;
//!   what the per-test counters need of the results is kept in memory as
//!   they are staged: each run's commit and time (16 bytes a run with the
//!   end of its results), and each counted result as its run's first result
//!   of that name counts (4 bytes: its test and whether it failed or passed
//!   after a retry);
//! - at the end nothing is read back from `results`: a counting sort in
//!   memory gives each test's counted results in run order (in ranges of
//!   tests, a small copy at a time), and each result moves its test's
//!   counters, its day and its commit by the per-run path's own rule
//!   (`test_step::Step`, in run order as the per-run path counts); each
//!   test's `tests` row (with its counters) and `test_days` rows (in key
//!   order) are written once (`Staging::write_tests`); then a counting sort
//!   by commit gives the `test_commits` rows in their key order (commit,
//!   test), appended (`Staging::write_test_commits`): no temporary table, no
//!   SQL sort.
//!
//! `import::tests::a_fresh_load_stores_what_the_per_run_path_stores`
//! compares every table and the metric state with the per-run path.

use super::{Ingested, Policy};
use super::{Prepared, Store, StoreError, hourly, tally, to_ms};
use crate::counting::SloEvents;
use crate::fresh_runs::FreshRuns;
use crate::ingest_run::{Fresh, Inserts, ingest_checked};
use chrono::{DateTime, Utc};
use rusqlite::{Transaction, TransactionBehavior};

/// Tables whose secondary indexes a fresh load builds at the end.
const INDEXED_AT_THE_END: [&str; 6] = [
    "tests",
    "runs",
    "slo_events",
    "run_events",
    "test_events",
    "failures",
];

/// The page caches of a fresh load (MiB): the store's and the scratch
/// tables'; while the per-test rows are written; while the rest is built.
/// Smaller than a per-run bulk load's: SQLite's sorts (the ORDER BY of
/// `slo_events` and the index builds at the end) each keep up to a page
/// cache's worth in memory of their own, and the per-test counting keeps
/// its sorted results in memory.
const MAIN_CACHE_MIB: i64 = 48;
const TEMP_CACHE_MIB: i64 = 16;
const HEAP_MIB: i64 = 96;
const BUILD_CACHE_MIB: i64 = 16;
const TESTS_CACHE_MIB: i64 = 48;

/// A fresh bulk load in progress (see the module documentation). Dropped
/// without [`FreshLoad::finish`], it rolls back: the store stays fresh.
pub struct FreshLoad<'a> {
    tx: Transaction<'a>,
    policy: &'a Policy,
    now_ms: i64,
    runs: FreshRuns,
    /// (name, SQL) of the indexes dropped for the load.
    indexes: Vec<(String, String)>,
    rollup: Option<hourly::Suspended>,
    /// The metric counters of the batch being stored.
    buffer: Option<tally::Buffered>,
    stored: usize,
    slo_events: Option<SloEvents>,
    /// The store's write-ahead log was switched off for the load (a
    /// rollback journal, see [`Store::fresh_load`]): switched on again when
    /// the load ends, committed or not.
    journal_switched: bool,
    /// Foreign keys were enforced before the load (see the module
    /// documentation): enforced again when it ends, committed or not.
    foreign_keys_switched: bool,
}

impl Store {
    /// Whether a bulk load may take the fresh path: the store holds no run,
    /// test, commit, test event or SLO event, and what is loaded is history loaded on
    /// purpose (the store never served, or `policy.history`).
    pub fn accepts_fresh_load(&self, policy: &Policy) -> Result<bool, StoreError> {
        let any = |table: &str| -> Result<bool, StoreError> {
            Ok(self
                .conn
                .query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| {
                    r.get(0)
                })?)
        };
        if any("runs")?
            || any("tests")?
            || any("commits")?
            || any("test_events")?
            || any("slo_events")?
            || any("run_events")?
        {
            return Ok(false);
        }
        Ok(policy.history || self.meta(super::META_SERVING_SINCE)?.is_none())
    }

    /// Begin a fresh bulk load (call only when [`Store::accepts_fresh_load`]).
    pub fn fresh_load<'a>(
        &'a mut self,
        policy: &'a Policy,
        now: DateTime<Utc>,
    ) -> Result<FreshLoad<'a>, StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -(MAIN_CACHE_MIB * 1024))?;
        // And all of SQLite's memory (caches, sorters) kept near a bound:
        // past it, SQLite frees cache pages before it allocates.
        self.conn.query_row(
            &format!("PRAGMA soft_heap_limit = {}", HEAP_MIB << 20),
            [],
            |_| Ok(()),
        )?;
        // The scratch tables' own page cache (temporary tables have one).
        self.conn
            .pragma_update(Some("temp"), "cache_size", -(TEMP_CACHE_MIB * 1024))?;
        let journal_switched = rollback_journal(&self.conn)?;
        // The setting changes only outside a transaction.
        let foreign_keys_switched: bool = self
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        if foreign_keys_switched {
            self.conn.pragma_update(None, "foreign_keys", false)?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TEMP TABLE fresh_slo (
                 slo           TEXT NOT NULL,
                 subject       TEXT NOT NULL,
                 repository_id INTEGER NOT NULL,
                 at            INTEGER NOT NULL,
                 good          INTEGER NOT NULL
             );",
        )?;
        let mut indexes = Vec::new();
        for table in INDEXED_AT_THE_END {
            let mut stmt = tx.prepare(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL
                 ORDER BY rowid",
            )?;
            let found = stmt
                .query_map([table], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?
                .collect::<Result<Vec<(String, String)>, _>>()?;
            indexes.extend(found);
        }
        for (name, _) in &indexes {
            tx.execute_batch(&format!("DROP INDEX \"{name}\""))?;
        }
        let rollup = hourly::Suspended::start(&tx)?;
        let runs = FreshRuns::new(&tx, policy)?;
        Ok(FreshLoad {
            tx,
            policy,
            now_ms: to_ms(now),
            runs,
            indexes,
            rollup,
            buffer: None,
            stored: 0,
            slo_events: Some(SloEvents::start()),
            journal_switched,
            foreign_keys_switched,
        })
    }
}

impl FreshLoad<'_> {
    /// Store a batch of new runs (their metric counters added up over the
    /// batch and written once, as `Store::ingest_batch` does).
    /// `closes_batch`: the counters added up since the last batch closed are
    /// written now (a batch may come in several pieces).
    pub fn store_batch(
        &mut self,
        runs: &[Prepared],
        closes_batch: bool,
    ) -> Result<Vec<Ingested>, StoreError> {
        if self.buffer.is_none() {
            self.buffer = tally::Buffered::start();
        }
        let mut out = Vec::with_capacity(runs.len());
        let mut inserts = Inserts::prepare(&self.tx)?;
        for p in runs {
            out.push(ingest_checked(
                &self.tx,
                &p.run,
                &p.hash,
                p.future_times,
                self.policy,
                self.now_ms,
                Some(Fresh {
                    runs: &mut self.runs,
                    inserts: &mut inserts,
                    external_key: p.external_key,
                }),
            )?);
        }
        drop(inserts);
        if let Some(events) = &self.slo_events {
            events.write_run_events(&self.tx)?;
        }
        if closes_batch {
            if let Some(buffer) = self.buffer.take() {
                buffer.flush(&self.tx)?;
            }
            if let Some(rollup) = &self.rollup {
                rollup.flush(&self.tx)?;
            }
        }
        self.stored += runs.len();
        Ok(out)
    }

    /// The steps of [`FreshLoad::finish`], for progress.
    pub fn steps(&self) -> usize {
        2 + self.indexes.len() + 3
    }

    /// Build the per-test tables from the staged results, the dropped
    /// indexes again, and commit. `step(done, what)` is told before each step.
    pub fn finish(mut self, step: &mut dyn FnMut(usize, &str)) -> Result<(), StoreError> {
        if let Some(buffer) = self.buffer.take() {
            buffer.flush(&self.tx)?;
        }
        self.runs.fingerprints.write(&self.tx)?;
        self.slo_events.take();
        // What interning needed goes before the sorts below take memory.
        self.runs.staging.stop_interning();
        let tx = &self.tx;
        let mut done = 0;
        step(done, "tests and test_days");
        // No sort of SQLite's runs while the per-test rows are written (the
        // counted results are sorted in memory, see `Staging`): the cache
        // holds as many of the pages written as it can (the tests' text
        // index is dropped for the load and built after them, from sorted
        // keys).
        tx.pragma_update(None, "cache_size", -(TESTS_CACHE_MIB * 1024))?;
        self.runs.staging.write_tests(tx)?;
        done += 1;
        step(done, "test_commits");
        self.runs.staging.write_test_commits(tx)?;
        tx.pragma_update(None, "cache_size", -(BUILD_CACHE_MIB * 1024))?;
        done += 1;
        step(done, "slo_events");
        tx.execute_batch(
            "INSERT INTO slo_events (slo, subject, repository_id, at, good)
                 SELECT slo, subject, repository_id, at, good FROM temp.fresh_slo ORDER BY slo, subject;
             DROP TABLE temp.fresh_slo;",
        )?;
        done += 1;
        step(done, "hourly rollup");
        if let Some(rollup) = self.rollup.take() {
            rollup.finish(tx)?;
        }
        done += 1;
        for (name, sql) in &self.indexes {
            step(done, &format!("index {name}"));
            tx.execute_batch(sql)?;
            done += 1;
        }
        step(done, "commit");
        // What follows the load on this connection (recording the merges,
        // settling: writes all over `changes`, `slo_events`, `slo_hourly`)
        // gets the load's cache back.
        tx.pragma_update(None, "cache_size", -(MAIN_CACHE_MIB * 1024))?;
        // Committed here; the write-ahead log is switched on again on drop.
        self.tx.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Runs stored so far.
    pub fn stored(&self) -> usize {
        self.stored
    }

    /// Test results staged so far.
    pub fn staged(&self) -> usize {
        self.runs.staging.staged
    }
}

/// Switch `conn` from its write-ahead log to a rollback journal for a fresh
/// load; whether it was switched (only from WAL, and only when no other
/// connection has the file open: SQLite refuses otherwise and the load
/// keeps the log). Every page a fresh load writes lies past the end of the
/// file as it was, and SQLite journals no such page: the journal holds the
/// few pages the store had (its schema), each new page is written once, into
/// the file, instead of into the log and again into the file when the log
/// is checkpointed. A crash rolls the journal back (the store stays fresh).
fn rollback_journal(conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(false);
    }
    match conn.query_row("PRAGMA journal_mode = DELETE", [], |r| {
        r.get::<_, String>(0)
    }) {
        Ok(mode) => Ok(mode.eq_ignore_ascii_case("delete")),
        // Another connection has the file open.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

impl Drop for FreshLoad<'_> {
    fn drop(&mut self) {
        // A load that did not finish rolls back first (the journal mode and
        // the foreign keys change only outside a transaction); the store is
        // in WAL mode and enforces foreign keys again either way (every
        // `Store::open` sets both too).
        if (self.journal_switched || self.foreign_keys_switched) && !self.tx.is_autocommit() {
            let _ = self.tx.execute_batch("ROLLBACK");
        }
        if self.foreign_keys_switched
            && let Err(e) = self.tx.pragma_update(None, "foreign_keys", true)
        {
            tracing::warn!(
                "the store's foreign keys could not be enforced again after a fresh load: {e}"
            );
        }
        if self.journal_switched
            && let Err(e) = self.tx.pragma_update(None, "journal_mode", "WAL")
        {
            tracing::warn!(
                "the store's write-ahead log could not be switched on again after a fresh load: {e}"
            );
        }
    }
}
