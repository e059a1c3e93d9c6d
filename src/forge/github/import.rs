//! `import cockpit PATH`: bring a Cockpit `test-results.db` (written by
//! cockpit-project/bots' `store-tests`) into the store, so a team keeps its
//! history.
//!
//! - `TestRuns` (project, revision, context, url, time, retry, wait_seconds,
//!   run_seconds, state, description): one run per row. `time` is when the
//!   attempt was posted ("Not yet tested"), so queued = time, started =
//!   time + wait_seconds, finished = started + run_seconds. `retry` is the attempt.
//!   The url (unique in Cockpit's table) is the run's external id, so importing
//!   twice changes nothing. An `error` run's description is classified.
//! - `Tests` (testname, retry_reason, failed, run[, seconds]): rows of one test in
//!   one run are its tries; the last decides the outcome, the others are
//!   retries with their reasons; durations add up.
//! - `TestCoverage` (optional; its columns vary between Cockpit versions): rows
//!   with a `run` column are kept verbatim (JSON) as a `coverage` report of that run.
//!
//! `store-tests` runs for the revision of each merged pull request, so every
//! (project, revision) is a merged change whose head is that revision. The
//! database does not know PR numbers: the change gets a stable negative
//! number derived from the revision (real PR numbers are positive), and is
//! merged when its last run finished.

use super::cockpit_db::{RunRow, Source, SourceError, SourceRun, TestRow, Value, real};
use super::repository;
use crate::classify::Classifier;
use crate::ingest::classify_run;
use crate::model::{NewRun, RawReport, RunState, TestOutcome, TestResult, Trigger};
use crate::progress::Progress;
use crate::store::{BulkLoad, IngestStatus, Policy, Prepared, Storage, StoreError};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use std::collections::BTreeMap;
use std::path::Path;

/// Runs stored per transaction: large enough that the pages many runs share
/// (counters, index roots) are written once per batch, small enough to keep
/// memory flat and a batch quick to roll back.
pub const BATCH_RUNS: usize = 10_000;

/// Runs handed from the reading thread to the storing one at a time (fresh path).
const PIECE_RUNS: usize = 2_500;

/// The store connection's page cache during an import (MiB): most of the
/// importer's memory, well under the 200 MB it may take.
pub const BULK_CACHE_MIB: u32 = 96;

/// The page cache while the imported changes are settled (MiB): settling
/// reads `runs` once, front to back, and keeps what it needs in memory.
const SETTLE_CACHE_MIB: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import did. Importing the same file again creates nothing.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ImportStats {
    /// `TestRuns` rows read.
    pub rows: usize,
    pub runs_created: usize,
    pub runs_updated: usize,
    pub runs_unchanged: usize,
    /// Finished runs the file now describes otherwise: kept as stored, counted
    /// in `ci_exporter_data_quality_rejections_total{reason="finished_run_changed"}`.
    pub runs_conflicting: usize,
    /// Rows not imported, all reasons together.
    pub runs_skipped: usize,
    /// Rows not imported by reason: `pending` (never finished: store-tests
    /// found no final status), `unknown_state`, `invalid_project` (not
    /// owner/name[/branch]), `no_revision`, `no_context`, `invalid_retry`,
    /// `name_too_long`, `name_control_character` (the rule of `names`).
    pub skipped: BTreeMap<&'static str, usize>,
    /// Runs of repositories another shard owns (`shard` in the config), not imported.
    pub runs_other_shard: usize,
    /// Test results of imported runs (a test's tries in one run are one result).
    pub tests: usize,
    /// `Tests` rows not imported: of no `TestRuns` row, of a skipped run, or
    /// with an empty or too long name.
    pub test_rows_skipped: usize,
    pub coverage_rows: usize,
    /// Merged changes (project and revision) the runs belong to.
    pub changes: usize,
    /// Changes decided by this import (their outcome counted).
    pub changes_decided: usize,
    /// How the runs were stored: `fresh` (a store that held nothing yet,
    /// set-based) or `per_run` (`Storage::ingest_batch`).
    pub path: &'static str,
}

