//! Counting what a run newly makes known, once each: SLO events (`slo_event`),
//! a run's queue time and final state (`count_run`, by the rules every engine
//! shares in `run_counts`), its failure classes
//! (`store_failures`), and data-quality rejections. Ingest and settling both
//! count here. During a fresh load (`fresh.rs`), [`SloEvents`] sends SLO
//! events to a scratch table instead.

use crate::catalog::FamilyDef;
use crate::fingerprints::Fingerprints;
use crate::policy::Policy;
use crate::run_counts::{CountSink, count_run_with};
use crate::{catalog, hourly, tally};
use ci_slo_core::model::{FailureEvidence, NewRun};
use ci_slo_core::slo::SloId;
use rusqlite::{Connection, params};
use tally::{ExemplarRef, Labels};

pub(crate) use crate::run_counts::{Counting, event_ms};

thread_local! {
    /// Whether a fresh load on this thread appends SLO events to `temp.fresh_slo`.
    static SLO_EVENTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether `slo_event` appends to `temp.fresh_slo` (a fresh load is storing).
fn appends_slo_events() -> bool {
    SLO_EVENTS.with(|f| f.get())
}

/// While alive, SLO events of other subjects than runs (a run's go to its
/// `run_events` row) go to `temp.fresh_slo`: their key is text, so
/// consecutive events would land all over `slo_events`; appended there
/// once, sorted, at the end of the load. Reset on drop (a
/// failed load rolls the scratch table back with it).
pub(crate) struct SloEvents;

impl SloEvents {
    pub(crate) fn start() -> SloEvents {
        SLO_EVENTS.with(|f| f.set(true));
        SloEvents
    }
}

impl SloEvents {
    /// Write the `run_events` rows of the runs stored since the last call:
    /// during a fresh load a run's events (each set once) are gathered in
    /// memory and its row is appended once, in run order, rather than
    /// inserted and updated once per event.
    pub(crate) fn write_run_events(&self, tx: &Connection) -> rusqlite::Result<()> {
        const ROWS: usize = 32;
        let rows = RUN_EVENTS.with(|r| std::mem::take(&mut *r.borrow_mut()));
        let single =
            "INSERT INTO run_events (run_id, repository_id, queue_at, queue_good, run_time_at,
             run_time_good, completed_at, completed_good) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
        let many = format!("{single}{}", ", (?, ?, ?, ?, ?, ?, ?, ?)".repeat(ROWS - 1));
        let values = |row: &RunEventsRow| {
            let mut v: Vec<rusqlite::types::Value> =
                vec![row.run_id.into(), row.repository_id.into()];
            for event in row.events {
                v.push(event.map(|e| e.0).into());
                v.push(event.map(|e| e.1).into());
            }
            v
        };
        let mut chunks = rows.chunks_exact(ROWS);
        for chunk in chunks.by_ref() {
            tx.prepare_cached(&many)?
                .execute(rusqlite::params_from_iter(chunk.iter().flat_map(values)))?;
        }
        let mut one = tx.prepare_cached(single)?;
        for row in chunks.remainder() {
            one.execute(rusqlite::params_from_iter(values(row)))?;
        }
        Ok(())
    }
}

impl Drop for SloEvents {
    fn drop(&mut self) {
        SLO_EVENTS.with(|f| f.set(false));
        RUN_EVENTS.with(|r| r.borrow_mut().clear());
    }
}

/// A run's `run_events` row gathered during a fresh load: (time, good) of
/// queue_time, run_time and runs_completed.
struct RunEventsRow {
    run_id: i64,
    repository_id: i64,
    events: [Option<(i64, bool)>; 3],
}

