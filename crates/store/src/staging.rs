//! Where a fresh load's test results wait for the per-test counting
//! ([`Staging`]): tests and commits interned in memory, results written
//! straight into `results`, and what the counting needs of them kept in
//! memory as they are staged (each run's commit and time, one `u32` per
//! counted result: its test and how it counts). At the end no result is
//! read back: a counting sort in memory gives each test's counted results
//! in run order, one pass over them writes every `tests` and `test_days`
//! row once ([`Staging::write_tests`]), and a counting sort by commit gives
//! the `test_commits` rows in their key order, appended
//! ([`Staging::write_test_commits`]; see `fresh.rs`).

use crate::model::{TestOutcome, TestResult};
use crate::test_step::{Step, TestCounts};
use crate::{hourly, results};
use foldhash::HashMap;
use rusqlite::{Connection, Statement, params};
use std::collections::BTreeMap;

/// Where a fresh load's test results wait for the per-test counting.
///
/// Tests and commits are interned here, in memory, in the order the per-run
/// path interns them (a run's tests in order of first appearance, runs in id
/// order): a new (repository, context, name) gets the next `tests` id at
/// once (its row is written at the end, with its counters; the tests' text
/// index is built after them: no random insert into it), so each
/// result is written straight into `results` with its test id (a run's
/// results sorted by test id: appended in key order); what the per-test
/// counting at the end needs of them (each run's commit and time, and each
/// counted result as its run's first result of that name counts: 4 bytes a
/// result) waits in memory.
pub(crate) struct Staging {
    pub(crate) staged: usize,
    /// Test names, interned once whatever their context.
    names: HashMap<String, u32>,
    /// Name key → name.
    name_texts: Vec<String>,
    /// repository id → context → index into `tests`.
    contexts: HashMap<i64, HashMap<String, u32>>,
    /// Context index → (repository id, context).
    context_texts: Vec<(i64, String)>,
    /// Per (repository, context): name index → test id.
    tests: Vec<HashMap<u32, i64>>,
    /// Per test interned here (ids from `first_test` on): (context index,
    /// name key).
    test_rows: Vec<(u32, u32)>,
    first_test: i64,
    next_test: i64,
    /// repository id → sha → commit id.
    commits: HashMap<i64, HashMap<String, i64>>,
    first_commit: i64,
    next_commit: i64,
    /// What the counting at the end needs of each run with results, by
    /// its slot (`run id - first_run`): its commit (`commit id -
    /// first_commit`), its time, and where its counted results end in
    /// `counted` (they start where the previous slot's end).
    first_run: Option<i64>,
    run_commits: Vec<u32>,
    run_times: Vec<i64>,
    run_ends: Vec<u32>,
    /// Every counted result of the load, as its run's first result of that
    /// name counts (see `stage`), runs in slot order, a run's results in
    /// test order: `test index << 2 | failed << 1 | passed after a retry`
    /// (test index: `test id - first_test`). Skipped results are not here.
    counted: Vec<u32>,
}

/// What a counted result is to the per-test counters: (failed, passed after
/// a retry).
type Counted = (bool, bool);

/// What a result counts as (None: nothing, a skipped one), from its outcome
/// and retries: the stored row's (its code read back with
/// `results::outcome_from_code`) and the reported result's rule alike.
fn counted(outcome: TestOutcome, retries: i64) -> Option<Counted> {
    match outcome {
        TestOutcome::Skipped => None,
        TestOutcome::Passed => Some((false, retries > 0)),
        TestOutcome::Failed | TestOutcome::Errored => Some((true, false)),
    }
}

impl Staging {
    pub(crate) fn new(tx: &Connection) -> rusqlite::Result<Staging> {
        let next = |table: &str| -> rusqlite::Result<i64> {
            tx.query_row(
                &format!("SELECT coalesce(max(id), 0) + 1 FROM {table}"),
                [],
                |r| r.get(0),
            )
        };
        let first_test = next("tests")?;
        let first_commit = next("commits")?;
        Ok(Staging {
            staged: 0,
            names: HashMap::default(),
            name_texts: Vec::new(),
            contexts: HashMap::default(),
            context_texts: Vec::new(),
            tests: Vec::new(),
            test_rows: Vec::new(),
            first_test,
            next_test: first_test,
            commits: HashMap::default(),
            first_commit,
            next_commit: first_commit,
            first_run: None,
            run_commits: Vec::new(),
            run_times: Vec::new(),
            run_ends: Vec::new(),
            counted: Vec::new(),
        })
    }