impl ImportStats {
    fn skip(&mut self, reason: &'static str, tests: usize) {
        self.runs_skipped += 1;
        *self.skipped.entry(reason).or_default() += 1;
        self.test_rows_skipped += tests;
    }
}

/// Cockpit writes a Unix timestamp (float) into a TIMESTAMP column; older
/// tools wrote text. Accept both.
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    if let Some(secs) = real(v) {
        return Utc.timestamp_millis_opt((secs * 1000.0) as i64).single();
    }
    let Value::Text(t) = v else {
        return None;
    };
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// The owner/name of a Cockpit project ("owner/name/branch" keeps owner/name).
fn project_path(project: &str) -> Option<String> {
    let mut parts = project.split('/').filter(|p| !p.is_empty());
    let (o, n) = (parts.next()?, parts.next()?);
    Some(format!("{o}/{n}"))
}

/// A stable change number for a revision: negative, from its first 12 hex digits.
pub fn synthetic_change_number(revision: &str) -> i64 {
    let digits: String = revision
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect();
    let n = i64::from_str_radix(&digits, 16).unwrap_or(0);
    -(n.max(1))
}

/// Whether two paths name the same file (through links or relative paths too).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(ma), Ok(mb)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                ma.dev() == mb.dev() && ma.ino() == mb.ino()
            }
            #[cfg(not(unix))]
            {
                let _ = (ma, mb);
                std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
            }
        }
        _ => false,
    }
}

/// A run row that can be imported: (repository path, the run), or why not.
fn convert(
    source: SourceRun,
    classifier: &Classifier,
    stats: &mut ImportStats,
) -> Result<(String, NewRun), &'static str> {
    let SourceRun {
        run: c,
        tests,
        coverage,
    } = source;
    let state = match c.state.as_deref() {
        Some("success") => RunState::Success,
        Some("failure") => RunState::Failure,
        Some("error") => RunState::Error,
        Some("pending") => return Err("pending"),
        _ => return Err("unknown_state"),
    };
    let path = c
        .project
        .as_deref()
        .and_then(project_path)
        .ok_or("invalid_project")?;
    let revision = c
        .revision
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or("no_revision")?;
    let context = c
        .context
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or("no_context")?;
    let retry = real(&c.retry).unwrap_or(0.0);
    if !(0.0..=u32::MAX as f64).contains(&retry) {
        return Err("invalid_retry");
    }
    for name in [&path, &revision, &context] {
        crate::names::check(name).map_err(|e| e.reason())?;
    }
    let queued_at = timestamp(&c.time);
    let started_at = match (queued_at, real(&c.wait_seconds)) {
        (Some(q), Some(w)) => Some(q + chrono::Duration::milliseconds((w * 1000.0) as i64)),
        (q, _) => q,
    };
    let finished_at = match (started_at, real(&c.run_seconds)) {
        (Some(s), Some(t)) => Some(s + chrono::Duration::milliseconds((t * 1000.0) as i64)),
        _ => None,
    };
    let run_tests = test_results(tests, stats);
    stats.tests += run_tests.len();
    let mut failures = classify_run(
        classifier,
        c.description
            .as_deref()
            .filter(|_| state == RunState::Error),
        &run_tests,
    );
    failures.truncate(50);
    let reports = if coverage.is_empty() {
        Vec::new()
    } else {
        stats.coverage_rows += coverage.len();
        vec![RawReport {
            format: "coverage".into(),
            name: "TestCoverage".into(),
            content: serde_json::Value::Array(coverage).to_string(),
        }]
    };
    let RunRow { id, url, .. } = c;
    let external_id = format!(
        "cockpit:{}",
        url.clone().unwrap_or_else(|| format!("id-{id}"))
    );
    let url = url.filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    let run = NewRun {
        repository: repository(&path),
        context,
        commit: revision,
        external_id: Some(external_id),
        attempt: retry as u32,
        trigger: Trigger::PullRequest,
        state,
        queued_at,
        started_at,
        finished_at,
        url,
        tests: run_tests,
        reports,
        failures,
        source: "cockpit-import".into(),
        ..NewRun::default()
    };
    Ok((path, run))
}

