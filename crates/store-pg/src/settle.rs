//! Settling on PostgreSQL, as the SQLite store's `settle.rs`: recording
//! merged changes and deciding their outcome once their settle time has
//! passed (by the core's `slo::evaluate_merge`, counted by the rules both
//! stores share, `ci_slo_store::merge_counts`), counting scheduled runs
//! that never finished as lost, and deciding the trigger of runs that
//! waited for it (counted then, by `ci_slo_store::run_counts`).

use crate::counting::{Counting, Sink, count_run, data_quality, moves_live_counters, slo_event};
use crate::ingest_run::upsert_repository;
use crate::statements::Sql;
use crate::{PgStore, PgStoreError};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{Forge, RepositoryRef, RunState, Trigger};
use ci_slo_core::slo::{self, ContextAttempt, SloId};
use ci_slo_store::merge_counts::{DecidedChange, count_merge_with};
use ci_slo_store::{Policy, SettleStats, from_ms};
use postgres::types::ToSql;

/// Which waiting runs (`trigger_pending`) [`decide_pending`] decides.
enum Waiting<'a> {
    /// Those stored at or before this time (Unix ms): they waited long enough.
    StoredBy(i64),
    /// Those of one attempt group (a GitHub workflow run) of a repository.
    Group(&'a RepositoryRef, &'a str),
}

/// Decide the trigger of the waiting runs `which` chooses and count them,
/// in the order they were stored. `trigger` None keeps the stored one
/// (`other`). Their ids.
///
/// Each run is decided by an update that still finds it waiting, and is
/// counted from the row that update returns: two replicas deciding the
/// same runs at once (two settlers, or a settler and a webhook) decide and
/// count each once (the second update waits for the first's transaction,
/// then finds the run decided and leaves it).
fn decide_pending(
    tx: &mut impl Sql,
    which: Waiting<'_>,
    trigger: Option<Trigger>,
    policy: &Policy,
    now_ms: i64,
) -> Result<Vec<i64>, postgres::Error> {
    let live = moves_live_counters(tx, policy)?;
    let waiting = match which {
        Waiting::StoredBy(ms) => tx.query(
            "SELECT id FROM runs WHERE trigger_pending = 1 AND created_at <= $1 ORDER BY id",
            &[&ms],
        )?,
        Waiting::Group(repository, group) => tx.query(
            "SELECT r.id FROM runs r JOIN repositories p ON p.id = r.repository_id
             WHERE r.trigger_pending = 1 AND p.forge = $1 AND p.path = $2 AND r.attempt_group = $3
             ORDER BY r.id",
            &[&repository.forge.as_str(), &repository.path, &group],
        )?,
    };
    let decided = trigger.map(Trigger::as_str);
    let mut ids = Vec::with_capacity(waiting.len());
    for w in waiting {
        let id: i64 = w.get(0);
        let Some(r) = tx.query_opt(
            "UPDATE runs r SET trigger = coalesce($2, r.trigger), trigger_pending = 0, updated_at = $3
             FROM repositories p
             WHERE r.id = $1 AND r.trigger_pending = 1 AND p.id = r.repository_id
             RETURNING r.repository_id, p.path, r.context, r.attempt, r.trigger, r.state,
                r.queued_at, r.started_at, r.finished_at, r.queue_counted, r.final_counted",
            &[&id, &decided, &now_ms],
        )?
        else {
            // Decided meanwhile, by another replica.
            continue;
        };
        let time = |i: usize| r.get::<_, Option<i64>>(i).map(from_ms);
        let (qc, fc) = (r.get::<_, i64>(9) != 0, r.get::<_, i64>(10) != 0);
        let path: String = r.get(1);
        let context: String = r.get(2);
        count_run(
            tx,
            &Counting {
                run_id: id,
                repository_id: r.get(0),
                repository: &path,
                context: &context,
                attempt: u32::try_from(r.get::<_, i64>(3)).unwrap_or_default(),
                trigger: r.get::<_, String>(4).parse().unwrap_or(Trigger::Other),
                state: r.get::<_, String>(5).parse().unwrap_or(RunState::Error),
                queued_at: time(6),
                started_at: time(7),
                finished_at: time(8),
                queue_counted: qc,
                final_counted: fc,
                row_flags: (qc, fc),
            },
            policy,
            live,
            now_ms,
        )?;
        ids.push(id);
    }
    Ok(ids)
}

