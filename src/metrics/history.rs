//! Stored history as OpenMetrics with timestamps, for
//! `promtool tsdb create-blocks-from openmetrics` (`backfill-openmetrics`).
//!
//! History must not reach Prometheus as a burst of live events; instead every
//! persisted counter and histogram series is written with the value it had at
//! past times, so that Prometheus holds what it would have scraped. Values are
//! spread back from the live totals (`metric_state`, what `/metrics` serves):
//! the value at time t is the live value minus the counted events after t
//! ([`Storage::counted_events`]), so the last backfilled sample is exactly what
//! the first live scrape reads, and a series never goes below zero. Every
//! series carries the labels Prometheus' scrape adds (`job`, `instance`), so
//! history and live samples are one series.
//!
//! Which samples: a counter only changes at events, so a sample is written on
//! the `step` grid (Unix-time multiples of the scrape interval it stands in
//! for) only within `4 × step` before and after each change, plus one at
//! `until`. Every `rate()`/`increase()` window of at least `4 × step` (Grafana's
//! smallest `$__rate_interval` with that scrape interval) that contains a
//! change then sees the samples a live scrape would have produced around it;
//! a window without a change has no samples, which panels draw as no bar.
//! Counters also get a sample every 12 hours, so that a day-long window
//! without an event reads 0 (the nightly grid's "no run"). A histogram series
//! that never changes in the range gets only its `until` sample. The SLO
//! objectives (a gauge the recording rules divide by) are written on every
//! whole hour, where scripts/backfill-rules evaluates the recording rules
//! over the history.

use super::expo::{fmt_timestamp, fmt_value, write_header, write_series};
use crate::catalog::{self, FamilyDef, Kind};
use crate::config::Config;
use crate::slo::SloId;
use crate::store::{Storage, StoreError};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

type Labels = Vec<(String, String)>;

/// Spacing of the objective gauge's samples: on every whole hour, where the
/// recording rules are backfilled (scripts/backfill-rules).
pub const GAUGE_INTERVAL_MS: i64 = 3_600_000;

/// How many `step`s before and after a change get samples.
pub const HOLD_STEPS: i64 = 4;

/// Counters also get a sample every 12 hours (at 00:00 and 12:00 UTC), so that
/// every day-long window holds two samples and a day without an event reads 0
/// rather than nothing (the nightly grid's "no run" cells).
pub const COUNTER_KEEPALIVE_MS: i64 = 12 * 3_600_000;

