//! The per-test counters a fold moves, kept in memory until it writes
//! them, and the test ids the store has learned.
//!
//! Every counted run of N tests moves N rows of `tests` and N of
//! `test_days`. A fold of several runs of one repository and context
//! (`fold.rs`: the marks the runs left) would write each of those rows once
//! per run; here each run's increments (and the latest `last_failed`, last
//! failure, first and last seen, first seen flaky) are added to what the
//! fold already has pending for the test and its day, a later run
//! stepping from that pending state, and [`Pending::flush`] writes each row
//! once, just before the fold deletes its marks and commits. Folds hold
//! one lock (`concurrent::lock_fold`) to their commit, so no other writer
//! moves these rows meanwhile.
//!
//! Savepoints: what a write or a writer's job adds is a layer of its own
//! ([`Pending::open`]); kept, it is merged into the layer below
//! ([`Pending::release`]); rolled back, it is dropped whole
//! ([`Pending::discard`]), as its rows would be. A layer holds each test it
//! moved as its whole pending state (not as a difference), so merging is
//! overwriting and dropping is forgetting.
//!
//! Test ids: a test's id never changes and its row is never deleted, so
//! the store remembers the ids of (repository, context, name) once their
//! transaction committed (learned in a layer, kept with it, remembered at
//! the commit: an id created by a rolled-back write is forgotten with it).

use postgres::types::ToSql;
use std::collections::HashMap;

/// What runs add to one test's counters (or its day's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) runs: i64,
    pub(crate) passes: i64,
    pub(crate) failures: i64,
    pub(crate) flips: i64,
    pub(crate) commits: i64,
    pub(crate) flaky_commits: i64,
    pub(crate) flaky_failures: i64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.runs += o.runs;
        self.passes += o.passes;
        self.failures += o.failures;
        self.flips += o.flips;
        self.commits += o.commits;
        self.flaky_commits += o.flaky_commits;
        self.flaky_failures += o.flaky_failures;
    }
}

/// One counted result of a run: its test, what it adds, whether it failed
/// and whether its test became flaky on its commit.
pub(crate) struct Counted {
    pub(crate) test_id: i64,
    pub(crate) counts: Counts,
    pub(crate) failed: bool,
    pub(crate) became_flaky: bool,
}

/// A test's pending state: its increments and what its row is set to.
#[derive(Clone, Debug)]
struct TestPending {
    counts: Counts,
    last_failed: bool,
    /// The latest failed run and its time.
    last_failure: Option<(i64, i64)>,
    first_seen: i64,
    last_seen: i64,
    /// The time of the first run that made it flaky.
    first_seen_flaky: Option<i64>,
}

/// Names to ids, by repository and context.
type Ids = HashMap<i64, HashMap<String, HashMap<String, i64>>>;

#[derive(Default)]
struct Layer {
    tests: HashMap<i64, TestPending>,
    /// By (test, day).
    days: HashMap<(i64, i64), Counts>,
    learned: Ids,
}

/// See the module's documentation.
#[derive(Default)]
pub(crate) struct Pending {
    layers: Vec<Layer>,
    known: Ids,
    /// `tests` rows written since [`Pending::take_flushed`].
    flushed: u64,
}

/// The start of both statements that write what is pending: the pending
/// tests unnested as `u` ($1 to $14, see [`FLUSH`]) and their `tests` rows
/// updated (`t`).
macro_rules! update_tests {
    () => {
        "WITH u AS (
        SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
                             $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[])
        AS u(id, runs, passes, failures, flips, commits, flaky, flaky_failures, failed, failure_run,
             failure_at, first_seen, last_seen, first_flaky)),
     t AS (
        UPDATE tests t SET runs = t.runs + u.runs, passes = t.passes + u.passes,
            failures = t.failures + u.failures, flips = t.flips + u.flips, commits = t.commits + u.commits,
            flaky_commits = t.flaky_commits + u.flaky, flaky_failures = t.flaky_failures + u.flaky_failures,
            last_failed = u.failed,
            first_seen = least(coalesce(t.first_seen, u.first_seen), u.first_seen),
            last_seen = greatest(coalesce(t.last_seen, u.last_seen), u.last_seen),
            last_failure_run_id = coalesce(u.failure_run, t.last_failure_run_id),
            last_failure_at = CASE WHEN u.failure_run IS NULL THEN t.last_failure_at ELSE u.failure_at END,
            first_seen_flaky = coalesce(t.first_seen_flaky, u.first_flaky)
        FROM u WHERE t.id = u.id)"
    };
}

