//! Exactly-once counting inside the write transaction.
//!
//! Counters and histograms are persisted next to the data that moved them, in
//! the same transaction, so that a crash can never count an event without
//! storing it (or the reverse), and a restart restores them exactly.
//!
//! A bulk load ([`Buffered`]) adds up the increments of a whole batch in
//! memory and writes each series once, before the batch's commit: the same
//! values, in the same transaction, without a statement per event.

use crate::catalog::{self, FamilyDef};
use foldhash::HashMap;
use rusqlite::{Connection, params};
use std::cell::RefCell;

/// The latest exemplar of a bucket: (run id, observed value, Unix ms).
type Exemplar = (i64, f64, i64);

/// A histogram series' increments: bounds, sum, count, and per bucket (by
/// index, +Inf last) the count and the latest exemplar.
struct HistogramDelta {
    bounds: Vec<f64>,
    sum: f64,
    count: u64,
    buckets: Vec<(u64, Option<Exemplar>)>,
}

/// Series are keyed by `family \0 labels` ([`Buffer::key`]).
#[derive(Default)]
struct Buffer {
    counters: HashMap<String, f64>,
    histograms: HashMap<String, HistogramDelta>,
    /// The key of the series being moved: written here, looked up as a
    /// `&str`, copied only for a series new to the buffer (a bulk load
    /// moves a dozen series per run, nearly all of them known).
    key: String,
}

impl Buffer {
    /// The key of `family`'s series `labels`, in `self.key`.
    fn key(&mut self, family: &str, labels: &Labels<'_>) {
        self.key.clear();
        self.key.push_str(family);
        self.key.push('\0');
        write_labels_json(&mut self.key, labels);
    }

    fn add(&mut self, family: &str, labels: &Labels<'_>, by: f64) {
        self.key(family, labels);
        match self.counters.get_mut(self.key.as_str()) {
            Some(value) => *value += by,
            None => {
                self.counters.insert(self.key.clone(), by);
            }
        }
    }

    fn histogram(
        &mut self,
        family: &str,
        labels: &Labels<'_>,
        bounds: &[f64],
    ) -> &mut HistogramDelta {
        self.key(family, labels);
        if !self.histograms.contains_key(self.key.as_str()) {
            self.histograms.insert(
                self.key.clone(),
                HistogramDelta {
                    bounds: bounds.to_vec(),
                    sum: 0.0,
                    count: 0,
                    buckets: vec![(0, None); bounds.len() + 1],
                },
            );
        }
        self.histograms
            .get_mut(self.key.as_str())
            .expect("inserted above")
    }
}

/// (family, labels) of a buffered series' key.
fn split_key(key: &str) -> (&str, &str) {
    key.split_once('\0').unwrap_or((key, ""))
}

thread_local! {
    /// The increments of the bulk load running on this thread, if any.
    static BUFFER: RefCell<Option<Buffer>> = const { RefCell::new(None) };
}

/// While alive, counter and histogram increments made on this thread are
/// added up in memory; [`Buffered::flush`] writes them (call it before the
/// transaction commits). Dropped without a flush (the batch failed), the
/// increments are discarded with the rolled-back batch.
pub struct Buffered(());

impl Buffered {
    /// Start buffering; None when a buffer is already active on this thread.
    pub fn start() -> Option<Buffered> {
        BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            if b.is_some() {
                return None;
            }
            *b = Some(Buffer::default());
            Some(Buffered(()))
        })
    }

    /// Write the buffered increments through `conn` and stop buffering.
    pub fn flush(self, conn: &Connection) -> rusqlite::Result<()> {
        let Some(buffer) = BUFFER.with(|b| b.borrow_mut().take()) else {
            return Ok(());
        };
        let mut counter = conn.prepare_cached(
            "INSERT INTO metric_counters (family, labels, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (family, labels) DO UPDATE SET value = value + excluded.value",
        )?;
        for (key, by) in &buffer.counters {
            let (family, labels) = split_key(key);
            counter.execute(params![family, labels, by])?;
        }
        for (key, h) in &buffer.histograms {
            let (family, labels) = split_key(key);
            write_histogram(conn, family, labels, h)?;
        }
        Ok(())
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        BUFFER.with(|b| b.borrow_mut().take());
    }
}

