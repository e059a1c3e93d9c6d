//! Stored history as OpenMetrics with timestamps, for
//! `promtool tsdb create-blocks-from openmetrics` (DESIGN.md §4).
//!
//! History must not reach Prometheus as a burst of live events; instead each
//! counter and histogram is rebuilt from the stored events and written as a
//! sample every `step` between `since` and `until`, with the value it had at
//! that moment. Values count every stored event up to the sample's time (also
//! those before `since`), so the series continue into the live ones.

use super::catalog::{self, FamilyDef};
use super::expo::{Family, Sample, fmt_le, write_openmetrics};
use crate::model::{DurationLimits, durations};
use crate::store::{Store, StoreError, from_ms};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

type Labels = Vec<(String, String)>;

/// Event times (Unix ms) per series of a counter family.
#[derive(Default)]
struct CounterEvents(BTreeMap<Labels, Vec<i64>>);

/// Observations (Unix ms, value) per series of a histogram family.
#[derive(Default)]
struct HistogramEvents(BTreeMap<Labels, Vec<(i64, f64)>>);

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The sample times: every `step_ms` from `since` to `until`, and `until` itself.
fn steps(since_ms: i64, until_ms: i64, step_ms: i64) -> Vec<i64> {
    let mut out: Vec<i64> = (0..)
        .map(|k| since_ms + k * step_ms)
        .take_while(|t| *t < until_ms)
        .collect();
    out.push(until_ms);
    out
}

fn counter_family(def: FamilyDef, events: CounterEvents, times: &[i64]) -> Family {
    let mut samples = Vec::new();
    for (labels, mut at) in events.0 {
        at.sort_unstable();
        let mut i = 0;
        for &t in times {
            while i < at.len() && at[i] <= t {
                i += 1;
            }
            samples.push(Sample {
                suffix: "_total",
                labels: labels.clone(),
                value: i as f64,
                exemplar: None,
                timestamp_ms: Some(t),
            });
        }
    }
    Family {
        name: def.name.into(),
        kind: def.kind,
        unit: def.unit,
        help: def.help.into(),
        samples,
    }
}

fn histogram_family(
    def: FamilyDef,
    events: HistogramEvents,
    bounds: &[f64],
    times: &[i64],
) -> Family {
    let mut samples = Vec::new();
    for (labels, mut obs) in events.0 {
        obs.sort_by_key(|(t, _)| *t);
        // Per step: cumulative bucket counts, sum and count up to that time.
        let mut rows: Vec<(i64, Vec<u64>, f64, u64)> = Vec::with_capacity(times.len());
        let (mut i, mut counts, mut sum, mut count) = (0, vec![0u64; bounds.len() + 1], 0.0, 0u64);
        for &t in times {
            while i < obs.len() && obs[i].0 <= t {
                let v = obs[i].1;
                let b = bounds
                    .iter()
                    .position(|le| v <= *le)
                    .unwrap_or(bounds.len());
                counts[b] += 1;
                sum += v;
                count += 1;
                i += 1;
            }
            rows.push((t, counts.clone(), sum, count));
        }
        // OpenMetrics wants each series' points together and in time order.
        for (b, le) in bounds.iter().copied().chain([f64::INFINITY]).enumerate() {
            let mut series = labels.clone();
            series.push(("le".into(), fmt_le(le)));
            for (t, counts, _, _) in &rows {
                samples.push(Sample {
                    suffix: "_bucket",
                    labels: series.clone(),
                    value: counts[..=b].iter().sum::<u64>() as f64,
                    exemplar: None,
                    timestamp_ms: Some(*t),
                });
            }
        }
        for (suffix, pick) in [("_sum", 0usize), ("_count", 1)] {
            for (t, _, sum, count) in &rows {
                samples.push(Sample {
                    suffix,
                    labels: labels.clone(),
                    value: if pick == 0 { *sum } else { *count as f64 },
                    exemplar: None,
                    timestamp_ms: Some(*t),
                });
            }
        }
    }
    Family {
        name: def.name.into(),
        kind: def.kind,
        unit: def.unit,
        help: def.help.into(),
        samples,
    }
}

/// What to write.
#[derive(Debug, Clone)]
pub struct HistoryRange {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub step: chrono::Duration,
    pub queue_buckets: Vec<f64>,
    pub run_buckets: Vec<f64>,
    pub limits: DurationLimits,
}

