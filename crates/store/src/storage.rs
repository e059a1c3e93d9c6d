//! The store's one narrow interface: [`Storage`], what the exporter does with
//! a store, and nothing else. The SQLite [`Store`] implements it by delegating
//! to its own methods (below); a second engine (PostgreSQL, issue 18)
//! implements the same trait, and the exporter does not change.
//!
//! The signatures speak the model's and the store's own types (runs, SLO
//! counts, the views and rows of the UI) and [`StoreError`]: no SQL, no
//! connection, no engine's types. The exporter reaches a store only through
//! this trait (its `src/store_open.rs` is the one place that names an
//! engine; `scripts/check-store-interface` keeps it so).
//!
//! # What the exporter calls (the inventory this trait was cut from)
//!
//! 52 of the store's public methods (the others open a store, or serve its
//! own tests and the benchmarks), found by reading every call in the non-test
//! code of `src/`.
//!
//! Writes (on the writer's connection, `StoreHandle::write`, or a command's
//! own store): they take `&mut self`, so a read job (`&dyn Storage`) cannot
//! write.
//! - ingest: [`ingest_run`](Storage::ingest_run) (webhooks, pollers, the
//!   ingest API and command, the demo), [`ingest_batch`](Storage::ingest_batch)
//!   (`import cockpit`, per run), [`count_rejection`](Storage::count_rejection);
//! - forge events (`forge::event`): [`decide_trigger`](Storage::decide_trigger),
//!   [`record_merge`](Storage::record_merge) (and `import cockpit`'s merges,
//!   [`record_merges`](Storage::record_merges)),
//!   [`record_workflow_run`](Storage::record_workflow_run),
//!   [`count_stale_event`](Storage::count_stale_event);
//! - webhooks and pollers: [`record_delivery`](Storage::record_delivery),
//!   [`set_sync_state`](Storage::set_sync_state),
//!   [`store_log`](Storage::store_log), [`store_sections`](Storage::store_sections);
//! - housekeeping: [`settle`](Storage::settle), [`prune`](Storage::prune),
//!   [`prune_deliveries`](Storage::prune_deliveries),
//!   [`mark_serving`](Storage::mark_serving), [`mark_demo`](Storage::mark_demo),
//!   and [`in_transaction`](Storage::in_transaction) (many writes, one commit).
//!
//! Reads (`StoreHandle::read`, any read connection):
//! - `/metrics` and `backfill-openmetrics`: [`read_consistent`](Storage::read_consistent)
//!   (the reads of one rebuild on one snapshot), [`metric_state`](Storage::metric_state),
//!   [`counted_events`](Storage::counted_events),
//!   [`slo_counts_in_windows`](Storage::slo_counts_in_windows),
//!   [`test_stats`](Storage::test_stats), [`test_day_counts`](Storage::test_day_counts),
//!   [`test_runs_in_windows`](Storage::test_runs_in_windows),
//!   [`last_syncs`](Storage::last_syncs), [`run_count`](Storage::run_count),
//!   [`is_demo`](Storage::is_demo);
//! - the UI and JSON API: [`repositories`](Storage::repositories),
//!   [`repositories_by_id`](Storage::repositories_by_id),
//!   [`slo_hourly`](Storage::slo_hourly), [`slo_by_repository`](Storage::slo_by_repository),
//!   [`slo_bad_events`](Storage::slo_bad_events), [`test_names`](Storage::test_names),
//!   [`test_index`](Storage::test_index), [`test_strip`](Storage::test_strip),
//!   [`test_history`](Storage::test_history), [`run_slice`](Storage::run_slice),
//!   [`run_related`](Storage::run_related),
//!   [`failure_keys_between`](Storage::failure_keys_between),
//!   [`failure_occurrence`](Storage::failure_occurrence),
//!   [`fingerprint_id`](Storage::fingerprint_id),
//!   [`fingerprints_first_seen`](Storage::fingerprints_first_seen),
//!   [`nightly_runs`](Storage::nightly_runs),
//!   [`dependencies_since_green`](Storage::dependencies_since_green);
//! - forge adapters' lookups: [`run_by_external_id`](Storage::run_by_external_id),
//!   [`run_attempt`](Storage::run_attempt), [`latest_attempt`](Storage::latest_attempt),
//!   [`workflow_run`](Storage::workflow_run),
//!   [`workflow_run_event`](Storage::workflow_run_event), [`has_log`](Storage::has_log),
//!   [`has_runs_for_commit`](Storage::has_runs_for_commit),
//!   [`sync_state`](Storage::sync_state).
//!
//! What only one engine can do is an optional capability, not part of the
//! contract: [`Storage::bulk_load`] gives SQLite's fresh bulk load (raw
//! set-based SQL into a store that holds nothing yet) and its page-cache and
//! WAL tuning; an engine without it answers `None` and `import cockpit`
//! stores run by run ([`Storage::ingest_batch`]), with the same result.
//!
//! The writer thread needs one thing more of its connection, the transaction
//! control of group commit and the fence of leader work's writes:
//! [`Engine`].

