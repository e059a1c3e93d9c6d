//! Counters inside the write transaction, as the SQLite store keeps them
//! (`ci_slo_store::tally`): one `metric_counters` row per family and labels
//! (the labels as `tally::labels_json` encodes them), only ever increased,
//! in the same transaction as the data that moved them.

use ci_slo_core::catalog::{self, FamilyDef};
use ci_slo_store::tally::{Labels, labels_json};
use postgres::GenericClient;

/// Add `by` to a counter series (created at `by` if new).
pub fn inc(
    tx: &mut impl GenericClient,
    family: FamilyDef,
    labels: &Labels<'_>,
    by: f64,
) -> Result<(), postgres::Error> {
    debug_assert_eq!(family.kind, catalog::Kind::Counter);
    tx.execute(
        "INSERT INTO metric_counters AS m (family, labels, value) VALUES ($1, $2, $3)
         ON CONFLICT (family, labels) DO UPDATE SET value = m.value + excluded.value",
        &[&family.name, &labels_json(labels), &by],
    )?;
    Ok(())
}

/// Make sure a counter series exists (at 0 if new), so that Prometheus sees
/// its first increment as an increase rather than as the series appearing.
pub fn ensure(
    tx: &mut impl GenericClient,
    family: FamilyDef,
    labels: &Labels<'_>,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO metric_counters (family, labels, value) VALUES ($1, $2, 0)
         ON CONFLICT DO NOTHING",
        &[&family.name, &labels_json(labels)],
    )?;
    Ok(())
}