    /// The id of the test `name` of the repository and context `context`
    /// (its index), interned now when it is new (its row is written by
    /// [`Staging::write_tests`]).
    fn test(&mut self, context: usize, name: &str) -> i64 {
        let next_name = self.names.len() as u32;
        let name_key = match self.names.get(name) {
            Some(k) => *k,
            None => {
                self.names.insert(name.to_owned(), next_name);
                self.name_texts.push(name.to_owned());
                next_name
            }
        };
        if let Some(id) = self.tests[context].get(&name_key) {
            return *id;
        }
        let id = self.next_test;
        self.tests[context].insert(name_key, id);
        self.test_rows.push((context as u32, name_key));
        self.next_test += 1;
        id
    }

    /// The index of `run`'s (repository, context) into `tests`.
    fn context(&mut self, run: &results::RunOf<'_>) -> usize {
        let next = self.tests.len() as u32;
        let of_repository = self.contexts.entry(run.repository_id).or_default();
        let key = match of_repository.get(run.context) {
            Some(k) => *k,
            None => {
                of_repository.insert(run.context.to_owned(), next);
                self.context_texts
                    .push((run.repository_id, run.context.to_owned()));
                self.tests.push(HashMap::default());
                next
            }
        };
        key as usize
    }

    /// The id of `run`'s commit, its `commits` row written when it is new.
    fn commit(&mut self, tx: &Connection, run: &results::RunOf<'_>) -> rusqlite::Result<i64> {
        let of_repository = self.commits.entry(run.repository_id).or_default();
        if let Some(id) = of_repository.get(run.commit) {
            return Ok(*id);
        }
        let id = self.next_commit;
        tx.prepare_cached("INSERT INTO commits (id, repository_id, sha) VALUES (?1, ?2, ?3)")?
            .execute(params![id, run.repository_id, run.commit])?;
        of_repository.insert(run.commit.to_owned(), id);
        self.next_commit += 1;
        Ok(id)
    }

    /// Remember `run`'s commit and time for the counting at the end (runs
    /// come in id order; ids the load did not give a result to stay unused):
    /// its slot.
    fn remember_run(&mut self, run_id: i64, commit_id: i64, at: i64) -> rusqlite::Result<usize> {
        let first = *self.first_run.get_or_insert(run_id);
        let too_many = || {
            rusqlite::Error::ToSqlConversionFailure(
                "a fresh load's runs or commits outgrew its in-memory index".into(),
            )
        };
        let slot = usize::try_from(run_id - first)
            .ok()
            .filter(|s| *s < MAX_SLOTS)
            .ok_or_else(too_many)?;
        let commit = u32::try_from(commit_id - self.first_commit).map_err(|_| too_many())?;
        if slot < self.run_times.len() {
            // The counting at the end finds a run's results by its slot.
            return Err(rusqlite::Error::ToSqlConversionFailure(
                format!("a fresh load's run {run_id} came after a run of a greater id").into(),
            ));
        }
        let end = self.counted_len()?;
        self.run_commits.resize(slot + 1, 0);
        self.run_times.resize(slot + 1, 0);
        self.run_ends.resize(slot + 1, end);
        self.run_commits[slot] = commit;
        self.run_times[slot] = at;
        Ok(slot)
    }

    /// How many counted results are staged, as a `run_ends` entry.
    fn counted_len(&self) -> rusqlite::Result<u32> {
        u32::try_from(self.counted.len()).map_err(|_| {
            rusqlite::Error::ToSqlConversionFailure(
                "a fresh load's counted results outgrew its in-memory index".into(),
            )
        })
    }

