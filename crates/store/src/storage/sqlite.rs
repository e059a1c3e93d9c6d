//! The SQLite [`Store`] behind the interface: every operation delegates to
//! the store's own method of the same name (the SQL stays where it is), and
//! the writer's group commit is SQLite's transaction and savepoints.

use super::{BulkLoad, Engine, FreshLoading, Storage};
use crate::flaky::TestStats;
use crate::fresh::FreshLoad;
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
use std::collections::HashMap;

/// Delegates every operation to [`Store`]'s own method of the same name.
impl Storage for Store {
    fn ingest_run(
        &mut self,
        run: &NewRun,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError> {
        Store::ingest_run(self, run, policy, now)
    }

    fn ingest_batch(
        &mut self,
        runs: &[NewRun],
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ingested>, StoreError> {
        Store::ingest_batch(self, runs, policy, now)
    }

    fn count_rejection(&mut self, reason: &str) -> Result<(), StoreError> {
        Store::count_rejection(self, reason)
    }

    fn decide_trigger(
        &mut self,
        repository: &RepositoryRef,
        attempt_group: &str,
        trigger: Trigger,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        Store::decide_trigger(self, repository, attempt_group, trigger, policy, now)
    }

    fn record_merge(
        &mut self,
        repository: &RepositoryRef,
        number: i64,
        head_sha: Option<&str>,
        merged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Store::record_merge(self, repository, number, head_sha, merged_at, now)
    }

    fn record_merges(
        &mut self,
        merges: &[(RepositoryRef, i64, Option<String>, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Store::record_merges(self, merges, now)
    }

    fn record_workflow_run(
        &mut self,
        repository: &str,
        run_id: u64,
        run_attempt: u32,
        info: &WorkflowRunInfo,
    ) -> Result<(), StoreError> {
        Store::record_workflow_run(self, repository, run_id, run_attempt, info)
    }

    fn count_stale_event(&mut self) -> Result<(), StoreError> {
        Store::count_stale_event(self)
    }

    fn record_delivery(
        &mut self,
        forge: Forge,
        delivery_id: &str,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Store::record_delivery(self, forge, delivery_id, event, now)
    }

    fn set_sync_state(
        &mut self,
        forge: Forge,
        scope: &str,
        kind: &str,
        state: &SyncState,
    ) -> Result<(), StoreError> {
        Store::set_sync_state(self, forge, scope, kind, state)
    }

    fn store_log(
        &mut self,
        run_id: i64,
        content: &str,
        truncated: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Store::store_log(self, run_id, content, truncated, now)
    }

    fn store_sections(
        &mut self,
        run_id: i64,
        sections: &[(String, u64)],
    ) -> Result<(), StoreError> {
        Store::store_sections(self, run_id, sections)
    }

    fn settle(
        &mut self,
        policy: &Policy,
        now: DateTime<Utc>,
        settle_ms: Option<i64>,
    ) -> Result<SettleStats, StoreError> {
        Store::settle(self, policy, now, settle_ms)
    }

    fn prune(
        &mut self,
        before: DateTime<Utc>,
        events_before: DateTime<Utc>,
    ) -> Result<PruneStats, StoreError> {
        Store::prune(self, before, events_before)
    }

    fn prune_deliveries(&mut self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        Store::prune_deliveries(self, before)
    }

    fn mark_serving(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        Store::mark_serving(self, now)
    }

    fn mark_demo(&mut self, seed_info: &str) -> Result<(), StoreError> {
        Store::mark_demo(self, seed_info)
    }

    fn in_transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Storage) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        Store::in_transaction(self, |store| f(store))
    }

    fn read_consistent(
        &self,
        f: &mut dyn FnMut(&dyn Storage) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        // A deferred transaction: its snapshot of the WAL is taken at its
        // first read and kept until it ends.
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(self);
        let end = self
            .conn
            .execute_batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
        out?;
        Ok(end?)
    }

    fn metric_state(&self) -> Result<MetricState, StoreError> {
        Store::metric_state(self)
    }

    fn counted_events(
        &self,
        limits: DurationLimits,
        emit: &mut dyn FnMut(TimedEvent),
    ) -> Result<(), StoreError> {
        Store::counted_events(self, limits, emit)
    }

    fn slo_counts_in_windows(
        &self,
        now: DateTime<Utc>,
        windows: &[std::time::Duration],
        repository: Option<&str>,
    ) -> Result<Vec<HashMap<String, EventCounts>>, StoreError> {
        Store::slo_counts_in_windows(self, now, windows, repository)
    }

    fn test_stats(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
    ) -> Result<Vec<(String, String, String, TestStats)>, StoreError> {
        Store::test_stats(self, since, min_runs)
    }

    fn test_day_counts(&self, since_day: i64, until_day: i64) -> Result<Vec<TestDays>, StoreError> {
        Store::test_day_counts(self, since_day, until_day)
    }

    fn test_runs_in_windows(&self, first_days: &[i64]) -> Result<Vec<TestWindowRuns>, StoreError> {
        Store::test_runs_in_windows(self, first_days)
    }

    fn last_syncs(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Store::last_syncs(self)
    }

    fn run_count(&self) -> Result<i64, StoreError> {
        Store::run_count(self)
    }

    fn is_demo(&self) -> Result<bool, StoreError> {
        Store::is_demo(self)
    }

    fn repositories(&self) -> Result<Vec<RepositoryRow>, StoreError> {
        Store::repositories(self)
    }

    fn repositories_by_id(&self) -> Result<HashMap<i64, RepositoryRow>, StoreError> {
        Store::repositories_by_id(self)
    }

    fn slo_hourly(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<Vec<SloBucket>, StoreError> {
        Store::slo_hourly(self, since, repository)
    }

    fn slo_by_repository(
        &self,
        slo: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SloRepositoryCounts>, StoreError> {
        Store::slo_by_repository(self, slo, since)
    }

    fn slo_bad_events(
        &self,
        slo: &str,
        since: DateTime<Utc>,
        repository: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<BadEvent>, StoreError> {
        Store::slo_bad_events(self, slo, since, repository, offset, limit)
    }

    fn test_names(&self, ids: &[i64]) -> Result<HashMap<i64, TestName>, StoreError> {
        Store::test_names(self, ids)
    }

    fn test_index(
        &self,
        since: DateTime<Utc>,
        min_runs: u64,
        repository: Option<&str>,
        context: Option<&str>,
    ) -> Result<Vec<TestIndexRow>, StoreError> {
        Store::test_index(self, since, min_runs, repository, context)
    }

    fn test_strip(&self, test_id: i64, n: usize) -> Result<Vec<(TestOutcome, i64)>, StoreError> {
        Store::test_strip(self, test_id, n)
    }

    fn test_history(
        &self,
        repository: &str,
        context: &str,
        test: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<TestExecutionRow>, StoreError> {
        Store::test_history(self, repository, context, test, since)
    }

    fn run_slice(&self, id: i64, slice: TestSlice) -> Result<Option<RunView>, StoreError> {
        Store::run_slice(self, id, slice)
    }

    fn run_related(&self, run_id: i64) -> Result<RunRelated, StoreError> {
        Store::run_related(self, run_id)
    }

    fn failure_keys_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: &RunFilter,
    ) -> Result<Vec<FailureKey>, StoreError> {
        Store::failure_keys_between(self, since, until, filter)
    }

    fn failure_occurrence(&self, id: i64) -> Result<Option<FailureOccurrence>, StoreError> {
        Store::failure_occurrence(self, id)
    }

    fn fingerprint_id(&self, hash: &str) -> Result<Option<i64>, StoreError> {
        Store::fingerprint_id(self, hash)
    }

    fn fingerprints_first_seen(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, DateTime<Utc>>, StoreError> {
        Store::fingerprints_first_seen(self, ids)
    }

    fn nightly_runs(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: &RunFilter,
    ) -> Result<Vec<NightlyRun>, StoreError> {
        Store::nightly_runs(self, since, until, filter)
    }

    fn dependencies_since_green(&self, run_id: i64) -> Result<SinceGreen, StoreError> {
        Store::dependencies_since_green(self, run_id)
    }

    fn run_by_external_id(
        &self,
        repository: &RepositoryRef,
        external_id: &str,
    ) -> Result<Option<RunBrief>, StoreError> {
        Store::run_by_external_id(self, repository, external_id)
    }

    fn run_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
        attempt: Option<u32>,
    ) -> Result<Option<RunBrief>, StoreError> {
        Store::run_attempt(self, repository, context, commit, attempt)
    }

    fn latest_attempt(
        &self,
        repository: &RepositoryRef,
        context: &str,
        commit: &str,
    ) -> Result<Option<(u32, RunState)>, StoreError> {
        Store::latest_attempt(self, repository, context, commit)
    }

    fn workflow_run(
        &self,
        repository: &str,
        run_id: u64,
        run_attempt: u32,
    ) -> Result<Option<WorkflowRunInfo>, StoreError> {
        Store::workflow_run(self, repository, run_id, run_attempt)
    }

    fn workflow_run_event(
        &self,
        repository: &str,
        run_id: u64,
    ) -> Result<Option<String>, StoreError> {
        Store::workflow_run_event(self, repository, run_id)
    }

    fn has_log(&self, run_id: i64) -> Result<bool, StoreError> {
        Store::has_log(self, run_id)
    }

    fn has_runs_for_commit(
        &self,
        repository: &RepositoryRef,
        commit: &str,
    ) -> Result<bool, StoreError> {
        Store::has_runs_for_commit(self, repository, commit)
    }

    fn sync_state(
        &self,
        forge: Forge,
        scope: &str,
        kind: &str,
    ) -> Result<Option<SyncState>, StoreError> {
        Store::sync_state(self, forge, scope, kind)
    }

    fn bulk_load(&mut self) -> Option<&mut dyn BulkLoad> {
        Some(self)
    }
}

impl BulkLoad for Store {
    fn tune_for_bulk_load(&mut self, cache_mib: u32) -> Result<(), StoreError> {
        Store::tune_for_bulk_load(self, cache_mib)
    }

    fn accepts_fresh_load(&mut self, policy: &Policy) -> Result<bool, StoreError> {
        Store::accepts_fresh_load(self, policy)
    }

    fn fresh_load<'a>(
        &'a mut self,
        policy: &'a Policy,
        now: DateTime<Utc>,
    ) -> Result<Box<dyn FreshLoading + 'a>, StoreError> {
        Ok(Box::new(Store::fresh_load(self, policy, now)?))
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        Store::checkpoint(self)
    }
}

impl FreshLoading for FreshLoad<'_> {
    fn store_batch(
        &mut self,
        runs: &[Prepared],
        closes_batch: bool,
    ) -> Result<Vec<Ingested>, StoreError> {
        FreshLoad::store_batch(self, runs, closes_batch)
    }

    fn steps(&self) -> usize {
        FreshLoad::steps(self)
    }

    fn finish(self: Box<Self>, step: &mut dyn FnMut(usize, &str)) -> Result<(), StoreError> {
        FreshLoad::finish(*self, step)
    }
}

/// Group commit on one SQLite connection: `BEGIN IMMEDIATE` (the write lock
/// at once, so a batch never fails half-way on a busy upgrade), a savepoint
/// per job.
impl Engine for Store {
    fn begin_batch(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn begin_job(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("SAVEPOINT job")?)
    }

    fn end_job(&mut self, keep: bool) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch(if keep {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        })?)
    }