/// What to write.
#[derive(Debug, Clone)]
pub struct HistoryRange {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The sample grid: the scrape interval the history stands in for.
    pub step: chrono::Duration,
    /// Labels Prometheus' scrape adds (`job`, `instance`), put on every series
    /// so that the history and the scraped series are the same series.
    pub target_labels: Vec<(String, String)>,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryReport {
    /// Family names, in the order written.
    pub families: Vec<String>,
    pub series: usize,
    pub samples: usize,
    pub bytes: usize,
    /// Stored events the live counters never counted (stored as backdated, or
    /// for a series the live counters do not have), per family: the history
    /// shows them only as far as the live total leaves room.
    pub uncounted: Vec<(String, u64)>,
    /// Counts in the live totals without a stored event to date them (events
    /// pruned with their runs, rejections the store keeps no row for), per
    /// family: they are part of every sample, from the first on.
    pub undated: Vec<(String, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the history: {0}")]
    Write(#[from] std::io::Error),
}

/// Sample times of one series: grid points within `HOLD_STEPS` steps of a
/// change in (since, until], every `keepalive` (if any), then `until`.
/// `changes` is sorted.
fn sample_times(
    changes: &[i64],
    since: i64,
    until: i64,
    step: i64,
    keepalive: Option<i64>,
) -> Vec<i64> {
    let hold = HOLD_STEPS * step;
    let ceil = |t: i64, m: i64| t.div_euclid(m) * m + if t.rem_euclid(m) == 0 { 0 } else { m };
    let first_grid = ceil(since, step);
    let mut out: Vec<i64> = Vec::new();
    for &c in changes {
        if c <= since || c > until {
            continue;
        }
        // Grid points in [c - hold, c + hold] ∩ [since, until).
        let mut g = ceil(c - hold, step).max(first_grid);
        if let Some(&last) = out.last() {
            g = g.max(last + step);
        }
        while g <= c + hold && g < until {
            out.push(g);
            g += step;
        }
    }
    if let Some(every) = keepalive {
        let mut t = ceil(since, every);
        while t < until {
            out.push(t);
            t += every;
        }
        out.sort_unstable();
        out.dedup();
    }
    out.push(until);
    out
}

/// Value of a counter at each of `times`: `live` minus the events after it,
/// never below zero. `events` is sorted.
fn counter_values(live: f64, events: &[i64], times: &[i64]) -> Vec<f64> {
    let mut i = 0;
    times
        .iter()
        .map(|&t| {
            while i < events.len() && events[i] <= t {
                i += 1;
            }
            (live - (events.len() - i) as f64).max(0.0)
        })
        .collect()
}

/// The distinct event times of a series in time order.
fn change_times(mut events: Vec<i64>) -> Vec<i64> {
    events.sort_unstable();
    events.dedup();
    events
}

/// Append `series value timestamp` lines for each time.
fn push_points(out: &mut String, prefix: &str, times: &[i64], values: &[f64]) {
    for (t, v) in times.iter().zip(values) {
        out.push_str(prefix);
        out.push(' ');
        out.push_str(&fmt_value(*v));
        out.push(' ');
        out.push_str(&fmt_timestamp(*t));
        out.push('\n');
    }
}

fn prefix(name: &str, suffix: &str, labels: &[(String, String)]) -> String {
    let mut p = String::new();
    write_series(&mut p, name, suffix, labels);
    p
}

/// Streams text to the output and counts what went through.
struct Sink<'a> {
    out: &'a mut dyn Write,
    buf: String,
    report: HistoryReport,
}

impl Sink<'_> {
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.write_all(self.buf.as_bytes())?;
        self.report.bytes += self.buf.len();
        self.buf.clear();
        Ok(())
    }

    fn header(&mut self, def: FamilyDef) {
        write_header(&mut self.buf, def.name, def.kind, def.unit, def.help);
        self.report.families.push(def.name.to_string());
    }
}

/// One histogram series: the live bucket layout and counts, and the observations.
struct HistogramSeries {
    labels: Labels,
    /// (upper bound, live non-cumulative count) in bound order, +Inf last.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    observations: Vec<(i64, f64)>,
}

fn write_histogram(
    sink: &mut Sink<'_>,
    def: FamilyDef,
    h: HistogramSeries,
    range: (i64, i64, i64),
) {
    let (since, until, step) = range;
    let mut obs = h.observations;
    obs.sort_by_key(|o| o.0);
    let times = sample_times(
        &change_times(obs.iter().map(|o| o.0).collect()),
        since,
        until,
        step,
        None,
    );
    // Per bucket, the times of its observations; the live count spread back over them.
    let bounds: Vec<f64> = h.buckets.iter().map(|b| b.0).collect();
    let mut per_bucket: Vec<Vec<i64>> = vec![Vec::new(); bounds.len()];
    for &(t, v) in &obs {
        let b = bounds
            .iter()
            .position(|le| v <= *le)
            .unwrap_or(bounds.len().saturating_sub(1));
        if let Some(list) = per_bucket.get_mut(b) {
            list.push(t);
        }
    }
    let counts: Vec<Vec<f64>> = h
        .buckets
        .iter()
        .zip(&per_bucket)
        .map(|((_, live), events)| counter_values(*live, events, &times))
        .collect();
    let mut cumulative = vec![0.0; times.len()];
    for (b, le) in bounds.iter().enumerate() {
        for (c, v) in cumulative.iter_mut().zip(&counts[b]) {
            *c += v;
        }
        let mut labels = h.labels.clone();
        labels.push(("le".into(), super::expo::fmt_le(*le)));
        push_points(
            &mut sink.buf,
            &prefix(def.name, "_bucket", &labels),
            &times,
            &cumulative,
        );
        sink.report.samples += times.len();
    }
    // The sum: the live sum minus the observations after each time.
    let mut i = 0;
    let mut after: f64 = obs.iter().map(|o| o.1).sum();
    let sums: Vec<f64> = times
        .iter()
        .zip(&cumulative)
        .map(|(&t, &count)| {
            while i < obs.len() && obs[i].0 <= t {
                after -= obs[i].1;
                i += 1;
            }
            if count == 0.0 {
                0.0
            } else {
                (h.sum - after).max(0.0)
            }
        })
        .collect();
    push_points(
        &mut sink.buf,
        &prefix(def.name, "_sum", &h.labels),
        &times,
        &sums,
    );
    push_points(
        &mut sink.buf,
        &prefix(def.name, "_count", &h.labels),
        &times,
        &cumulative,
    );
    sink.report.samples += 2 * times.len();
    sink.report.series += 1;
}

