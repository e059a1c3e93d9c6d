//! Counting once, on PostgreSQL: the first pieces of the SQLite store's
//! `counting.rs`. An SLO event is a row keyed by (slo, subject): the insert
//! that creates it (`ON CONFLICT DO NOTHING`) is the one that counts it, so
//! two replicas storing the same event at once count it once (the second
//! insert waits for the first's transaction and then finds the row). The
//! hourly rollup (`slo_hourly`) is kept by the schema's triggers.

use crate::{PgStore, PgStoreError, tally};
use ci_slo_core::catalog;
use ci_slo_core::slo::SloId;
use postgres::GenericClient;

/// Record an SLO event once; count it when it is new (in
/// `ci_slo_events_total` when `live`, else as backdated). True when new.
/// As the SQLite store's `counting::slo_event`.
#[allow(clippy::too_many_arguments)]
pub fn slo_event(
    tx: &mut impl GenericClient,
    slo: SloId,
    subject: &str,
    repository_id: i64,
    repository: &str,
    at_ms: i64,
    good: bool,
    live: bool,
) -> Result<bool, postgres::Error> {
    let inserted = tx.execute(
        "INSERT INTO slo_events (slo, subject, repository_id, at, good) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
        &[
            &slo.as_str(),
            &subject,
            &repository_id,
            &at_ms,
            &i64::from(good),
        ],
    )? == 1;
    if inserted {
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
            // Both results exist from the first event on (as in SQLite).
            tally::ensure(tx, catalog::SLO_EVENTS, &series(other))?;
            tally::inc(tx, catalog::SLO_EVENTS, &series(result), 1.0)?;
        } else {
            tally::inc(tx, catalog::BACKDATED, &[("kind", "slo_event")], 1.0)?;
        }
    }
    Ok(inserted)
}

impl PgStore {
    /// Count a report refused before it reached the store in
    /// `ci_exporter_data_quality_rejections_total`, as the SQLite store's
    /// `Store::count_rejection`.
    pub fn count_rejection(&mut self, reason: &str) -> Result<(), PgStoreError> {
        let mut tx = self.client().transaction()?;
        tally::inc(&mut tx, catalog::DATA_QUALITY, &[("reason", reason)], 1.0)?;
        tx.commit()?;
        Ok(())
    }
}