/// Writing what is pending: `tests` ($1 ids, $2 runs, passes, failures,
/// flips, commits, flaky commits, $8 flaky failures, $9 1 when last
/// failed, $10 the last failed run, $11 its time, $12 first seen, $13 last
/// seen, $14 first seen flaky) and `test_days` ($15 test ids, $16 days,
/// $17 runs to $23 flaky failures; updated where the row exists, inserted
/// where not, without an upsert's conflict check: under the fold's lock,
/// `concurrent::lock_fold`).
const FLUSH: &str = concat!(
    update_tests!(),
    ",
     v AS (
        SELECT * FROM unnest($15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[],
                             $20::bigint[], $21::bigint[], $22::bigint[], $23::bigint[])
        AS v(id, day, runs, passes, failures, flips, commits, flaky, flaky_failures)),
     d AS (
        UPDATE test_days d SET runs = d.runs + v.runs, passes = d.passes + v.passes,
            failures = d.failures + v.failures, flips = d.flips + v.flips, commits = d.commits + v.commits,
            flaky_commits = d.flaky_commits + v.flaky, flaky_failures = d.flaky_failures + v.flaky_failures
        FROM v WHERE d.test_id = v.id AND d.day = v.day
        RETURNING d.test_id, d.day)
     INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
     SELECT v.id, v.day, v.runs, v.passes, v.failures, v.flips, v.commits, v.flaky, v.flaky_failures FROM v
     WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.test_id = v.id AND d.day = v.day)"
);

/// Writing what is pending when it is one day's: every pending test has
/// one pending day, the same for all, whose increments are the test's own
/// (a run stored on its own, or runs of one UTC day). `tests` as in
/// [`FLUSH`] ($1 to $14), and the rows of day $15 of `test_days` from the
/// same rows: 14 arrays to send and unnest instead of 23 (at 8,000 tests a
/// run, 8 % of the statement's time measured on its own).
const FLUSH_ONE_DAY: &str = concat!(
    update_tests!(),
    ",
     d AS (
        UPDATE test_days d SET runs = d.runs + u.runs, passes = d.passes + u.passes,
            failures = d.failures + u.failures, flips = d.flips + u.flips, commits = d.commits + u.commits,
            flaky_commits = d.flaky_commits + u.flaky, flaky_failures = d.flaky_failures + u.flaky_failures
        FROM u WHERE d.test_id = u.id AND d.day = $15::bigint
        RETURNING d.test_id)
     INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits, flaky_failures)
     SELECT u.id, $15::bigint, u.runs, u.passes, u.failures, u.flips, u.commits, u.flaky, u.flaky_failures
     FROM u WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.test_id = u.id)"
);

impl Pending {
    /// A transaction begins: nothing is pending.
    pub(crate) fn begin(&mut self) {
        self.layers.clear();
        self.layers.push(Layer::default());
    }

    /// A savepoint (a write, a writer's job) begins.
    pub(crate) fn open(&mut self) {
        self.layers.push(Layer::default());
    }

    /// The latest savepoint is kept: what it added is the transaction's.
    pub(crate) fn release(&mut self) {
        let Some(top) = self.layers.pop() else {
            return;
        };
        let Some(below) = self.layers.last_mut() else {
            return;
        };
        below.tests.extend(top.tests);
        below.days.extend(top.days);
        merge_ids(&mut below.learned, top.learned);
    }