/// A run's `Tests` rows as test results: rows of one test are its tries; the
/// last decides the outcome, the others are retries with their reasons;
/// durations add up.
fn test_results(rows: Vec<TestRow>, stats: &mut ImportStats) -> Vec<TestResult> {
    // One test's tries: its name, (failed, retry reason, seconds) of each.
    type Tries = (String, Vec<(bool, Option<String>, Option<f64>)>);
    // name → tries, in order of first appearance; a run's few tests are
    // found by a look along them, many by a map of their names.
    let mut tests: Vec<Tries> = Vec::with_capacity(rows.len());
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let many = rows.len() > 16;
    for row in rows {
        if crate::names::check_test(&row.name).is_err() {
            stats.test_rows_skipped += 1;
            continue;
        }
        let TestRow {
            name,
            failed,
            retry_reason,
            seconds,
        } = row;
        let found = if many {
            index.get(&name).copied()
        } else {
            tests.iter().position(|(n, _)| *n == name)
        };
        let attempt = (failed, retry_reason, seconds);
        match found {
            Some(i) => tests[i].1.push(attempt),
            None => {
                if many {
                    index.insert(name.clone(), tests.len());
                }
                tests.push((name, vec![attempt]));
            }
        }
    }
    tests
        .into_iter()
        .map(|(name, mut tries)| {
            let duration_seconds = tries
                .iter()
                .any(|t| t.2.is_some())
                .then(|| tries.iter().filter_map(|t| t.2).sum());
            let (failed, last_reason, _) = tries.pop().expect("a test has a try");
            TestResult {
                name,
                outcome: if failed {
                    TestOutcome::Failed
                } else {
                    TestOutcome::Passed
                },
                duration_seconds,
                retries: tries.len() as u32,
                retry_reasons: tries.into_iter().filter_map(|t| t.1).collect(),
                message: if failed { last_reason } else { None },
            }
        })
        .collect()
}

/// Which way an import stores its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The fresh path when the store has a bulk load (`Storage::bulk_load`: SQLite)
    /// and accepts it (`BulkLoad::accepts_fresh_load`:
    /// no run, test, commit or SLO event yet, history loaded on purpose) and the file's
    /// run urls are unique; otherwise the per-run path.
    Auto,
    /// Always the per-run path (`Storage::ingest_batch`).
    PerRun,
}

/// (repository, revision) → merged at (the last finish of its runs)
type Changes = BTreeMap<(String, String), DateTime<Utc>>;

/// Stores one piece of converted runs (`true`: the piece closes a batch),
/// counting in the stats. It may take the runs out of the vector; the
/// reader clears what is left and keeps the vector's room for the next
/// piece: one vector for the whole file, not one freed per piece (freeing a block that large made glibc's allocator
/// merge every small block freed before it, `malloc_consolidate`: 8 % of
/// the reading thread of a fresh import).
type StoreBatch<'a> =
    dyn FnMut(&mut Vec<NewRun>, bool, &mut ImportStats) -> Result<(), ImportError> + 'a;

/// Read every run of `source`, convert it and hand the importable ones of
/// `shard` to `store` in batches of `batch_runs` ([`BATCH_RUNS`] but in
/// tests; the last one smaller), each in pieces of at most `piece_runs`
/// as they are converted (the last piece of a batch says it closes it).
#[allow(clippy::too_many_arguments)]
fn read_runs(
    source: &Source,
    label: &str,
    classifier: &Classifier,
    shard: crate::shard::Shard,
    stats: &mut ImportStats,
    changes: &mut Changes,
    batch_runs: usize,
    piece_runs: usize,
    store: &mut StoreBatch<'_>,
) -> Result<(), ImportError> {
    let total = source.run_count()?;
    let mut progress = Progress::new(label, "runs", total);
    progress.set(0);
    let batch_runs = batch_runs.max(1);
    let piece_runs = piece_runs.clamp(1, batch_runs);
    let mut piece: Vec<NewRun> = Vec::with_capacity(piece_runs);
    // Runs of the batch being handed over, its pieces already stored included.
    let mut in_batch = 0;
    let read = source.for_each_run(|row| -> Result<(), ImportError> {
        stats.rows += 1;
        let test_rows = row.tests.len();
        match convert(row, classifier, stats) {
            Err(reason) => stats.skip(reason, test_rows),
            Ok((path, _)) if !shard.owns(&path) => {
                stats.runs_other_shard += 1;
                stats.test_rows_skipped += test_rows;
            }
            Ok((path, run)) => {
                if let Some(end) = run.finished_at.or(run.started_at).or(run.queued_at) {
                    let e = changes.entry((path, run.commit.clone())).or_insert(end);
                    *e = (*e).max(end);
                }
                piece.push(run);
                in_batch += 1;
                let closes = in_batch >= batch_runs;
                if closes || piece.len() >= piece_runs {
                    store(&mut piece, closes, stats)?;
                    piece.clear();
                    if closes {
                        in_batch = 0;
                    }
                }
            }
        }
        progress.set(stats.rows as u64);
        Ok(())
    })?;
    // The last batch (its runs not all handed over yet, or none of it closed).
    if in_batch > 0 {
        store(&mut piece, true, stats)?;
    }
    stats.test_rows_skipped += read.orphan_tests;
    progress.finish(stats.rows as u64);
    Ok(())
}

