//! Service-level objectives for CI: which events are good, which are bad, and
//! how ratios, error budgets and burn rates follow from counts of them.
//!
//! Pure functions only (docs/design.md §3). The store decides *when* an event is
//! counted (exactly once, when its outcome is final); this module decides
//! *what* the event is.

use crate::model::{MergeOutcome, RunState, TestOutcome, Trigger};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The objectives the exporter knows. Their ids are label values of
/// `ci_slo_*` metrics and keys in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SloId {
    FirstAttemptGreen,
    GreenWithinOneRetry,
    TestSuccess,
    MergedWithoutFailures,
    RunTime,
    QueueTime,
    RunsCompleted,
}

impl SloId {
    pub const ALL: [SloId; 7] = [
        SloId::FirstAttemptGreen,
        SloId::GreenWithinOneRetry,
        SloId::TestSuccess,
        SloId::MergedWithoutFailures,
        SloId::RunTime,
        SloId::QueueTime,
        SloId::RunsCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SloId::FirstAttemptGreen => "first_attempt_green",
            SloId::GreenWithinOneRetry => "green_within_one_retry",
            SloId::TestSuccess => "test_success",
            SloId::MergedWithoutFailures => "merged_without_failures",
            SloId::RunTime => "run_time",
            SloId::QueueTime => "queue_time",
            SloId::RunsCompleted => "runs_completed",
        }
    }

    /// The objective a team starts with (docs/design.md §3).
    pub fn default_objective(self) -> f64 {
        match self {
            SloId::FirstAttemptGreen => 0.75,
            SloId::TestSuccess => 0.90,
            _ => 0.95,
        }
    }

    /// One sentence for help texts and the UI.
    pub fn description(self) -> &'static str {
        match self {
            SloId::FirstAttemptGreen => {
                "merged changes whose every required context passed on attempt 0"
            }
            SloId::GreenWithinOneRetry => "merged changes green with at most one retry",
            SloId::TestSuccess => {
                "tests (with at least slo.test_min_runs runs in the window) whose runs passed at least the objective's share of the time"
            }
            SloId::MergedWithoutFailures => "merged changes whose final runs were all green",
            SloId::RunTime => "finished runs that ran within the run-time threshold",
            SloId::QueueTime => "started runs that waited in the queue within the threshold",
            SloId::RunsCompleted => {
                "scheduled runs that finished with a reported result (not lost or aborted)"
            }
        }
    }
}

impl fmt::Display for SloId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SloId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SloId::ALL
            .into_iter()
            .find(|id| id.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = SloId::ALL.iter().map(|i| i.as_str()).collect();
                format!("unknown SLO {s:?}, expected one of: {}", known.join(", "))
            })
    }
}

/// One context's run on a change's head commit, as the merge evaluation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextAttempt {
    pub context: String,
    /// The attempt group (a GitHub workflow run; empty for one sequence per context).
    pub group: String,
    pub attempt: u32,
    pub state: RunState,
}

/// How a merged change fared, decided from its head commit's runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeEvaluation {
    pub outcome: MergeOutcome,
    /// Retries over all required contexts: the sum of each context's final attempt number.
    pub retries: u32,
    /// Required contexts with no run at all (each makes the change `merged_red`).
    pub missing_contexts: Vec<String>,
}