    /// The latest savepoint is rolled back: what it added is gone.
    pub(crate) fn discard(&mut self) {
        self.layers.pop();
    }

    /// The transaction is rolled back (or lost): nothing is pending.
    pub(crate) fn clear(&mut self) {
        self.layers.clear();
    }

    /// The transaction ended: committed, the ids it learned are known
    /// ([`Pending::committed`]); else nothing of it stays ([`Pending::clear`]).
    pub(crate) fn ended(&mut self, committed: bool) {
        if committed {
            self.committed();
        } else {
            self.clear();
        }
    }

    /// The transaction committed: the ids it learned are known.
    pub(crate) fn committed(&mut self) {
        for layer in std::mem::take(&mut self.layers) {
            merge_ids(&mut self.known, layer.learned);
        }
    }

    fn test(&self, id: i64) -> Option<&TestPending> {
        self.layers.iter().rev().find_map(|l| l.tests.get(&id))
    }

    fn day(&self, key: (i64, i64)) -> Option<Counts> {
        self.layers
            .iter()
            .rev()
            .find_map(|l| l.days.get(&key))
            .copied()
    }

    /// Whether test `id`'s latest counted result in this transaction
    /// failed; None when it has none.
    pub(crate) fn last_failed(&self, id: i64) -> Option<bool> {
        self.test(id).map(|t| t.last_failed)
    }

    /// Add a run's counted results (`run_id`, at `at_ms`, of UTC day
    /// `day`) to what is pending.
    pub(crate) fn add_run(&mut self, run_id: i64, at_ms: i64, day: i64, counted: &[Counted]) {
        for c in counted {
            let mut t = self.test(c.test_id).cloned().unwrap_or(TestPending {
                counts: Counts::default(),
                last_failed: c.failed,
                last_failure: None,
                first_seen: at_ms,
                last_seen: at_ms,
                first_seen_flaky: None,
            });
            t.counts.add(&c.counts);
            t.last_failed = c.failed;
            if c.failed {
                t.last_failure = Some((run_id, at_ms));
            }
            t.first_seen = t.first_seen.min(at_ms);
            t.last_seen = t.last_seen.max(at_ms);
            if c.became_flaky && t.first_seen_flaky.is_none() {
                t.first_seen_flaky = Some(at_ms);
            }
            let mut d = self.day((c.test_id, day)).unwrap_or_default();
            d.add(&c.counts);
            let top = self.top();
            top.tests.insert(c.test_id, t);
            top.days.insert((c.test_id, day), d);
        }
    }

    fn top(&mut self) -> &mut Layer {
        if self.layers.is_empty() {
            self.layers.push(Layer::default());
        }
        self.layers.last_mut().expect("a layer")
    }

    /// The ids of `names` of one repository and context that are known
    /// (committed, or learned by this transaction).
    pub(crate) fn known_ids<'n>(
        &self,
        repository_id: i64,
        context: &str,
        names: &[&'n str],
    ) -> HashMap<&'n str, i64> {
        let maps: Vec<&HashMap<String, i64>> = std::iter::once(&self.known)
            .chain(self.layers.iter().map(|l| &l.learned))
            .filter_map(|ids| ids.get(&repository_id)?.get(context))
            .collect();
        names
            .iter()
            .filter_map(|n| Some((*n, maps.iter().find_map(|m| m.get(*n)).copied()?)))
            .collect()
    }

    /// Test `id` is (repository, context, name): remembered once the
    /// transaction commits.
    pub(crate) fn learn(&mut self, repository_id: i64, context: &str, name: &str, id: i64) {
        let top = self.top();
        top.learned
            .entry(repository_id)
            .or_default()
            .entry(context.to_string())
            .or_default()
            .insert(name.to_string(), id);
    }

    /// Write what is pending (the transaction's only layer left, just
    /// before its `COMMIT`): each test's row and each day's row once, in
    /// one statement that `execute` runs (on the transaction's connection,
    /// prepared).
    pub(crate) fn flush(
        &mut self,
        execute: impl FnOnce(&'static str, &[&(dyn ToSql + Sync)]) -> Result<u64, postgres::Error>,
    ) -> Result<(), postgres::Error> {
        debug_assert!(self.layers.len() <= 1, "flushed inside a savepoint");
        let Some(layer) = self.layers.last() else {
            return Ok(());
        };
        self.flushed += write(layer, execute)?;
        Ok(())
    }

    /// `tests` rows written since the last call.
    pub(crate) fn take_flushed(&mut self) -> u64 {
        std::mem::take(&mut self.flushed)
    }
}