thread_local! {
    /// The `run_events` rows of a fresh load not written yet (`SloEvents`).
    static RUN_EVENTS: std::cell::RefCell<Vec<RunEventsRow>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// During a fresh load, set the event `slot` of run `run_id`'s row in memory
/// (once, as the upsert's `WHERE <good> IS NULL` does); whether it was set.
fn gather_run_event(run_id: i64, repository_id: i64, slot: usize, at_ms: i64, good: bool) -> bool {
    RUN_EVENTS.with(|r| {
        let mut rows = r.borrow_mut();
        if rows.last().is_none_or(|row| row.run_id != run_id) {
            rows.push(RunEventsRow {
                run_id,
                repository_id,
                events: [None; 3],
            });
        }
        let row = rows.last_mut().expect("pushed above");
        if row.events[slot].is_some() {
            return false;
        }
        row.events[slot] = Some((at_ms, good));
        true
    })
}

/// The `run_events` columns (time, good) of the SLO events a run has
/// (subject `run:<id>`), None for the SLOs of other subjects (both stores'
/// schema).
pub fn run_event_columns(slo: SloId) -> Option<(&'static str, &'static str)> {
    match slo {
        SloId::QueueTime => Some(("queue_at", "queue_good")),
        SloId::RunTime => Some(("run_time_at", "run_time_good")),
        SloId::RunsCompleted => Some(("completed_at", "completed_good")),
        _ => None,
    }
}

/// Record an SLO event once; count it when it is new and live.
#[allow(clippy::too_many_arguments)]
pub(crate) fn slo_event(
    tx: &Connection,
    slo: SloId,
    subject: &str,
    repository_id: i64,
    repository: &str,
    at_ms: i64,
    good: bool,
    live: bool,
) -> rusqlite::Result<bool> {
    let run_id = subject
        .strip_prefix("run:")
        .and_then(|id| id.parse::<i64>().ok());
    let slot = match slo {
        SloId::QueueTime => 0,
        SloId::RunTime => 1,
        _ => 2,
    };
    let inserted = if let (true, Some(_), Some(run_id)) =
        (appends_slo_events(), run_event_columns(slo), run_id)
    {
        // A fresh load: the run is new, its row written once (`SloEvents`).
        gather_run_event(run_id, repository_id, slot, at_ms, good)
    } else if let (Some((at, good_column)), Some(run_id)) = (run_event_columns(slo), run_id) {
        // A run's events are one `run_events` row (migration 13), each set
        // once: appended in run order by a fresh load too.
        tx.prepare_cached(&format!(
            "INSERT INTO run_events (run_id, repository_id, {at}, {good_column}) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (run_id) DO UPDATE SET {at} = excluded.{at}, {good_column} = excluded.{good_column}
             WHERE {good_column} IS NULL"
        ))?
        .execute(params![run_id, repository_id, at_ms, good])?
            == 1
    } else {
        // A fresh load appends its events to a scratch table, written into
        // `slo_events` in key order at its end (`SloEvents`): they are
        // all new (the store held no event, each subject is new).
        let sql = if appends_slo_events() {
            "INSERT INTO temp.fresh_slo (slo, subject, repository_id, at, good) VALUES (?1, ?2, ?3, ?4, ?5)"
        } else {
            "INSERT OR IGNORE INTO slo_events (slo, subject, repository_id, at, good) VALUES (?1, ?2, ?3, ?4, ?5)"
        };
        tx.prepare_cached(sql)?.execute(params![
            slo.as_str(),
            subject,
            repository_id,
            at_ms,
            good
        ])? == 1
    };
    if inserted {
        hourly::add(repository_id, at_ms, slo.as_str(), i64::from(good), 1);
        if live {
            let (result, other) = if good {
                ("good", "bad")
            } else {
                ("bad", "good")
            };
            let series = |result| {
                [
                    ("slo", slo.as_str()),
                    ("repository", repository),
                    ("result", result),
                ]
            };
            // Both results exist from the first event on: a repository's first
            // bad event must be an increase, not a new series, for rate() to see it.
            tally::ensure(tx, catalog::SLO_EVENTS, &series(other))?;
            tally::inc(tx, catalog::SLO_EVENTS, &series(result), 1.0)?;
        } else {
            tally::inc(tx, catalog::BACKDATED, &[("kind", "slo_event")], 1.0)?;
        }
    }
    Ok(inserted)
}

pub(crate) fn data_quality(tx: &Connection, reason: &str) -> rusqlite::Result<()> {
    tally::inc(tx, catalog::DATA_QUALITY, &[("reason", reason)], 1.0)
}

/// The (queue_counted, final_counted) flags [`count_run`] leaves a run with
/// that was counted for nothing before: the queue once the start is known,
/// the final state once terminal; nothing while the trigger is pending.
pub(crate) fn counted_after(run: &NewRun, trigger_pending: bool) -> (bool, bool) {
    if trigger_pending {
        (false, false)
    } else {
        (run.started_at.is_some(), run.state.is_terminal())
    }
}

/// The SQLite store's [`CountSink`]: the counters and SLO events of the
/// transaction's connection.
pub(crate) struct Sink<'c>(pub(crate) &'c Connection);