/// Decide a merged change's outcome.
///
/// The contexts that matter are `required` when configured, otherwise every
/// context seen on the head commit. For each, the run with the highest attempt
/// number is final, whatever order the attempts arrived in (several runs with
/// that number, from distinct source ids, are all final). The change is green
/// when every final run is green; a required context without any run, or whose
/// final run is not green (including still pending), makes it `merged_red`.
/// Retries are counted as the sum of final attempt numbers. Returns `None` when
/// there is nothing to judge (no required contexts and no runs).
///
/// A context that ran in several attempt groups on the commit (a push and a
/// pull_request workflow run) has a final run per group: it is green when all
/// of them are, and its retries are the highest final attempt number.
pub fn evaluate_merge(required: &[String], runs: &[ContextAttempt]) -> Option<MergeEvaluation> {
    // Per (context, group): (highest attempt, every run with it green). Runs
    // with distinct source ids may share an attempt number (one revision
    // tested in two Cockpit projects, two GitLab pipelines of one commit):
    // all of them are final.
    let mut group_finals: BTreeMap<(&str, &str), (u32, bool)> = BTreeMap::new();
    for run in runs {
        let green = run.state.is_green();
        group_finals
            .entry((run.context.as_str(), run.group.as_str()))
            .and_modify(|(attempt, all_green)| {
                if run.attempt > *attempt {
                    (*attempt, *all_green) = (run.attempt, green);
                } else if run.attempt == *attempt {
                    *all_green &= green;
                }
            })
            .or_insert((run.attempt, green));
    }
    // Per context: (highest final attempt, every group's final runs green).
    let mut finals: BTreeMap<&str, (u32, bool)> = BTreeMap::new();
    for ((context, _), (attempt, green)) in group_finals {
        let entry = finals.entry(context).or_insert((0, true));
        entry.0 = entry.0.max(attempt);
        entry.1 &= green;
    }
    let contexts: Vec<&str> = if required.is_empty() {
        finals.keys().copied().collect()
    } else {
        required.iter().map(String::as_str).collect()
    };
    if contexts.is_empty() {
        return None;
    }
    let mut retries = 0;
    let mut all_green = true;
    let mut missing_contexts = Vec::new();
    for context in contexts {
        match finals.get(context) {
            Some((attempt, green)) => {
                retries += attempt;
                all_green &= green;
            }
            None => {
                all_green = false;
                missing_contexts.push(context.to_string());
            }
        }
    }
    let outcome = match (all_green, retries) {
        (false, _) => MergeOutcome::MergedRed,
        (true, 0) => MergeOutcome::GreenFirstAttempt,
        (true, 1) => MergeOutcome::GreenAfterOneRetry,
        (true, _) => MergeOutcome::GreenAfterMoreRetries,
    };
    Some(MergeEvaluation {
        outcome,
        retries,
        missing_contexts,
    })
}

/// The SLO events one merged change contributes: (slo, good).
pub fn merge_events(outcome: MergeOutcome) -> [(SloId, bool); 3] {
    use MergeOutcome::*;
    [
        (SloId::FirstAttemptGreen, outcome == GreenFirstAttempt),
        (
            SloId::GreenWithinOneRetry,
            matches!(outcome, GreenFirstAttempt | GreenAfterOneRetry),
        ),
        (SloId::MergedWithoutFailures, outcome != MergedRed),
    ]
}

/// Thresholds for the per-run SLOs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunThresholds {
    pub max_queue_seconds: f64,
    pub max_run_seconds: f64,
}

impl Default for RunThresholds {
    fn default() -> Self {
        RunThresholds {
            max_queue_seconds: 300.0,
            max_run_seconds: 3600.0,
        }
    }
}

/// The queue-time event of a run that started: good when it waited at most the threshold.
pub fn queue_event(queue_seconds: f64, t: RunThresholds) -> (SloId, bool) {
    (SloId::QueueTime, queue_seconds <= t.max_queue_seconds)
}

/// The events of a run that reached a terminal state.
pub fn finished_run_events(
    state: RunState,
    trigger: Trigger,
    run_seconds: Option<f64>,
    t: RunThresholds,
) -> Vec<(SloId, bool)> {
    let mut events = Vec::with_capacity(2);
    if let Some(seconds) = run_seconds {
        events.push((SloId::RunTime, seconds <= t.max_run_seconds));
    }
    if trigger == Trigger::Schedule {
        events.push((SloId::RunsCompleted, state.reported_result()));
    }
    events
}

/// The `slo` label under which the execution-level events are exported
/// (`ci_slo_events_total{slo="test_executions"}`): every test execution,
/// good when it passed. The store keeps them under their former id,
/// `test_success` (its `test_events` rows, hourly rollups and persisted
/// counters); test_success itself is judged per test ([`test_success_counts`]).
pub const TEST_EXECUTIONS: &str = "test_executions";

/// The `slo` label value a stored SLO event series is exported under: the
/// execution events stored as `test_success` are `test_executions`.
pub fn exported_slo(stored: &str) -> &str {
    if stored == SloId::TestSuccess.as_str() {
        TEST_EXECUTIONS
    } else {
        stored
    }
}