/// The per-run path: each batch through `Storage::ingest_batch`.
#[allow(clippy::too_many_arguments)]
fn import_per_run(
    source: &Source,
    label: &str,
    store: &mut dyn Storage,
    policy: &Policy,
    classifier: &Classifier,
    now: DateTime<Utc>,
    shard: crate::shard::Shard,
    batch_runs: usize,
) -> Result<(ImportStats, Changes), ImportError> {
    let mut stats = ImportStats::default();
    let mut changes = Changes::new();
    read_runs(
        source,
        label,
        classifier,
        shard,
        &mut stats,
        &mut changes,
        batch_runs,
        batch_runs,
        &mut |batch, _, stats| {
            for ingested in store.ingest_batch(batch, policy, now)? {
                match ingested.status {
                    IngestStatus::Created => stats.runs_created += 1,
                    IngestStatus::Updated => stats.runs_updated += 1,
                    IngestStatus::Unchanged => stats.runs_unchanged += 1,
                    IngestStatus::Conflict => stats.runs_conflicting += 1,
                }
            }
            Ok(())
        },
    )?;
    Ok((stats, changes))
}

/// The fresh path (`BulkLoad::fresh_load`, SQLite's `store::fresh`): one transaction, the per-test tables
/// built set-based at the end. An error leaves the store as it was. The file
/// is read, converted and prepared (redaction, content hash, failure
/// classification) on a second thread while this one stores, handed over in
/// pieces of [`PIECE_RUNS`] as they are read (memory stays flat: at most
/// three pieces between the two threads; the counters are still added up
/// and written per batch of `batch_runs`, as the per-run path does).
#[allow(clippy::too_many_arguments)]
fn import_fresh(
    path: &Path,
    label: &str,
    bulk: &mut dyn BulkLoad,
    policy: &Policy,
    classifier: &Classifier,
    now: DateTime<Utc>,
    shard: crate::shard::Shard,
    batch_runs: usize,
) -> Result<(ImportStats, Changes), ImportError> {
    let mut load = bulk.fresh_load(policy, now)?;
    // One piece waits while one is stored and the next is read: the reading
    // thread hands over each piece as soon as it is prepared and goes on.
    let (send, receive) = std::sync::mpsc::sync_channel::<(Vec<Prepared>, bool)>(1);
    // A stored piece goes back to the reading thread, which frees it before
    // it prepares the next: freeing its runs' texts took ~4 % of the storing
    // thread, the one that bounds the load, and memory freed by the thread
    // that allocated it stays with that thread's allocator arena, which the
    // thread building the per-test tables at the end then takes over (freed
    // on a thread of its own, it left that thread's arena to be taken, and
    // the end of the load grew the process by ~30 MB).
    let (discard, discarded) = std::sync::mpsc::channel::<Vec<Prepared>>();
    let (mut stats, changes, created) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<(ImportStats, Changes), ImportError> {
            let source = Source::open(path)?;
            let mut stats = ImportStats::default();
            let mut changes = Changes::new();
            let mut spare: Vec<Vec<Prepared>> = Vec::new();
            read_runs(
                &source,
                label,
                classifier,
                shard,
                &mut stats,
                &mut changes,
                batch_runs,
                PIECE_RUNS,
                &mut |piece, closes_batch, _| {
                    // A stored piece's runs are freed, its vector kept for
                    // the next: freeing a block that large made the
                    // allocator merge every small block freed just before
                    // (glibc's `malloc_consolidate`: 10 % of this thread).
                    for mut stored in discarded.try_iter() {
                        stored.clear();
                        spare.push(stored);
                    }
                    let mut prepared = spare.pop().unwrap_or_default();
                    prepared.extend(piece.drain(..).map(|run| Prepared::new(run, policy, now)));
                    // Fails only when the storing side stopped (its error is the one reported).
                    send.send((prepared, closes_batch))
                        .map_err(|_| ImportError::Store(StoreError::WriterGone))
                },
            )?;
            Ok((stats, changes))
        });
        let mut created = 0;
        let mut failed = None;
        for (piece, closes_batch) in receive {
            match load.store_batch(&piece, closes_batch) {
                Ok(stored) => {
                    created += stored.len();
                    // Only fails once the reading thread is gone: freed here.
                    let _ = discard.send(piece);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(discard);
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let Some(e) = failed {
            return Err(ImportError::Store(e));
        }
        let (stats, changes) = read?;
        Ok::<_, ImportError>((stats, changes, created))
    })?;
    stats.runs_created = created;
    let mut progress = Progress::new("building the store", "steps", load.steps() as u64);
    load.finish(&mut |done, what| {
        tracing::debug!(step = what, "fresh import");
        progress.set(done as u64);
    })?;
    let steps = progress.total();
    progress.finish(steps);
    Ok((stats, changes))
}