    /// Store `tests` as the results of `run` (a new run: nothing to replace)
    /// and count its test_success events as `results::store` does. A name
    /// given twice counts once, by its first result, and stores its last
    /// (as the per-run path's upsert does).
    pub(super) fn stage(
        &mut self,
        tx: &Connection,
        insert_result: &mut Statement<'_>,
        insert_test_event: &mut Statement<'_>,
        run: &results::RunOf<'_>,
        tests: &[TestResult],
        live: bool,
    ) -> rusqlite::Result<()> {
        if tests.is_empty() {
            return Ok(());
        }
        let commit_id = self.commit(tx, run)?;
        let context = self.context(run);
        // (test id, first, last) of each name, in order of first appearance
        // (the order the per-run path interns them in).
        let mut unique: Vec<(i64, &TestResult, &TestResult)> = Vec::with_capacity(tests.len());
        let mut index: HashMap<i64, usize> = HashMap::default();
        for t in tests {
            let id = self.test(context, &t.name);
            let found = if tests.len() <= 16 {
                unique.iter().position(|(i, _, _)| *i == id)
            } else {
                index.get(&id).copied()
            };
            match found {
                Some(i) => unique[i].2 = t,
                None => {
                    index.insert(id, unique.len());
                    unique.push((id, t, t));
                }
            }
        }
        self.remember_run(run.run_id, commit_id, run.at_ms)?;
        // Appended in (run, test) order: the key order of `results`.
        unique.sort_unstable_by_key(|(id, _, _)| *id);
        let (mut good, mut total) = (0i64, 0i64);
        for (id, first, _) in &unique {
            // What the first result counts as (the stored row is the
            // last); skipped counts nothing.
            if let Some((failed, retry_pass)) = counted(first.outcome, i64::from(first.retries)) {
                total += 1;
                good += i64::from(!failed);
                let index = u32::try_from(id - self.first_test)
                    .ok()
                    .filter(|i| *i < MAX_TESTS)
                    .ok_or_else(|| {
                        rusqlite::Error::ToSqlConversionFailure(
                            "a fresh load's tests outgrew its in-memory index".into(),
                        )
                    })?;
                self.counted
                    .push(index << 2 | u32::from(failed) << 1 | u32::from(retry_pass));
            }
        }
        let end = self.counted_len()?;
        if let Some(e) = self.run_ends.last_mut() {
            *e = end;
        }
        // Bound one by one (`raw_bind_parameter`): no slice of `dyn ToSql`
        // per result.
        let insert = insert_result;
        for (id, _, last) in &unique {
            let reasons = if last.retry_reasons.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&last.retry_reasons).unwrap_or_else(|_| "[]".into()))
            };
            insert.raw_bind_parameter(1, run.run_id)?;
            insert.raw_bind_parameter(2, id)?;
            insert.raw_bind_parameter(3, results::outcome_code(last.outcome))?;
            insert.raw_bind_parameter(4, last.duration_seconds)?;
            insert.raw_bind_parameter(5, last.retries)?;
            insert.raw_bind_parameter(6, &reasons)?;
            insert.raw_bind_parameter(7, &last.message)?;
            insert.raw_execute()?;
            self.staged += 1;
        }
        // The run's test_success events: its `test_events` row, appended in
        // run order (its index is built at the end of the load).
        if total > 0 {
            insert_test_event.execute(params![
                run.run_id,
                run.repository_id,
                run.at_ms,
                good,
                total
            ])?;
        }
        if total > 0 {
            hourly::add(
                run.repository_id,
                run.at_ms,
                crate::slo::SloId::TestSuccess.as_str(),
                good,
                total,
            );
            results::count_test_success(tx, run.repository, good, total, live)?;
        }
        Ok(())
    }
}

/// A test result of a run (`results`: the last result of its name).
pub(crate) const INSERT_RESULT: &str =
    "INSERT INTO results (run_id, test_id, outcome, duration_seconds, retries,
        retry_reasons, message)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// A run's test_success events (`test_events`).
pub(crate) const INSERT_TEST_EVENT: &str =
    "INSERT INTO test_events (run_id, repository_id, at, good, total) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Bounds of the packed entries of `Staging::counted` and of the