/// The execution event of one test result (exported as `test_executions`,
/// stored under `test_success`); skipped tests are not events.
pub fn test_event(outcome: TestOutcome) -> Option<(SloId, bool)> {
    match outcome {
        TestOutcome::Passed => Some((SloId::TestSuccess, true)),
        TestOutcome::Failed | TestOutcome::Errored => Some((SloId::TestSuccess, false)),
        TestOutcome::Skipped => None,
    }
}

/// Good and total events over some window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventCounts {
    pub good: u64,
    pub total: u64,
}

impl EventCounts {
    pub fn bad(self) -> u64 {
        self.total - self.good.min(self.total)
    }

    /// good / total; `None` for an empty window (no events is not 100%, nor 0%).
    pub fn sli(self) -> Option<f64> {
        (self.total > 0).then(|| self.good.min(self.total) as f64 / self.total as f64)
    }

    /// (bad / total) / (1 − objective); `None` for an empty window.
    pub fn burn_rate(self, objective: f64) -> Option<f64> {
        let budget = 1.0 - objective;
        (self.total > 0 && budget > 0.0).then(|| (self.bad() as f64 / self.total as f64) / budget)
    }

    /// 1 − consumed budget over the SLO period. An empty period has its whole
    /// budget; an overspent budget is negative (how far over, not clamped).
    pub fn budget_remaining(self, objective: f64) -> f64 {
        1.0 - self.burn_rate(objective).unwrap_or(0.0)
    }

    /// What a window of these events says against `objective`: the numbers
    /// `/metrics` exports (`ci_slo_window_events`, `ci_slo_sli_ratio`,
    /// `ci_slo_burn_rate`) and the UI shows for each window.
    pub fn window_status(self, objective: f64) -> WindowStatus {
        WindowStatus {
            good: self.good.min(self.total),
            total: self.total,
            sli: self.sli(),
            burn_rate: self.burn_rate(objective),
        }
    }
}

/// An SLO window's events, SLI and burn rate ([`EventCounts::window_status`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStatus {
    pub good: u64,
    pub total: u64,
    /// `None` for an empty window.
    pub sli: Option<f64>,
    /// `None` for an empty window (or an objective of 1).
    pub burn_rate: Option<f64>,
}

/// Default of `slo.test_min_runs`: a test's success ratio over fewer runs
/// says little (one failure in 5 runs is 80%).
pub const DEFAULT_TEST_MIN_RUNS: u64 = 20;

/// The runs of one test in a window: passed and failed or errored
/// executions (skipped ones are not runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestRuns {
    pub runs: u64,
    pub passes: u64,
}

impl TestRuns {
    /// passes / runs; `None` without a run.
    pub fn success_ratio(self) -> Option<f64> {
        (self.runs > 0).then(|| self.passes.min(self.runs) as f64 / self.runs as f64)
    }

    /// How the test fares against the per-test threshold of test_success:
    /// `None` (not evaluated) with fewer than `min_runs` runs (and without
    /// any run), else `Some(true)` when its success ratio is at least
    /// `threshold` (meeting) and `Some(false)` when below (breaching).
    pub fn meets(self, min_runs: u64, threshold: f64) -> Option<bool> {
        if self.runs < min_runs.max(1) {
            return None;
        }
        // passes / runs is correctly rounded (18 / 20 is the double 0.9);
        // the tolerance keeps a ratio equal to the threshold from losing to
        // the threshold's own rounding.
        self.success_ratio().map(|r| r + 1e-12 >= threshold)
    }
}

/// The first UTC day (Unix ms / 86,400,000) of a per-test window of
/// `window_ms` ending at `now_ms`: the day `now − window` falls in counts
/// whole, as for every per-test statistic (they are kept per UTC day).
pub fn first_test_day(now_ms: i64, window_ms: i64) -> i64 {
    (now_ms - window_ms).div_euclid(86_400_000)
}

