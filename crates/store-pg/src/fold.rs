//! The per-test counters folded after the run: a run's transaction does
//! not step the counters of its tests (`tests`, `test_days`,
//! `test_commits`); it writes one mark (`unfolded_results`, schema
//! migration 6: `mark`) holding what counting needs of its counted
//! results (those new to the store, the first of a name repeated in the
//! run, not skipped: `results.rs`). A fold ([`fold_batch`]) takes the marks
//! in their order (`seq`), steps each one's results from its tests' latest
//! state with the step both stores share (`ci_slo_store::test_step::Step`:
//! the commit's rows read at once, the tests' state kept in a
//! `pending::Pending` and the commit's changed rows by commit so that a
//! later mark of the same tests, or of the same commit, steps from them),
//! writes each test's row, each day's row (`pending::FLUSH`) and each
//! (commit, test) row of `test_commits` once, and
//! deletes the marks it folded, in one transaction: a mark is counted
//! exactly once, a fold that does not commit (rolled back, its connection
//! lost, its process killed) leaving its marks for the next one. Folds are
//! serialised by one advisory lock (`concurrent::lock_fold`), taken before
//! the marks are read: the second of two folds at once reads the marks the
//! first left.
//!
//! Who folds (`PgStore::fold`, a transaction of its own, on any of the
//! store's connections): the leader every 250 ms (`Storage::fold`, from
//! the exporter's work that runs once: `FOLD_EVERY` in src/app.rs), every read
//! of the counters first when a mark is there (`PgStore::fold_for_read`:
//! `test_stats`, `test_day_counts`, `test_runs_in_windows`, `test_index`
//! and `read_consistent` before its snapshot begins), so that every answer
//! counts every run stored before it, as SQLite's does; and retention,
//! in its own transaction, before it deletes past days and commits
//! (`prune.rs`). Several runs of one context folded at once write each of
//! their tests' rows once.
//!
//! The marks are in `seq` order of their inserts, not of their commits: a
//! mark committed after a later one was folded is folded after it. That
//! is one order in which the runs could have been stored (as the lock of
//! the tests' counters gave one before); each mark is folded once.

use crate::pending::{Counted, Counts, Pending};
use crate::statements::Sql;
use crate::{PgStore, PgStoreError};
use ci_slo_store::test_step::Step;
use postgres::types::ToSql;
use std::collections::{HashMap, HashSet};

const DAY_MS: i64 = 86_400_000;

/// The results folded in one transaction at most (the marks taken while
/// their sum stays under it, at least one): the fold's memory and the
/// time it holds its rows are bounded, a backlog is folded in several.
pub const FOLD_BATCH: i64 = 200_000;

/// Writing a run's mark: $1 run, $2 repository, $3 commit, $4 time (Unix
/// ms), $5 test ids, $6 failed, $7 retries, in the order of the run.
const MARK: &str = "INSERT INTO unfolded_results (run_id, repository_id, commit_sha, at, test_ids, failed, retries)
     VALUES ($1, $2, $3, $4, $5::bigint[]::integer[], $6::bool[], $7::bigint[]::integer[])";

/// The marks of one fold, in `seq` order, while the results before each
/// stay under $1 (the first one always).
const MARKS: &str = "SELECT seq, run_id, repository_id, commit_sha, at, test_ids::bigint[], failed,
        retries::bigint[]
     FROM (SELECT m.*, sum(cardinality(m.test_ids)) OVER (ORDER BY m.seq) AS upto FROM unfolded_results m) m
     WHERE m.upto - cardinality(m.test_ids) < $1 ORDER BY m.seq";

/// Whether there is any mark to fold.
const ANY_MARK: &str = "SELECT EXISTS (SELECT 1 FROM unfolded_results)";

/// A run's commit when it is new to the store: its unique key is shared by
/// every job of the commit, in every context, and a second transaction
/// inserting the same key waits for the first to end.
pub(crate) const NEW_COMMIT: &str =
    "INSERT INTO commits (repository_id, sha) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id";
pub(crate) const COMMIT_ID: &str = "SELECT id FROM commits WHERE repository_id = $1 AND sha = $2";

/// One counted result of a run, as its mark keeps it.
pub(crate) struct MarkedResult {
    pub(crate) test_id: i64,
    pub(crate) failed: bool,
    pub(crate) retries: u32,
}