/// Decide the merged changes whose settle time has passed (since the merge
/// and since their last run arrived); how many were decided here.
fn decide_changes(
    tx: &mut impl Sql,
    policy: &Policy,
    now_ms: i64,
    settle_ms: i64,
) -> Result<usize, postgres::Error> {
    let live = moves_live_counters(tx, policy)?;
    let due = tx.query(
        "SELECT c.id, c.repository_id, r.forge, r.path, c.head_sha, c.merged_at
         FROM changes c JOIN repositories r ON r.id = c.repository_id
         WHERE c.decided_at IS NULL AND c.merged_at IS NOT NULL
           AND c.merged_at <= $1 AND c.last_activity <= $1
         ORDER BY c.id",
        &[&(now_ms - settle_ms)],
    )?;
    let mut decided = 0;
    for row in &due {
        let (change_id, repository_id): (i64, i64) = (row.get(0), row.get(1));
        let forge: Forge = row.get::<_, String>(2).parse().unwrap_or(Forge::Generic);
        let path: String = row.get(3);
        let merged_at: i64 = row.get(5);
        let head: Option<String> = match row.get::<_, Option<String>>(4) {
            Some(h) => Some(h),
            None => tx
                .query_opt(
                    "SELECT commit_sha FROM runs WHERE change_id = $1
                     ORDER BY coalesce(queued_at, started_at, finished_at, created_at) DESC, id DESC LIMIT 1",
                    &[&change_id],
                )?
                .map(|r| r.get(0)),
        };
        let mut runs = Vec::new();
        if let Some(head) = &head {
            for r in tx.query(
                "SELECT context, attempt_group, attempt, state FROM runs
                 WHERE repository_id = $1 AND commit_sha = $2 AND trigger <> 'schedule' ORDER BY id",
                &[&repository_id, head],
            )? {
                runs.push(ContextAttempt {
                    context: r.get(0),
                    group: r.get(1),
                    attempt: u32::try_from(r.get::<_, i64>(2)).unwrap_or_default(),
                    state: r.get::<_, String>(3).parse().unwrap_or(RunState::Error),
                });
            }
        }
        // Each change is decided by an update that still finds it undecided:
        // two replicas settling at once decide and count it once.
        let Some(e) = slo::evaluate_merge(policy.required_contexts(forge, &path), &runs) else {
            if tx.execute(
                "UPDATE changes SET decided_at = $2, head_sha = $3 WHERE id = $1 AND decided_at IS NULL",
                &[&change_id, &now_ms, &head],
            )? == 1
            {
                data_quality(tx, "merged_change_without_runs")?;
                decided += 1;
            }
            continue;
        };
        let updated = tx.execute(
            "UPDATE changes SET decided_at = $2, head_sha = $3, outcome = $4, retries = $5, missing = $6
             WHERE id = $1 AND decided_at IS NULL",
            &[
                &change_id,
                &now_ms,
                &head,
                &e.outcome.as_str(),
                &i64::from(e.retries),
                &serde_json::to_string(&e.missing_contexts).unwrap_or_default(),
            ],
        )?;
        if updated == 0 {
            continue;
        }
        decided += 1;
        count_merge_with(
            &mut Sink(tx),
            &DecidedChange {
                change_id,
                repository_id,
                repository: &path,
                merged_at_ms: merged_at,
            },
            &e,
            live,
        )?;
    }
    Ok(decided)
}