/// Write the history of the SLI families as OpenMetrics text ending in `# EOF`.
pub fn write_history(
    store: &Store,
    range: &HistoryRange,
    out: &mut String,
) -> Result<usize, StoreError> {
    let conn = store.connection();
    let mut slo_events = CounterEvents::default();
    let mut stmt = conn.prepare(
        "SELECT e.slo, repo.path, e.good, e.at FROM slo_events e JOIN repositories repo ON repo.id = e.repository_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (slo, repo, good, at): (String, String, bool, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let result = if good { "good" } else { "bad" };
        let other = if good { "bad" } else { "good" };
        // Both results exist from a repository's first event, as in the live counters.
        slo_events
            .0
            .entry(l(&[
                ("slo", &slo),
                ("repository", &repo),
                ("result", other),
            ]))
            .or_default();
        slo_events
            .0
            .entry(l(&[
                ("slo", &slo),
                ("repository", &repo),
                ("result", result),
            ]))
            .or_default()
            .push(at);
    }

    let mut runs = CounterEvents::default();
    let mut queue = HistogramEvents::default();
    let mut duration = HistogramEvents::default();
    let mut stmt = conn.prepare(
        "SELECT repo.path, r.context, r.trigger, r.state, r.attempt, r.queued_at, r.started_at, r.finished_at
         FROM runs r JOIN repositories repo ON repo.id = r.repository_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (repo, context, trigger, state): (String, String, String, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let attempt: u32 = r.get(4)?;
        let (queued, started, finished): (Option<i64>, Option<i64>, Option<i64>) =
            (r.get(5)?, r.get(6)?, r.get(7)?);
        let (d, _) = durations(
            queued.map(from_ms),
            started.map(from_ms),
            finished.map(from_ms),
            range.limits,
        );
        if let (Some(q), Some(at)) = (d.queue_seconds, started) {
            queue
                .0
                .entry(l(&[
                    ("repository", &repo),
                    ("context", &context),
                    ("trigger", &trigger),
                ]))
                .or_default()
                .push((at, q));
        }
        let terminal = state
            .parse::<crate::model::RunState>()
            .is_ok_and(|s| s.is_terminal());
        if terminal {
            let at = finished.or(started).or(queued);
            if let Some(at) = at {
                let attempt = if attempt == 0 { "first" } else { "retry" };
                runs.0
                    .entry(l(&[
                        ("repository", &repo),
                        ("context", &context),
                        ("trigger", &trigger),
                        ("state", &state),
                        ("attempt", attempt),
                    ]))
                    .or_default()
                    .push(at);
            }
            if let (Some(seconds), Some(at)) = (d.run_seconds, finished) {
                duration
                    .0
                    .entry(l(&[
                        ("repository", &repo),
                        ("context", &context),
                        ("trigger", &trigger),
                        ("state", &state),
                    ]))
                    .or_default()
                    .push((at, seconds));
            }
        }
    }

    let mut merged = CounterEvents::default();
    let mut stmt = conn.prepare(
        "SELECT repo.path, c.outcome, c.merged_at FROM changes c JOIN repositories repo ON repo.id = c.repository_id
         WHERE c.outcome IS NOT NULL AND c.merged_at IS NOT NULL",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (repo, outcome, at): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        merged
            .0
            .entry(l(&[("repository", &repo), ("outcome", &outcome)]))
            .or_default()
            .push(at);
    }

    let times = steps(
        range.since.timestamp_millis(),
        range.until.timestamp_millis(),
        range.step.num_milliseconds().max(1000),
    );
    let families = vec![
        counter_family(catalog::SLO_EVENTS, slo_events, &times),
        counter_family(catalog::RUNS, runs, &times),
        counter_family(catalog::MERGED_CHANGES, merged, &times),
        histogram_family(catalog::RUN_QUEUE, queue, &range.queue_buckets, &times),
        histogram_family(catalog::RUN_DURATION, duration, &range.run_buckets, &times),
    ];
    let samples = families.iter().map(|f| f.samples.len()).sum();
    write_openmetrics(out, &families);
    out.push_str("# EOF\n");
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_cover_the_range_and_end_at_until() {
        assert_eq!(steps(0, 10_000, 4_000), vec![0, 4_000, 8_000, 10_000]);
        assert_eq!(steps(0, 8_000, 4_000), vec![0, 4_000, 8_000]);
    }

    #[test]
    fn counters_count_every_event_up_to_each_sample_time() {
        let mut events = CounterEvents::default();
        events
            .0
            .insert(l(&[("a", "1")]), vec![5_000, 1_000, 9_000, -50_000]);
        let f = counter_family(catalog::RUNS, events, &[0, 4_000, 8_000, 12_000]);
        let got: Vec<(i64, f64)> = f
            .samples
            .iter()
            .map(|s| (s.timestamp_ms.unwrap(), s.value))
            .collect();
        assert_eq!(
            got,
            vec![(0, 1.0), (4_000, 2.0), (8_000, 3.0), (12_000, 4.0)],
            "history before `since` is included"
        );
    }

    #[test]
    fn histograms_are_cumulative_per_bucket_and_grouped_per_series() {
        let mut events = HistogramEvents::default();
        events.0.insert(
            l(&[("r", "x")]),
            vec![(1_000, 50.0), (2_000, 400.0), (6_000, 5_000.0)],
        );
        let f = histogram_family(
            catalog::RUN_QUEUE,
            events,
            &[300.0, 3600.0],
            &[0, 4_000, 8_000],
        );
        let series = |le: &str| -> Vec<f64> {
            f.samples
                .iter()
                .filter(|s| {
                    s.suffix == "_bucket" && s.labels.iter().any(|(k, v)| k == "le" && v == le)
                })
                .map(|s| s.value)
                .collect()
        };
        assert_eq!(series("300.0"), vec![0.0, 1.0, 1.0]);
        assert_eq!(series("3600.0"), vec![0.0, 2.0, 2.0]);
        assert_eq!(series("+Inf"), vec![0.0, 2.0, 3.0]);
        let sums: Vec<f64> = f
            .samples
            .iter()
            .filter(|s| s.suffix == "_sum")
            .map(|s| s.value)
            .collect();
        assert_eq!(sums, vec![0.0, 450.0, 5450.0]);
        // Each series' points are consecutive and in time order.
        let mut last: Option<(&'static str, &Labels, i64)> = None;
        for s in &f.samples {
            if let Some((suffix, labels, t)) = last
                && suffix == s.suffix
                && *labels == s.labels
            {
                assert!(s.timestamp_ms.unwrap() > t);
            }
            last = Some((s.suffix, &s.labels, s.timestamp_ms.unwrap()));
        }
    }
}
