//! Counting once, on PostgreSQL: the first pieces of the SQLite store's
//! `counting.rs`. An SLO event is a row keyed by (slo, subject): the insert
//! that creates it (`ON CONFLICT DO NOTHING`) is the one that counts it, so
//! two replicas storing the same event at once count it once (the second
//! insert waits for the first's transaction and then finds the row). A
//! run's events (subject `run:<id>`: queue_time, run_time, runs_completed)
//! are columns of its `run_events` row, set by an upsert only while NULL:
//! the second replica's upsert waits likewise, then finds the column set and
//! changes nothing. The counter series an event moves are the
//! transaction's, added at its commit (`statements.rs`), only when the
//! event was new. The hourly rollup (`slo_hourly`) is kept by the schema's
//! triggers.

use crate::statements::Sql;
use crate::{PgStore, PgStoreError, tally};
use ci_slo_core::catalog::{self, FamilyDef};
use ci_slo_core::model::RunState;
use ci_slo_core::slo::SloId;
use ci_slo_store::Policy;
use ci_slo_store::run_counts::{CountSink, count_run_with};
pub(crate) use ci_slo_store::run_counts::{Counting, event_ms};
use ci_slo_store::tally::{ExemplarRef, Labels, labels_json};

/// Setting one event of a run's `run_events` row ($1 run, $2 repository,
/// $3 time, $4 good) while it has none; a row back when it was set. The
/// text of each is a constant (statements are prepared by their text). As
/// the SQLite store's `counting::slo_event` for the SLOs of
/// `counting::run_event_columns`.
fn run_event_upsert(slo: SloId) -> Option<&'static str> {
    match slo {
        SloId::QueueTime => Some(
            "INSERT INTO run_events AS e (run_id, repository_id, queue_at, queue_good) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id) DO UPDATE SET queue_at = excluded.queue_at, queue_good = excluded.queue_good
             WHERE e.queue_good IS NULL
             RETURNING 1",
        ),
        SloId::RunTime => Some(
            "INSERT INTO run_events AS e (run_id, repository_id, run_time_at, run_time_good) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id) DO UPDATE SET run_time_at = excluded.run_time_at,
                run_time_good = excluded.run_time_good
             WHERE e.run_time_good IS NULL
             RETURNING 1",
        ),
        SloId::RunsCompleted => Some(
            "INSERT INTO run_events AS e (run_id, repository_id, completed_at, completed_good) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id) DO UPDATE SET completed_at = excluded.completed_at,
                completed_good = excluded.completed_good
             WHERE e.completed_good IS NULL
             RETURNING 1",
        ),
        _ => None,
    }
}

/// Record an SLO event once; count it when it is new (in
/// `ci_slo_events_total` when `live`, else as backdated). True when new.
/// As the SQLite store's `counting::slo_event`.
#[allow(clippy::too_many_arguments)]
pub fn slo_event(
    tx: &mut impl Sql,
    slo: SloId,
    subject: &str,
    repository_id: i64,
    repository: &str,
    at_ms: i64,
    good: bool,
    live: bool,
) -> Result<bool, postgres::Error> {
    let run_id = subject
        .strip_prefix("run:")
        .and_then(|id| id.parse::<i64>().ok());
    // Both results exist from the first event on (as in SQLite): the other
    // result's series first, at 0 if new, then this one's.
    let (family, labels, values): (&'static str, Vec<String>, Vec<f64>) = if live {
        let (result, other) = if good {
            ("good", "bad")
        } else {
            ("bad", "good")
        };
        let series = |result| {
            labels_json(&[
                ("slo", slo.as_str()),
                ("repository", repository),
                ("result", result),
            ])
        };
        (
            catalog::SLO_EVENTS.name,
            vec![series(other), series(result)],
            vec![0.0, 1.0],
        )
    } else {
        (
            catalog::BACKDATED.name,
            vec![labels_json(&[("kind", "slo_event")])],
            vec![1.0],
        )
    };
    let counted = match (run_event_upsert(slo), run_id) {
        // A run's events are one `run_events` row (migration 3), each set
        // once: the upsert that finds it NULL is the one that counts it.
        (Some(sql), Some(run_id)) => tx.query(
            sql,
            &[&run_id, &repository_id, &at_ms, &i64::from(good)],
        )?,
        _ => tx.query(
            "INSERT INTO slo_events (slo, subject, repository_id, at, good) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING
             RETURNING 1",
            &[
                &slo.as_str(),
                &subject,
                &repository_id,
                &at_ms,
                &i64::from(good),
            ],
        )?,
    };
    if !counted.is_empty() {
        for (labels, value) in labels.into_iter().zip(values) {
            tx.count(family, labels, value)?;
        }
    }
    Ok(!counted.is_empty())
}

