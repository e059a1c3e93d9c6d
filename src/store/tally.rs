//! Exactly-once counting inside the write transaction.
//!
//! Counters and histograms are persisted next to the data that moved them, in
//! the same transaction, so that a crash can never count an event without
//! storing it (or the reverse), and a restart restores them exactly.

use crate::metrics::catalog::{self, FamilyDef};
use rusqlite::{Connection, params};

/// A label set in a fixed order; stored as a JSON array of pairs.
pub type Labels<'a> = [(&'static str, &'a str)];

pub fn labels_json(labels: &Labels<'_>) -> String {
    let pairs: Vec<[&str; 2]> = labels.iter().map(|(k, v)| [*k, *v]).collect();
    serde_json::to_string(&pairs).expect("string pairs always serialise")
}

pub fn parse_labels(json: &str) -> Vec<(String, String)> {
    serde_json::from_str::<Vec<[String; 2]>>(json)
        .map(|v| v.into_iter().map(|[k, v]| (k, v)).collect())
        .unwrap_or_default()
}

pub fn inc(
    conn: &Connection,
    family: FamilyDef,
    labels: &Labels<'_>,
    by: f64,
) -> rusqlite::Result<()> {
    debug_assert_eq!(family.kind, catalog::Kind::Counter);
    conn.prepare_cached(
        "INSERT INTO metric_counters (family, labels, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (family, labels) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![family.name, labels_json(labels), by])?;
    Ok(())
}

/// Make sure a counter series exists (at 0 if new), so that Prometheus sees
/// its first increment as an increase rather than as the series appearing.
pub fn ensure(conn: &Connection, family: FamilyDef, labels: &Labels<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO metric_counters (family, labels, value) VALUES (?1, ?2, 0)",
    )?
    .execute(params![family.name, labels_json(labels)])?;
    Ok(())
}

/// An exemplar: the run that produced an observation, and when.
#[derive(Debug, Clone, Copy)]
pub struct ExemplarRef {
    pub run_id: i64,
    pub at_ms: i64,
}

/// Observe `value` into the histogram series `labels` with the given bounds
/// (the +Inf bucket is implicit). The bucket it lands in remembers the exemplar.
pub fn observe(
    conn: &Connection,
    family: FamilyDef,
    labels: &Labels<'_>,
    bounds: &[f64],
    value: f64,
    exemplar: Option<ExemplarRef>,
) -> rusqlite::Result<()> {
    debug_assert_eq!(family.kind, catalog::Kind::Histogram);
    let labels = labels_json(labels);
    conn.prepare_cached(
        "INSERT INTO metric_histograms (family, labels, sum, count) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (family, labels) DO UPDATE SET sum = sum + excluded.sum, count = count + 1",
    )?
    .execute(params![family.name, labels, value])?;
    // Every bound gets a row (zero if nothing landed there) so that the series
    // always exposes its full bucket layout: one statement for all of them.
    let rows: Vec<String> = (0..=bounds.len())
        .map(|i| format!("(?1, ?2, ?{}, 0)", i + 3))
        .collect();
    let mut zero = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO metric_buckets (family, labels, le, count) VALUES {}",
        rows.join(", ")
    ))?;
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&family.name, &labels];
    let inf = f64::INFINITY;
    values.extend(bounds.iter().map(|b| b as &dyn rusqlite::ToSql));
    values.push(&inf);
    zero.execute(values.as_slice())?;
    let le = bounds
        .iter()
        .copied()
        .find(|b| value <= *b)
        .unwrap_or(f64::INFINITY);
    conn.prepare_cached(
        "UPDATE metric_buckets SET count = count + 1,
             exemplar_run_id = coalesce(?4, exemplar_run_id),
             exemplar_value = CASE WHEN ?4 IS NULL THEN exemplar_value ELSE ?5 END,
             exemplar_ts = coalesce(?6, exemplar_ts)
         WHERE family = ?1 AND labels = ?2 AND le = ?3",
    )?
    .execute(params![
        family.name,
        labels,
        le,
        exemplar.map(|e| e.run_id),
        value,
        exemplar.map(|e| e.at_ms)
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_through_json_with_hostile_values() {
        let labels: &Labels<'_> = &[("repository", "a/\"b\"\\c"), ("context", "line\nbreak ü")];
        let back = parse_labels(&labels_json(labels));
        assert_eq!(back[0], ("repository".into(), "a/\"b\"\\c".into()));
        assert_eq!(back[1], ("context".into(), "line\nbreak ü".into()));
    }
}
