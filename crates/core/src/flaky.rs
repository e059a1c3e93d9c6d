//! Flaky or broken? Per-test statistics over a window of executions.
//!
//! Pure functions (docs/design.md §6). A test is *flaky* when the same commit
//! shows both a pass and a failure (across runs and attempts), or when it
//! passed only after retries inside a run; it is *broken* when it always
//! fails; *new* when it has too few executions to tell. Skipped executions
//! are not executions.

use crate::model::TestOutcome;
use std::collections::BTreeMap;

/// One execution of a test, in chronological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub commit: String,
    pub outcome: TestOutcome,
    /// Retries inside the run before this outcome.
    pub retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Healthy,
    Flaky,
    Broken,
    /// Too few executions in the window to call it healthy or broken
    /// (`tests.min_runs`); a flaky commit makes a test flaky at once.
    New,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Healthy,
        Verdict::Flaky,
        Verdict::Broken,
        Verdict::New,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Flaky => "flaky",
            Verdict::Broken => "broken",
            Verdict::New => "new",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestStats {
    /// Passed, failed or errored executions.
    pub executions: u64,
    pub failures: u64,
    /// Distinct commits the test ran on.
    pub commits: u64,
    /// Commits on which the test was flaky.
    pub flaky_commits: u64,
    /// Flaky failures: failed executions on commits where the test also
    /// passed, and passes that needed an in-run retry (each hid a failure).
    pub flaky_failures: u64,
    /// Outcome changes (pass → fail or fail → pass) between consecutive executions.
    pub flips: u64,
    /// failures / executions.
    pub failure_ratio: f64,
    /// flaky failures / executions (at most 1): how often the test fails a
    /// run for no reason of the commit.
    pub flake_ratio: f64,
    /// flips / (executions − 1); 0 with fewer than two executions.
    pub flip_rate: f64,
    pub verdict: Verdict,
}

/// Fewest executions before a test without a flaky commit is called healthy
/// or broken, unless configured (`tests.min_runs`).
pub const DEFAULT_MIN_RUNS: u64 = 3;

fn failed(o: TestOutcome) -> bool {
    matches!(o, TestOutcome::Failed | TestOutcome::Errored)
}

/// Statistics of one test's executions (chronological), with the default
/// `min_runs`. `None` when there was no execution that passed or failed.
pub fn stats(executions: &[Execution]) -> Option<TestStats> {
    from_counts(counts(executions), DEFAULT_MIN_RUNS)
}

/// The counts of one test's executions (chronological).
pub fn counts(executions: &[Execution]) -> Counts {
    #[derive(Default)]
    struct Commit {
        passed: bool,
        failures: u64,
        retry_passes: u64,
    }
    let mut per_commit: BTreeMap<&str, Commit> = BTreeMap::new();
    let mut n = 0u64;
    let mut failures = 0u64;
    let mut flips = 0u64;
    let mut last: Option<bool> = None;
    for e in executions
        .iter()
        .filter(|e| e.outcome != TestOutcome::Skipped)
    {
        n += 1;
        let f = failed(e.outcome);
        failures += f as u64;
        if let Some(prev) = last
            && prev != f
        {
            flips += 1;
        }
        last = Some(f);
        let c = per_commit.entry(e.commit.as_str()).or_default();
        c.passed |= !f;
        c.failures += f as u64;
        c.retry_passes += (!f && e.retries > 0) as u64;
    }
    let flaky = |c: &&Commit| (c.passed && c.failures > 0) || c.retry_passes > 0;
    Counts {
        executions: n,
        failures,
        commits: per_commit.len() as u64,
        flaky_commits: per_commit.values().filter(flaky).count() as u64,
        flaky_failures: per_commit
            .values()
            .filter(flaky)
            .map(|c| c.failures + c.retry_passes)
            .sum(),
        flips,
    }
}

/// What a test's statistics are computed from: counted one execution at a
/// time, in order (here, or incrementally at ingest: crates/store/src/results.rs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub executions: u64,
    pub failures: u64,
    pub commits: u64,
    pub flaky_commits: u64,
    pub flaky_failures: u64,
    pub flips: u64,
}

impl Counts {
    /// The counts of two spans added up.
    pub fn plus(self, o: Counts) -> Counts {
        Counts {
            executions: self.executions + o.executions,
            failures: self.failures + o.failures,
            commits: self.commits + o.commits,
            flaky_commits: self.flaky_commits + o.flaky_commits,
            flaky_failures: self.flaky_failures + o.flaky_failures,
            flips: self.flips + o.flips,
        }
    }
}

/// Ratios and verdict from counts; `None` without an execution. A test is
/// flaky with any flaky commit; otherwise, with fewer than `min_runs`
/// executions it is new; broken when every execution failed; else healthy.
pub fn from_counts(c: Counts, min_runs: u64) -> Option<TestStats> {
    let n = c.executions;
    if n == 0 {
        return None;
    }
    let verdict = if c.flaky_commits > 0 {
        Verdict::Flaky
    } else if n < min_runs.max(1) {
        Verdict::New
    } else if c.failures == n {
        Verdict::Broken
    } else {
        Verdict::Healthy
    };
    Some(TestStats {
        executions: n,
        failures: c.failures,
        commits: c.commits,
        flaky_commits: c.flaky_commits,
        flaky_failures: c.flaky_failures,
        flips: c.flips,
        failure_ratio: c.failures as f64 / n as f64,
        // A window can start after a commit's first failures and still hold
        // the pass that made them flaky: never above 1.
        flake_ratio: (c.flaky_failures as f64 / n as f64).min(1.0),
        flip_rate: if n > 1 {
            c.flips as f64 / (n - 1) as f64
        } else {
            0.0
        },
        verdict,
    })
}