/// Apply `f` to the active buffer; false when no buffer is active (the
/// caller writes the increment itself).
fn buffered(f: impl FnOnce(&mut Buffer)) -> bool {
    BUFFER.with(|b| match b.borrow_mut().as_mut() {
        Some(buffer) => {
            f(buffer);
            true
        }
        None => false,
    })
}

fn write_histogram(
    conn: &Connection,
    family: &str,
    labels: &str,
    h: &HistogramDelta,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO metric_histograms (family, labels, sum, count) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (family, labels) DO UPDATE SET sum = sum + excluded.sum, count = count + excluded.count",
    )?
    .execute(params![family, labels, h.sum, h.count as i64])?;
    zero_buckets(conn, family, labels, &h.bounds)?;
    let mut bucket = conn.prepare_cached(
        "UPDATE metric_buckets SET count = count + ?4,
             exemplar_run_id = coalesce(?5, exemplar_run_id),
             exemplar_value = CASE WHEN ?5 IS NULL THEN exemplar_value ELSE ?6 END,
             exemplar_ts = coalesce(?7, exemplar_ts)
         WHERE family = ?1 AND labels = ?2 AND le = ?3",
    )?;
    for (i, (count, exemplar)) in h.buckets.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        let le = h.bounds.get(i).copied().unwrap_or(f64::INFINITY);
        bucket.execute(params![
            family,
            labels,
            le,
            *count as i64,
            exemplar.map(|e| e.0),
            exemplar.map(|e| e.1),
            exemplar.map(|e| e.2)
        ])?;
    }
    Ok(())
}

/// Every bound of a histogram series gets a row (zero if nothing landed
/// there) so that it always exposes its full bucket layout.
fn zero_buckets(
    conn: &Connection,
    family: &str,
    labels: &str,
    bounds: &[f64],
) -> rusqlite::Result<()> {
    let rows: Vec<String> = (0..=bounds.len())
        .map(|i| format!("(?1, ?2, ?{}, 0)", i + 3))
        .collect();
    let mut zero = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO metric_buckets (family, labels, le, count) VALUES {}",
        rows.join(", ")
    ))?;
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&family, &labels];
    let inf = f64::INFINITY;
    values.extend(bounds.iter().map(|b| b as &dyn rusqlite::ToSql));
    values.push(&inf);
    zero.execute(values.as_slice())?;
    Ok(())
}

/// A label set in a fixed order; stored as a JSON array of pairs.
pub type Labels<'a> = [(&'static str, &'a str)];

pub fn labels_json(labels: &Labels<'_>) -> String {
    let mut out = String::with_capacity(
        2 + labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>(),
    );
    write_labels_json(&mut out, labels);
    out
}

/// Append [`labels_json`] to `out`.
fn write_labels_json(out: &mut String, labels: &Labels<'_>) {
    // Texts JSON needs no escape in are written as they are (what
    // serde_json writes for them, without its machinery: a bulk load
    // encodes a dozen label sets per run); any other goes through serde_json.
    // Folded over every byte without stopping early, which the compiler
    // vectorizes (a search that stops at the first hit goes byte by byte:
    // this function took a tenth more instructions with it).
    let plain = |s: &str| {
        !s.bytes().fold(false, |hit, b| {
            hit | (b == b'"') | (b == b'\\') | (b < 0x20)
        })
    };
    // Label names are the catalog's constants (plain: checked in debug builds).
    debug_assert!(labels.iter().all(|(k, _)| plain(k)), "{labels:?}");
    if labels.iter().all(|(_, v)| plain(v)) {
        out.push('[');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("[\"");
            out.push_str(k);
            out.push_str("\",\"");
            out.push_str(v);
            out.push_str("\"]");
        }
        out.push(']');
        return;
    }
    let pairs: Vec<[&str; 2]> = labels.iter().map(|(k, v)| [*k, *v]).collect();
    out.push_str(&serde_json::to_string(&pairs).expect("string pairs always serialise"));
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
    if buffered(|b| b.add(family.name, labels, by)) {
        return Ok(());
    }
    let labels = labels_json(labels);
    conn.prepare_cached(
        "INSERT INTO metric_counters (family, labels, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (family, labels) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![family.name, labels, by])?;
    Ok(())
}