/// Write the history of every persisted counter and histogram, and of the
/// SLO objectives, as OpenMetrics text ending in `# EOF`.
pub fn write_history(
    store: &dyn Storage,
    config: &Config,
    range: &HistoryRange,
    out: &mut dyn Write,
) -> Result<HistoryReport, HistoryError> {
    let limits = crate::store::Policy::from_config(config).limits;
    let (since, until) = (
        range.since.timestamp_millis(),
        range.until.timestamp_millis(),
    );
    let step = range.step.num_milliseconds().max(1000);
    let state = store.metric_state()?;

    // Events per (family, series).
    let mut events: HashMap<(&'static str, Labels), Vec<(i64, f64)>> = HashMap::new();
    store.counted_events(limits, &mut |e| {
        events
            .entry((e.family.name, e.labels))
            .or_default()
            .push((e.at_ms, e.observed.unwrap_or(1.0)));
    })?;
    let with_target = |labels: &[(String, String)]| -> Labels {
        range.target_labels.iter().chain(labels).cloned().collect()
    };
    let mut take = |family: &'static str, labels: &Labels| {
        events.remove(&(family, labels.clone())).unwrap_or_default()
    };

    let mut sink = Sink {
        out,
        buf: String::with_capacity(1 << 16),
        report: HistoryReport::default(),
    };
    let mut uncounted: HashMap<&'static str, u64> = HashMap::new();
    let mut undated: HashMap<&'static str, f64> = HashMap::new();
    for def in catalog::PERSISTED {
        sink.header(*def);
        match def.kind {
            Kind::Counter => {
                for c in state.counters.iter().filter(|c| c.family == def.name) {
                    let ev = change_list(take(def.name, &c.labels));
                    let known = ev.len() as f64;
                    if known > c.value {
                        *uncounted.entry(def.name).or_default() += (known - c.value) as u64;
                    } else if known < c.value {
                        *undated.entry(def.name).or_default() += c.value - known;
                    }
                    let times = sample_times(
                        &change_times(ev.clone()),
                        since,
                        until,
                        step,
                        Some(COUNTER_KEEPALIVE_MS),
                    );
                    let values = counter_values(c.value, &ev, &times);
                    push_points(
                        &mut sink.buf,
                        &prefix(
                            def.name,
                            "_total",
                            &with_target(&super::exported_labels(def.name, c.labels.clone())),
                        ),
                        &times,
                        &values,
                    );
                    sink.report.samples += times.len();
                    sink.report.series += 1;
                    sink.flush()?;
                }
            }
            Kind::Histogram => {
                for h in state.histograms.iter().filter(|h| h.family == def.name) {
                    let observations = take(def.name, &h.labels);
                    let known = observations.len() as u64;
                    if known > h.count {
                        *uncounted.entry(def.name).or_default() += known - h.count;
                    } else if known < h.count {
                        *undated.entry(def.name).or_default() += (h.count - known) as f64;
                    }
                    let series = HistogramSeries {
                        labels: with_target(&h.labels),
                        buckets: h.buckets.iter().map(|b| (b.le, b.count as f64)).collect(),
                        sum: h.sum,
                        observations,
                    };
                    write_histogram(&mut sink, *def, series, (since, until, step));
                    sink.flush()?;
                }
            }
            Kind::Gauge => {}
        }
    }
    // Events of series the live counters do not have were never counted.
    for ((family, _), ev) in events {
        *uncounted.entry(family).or_default() += ev.len() as u64;
    }

    // The objectives, every GAUGE_INTERVAL_MS on whole multiples of it.
    let def = catalog::SLO_OBJECTIVE;
    sink.header(def);
    let times = gauge_times(since, until);
    for id in SloId::ALL {
        let labels = with_target(&[("slo".to_string(), id.as_str().to_string())]);
        push_points(
            &mut sink.buf,
            &prefix(def.name, "", &labels),
            &times,
            &vec![config.objective(id); times.len()],
        );
        sink.report.samples += times.len();
        sink.report.series += 1;
        sink.flush()?;
    }
    write_test_gauges(
        &mut sink,
        store,
        config,
        (since, until),
        &range.target_labels,
    )?;
    sink.buf.push_str("# EOF\n");
    sink.flush()?;
    sink.out.flush()?;
    let mut uncounted: Vec<(String, u64)> = uncounted
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(f, n)| (f.to_string(), n))
        .collect();
    uncounted.sort();
    sink.report.uncounted = uncounted;
    let mut undated: Vec<(String, f64)> = undated
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .collect();
    undated.sort_by(|a, b| a.0.cmp(&b.0));
    sink.report.undated = undated;
    Ok(sink.report)
}