/// Whether an error is a uniqueness violation (two runs with one external id).
fn is_duplicate(e: &ImportError) -> bool {
    matches!(e, ImportError::Store(e) if e.is_constraint_violation())
}

/// Import a Cockpit database into `store`, only the repositories `shard`
/// owns (the others are counted in `runs_other_shard`: import the same file
/// into every shard), the way `mode` says. Reads the file as a stream and
/// stores [`BATCH_RUNS`] runs per batch; shows progress.
pub fn import_with(
    path: &Path,
    store: &mut dyn Storage,
    policy: &Policy,
    classifier: &Classifier,
    now: DateTime<Utc>,
    shard: crate::shard::Shard,
    mode: Mode,
) -> Result<ImportStats, ImportError> {
    import_in_batches(
        path, store, policy, classifier, now, shard, mode, BATCH_RUNS,
    )
}

/// [`import_with`] in batches of `batch_runs` runs (the counters added up
/// and written once per batch): tests make them small, so that counters
/// written across many batches are compared too.
#[allow(clippy::too_many_arguments)]
fn import_in_batches(
    path: &Path,
    store: &mut dyn Storage,
    policy: &Policy,
    classifier: &Classifier,
    now: DateTime<Utc>,
    shard: crate::shard::Shard,
    mode: Mode,
    batch_runs: usize,
) -> Result<ImportStats, ImportError> {
    let source = Source::open(path)?;
    // An engine without a bulk load (`Storage::bulk_load`) stores run by run.
    if let Some(bulk) = store.bulk_load() {
        bulk.tune_for_bulk_load(BULK_CACHE_MIB)?;
    }
    let label = format!("importing {}", path.display());
    let fresh = mode == Mode::Auto
        && match store.bulk_load() {
            Some(bulk) => bulk.accepts_fresh_load(policy)?,
            None => false,
        }
        && source.urls_unique()?;
    let per_run = |store: &mut dyn Storage| -> Result<(ImportStats, Changes), ImportError> {
        let (mut stats, changes) = import_per_run(
            &source, &label, store, policy, classifier, now, shard, batch_runs,
        )?;
        stats.path = "per_run";
        Ok((stats, changes))
    };
    let bulk = store.bulk_load().filter(|_| fresh);
    let (mut stats, changes) = if let Some(bulk) = bulk {
        match import_fresh(
            path, &label, bulk, policy, classifier, now, shard, batch_runs,
        ) {
            Err(e) if is_duplicate(&e) => {
                tracing::warn!(
                    "two runs of {} have one external id: importing run by run instead ({e})",
                    path.display()
                );
                per_run(store)?
            }
            Err(e) => return Err(e),
            Ok((mut stats, changes)) => {
                stats.path = "fresh";
                (stats, changes)
            }
        }
    } else {
        per_run(store)?
    };

    stats.changes = changes.len();
    let merges: Vec<_> = changes
        .into_iter()
        .map(|((path, revision), merged_at)| {
            (
                repository(&path),
                synthetic_change_number(&revision),
                Some(revision),
                merged_at,
            )
        })
        .collect();
    tracing::debug!(merges = merges.len(), "recording the merges");
    for chunk in merges.chunks(BATCH_RUNS) {
        store.record_merges(chunk, now)?;
    }
    // Everything imported is history: decide the changes now. Deciding
    // many at once holds their heads' runs and SLO events in memory
    // (settle.rs): the page cache gives up what the load left in it.
    if let Some(bulk) = store.bulk_load() {
        bulk.tune_for_bulk_load(SETTLE_CACHE_MIB)?;
    }
    tracing::debug!("settling");
    stats.changes_decided = store.settle(policy, now, Some(0))?.changes_decided;
    if let Some(bulk) = store.bulk_load() {
        tracing::debug!("checkpoint");
        bulk.checkpoint()?;
    }
    Ok(stats)
}

