//! Settling: recording merged changes and deciding their outcome once their
//! settle time has passed, counting scheduled runs that never finished as
//! lost, and deciding the trigger of runs that waited for it.

use crate::counting::{Counting, Sink, count_run, data_quality, slo_event};
use crate::error::StoreError;
use crate::merge_counts::{DecidedChange, count_merge_with};
use crate::policy::{Policy, moves_live_counters};
use crate::{REPOSITORY_ID, Store, from_ms, hourly, tally, to_ms, upsert_repository};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{Forge, RepositoryRef, RunState, Trigger};
use ci_slo_core::slo::{self, ContextAttempt, SloId};
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleStats {
    pub changes_decided: usize,
    pub runs_lost: usize,
    /// Runs counted with trigger `other` after waiting `trigger_wait` for theirs.
    pub triggers_expired: usize,
}

/// Decide the trigger of waiting runs (`trigger_pending`) chosen by `filter`
/// (a condition on `r`, binding `args`) and count them. `trigger` None keeps
/// the stored one (`other`).
pub(crate) fn decide_pending(
    tx: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    trigger: Option<Trigger>,
    policy: &Policy,
    now_ms: i64,
) -> rusqlite::Result<Vec<i64>> {
    let live = moves_live_counters(tx, policy)?;
    type Row = (
        i64,
        i64,
        String,
        String,
        u32,
        String,
        String,
        [Option<i64>; 3],
        bool,
        bool,
    );
    let mut rows: Vec<Row> = tx
        .prepare_cached(&format!(
            "SELECT r.id, r.repository_id, (SELECT path FROM repositories WHERE id = r.repository_id),
                    r.context, r.attempt, r.trigger, r.state,
                    r.queued_at, r.started_at, r.finished_at, r.queue_counted, r.final_counted
             FROM runs r WHERE r.trigger_pending = 1 AND {filter}"
        ))?
        .query_map(args, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                [r.get(7)?, r.get(8)?, r.get(9)?],
                r.get(10)?,
                r.get(11)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    // In the order they were stored (sorted here: an ORDER BY would make
    // SQLite re-prepare the cached statement at every use).
    rows.sort_by_key(|r| r.0);
    let mut ids = Vec::with_capacity(rows.len());
    for (id, repository_id, path, context, attempt, stored, state, times, qc, fc) in rows {
        let trigger = trigger.unwrap_or_else(|| stored.parse().unwrap_or(Trigger::Other));
        tx.prepare_cached(
            "UPDATE runs SET trigger_code = ?2, trigger_pending = 0, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![
            id,
            crate::ingest_run::coded(trigger.as_str(), &crate::ingest_run::TRIGGER_CODES),
            now_ms
        ])?;
        let [queued_at, started_at, finished_at] = times.map(|t| t.map(from_ms));
        count_run(
            tx,
            &Counting {
                run_id: id,
                repository_id,
                repository: &path,
                context: &context,
                attempt,
                trigger,
                state: state.parse().unwrap_or(RunState::Error),
                queued_at,
                started_at,
                finished_at,
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

/// From this many changes due on, [`Store::settle`] adds their counters and
/// hourly rollup up in memory (`tally::Buffered`, `hourly::Suspended`).
const MANY_CHANGES: i64 = 1_000;

pub(crate) fn decide_changes(
    tx: &Connection,
    policy: &Policy,
    now_ms: i64,
    settle_ms: i64,
) -> Result<usize, StoreError> {
    let live = moves_live_counters(tx, policy)?;
    let due: Vec<(i64, i64, String, String, Option<String>, i64)> = tx
        .prepare_cached(
            "SELECT c.id, c.repository_id, r.forge, r.path, c.head_sha, c.merged_at
             FROM changes c JOIN repositories r ON r.id = c.repository_id
             WHERE c.decided_at IS NULL AND c.merged_at IS NOT NULL
               AND c.merged_at <= ?1 AND c.last_activity <= ?1",
        )?
        .query_map([now_ms - settle_ms], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (i, (change_id, repository_id, forge, path, head_sha, merged_at)) in due.iter().enumerate()
    {
        // The hourly increments added up in memory (many changes, see
        // `Store::settle`) are written now and then: memory stays flat.
        if i % MANY_CHANGES as usize == MANY_CHANGES as usize - 1 {
            hourly::flush_suspended(tx)?;
        }
        let forge: Forge = forge.parse().unwrap_or(Forge::Generic);
        let head = match head_sha {
            Some(h) => Some(h.clone()),
            None => tx
                .prepare_cached(
                    "SELECT commit_sha FROM runs WHERE change_id = ?1
                     ORDER BY coalesce(queued_at, started_at, finished_at, created_at) DESC, id DESC LIMIT 1",
                )?
                .query_row([change_id], |r| r.get(0))
                .optional()?,
        };
        let mut runs = Vec::new();
        if let Some(head) = &head {
            let mut stmt = tx.prepare_cached(
                "SELECT context, attempt_group, attempt, state FROM runs
                 WHERE repository_id = ?1 AND commit_sha = ?2 AND trigger != 'schedule'",
            )?;
            let rows = stmt.query_map(params![repository_id, head], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            for row in rows {
                let (context, group, attempt, state) = row?;
                let state = state.parse().unwrap_or(RunState::Error);
                runs.push(ContextAttempt {
                    context,
                    group,
                    attempt,
                    state,
                });
            }
        }
        let evaluation = slo::evaluate_merge(policy.required_contexts(forge, path), &runs);
        let Some(e) = evaluation else {
            tx.execute(
                "UPDATE changes SET decided_at = ?2, head_sha = ?3 WHERE id = ?1",
                params![change_id, now_ms, head],
            )?;
            data_quality(tx, "merged_change_without_runs")?;
            continue;
        };
        tx.execute(
            "UPDATE changes SET decided_at = ?2, head_sha = ?3, outcome = ?4, retries = ?5, missing = ?6 WHERE id = ?1",
            params![
                change_id,
                now_ms,
                head,
                e.outcome.as_str(),
                e.retries,
                serde_json::to_string(&e.missing_contexts).unwrap_or_default()
            ],
        )?;
        count_merge_with(
            &mut Sink(tx),
            &DecidedChange {
                change_id: *change_id,
                repository_id: *repository_id,
                repository: path,
                merged_at_ms: *merged_at,
            },
            &e,
            live,
        )?;
    }
    Ok(due.len())
}

pub(crate) fn count_lost_runs(
    tx: &Connection,
    policy: &Policy,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let live = moves_live_counters(tx, policy)?;
    let lost: Vec<(i64, i64, String, i64)> = tx
        .prepare_cached(
            "SELECT runs.id, runs.repository_id, r.path, coalesce(started_at, queued_at, created_at)
             FROM runs JOIN repositories r ON r.id = runs.repository_id
             WHERE final_counted = 0 AND trigger = 'schedule'
               AND coalesce(started_at, queued_at, created_at) <= ?1
               AND NOT EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = runs.id AND e.completed_good IS NOT NULL)",
        )?
        .query_map([now_ms - policy.lost_after_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (run_id, repository_id, path, since_ms) in &lost {
        let at_ms = since_ms + policy.lost_after_ms;
        slo_event(
            tx,
            SloId::RunsCompleted,
            &format!("run:{run_id}"),
            *repository_id,
            path,
            at_ms,
            false,
            live,
        )?;
    }
    Ok(lost.len())
}

impl Store {
    /// Record that a change was merged (from a forge's merge event, or an
    /// import). Its outcome is decided later, by [`Store::settle`].
    pub fn record_merge(
        &mut self,
        repository: &RepositoryRef,
        number: i64,
        head_sha: Option<&str>,
        merged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        let repository_id = upsert_repository(&tx, repository.forge, &repository.path)?;
        tx.execute(
            "INSERT INTO changes (repository_id, number, head_sha, merged_at, last_activity) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repository_id, number) DO UPDATE SET
                head_sha = coalesce(excluded.head_sha, changes.head_sha),
                merged_at = coalesce(changes.merged_at, excluded.merged_at),
                last_activity = excluded.last_activity",
            params![repository_id, number, head_sha, to_ms(merged_at), to_ms(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Decide merged changes whose settle time has passed (both since the merge
    /// and since their last run arrived), count scheduled runs that never
    /// finished as lost, and count runs that waited `trigger_wait` for their
    /// trigger in vain. `settle_ms` overrides the policy (0 after a bulk load).
    pub fn settle(
        &mut self,
        policy: &Policy,
        now: DateTime<Utc>,
        settle_ms: Option<i64>,
    ) -> Result<SettleStats, StoreError> {
        let tx = self.write_tx()?;
        let now_ms = to_ms(now);
        let settle = settle_ms.unwrap_or(policy.merge_settle_ms);
        // Many changes to decide at once (after a bulk import: 70 k for a
        // 1 M-run Cockpit file): their counters and hourly rollup are added
        // up in memory and written once, as a batch of runs does (three SLO
        // events per change would otherwise cost two rollup upserts and a
        // counter upsert or two each).
        let due: i64 = tx.query_row(
            "SELECT count(*) FROM changes WHERE decided_at IS NULL AND merged_at IS NOT NULL
               AND merged_at <= ?1 AND last_activity <= ?1",
            [now_ms - settle],
            |r| r.get(0),
        )?;
        let (rollup, buffer) = if due >= MANY_CHANGES {
            (hourly::Suspended::start(&tx)?, tally::Buffered::start())
        } else {
            (None, None)
        };
        // Runs that waited long enough for their trigger are counted as they are.
        let expired = decide_pending(
            &tx,
            "r.created_at <= ?1",
            &[&(now_ms - policy.trigger_wait_ms)],
            None,
            policy,
            now_ms,
        )?;
        for _ in &expired {
            data_quality(&tx, "unknown_trigger")?;
        }
        let stats = SettleStats {
            changes_decided: decide_changes(&tx, policy, now_ms, settle)?,
            runs_lost: count_lost_runs(&tx, policy, now_ms)?,
            triggers_expired: expired.len(),
        };
        if let Some(buffer) = buffer {
            buffer.flush(&tx)?;
        }
        if let Some(rollup) = rollup {
            rollup.finish(&tx)?;
        }
        tx.commit()?;
        Ok(stats)
    }

    /// The trigger of an attempt group (a GitHub workflow run) is known: its
    /// runs that waited for it get it and are counted. Returns their ids.
    pub fn decide_trigger(
        &mut self,
        repository: &RepositoryRef,
        attempt_group: &str,
        trigger: Trigger,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        let tx = self.write_tx()?;
        let ids = decide_pending(
            &tx,
            &format!("r.repository_id = {REPOSITORY_ID} AND r.attempt_group = ?3"),
            &[&repository.forge.as_str(), &repository.path, &attempt_group],
            Some(trigger),
            policy,
            to_ms(now),
        )?;
        tx.commit()?;
        Ok(ids)
    }
}