/// Write the mark of a run's counted results (`run_id` of repository
/// `repository_id`, on commit `sha`, at `at_ms`), in the order of the run.
pub(crate) fn mark(
    tx: &mut impl Sql,
    run_id: i64,
    repository_id: i64,
    sha: &str,
    at_ms: i64,
    counted: &[MarkedResult],
) -> Result<(), postgres::Error> {
    let ids: Vec<i64> = counted.iter().map(|c| c.test_id).collect();
    let failed: Vec<bool> = counted.iter().map(|c| c.failed).collect();
    let retries: Vec<i64> = counted.iter().map(|c| i64::from(c.retries)).collect();
    tx.execute(
        MARK,
        &[
            &run_id,
            &repository_id,
            &sha,
            &at_ms,
            &ids,
            &failed,
            &retries,
        ],
    )?;
    Ok(())
}

/// A mark read back.
struct Mark {
    seq: i64,
    run_id: i64,
    repository_id: i64,
    sha: String,
    at_ms: i64,
    results: Vec<MarkedResult>,
}

impl Mark {
    fn read(r: &postgres::Row) -> Mark {
        let ids: Vec<i64> = r.get(5);
        let failed: Vec<bool> = r.get(6);
        let retries: Vec<i64> = r.get(7);
        Mark {
            seq: r.get(0),
            run_id: r.get(1),
            repository_id: r.get(2),
            sha: r.get(3),
            at_ms: r.get(4),
            results: ids
                .into_iter()
                .zip(failed)
                .zip(retries)
                .map(|((test_id, failed), retries)| MarkedResult {
                    test_id,
                    failed,
                    retries: u32::try_from(retries).unwrap_or(u32::MAX),
                })
                .collect(),
        }
    }
}

/// Fold one batch of marks (at most [`FOLD_BATCH`] results, at least one
/// mark) in the caller's transaction: the fold's lock, then the marks, the
/// steps, the counters' rows written once, the marks deleted. Returns how
/// many marks were folded (0: none was left) and how many `tests` rows
/// were written. The caller commits (or rolls back: then nothing of it
/// happened, the marks stay).
pub fn fold_batch(sql: &mut impl Sql) -> Result<(u64, u64), postgres::Error> {
    crate::concurrent::lock_fold(sql)?;
    let marks: Vec<Mark> = sql
        .query(MARKS, &[&FOLD_BATCH])?
        .iter()
        .map(Mark::read)
        .collect();
    if marks.is_empty() {
        return Ok((0, 0));
    }
    let ids: HashSet<i64> = marks
        .iter()
        .flat_map(|m| m.results.iter().map(|r| r.test_id))
        .collect();
    let fresh = last_failed(sql, &ids)?;
    let mut pending = Pending::default();
    pending.begin();
    // The `test_commits` rows the fold changed, by commit: a later mark of
    // the same commit steps from them (they are written once, at the end).
    let mut commit_rows: HashMap<i64, Stored> = HashMap::new();
    for m in &marks {
        let test_ids: Vec<i64> = m.results.iter().map(|r| r.test_id).collect();
        let (commit_id, mut stored) = match known_commit(sql, m.repository_id, &m.sha, &test_ids)? {
            Some(known) => known,
            // Retention deleted it (its runs are gone): created again, as
            // storing the run made it, to be deleted with its rows by the
            // next retention.
            None => (new_commit(sql, m.repository_id, &m.sha)?, Stored::new()),
        };
        if let Some(changed) = commit_rows.get(&commit_id) {
            stored.extend(changed.iter().map(|(t, row)| (*t, *row)));
        }
        let steps = Steps::of(&m.results, &fresh, &stored, &pending);
        pending.add_run(
            m.run_id,
            m.at_ms,
            m.at_ms.div_euclid(DAY_MS),
            &steps.counted,
        );
        let changed = commit_rows.entry(commit_id).or_default();
        for (i, test_id) in steps.commit_ids.iter().enumerate() {
            changed.insert(*test_id, (steps.commit_flags[i], steps.commit_failures[i]));
        }
    }
    write_commit_rows(sql, &commit_rows)?;
    pending.flush(|q, params| sql.execute(q, params))?;
    let seqs: Vec<i64> = marks.iter().map(|m| m.seq).collect();
    sql.execute(
        "DELETE FROM unfolded_results WHERE seq = ANY($1::bigint[])",
        &[&seqs],
    )?;
    Ok((marks.len() as u64, pending.take_flushed()))
}

/// Fold every mark in the caller's transaction (retention, before it
/// deletes what the marks could write to).
pub(crate) fn fold_all(sql: &mut impl Sql) -> Result<u64, postgres::Error> {
    let mut rows = 0;
    loop {
        let (marks, written) = fold_batch(sql)?;
        rows += written;
        if marks == 0 {
            return Ok(rows);
        }
    }
}

