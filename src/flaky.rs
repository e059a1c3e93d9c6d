//! Flaky or broken? Per-test statistics over a window of executions.
//!
//! Pure functions (docs/design.md §6). A test is *flaky* when the same commit
//! shows both a pass and a failure (across runs and attempts), or when it
//! passed only after retries inside a run; it is *broken* when it always
//! fails. Skipped executions are not executions.

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
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Flaky => "flaky",
            Verdict::Broken => "broken",
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
    /// Outcome changes (pass → fail or fail → pass) between consecutive executions.
    pub flips: u64,
    /// failures / executions.
    pub failure_ratio: f64,
    /// flaky commits / commits.
    pub flake_ratio: f64,
    /// flips / (executions − 1); 0 with fewer than two executions.
    pub flip_rate: f64,
    pub verdict: Verdict,
}

/// Fewest executions before an always-failing test is called broken.
pub const MIN_EXECUTIONS_FOR_BROKEN: u64 = 2;

fn failed(o: TestOutcome) -> bool {
    matches!(o, TestOutcome::Failed | TestOutcome::Errored)
}

/// Statistics of one test's executions (chronological). `None` when there
/// was no execution that passed or failed.
pub fn stats(executions: &[Execution]) -> Option<TestStats> {
    let mut per_commit: BTreeMap<&str, (bool, bool, bool)> = BTreeMap::new(); // (passed, failed, passed on retry)
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
        c.0 |= !f;
        c.1 |= f;
        c.2 |= !f && e.retries > 0;
    }
    from_counts(Counts {
        executions: n,
        failures,
        commits: per_commit.len() as u64,
        flaky_commits: per_commit
            .values()
            .filter(|(p, f, r)| (*p && *f) || *r)
            .count() as u64,
        flips,
    })
}

/// What a test's statistics are computed from: counted one execution at a
/// time, in order (here, or incrementally at ingest: src/store/results.rs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub executions: u64,
    pub failures: u64,
    pub commits: u64,
    pub flaky_commits: u64,
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
            flips: self.flips + o.flips,
        }
    }
}

/// Ratios and verdict from counts; `None` without an execution.
pub fn from_counts(c: Counts) -> Option<TestStats> {
    let n = c.executions;
    if n == 0 {
        return None;
    }
    let verdict = if c.flaky_commits > 0 {
        Verdict::Flaky
    } else if c.failures == n && n >= MIN_EXECUTIONS_FOR_BROKEN {
        Verdict::Broken
    } else {
        Verdict::Healthy
    };
    Some(TestStats {
        executions: n,
        failures: c.failures,
        commits: c.commits,
        flaky_commits: c.flaky_commits,
        flips: c.flips,
        failure_ratio: c.failures as f64 / n as f64,
        // A window can start after a commit's first result and still hold
        // its flaky one: never above 1.
        flake_ratio: if c.commits == 0 {
            if c.flaky_commits > 0 { 1.0 } else { 0.0 }
        } else {
            (c.flaky_commits as f64 / c.commits as f64).min(1.0)
        },
        flip_rate: if n > 1 {
            c.flips as f64 / (n - 1) as f64
        } else {
            0.0
        },
        verdict,
    })
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
        // (name, executions, (executions, failures, commits, flaky commits, flips), verdict)
        let cases = [
            (
                "always green",
                vec![e("a", Passed, 0), e("b", Passed, 0)],
                (2, 0, 2, 0, 0),
                Verdict::Healthy,
            ),
            (
                "pass and fail on the same commit is flaky",
                vec![e("a", Failed, 0), e("a", Passed, 0), e("b", Passed, 0)],
                (3, 1, 2, 1, 1),
                Verdict::Flaky,
            ),
            (
                "passing only after an in-run retry is flaky",
                vec![e("a", Passed, 2), e("b", Passed, 0)],
                (2, 0, 2, 1, 0),
                Verdict::Flaky,
            ),
            (
                "failing on one commit and passing on the next is not flaky",
                vec![e("a", Failed, 0), e("b", Passed, 0)],
                (2, 1, 2, 0, 1),
                Verdict::Healthy,
            ),
            (
                "always failing is broken",
                vec![e("a", Failed, 0), e("b", Errored, 0), e("c", Failed, 1)],
                (3, 3, 3, 0, 0),
                Verdict::Broken,
            ),
            (
                "one failure is not yet broken",
                vec![e("a", Failed, 0)],
                (1, 1, 1, 0, 0),
                Verdict::Healthy,
            ),
            (
                "skips are not executions",
                vec![e("a", Skipped, 0), e("a", Passed, 0), e("b", Skipped, 0)],
                (1, 0, 1, 0, 0),
                Verdict::Healthy,
            ),
        ];
        for (name, history, (n, fails, commits, flaky, flips), verdict) in cases {
            let s = stats(&history).unwrap();
            assert_eq!(
                (
                    s.executions,
                    s.failures,
                    s.commits,
                    s.flaky_commits,
                    s.flips
                ),
                (n, fails, commits, flaky, flips),
                "{name}"
            );
            assert_eq!(s.verdict, verdict, "{name}");
            assert_eq!(s.flake_ratio, flaky as f64 / commits as f64, "{name}");
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
}
