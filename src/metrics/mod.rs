//! What `/metrics` serves.
//!
//! A scrape never touches the database: it copies the last [`Snapshot`], which
//! a background task rebuilds from the store on an interval and after writes
//! (docs/design.md §4). Counters and histograms come from their persisted state, so
//! they survive restarts exactly; the windowed SLO gauges are recomputed from
//! the stored SLO events. Live process metrics (requests, refreshes) are
//! [`process::SelfMetrics`], built once and passed in.

pub use crate::catalog;
pub mod expo;
pub mod history;
pub mod process;

pub use process::SelfMetrics;

use crate::config::{Config, window_label};
use crate::slo::{EventCounts, SloId};
use crate::store::{Storage, StoreError};
use catalog::FamilyDef;
use chrono::{DateTime, Utc};
use expo::{Exemplar, Family, Sample, fmt_le};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Pre-encoded families, ready to serve.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub openmetrics: String,
    pub prometheus: String,
    pub built_at: Instant,
    pub build_seconds: f64,
    pub series: usize,
    /// Series left out by `metrics.max_series`.
    pub dropped: usize,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            openmetrics: String::new(),
            prometheus: String::new(),
            built_at: Instant::now(),
            build_seconds: 0.0,
            series: 0,
            dropped: 0,
        }
    }
}

fn family(def: FamilyDef) -> Family {
    Family {
        name: def.name.to_string(),
        kind: def.kind,
        unit: def.unit,
        help: def.help.to_string(),
        samples: Vec::new(),
    }
}

fn gauge(labels: Vec<(String, String)>, value: f64) -> Sample {
    Sample {
        suffix: "",
        labels,
        value,
        exemplar: None,
        timestamp_ms: None,
    }
}