/// The `last_failed` of `ids` as their rows have them (None: never
/// counted). Read as one range of the primary key when the ids are mostly
/// one (a context's tests are created together), else by id.
fn last_failed(
    sql: &mut impl Sql,
    ids: &HashSet<i64>,
) -> Result<HashMap<i64, Option<bool>>, postgres::Error> {
    let (Some(low), Some(high)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(HashMap::new());
    };
    let rows = if (high - low) < 2 * ids.len() as i64 + 1_000 {
        sql.query(
            "SELECT id, last_failed FROM tests WHERE id BETWEEN $1 AND $2",
            &[low, high],
        )?
    } else {
        let wanted: Vec<i64> = ids.iter().copied().collect();
        sql.query(
            "SELECT id, last_failed FROM tests WHERE id = ANY($1::bigint[])",
            &[&wanted],
        )?
    };
    Ok(rows
        .into_iter()
        .filter(|r| ids.contains(&r.get::<_, i64>(0)))
        .map(|r| (r.get(0), r.get::<_, Option<i64>>(1).map(|f| f != 0)))
        .collect())
}

/// The id of commit `sha` of a repository, created if new.
pub(crate) fn new_commit(
    sql: &mut impl Sql,
    repository_id: i64,
    sha: &str,
) -> Result<i64, postgres::Error> {
    let key: [&(dyn ToSql + Sync); 2] = [&repository_id, &sha];
    if let Some(row) = sql.query_opt(COMMIT_ID, &key)? {
        return Ok(row.get(0));
    }
    Ok(match sql.query_opt(NEW_COMMIT, &key)? {
        Some(row) => row.get(0),
        // Another transaction created it meanwhile.
        None => sql.query_one(COMMIT_ID, &key)?.get(0),
    })
}

/// Write the `test_commits` rows a fold changed (`rows`: by commit, each
/// test's flags and failures), each once, in one statement, in the order
/// of their key.
fn write_commit_rows(
    sql: &mut impl Sql,
    rows: &HashMap<i64, Stored>,
) -> Result<(), postgres::Error> {
    let mut all: Vec<(i64, i64, i64, i64)> = rows
        .iter()
        .flat_map(|(commit, tests)| {
            tests
                .iter()
                .map(move |(test, (flags, failures))| (*commit, *test, *flags, *failures))
        })
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    all.sort_unstable();
    let column = |f: fn(&(i64, i64, i64, i64)) -> i64| all.iter().map(f).collect::<Vec<i64>>();
    let (commits, tests, flags, failures) = (
        column(|r| r.0),
        column(|r| r.1),
        column(|r| r.2),
        column(|r| r.3),
    );
    sql.execute(
        "INSERT INTO test_commits (test_id, commit_id, flags, failures)
         SELECT u.test_id, u.commit_id, u.flags, u.failures
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(commit_id, test_id, flags, failures)
         ON CONFLICT (commit_id, test_id) DO UPDATE SET flags = excluded.flags, failures = excluded.failures",
        &[&commits, &tests, &flags, &failures],
    )?;
    Ok(())
}

/// What `test_commits` holds of some tests on one commit: flags, failures.
type Stored = HashMap<i64, (i64, i64)>;

/// The run's commit, when the store knows it, and what is stored of
/// `test_ids` on it (`test_commits`: flags, failures), in one statement.
///
/// The rows are read as one range of the primary key (commit, test), from
/// the least to the greatest of `test_ids`, and those of other tests left
/// out here: a context's tests are created together, so their ids are
/// mostly one range, and one index range scan reads a run of 8,000 tests
/// in a fraction of the time of 8,000 index lookups (`= ANY` of the ids,
/// before: 10 to 20 ms of server time per posted run at 2 M results,
/// against 4 ms).
fn known_commit(
    sql: &mut impl Sql,
    repository_id: i64,
    sha: &str,
    test_ids: &[i64],
) -> Result<Option<(i64, Stored)>, postgres::Error> {
    let (low, high) = match (test_ids.iter().min(), test_ids.iter().max()) {
        (Some(low), Some(high)) => (*low, *high),
        // No test: the commit only (an empty range).
        _ => (1, 0),
    };
    let rows = sql.query(
        "SELECT c.id, tc.test_id::bigint, tc.flags::bigint, tc.failures::bigint FROM commits c
         LEFT JOIN test_commits tc ON tc.commit_id = c.id AND tc.test_id BETWEEN $3::bigint AND $4::bigint
         WHERE c.repository_id = $1 AND c.sha = $2",
        &[&repository_id, &sha, &low, &high],
    )?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let wanted: HashSet<i64> = test_ids.iter().copied().collect();
    let stored = rows
        .iter()
        .filter_map(|r| {
            let test_id: i64 = r.get::<_, Option<i64>>(1)?;
            wanted
                .contains(&test_id)
                .then(|| (test_id, (r.get(2), r.get(3))))
        })
        .collect();
    Ok(Some((first.get(0), stored)))
}

