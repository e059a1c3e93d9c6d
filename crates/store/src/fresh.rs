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
//!   SQL sort;
//! - those per-test tables and the tests' index are written into a scratch
//!   file by a thread of their own while this connection builds the other
//!   tables' indexes (the two take both cores), then copied into the store
//!   whole, rows and index entries as they are stored (`scratch.rs`).
//!
//! `import::tests::a_fresh_load_stores_what_the_per_run_path_stores`
//! compares every table and the metric state with the per-run path.

use super::{Ingested, Policy};
use super::{Prepared, Store, StoreError, hourly, tally, to_ms};
use crate::counting::SloEvents;
use crate::fresh_runs::FreshRuns;
use crate::ingest_run::{Fresh, Inserts, ingest_checked};
use crate::scratch::{self, Scratch};
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

/// The page caches of a fresh load (MiB): the store's and its temporary
/// tables' (`temp.fresh_slo`); the bound of all of SQLite's memory; the store's while the
/// indexes are built at the end. Smaller than a per-run bulk load's: the
/// runs' rows are appended (only the last pages of each table are written
/// to), SQLite's sorts (the ORDER BY of `slo_events` and the index builds
/// at the end) each keep up to a page cache's worth in memory of their own,
/// and at the end the per-test tables are built meanwhile, in memory and in
/// their scratch file (`scratch.rs`). A sort's memory is one block, which
/// the allocator takes from the top of the heap and keeps: 8 MiB rather
/// than 16 kept the import's peak 8 MB lower, 32 MiB rather than 48 for the
/// store's cache 20 MB (docs/benchmarks.md).
const MAIN_CACHE_MIB: i64 = 32;
const TEMP_CACHE_MIB: i64 = 16;
const HEAP_MIB: i64 = 96;
const BUILD_CACHE_MIB: i64 = 8;

/// An index dropped for the load, built again at its end.
struct DroppedIndex {
    name: String,
    sql: String,
    /// An index of a per-test table: built in the scratch file.
    per_test: bool,
}

/// A fresh bulk load in progress (see the module documentation). Dropped
/// without [`FreshLoad::finish`], it rolls back: the store stays fresh.
pub struct FreshLoad<'a> {
    tx: Transaction<'a>,
    policy: &'a Policy,
    now_ms: i64,
    runs: FreshRuns,
    /// The indexes dropped for the load.
    indexes: Vec<DroppedIndex>,
    /// Where the per-test tables are built (`FreshLoad::finish`).
    scratch: Option<Scratch>,
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
                .query_map([table], |r| {
                    Ok(DroppedIndex {
                        name: r.get(0)?,
                        sql: r.get(1)?,
                        per_test: scratch::TABLES.contains(&table),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            indexes.extend(found);
        }
        for index in &indexes {
            tx.execute_batch(&format!("DROP INDEX \"{}\"", index.name))?;
        }
        let rollup = hourly::Suspended::start(&tx)?;
        let runs = FreshRuns::new(&tx, policy)?;
        Ok(FreshLoad {
            tx,
            policy,
            now_ms: to_ms(now),
            runs,
            indexes,
            scratch: None,
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
        // slo_events, the hourly rollup, each index built here, the
        // per-test tables (waited for), their copy, the commit.
        2 + self.indexes.iter().filter(|i| !i.per_test).count() + 3
    }

    /// Build the per-test tables from the staged results (in the scratch
    /// file, on a thread of their own) and, meanwhile, the dropped indexes
    /// of the other tables; copy the per-test tables in, and commit.
    /// `step(done, what)` is told before each step.
    pub fn finish(mut self, step: &mut dyn FnMut(usize, &str)) -> Result<(), StoreError> {
        if let Some(buffer) = self.buffer.take() {
            buffer.flush(&self.tx)?;
        }
        self.runs.fingerprints.write(&self.tx)?;
        self.slo_events.take();
        // What interning needed goes before the sorts below take memory.
        self.runs.staging.stop_interning();
        let per_test = self
            .indexes
            .iter()
            .filter(|i| i.per_test)
            .map(|i| i.sql.clone())
            .collect();
        let scratch = Scratch::create(&self.tx, per_test).map_err(io_error)?;
        // Disjoint borrows: the builder thread takes the staged results and
        // the scratch file, this one the transaction.
        let scratch = &*self.scratch.insert(scratch);
        let tx: &Transaction<'_> = &self.tx;
        let staging = &mut self.runs.staging;
        let indexes = &self.indexes;
        let rollup = &mut self.rollup;
        let mut done = 0;
        std::thread::scope(|s| -> Result<(), StoreError> {
            let builder = std::thread::Builder::new()
                .name("per-test tables".into())
                .spawn_scoped(s, move || scratch.build(staging))
                .map_err(io_error)?;
            let here = (|| -> Result<(), StoreError> {
                tx.pragma_update(None, "cache_size", -(BUILD_CACHE_MIB * 1024))?;
                step(done, "slo_events");
                tx.execute_batch(
                    "INSERT INTO slo_events (slo, subject, repository_id, at, good)
                         SELECT slo, subject, repository_id, at, good FROM temp.fresh_slo ORDER BY slo, subject;
                     DROP TABLE temp.fresh_slo;",
                )?;
                done += 1;
                step(done, "hourly rollup");
                if let Some(rollup) = rollup.take() {
                    rollup.finish(tx)?;
                }
                done += 1;
                for index in indexes.iter().filter(|i| !i.per_test) {
                    step(done, &format!("index {}", index.name));
                    tx.execute_batch(&index.sql)?;
                    done += 1;
                }
                Ok(())
            })();
            step(done, "tests, test_days and test_commits");
            let built = builder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            here?;
            built?;
            done += 1;
            Ok(())
        })?;
        step(done, "copying the per-test tables");
        if let Some(scratch) = &mut self.scratch {
            scratch.copy_into(&self.tx)?;
        }
        done += 1;
        step(done, "commit");
        // What follows the load on this connection (recording the merges,
        // settling: writes all over `changes`, `slo_events`, `slo_hourly`)
        // gets the load's cache back.
        self.tx
            .pragma_update(None, "cache_size", -(MAIN_CACHE_MIB * 1024))?;
        // Committed here; the write-ahead log is switched on again on drop.
        self.tx.execute_batch("COMMIT")?;
        if let Some(scratch) = &mut self.scratch {
            scratch.detach(&self.tx)?;
        }
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

/// A file or thread the load could not create (the scratch file, the
/// thread that builds the per-test tables), as a store error.
fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Engine {
        kind: crate::ErrorKind::Other,
        source: Box::new(e),
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
        if (self.journal_switched || self.foreign_keys_switched || self.scratch.is_some())
            && !self.tx.is_autocommit()
        {
            let _ = self.tx.execute_batch("ROLLBACK");
        }
        // The scratch file (deleted when it drops) is detached from the
        // store's connection, whatever stopped the load.
        if let Some(scratch) = &mut self.scratch
            && let Err(e) = scratch.detach(&self.tx)
        {
            tracing::warn!("the scratch file of a fresh load could not be detached: {e}");
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