/// Whole multiples of [`GAUGE_INTERVAL_MS`] in [since, until), then `until`.
fn gauge_times(since: i64, until: i64) -> Vec<i64> {
    let mut t = since.div_euclid(GAUGE_INTERVAL_MS) * GAUGE_INTERVAL_MS;
    if t < since {
        t += GAUGE_INTERVAL_MS;
    }
    let mut times = Vec::new();
    while t < until {
        times.push(t);
        t += GAUGE_INTERVAL_MS;
    }
    times.push(until);
    times
}

/// The per-test gauges (`ci_tests`, the worst tests' flake and failure
/// ratios, `ci_exporter_tests_not_exported`) at every whole hour and at
/// `until`, computed as `/metrics` computes them ([`super::test_families_from`])
/// from the per-day counters of the days `tests.window` covers at each time
/// (the whole day of each time: the per-test gauges move by UTC day).
fn write_test_gauges(
    sink: &mut Sink<'_>,
    store: &dyn Storage,
    config: &Config,
    (since, until): (i64, i64),
    target_labels: &[(String, String)],
) -> Result<(), HistoryError> {
    let with_target = |labels: &[(String, String)]| -> Labels {
        target_labels.iter().chain(labels).cloned().collect()
    };
    let window = i64::try_from(config.tests.window.as_millis()).unwrap_or(i64::MAX / 2);
    // The live statistics add up whole UTC days from the day of `now -
    // window` (Storage::test_stats); at each time, the same days.
    const DAY_MS: i64 = 86_400_000;
    let day = |t: i64| t.div_euclid(DAY_MS);
    // test_success's windows (1d, 3d, 28d), in days: whole UTC days.
    let slo_windows: Vec<(String, i64)> = super::test_success_window_durations(config)
        .into_iter()
        .map(|w| {
            let ms = i64::try_from(w.as_millis()).unwrap_or(i64::MAX / 2);
            (crate::config::window_label(w), ms)
        })
        .collect();
    let longest = slo_windows
        .iter()
        .map(|w| w.1)
        .max()
        .unwrap_or(0)
        .max(window);
    let tests = store.test_day_counts(day(since.saturating_sub(longest)), day(until))?;
    let defs = [
        catalog::TEST_FAILURE_RATIO,
        catalog::TEST_FLAKE_RATIO,
        catalog::TEST_FLIP_RATIO,
        catalog::TESTS_BY_VERDICT,
        catalog::TESTS_NOT_EXPORTED,
        catalog::SLO_TESTS,
    ];
    let slo_tests = defs.len() - 1;
    // ci_slo_tests as /metrics computes it (super::test_success_windows),
    // once per UTC day: it only moves by day.
    let mut by_day: HashMap<i64, Vec<(Labels, f64)>> = HashMap::new();
    let mut series: BTreeMap<(usize, Labels), (Vec<i64>, Vec<f64>)> = BTreeMap::new();
    for t in gauge_times(since, until) {
        let (lo, hi) = (day(t - window), day(t));
        let mut stats = Vec::new();
        for ((repo, context, test), days) in &tests {
            let counts = days
                .iter()
                .filter(|(d, _)| (lo..=hi).contains(d))
                .fold(crate::flaky::Counts::default(), |a, (_, c)| a.plus(*c));
            if let Some(s) = crate::flaky::from_counts(counts, config.tests.min_runs) {
                stats.push((repo.clone(), context.clone(), test.clone(), s));
            }
        }
        for f in super::test_families_from(stats, config) {
            let Some(i) = defs.iter().position(|d| d.name == f.name) else {
                continue;
            };
            for sample in f.samples {
                let points = series.entry((i, with_target(&sample.labels))).or_default();
                points.0.push(t);
                points.1.push(sample.value);
            }
        }
        let samples = by_day
            .entry(hi)
            .or_insert_with(|| test_success_samples(&tests, &slo_windows, hi, config));
        for (labels, value) in samples.iter() {
            let points = series.entry((slo_tests, with_target(labels))).or_default();
            points.0.push(t);
            points.1.push(*value);
        }
    }
    for (i, def) in defs.iter().enumerate() {
        sink.header(*def);
        for ((_, labels), (times, values)) in series.range((i, Vec::new())..(i + 1, Vec::new())) {
            push_points(&mut sink.buf, &prefix(def.name, "", labels), times, values);
            sink.report.samples += times.len();
            sink.report.series += 1;
        }
        sink.flush()?;
    }
    Ok(())
}

