//! The PostgreSQL store behind the exporter's storage interface
//! (`ci_slo_store::Storage`): each operation is the `PgStore` method of the
//! same name, its error mapped to a `StoreError` with its kind. And the
//! writer thread's group commit (`ci_slo_store::Engine`): one transaction
//! per batch of jobs, a savepoint per job, so a failed job rolls back alone.

use crate::PgStore;
use chrono::{DateTime, Utc};
use ci_slo_core::flaky::TestStats;
use ci_slo_core::model::{
    DurationLimits, Forge, NewRun, RepositoryRef, RunState, TestOutcome, Trigger,
};
use ci_slo_core::slo::EventCounts;
use ci_slo_store::github::{RunBrief, WorkflowRunInfo};
use ci_slo_store::test_index::TestIndexRow;
use ci_slo_store::test_slo::{TestName, TestWindowRuns};
use ci_slo_store::timeline::{TestDays, TimedEvent};
use ci_slo_store::ui::{
    BadEvent, FailureKey, FailureOccurrence, NightlyRun, RepositoryRow, RunFilter, RunRelated,
    SinceGreen, SloBucket, SloRepositoryCounts, TestExecutionRow,
};
use ci_slo_store::{
    Engine, Fence, Ingested, MetricState, Policy, PruneStats, RunView, SettleStats, Storage,
    StoreError, SyncState, TestSlice,
};
use std::collections::HashMap;

/// `fn name(&mut self, args) -> T` (writes) or `fn name(&self, args) -> T`
/// (reads) of the trait, as `PgStore::name` with its error converted, the
/// connection made again first if it was lost (`reconnect.rs`). A read that
/// meets a lost connection outside a transaction runs once more on a new
/// one (it wrote nothing); a write does not (its commit may be unknown).
macro_rules! forward {
    (writes: $(fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(fn $name(&mut self $(, $arg: $ty)*) -> Result<$out, StoreError> {
            self.reconnect()?;
            let out = PgStore::$name(self $(, $arg)*);
            Ok(out.map_err(|e| self.lose(e))?)
        })*
    };
    (reads: $(fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> Result<$out, StoreError> {
            self.reconnect()?;
            let out = match PgStore::$name(self $(, $arg)*) {
                Err(e) if self.read_again(&e) => PgStore::$name(self $(, $arg)*),
                out => out,
            };
            Ok(out.map_err(|e| self.lose(e))?)
        })*
    };
}

impl Storage for PgStore {
    forward! { writes:
        fn ingest_run(run: &NewRun, policy: &Policy, now: DateTime<Utc>) -> Ingested;
        fn ingest_batch(runs: &[NewRun], policy: &Policy, now: DateTime<Utc>) -> Vec<Ingested>;
        fn count_rejection(reason: &str) -> ();
        fn decide_trigger(repository: &RepositoryRef, attempt_group: &str, trigger: Trigger, policy: &Policy, now: DateTime<Utc>) -> Vec<i64>;
        fn record_merge(repository: &RepositoryRef, number: i64, head_sha: Option<&str>, merged_at: DateTime<Utc>, now: DateTime<Utc>) -> ();
        fn record_workflow_run(repository: &str, run_id: u64, run_attempt: u32, info: &WorkflowRunInfo) -> ();
        fn count_stale_event() -> ();
        fn record_delivery(forge: Forge, delivery_id: &str, event: &str, now: DateTime<Utc>) -> bool;
        fn set_sync_state(forge: Forge, scope: &str, kind: &str, state: &SyncState) -> ();
        fn store_log(run_id: i64, content: &str, truncated: bool, now: DateTime<Utc>) -> bool;
        fn store_sections(run_id: i64, sections: &[(String, u64)]) -> ();
        fn settle(policy: &Policy, now: DateTime<Utc>, settle_ms: Option<i64>) -> SettleStats;
        fn prune(before: DateTime<Utc>, events_before: DateTime<Utc>) -> PruneStats;
        fn prune_deliveries(before: DateTime<Utc>) -> usize;
        fn mark_serving(now: DateTime<Utc>) -> ();
        fn mark_demo(seed_info: &str) -> ();
    }
    forward! { reads:
        fn metric_state() -> MetricState;
        fn slo_counts_in_windows(now: DateTime<Utc>, windows: &[std::time::Duration], repository: Option<&str>) -> Vec<HashMap<String, EventCounts>>;
        fn test_stats(since: DateTime<Utc>, min_runs: u64) -> Vec<(String, String, String, TestStats)>;
        fn test_day_counts(since_day: i64, until_day: i64) -> Vec<TestDays>;
        fn test_runs_in_windows(first_days: &[i64]) -> Vec<TestWindowRuns>;
        fn last_syncs() -> Vec<(String, String, i64)>;
        fn run_count() -> i64;
        fn is_demo() -> bool;
        fn repositories() -> Vec<RepositoryRow>;
        fn repositories_by_id() -> HashMap<i64, RepositoryRow>;
        fn slo_hourly(since: DateTime<Utc>, repository: Option<&str>) -> Vec<SloBucket>;
        fn slo_by_repository(slo: &str, since: DateTime<Utc>) -> Vec<SloRepositoryCounts>;
        fn slo_bad_events(slo: &str, since: DateTime<Utc>, repository: Option<&str>, offset: usize, limit: usize) -> Vec<BadEvent>;
        fn test_names(ids: &[i64]) -> HashMap<i64, TestName>;
        fn test_index(since: DateTime<Utc>, min_runs: u64, repository: Option<&str>, context: Option<&str>) -> Vec<TestIndexRow>;
        fn test_strip(test_id: i64, n: usize) -> Vec<(TestOutcome, i64)>;
        fn test_history(repository: &str, context: &str, test: &str, since: DateTime<Utc>) -> Vec<TestExecutionRow>;
        fn run_slice(id: i64, slice: TestSlice) -> Option<RunView>;
        fn run_related(run_id: i64) -> RunRelated;
        fn failure_keys_between(since: DateTime<Utc>, until: DateTime<Utc>, filter: &RunFilter) -> Vec<FailureKey>;
        fn failure_occurrence(id: i64) -> Option<FailureOccurrence>;
        fn fingerprint_id(hash: &str) -> Option<i64>;
        fn fingerprints_first_seen(ids: &[i64]) -> HashMap<i64, DateTime<Utc>>;
        fn nightly_runs(since: DateTime<Utc>, until: DateTime<Utc>, filter: &RunFilter) -> Vec<NightlyRun>;
        fn dependencies_since_green(run_id: i64) -> SinceGreen;
        fn run_by_external_id(repository: &RepositoryRef, external_id: &str) -> Option<RunBrief>;
        fn run_attempt(repository: &RepositoryRef, context: &str, commit: &str, attempt: Option<u32>) -> Option<RunBrief>;
        fn latest_attempt(repository: &RepositoryRef, context: &str, commit: &str) -> Option<(u32, RunState)>;
        fn workflow_run(repository: &str, run_id: u64, run_attempt: u32) -> Option<WorkflowRunInfo>;
        fn workflow_run_event(repository: &str, run_id: u64) -> Option<String>;
        fn has_log(run_id: i64) -> bool;
        fn has_runs_for_commit(repository: &RepositoryRef, commit: &str) -> bool;
        fn sync_state(forge: Forge, scope: &str, kind: &str) -> Option<SyncState>;
        fn fold() -> u64;
        fn fold_reporting(progress: &mut dyn FnMut(u64)) -> u64;
        fn unfolded() -> (u64, u64);
    }

    fn counted_events(
        &self,
        limits: DurationLimits,
        emit: &mut dyn FnMut(TimedEvent),
    ) -> Result<(), StoreError> {
        self.reconnect()?;
        let out = PgStore::counted_events(self, limits, emit);
        Ok(out.map_err(|e| self.lose(e))?)
    }

    fn in_transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Storage) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        PgStore::in_transaction(self, |s| f(s))
    }

    fn read_consistent(
        &self,
        f: &mut dyn FnMut(&dyn Storage) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.in_batch {
            return f(self);
        }
        // The marks of runs stored so far folded first, outside the
        // snapshot (`fold.rs`): its reads of the per-test counters do not
        // fold. Once more on a new connection when it was lost, as a read.
        let folded = match self.fold_for_read() {
            Err(e) if self.read_again(&e) => self.fold_for_read(),
            folded => folded,
        };
        folded.map_err(|e| self.lose(e))?;
        // Repeatable read: every statement of the transaction sees the
        // snapshot its first statement took (on one connection: it is not
        // made again until the transaction ends).
        self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        self.pinned.set(true);
        let out = f(self);
        self.pinned.set(false);
        let end =
            self.client
                .borrow_mut()
                .batch_execute(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
        out?;
        Ok(end.map_err(|e| self.lose(e.into()))?)
    }
}