#[cfg(test)]
#[path = "../../../benches/support/cockpit.rs"]
mod generated;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Every row of every table of `store` (sorted by all its columns), and
    /// the schema: what two imports must agree on.
    fn everything(store: &Store) -> Vec<String> {
        let conn = store.connection();
        let mut out: Vec<String> = conn
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
            .unwrap()
            .query_map([], |r| {
                Ok(format!(
                    "schema {} {} {:?}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for table in tables {
            let stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let n = stmt.column_count();
            let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
            drop(stmt);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT * FROM {table} ORDER BY {}",
                    order.join(", ")
                ))
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            while let Some(r) = rows.next().unwrap() {
                let values: Vec<Value> = (0..n).map(|i| r.get(i).unwrap()).collect();
                out.push(format!("{table} {values:?}"));
            }
        }
        out
    }

    #[test]
    fn a_fresh_load_stores_what_the_per_run_path_stores() {
        fresh_and_per_run_agree(BATCH_RUNS, BATCH_RUNS);
    }

    /// Counters written across many batches (of other sizes on each path):
    /// the per-run path adds the per-test counters up per batch, the fresh
    /// path its metric counters and hourly rollup.
    #[test]
    fn a_fresh_load_in_many_batches_stores_what_the_per_run_path_stores() {
        fresh_and_per_run_agree(250, 170);
    }

    /// Import one generated file on the fresh path in batches of
    /// `fresh_batch` runs and on the per-run path in batches of
    /// `per_run_batch`; compare every table and the metric state.
    fn fresh_and_per_run_agree(fresh_batch: usize, per_run_batch: usize) {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("test-results.db");
        let g = generated::generate(&source, 3_000, 2.9, 7);
        assert!(g.pending > 0 && g.overlapping_runs > 0, "{g:?}");
        // What the generator leaves out: a secret to redact, impossible and
        // future times, names the store refuses, a test given twice, no url.
        rusqlite::Connection::open(&source)
            .unwrap()
            .execute_batch(
                "UPDATE TestRuns SET state = 'error',
                     description = 'Error: token=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB leaked'
                     WHERE id % 97 = 5;
                 UPDATE TestRuns SET time = 4102444800 WHERE id % 211 = 7;
                 UPDATE TestRuns SET wait_seconds = -30 WHERE id % 173 = 3;
                 UPDATE TestRuns SET context = 'bad' || char(1) || 'context' WHERE id % 331 = 2;
                 UPDATE TestRuns SET url = NULL WHERE id % 401 = 9;
                 INSERT INTO Tests (testname, retry_reason, failed, run, seconds)
                     SELECT testname, 'again', 1 - failed, run, 3 FROM Tests WHERE run % 53 = 1;
                 INSERT INTO Tests (testname, retry_reason, failed, run, seconds)
                     SELECT '', NULL, 0, run, 1 FROM Tests WHERE run % 59 = 1;",
            )
            .unwrap();
        let config = crate::config::Config::default();
        let policy = Policy::from_config(&config);
        let classifier = Classifier::new(&Classifier::default_rules()).unwrap();
        let now = Utc::now();
        let all = crate::shard::Shard::ALL;

        let mut fresh = Store::open_in_memory().unwrap();
        let mut per_run = Store::open_in_memory().unwrap();
        let a = import_in_batches(
            &source,
            &mut fresh,
            &policy,
            &classifier,
            now,
            all,
            Mode::Auto,
            fresh_batch,
        )
        .unwrap();
        let b = import_in_batches(
            &source,
            &mut per_run,
            &policy,
            &classifier,
            now,
            all,
            Mode::PerRun,
            per_run_batch,
        )
        .unwrap();
        assert_eq!((a.path, b.path), ("fresh", "per_run"));
        assert_eq!(
            ImportStats {
                path: "",
                ..a.clone()
            },
            ImportStats {
                path: "",
                ..b.clone()
            }
        );
        // What the comparison covers really happened.
        assert!(a.runs_created > 2_500 && a.tests > 5_000, "{a:?}");
        assert!(
            a.skipped["pending"] > 0 && a.skipped["name_control_character"] > 0,
            "{a:?}"
        );
        assert!(a.test_rows_skipped > 0 && a.changes_decided > 0, "{a:?}");

        let (rows, expected) = (everything(&fresh), everything(&per_run));
        for (row, want) in rows.iter().zip(&expected) {
            assert_eq!(row, want, "the first row that differs");
        }
        assert_eq!(rows.len(), expected.len());
        assert_eq!(
            fresh.metric_state().unwrap(),
            per_run.metric_state().unwrap()
        );
        let one =
            |sql: &str| -> i64 { fresh.connection().query_row(sql, [], |r| r.get(0)).unwrap() };
        // The fresh load checks no foreign key row by row: every reference
        // it wrote has its row, and the store enforces them again.
        assert_eq!(one("SELECT count(*) FROM pragma_foreign_key_check"), 0);
        assert_eq!(one("PRAGMA foreign_keys"), 1);
        assert!(one("SELECT count(*) FROM failures") > 10);
        assert!(one("SELECT count(*) FROM runs WHERE url IS NULL") > 3);
        assert_eq!(
            one("SELECT count(*) FROM failures WHERE evidence LIKE '%ghp_%'"),
            0
        );
        assert!(one("SELECT sum(flips) FROM tests") > 10);
        assert!(one("SELECT sum(flaky_commits) FROM tests") > 10);
        assert!(one("SELECT count(*) FROM tests WHERE first_seen_flaky IS NOT NULL") > 5);
        assert!(one("SELECT sum(flaky_failures) FROM test_days") > 10);
        assert!(
            one(
                "SELECT CAST(value AS INTEGER) FROM metric_counters WHERE family LIKE '%data_quality%' AND labels LIKE '%future_time%'"
            ) > 0
        );

        // Importing again changes nothing, on either path.
        for store in [&mut fresh, &mut per_run] {
            let again =
                import_with(&source, store, &policy, &classifier, now, all, Mode::Auto).unwrap();
            assert_eq!(again.path, "per_run");
            assert_eq!(
                (
                    again.runs_created,
                    again.runs_updated,
                    again.runs_conflicting,
                    again.changes_decided
                ),
                (0, 0, 0, 0),
                "{again:?}"
            );
            assert_eq!(again.runs_unchanged, a.runs_created);
        }
        assert_eq!(everything(&fresh), everything(&per_run));
    }

    /// The reading side hands runs over in pieces as they are converted:
    /// every piece at most `piece_runs`, a batch closed after exactly
    /// `batch_runs` runs and at the end, and the runs those of one batch at
    /// a time, in order.
    #[test]
    fn runs_are_handed_over_in_pieces_that_close_each_batch() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("test-results.db");
        generated::generate(&source, 1_000, 2.0, 5);
        let source = Source::open(&source).unwrap();
        let classifier = Classifier::new(&Classifier::default_rules()).unwrap();
        // (runs' external ids, closes the batch) of each piece handed over.
        let read = |batch_runs: usize, piece_runs: usize| {
            let (mut stats, mut changes) = (ImportStats::default(), Changes::new());
            let mut pieces: Vec<(Vec<String>, bool)> = Vec::new();
            read_runs(
                &source,
                "test",
                &classifier,
                crate::shard::Shard::ALL,
                &mut stats,
                &mut changes,
                batch_runs,
                piece_runs,
                &mut |piece, closes, _| {
                    let ids = piece.drain(..).map(|r| r.external_id.unwrap());
                    pieces.push((ids.collect(), closes));
                    Ok(())
                },
            )
            .unwrap();
            pieces
        };
        let whole = read(70, 70);
        let pieces = read(70, 30);
        let ids = |p: &[(Vec<String>, bool)]| -> Vec<String> {
            p.iter().flat_map(|(ids, _)| ids.clone()).collect()
        };
        assert!(ids(&whole).len() > 900, "{}", ids(&whole).len());
        assert_eq!(ids(&pieces), ids(&whole));
        // Whole batches: each closes, 70 runs but the last.
        assert!(whole.iter().all(|(ids, closes)| *closes && ids.len() <= 70));
        assert!(
            whole[..whole.len() - 1]
                .iter()
                .all(|(ids, _)| ids.len() == 70)
        );
        // In pieces: 30, 30, 10 (closes), ..., each batch's runs the same.
        assert!(
            pieces
                .iter()
                .all(|(ids, _)| ids.len() <= 30 && !ids.is_empty())
        );
        let mut batches: Vec<Vec<String>> = vec![Vec::new()];
        for (ids, closes) in &pieces {
            batches.last_mut().unwrap().extend(ids.iter().cloned());
            if *closes {
                batches.push(Vec::new());
            }
        }
        assert_eq!(batches.pop(), Some(Vec::new()), "the last piece closes");
        let whole_batches: Vec<Vec<String>> = whole.into_iter().map(|(ids, _)| ids).collect();
        assert_eq!(batches, whole_batches);
        assert_eq!(
            pieces[..3]
                .iter()
                .map(|(ids, c)| (ids.len(), *c))
                .collect::<Vec<_>>(),
            [(30, false), (30, false), (10, true)]
        );
    }

    #[test]
    fn a_store_that_served_or_holds_runs_takes_the_per_run_path() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("test-results.db");
        generated::generate(&source, 200, 2.0, 3);
        let mut policy = Policy::from_config(&crate::config::Config::default());
        let classifier = Classifier::new(&Classifier::default_rules()).unwrap();
        let now = Utc::now();
        let all = crate::shard::Shard::ALL;
        let mut served = Store::open_in_memory().unwrap();
        served.mark_serving(now).unwrap();
        let s = import_with(
            &source,
            &mut served,
            &policy,
            &classifier,
            now,
            all,
            Mode::Auto,
        )
        .unwrap();
        assert_eq!(s.path, "per_run");
        // --history on a store that served: history on purpose, fresh.
        let mut history = Store::open_in_memory().unwrap();
        history.mark_serving(now).unwrap();
        policy.history = true;
        let h = import_with(
            &source,
            &mut history,
            &policy,
            &classifier,
            now,
            all,
            Mode::Auto,
        )
        .unwrap();
        assert_eq!(h.path, "fresh");
        assert_eq!(h.runs_created, s.runs_created);
    }

    #[test]
    fn projects_and_change_numbers() {
        assert_eq!(
            project_path("cockpit-project/cockpit/rhel-7.9").as_deref(),
            Some("cockpit-project/cockpit")
        );
        assert_eq!(project_path("nope"), None);
        let n = synthetic_change_number("0123456789abcdef");
        assert!(n < 0);
        assert_eq!(n, synthetic_change_number("0123456789abcdef"));
        assert_eq!(synthetic_change_number("zz"), -1);
    }
}