mod sqlite;

use crate::flaky::TestStats;
use crate::github::{RunBrief, WorkflowRunInfo};
use crate::model::{DurationLimits, Forge, NewRun, RepositoryRef, RunState, TestOutcome, Trigger};
use crate::slo::EventCounts;
use crate::test_index::TestIndexRow;
use crate::test_slo::{TestName, TestWindowRuns};
use crate::timeline::{TestDays, TimedEvent};
use crate::ui::{
    BadEvent, FailureKey, FailureOccurrence, NightlyRun, RepositoryRow, RunFilter, RunRelated,
    SinceGreen, SloBucket, SloRepositoryCounts, TestExecutionRow,
};
use crate::{
    Ingested, MetricState, Policy, Prepared, PruneStats, RunView, SettleStats, Store, StoreError,
    SyncState, TestSlice,
};
use chrono::{DateTime, Utc};
use std::any::Any;
use std::collections::HashMap;

/// Everything the exporter does with a store (see the module documentation
/// for who calls what). `Send`: a store moves to the writer thread or into
/// the read pool; `Any`: tests reach the SQLite [`Store`] behind it
/// ([`dyn Storage::sqlite`](trait.Storage.html#method.sqlite)).
pub trait Storage: Send + Any {
    // --- ingest ---

    /// Store one run with its tests, reports and failures, and count what it
    /// newly makes final. A replay of identical content changes nothing.
    fn ingest_run(
        &mut self,
        run: &NewRun,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError>;

    /// Store `runs` in one transaction (or in the caller's): all of them,
    /// with their counters, or none.
    fn ingest_batch(
        &mut self,
        runs: &[NewRun],
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ingested>, StoreError>;

    /// Count a report refused before it reached the store (an impossible
    /// time) in `ci_exporter_data_quality_rejections_total`.
    fn count_rejection(&mut self, reason: &str) -> Result<(), StoreError>;

    // --- forge events ---

    /// The trigger of an attempt group (a GitHub workflow run) is known: its
    /// runs that waited for it get it and are counted. Returns their ids.
    fn decide_trigger(
        &mut self,
        repository: &RepositoryRef,
        attempt_group: &str,
        trigger: Trigger,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError>;

    /// Record that a change was merged; its outcome is decided later, by
    /// [`Storage::settle`].
    fn record_merge(
        &mut self,
        repository: &RepositoryRef,
        number: i64,
        head_sha: Option<&str>,
        merged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// [`Storage::record_merge`] for each of `merges` (repository, number,
    /// head commit, merge time), in one transaction (an import's merges).
    fn record_merges(
        &mut self,
        merges: &[(RepositoryRef, i64, Option<String>, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.in_transaction(&mut |s| {
            for (repository, number, head_sha, merged_at) in merges {
                s.record_merge(repository, *number, head_sha.as_deref(), *merged_at, now)?;
            }
            Ok(())
        })
    }

    /// Remember a workflow run attempt's trigger event and request time.
    fn record_workflow_run(
        &mut self,
        repository: &str,
        run_id: u64,
        run_attempt: u32,
        info: &WorkflowRunInfo,
    ) -> Result<(), StoreError>;

    /// Count an event older than what is stored for its run, which was ignored.
    fn count_stale_event(&mut self) -> Result<(), StoreError>;

    // --- webhooks and pollers ---

    /// Remember a webhook delivery; false when it was seen before (a replay).
    fn record_delivery(
        &mut self,
        forge: Forge,
        delivery_id: &str,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Set the sync state of one scope and kind of listing.
    fn set_sync_state(
        &mut self,
        forge: Forge,
        scope: &str,
        kind: &str,
        state: &SyncState,
    ) -> Result<(), StoreError>;

    /// Keep a run's downloaded log (once); false when it was already stored.
    fn store_log(
        &mut self,
        run_id: i64,
        content: &str,
        truncated: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Keep a run's log section timings, replacing earlier ones.
    fn store_sections(&mut self, run_id: i64, sections: &[(String, u64)])
    -> Result<(), StoreError>;

    // --- housekeeping ---

    /// Decide merged changes whose settle time has passed, count lost runs
    /// and runs that waited for their trigger in vain. `settle_ms` overrides
    /// the policy (0 after a bulk load).
    fn settle(
        &mut self,
        policy: &Policy,
        now: DateTime<Utc>,
        settle_ms: Option<i64>,
    ) -> Result<SettleStats, StoreError>;

    /// Delete runs that ended before `before` and SLO events older than
    /// `events_before`. Counters are not touched.
    fn prune(
        &mut self,
        before: DateTime<Utc>,
        events_before: DateTime<Utc>,
    ) -> Result<PruneStats, StoreError>;

    /// Forget webhook delivery ids received before `before`.
    fn prune_deliveries(&mut self, before: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Record that a server started on this database (from then on, history
    /// loaded with `--history` no longer moves the live counters).
    fn mark_serving(&mut self, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Record that this database holds the demo's history.
    fn mark_demo(&mut self, seed_info: &str) -> Result<(), StoreError>;

    /// Run `f` in one transaction: what it writes commits together, or not at
    /// all when it fails. Inside a transaction already (a writer's job), `f`
    /// runs in that one.
    fn in_transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Storage) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    // --- reads: /metrics and the history backfill ---

    /// Run the reads of `f` on one snapshot of the database: none of them
    /// sees a write committed after the first of them began, so figures read
    /// by separate calls (the counters, the windows, the run count of one
    /// `/metrics` rebuild) agree with each other even while other
    /// connections or replicas commit. Inside a transaction already (a
    /// writer's job), `f` reads in that one.
    fn read_consistent(
        &self,
        f: &mut dyn FnMut(&dyn Storage) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Every persisted counter and histogram.
    fn metric_state(&self) -> Result<MetricState, StoreError>;

    /// Every counted event of the persisted families, in no particular order.
    fn counted_events(
        &self,
        limits: DurationLimits,
        emit: &mut dyn FnMut(TimedEvent),
    ) -> Result<(), StoreError>;

    /// SLO event counts for each window ending at `now`, in the order of
    /// `windows`: what every SLO number is computed from.
    fn slo_counts_in_windows(
        &self,
        now: DateTime<Utc>,
        windows: &[std::time::Duration],
        repository: Option<&str>,
    ) -> Result<Vec<HashMap<String, EventCounts>>, StoreError>;

    /// Each test's statistics since `since` (whole UTC days).
    fn test_stats(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
    ) -> Result<Vec<(String, String, String, TestStats)>, StoreError>;

    /// Every test's per-day counters from day `since_day` to `until_day`.
    fn test_day_counts(&self, since_day: i64, until_day: i64) -> Result<Vec<TestDays>, StoreError>;

    /// Every test with a run on or after the earliest of `first_days`, with
    /// its runs and passes from each first day on.
    fn test_runs_in_windows(&self, first_days: &[i64]) -> Result<Vec<TestWindowRuns>, StoreError>;

    /// The latest successful sync per (forge, scope), Unix ms.
    fn last_syncs(&self) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// Runs stored.
    fn run_count(&self) -> Result<i64, StoreError>;

    /// Whether this database holds the demo's history.
    fn is_demo(&self) -> Result<bool, StoreError>;

    // --- reads: the UI and the JSON API ---

    /// Every repository, by path.
    fn repositories(&self) -> Result<Vec<RepositoryRow>, StoreError>;

    /// Every repository by its id.
    fn repositories_by_id(&self) -> Result<HashMap<i64, RepositoryRow>, StoreError>;

    /// SLO events since `since` per SLO and hour, optionally of one repository.
    fn slo_hourly(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<Vec<SloBucket>, StoreError>;

    /// One SLO's good and total events since `since` per repository.
    fn slo_by_repository(
        &self,
        slo: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SloRepositoryCounts>, StoreError>;

    /// Bad events of one SLO since `since`, newest first, `limit` from `offset`.
    fn slo_bad_events(
        &self,
        slo: &str,
        since: DateTime<Utc>,
        repository: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<BadEvent>, StoreError>;

    /// The names of tests by id (unknown ids are left out).
    fn test_names(&self, ids: &[i64]) -> Result<HashMap<i64, TestName>, StoreError>;

    /// Every test with a run since `since`, optionally of one repository and context.
    fn test_index(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
        repository: Option<&str>,
        context: Option<&str>,
    ) -> Result<Vec<TestIndexRow>, StoreError>;

    /// The outcomes of a test in the latest `n` runs that ran it, oldest first.
    fn test_strip(&self, test_id: i64, n: usize) -> Result<Vec<(TestOutcome, i64)>, StoreError>;

    /// A test's executions in one repository and context since `since`.
    fn test_history(
        &self,
        repository: &str,
        context: &str,
        test: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<TestExecutionRow>, StoreError>;

    /// One run with a slice of its tests.
    fn run_slice(&self, id: i64, slice: TestSlice) -> Result<Option<RunView>, StoreError>;

    /// The other attempts of a run and the last green run of its context.
    fn run_related(&self, run_id: i64) -> Result<RunRelated, StoreError>;

    /// Every failure of runs in `[since, until)` that match `filter`, newest first.
    fn failure_keys_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: &RunFilter,
    ) -> Result<Vec<FailureKey>, StoreError>;

    /// One failure with its evidence, run and fingerprint.
    fn failure_occurrence(&self, id: i64) -> Result<Option<FailureOccurrence>, StoreError>;

    /// A fingerprint's id by its hash.
    fn fingerprint_id(&self, hash: &str) -> Result<Option<i64>, StoreError>;

    /// When each of these fingerprints was first seen.
    fn fingerprints_first_seen(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, DateTime<Utc>>, StoreError>;

    /// Every scheduled run queued in `[since, until)` matching `filter`.
    fn nightly_runs(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: &RunFilter,
    ) -> Result<Vec<NightlyRun>, StoreError>;

    /// What changed in a run's dependencies since the last green run.
    fn dependencies_since_green(&self, run_id: i64) -> Result<SinceGreen, StoreError>;

    // --- reads: forge adapters' lookups ---

    /// The run stored under a source's own id.
    fn run_by_external_id(
        &self,
        repository: &RepositoryRef,
        external_id: &str,
    ) -> Result<Option<RunBrief>, StoreError>;

    /// One attempt of a context on a commit, or (`attempt` None) the latest.
    fn run_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
        attempt: Option<u32>,
    ) -> Result<Option<RunBrief>, StoreError>;

    /// The highest attempt stored for a context on a commit, with its state.
    fn latest_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
    ) -> Result<Option<(u32, RunState)>, StoreError>;

    /// A workflow run attempt's trigger event and request time.
    fn workflow_run(
        &self,
        repository: &str,
        run_id: u64,
        run_attempt: u32,
    ) -> Result<Option<WorkflowRunInfo>, StoreError>;

    /// The event that triggered a workflow run, from any of its attempts.
    fn workflow_run_event(
        &self,
        repository: &str,
        run_id: u64,
    ) -> Result<Option<String>, StoreError>;

    /// Whether a run's log is stored.
    fn has_log(&self, run_id: i64) -> Result<bool, StoreError>;

    /// Whether any run of this commit is stored.
    fn has_runs_for_commit(
        &self,
        repository: &RepositoryRef,
        commit: &str,
    ) -> Result<bool, StoreError>;

    /// The sync state of one scope and kind of listing.
    fn sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &str,
    ) -> Result<Option<SyncState>, StoreError>;

    // --- optional capabilities ---

    /// The engine's bulk load, if it has one (SQLite does); `None`: store
    /// run by run with [`Storage::ingest_batch`].
    fn bulk_load(&mut self) -> Option<&mut dyn BulkLoad> {
        None
    }

    /// Fold the runs stored so far into the per-test counters, when the
    /// engine counts them after the run (PostgreSQL: its reads of those
    /// counters fold first anyway, so this only keeps the backlog short);
    /// how many stored runs it folded. SQLite counts them in the run's
    /// transaction: nothing to fold.
    fn fold(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// [`Storage::fold`], calling `progress` with the stored runs folded so
    /// far after each transaction of the fold (a backlog is folded in
    /// several: `serve` says how far it got while it folds one at start).
    fn fold_reporting(&self, progress: &mut dyn FnMut(u64)) -> Result<u64, StoreError> {
        let _ = progress;
        self.fold()
    }

    /// The stored runs not folded yet into the per-test counters, and their
    /// results (PostgreSQL's backlog of marks; SQLite has none).
    fn unfolded(&self) -> Result<(u64, u64), StoreError> {
        Ok((0, 0))
    }
}

impl dyn Storage {
    /// The SQLite [`Store`] behind this interface, if that is the engine: for
    /// tests and benchmarks that look at the tables themselves. The exporter
    /// never does (`scripts/check-store-interface`).
    pub fn sqlite(&self) -> Option<&Store> {
        (self as &dyn Any).downcast_ref()
    }

    /// [`dyn Storage::sqlite`](trait.Storage.html#method.sqlite), mutable.
    pub fn sqlite_mut(&mut self) -> Option<&mut Store> {
        (self as &mut dyn Any).downcast_mut()
    }
}

/// An engine's bulk load of history: `import cockpit` into a store that
/// holds nothing yet, set-based, and the engine's tuning for a long load.
/// Optional ([`Storage::bulk_load`]).
pub trait BulkLoad {
    /// Prepare for a long load (SQLite: a page cache of `cache_mib` MiB, a
    /// larger WAL between checkpoints); call [`BulkLoad::checkpoint`] at the end.
    fn tune_for_bulk_load(&mut self, cache_mib: u32) -> Result<(), StoreError>;

    /// Whether the fresh path may be taken: the store holds nothing yet and
    /// what is loaded is history loaded on purpose.
    fn accepts_fresh_load(&mut self, policy: &Policy) -> Result<bool, StoreError>;

    /// Begin a fresh load (only when [`BulkLoad::accepts_fresh_load`]).
    /// Dropped without [`FreshLoading::finish`], it rolls back.
    fn fresh_load<'a>(
        &'a mut self,
        policy: &'a Policy,
        now: DateTime<Utc>,
    ) -> Result<Box<dyn FreshLoading + 'a>, StoreError>;

    /// Make what was loaded durable in the database's own files (SQLite:
    /// move the write-ahead log into the file and truncate it).
    fn checkpoint(&mut self) -> Result<(), StoreError>;
}

/// A fresh bulk load in progress ([`BulkLoad::fresh_load`]).
pub trait FreshLoading {
    /// Store a piece of new runs; `closes_batch`: write the counters added
    /// up since the last batch closed (a batch may come in several pieces).
    fn store_batch(
        &mut self,
        runs: &[Prepared],
        closes_batch: bool,
    ) -> Result<Vec<Ingested>, StoreError>;

    /// The steps of [`FreshLoading::finish`], for progress.
    fn steps(&self) -> usize;

    /// Build what is built at the end, and commit; `step(done, what)` is
    /// told before each step.
    fn finish(self: Box<Self>, step: &mut dyn FnMut(usize, &str)) -> Result<(), StoreError>;
}

/// What the writer thread needs of its connection on top of [`Storage`]:
/// group commit (see [`crate::writer`]), one transaction per batch of jobs
/// and a savepoint per job, so a failed job rolls back alone.
pub trait Engine: Storage {
    /// Begin the batch's transaction (SQLite: `BEGIN IMMEDIATE`).
    fn begin_batch(&mut self) -> Result<(), StoreError>;
    /// Begin one job inside the batch (a savepoint).
    fn begin_job(&mut self) -> Result<(), StoreError>;
    /// End the job begun last: keep what it wrote, or roll it back alone.
    fn end_job(&mut self, keep: bool) -> Result<(), StoreError>;
    /// Whether the batch's transaction is still open (false: the database
    /// rolled it back under a job, e.g. on a full disk).
    fn in_batch(&self) -> bool;
    /// Commit the batch.
    fn commit_batch(&mut self) -> Result<(), StoreError>;
    /// Roll the batch back, if it is still open.
    fn rollback_batch(&mut self);
    /// Inside the job begun last: whether `fence` still holds, and if it
    /// does, keep it holding until the batch's transaction ends (see
    /// [`Fence`]). False: the term ended; the job must write nothing.
    /// SQLite: always true (one process owns the file, and it always leads).
    fn fence(&mut self, fence: &Fence) -> Result<bool, StoreError>;
}

/// A term of leadership that a write of the work that runs once is fenced
/// by (`StoreHandle::fenced`): the writer runs the write only while the
/// term is still the current one, checked inside the write's savepoint, in
/// the transaction that commits it ([`Engine::fence`]). With PostgreSQL the
/// check locks the term's row (`FOR KEY SHARE`) until that transaction
/// ends, so a newer term cannot begin before the write is committed or
/// rolled back, and the transaction is bounded by `lease` (the server ends
/// it when it is idle or a statement runs for longer), so a writer stopped
/// in the middle of one holds the next term back for at most a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leadership's name (`leader_terms.name`).
    pub name: String,
    /// The term's epoch.
    pub epoch: i64,
    /// The leader's lease: the longest a fenced transaction may stay idle,
    /// or run one statement.
    pub lease: std::time::Duration,
}