fn label(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

/// The labels a persisted series is exported with: the execution events
/// stored as `ci_slo_events{slo="test_success"}` are exported as
/// `slo="test_executions"` ([`crate::slo::exported_slo`]).
pub fn exported_labels(family: &str, mut labels: Vec<(String, String)>) -> Vec<(String, String)> {
    if family == catalog::SLO_EVENTS.name {
        for (k, v) in labels.iter_mut() {
            if k == "slo" {
                let exported = crate::slo::exported_slo(v);
                if exported != v {
                    *v = exported.to_string();
                }
            }
        }
    }
    labels
}

/// The persisted counters and histograms, as exposition families.
pub fn persisted_families(store: &dyn Storage) -> Result<Vec<Family>, StoreError> {
    let state = store.metric_state()?;
    let mut families: BTreeMap<&str, Family> = catalog::PERSISTED
        .iter()
        .map(|d| (d.name, family(*d)))
        .collect();
    for c in state.counters {
        if let Some(f) = families.get_mut(c.family.as_str()) {
            f.samples.push(Sample {
                suffix: "_total",
                labels: exported_labels(&c.family, c.labels),
                value: c.value,
                exemplar: None,
                timestamp_ms: None,
            });
        }
    }
    for h in state.histograms {
        let Some(f) = families.get_mut(h.family.as_str()) else {
            continue;
        };
        let mut cumulative = 0;
        for b in &h.buckets {
            cumulative += b.count;
            let mut labels = h.labels.clone();
            labels.push(label("le", fmt_le(b.le)));
            f.samples.push(Sample {
                suffix: "_bucket",
                labels,
                value: cumulative as f64,
                exemplar: b.exemplar.map(|(run_id, value, at_ms)| Exemplar {
                    labels: vec![label("run_id", run_id.to_string())],
                    value,
                    timestamp_ms: Some(at_ms),
                }),
                timestamp_ms: None,
            });
        }
        for (suffix, value) in [("_sum", h.sum), ("_count", h.count as f64)] {
            f.samples.push(Sample {
                suffix,
                labels: h.labels.clone(),
                value,
                exemplar: None,
                timestamp_ms: None,
            });
        }
    }
    Ok(catalog::PERSISTED
        .iter()
        .filter_map(|d| families.remove(d.name))
        .collect())
}

/// The SLO gauges computed from stored SLO events at `now`; test_success
/// from the tests' per-day counters ([`test_success_windows`]).
pub fn slo_families(
    store: &dyn Storage,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<Family>, StoreError> {
    let mut objective = family(catalog::SLO_OBJECTIVE);
    let mut sli = family(catalog::SLO_SLI);
    let mut remaining = family(catalog::SLO_BUDGET_REMAINING);
    let mut burn = family(catalog::SLO_BURN_RATE);
    let mut events = family(catalog::SLO_WINDOW_EVENTS);
    let mut tests = family(catalog::SLO_TESTS);
    let windows = config.gauge_windows();
    let counts: Vec<(String, std::collections::HashMap<String, EventCounts>)> = windows
        .iter()
        .map(|w| window_label(*w))
        .zip(store.slo_counts_in_windows(now, &windows, None)?)
        .collect();
    let per_test = test_success_windows(store, config, now)?;
    let period_label = window_label(config.slo.period);
    for id in SloId::ALL {
        let slo = id.as_str();
        let obj = config.objective(id);
        objective.samples.push(gauge(vec![label("slo", slo)], obj));
        // test_success counts tests, not stored events: its windows are
        // whole UTC days (none shorter than a day).
        let by_window: Vec<(String, EventCounts)> = if id == SloId::TestSuccess {
            per_test.iter().map(|w| (w.window.clone(), w.all)).collect()
        } else {
            counts
                .iter()
                .map(|(w, by_slo)| (w.clone(), by_slo.get(slo).copied().unwrap_or_default()))
                .collect()
        };
        let mut period = EventCounts::default();
        for (window, c) in by_window {
            let labels = vec![label("slo", slo), label("window", window.clone())];
            let status = c.window_status(obj);
            events
                .samples
                .push(gauge(labels.clone(), status.total as f64));
            if let Some(v) = status.sli {
                sli.samples.push(gauge(labels.clone(), v));
            }
            if let Some(v) = status.burn_rate {
                burn.samples.push(gauge(labels, v));
            }
            if window == period_label {
                period = c;
            }
        }
        remaining
            .samples
            .push(gauge(vec![label("slo", slo)], period.budget_remaining(obj)));
    }
    // The execution-level ratio that test_success was before it was judged
    // per test: SLI and events only (it has no objective of its own).
    for (window, by_slo) in &counts {
        let c = by_slo
            .get(SloId::TestSuccess.as_str())
            .copied()
            .unwrap_or_default();
        let labels = vec![
            label("slo", crate::slo::TEST_EXECUTIONS),
            label("window", window.clone()),
        ];
        events.samples.push(gauge(labels.clone(), c.total as f64));
        if let Some(v) = c.sli() {
            sli.samples.push(gauge(labels, v));
        }
    }
    for w in &per_test {
        for (repo, c) in &w.by_repository {
            for (result, n) in [("meeting", c.good), ("breaching", c.bad())] {
                tests.samples.push(gauge(
                    vec![
                        label("slo", SloId::TestSuccess.as_str()),
                        label("repository", repo.clone()),
                        label("window", w.window.clone()),
                        label("result", result),
                    ],
                    n as f64,
                ));
            }
        }
    }
    Ok(vec![objective, sli, remaining, burn, events, tests])
}

/// The test_success events of one window: tests meeting (good) and
/// evaluated (total), overall and per repository.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSuccessWindow {
    /// `1d`, `3d`, `28d`.
    pub window: String,
    pub all: EventCounts,
    /// Every repository with a test run in the longest window, also where
    /// none is evaluated (0 meeting, 0 breaching: the series are summable).
    pub by_repository: BTreeMap<String, EventCounts>,
}

/// The windows of test_success: `slo.windows` and `slo.period` of at least a
/// day (its tests are judged on whole UTC days, so an hour would be a day).
pub fn test_success_window_durations(config: &Config) -> Vec<std::time::Duration> {
    config
        .gauge_windows()
        .into_iter()
        .filter(|w| w.as_secs() >= 86_400)
        .collect()
}

/// The test_success events of each of its windows at `now`, from the
/// per-day counters kept at ingest (no execution is read): a test with at
/// least `slo.test_min_runs` runs in a window is good in it when its
/// success ratio is at least the objective ([`crate::slo::test_success_counts`]).
pub fn test_success_windows(
    store: &dyn Storage,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<TestSuccessWindow>, StoreError> {
    let durations = test_success_window_durations(config);
    let first_days: Vec<i64> = durations
        .iter()
        .map(|w| {
            let ms = i64::try_from(w.as_millis()).unwrap_or(i64::MAX / 2);
            crate::slo::first_test_day(now.timestamp_millis(), ms)
        })
        .collect();
    let tests = store.test_runs_in_windows(&first_days)?;
    let (min_runs, threshold) = (
        config.slo.test_min_runs,
        config.objective(SloId::TestSuccess),
    );
    let counted = crate::slo::test_success_by_window(
        tests
            .iter()
            .map(|t| (t.repository.as_str(), t.windows.as_slice())),
        durations.len(),
        min_runs,
        threshold,
    );
    Ok(durations
        .iter()
        .enumerate()
        .map(|(i, w)| TestSuccessWindow {
            window: window_label(*w),
            all: counted.all[i],
            by_repository: counted
                .by_repository
                .iter()
                .map(|(repo, c)| (repo.clone(), c[i]))
                .collect(),
        })
        .collect())
}

/// The per-test families, recomputed at most every `tests.refresh_interval`
/// (they scan the window's test results, unlike the rest of the snapshot).
#[derive(Debug, Default)]
pub struct TestStatsCache {
    families: Vec<Family>,
    computed_at: Option<DateTime<Utc>>,
}

impl TestStatsCache {
    fn get(
        &mut self,
        store: &dyn Storage,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Vec<Family>, StoreError> {
        let fresh = self.computed_at.is_some_and(|at| {
            now >= at && (now - at).to_std().unwrap_or_default() < config.tests.refresh_interval
        });
        if !fresh {
            self.families = test_families(store, config, now)?;
            self.computed_at = Some(now);
        }
        Ok(self.families.clone())
    }
}

/// Flake, failure and flip ratios of the worst tests per repository and
/// verdict, and counts per verdict.
pub fn test_families(
    store: &dyn Storage,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<Family>, StoreError> {
    let since = now - chrono::Duration::from_std(config.tests.window).unwrap_or_default();
    Ok(test_families_from(
        store.test_stats(since, config.tests.min_runs)?,
        config,
    ))
}

/// The per-test families from each test's statistics over `tests.window`
/// (repository, context, test, stats): also what `backfill-openmetrics`
/// writes for past times ([`history`]). Per repository, the
/// `tests.worst_per_repository` worst flaky tests and as many broken ones
/// ([`crate::flaky::rank`]): one verdict never pushes the other out.
pub fn test_families_from(
    stats: impl IntoIterator<Item = (String, String, String, crate::flaky::TestStats)>,
    config: &Config,
) -> Vec<Family> {
    use crate::flaky::{TestStats, Verdict};
    let mut by_repo: BTreeMap<String, Vec<(String, String, TestStats)>> = BTreeMap::new();
    for (repo, context, test, stats) in stats {
        by_repo
            .entry(repo)
            .or_default()
            .push((context, test, stats));
    }
    let min_runs = config.tests.min_runs;
    let mut failure = family(catalog::TEST_FAILURE_RATIO);
    let mut flake = family(catalog::TEST_FLAKE_RATIO);
    let mut flip = family(catalog::TEST_FLIP_RATIO);
    let mut verdicts = family(catalog::TESTS_BY_VERDICT);
    let mut dropped = family(catalog::TESTS_NOT_EXPORTED);
    for (repo, tests) in by_repo {
        for verdict in Verdict::ALL {
            let n = tests
                .iter()
                .filter(|(_, _, s)| s.verdict == verdict)
                .count();
            let labels = vec![
                label("repository", repo.clone()),
                label("verdict", verdict.as_str()),
            ];
            verdicts.samples.push(gauge(labels, n as f64));
        }
        let mut left_out = 0;
        for verdict in [Verdict::Flaky, Verdict::Broken] {
            let mut worst: Vec<&(String, String, TestStats)> = tests
                .iter()
                .filter(|(_, _, s)| s.verdict == verdict)
                .collect();
            worst.sort_by(|a, b| {
                crate::flaky::rank(&a.2, &b.2, min_runs).then((&a.0, &a.1).cmp(&(&b.0, &b.1)))
            });
            let keep = config.tests.worst_per_repository.min(worst.len());
            left_out += worst.len() - keep;
            for (context, test, stats) in worst.into_iter().take(keep) {
                let labels = vec![
                    label("repository", repo.clone()),
                    label("context", context.clone()),
                    label("test", test.clone()),
                ];
                failure
                    .samples
                    .push(gauge(labels.clone(), stats.failure_ratio));
                flake.samples.push(gauge(labels.clone(), stats.flake_ratio));
                flip.samples.push(gauge(labels, stats.flip_rate));
            }
        }
        dropped.samples.push(gauge(
            vec![label("repository", repo.clone())],
            left_out as f64,
        ));
    }
    vec![failure, flake, flip, verdicts, dropped]
}

/// Build a complete snapshot (run it off the scrape path).
pub fn build_snapshot(
    store: &dyn Storage,
    config: &Config,
    now: DateTime<Utc>,
    tests: &mut TestStatsCache,
) -> Result<Snapshot, StoreError> {
    let started = Instant::now();
    // Every figure from one snapshot of the database: read statement by
    // statement, a rebuild during another replica's commit could serve
    // counters of before it next to windows of after it.
    let mut read = None;
    store.read_consistent(&mut |store| {
        let mut families = persisted_families(store)?;
        families.extend(slo_families(store, config, now)?);
        families.extend(tests.get(store, config, now)?);
        read = Some((
            families,
            store.is_demo()?,
            store.run_count()?,
            store.last_syncs()?,
        ));
        Ok(())
    })?;
    let (mut families, is_demo, run_count, syncs) =
        read.expect("read_consistent runs its reads once when it succeeds");

    let mut demo = family(catalog::DEMO_DATA);
    demo.samples
        .push(gauge(vec![], if is_demo { 1.0 } else { 0.0 }));
    let mut runs = family(catalog::STORED_ROWS);
    runs.samples.push(gauge(vec![], run_count as f64));
    let mut sync = family(catalog::LAST_SYNC);
    for (forge, scope, at_ms) in syncs {
        sync.samples.push(gauge(
            vec![label("forge", forge), label("repository", scope)],
            at_ms as f64 / 1000.0,
        ));
    }
    let mut info = family(catalog::BUILD_INFO);
    info.samples.push(gauge(
        vec![label("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    ));
    let mut shard = family(catalog::SHARD_INFO);
    shard.samples.push(gauge(
        vec![
            label("shard", config.shard.index().to_string()),
            label("shards", config.shard.count().to_string()),
        ],
        1.0,
    ));
    let dropped = cap_series(&mut families, config);
    let mut series = family(catalog::SERIES);
    for f in &families {
        series.samples.push(gauge(
            vec![label("family", f.name.clone())],
            f.samples.len() as f64,
        ));
    }
    let total_series = families.iter().map(|f| f.samples.len()).sum();
    families.extend([demo, runs, sync, info, shard, series]);
    let build_seconds = started.elapsed().as_secs_f64();
    let mut build = family(catalog::SNAPSHOT_BUILD);
    build.samples.push(gauge(vec![], build_seconds));
    families.push(build);

    let mut openmetrics = String::new();
    expo::write_openmetrics(&mut openmetrics, &families);
    let mut prometheus = String::with_capacity(openmetrics.len());
    expo::write_prometheus(&mut prometheus, &families);
    Ok(Snapshot {
        openmetrics,
        prometheus,
        built_at: Instant::now(),
        build_seconds,
        series: total_series,
        dropped,
    })
}

/// Keep at most `metrics.max_series` series: when there are more, whole
/// repositories are left out (the configured ones are kept first, then by
/// name, so the same ones stay from one snapshot to the next). Returns how
/// many series were left out.
fn cap_series(families: &mut [Family], config: &Config) -> usize {
    let total: usize = families.iter().map(|f| f.samples.len()).sum();
    let max = config.metrics.max_series;
    if total <= max {
        return 0;
    }
    let repository_of = |s: &Sample| -> Option<String> {
        s.labels
            .iter()
            .find(|(k, _)| k == "repository")
            .map(|(_, v)| v.clone())
    };
    let mut per_repo: BTreeMap<String, usize> = BTreeMap::new();
    let mut unlabelled = 0;
    for s in families.iter().flat_map(|f| &f.samples) {
        match repository_of(s) {
            Some(r) => *per_repo.entry(r).or_default() += 1,
            None => unlabelled += 1,
        }
    }
    let configured: std::collections::HashSet<&str> = config
        .repositories
        .iter()
        .map(|r| r.path.as_str())
        .chain(config.github.repositories.iter().map(String::as_str))
        .chain(config.gitlab.projects.iter().map(String::as_str))
        .collect();
    let mut order: Vec<(&String, &usize)> = per_repo.iter().collect();
    order.sort_by_key(|(r, _)| (!configured.contains(r.as_str()), r.as_str()));
    let mut budget = max.saturating_sub(unlabelled);
    let mut kept = std::collections::HashSet::new();
    for (repo, n) in order {
        if *n <= budget {
            budget -= n;
            kept.insert(repo.clone());
        } else {
            // Stop at the first that does not fit: no later name jumps ahead.
            break;
        }
    }
    let mut dropped = 0;
    for f in families.iter_mut() {
        let before = f.samples.len();
        f.samples
            .retain(|s| repository_of(s).is_none_or(|r| kept.contains(&r)));
        dropped += before - f.samples.len();
    }
    dropped
}

/// The snapshot in use plus the live process metrics.
#[derive(Debug)]
pub struct MetricsHub {
    snapshot: RwLock<Arc<Snapshot>>,
    pub self_metrics: SelfMetrics,
}

impl MetricsHub {
    pub fn new(self_metrics: SelfMetrics) -> MetricsHub {
        MetricsHub {
            snapshot: RwLock::new(Arc::new(Snapshot::empty())),
            self_metrics,
        }
    }

    pub fn replace(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The body of a scrape in the requested format.
    pub fn render(&self, openmetrics: bool) -> String {
        let snapshot = self.current();
        let mut live = self.self_metrics.families();
        let mut age = family(catalog::SNAPSHOT_AGE);
        age.samples
            .push(gauge(vec![], snapshot.built_at.elapsed().as_secs_f64()));
        live.push(age);
        if openmetrics {
            let mut out = String::with_capacity(snapshot.openmetrics.len() + 8192);
            out.push_str(&snapshot.openmetrics);
            expo::write_openmetrics(&mut out, &live);
            out.push_str("# EOF\n");
            out
        } else {
            let mut out = String::with_capacity(snapshot.prometheus.len() + 8192);
            out.push_str(&snapshot.prometheus);
            expo::write_prometheus(&mut out, &live);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_fresh_store_exports_every_family_with_objectives_and_full_budgets() {
        let store = Store::open_in_memory().unwrap();
        let config = Config::default();
        let snap =
            build_snapshot(&store, &config, Utc::now(), &mut TestStatsCache::default()).unwrap();
        for name in [
            "ci_run_queue_duration_seconds",
            "ci_run_duration_seconds",
            "ci_runs",
            "ci_merged_changes",
            "ci_change_retries_to_green",
            "ci_slo_events",
            "ci_slo_objective_ratio",
            "ci_slo_sli_ratio",
            "ci_slo_error_budget_remaining_ratio",
            "ci_slo_burn_rate",
        ] {
            assert!(
                snap.openmetrics.contains(&format!("# TYPE {name} ")),
                "{name} missing"
            );
        }
        assert!(
            snap.openmetrics
                .contains("ci_slo_objective_ratio{slo=\"first_attempt_green\"} 0.75\n")
        );
        assert!(
            snap.openmetrics
                .contains("ci_slo_error_budget_remaining_ratio{slo=\"queue_time\"} 1\n")
        );
        assert!(
            !snap.openmetrics.contains("ci_slo_sli_ratio{"),
            "empty windows have no SLI sample"
        );
        assert!(snap.prometheus.contains("# TYPE ci_runs_total counter\n"));
        assert!(
            snap.openmetrics
                .contains("ci_exporter_shard_info{shard=\"1\",shards=\"1\"} 1\n")
        );
    }

    #[test]
    fn over_max_series_whole_repositories_are_left_out_and_counted() {
        let mut config = Config::default();
        config.metrics.max_series = 7;
        config.repositories = vec![crate::config::RepositoryConfig {
            forge: crate::model::Forge::Generic,
            path: "zeta".into(),
            required_contexts: vec![],
        }];
        let mut f = family(catalog::SLO_OBJECTIVE);
        f.samples.push(gauge(vec![label("slo", "x")], 1.0));
        for repo in ["alpha", "beta", "zeta"] {
            for i in 0..3 {
                f.samples.push(gauge(
                    vec![label("repository", repo), label("i", i.to_string())],
                    1.0,
                ));
            }
        }
        let mut families = vec![f];
        let dropped = cap_series(&mut families, &config);
        assert_eq!(dropped, 3);
        let kept: std::collections::BTreeSet<String> = families[0]
            .samples
            .iter()
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == "repository"))
            .map(|(_, v)| v.clone())
            .collect();
        // The configured repository first, then by name; the unlabelled series stays.
        assert_eq!(kept.into_iter().collect::<Vec<_>>(), ["alpha", "zeta"]);
        assert_eq!(families[0].samples.len(), 7);
        config.metrics.max_series = 100;
        assert_eq!(cap_series(&mut families, &config), 0);
    }

    #[test]
    fn the_hub_renders_both_formats_with_live_metrics() {
        let hub = MetricsHub::new(SelfMetrics::new());
        hub.self_metrics.count_ingest("api", "created");
        let om = hub.render(true);
        assert!(om.ends_with("# EOF\n"));
        assert!(
            om.contains("ci_exporter_ingested_runs_total{source=\"api\",result=\"created\"} 1\n"),
            "{om}"
        );
        let text = hub.render(false);
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("# TYPE ci_exporter_ingested_runs_total counter\n"),
            "{text}"
        );
    }

    #[test]
    fn only_the_worst_tests_per_repository_get_series_and_the_rest_are_counted() {
        use crate::model::*;
        use crate::store::Policy;
        let mut store = Store::open_in_memory().unwrap();
        let mut config = Config::default();
        config.tests.worst_per_repository = 1;
        let policy = Policy::from_config(&config);
        let now = Utc::now();
        let t = |name: &str, outcome| TestResult {
            name: name.into(),
            outcome,
            duration_seconds: None,
            retries: 0,
            retry_reasons: vec![],
            message: None,
        };
        // Commit a: "flaky" fails on attempt 0 and passes on attempt 1,
        // "flaky2" the reverse and passes again on b (a flake in 1 of 3
        // runs, less often than flaky's 1 in 2); "broken" always fails;
        // "sometimes" fails once on commit b then passes (2 runs: new);
        // "fine" always passes (2 runs: new).
        let runs = [
            (
                "a",
                0,
                vec![
                    t("flaky", TestOutcome::Failed),
                    t("flaky2", TestOutcome::Passed),
                    t("broken", TestOutcome::Failed),
                    t("fine", TestOutcome::Passed),
                ],
            ),
            (
                "a",
                1,
                vec![
                    t("flaky", TestOutcome::Passed),
                    t("flaky2", TestOutcome::Failed),
                    t("broken", TestOutcome::Failed),
                    t("fine", TestOutcome::Passed),
                ],
            ),
            (
                "b",
                0,
                vec![
                    t("sometimes", TestOutcome::Failed),
                    t("flaky2", TestOutcome::Passed),
                    t("broken", TestOutcome::Errored),
                ],
            ),
            ("c", 0, vec![t("sometimes", TestOutcome::Passed)]),
        ];
        for (i, (commit, attempt, tests)) in runs.into_iter().enumerate() {
            let at = now - chrono::Duration::minutes(60 - i as i64);
            let run = NewRun {
                repository: RepositoryRef {
                    forge: Forge::Generic,
                    path: "r".into(),
                },
                context: "ci".into(),
                commit: commit.into(),
                external_id: None,
                attempt_group: None,
                attempt,
                trigger: Trigger::PullRequest,
                trigger_pending: false,
                state: RunState::Failure,
                queued_at: Some(at),
                started_at: Some(at),
                finished_at: Some(at),
                url: None,
                log_url: None,
                change: None,
                tests,
                reports: vec![],
                failures: vec![],
                dependencies: Default::default(),
                source: "test".into(),
                completeness: Default::default(),
            };
            store.ingest_run(&run, &policy, now).unwrap();
        }
        let mut out = String::new();
        expo::write_openmetrics(&mut out, &test_families(&store, &config, now).unwrap());
        // One flaky and one broken test: N applies per verdict. "flaky"
        // flakes more often (1 in 2) but has fewer runs than tests.min_runs
        // (3): the guard ranks it after "flaky2" (1 in 3).
        for test in ["broken", "flaky2"] {
            assert!(
                out.contains(&format!(
                    "ci_test_failure_ratio{{repository=\"r\",context=\"ci\",test=\"{test}\"}}"
                )),
                "{test}: {out}"
            );
        }
        assert!(
            !out.contains("test=\"flaky\""),
            "flaky has too few runs to rank first:\n{out}"
        );
        assert!(
            out.contains("ci_exporter_tests_not_exported{repository=\"r\"} 1\n"),
            "{out}"
        );
        for (verdict, n) in [("healthy", 0), ("flaky", 2), ("broken", 1), ("new", 2)] {
            assert!(
                out.contains(&format!(
                    "ci_tests{{repository=\"r\",verdict=\"{verdict}\"}} {n}\n"
                )),
                "{verdict}: {out}"
            );
        }
        config.tests.worst_per_repository = 10;
        let mut out = String::new();
        expo::write_openmetrics(&mut out, &test_families(&store, &config, now).unwrap());
        for line in [
            "ci_test_flake_ratio{repository=\"r\",context=\"ci\",test=\"flaky\"} 0.5\n",
            "ci_test_failure_ratio{repository=\"r\",context=\"ci\",test=\"flaky\"} 0.5\n",
            "ci_test_flip_ratio{repository=\"r\",context=\"ci\",test=\"flaky\"} 1\n",
            "ci_test_flake_ratio{repository=\"r\",context=\"ci\",test=\"flaky2\"} 0.3333333333333333\n",
            "ci_test_flip_ratio{repository=\"r\",context=\"ci\",test=\"flaky2\"} 1\n",
            "ci_test_flake_ratio{repository=\"r\",context=\"ci\",test=\"broken\"} 0\n",
        ] {
            assert!(out.contains(line), "{line}: {out}");
        }
        assert!(
            !out.contains("test=\"sometimes\""),
            "new tests get no series"
        );
        assert!(
            !out.contains("test=\"fine\""),
            "healthy tests get no series"
        );
    }
}
