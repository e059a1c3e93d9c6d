//! What one new test result does to its test's counters (commits seen,
//! flips, passes, failures, flaky commits and their failures), from what its
//! commit had and the test's latest counted outcome: one rule for both
//! engines (the SQLite store's `results.rs` and the PostgreSQL store's), so
//! their per-test statistics cannot drift apart.

/// `test_commits.flags` bits.
const PASSED: i64 = 1;
const FAILED: i64 = 2;
const RETRY_PASSED: i64 = 4;
const COUNTED_FLAKY: i64 = 8;

/// What one new result does to its test's counters, from what its commit
/// had (`stored`: flags and failures of the `test_commits` row, None when the
/// test has no row for the commit) and the test's latest counted outcome.
/// The one-run path and a batch both count through this.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The commit's flags and failures after this result.
    pub flags: i64,
    pub commit_failures: i64,
    /// Whether the `test_commits` row changes (the one-run path writes it then).
    pub commit_changed: bool,
    pub new_commit: i64,
    pub flip: i64,
    pub passes: i64,
    pub failures: i64,
    pub became_flaky: bool,
    pub flaky_failures: i64,
}

impl Step {
    /// The step of one result: `failed` or passed, after `retries` retries.
    pub fn of(
        stored: Option<(i64, i64)>,
        last_failed: Option<bool>,
        failed: bool,
        retries: u32,
    ) -> Step {
        let flags = stored.map(|s| s.0);
        let old = flags.unwrap_or(0);
        let commit_failures = stored.map_or(0, |s| s.1) + i64::from(failed);
        let retry_pass = i64::from(!failed && retries > 0);
        let mut now = old
            | if failed { FAILED } else { PASSED }
            | if !failed && retries > 0 {
                RETRY_PASSED
            } else {
                0
            };
        let flaky_now = (now & PASSED != 0 && now & FAILED != 0) || now & RETRY_PASSED != 0;
        let became_flaky = flaky_now && old & COUNTED_FLAKY == 0;
        if became_flaky {
            now |= COUNTED_FLAKY;
        }
        // Flaky failures: when the commit becomes flaky, its failures so far
        // (and this retried pass); once flaky, each further failure or retried pass.
        let flaky_failures = if became_flaky {
            commit_failures + retry_pass
        } else if old & COUNTED_FLAKY != 0 {
            i64::from(failed) + retry_pass
        } else {
            0
        };
        Step {
            flags: now,
            commit_failures,
            commit_changed: flags != Some(now) || failed,
            new_commit: i64::from(flags.is_none()),
            flip: i64::from(last_failed.is_some_and(|l| l != failed)),
            passes: i64::from(!failed),
            failures: i64::from(failed),
            became_flaky,
            flaky_failures,
        }
    }
}

/// What counted results add to a test's counters and to one of its days'
/// (`tests` and `test_days`): the per-run path, a batch and a fresh load all
/// add a [`Step`] through [`TestCounts::add`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestCounts {
    pub runs: i64,
    pub passes: i64,
    pub failures: i64,
    pub flips: i64,
    pub commits: i64,
    pub flaky_commits: i64,
    pub flaky_failures: i64,
}

impl TestCounts {
    /// What one result's step adds.
    pub fn of(step: &Step) -> TestCounts {
        let mut c = TestCounts::default();
        c.add(step);
        c
    }

    /// Add one result's step.
    pub fn add(&mut self, step: &Step) {
        self.runs += 1;
        self.passes += step.passes;
        self.failures += step.failures;
        self.flips += step.flip;
        self.commits += step.new_commit;
        self.flaky_commits += i64::from(step.became_flaky);
        self.flaky_failures += step.flaky_failures;
    }

    /// In the tables' column order: runs, passes, failures, flips, commits,
    /// flaky_commits, flaky_failures.
    pub fn columns(&self) -> [i64; 7] {
        [
            self.runs,
            self.passes,
            self.failures,
            self.flips,
            self.commits,
            self.flaky_commits,
            self.flaky_failures,
        ]
    }
}
