//! Counters inside the write transaction, as the SQLite store keeps them
//! (`ci_slo_store::tally`): one `metric_counters` row per family and labels
//! (the labels as `tally::labels_json` encodes them), only ever increased,
//! in the same transaction as the data that moved them.

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
    tx: &mut impl Sql,
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

/// Observe `value` into the histogram series `labels` with the given bounds
/// (the +Inf bucket is implicit); the bucket it lands in remembers the
/// exemplar. As `ci_slo_store::tally::observe`.
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
    tx.execute(
        "INSERT INTO metric_histograms AS h (family, labels, sum, count) VALUES ($1, $2, $3, 1)
         ON CONFLICT (family, labels) DO UPDATE SET sum = h.sum + excluded.sum, count = h.count + 1",
        &[&family.name, &labels, &value],
    )?;
    // Every bucket exists from the first observation on, at 0 if empty.
    let mut les: Vec<f64> = bounds.to_vec();
    les.push(f64::INFINITY);
    tx.execute(
        "INSERT INTO metric_buckets (family, labels, le, count)
         SELECT $1, $2, le, 0 FROM unnest($3::float8[]) AS le
         ON CONFLICT DO NOTHING",
        &[&family.name, &labels, &les],
    )?;
    let le = bounds
        .iter()
        .copied()
        .find(|b| value <= *b)
        .unwrap_or(f64::INFINITY);
    let (run_id, at_ms) = (exemplar.map(|e| e.run_id), exemplar.map(|e| e.at_ms));
    tx.execute(
        "UPDATE metric_buckets SET count = count + 1,
             exemplar_run_id = coalesce($4, exemplar_run_id),
             exemplar_value = CASE WHEN $4::bigint IS NULL THEN exemplar_value ELSE $5 END,
             exemplar_ts = coalesce($6, exemplar_ts)
         WHERE family = $1 AND labels = $2 AND le = $3",
        &[&family.name, &labels, &le, &run_id, &value, &at_ms],
    )?;
    Ok(())
}

/// Add to several series of one counter family at once (each created at
/// its value if new, so a value of 0 makes sure the series exists), in
/// one statement, in the order given.
pub fn add_all(
    tx: &mut impl Sql,
    family: FamilyDef,
    series: &[(&Labels<'_>, f64)],
) -> Result<(), postgres::Error> {
    debug_assert_eq!(family.kind, catalog::Kind::Counter);
    let labels: Vec<String> = series.iter().map(|(l, _)| labels_json(l)).collect();
    let values: Vec<f64> = series.iter().map(|(_, v)| *v).collect();
    tx.execute(
        "INSERT INTO metric_counters AS m (family, labels, value)
         SELECT $1, u.labels, u.value FROM unnest($2::text[], $3::float8[]) WITH ORDINALITY AS u(labels, value, i)
         ORDER BY u.i
         ON CONFLICT (family, labels) DO UPDATE SET value = m.value + excluded.value",
        &[&family.name, &labels, &values],
    )?;
    Ok(())
}