impl CountSink for Sink<'_> {
    type Error = rusqlite::Error;
    fn inc(&mut self, family: FamilyDef, labels: &Labels<'_>, by: f64) -> rusqlite::Result<()> {
        tally::inc(self.0, family, labels, by)
    }
    fn observe(
        &mut self,
        family: FamilyDef,
        labels: &Labels<'_>,
        bounds: &[f64],
        value: f64,
        exemplar: Option<ExemplarRef>,
    ) -> rusqlite::Result<()> {
        tally::observe(self.0, family, labels, bounds, value, exemplar)
    }
    fn slo_event(
        &mut self,
        slo: SloId,
        subject: &str,
        repository_id: i64,
        repository: &str,
        at_ms: i64,
        good: bool,
        live: bool,
    ) -> rusqlite::Result<()> {
        slo_event(
            self.0,
            slo,
            subject,
            repository_id,
            repository,
            at_ms,
            good,
            live,
        )
        .map(drop)
    }
}

/// Count what a run newly makes known, once each, by the rules every engine
/// shares ([`count_run_with`]), and store the run's counted flags.
pub(crate) fn count_run(
    tx: &Connection,
    c: &Counting<'_>,
    policy: &Policy,
    live: bool,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let flags = count_run_with(&mut Sink(tx), c, policy, live, now_ms)?;
    if flags != c.row_flags {
        tx.prepare_cached("UPDATE runs SET queue_counted = ?2, final_counted = ?3 WHERE id = ?1")?
            .execute(params![c.run_id, flags.0, flags.1])?;
    }
    Ok(())
}

/// Replace a run's failures. Failure counters move only for classes the run
/// did not have before, so a replay or an update never counts twice.
/// `replaces`: the run was stored before and may have failures to replace;
/// a new run has none, so nothing is looked up or deleted (a fresh load
/// builds the `failures` indexes only at its end: `fresh.rs`).
/// `fingerprints`: a fresh load's, moved in memory (`fingerprints.rs`): a
/// failure's normalized text is computed only for a fingerprint it stores.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_failures(
    tx: &Connection,
    run_id: i64,
    repository: &str,
    failures: &[FailureEvidence],
    event_ms: i64,
    live: bool,
    replaces: bool,
    mut fingerprints: Option<&mut Fingerprints>,
) -> rusqlite::Result<()> {
    let mut counted: Vec<String> = Vec::new();
    if replaces {
        counted = tx
            .prepare_cached("SELECT DISTINCT class FROM failures WHERE run_id = ?1")?
            .query_map([run_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.prepare_cached("DELETE FROM failures WHERE run_id = ?1")?
            .execute([run_id])?;
    }
    for f in failures {
        let mut fingerprint_id = None;
        let mut is_new = false;
        if let Some(hash) = &f.fingerprint {
            // A new fingerprint is stored with its first occurrence, a known
            // one moves on (a fresh load's in memory).
            let normalized = || crate::classify::normalize_fingerprint(&f.evidence);
            let (id, new) = match fingerprints.as_deref_mut() {
                Some(cached) => cached.see(tx, hash, normalized, event_ms)?,
                None => crate::fingerprints::upsert(tx, hash, normalized, event_ms)?,
            };
            is_new = new;
            if is_new && live {
                tally::inc(
                    tx,
                    catalog::FINGERPRINTS_NEW,
                    &[("repository", repository)],
                    1.0,
                )?;
            }
            fingerprint_id = Some(id);
        }
        tx.prepare_cached(
            "INSERT INTO failures (run_id, test_name, class, category, line, evidence, context, fingerprint_id, is_new,
               context_before, candidates)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            run_id,
            f.test_name,
            f.class,
            f.category,
            f.line.map(|l| l as i64),
            f.evidence,
            serde_json::to_string(&f.context).unwrap_or_else(|_| "[]".into()),
            fingerprint_id,
            is_new,
            f.context_before,
            (!f.candidates.is_empty())
                .then(|| serde_json::to_string(&f.candidates).unwrap_or_else(|_| "[]".into())),
        ])?;
        if !counted.contains(&f.class) {
            counted.push(f.class.clone());
            if live {
                tally::inc(
                    tx,
                    catalog::FAILURES,
                    &[
                        ("repository", repository),
                        ("class", &f.class),
                        ("category", &f.category),
                    ],
                    1.0,
                )?;
            }
        }
    }
    Ok(())
}