/// The order of the worst tests of one verdict (docs/metrics.md, *Ranking*),
/// worst first: flaky tests by flake ratio (how often a run fails for no
/// reason of its commit), those with fewer than `min_runs` executions after
/// the others, then by flaky failures; broken tests by executions (the
/// longer broken in the window first); others by failure ratio. Ties by
/// (context, test name).
pub fn rank(a: &TestStats, b: &TestStats, min_runs: u64) -> std::cmp::Ordering {
    let guarded = |s: &TestStats| s.executions >= min_runs;
    match a.verdict {
        Verdict::Flaky => guarded(b)
            .cmp(&guarded(a))
            .then(b.flake_ratio.total_cmp(&a.flake_ratio))
            .then(b.flaky_failures.cmp(&a.flaky_failures)),
        Verdict::Broken => b.executions.cmp(&a.executions),
        _ => b
            .failure_ratio
            .total_cmp(&a.failure_ratio)
            .then(b.executions.cmp(&a.executions)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TestOutcome::*;

    fn e(commit: &str, outcome: TestOutcome, retries: u32) -> Execution {
        Execution {
            commit: commit.into(),
            outcome,
            retries,
        }
    }

    #[test]
    fn verdicts_and_ratios_on_hand_computed_histories() {
        // (name, executions, (executions, failures, commits, flaky commits, flaky failures, flips), verdict)
        let cases = [
            (
                "always green",
                vec![e("a", Passed, 0), e("b", Passed, 0), e("c", Passed, 0)],
                (3, 0, 3, 0, 0, 0),
                Verdict::Healthy,
            ),
            (
                "pass and fail on the same commit is flaky",
                vec![e("a", Failed, 0), e("a", Passed, 0), e("b", Passed, 0)],
                (3, 1, 2, 1, 1, 1),
                Verdict::Flaky,
            ),
            (
                "passing only after an in-run retry is flaky, even with few runs",
                vec![e("a", Passed, 2), e("b", Passed, 0)],
                (2, 0, 2, 1, 1, 0),
                Verdict::Flaky,
            ),
            (
                "failing on one commit and passing on the next is not flaky",
                vec![e("a", Failed, 0), e("b", Passed, 0), e("c", Passed, 0)],
                (3, 1, 3, 0, 0, 1),
                Verdict::Healthy,
            ),
            (
                "always failing is broken",
                vec![e("a", Failed, 0), e("b", Errored, 0), e("c", Failed, 1)],
                (3, 3, 3, 0, 0, 0),
                Verdict::Broken,
            ),
            (
                "two failures are not yet broken",
                vec![e("a", Failed, 0), e("b", Failed, 0)],
                (2, 2, 2, 0, 0, 0),
                Verdict::New,
            ),
            (
                "skips are not executions",
                vec![e("a", Skipped, 0), e("a", Passed, 0), e("b", Skipped, 0)],
                (1, 0, 1, 0, 0, 0),
                Verdict::New,
            ),
            (
                "every failure of a commit that also passed is a flaky failure",
                vec![
                    e("a", Failed, 0),
                    e("a", Failed, 0),
                    e("a", Passed, 0),
                    e("b", Failed, 0),
                    e("c", Passed, 1),
                ],
                (5, 3, 3, 2, 3, 3),
                Verdict::Flaky,
            ),
        ];
        for (name, history, (n, fails, commits, flaky, flaky_failures, flips), verdict) in cases {
            let s = stats(&history).unwrap();
            assert_eq!(
                (
                    s.executions,
                    s.failures,
                    s.commits,
                    s.flaky_commits,
                    s.flaky_failures,
                    s.flips
                ),
                (n, fails, commits, flaky, flaky_failures, flips),
                "{name}"
            );
            assert_eq!(s.verdict, verdict, "{name}");
            assert_eq!(s.flake_ratio, flaky_failures as f64 / n as f64, "{name}");
            assert_eq!(s.failure_ratio, fails as f64 / n as f64, "{name}");
        }
    }

    #[test]
    fn flip_rate_counts_outcome_changes_between_consecutive_executions() {
        let h = [
            e("a", Passed, 0),
            e("b", Failed, 0),
            e("c", Passed, 0),
            e("d", Passed, 0),
            e("e", Failed, 0),
        ];
        let s = stats(&h).unwrap();
        assert_eq!(s.flips, 3);
        assert_eq!(s.flip_rate, 0.75);
        assert!(stats(&[e("a", Skipped, 0)]).is_none());
    }

    #[test]
    fn flaky_tests_rank_by_how_often_they_fail_a_run_and_the_guard_puts_few_runs_last() {
        let flaky = |n: u64, flaky_failures: u64| {
            from_counts(
                Counts {
                    executions: n,
                    failures: flaky_failures,
                    commits: 1,
                    flaky_commits: 1,
                    flaky_failures,
                    flips: 2 * flaky_failures,
                },
                DEFAULT_MIN_RUNS,
            )
            .unwrap()
        };
        // One commit, thousands of runs: 5.5% before 1.2% before 0.05%,
        // and a test with two runs (one failed) last despite its 50%.
        let mut tests = [
            flaky(2000, 24),
            flaky(2, 1),
            flaky(2000, 1),
            flaky(2000, 110),
        ];
        tests.sort_by(|a, b| rank(a, b, DEFAULT_MIN_RUNS));
        let order: Vec<(u64, u64)> = tests
            .iter()
            .map(|s| (s.executions, s.flaky_failures))
            .collect();
        assert_eq!(order, vec![(2000, 110), (2000, 24), (2000, 1), (2, 1)]);
    }
}