/// counting's own: test indexes (30 bits), run slots (30 bits).
const MAX_TESTS: u32 = 1 << 30;
const MAX_SLOTS: usize = 1 << 30;

/// How many counted results [`Staging::grouped`] sorts at a time (4 bytes
/// each): a pass over all of them per range.
const GROUPED_AT_ONCE: usize = 1 << 19;

/// What a test's counted results add up to (`tests`' counters).
#[derive(Default)]
struct Totals {
    counts: TestCounts,
    last_failed: Option<bool>,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    last_failure: Option<(i64, i64)>,
    first_flaky: Option<i64>,
}

impl Staging {
    /// Free what only interning needs (the load stored its last run):
    /// [`Staging::write_tests`] needs the interned tests' names only (and
    /// the staged runs and counted results, trimmed to their length here).
    pub(crate) fn stop_interning(&mut self) {
        self.names = HashMap::default();
        self.contexts = HashMap::default();
        self.tests = Vec::new();
        self.commits = HashMap::default();
        // Nothing is staged any more: what the vectors grew by goes too.
        self.counted.shrink_to_fit();
        self.run_ends.shrink_to_fit();
        self.run_commits.shrink_to_fit();
        self.run_times.shrink_to_fit();
    }

    /// Call `f` with each key below `keys`, in key order, and the entries
    /// of `counted` whose run slot and entry give that key (`key(slot,
    /// entry)`), in slot order, as `value(slot, entry)` each: a counting
    /// sort, stable, done in ranges of keys with at most `at_once` entries
    /// (or one key) at a time, so that the sorted copy stays small (one
    /// pass over `counted` per range).
    fn grouped(
        &self,
        keys: usize,
        at_once: usize,
        key: impl Fn(usize, u32) -> usize,
        value: impl Fn(usize, u32) -> u32,
        mut f: impl FnMut(usize, &mut [u32]) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        let slots = || {
            let mut begin = 0usize;
            self.run_ends.iter().enumerate().map(move |(slot, end)| {
                let range = begin..*end as usize;
                begin = *end as usize;
                (slot, &self.counted[range])
            })
        };
        // Each key's count.
        let mut next = vec![0u32; keys];
        for (slot, entries) in slots() {
            for e in entries {
                next[key(slot, *e)] += 1;
            }
        }
        let mut sorted: Vec<u32> = Vec::new();
        let mut lo = 0usize;
        while lo < keys {
            // The range [lo, hi): where each of its keys' entries start.
            let (mut hi, mut at) = (lo, 0usize);
            while hi < keys && (hi == lo || at + next[hi] as usize <= at_once) {
                let count = next[hi] as usize;
                next[hi] = at as u32;
                at += count;
                hi += 1;
            }
            sorted.clear();
            sorted.resize(at, 0);
            for (slot, entries) in slots() {
                for e in entries {
                    let k = key(slot, *e);
                    if (lo..hi).contains(&k) {
                        let n = &mut next[k];
                        sorted[*n as usize] = value(slot, *e);
                        *n += 1;
                    }
                }
            }
            // Each key's next position is now where its entries end.
            let mut begin = 0usize;
            for (k, end) in next.iter().enumerate().take(hi).skip(lo) {
                f(k, &mut sorted[begin..*end as usize])?;
                begin = *end as usize;
            }
            lo = hi;
        }
        Ok(())
    }