/// The `ci_slo_tests` samples of the UTC day `today`: per repository with a
/// test run in the longest window and per window, the tests meeting and
/// breaching test_success (as [`super::test_success_windows`]).
fn test_success_samples(
    tests: &[crate::store::timeline::TestDays],
    windows: &[(String, i64)],
    today: i64,
    config: &Config,
) -> Vec<(Labels, f64)> {
    const DAY_MS: i64 = 86_400_000;
    let (min_runs, threshold) = (
        config.slo.test_min_runs,
        config.objective(SloId::TestSuccess),
    );
    let first = |w_ms: i64| crate::slo::first_test_day(today * DAY_MS, w_ms);
    let longest = windows.iter().map(|w| first(w.1)).min();
    // Each test's runs in each window on `today`, as Storage::test_runs_in_windows
    // adds them up for /metrics: its days from the window's first day on.
    let mut runs: Vec<(&str, Vec<crate::slo::TestRuns>)> = Vec::new();
    for ((repo, _, _), days) in tests {
        if !longest.is_some_and(|lo| days.iter().any(|(d, _)| (lo..=today).contains(d))) {
            continue;
        }
        let per_window = windows
            .iter()
            .map(|(_, w_ms)| {
                let lo = first(*w_ms);
                days.iter().filter(|(d, _)| (lo..=today).contains(d)).fold(
                    crate::slo::TestRuns::default(),
                    |a, (_, c)| crate::slo::TestRuns {
                        runs: a.runs + c.executions,
                        passes: a.passes + c.executions - c.failures.min(c.executions),
                    },
                )
            })
            .collect();
        runs.push((repo.as_str(), per_window));
    }
    let by_repo = crate::slo::test_success_by_window(
        runs.iter().map(|(repo, r)| (*repo, r.as_slice())),
        windows.len(),
        min_runs,
        threshold,
    )
    .by_repository;
    let mut out = Vec::new();
    for (repo, counts) in by_repo {
        for ((window, _), c) in windows.iter().zip(counts) {
            for (result, n) in [("meeting", c.good), ("breaching", c.bad())] {
                let labels = [
                    ("slo", SloId::TestSuccess.as_str()),
                    ("repository", repo.as_str()),
                    ("window", window.as_str()),
                    ("result", result),
                ];
                out.push((
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    n as f64,
                ));
            }
        }
    }
    out
}