/// The test_success events of a window: each test evaluated in it (at
/// least `min_runs` runs) is one event, good when its success ratio is at
/// least `threshold` (the objective). good = tests meeting, total = tests
/// evaluated, bad = tests breaching; the SLI, burn rate and budget follow as
/// for any SLO ([`EventCounts`]): burn rate = (breaching / evaluated) /
/// (1 − objective).
pub fn test_success_counts(
    tests: impl IntoIterator<Item = TestRuns>,
    min_runs: u64,
    threshold: f64,
) -> EventCounts {
    tests
        .into_iter()
        .filter_map(|t| t.meets(min_runs, threshold))
        .fold(EventCounts::default(), |c, good| EventCounts {
            good: c.good + u64::from(good),
            total: c.total + 1,
        })
}

/// test_success over several windows at once, overall and per repository.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TestSuccessByWindow {
    /// One entry per window: tests meeting (good) and evaluated (total).
    pub all: Vec<EventCounts>,
    /// The same per repository, for every repository with a test given
    /// (also where none is evaluated: 0 meeting, 0 breaching).
    pub by_repository: BTreeMap<String, Vec<EventCounts>>,
}

/// test_success in each of `windows` windows from each test's (repository,
/// runs in each window): the one rule of `/metrics` (`ci_slo_*`,
/// `ci_slo_tests`), the UI and `backfill-openmetrics` (`ci_slo_tests`).
/// A test is an event of a window when it has at least `min_runs` runs in
/// it, good when its success ratio is at least `threshold`
/// ([`TestRuns::meets`], [`test_success_counts`]).
pub fn test_success_by_window<'a>(
    tests: impl IntoIterator<Item = (&'a str, &'a [TestRuns])>,
    windows: usize,
    min_runs: u64,
    threshold: f64,
) -> TestSuccessByWindow {
    let mut out = TestSuccessByWindow {
        all: vec![EventCounts::default(); windows],
        by_repository: BTreeMap::new(),
    };
    for (repository, runs) in tests {
        let repo = out
            .by_repository
            .entry(repository.to_string())
            .or_insert_with(|| vec![EventCounts::default(); windows]);
        for (i, r) in runs.iter().take(windows).enumerate() {
            if let Some(good) = r.meets(min_runs, threshold) {
                for c in [&mut out.all[i], &mut repo[i]] {
                    c.good += u64::from(good);
                    c.total += 1;
                }
            }
        }
    }
    out
}

/// When a budget in the red recovers if no further bad events arrive.
///
/// `buckets` are the events of the rolling period that ends now, oldest first,
/// each stamped with the start of its bucket (`bucket_ms` long). An event
/// leaves the window `period_ms` after it happened; counting it as leaving at
/// the end of its bucket keeps the answer on the safe side (never early).
/// Returns `None` when the budget is not overspent (nothing to recover), else
/// the first time at which the events still inside the window leave a budget
/// of at least zero (bad / total ≤ 1 − objective), or an empty window. Good
/// events that arrive meanwhile would only bring the date forward.
pub fn budget_recovery_ms(
    buckets: &[(i64, EventCounts)],
    period_ms: i64,
    bucket_ms: i64,
    objective: f64,
) -> Option<i64> {
    let mut good: u64 = buckets.iter().map(|(_, c)| c.good.min(c.total)).sum();
    let mut total: u64 = buckets.iter().map(|(_, c)| c.total).sum();
    let within = |good: u64, total: u64| {
        let c = EventCounts { good, total };
        if objective >= 1.0 {
            c.bad() == 0
        } else {
            c.budget_remaining(objective) >= -1e-12
        }
    };
    if within(good, total) {
        return None;
    }
    for (start, c) in buckets {
        good -= c.good.min(c.total);
        total -= c.total;
        if total == 0 || within(good, total) {
            return Some(start + bucket_ms + period_ms);
        }
    }
    None
}

/// The events of the buckets starting in `[from_ms, to_ms)` (`buckets` oldest first).
pub fn sum_between(buckets: &[(i64, EventCounts)], from_ms: i64, to_ms: i64) -> EventCounts {
    let lo = buckets.partition_point(|(h, _)| *h < from_ms);
    let hi = buckets.partition_point(|(h, _)| *h < to_ms);
    buckets[lo..hi.max(lo)]
        .iter()
        .fold(EventCounts::default(), |a, (_, c)| EventCounts {
            good: a.good + c.good.min(c.total),
            total: a.total + c.total,
        })
}