/// Whether what this write newly stores moves the live counters: always,
/// except history loaded on purpose (`policy.history`) into a database that
/// has served. As the SQLite store's `policy::moves_live_counters`.
pub(crate) fn moves_live_counters(
    tx: &mut impl Sql,
    policy: &Policy,
) -> Result<bool, postgres::Error> {
    if !policy.history {
        return Ok(true);
    }
    let served = tx
        .query_opt("SELECT 1 FROM meta WHERE key = 'serving_since'", &[])?
        .is_some();
    Ok(!served)
}

pub(crate) fn data_quality(tx: &mut impl Sql, reason: &str) -> Result<(), postgres::Error> {
    tally::inc(tx, catalog::DATA_QUALITY, &[("reason", reason)], 1.0)
}

/// The flags [`count_run`] leaves a run with that was counted for nothing
/// before: the queue once the start is known, the final state once
/// terminal; nothing while the trigger is pending.
pub(crate) fn counted_after(started: bool, state: RunState, trigger_pending: bool) -> (bool, bool) {
    if trigger_pending {
        (false, false)
    } else {
        (started, state.is_terminal())
    }
}

/// The PostgreSQL store's [`CountSink`]: the counters and SLO events of the
/// transaction.
pub(crate) struct Sink<'t, T: Sql>(pub(crate) &'t mut T);

impl<T: Sql> CountSink for Sink<'_, T> {
    type Error = postgres::Error;
    fn inc(
        &mut self,
        family: FamilyDef,
        labels: &Labels<'_>,
        by: f64,
    ) -> Result<(), postgres::Error> {
        tally::inc(self.0, family, labels, by)
    }
    fn observe(
        &mut self,
        family: FamilyDef,
        labels: &Labels<'_>,
        bounds: &[f64],
        value: f64,
        exemplar: Option<ExemplarRef>,
    ) -> Result<(), postgres::Error> {
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
    ) -> Result<(), postgres::Error> {
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

/// Count what a run newly makes known, once each, by the rules both stores
/// share (`ci_slo_store::run_counts`), and store the run's counted flags.
pub(crate) fn count_run(
    tx: &mut impl Sql,
    c: &Counting<'_>,
    policy: &Policy,
    live: bool,
    now_ms: i64,
) -> Result<(), postgres::Error> {
    let (queue_counted, final_counted) = count_run_with(&mut Sink(tx), c, policy, live, now_ms)?;
    if (queue_counted, final_counted) != c.row_flags {
        tx.execute(
            "UPDATE runs SET queue_counted = $2, final_counted = $3 WHERE id = $1",
            &[
                &c.run_id,
                &i64::from(queue_counted),
                &i64::from(final_counted),
            ],
        )?;
    }
    Ok(())
}

impl PgStore {
    /// Count a report refused before it reached the store in
    /// `ci_exporter_data_quality_rejections_total`, as the SQLite store's
    /// `Store::count_rejection`.
    pub fn count_rejection(&mut self, reason: &str) -> Result<(), PgStoreError> {
        let mut tx = self.write_tx()?;
        data_quality(&mut tx, reason)?;
        tx.commit()?;
        Ok(())
    }
}
