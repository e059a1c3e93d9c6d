//! Counters inside the write transaction, as the SQLite store keeps them
//! (`ci_slo_store::tally`): one `metric_counters` row per family and labels
//! (the labels as `tally::labels_json` encodes them), only ever increased,
//! in the same transaction as the data that moved them (added at its
//! commit, in a fixed order: `statements.rs`).

use crate::statements::Sql;
use ci_slo_core::catalog::{self, FamilyDef};
use ci_slo_store::tally::{ExemplarRef, Labels, labels_json};

/// Add `by` to a counter series (created at `by` if new).
pub fn inc(
    tx: &mut impl Sql,
    family: FamilyDef,
    labels: &Labels<'_>,
    by: f64,
) -> Result<(), postgres::Error> {
    debug_assert_eq!(family.kind, catalog::Kind::Counter);
    tx.count(family.name, labels_json(labels), by)
}

/// Make sure a counter series exists (at 0 if new), so that Prometheus sees
/// its first increment as an increase rather than as the series appearing.
pub fn ensure(
    tx: &mut impl Sql,
    family: FamilyDef,
    labels: &Labels<'_>,
) -> Result<(), postgres::Error> {
    tx.count(family.name, labels_json(labels), 0.0)
}

/// Observe `value` into the histogram series `labels` with the given bounds
/// (the +Inf bucket is implicit); the bucket it lands in remembers the
/// exemplar. As `ci_slo_store::tally::observe`, in one statement: the
/// series' row first, then its buckets in `le` order, every one existing
/// from the first observation on (at 0 if empty), the one `value` lands in
/// counted.
pub fn observe(
    tx: &mut impl Sql,
    family: FamilyDef,
    labels: &Labels<'_>,
    bounds: &[f64],
    value: f64,
    exemplar: Option<ExemplarRef>,
) -> Result<(), postgres::Error> {
    debug_assert_eq!(family.kind, catalog::Kind::Histogram);
    let labels = labels_json(labels);
    let mut les: Vec<f64> = bounds.to_vec();
    les.push(f64::INFINITY);
    let le = bounds
        .iter()
        .copied()
        .find(|b| value <= *b)
        .unwrap_or(f64::INFINITY);
    let (run_id, at_ms) = (exemplar.map(|e| e.run_id), exemplar.map(|e| e.at_ms));
    let exemplar_value = run_id.map(|_| value);
    tx.execute(
        "WITH h AS (
            INSERT INTO metric_histograms AS h (family, labels, sum, count) VALUES ($1, $2, $3, 1)
            ON CONFLICT (family, labels) DO UPDATE SET sum = h.sum + excluded.sum, count = h.count + 1
            RETURNING 1)
         INSERT INTO metric_buckets AS b (family, labels, le, count, exemplar_run_id, exemplar_value, exemplar_ts)
         SELECT $1, $2, u.le, CASE WHEN u.le = $5::float8 THEN 1 ELSE 0 END,
                CASE WHEN u.le = $5::float8 THEN $6::bigint END,
                CASE WHEN u.le = $5::float8 THEN $7::float8 END,
                CASE WHEN u.le = $5::float8 THEN $8::bigint END
         FROM h, unnest($4::float8[]) WITH ORDINALITY AS u(le, i) ORDER BY u.i
         ON CONFLICT (family, labels, le) DO UPDATE SET count = b.count + 1,
             exemplar_run_id = coalesce(excluded.exemplar_run_id, b.exemplar_run_id),
             exemplar_value = CASE WHEN excluded.exemplar_run_id IS NULL THEN b.exemplar_value
                 ELSE excluded.exemplar_value END,
             exemplar_ts = coalesce(excluded.exemplar_ts, b.exemplar_ts)
         WHERE excluded.count = 1",
        &[
            &family.name,
            &labels,
            &value,
            &les,
            &le,
            &run_id,
            &exemplar_value,
            &at_ms,
        ],
    )?;
    Ok(())
}
