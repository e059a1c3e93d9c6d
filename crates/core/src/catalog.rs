//! The metric catalog: every family the exporter persists and exports, with
//! its type and help text. docs/metrics.md mirrors this list.
//!
//! Counter families are named without their `_total` suffix, as OpenMetrics
//! does; the encoder adds it to samples.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, Copy)]
pub struct FamilyDef {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<&'static str>,
    pub help: &'static str,
}

macro_rules! family {
    ($id:ident, $name:literal, $kind:ident, $unit:expr, $help:literal) => {
        pub const $id: FamilyDef = FamilyDef {
            name: $name,
            kind: Kind::$kind,
            unit: $unit,
            help: $help,
        };
    };
}

family!(
    RUN_QUEUE,
    "ci_run_queue_duration_seconds",
    Histogram,
    Some("seconds"),
    "Time runs waited between being queued and starting."
);
family!(
    RUN_DURATION,
    "ci_run_duration_seconds",
    Histogram,
    Some("seconds"),
    "Time finished runs took between starting and finishing."
);
family!(
    RUNS,
    "ci_runs",
    Counter,
    None,
    "Runs that reached a final state, by state and first attempt or retry."
);
family!(
    MERGED_CHANGES,
    "ci_merged_changes",
    Counter,
    None,
    "Merged changes by how their head commit's required contexts got to green."
);
family!(
    RETRIES_TO_GREEN,
    "ci_change_retries_to_green",
    Histogram,
    None,
    "Retries a merged change needed before all its required contexts were green."
);
family!(
    SLO_EVENTS,
    "ci_slo_events",
    Counter,
    None,
    "SLO events by result; good/valid over a window is the SLI."
);
family!(
    FAILURES,
    "ci_failures",
    Counter,
    None,
    "Failures found in runs, by failure class and category."
);
family!(
    SLO_OBJECTIVE,
    "ci_slo_objective_ratio",
    Gauge,
    Some("ratio"),
    "The configured objective of each SLO."
);
family!(
    SLO_SLI,
    "ci_slo_sli_ratio",
    Gauge,
    Some("ratio"),
    "Good/valid events of each SLO over a trailing window, from the store; absent for an empty window."
);
family!(
    SLO_BUDGET_REMAINING,
    "ci_slo_error_budget_remaining_ratio",
    Gauge,
    Some("ratio"),
    "Share of the error budget left over the SLO period (negative when overspent)."
);
family!(
    SLO_BURN_RATE,
    "ci_slo_burn_rate",
    Gauge,
    None,
    "Bad ratio over a window divided by the error budget (1 = spending exactly the budget)."
);
family!(
    SLO_WINDOW_EVENTS,
    "ci_slo_window_events",
    Gauge,
    None,
    "Valid events of each SLO in each gauge window (for test_success: the tests evaluated), for minimum-event guards."
);
family!(
    DATA_QUALITY,
    "ci_exporter_data_quality_rejections",
    Counter,
    None,
    "Records or durations not exported because they were implausible, by reason."
);
family!(
    BACKDATED,
    "ci_exporter_backdated_events",
    Counter,
    None,
    "Events stored without moving live counters: history loaded with --history into a database that has served."
);
family!(
    DEMO_DATA,
    "ci_exporter_demo_data",
    Gauge,
    None,
    "1 when the database holds generated demo data, 0 otherwise."
);
family!(
    SNAPSHOT_AGE,
    "ci_exporter_snapshot_age_seconds",
    Gauge,
    Some("seconds"),
    "Age of the metric snapshot served on this scrape."
);
family!(
    SNAPSHOT_BUILD,
    "ci_exporter_snapshot_build_duration_seconds",
    Gauge,
    Some("seconds"),
    "Time the last snapshot rebuild took (off the scrape path)."
);
family!(
    SERIES,
    "ci_exporter_series",
    Gauge,
    None,
    "Series in the last snapshot by family, to watch cardinality."
);
family!(
    STORED_ROWS,
    "ci_exporter_stored_runs",
    Gauge,
    None,
    "Runs currently in the database."
);
family!(
    LAST_SYNC,
    "ci_exporter_last_sync_timestamp_seconds",
    Gauge,
    Some("seconds"),
    "When each forge scope (repository, project or group) last synced successfully (Unix time)."
);
family!(
    BUILD_INFO,
    "ci_exporter_build_info",
    Gauge,
    None,
    "Version of the running exporter (value is always 1)."
);
family!(
    SHARD_INFO,
    "ci_exporter_shard_info",
    Gauge,
    None,
    "This instance's shard (config shard = \"i/n\") of the repositories; 1/1 when not sharded (value is always 1)."
);

family!(
    FINGERPRINTS_NEW,
    "ci_failure_fingerprints_new",
    Counter,
    None,
    "Failure fingerprints seen for the first time in all history, by repository."
);
family!(
    TEST_FAILURE_RATIO,
    "ci_test_failure_ratio",
    Gauge,
    Some("ratio"),
    "Failed or errored executions / executions of a test over tests.window; worst tests per repository only."
);
family!(
    TEST_FLAKE_RATIO,
    "ci_test_flake_ratio",
    Gauge,
    Some("ratio"),
    "Flaky failures (failed runs on commits where the test also passed, and passes after an in-run retry) / runs of a test, over tests.window; worst flaky and broken tests per repository only."
);
family!(
    TEST_FLIP_RATIO,
    "ci_test_flip_ratio",
    Gauge,
    Some("ratio"),
    "Outcome changes between consecutive runs of a test / (runs - 1), over tests.window; worst flaky and broken tests per repository only."
);
family!(
    TESTS_BY_VERDICT,
    "ci_tests",
    Gauge,
    None,
    "Tests that ran in tests.window, by repository and verdict (healthy, flaky, broken, new)."
);
family!(
    SLO_TESTS,
    "ci_slo_tests",
    Gauge,
    None,
    "Tests judged by a per-test SLO (test_success) in a window, by repository and result: meeting (success ratio at least the objective) or breaching; tests with fewer than slo.test_min_runs runs are not counted."
);
family!(
    TESTS_NOT_EXPORTED,
    "ci_exporter_tests_not_exported",
    Gauge,
    None,
    "Flaky or broken tests left out of the per-test gauges by tests.worst_per_repository (per verdict), by repository."
);

/// Families with persisted state, in exposition order.
pub const PERSISTED: &[FamilyDef] = &[
    RUN_QUEUE,
    RUN_DURATION,
    RUNS,
    MERGED_CHANGES,
    RETRIES_TO_GREEN,
    SLO_EVENTS,
    FAILURES,
    FINGERPRINTS_NEW,
    DATA_QUALITY,
    BACKDATED,
];

/// Buckets of `ci_change_retries_to_green` (docs/design.md §4).
pub const RETRIES_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 5.0, 10.0];

/// Look a persisted family up by name.
pub fn persisted(name: &str) -> Option<FamilyDef> {
    PERSISTED.iter().copied().find(|f| f.name == name)
}