/// Count scheduled runs that never finished within `lost_after` as lost
/// (a bad `runs_completed` event); how many were counted here.
fn count_lost_runs(
    tx: &mut impl Sql,
    policy: &Policy,
    now_ms: i64,
) -> Result<usize, postgres::Error> {
    let live = moves_live_counters(tx, policy)?;
    let lost = tx.query(
        "SELECT runs.id, runs.repository_id, r.path, coalesce(started_at, queued_at, created_at)
         FROM runs JOIN repositories r ON r.id = runs.repository_id
         WHERE final_counted = 0 AND trigger = 'schedule'
           AND coalesce(started_at, queued_at, created_at) <= $1
           AND NOT EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = runs.id AND e.completed_good IS NOT NULL)
         ORDER BY runs.id",
        &[&(now_ms - policy.lost_after_ms)],
    )?;
    // Counted when its event is recorded now: not by another replica
    // settling at the same time (the event is a `run_events` column, set once).
    let mut counted = 0;
    for r in &lost {
        let run_id: i64 = r.get(0);
        let since_ms: i64 = r.get(3);
        counted += usize::from(slo_event(
            tx,
            SloId::RunsCompleted,
            &format!("run:{run_id}"),
            r.get(1),
            r.get::<_, &str>(2),
            since_ms + policy.lost_after_ms,
            false,
            live,
        )?);
    }
    Ok(counted)
}

impl PgStore {
    /// Record that a change was merged (from a forge's merge event, or an
    /// import). Its outcome is decided later, by [`PgStore::settle`]. As the
    /// SQLite store's `Store::record_merge`.
    pub fn record_merge(
        &mut self,
        repository: &RepositoryRef,
        number: i64,
        head_sha: Option<&str>,
        merged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), PgStoreError> {
        let mut tx = self.write_tx()?;
        let repository_id = upsert_repository(&mut tx, repository.forge, &repository.path)?;
        let values: [&(dyn ToSql + Sync); 5] = [
            &repository_id,
            &number,
            &head_sha,
            &merged_at.timestamp_millis(),
            &now.timestamp_millis(),
        ];
        // Updated first: an insert that meets a conflict still takes a
        // number from the identity sequence (ids follow SQLite's).
        let updated = tx.execute(
            "UPDATE changes AS c SET head_sha = coalesce($3, c.head_sha),
                merged_at = coalesce(c.merged_at, $4), last_activity = $5
             WHERE repository_id = $1 AND number = $2",
            &values,
        )?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO changes AS c (repository_id, number, head_sha, merged_at, last_activity)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (repository_id, number) DO UPDATE SET
                    head_sha = coalesce(excluded.head_sha, c.head_sha),
                    merged_at = coalesce(c.merged_at, excluded.merged_at),
                    last_activity = excluded.last_activity",
                &values,
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Decide merged changes whose settle time has passed, count scheduled
    /// runs that never finished as lost, and count runs that waited
    /// `trigger_wait` for their trigger in vain. `settle_ms` overrides the
    /// policy (0 after a bulk load). As the SQLite store's `Store::settle`.
    pub fn settle(
        &mut self,
        policy: &Policy,
        now: DateTime<Utc>,
        settle_ms: Option<i64>,
    ) -> Result<SettleStats, PgStoreError> {
        let now_ms = now.timestamp_millis();
        let settle = settle_ms.unwrap_or(policy.merge_settle_ms);
        let mut tx = self.write_tx()?;
        // Runs that waited long enough for their trigger are counted as they are.
        let expired = decide_pending(
            &mut tx,
            Waiting::StoredBy(now_ms - policy.trigger_wait_ms),
            None,
            policy,
            now_ms,
        )?;
        for _ in &expired {
            data_quality(&mut tx, "unknown_trigger")?;
        }
        let stats = SettleStats {
            changes_decided: decide_changes(&mut tx, policy, now_ms, settle)?,
            runs_lost: count_lost_runs(&mut tx, policy, now_ms)?,
            triggers_expired: expired.len(),
        };
        tx.commit()?;
        Ok(stats)
    }

    /// The trigger of an attempt group (a GitHub workflow run) is known: its
    /// runs that waited for it get it and are counted. Returns their ids. As
    /// the SQLite store's `Store::decide_trigger`.
    pub fn decide_trigger(
        &mut self,
        repository: &RepositoryRef,
        attempt_group: &str,
        trigger: Trigger,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, PgStoreError> {
        let mut tx = self.write_tx()?;
        let ids = decide_pending(
            &mut tx,
            Waiting::Group(repository, attempt_group),
            Some(trigger),
            policy,
            now.timestamp_millis(),
        )?;
        tx.commit()?;
        Ok(ids)
    }
}