    fn in_batch(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn commit_batch(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    fn rollback_batch(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// One process owns the file and always leads: every fence holds.
    fn fence(&mut self, _fence: &crate::Fence) -> Result<bool, StoreError> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::config::Config;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap()
    }

    fn run(commit: &str) -> NewRun {
        NewRun {
            repository: RepositoryRef {
                forge: Forge::Generic,
                path: "acme/shop".into(),
            },
            context: "ci".into(),
            commit: commit.into(),
            state: RunState::Success,
            queued_at: Some(now() - chrono::Duration::minutes(5)),
            finished_at: Some(now()),
            source: "test".into(),
            ..NewRun::default()
        }
    }

    #[test]
    fn the_sqlite_store_answers_through_the_interface_as_itself() {
        let policy = Policy::from_config(&Config::default());
        let mut store = Store::open_in_memory().unwrap();
        let storage: &mut dyn Storage = &mut store;
        let id = storage.ingest_run(&run("c1"), &policy, now()).unwrap().id;
        let ids: Vec<i64> = storage
            .ingest_batch(&[run("c2"), run("c3")], &policy, now())
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(storage.run_count().unwrap(), 3);
        let seen = storage.run_slice(id, TestSlice::ALL).unwrap().unwrap();
        assert_eq!(
            (seen.commit.as_str(), seen.state.as_str()),
            ("c1", "success")
        );
        // What the store's own methods read, behind the interface.
        let direct = storage.sqlite().expect("the SQLite store");
        assert_eq!(direct.run(id).unwrap(), Some(seen));
        let counters = |m: MetricState| {
            m.counters
                .into_iter()
                .map(|c| (c.family, c.labels, c.value))
                .collect::<Vec<_>>()
        };
        let through = counters(storage.metric_state().unwrap());
        assert!(!through.is_empty(), "the runs were counted");
        assert_eq!(counters(direct.metric_state().unwrap()), through);
        // A failed `in_transaction` leaves nothing of what it wrote.
        let failed = storage.in_transaction(&mut |s| {
            s.ingest_run(&run("c4"), &policy, now())?;
            Err(StoreError::Refused("stop".into()))
        });
        assert!(failed.is_err());
        assert_eq!(storage.run_count().unwrap(), 3);
        // SQLite has the bulk load capability.
        assert!(storage.bulk_load().is_some());
    }

    #[test]
    fn a_constraint_violation_is_told_apart_from_other_failures() {
        let store = Store::open_in_memory().unwrap();
        store.set_meta("k", "v").unwrap();
        let duplicate = StoreError::from(
            store
                .conn
                .execute("INSERT INTO meta (key, value) VALUES ('k', 'w')", [])
                .unwrap_err(),
        );
        assert_eq!(duplicate.kind(), Some(ErrorKind::Constraint));
        assert!(duplicate.is_constraint_violation() && duplicate.is_database());
        let other = StoreError::from(
            store
                .conn
                .execute("SELECT nothing FROM nowhere", [])
                .unwrap_err(),
        );
        assert_eq!(other.kind(), Some(ErrorKind::Other));
        assert!(!other.is_constraint_violation());
        let refused = StoreError::Refused("bad input".into());
        assert_eq!(refused.kind(), None);
        assert!(!refused.is_database());
        // Another engine's error: its kind for callers, its text for the log.
        let engine = StoreError::Engine {
            kind: ErrorKind::Conflict,
            source: "could not serialize access".into(),
        };
        assert_eq!(engine.kind(), Some(ErrorKind::Conflict));
        assert!(engine.is_database() && !engine.is_constraint_violation());
        assert_eq!(
            engine.to_string(),
            "database error: could not serialize access"
        );
    }
}
