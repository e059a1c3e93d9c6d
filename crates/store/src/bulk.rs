//! Bulk loading (an import of a million runs): many runs per transaction, so
//! that the pages they share (counters, index roots, the hourly rollup) are
//! written once per batch rather than once per run, and a WAL checkpoint at
//! the end so the database file is the whole result. Each run is stored and
//! counted exactly as [`Store::ingest_run`] would; a batch is all or nothing.
//! What a batch adds up in memory and writes once before its commit: the
//! metric counters (`tally::Buffered`), the per-test counters
//! (`results::Batched`) and the hourly SLO rollup (`hourly::Suspended`).

use super::{Ingested, Policy, Store, StoreError, hourly, results, tally, to_ms};
use crate::ingest_run::ingest_in;
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
        // So do the per-test counters (results::Batched): each test, day,
        // commit and run row they move is written once.
        let buffer = tally::Buffered::start();
        let tests = results::Batched::start();
        // And the hourly SLO rollup (hourly::Suspended): its triggers are
        // suspended in this transaction, each hourly row written once.
        let rollup = hourly::Suspended::start(&tx)?;
        let out = runs
            .iter()
            .map(|run| ingest_in(&tx, run, policy, now_ms))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(tests) = tests {
            tests.flush(&tx)?;
        }
        if let Some(rollup) = rollup {
            rollup.finish(&tx)?;
        }
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
        let triggers = |s: &Store| -> Vec<String> {
            s.conn
                .prepare("SELECT sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let before = triggers(&batch);
        assert!(batch.ingest_batch(&fresh, &policy, now).is_err());
        assert_eq!(batch.run_count().unwrap(), 5, "nothing of the failed batch");
        assert_eq!(triggers(&batch), before, "the rollup triggers are back");
        // and a batch that succeeds leaves them as they were too
        batch.ingest_batch(&fresh[..2], &policy, now).unwrap();
        assert_eq!(triggers(&batch), before);
    }

    /// Every row of the per-test tables (and what they roll up into), in key order.
    fn per_test_rows(store: &Store) -> Vec<String> {
        let mut rows = Vec::new();
        for (table, order) in [
            ("tests", "id"),
            ("commits", "id"),
            ("results", "run_id, test_id"),
            ("test_commits", "commit_id, test_id"),
            ("test_days", "test_id, day"),
            ("test_events", "run_id"),
            ("slo_hourly", "repository_id, hour, slo"),
        ] {
            let mut stmt = store
                .conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .unwrap();
            let columns = stmt.column_count();
            let mut q = stmt.query([]).unwrap();
            while let Some(r) = q.next().unwrap() {
                let values: Vec<rusqlite::types::Value> =
                    (0..columns).map(|i| r.get(i).unwrap()).collect();
                rows.push(format!("{table} {values:?}"));
            }
        }
        rows
    }

    #[test]
    fn batched_per_test_counters_equal_the_single_run_path() {
        use crate::model::{TestOutcome, TestResult};
        let policy = Policy::from_config(&Config::default());
        let now = Utc::now();
        let day = chrono::Duration::days(1);
        let test = |name: &str, outcome: TestOutcome, retries: u32| TestResult {
            name: name.into(),
            outcome,
            duration_seconds: Some(1.5),
            retries,
            retry_reasons: (0..retries).map(|i| format!("reason {i}")).collect(),
            message: None,
        };
        // 24 runs over four days, on eight commits (three runs each), in two contexts.
        let runs: Vec<NewRun> = (0..24i64)
            .map(|i| {
                let finished = now - day * 4 + chrono::Duration::hours(4 * i);
                let failed = |yes: bool| {
                    if yes {
                        TestOutcome::Failed
                    } else {
                        TestOutcome::Passed
                    }
                };
                let tests = vec![
                    test("stable", TestOutcome::Passed, 0),
                    // flips at every run
                    test("flips", failed(i % 2 == 1), 0),
                    // fails on the first run of a commit, passes on the next: flaky commits
                    test("flaky", failed(i % 3 == 0), 0),
                    // passes after in-run retries now and then
                    test("retried", TestOutcome::Passed, u32::from(i % 5 == 0) * 2),
                    // fails after retries, errors, is skipped
                    test("broken", TestOutcome::Failed, u32::from(i % 4 == 0)),
                    test(
                        "errors",
                        if i % 6 == 0 {
                            TestOutcome::Errored
                        } else {
                            TestOutcome::Passed
                        },
                        0,
                    ),
                    test("skipped", TestOutcome::Skipped, 0),
                    // a name given twice in one run counts once
                    test("stable", TestOutcome::Failed, 0),
                ];
                NewRun {
                    context: if i % 7 == 3 {
                        "other".into()
                    } else {
                        "unit".into()
                    },
                    commit: format!("c{}", i / 3),
                    external_id: Some(format!("e{i}")),
                    state: if tests.iter().any(|t| t.outcome == TestOutcome::Failed) {
                        RunState::Failure
                    } else {
                        RunState::Success
                    },
                    queued_at: Some(finished - chrono::Duration::seconds(90)),
                    started_at: Some(finished - chrono::Duration::seconds(60)),
                    finished_at: Some(finished),
                    tests,
                    repository: crate::model::RepositoryRef {
                        forge: crate::model::Forge::Generic,
                        path: "o/r".into(),
                    },
                    ..NewRun::default()
                }
            })
            .collect();
        // An unfinished run whose tests are stored, then finished with more tests
        // in a later batch (an update replacing its results), and a replay.
        let mut open = runs[20].clone();
        open.external_id = Some("open".into());
        open.state = RunState::Running;
        open.finished_at = None;
        open.tests.truncate(3);
        let mut closed = runs[21].clone();
        closed.external_id = Some("open".into());

        // The first runs go one at a time into both stores, so a batch starts
        // from stored counters (tests seen before, commits half counted).
        let mut batch = Store::open_in_memory().unwrap();
        let mut single = Store::open_in_memory().unwrap();
        for r in &runs[..4] {
            batch.ingest_run(r, &policy, now).unwrap();
            single.ingest_run(r, &policy, now).unwrap();
        }
        let mut first: Vec<NewRun> = runs[4..14].to_vec();
        first.push(open.clone());
        first.push(runs[5].clone());
        let mut second: Vec<NewRun> = runs[14..].to_vec();
        second.push(closed.clone());
        second.push(runs[14].clone());
        for b in [&first, &second] {
            batch.ingest_batch(b, &policy, now).unwrap();
            for r in b.iter() {
                single.ingest_run(r, &policy, now).unwrap();
            }
        }

        let (rows, expected) = (per_test_rows(&batch), per_test_rows(&single));
        for (row, want) in rows.iter().zip(&expected) {
            assert_eq!(row, want, "the first row that differs");
        }
        assert_eq!(rows.len(), expected.len());
        assert_eq!(
            batch.metric_state().unwrap(),
            single.metric_state().unwrap()
        );
        // What the comparison covers really happened.
        let one = |sql: &str| -> i64 { batch.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(one("SELECT count(*) FROM runs"), 25);
        assert!(one("SELECT flips FROM tests WHERE name = 'flips' AND context = 'unit'") > 5);
        assert!(
            one("SELECT flaky_commits FROM tests WHERE name = 'flaky' AND context = 'unit'") >= 5
        );
        assert!(
            one("SELECT flaky_commits FROM tests WHERE name = 'retried' AND context = 'unit'") >= 2
        );
        assert!(one("SELECT count(DISTINCT day) FROM test_days") >= 4);
        assert!(one("SELECT max(failures) FROM test_commits") >= 2);
        assert!(one("SELECT count(*) FROM tests WHERE first_seen_flaky IS NOT NULL") >= 2);
        assert_eq!(
            one(
                "SELECT count(*) FROM results WHERE run_id = (SELECT id FROM runs WHERE external_id = 'open')"
            ),
            7,
            "the finished run replaced the open one's results"
        );
    }
}