/// Make sure a counter series exists (at 0 if new), so that Prometheus sees
/// its first increment as an increase rather than as the series appearing.
pub fn ensure(conn: &Connection, family: FamilyDef, labels: &Labels<'_>) -> rusqlite::Result<()> {
    if buffered(|b| b.add(family.name, labels, 0.0)) {
        return Ok(());
    }
    let labels = labels_json(labels);
    conn.prepare_cached(
        "INSERT OR IGNORE INTO metric_counters (family, labels, value) VALUES (?1, ?2, 0)",
    )?
    .execute(params![family.name, labels])?;
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
    let index = bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len());
    if buffered(|buffer| {
        let h = buffer.histogram(family.name, labels, bounds);
        h.sum += value;
        h.count += 1;
        if let Some(bucket) = h.buckets.get_mut(index) {
            bucket.0 += 1;
            if let Some(e) = exemplar {
                bucket.1 = Some((e.run_id, value, e.at_ms));
            }
        }
    }) {
        return Ok(());
    }
    let labels = labels_json(labels);
    conn.prepare_cached(
        "INSERT INTO metric_histograms (family, labels, sum, count) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (family, labels) DO UPDATE SET sum = sum + excluded.sum, count = count + 1",
    )?
    .execute(params![family.name, labels, value])?;
    zero_buckets(conn, family.name, &labels, bounds)?;
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

    /// Buffered increments flush to what one statement per increment
    /// writes: series told apart by family, by a label's value, by a label
    /// missing, and texts JSON escapes.
    #[test]
    fn buffered_series_flush_to_what_unbuffered_increments_write() {
        let (buffered, single) = (
            crate::Store::open_in_memory().unwrap(),
            crate::Store::open_in_memory().unwrap(),
        );
        let moves = |conn: &Connection| {
            for i in 0..40u32 {
                let context = ["a", "b", "c\"d", "e\nf"][(i % 4) as usize];
                let labels: &Labels<'_> = &[("repository", "o/r"), ("context", context)];
                inc(conn, catalog::FAILURES, labels, 1.0).unwrap();
                inc(conn, catalog::FINGERPRINTS_NEW, labels, 2.0).unwrap();
                inc(conn, catalog::FAILURES, &labels[..1], 0.5).unwrap();
                ensure(conn, catalog::DATA_QUALITY, &[("reason", context)]).unwrap();
                let exemplar = Some(ExemplarRef {
                    run_id: i64::from(i),
                    at_ms: 1_000 * i64::from(i),
                });
                observe(
                    conn,
                    catalog::RETRIES_TO_GREEN,
                    &labels[..1 + (i % 2) as usize],
                    catalog::RETRIES_BUCKETS,
                    f64::from(i % 7),
                    exemplar,
                )
                .unwrap();
            }
        };
        let b = Buffered::start().expect("no buffer on this thread yet");
        moves(buffered.connection());
        assert_eq!(
            buffered.metric_state().unwrap(),
            crate::Store::open_in_memory()
                .unwrap()
                .metric_state()
                .unwrap(),
            "nothing written before the flush"
        );
        b.flush(buffered.connection()).unwrap();
        moves(single.connection());
        let state = single.metric_state().unwrap();
        assert_eq!(buffered.metric_state().unwrap(), state);
        assert!(state.histograms.len() >= 2, "{state:?}");
    }

    #[test]
    fn labels_round_trip_through_json_with_hostile_values() {
        let labels: &Labels<'_> = &[("repository", "a/\"b\"\\c"), ("context", "line\nbreak ü")];
        let back = parse_labels(&labels_json(labels));
        assert_eq!(back[0], ("repository".into(), "a/\"b\"\\c".into()));
        assert_eq!(back[1], ("context".into(), "line\nbreak ü".into()));
    }

    /// The text a counter series is stored under must never change: the
    /// plain form is byte for byte what serde_json writes.
    #[test]
    fn labels_are_encoded_as_serde_json_encodes_them() {
        for labels in [
            &[][..],
            &[("repository", "cockpit-project/cockpit")][..],
            &[
                ("repository", "a/b"),
                ("context", "fedora-40/ü €"),
                ("state", ""),
            ][..],
            &[("repository", "a\"b"), ("context", "x")][..],
            &[("repository", "a\\b"), ("context", "tab\there\u{1}\u{7f}")][..],
        ] {
            let pairs: Vec<[&str; 2]> = labels.iter().map(|(k, v)| [*k, *v]).collect();
            assert_eq!(labels_json(labels), serde_json::to_string(&pairs).unwrap());
        }
    }
}