/// Whether these events overspend the budget of `objective`.
pub fn overspent(c: EventCounts, objective: f64) -> bool {
    if objective >= 1.0 {
        c.bad() > 0
    } else {
        c.budget_remaining(objective) < -1e-12
    }
}

/// The rolling period that ends at `t_ms`: the buckets starting from the
/// bucket that holds `t_ms - period_ms` up to (not including) `t_ms`.
pub fn rolling_at(
    buckets: &[(i64, EventCounts)],
    t_ms: i64,
    period_ms: i64,
    bucket_ms: i64,
) -> EventCounts {
    let from = (t_ms - period_ms).div_euclid(bucket_ms) * bucket_ms;
    sum_between(buckets, from, t_ms)
}

/// Since when a budget has been overspent without a break.
///
/// `buckets` are oldest first, each stamped with the start of its bucket, and
/// should reach a period further back than the one that ends at `now_ms`. The
/// rolling period is evaluated at `now_ms` and at every bucket boundary before
/// it; the answer is the start of the bucket whose events overspent the budget
/// the last time it went from within to over, or the earliest boundary at
/// which a whole period is known when it was overspent all along. `None` when
/// the budget is not overspent at `now_ms`.
pub fn exhausted_since_ms(
    buckets: &[(i64, EventCounts)],
    period_ms: i64,
    bucket_ms: i64,
    now_ms: i64,
    objective: f64,
) -> Option<i64> {
    if !overspent(rolling_at(buckets, now_ms, period_ms, bucket_ms), objective) {
        return None;
    }
    let earliest = buckets.first().map_or(now_ms, |(h, _)| *h) + period_ms;
    let mut t = now_ms.div_euclid(bucket_ms) * bucket_ms;
    let mut since = t;
    while t - bucket_ms >= earliest
        && overspent(rolling_at(buckets, t, period_ms, bucket_ms), objective)
    {
        t -= bucket_ms;
        since = t;
    }
    Some(since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MergeOutcome::*;
    use RunState::*;

    #[test]
    fn test_success_by_window_counts_evaluated_tests_overall_and_per_repository() {
        let r = |runs, passes| TestRuns { runs, passes };
        let a1 = [r(20, 20), r(5, 5)];
        let a2 = [r(20, 10), r(25, 25)];
        let b1 = [r(3, 0), r(3, 0)];
        let got =
            test_success_by_window([("a", &a1[..]), ("a", &a2[..]), ("b", &b1[..])], 2, 20, 0.9);
        let c = |good, total| EventCounts { good, total };
        assert_eq!(got.all, vec![c(1, 2), c(1, 1)]);
        assert_eq!(got.by_repository["a"], vec![c(1, 2), c(1, 1)]);
        assert_eq!(got.by_repository["b"], vec![c(0, 0), c(0, 0)]);
        assert_eq!(
            got.all[0],
            test_success_counts([a1[0], a2[0], b1[0]], 20, 0.9)
        );
    }

    #[test]
    fn an_overspent_budget_says_since_when() {
        const H: i64 = 3_600_000;
        let c = |good, total| EventCounts { good, total };
        // 99% over a 10-hour period: 100 good events an hour for 20 hours,
        // then at hour 20 three bad ones among 100 (30 allowed per 1000).
        let mut b: Vec<(i64, EventCounts)> = (0..20).map(|h| (h * H, c(100, 100))).collect();
        b.push((20 * H, c(60, 100)));
        b.push((21 * H, c(100, 100)));
        let now = 22 * H + H / 2;
        // At 22:30 the period [12:00, 22:30) holds 40 bad of 1000 events.
        assert!(overspent(rolling_at(&b, now, 10 * H, H), 0.99));
        assert_eq!(exhausted_since_ms(&b, 10 * H, H, now, 0.99), Some(20 * H));
        // Within budget: no date.
        assert_eq!(exhausted_since_ms(&b[..20], 10 * H, H, 20 * H, 0.99), None);
        // Overspent all along: the earliest boundary with a whole period.
        let bad: Vec<(i64, EventCounts)> = (0..20).map(|h| (h * H, c(0, 10))).collect();
        assert_eq!(
            exhausted_since_ms(&bad, 10 * H, H, 20 * H, 0.99),
            Some(10 * H)
        );
        // A break in between: since the last crossing.
        let mut gap = b.clone();
        gap[5] = (5 * H, c(50, 100));
        assert_eq!(exhausted_since_ms(&gap, 10 * H, H, now, 0.99), Some(20 * H));
        assert_eq!(sum_between(&b, 19 * H, 21 * H), c(160, 200));
        assert_eq!(sum_between(&b, 30 * H, 10 * H), c(0, 0));
    }

    fn run(context: &str, attempt: u32, state: RunState) -> ContextAttempt {
        ContextAttempt {
            context: context.into(),
            group: String::new(),
            attempt,
            state,
        }
    }

    /// A run of `context` in attempt group `group` (a workflow run).
    fn grun(context: &str, group: &str, attempt: u32, state: RunState) -> ContextAttempt {
        ContextAttempt {
            group: group.into(),
            ..run(context, attempt, state)
        }
    }

    fn req(contexts: &[&str]) -> Vec<String> {
        contexts.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn merge_outcomes_follow_the_final_attempt_of_every_required_context() {
        type Case = (
            &'static str,
            Vec<String>,
            Vec<ContextAttempt>,
            Option<(MergeOutcome, u32)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no contexts and no runs is not judged",
                req(&[]),
                vec![],
                None,
            ),
            (
                "all contexts green on attempt 0",
                req(&[]),
                vec![run("a", 0, Success), run("b", 0, Success)],
                Some((GreenFirstAttempt, 0)),
            ),
            (
                "one retry made it green",
                req(&[]),
                vec![
                    run("a", 0, Failure),
                    run("a", 1, Success),
                    run("b", 0, Success),
                ],
                Some((GreenAfterOneRetry, 1)),
            ),
            (
                "retries in two contexts add up",
                req(&[]),
                vec![
                    run("a", 1, Success),
                    run("b", 1, Success),
                    run("a", 0, Error),
                    run("b", 0, Failure),
                ],
                Some((GreenAfterMoreRetries, 2)),
            ),
            (
                "attempts arriving out of order: the highest attempt is final",
                req(&[]),
                vec![
                    run("a", 2, Success),
                    run("a", 0, Failure),
                    run("a", 1, Failure),
                ],
                Some((GreenAfterMoreRetries, 2)),
            ),
            (
                "final attempt red is merged red",
                req(&[]),
                vec![run("a", 0, Success), run("a", 1, Failure)],
                Some((MergedRed, 1)),
            ),
            (
                "a missing required context is merged red",
                req(&["a", "b"]),
                vec![run("a", 0, Success)],
                Some((MergedRed, 0)),
            ),
            (
                "contexts that are not required do not count",
                req(&["a"]),
                vec![run("a", 0, Success), run("optional", 0, Failure)],
                Some((GreenFirstAttempt, 0)),
            ),
            (
                "a still-running final attempt is not green",
                req(&[]),
                vec![run("a", 0, Running)],
                Some((MergedRed, 0)),
            ),
            (
                "skipped counts as green",
                req(&[]),
                vec![run("a", 0, Skipped), run("b", 0, Success)],
                Some((GreenFirstAttempt, 0)),
            ),
            (
                "a push run and a pull_request run both green on attempt 0",
                req(&[]),
                vec![grun("a", "11", 0, Success), grun("a", "12", 0, Success)],
                Some((GreenFirstAttempt, 0)),
            ),
            (
                "one workflow run red is merged red, whatever the other did",
                req(&["a"]),
                vec![grun("a", "11", 0, Success), grun("a", "12", 0, Failure)],
                Some((MergedRed, 0)),
            ),
            (
                "a re-run in one workflow run is one retry of the context, not more",
                req(&[]),
                vec![
                    grun("a", "11", 0, Success),
                    grun("a", "12", 0, Failure),
                    grun("a", "12", 1, Success),
                ],
                Some((GreenAfterOneRetry, 1)),
            ),
            (
                "two runs with one attempt number (distinct source ids): both are final",
                req(&[]),
                vec![run("a", 0, Success), run("a", 0, Failure)],
                Some((MergedRed, 0)),
            ),
            (
                "in either order",
                req(&[]),
                vec![run("a", 0, Failure), run("a", 0, Success)],
                Some((MergedRed, 0)),
            ),
            (
                "a higher attempt still decides over runs sharing a lower one",
                req(&[]),
                vec![
                    run("a", 0, Failure),
                    run("a", 0, Success),
                    run("a", 1, Success),
                ],
                Some((GreenAfterOneRetry, 1)),
            ),
        ];
        for (name, required, runs, want) in cases {
            let got = evaluate_merge(&required, &runs).map(|e| (e.outcome, e.retries));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_missing_context_is_named() {
        let e = evaluate_merge(&req(&["a", "b", "c"]), &[run("b", 0, Success)]).unwrap();
        assert_eq!(e.missing_contexts, vec!["a".to_string(), "c".to_string()]);
    }

    #[test]
    fn merge_outcomes_map_to_the_three_change_slos() {
        let table = [
            (GreenFirstAttempt, [true, true, true]),
            (GreenAfterOneRetry, [false, true, true]),
            (GreenAfterMoreRetries, [false, false, true]),
            (MergedRed, [false, false, false]),
        ];
        for (outcome, want) in table {
            let got: Vec<bool> = merge_events(outcome).iter().map(|(_, g)| *g).collect();
            assert_eq!(got, want, "{outcome}");
        }
    }

    #[test]
    fn run_events_use_the_thresholds_inclusively() {
        let t = RunThresholds::default();
        assert_eq!(queue_event(300.0, t), (SloId::QueueTime, true));
        assert_eq!(queue_event(300.5, t), (SloId::QueueTime, false));
        assert_eq!(
            finished_run_events(Failure, Trigger::PullRequest, Some(3600.0), t),
            vec![(SloId::RunTime, true)]
        );
        assert_eq!(
            finished_run_events(Error, Trigger::Schedule, Some(4000.0), t),
            vec![(SloId::RunTime, false), (SloId::RunsCompleted, false)]
        );
        assert_eq!(
            finished_run_events(Failure, Trigger::Schedule, None, t),
            vec![(SloId::RunsCompleted, true)],
            "a failed nightly still reported a result; no run time without a start"
        );
        assert_eq!(test_event(TestOutcome::Skipped), None);
        assert_eq!(
            test_event(TestOutcome::Errored),
            Some((SloId::TestSuccess, false))
        );
        assert_eq!(exported_slo("test_success"), "test_executions");
        assert_eq!(exported_slo("queue_time"), "queue_time");
    }

    #[test]
    fn a_test_is_evaluated_from_min_runs_and_meets_at_the_threshold_inclusively() {
        let t = |runs, passes| TestRuns { runs, passes };
        // (runs, passes, verdict) with min_runs 20 and a threshold of 0.9.
        let cases = [
            (19, 19, None),
            (0, 0, None),
            (20, 18, Some(true)),
            (20, 17, Some(false)),
            (40, 20, Some(false)),
            (30, 27, Some(true)),
            (1000, 899, Some(false)),
            (1000, 900, Some(true)),
        ];
        for (runs, passes, want) in cases {
            assert_eq!(t(runs, passes).meets(20, 0.9), want, "{passes}/{runs}");
        }
        assert_eq!(t(3, 1).success_ratio(), Some(1.0 / 3.0));
        assert_eq!(t(0, 0).success_ratio(), None);
        // min_runs 0 still needs a run.
        assert_eq!(t(0, 0).meets(0, 0.9), None);
        assert_eq!(t(1, 1).meets(0, 0.9), Some(true));
    }

    #[test]
    fn test_success_counts_tests_not_executions_and_budgets_the_breaching_share() {
        let t = |runs, passes| TestRuns { runs, passes };
        // 19 tests always passing and one passing half the time, each run
        // 20 times: 370 of 400 executions passed (92.5%, above 90%), but one
        // test in 20 breaches: 5% of the tests, half the 10% budget.
        let mut tests: Vec<TestRuns> = (0..19).map(|_| t(20, 20)).collect();
        tests.push(t(20, 10));
        // A test with too few runs is not evaluated, whatever its ratio.
        tests.push(t(5, 0));
        let c = test_success_counts(tests, 20, 0.9);
        assert_eq!(
            c,
            EventCounts {
                good: 19,
                total: 20
            }
        );
        assert_eq!(c.bad(), 1);
        assert!((c.burn_rate(0.9).unwrap() - 0.5).abs() < 1e-9);
        assert!((c.budget_remaining(0.9) - 0.5).abs() < 1e-9);
        // Three breaching tests of 20: 15% breach, burn 1.5, budget overspent.
        let mut worse: Vec<TestRuns> = (0..17).map(|_| t(20, 20)).collect();
        worse.extend([t(20, 17), t(50, 40), t(25, 0)]);
        let c = test_success_counts(worse, 20, 0.9);
        assert_eq!(
            c,
            EventCounts {
                good: 17,
                total: 20
            }
        );
        assert!((c.burn_rate(0.9).unwrap() - 1.5).abs() < 1e-9);
        assert!((c.budget_remaining(0.9) + 0.5).abs() < 1e-9);
        // No evaluated test: no SLI, no burn rate, the whole budget.
        let none = test_success_counts([t(3, 0)], 20, 0.9);
        assert_eq!(none, EventCounts::default());
        assert_eq!((none.sli(), none.burn_rate(0.9)), (None, None));
        assert_eq!(none.budget_remaining(0.9), 1.0);
    }

    #[test]
    fn ratios_on_hand_computed_windows() {
        let cases = [
            // (good, total, objective, sli, burn, remaining)
            (0, 0, 0.95, None, None, 1.0),
            (95, 100, 0.95, Some(0.95), Some(1.0), 0.0),
            (99, 100, 0.95, Some(0.99), Some(0.2), 0.8),
            (3, 4, 0.75, Some(0.75), Some(1.0), 0.0),
            (0, 10, 0.9, Some(0.0), Some(10.0), -9.0),
        ];
        for (good, total, objective, sli, burn, remaining) in cases {
            let c = EventCounts { good, total };
            assert_eq!(c.sli(), sli, "sli {good}/{total}");
            match (c.burn_rate(objective), burn) {
                (Some(a), Some(b)) => {
                    assert!((a - b).abs() < 1e-9, "burn {good}/{total}: {a} != {b}")
                }
                (a, b) => assert_eq!(a, b, "burn {good}/{total}"),
            }
            assert!(
                (c.budget_remaining(objective) - remaining).abs() < 1e-9,
                "remaining {good}/{total}"
            );
        }
    }

    #[test]
    fn a_budget_in_the_red_recovers_when_enough_bad_events_age_out() {
        let h = 3_600_000;
        let period = 10 * h;
        let c = |good, total| EventCounts { good, total };
        // Within budget: nothing to recover.
        assert_eq!(
            budget_recovery_ms(&[(0, c(95, 100))], period, h, 0.95),
            None
        );
        assert_eq!(budget_recovery_ms(&[], period, h, 0.95), None);
        // 10 bad at hour 0, then 100 good at hour 5: 100/110 < 0.95. Once hour 0
        // leaves (at 1h + 10h), 100/100 remains.
        assert_eq!(
            budget_recovery_ms(&[(0, c(0, 10)), (5 * h, c(100, 100))], period, h, 0.95),
            Some(11 * h)
        );
        // Good events age out first and make it worse; the bad ones at hour 3
        // must leave too: recovery only when the window is empty.
        assert_eq!(
            budget_recovery_ms(&[(0, c(50, 50)), (3 * h, c(0, 5))], period, h, 0.95),
            Some(14 * h)
        );
        // Several bad hours: recovered once the ratio is back within 1 − objective.
        // 0.9 objective: after hour 0 leaves: 2 bad / 20 = 0.1 → within.
        assert_eq!(
            budget_recovery_ms(
                &[(0, c(0, 5)), (h, c(8, 10)), (2 * h, c(10, 10))],
                period,
                h,
                0.9
            ),
            Some(11 * h)
        );
        // An objective of 1: any bad event is over budget until it leaves.
        assert_eq!(
            budget_recovery_ms(&[(0, c(9, 10)), (h, c(10, 10))], period, h, 1.0),
            Some(11 * h)
        );
    }

    #[test]
    fn slo_ids_parse_and_reject_typos() {
        for id in SloId::ALL {
            assert_eq!(id.as_str().parse::<SloId>().unwrap(), id);
        }
        assert!("queue".parse::<SloId>().unwrap_err().contains("queue_time"));
    }
}