/// What a mark's results do to their tests' counters (one row per test,
/// in the order of the run): the `test_commits` rows that change, as
/// columns, and the tests' increments.
struct Steps {
    commit_ids: Vec<i64>,
    commit_flags: Vec<i64>,
    commit_failures: Vec<i64>,
    counted: Vec<Counted>,
}

impl Steps {
    /// Each step from the test's latest counted result: pending in the
    /// fold, else as its row has it (`fresh`).
    fn of(
        results: &[MarkedResult],
        fresh: &HashMap<i64, Option<bool>>,
        stored: &Stored,
        pending: &Pending,
    ) -> Steps {
        let mut s = Steps {
            commit_ids: Vec::new(),
            commit_flags: Vec::new(),
            commit_failures: Vec::new(),
            counted: Vec::with_capacity(results.len()),
        };
        for r in results {
            let last_failed = match pending.last_failed(r.test_id) {
                Some(l) => Some(l),
                None => fresh.get(&r.test_id).copied().flatten(),
            };
            let step = Step::of(
                stored.get(&r.test_id).copied(),
                last_failed,
                r.failed,
                r.retries,
            );
            if step.commit_changed {
                s.commit_ids.push(r.test_id);
                s.commit_flags.push(step.flags);
                s.commit_failures.push(step.commit_failures);
            }
            s.counted.push(Counted {
                test_id: r.test_id,
                counts: Counts {
                    runs: 1,
                    passes: step.passes,
                    failures: step.failures,
                    flips: step.flip,
                    commits: step.new_commit,
                    flaky_commits: i64::from(step.became_flaky),
                    flaky_failures: step.flaky_failures,
                },
                failed: r.failed,
                became_flaky: step.became_flaky,
            });
        }
        s
    }
}

impl PgStore {
    /// Fold every mark there is, a batch ([`FOLD_BATCH`]) per transaction
    /// of its own; the marks folded. Inside a transaction (a writer's
    /// batch, `read_consistent`'s snapshot) it does nothing: a fold would
    /// hold the fold's lock, and the rows it writes, until that one ends.
    /// The counter tables are vacuumed after when due (`vacuum.rs`).
    pub fn fold(&self) -> Result<u64, PgStoreError> {
        self.fold_reporting(&mut |_| {})
    }

    /// [`PgStore::fold`], calling `progress` with the marks folded so far
    /// after each transaction (each batch of at most [`FOLD_BATCH`]
    /// results).
    pub fn fold_reporting(&self, progress: &mut dyn FnMut(u64)) -> Result<u64, PgStoreError> {
        if self.in_batch || self.pinned.get() {
            return Ok(0);
        }
        let mut folded = 0;
        loop {
            let (marks, rows) = {
                let mut sql = self.read();
                sql.client.batch_execute("BEGIN")?;
                match fold_batch(&mut sql) {
                    Ok(done) => {
                        sql.client.batch_execute("COMMIT")?;
                        done
                    }
                    Err(e) => {
                        let _ = sql.client.batch_execute("ROLLBACK");
                        return Err(e.into());
                    }
                }
            };
            self.counter_rows_moved(rows);
            folded += marks;
            if marks == 0 {
                return Ok(folded);
            }
            progress(folded);
        }
    }

    /// The marks not folded yet, and their results: the backlog a fold
    /// would take.
    pub fn unfolded(&self) -> Result<(u64, u64), PgStoreError> {
        let row = self.read().query_one(
            "SELECT count(*), coalesce(sum(cardinality(test_ids)), 0)::bigint FROM unfolded_results",
            &[],
        )?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    /// Before a read of the per-test counters: fold when a mark is there
    /// (one `EXISTS` when none is), so that the read counts every run
    /// stored before it. Inside a transaction nothing (see
    /// [`PgStore::fold`]): `read_consistent` folds before it begins.
    pub(crate) fn fold_for_read(&self) -> Result<(), PgStoreError> {
        if self.in_batch || self.pinned.get() {
            return Ok(());
        }
        let any: bool = self.read().query_one(ANY_MARK, &[])?.get(0);
        if any {
            self.fold()?;
        }
        Ok(())
    }
}