    /// Write every test interned by the load with its counters and its
    /// `test_days` rows. Each test's counted results (as its run's first
    /// result of that name counts, see `stage`) are taken in run order with
    /// their run's commit and time (a counting sort of what `stage` kept in
    /// memory, no read of `results`), each moving its test's counters, day
    /// and commit by the per-run path's own rule ([`Step`], as
    /// `results::count` applies it), so the rows are the ones counting run
    /// by run gives. Tests in id order (`tests` appended), days in (test,
    /// day) order (`test_days` appended).
    pub(crate) fn write_tests(&self, tx: &Connection) -> rusqlite::Result<()> {
        let commits = usize::try_from(self.next_commit - self.first_commit).unwrap_or(0);
        // Per commit: the last test that had it (`owner`) and its flags and
        // failures for that test (`state`).
        let mut owner = vec![u32::MAX; commits];
        let mut state = vec![(0i64, 0i64); commits];
        let mut days: BTreeMap<i64, TestCounts> = BTreeMap::new();
        let mut insert_test = tx.prepare(
            "INSERT INTO tests (id, repository_id, context, name, runs, passes, failures, flips, commits,
                 flaky_commits, flaky_failures, last_failed, first_seen, last_seen, last_failure_run_id,
                 last_failure_at, first_seen_flaky)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        let mut insert_day = tx.prepare(
            "INSERT INTO test_days (test_id, day, runs, passes, failures, flips, commits, flaky_commits,
                 flaky_failures)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let first_run = self.first_run.unwrap_or(0);
        // Each test's results: `run slot << 2 | failed << 1 | retry pass`.
        let key = |_, e: u32| (e >> 2) as usize;
        let value = |slot, e: u32| (slot as u32) << 2 | (e & 3);
        self.grouped(
            self.test_rows.len(),
            GROUPED_AT_ONCE,
            key,
            value,
            |i, results| {
                let (context, name) = self.test_rows[i];
                let id = self.first_test + i as i64;
                let mut t = Totals::default();
                days.clear();
                for e in results.iter() {
                    let slot = (e >> 2) as usize;
                    let (failed, retry_pass) = (e & 2 != 0, e & 1 != 0);
                    let c = self.run_commits[slot] as usize;
                    let at = self.run_times[slot];
                    let stored = if owner[c] == i as u32 {
                        Some(state[c])
                    } else {
                        owner[c] = i as u32;
                        None
                    };
                    let step = Step::of(stored, t.last_failed, failed, u32::from(retry_pass));
                    state[c] = (step.flags, step.commit_failures);
                    t.counts.add(&step);
                    t.last_failed = Some(failed);
                    t.first_seen = Some(t.first_seen.map_or(at, |f| f.min(at)));
                    t.last_seen = Some(t.last_seen.map_or(at, |l| l.max(at)));
                    if failed {
                        t.last_failure = Some((first_run + slot as i64, at));
                    }
                    if step.became_flaky && t.first_flaky.is_none() {
                        t.first_flaky = Some(at);
                    }
                    days.entry(at.div_euclid(results::DAY_MS))
                        .or_default()
                        .add(&step);
                }
                let (repository_id, context) = &self.context_texts[context as usize];
                // Bound one by one (`raw_bind_parameter`): no slice of
                // `dyn ToSql` built and counted per row.
                let s = &mut insert_test;
                s.raw_bind_parameter(1, id)?;
                s.raw_bind_parameter(2, repository_id)?;
                s.raw_bind_parameter(3, context)?;
                s.raw_bind_parameter(4, &self.name_texts[name as usize])?;
                for (k, v) in t.counts.columns().iter().enumerate() {
                    s.raw_bind_parameter(5 + k, v)?;
                }
                s.raw_bind_parameter(12, t.last_failed)?;
                s.raw_bind_parameter(13, t.first_seen)?;
                s.raw_bind_parameter(14, t.last_seen)?;
                s.raw_bind_parameter(15, t.last_failure.map(|f| f.0))?;
                s.raw_bind_parameter(16, t.last_failure.map(|f| f.1))?;
                s.raw_bind_parameter(17, t.first_flaky)?;
                s.raw_execute()?;
                for (day, c) in &days {
                    let s = &mut insert_day;
                    s.raw_bind_parameter(1, id)?;
                    s.raw_bind_parameter(2, day)?;
                    for (k, v) in c.columns().iter().enumerate() {
                        s.raw_bind_parameter(3 + k, v)?;
                    }
                    s.raw_execute()?;
                }
                Ok(())
            },
        )
    }

