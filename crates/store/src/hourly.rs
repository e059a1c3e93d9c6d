//! The hourly SLO rollup (`slo_hourly`) during a bulk load.
//!
//! Triggers keep `slo_hourly` in step with `slo_events`, `run_events` and `test_events`,
//! two upserts for every event row, which doubles the cost of storing an
//! event. A batch ([`Suspended`]) drops those triggers inside its own
//! transaction, adds the same increments up in memory ([`add`], called where
//! the event rows are written) and writes each hourly row once, then creates
//! the triggers again from the SQL they were stored with, all before the
//! batch commits. Other connections only ever see the triggers in place; a
//! batch that fails rolls back with them restored.

use foldhash::HashMap;
use rusqlite::{Connection, OptionalExtension, params};
use std::cell::RefCell;

/// The triggers whose work a batch does itself (schema migrations 5, 10 and 13).
const TRIGGERS: [&str; 7] = [
    "slo_events_hourly_insert",
    "test_events_hourly_insert",
    "test_events_hourly_update",
    "run_events_hourly_insert",
    "run_events_hourly_update_queue_time",
    "run_events_hourly_update_run_time",
    "run_events_hourly_update_runs_completed",
];

/// (repository id (0: all), hour start in Unix ms, SLO) → (good, total).
type Rollup = HashMap<(i64, i64, &'static str), (i64, i64)>;

thread_local! {
    /// The hourly increments of the batch running on this thread, if any.
    static ROLLUP: RefCell<Option<Rollup>> = const { RefCell::new(None) };
}

/// The rollup triggers, dropped in the batch's transaction: their SQL, to
/// create them again in [`Suspended::finish`].
pub(crate) struct Suspended {
    sql: Vec<String>,
}

impl Suspended {
    /// Drop the rollup triggers in `tx` and add up their work in memory from
    /// now on. None (nothing dropped) when a batch is already doing so on
    /// this thread or when a trigger is not as expected.
    pub(crate) fn start(tx: &Connection) -> rusqlite::Result<Option<Suspended>> {
        if ROLLUP.with(|r| r.borrow().is_some()) {
            return Ok(None);
        }
        let mut sql = Vec::with_capacity(TRIGGERS.len());
        for name in TRIGGERS {
            let Some(s) = tx
                .prepare_cached(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                )?
                .query_row([name], |r| r.get::<_, String>(0))
                .optional()?
            else {
                return Ok(None);
            };
            sql.push(s);
        }
        for name in TRIGGERS {
            tx.execute_batch(&format!("DROP TRIGGER {name}"))?;
        }
        ROLLUP.with(|r| *r.borrow_mut() = Some(Rollup::default()));
        Ok(Some(Suspended { sql }))
    }

    /// Write the hourly increments added up since [`Suspended::start`] and
    /// create the triggers again, in `tx` (before it commits).
    pub(crate) fn finish(self, tx: &Connection) -> rusqlite::Result<()> {
        let rollup = ROLLUP.with(|r| r.borrow_mut().take()).unwrap_or_default();
        write(tx, rollup)?;
        for sql in &self.sql {
            tx.execute_batch(sql)?;
        }
        Ok(())
    }

    /// Write the hourly increments added up so far, in `tx`, and go on
    /// adding up (the triggers stay suspended): memory stays flat in a long load.
    pub(crate) fn flush(&self, tx: &Connection) -> rusqlite::Result<()> {
        let rollup = ROLLUP.with(|r| r.borrow_mut().as_mut().map(std::mem::take));
        write(tx, rollup.unwrap_or_default())
    }
}

/// [`Suspended::flush`] for code that does not hold the batch's
/// [`Suspended`]: write the increments added up so far once they are more
/// than `rows` hourly rows, if a batch on this thread is adding them up
/// (memory stays flat; rows are written once for as many events as fall in
/// their hour meanwhile, not once for every few events).
pub(crate) fn flush_suspended_beyond(tx: &Connection, rows: usize) -> rusqlite::Result<()> {
    let rollup = ROLLUP.with(|r| {
        r.borrow_mut()
            .as_mut()
            .filter(|rollup| rollup.len() > rows)
            .map(std::mem::take)
    });
    match rollup {
        Some(rollup) => write(tx, rollup),
        None => Ok(()),
    }
}

fn write(tx: &Connection, rollup: Rollup) -> rusqlite::Result<()> {
    {
        let mut rows: Vec<_> = rollup.into_iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut upsert = tx.prepare_cached(
            "INSERT INTO slo_hourly (repository_id, hour, slo, good, total) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repository_id, hour, slo) DO UPDATE SET good = good + excluded.good,
                total = total + excluded.total",
        )?;
        for ((repository_id, hour, slo), (good, total)) in rows {
            upsert.execute(params![repository_id, hour, slo, good, total])?;
        }
    }
    Ok(())
}

impl Drop for Suspended {
    fn drop(&mut self) {
        ROLLUP.with(|r| r.borrow_mut().take());
    }
}

/// An event row of `repository_id` at `at_ms` was written: what the rollup
/// triggers would add to its hour (for all repositories and for its own),
/// when a batch has them suspended; otherwise the triggers do it.
pub(crate) fn add(repository_id: i64, at_ms: i64, slo: &'static str, good: i64, total: i64) {
    ROLLUP.with(|r| {
        if let Some(rollup) = r.borrow_mut().as_mut() {
            let hour = at_ms / 3_600_000 * 3_600_000;
            for repository in [0, repository_id] {
                let e = rollup.entry((repository, hour, slo)).or_default();
                e.0 += good;
                e.1 += total;
            }
        }
    });
}