/// A counter's event times, sorted (one entry per event).
fn change_list(events: Vec<(i64, f64)>) -> Vec<i64> {
    let mut t: Vec<i64> = events.into_iter().map(|e| e.0).collect();
    t.sort_unstable();
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn samples_surround_each_change_on_the_grid_and_end_at_until() {
        // step 10 s, hold 40 s: a change at 105 s gets grid points 70..=140 s.
        let t = sample_times(&[105_000], 0, 1_000_000, 10_000, None);
        assert_eq!(
            t,
            vec![
                70_000, 80_000, 90_000, 100_000, 110_000, 120_000, 130_000, 140_000, 1_000_000
            ]
        );
        // Overlapping neighbourhoods merge without duplicates; nothing before
        // `since` or after `until`; changes outside (since, until] add nothing.
        let t = sample_times(
            &[-5_000, 15_000, 30_000, 2_000_000],
            0,
            60_000,
            10_000,
            None,
        );
        assert_eq!(t, vec![0, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000]);
        // A series that never changes in the range: only `until`.
        assert_eq!(sample_times(&[], 0, 60_500, 10_000, None), vec![60_500]);
        // A keepalive adds its own multiples, merged into the change samples.
        assert_eq!(
            sample_times(&[25_000], 1_000, 100_000, 5_000, Some(40_000)),
            vec![
                5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000, 45_000, 80_000,
                100_000
            ]
        );
    }

    #[test]
    fn values_are_the_live_total_minus_later_events_and_never_negative() {
        // Live total 5: one event before the range (or before the database's
        // history was pruned) is part of the base.
        let v = counter_values(5.0, &[10, 20, 30, 40], &[0, 10, 25, 40, 50]);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 5.0, 5.0]);
        // Two events were never counted live: the series starts at 0 and
        // ends at the live value.
        let v = counter_values(2.0, &[10, 20, 30, 40], &[0, 15, 35, 45]);
        assert_eq!(v, vec![0.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn histograms_are_cumulative_per_bucket_and_grouped_per_series() {
        let mut buf: Vec<u8> = Vec::new();
        let mut sink = Sink {
            out: &mut buf,
            buf: String::new(),
            report: HistoryReport::default(),
        };
        let series = HistogramSeries {
            labels: vec![("r".into(), "x".into())],
            // live: one at 50 (le 300), one at 400 (le 3600), one at 5000 (+Inf)
            buckets: vec![(300.0, 1.0), (3600.0, 1.0), (f64::INFINITY, 1.0)],
            sum: 5450.0,
            observations: vec![(6_000, 5_000.0), (1_000, 50.0), (2_000, 400.0)],
        };
        write_histogram(&mut sink, catalog::RUN_QUEUE, series, (0, 100_000, 1_000));
        sink.flush().unwrap();
        let text = String::from_utf8(buf).unwrap();
        let points = |series: &str| -> Vec<(i64, f64)> {
            text.lines()
                .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .map(|rest| {
                    let (v, t) = rest.split_once(' ').unwrap();
                    (t.parse::<i64>().unwrap() * 1000, v.parse::<f64>().unwrap())
                })
                .collect()
        };
        let inf = points("ci_run_queue_duration_seconds_bucket{r=\"x\",le=\"+Inf\"}");
        let le300 = points("ci_run_queue_duration_seconds_bucket{r=\"x\",le=\"300.0\"}");
        let sum = points("ci_run_queue_duration_seconds_sum{r=\"x\"}");
        let count = points("ci_run_queue_duration_seconds_count{r=\"x\"}");
        let at = |p: &[(i64, f64)], t: i64| p.iter().find(|x| x.0 == t).map(|x| x.1);
        // Same times for every sub-series: 0..=10 s (hold 4 s around 1, 2 and 6 s), then until.
        assert_eq!(inf.len(), 12);
        assert_eq!(le300.len(), 12);
        assert_eq!(at(&inf, 0), Some(0.0));
        assert_eq!(at(&inf, 1_000), Some(1.0));
        assert_eq!(at(&le300, 5_000), Some(1.0));
        assert_eq!(at(&inf, 5_000), Some(2.0));
        assert_eq!(at(&inf, 100_000), Some(3.0));
        assert_eq!(at(&sum, 2_000), Some(450.0));
        assert_eq!(at(&sum, 100_000), Some(5450.0));
        assert_eq!(count, inf);
        // Each series' points are consecutive and in time order.
        assert!(inf.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn the_demo_history_dates_every_counted_event_and_ends_on_the_live_totals() {
        use crate::config::Config;
        use crate::store::Policy;
        let mut store = Store::open_in_memory().unwrap();
        let config = Config::default();
        let policy = Policy::from_config(&config);
        let now = Utc::now();
        crate::demo::seed(&mut store, &policy, now).unwrap();
        let range = HistoryRange {
            since: now - chrono::Duration::days(30),
            until: now,
            step: chrono::Duration::seconds(30),
            target_labels: vec![
                ("job".into(), "ci-slo-exporter".into()),
                ("instance".into(), "exporter:9787".into()),
            ],
        };
        let mut out: Vec<u8> = Vec::new();
        let report = write_history(&store, &config, &range, &mut out).unwrap();
        // Every live count has its stored event and every stored event was counted.
        assert!(report.uncounted.is_empty(), "{:?}", report.uncounted);
        assert!(report.undated.is_empty(), "{:?}", report.undated);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(report.bytes, text.len());
        // The last sample of each series is the live value.
        let lines: std::collections::HashSet<&str> = text.lines().collect();
        let live = crate::metrics::persisted_families(&store).unwrap();
        let until_s = fmt_timestamp(now.timestamp_millis());
        let mut checked = 0;
        for f in &live {
            for s in &f.samples {
                let labels: Labels = range
                    .target_labels
                    .iter()
                    .chain(&s.labels)
                    .cloned()
                    .collect();
                let mut line = prefix(&f.name, s.suffix, &labels);
                line.push(' ');
                line.push_str(&fmt_value(s.value));
                line.push(' ');
                line.push_str(&until_s);
                assert!(lines.contains(line.as_str()), "missing {line}");
                checked += 1;
            }
        }
        assert!(checked > 500, "{checked}");
        // The per-test gauges too, at `until` as /metrics computes them now,
        // and at every hour before.
        let tests = crate::metrics::test_families(&store, &config, now).unwrap();
        let mut gauges = 0;
        for f in &tests {
            for s in &f.samples {
                let labels: Labels = range
                    .target_labels
                    .iter()
                    .chain(&s.labels)
                    .cloned()
                    .collect();
                let line = format!(
                    "{} {} {until_s}",
                    prefix(&f.name, "", &labels),
                    fmt_value(s.value)
                );
                assert!(lines.contains(line.as_str()), "missing {line}");
                gauges += 1;
            }
        }
        assert!(gauges >= 5, "{gauges}");
        let healthy = text
            .lines()
            .filter(|l| l.starts_with("ci_tests{") && l.contains("verdict=\"healthy\""))
            .count();
        assert!(healthy >= 700, "hourly ci_tests samples: {healthy}");
        // test_success per test: ci_slo_tests ends on what /metrics serves
        // now, hourly before; the execution events are test_executions.
        let slo = crate::metrics::slo_families(&store, &config, now).unwrap();
        let slo_tests = slo.iter().find(|f| f.name == "ci_slo_tests").unwrap();
        assert!(!slo_tests.samples.is_empty());
        for s in &slo_tests.samples {
            let labels: Labels = range
                .target_labels
                .iter()
                .chain(&s.labels)
                .cloned()
                .collect();
            let line = format!(
                "{} {} {until_s}",
                prefix(&slo_tests.name, "", &labels),
                fmt_value(s.value)
            );
            assert!(lines.contains(line.as_str()), "missing {line}");
        }
        let hourly = text
            .lines()
            .filter(|l| {
                l.starts_with("ci_slo_tests{") && l.contains("window=\"28d\",result=\"meeting\"")
            })
            .count();
        assert!(hourly >= 700, "hourly ci_slo_tests samples: {hourly}");
        assert!(text.contains("ci_slo_events_total{job=\"ci-slo-exporter\",instance=\"exporter:9787\",slo=\"test_executions\""));
        assert!(
            !text.lines().any(
                |l| l.starts_with("ci_slo_events_total{") && l.contains("slo=\"test_success\"")
            ),
            "no execution events under test_success"
        );
    }
}