fn merge_ids(into: &mut Ids, from: Ids) {
    for (repository, contexts) in from {
        let into = into.entry(repository).or_default();
        for (context, names) in contexts {
            into.entry(context).or_default().extend(names);
        }
    }
}

/// The day of `layer`'s pending days when they are one day's
/// ([`FLUSH_ONE_DAY`]): each pending test has that day pending, with the
/// test's own increments, and nothing else is pending of `test_days`.
fn one_day(layer: &Layer) -> Option<i64> {
    let mut day = None;
    let same = layer.days.len() == layer.tests.len()
        && layer.days.iter().all(|((id, d), counts)| {
            *day.get_or_insert(*d) == *d && layer.tests.get(id).is_some_and(|t| t.counts == *counts)
        });
    if same { day } else { None }
}

/// Write `layer`'s pending rows in one statement ([`FLUSH`], or
/// [`FLUSH_ONE_DAY`] when they are one day's); how many `tests` rows it
/// wrote.
fn write(
    layer: &Layer,
    execute: impl FnOnce(&'static str, &[&(dyn ToSql + Sync)]) -> Result<u64, postgres::Error>,
) -> Result<u64, postgres::Error> {
    if layer.tests.is_empty() {
        return Ok(0);
    }
    let mut tests: Vec<(&i64, &TestPending)> = layer.tests.iter().collect();
    tests.sort_unstable_by_key(|(id, _)| **id);
    let t = |f: fn(&TestPending) -> i64| -> Vec<i64> { tests.iter().map(|(_, p)| f(p)).collect() };
    let to = |f: fn(&TestPending) -> Option<i64>| -> Vec<Option<i64>> {
        tests.iter().map(|(_, p)| f(p)).collect()
    };
    let columns = [
        t(|p| p.counts.runs),
        t(|p| p.counts.passes),
        t(|p| p.counts.failures),
        t(|p| p.counts.flips),
        t(|p| p.counts.commits),
        t(|p| p.counts.flaky_commits),
        t(|p| p.counts.flaky_failures),
        t(|p| i64::from(p.last_failed)),
    ];
    let ids: Vec<i64> = tests.iter().map(|(id, _)| **id).collect();
    let optional = [
        to(|p| p.last_failure.map(|f| f.0)),
        to(|p| p.last_failure.map(|f| f.1)),
    ];
    let seen = [t(|p| p.first_seen), t(|p| p.last_seen)];
    let first_flaky = to(|p| p.first_seen_flaky);
    let day = one_day(layer);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
    params.extend(columns.iter().map(|c| c as &(dyn ToSql + Sync)));
    params.extend(optional.iter().map(|c| c as &(dyn ToSql + Sync)));
    params.extend(seen.iter().map(|c| c as &(dyn ToSql + Sync)));
    params.push(&first_flaky);
    if let Some(day) = &day {
        params.push(day);
        execute(FLUSH_ONE_DAY, &params)?;
        return Ok(ids.len() as u64);
    }
    let mut days: Vec<((i64, i64), Counts)> = layer.days.iter().map(|(k, d)| (*k, *d)).collect();
    days.sort_unstable_by_key(|(k, _)| *k);
    let d = |f: fn(&((i64, i64), Counts)) -> i64| -> Vec<i64> { days.iter().map(f).collect() };
    let day_columns = [
        d(|(k, _)| k.0),
        d(|(k, _)| k.1),
        d(|(_, c)| c.runs),
        d(|(_, c)| c.passes),
        d(|(_, c)| c.failures),
        d(|(_, c)| c.flips),
        d(|(_, c)| c.commits),
        d(|(_, c)| c.flaky_commits),
        d(|(_, c)| c.flaky_failures),
    ];
    params.extend(day_columns.iter().map(|c| c as &(dyn ToSql + Sync)));
    execute(FLUSH, &params)?;
    Ok(ids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(test_id: i64, failed: bool) -> Counted {
        Counted {
            test_id,
            counts: Counts {
                runs: 1,
                passes: i64::from(!failed),
                failures: i64::from(failed),
                ..Counts::default()
            },
            failed,
            became_flaky: false,
        }
    }

    #[test]
    fn a_kept_savepoint_adds_to_the_transaction_and_a_rolled_back_one_adds_nothing() {
        let mut p = Pending::default();
        p.begin();
        p.open();
        p.add_run(1, 10, 0, &[counted(7, true)]);
        p.release();
        p.open();
        p.add_run(2, 20, 0, &[counted(7, false), counted(8, false)]);
        assert_eq!(p.last_failed(7), Some(false));
        p.discard();
        assert_eq!(p.last_failed(7), Some(true));
        assert_eq!(p.last_failed(8), None);
        assert_eq!(p.day((7, 0)).map(|c| c.runs), Some(1));
        p.open();
        p.add_run(3, 5, 0, &[counted(7, false)]);
        p.release();
        let t = p.test(7).unwrap();
        assert_eq!(
            (t.counts.runs, t.counts.failures, t.counts.passes),
            (2, 1, 1)
        );
        assert_eq!(
            (t.first_seen, t.last_seen, t.last_failure),
            (5, 10, Some((1, 10)))
        );
    }

    #[test]
    fn ids_learned_are_known_once_committed_and_forgotten_when_rolled_back() {
        let mut p = Pending::default();
        p.begin();
        p.open();
        p.learn(1, "ci", "a", 5);
        assert_eq!(p.known_ids(1, "ci", &["a"]).get("a"), Some(&5));
        p.discard();
        assert!(p.known_ids(1, "ci", &["a"]).is_empty());
        p.open();
        p.learn(1, "ci", "b", 6);
        p.release();
        assert_eq!(
            p.known_ids(1, "ci", &["b"]).get("b"),
            Some(&6),
            "learned by the transaction"
        );
        p.committed();
        let ids = p.known_ids(1, "ci", &["a", "b"]);
        assert_eq!((ids.len(), ids.get("b")), (1, Some(&6)));
        p.begin();
        p.learn(1, "ci", "c", 7);
        p.clear();
        assert_eq!(p.known_ids(1, "ci", &["c"]).len(), 0);
    }

    #[test]
    fn pending_rows_are_one_days_only_when_each_test_has_that_day_alone_with_its_own_counts() {
        let mut p = Pending::default();
        p.begin();
        p.add_run(1, 10, 3, &[counted(7, true), counted(8, false)]);
        p.add_run(2, 11, 3, &[counted(7, false)]);
        assert_eq!(one_day(p.top()), Some(3), "two runs of one day");
        p.add_run(3, 12, 4, &[counted(8, false)]);
        assert_eq!(one_day(p.top()), None, "test 8 on days 3 and 4");
        p.begin();
        p.add_run(1, 10, 3, &[counted(7, false)]);
        p.add_run(2, 11, 4, &[counted(8, false)]);
        assert_eq!(one_day(p.top()), None, "two days, one per test");
        p.begin();
        p.open();
        p.add_run(1, 10, 3, &[counted(7, false)]);
        assert_eq!(one_day(p.top()), Some(3), "a savepoint's own run");
    }
}
