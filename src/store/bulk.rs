//! Bulk loading (an import of a million runs): many runs per transaction, so
//! that the pages they share (counters, index roots, the hourly rollup) are
//! written once per batch rather than once per run, and a WAL checkpoint at
//! the end so the database file is the whole result. Each run is stored and
//! counted exactly as [`Store::ingest_run`] would; a batch is all or nothing.

use super::{Ingested, Policy, Store, StoreError, ingest_in, tally, to_ms};
use crate::model::NewRun;
use chrono::{DateTime, Utc};

impl Store {
    /// Store `runs` in one transaction (or in the caller's, as savepoints
    /// would): all of them, with their counters, or none.
    pub fn ingest_batch(
        &mut self,
        runs: &[NewRun],
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ingested>, StoreError> {
        let tx = self.write_tx()?;
        let now_ms = to_ms(now);
        // Counters add up in memory and are written once per series, in
        // this transaction (dropped unwritten if the batch fails).
        let buffer = tally::Buffered::start();
        let out = runs
            .iter()
            .map(|run| ingest_in(&tx, run, policy, now_ms))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(buffer) = buffer {
            buffer.flush(&tx)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Run `f` in one transaction: what it writes (each write a savepoint of
    /// it) commits together, or not at all when it fails.
    pub fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Give this connection a page cache of `mib` MiB (SQLite's default is
    /// 2 MiB): a bulk load touches index pages all over the file, and each
    /// one read again from the file costs more than the memory.
    pub fn set_cache_mib(&self, mib: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -(i64::from(mib) * 1024))?;
        Ok(())
    }

    /// Prepare this connection for a bulk load: a page cache of `cache_mib`
    /// MiB, and a write-ahead log checkpointed every 64 MiB rather than 4 MiB
    /// (a page rewritten by many batches goes to the file once). Call
    /// [`Store::checkpoint`] at the end.
    pub fn tune_for_bulk_load(&self, cache_mib: u32) -> Result<(), StoreError> {
        self.set_cache_mib(cache_mib)?;
        self.conn
            .query_row("PRAGMA wal_autocheckpoint = 16384", [], |_| Ok(()))?;
        Ok(())
    }

    /// Move the write-ahead log into the database file and truncate it.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::RunState;

    #[test]
    fn a_batch_is_stored_and_counted_like_single_runs_and_a_failed_one_leaves_nothing() {
        let policy = Policy::from_config(&Config::default());
        let now = Utc::now();
        let runs: Vec<NewRun> = (0..5)
            .map(|i| NewRun {
                context: "unit".into(),
                commit: format!("c{i}"),
                external_id: Some(format!("e{i}")),
                state: if i == 2 {
                    RunState::Failure
                } else {
                    RunState::Success
                },
                queued_at: Some(now - chrono::Duration::seconds(30 + 100 * i)),
                started_at: Some(now - chrono::Duration::seconds(20)),
                finished_at: Some(now),
                tests: vec![crate::model::TestResult {
                    name: "t".into(),
                    outcome: crate::model::TestOutcome::Passed,
                    duration_seconds: Some(1.0),
                    retries: 0,
                    retry_reasons: Vec::new(),
                    message: None,
                }],
                repository: crate::model::RepositoryRef {
                    forge: crate::model::Forge::Generic,
                    path: "o/r".into(),
                },
                ..NewRun::default()
            })
            .collect();
        let mut batch = Store::open_in_memory().unwrap();
        let mut single = Store::open_in_memory().unwrap();
        batch.ingest_batch(&runs, &policy, now).unwrap();
        for r in &runs {
            single.ingest_run(r, &policy, now).unwrap();
        }
        assert_eq!(batch.run_count().unwrap(), 5);
        let state = batch.metric_state().unwrap();
        assert!(state.histograms.iter().any(|h| h.count == 5), "{state:?}");
        assert_eq!(state, single.metric_state().unwrap());

        // A failure inside the batch (a constraint) rolls all of it back.
        batch
            .conn
            .execute_batch("CREATE TRIGGER no_c3 BEFORE INSERT ON runs WHEN NEW.commit_sha = 'c3' BEGIN SELECT RAISE(ABORT, 'no'); END;")
            .unwrap();
        let fresh: Vec<NewRun> = runs
            .iter()
            .map(|r| NewRun {
                external_id: r.external_id.as_ref().map(|e| format!("{e}-again")),
                ..r.clone()
            })
            .collect();
        assert!(batch.ingest_batch(&fresh, &policy, now).is_err());
        assert_eq!(batch.run_count().unwrap(), 5, "nothing of the failed batch");
    }
}