    /// Write every `test_commits` row of the load, in key order (commit,
    /// test: the table appended), from the counted results sorted by commit
    /// (a counting sort of what `stage` kept in memory), each commit's then
    /// by test. A row's flags and failures do not depend on the order its
    /// results are counted in ([`Step`] only adds flags and failures), so
    /// they are the ones the per-test pass of [`Staging::write_tests`] and
    /// counting run by run give. Frees what the counting needed.
    pub(crate) fn write_test_commits(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        let commits = usize::try_from(self.next_commit - self.first_commit).unwrap_or(0);
        let mut insert = tx.prepare(
            "INSERT INTO test_commits (test_id, commit_id, flags, failures) VALUES (?1, ?2, ?3, ?4)",
        )?;
        // Each commit's results: `test index << 2 | failed << 1 | retry pass`.
        let key = |slot, _| self.run_commits[slot] as usize;
        self.grouped(
            commits,
            GROUPED_AT_ONCE,
            key,
            |_, e| e,
            |c, results| {
                let commit_id = self.first_commit + c as i64;
                results.sort_unstable();
                for of_test in results.chunk_by(|a, b| a >> 2 == b >> 2) {
                    let mut stored = None;
                    for e in of_test {
                        let step = Step::of(stored, None, e & 2 != 0, e & 1);
                        stored = Some((step.flags, step.commit_failures));
                    }
                    let Some((flags, failures)) = stored else {
                        continue;
                    };
                    insert.raw_bind_parameter(1, self.first_test + i64::from(of_test[0] >> 2))?;
                    insert.raw_bind_parameter(2, commit_id)?;
                    insert.raw_bind_parameter(3, flags)?;
                    insert.raw_bind_parameter(4, failures)?;
                    insert.raw_execute()?;
                }
                Ok(())
            },
        )?;
        self.counted = Vec::new();
        self.run_ends = Vec::new();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `counted` of `runs` (each run's entries; an empty run: a slot the
    /// load gave no counted result to), nothing else staged.
    fn staged(runs: &[Vec<u32>]) -> Staging {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE tests (id INTEGER); CREATE TABLE commits (id INTEGER);")
            .unwrap();
        let mut staging = Staging::new(&conn).unwrap();
        for entries in runs {
            staging.counted.extend(entries);
            staging.run_ends.push(staging.counted.len() as u32);
        }
        staging
    }

    /// Each key's values as `grouped` gives them, at most `at_once` sorted at a time.
    fn grouped(
        staging: &Staging,
        keys: usize,
        at_once: usize,
        key: impl Fn(usize, u32) -> usize,
    ) -> Vec<(usize, Vec<u32>)> {
        let mut out = Vec::new();
        let value = |slot: usize, e: u32| (slot as u32) << 8 | e;
        staging
            .grouped(keys, at_once, key, value, |k, values| {
                out.push((k, values.to_vec()));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn grouped_gives_every_key_its_entries_in_slot_order_whatever_the_ranges() {
        // 300 runs of up to 6 entries (test index << 2 | flags) of 41 tests,
        // some runs without any; tests 39 and 40 without results.
        let mut x = 7u32;
        let mut random = |n: u32| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) % n
        };
        let runs: Vec<Vec<u32>> = (0..300)
            .map(|_| {
                let mut tests: Vec<u32> = (0..random(7)).map(|_| random(39)).collect();
                tests.sort_unstable();
                tests.dedup();
                tests.into_iter().map(|t| t << 2 | random(4)).collect()
            })
            .collect();
        let staging = staged(&runs);
        for (keys, key) in [
            (
                41,
                &(|_, e: u32| (e >> 2) as usize) as &dyn Fn(usize, u32) -> usize,
            ),
            (13, &|slot, _| slot % 13),
        ] {
            // Each key's entries, in run order, the slot with each.
            let want: Vec<(usize, Vec<u32>)> = (0..keys)
                .map(|k| {
                    let values = runs
                        .iter()
                        .enumerate()
                        .flat_map(|(slot, entries)| entries.iter().map(move |e| (slot, *e)))
                        .filter(|(slot, e)| key(*slot, *e) == k)
                        .map(|(slot, e)| (slot as u32) << 8 | e)
                        .collect();
                    (k, values)
                })
                .collect();
            assert!(want.iter().filter(|(_, v)| v.len() > 1).count() > 10);
            for at_once in [0, 1, 5, 40, 1 << 20] {
                assert_eq!(
                    grouped(&staging, keys, at_once, key),
                    want,
                    "{at_once} at once"
                );
            }
        }
    }
}