impl PgStore {
    /// Run `sql` (transaction control) on the connection.
    fn control(&mut self, sql: &str) -> Result<(), StoreError> {
        let out = self.client.get_mut().batch_execute(sql);
        Ok(out.map_err(|e| self.lose(e.into()))?)
    }
}

impl Engine for PgStore {
    /// The connection is made again first if it was lost (here, between
    /// batches: a batch that met the loss failed whole, and the writer
    /// rolled it back).
    fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.begin("BEGIN")?;
        self.in_batch = true;
        self.pending.begin();
        Ok(())
    }

    fn begin_job(&mut self) -> Result<(), StoreError> {
        self.control("SAVEPOINT job")?;
        self.pending.open();
        Ok(())
    }

    /// A job rolled back takes the test ids it learned with it.
    fn end_job(&mut self, keep: bool) -> Result<(), StoreError> {
        if keep {
            self.pending.release();
        } else {
            self.pending.discard();
        }
        let ended = self.control(if keep {
            "RELEASE SAVEPOINT job"
        } else {
            "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"
        });
        if ended.is_err() {
            // The transaction is unusable (the connection was lost, or the
            // server ended it): the writer rolls the batch back.
            self.rollback_batch();
        }
        ended
    }

    fn in_batch(&self) -> bool {
        self.in_batch
    }

    fn commit_batch(&mut self) -> Result<(), StoreError> {
        self.in_batch = false;
        let committed = self.control("COMMIT");
        self.pending.ended(committed.is_ok());
        committed?;
        Ok(())
    }

    fn rollback_batch(&mut self) {
        self.pending.clear();
        if self.in_batch {
            self.in_batch = false;
            let _ = self.control("ROLLBACK");
        }
    }

    /// [`crate::leader::fence`] in the job's savepoint, after bounding the
    /// rest of the transaction by the lease (`SET LOCAL`: the server ends
    /// the transaction when it stays idle for a lease, e.g. its process was
    /// stopped, or a statement runs longer; a newer term waits for it at
    /// most that long). Kept when the job is kept; a job rolled back takes
    /// both the settings and the row lock with it.
    fn fence(&mut self, fence: &Fence) -> Result<bool, StoreError> {
        let ms = fence.lease.as_millis().max(1);
        self.control(&format!(
            "SET LOCAL idle_in_transaction_session_timeout = {ms}; SET LOCAL statement_timeout = {ms}"
        ))?;
        let held = crate::leader::fence(&mut **self.client.get_mut(), &fence.name, fence.epoch);
        Ok(held.map_err(|e| self.lose(e.into()))?)
    }
}
