//! Test reports (TAP, JUnit XML) parsed into one neutral shape.
use crate::model::TestOutcome;
pub mod junit;
pub mod tap;
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedTest {
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_seconds: Option<f64>,
    /// retries inside the run (0 when it ran once)
    pub retries: u32,
    /// reasons given for each retry, in order (may be shorter than `retries`)
    pub retry_reasons: Vec<String>,
    /// failure message / diagnostics (first useful lines, capped at 4 KiB)
    pub message: Option<String>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Tap,
    Junit,
}
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportTotals {
    pub tests: u64,
    pub passed: u64,
    pub failed: u64,
    pub errored: u64,
    pub skipped: u64,
    pub retried: u64,
    pub flaky: u64,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub format: ReportFormat,
    pub tests: Vec<ParsedTest>,
    pub bailed_out: bool,
    pub warnings: Vec<String>,
}
impl Report {
    /// Counts per outcome. `retried` = tests with `retries > 0`; `flaky` = tests
    /// with `retries > 0` whose final outcome is `Passed` (passed on retry).
    pub fn totals(&self) -> ReportTotals {
        let mut t = ReportTotals {
            tests: self.tests.len() as u64,
            ..ReportTotals::default()
        };
        for test in &self.tests {
            match test.outcome {
                TestOutcome::Passed => t.passed += 1,
                TestOutcome::Failed => t.failed += 1,
                TestOutcome::Errored => t.errored += 1,
                TestOutcome::Skipped => t.skipped += 1,
            }
            if test.retries > 0 {
                t.retried += 1;
                if test.outcome == TestOutcome::Passed {
                    t.flaky += 1;
                }
            }
        }
        t
    }
}
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{file}: {position}: {reason}")]
    Malformed {
        file: String,
        position: String,
        reason: String,
    },
    #[error("{file}: report larger than {limit} bytes")]
    TooLarge { file: String, limit: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(outcome: TestOutcome, retries: u32) -> ParsedTest {
        ParsedTest {
            name: "t".into(),
            outcome,
            duration_seconds: None,
            retries,
            retry_reasons: Vec::new(),
            message: None,
        }
    }

    #[test]
    fn totals_count_each_outcome_and_retried_and_flaky_tests() {
        let report = Report {
            format: ReportFormat::Tap,
            tests: vec![
                test(TestOutcome::Passed, 0),
                test(TestOutcome::Passed, 2),
                test(TestOutcome::Failed, 1),
                test(TestOutcome::Errored, 0),
                test(TestOutcome::Skipped, 0),
            ],
            bailed_out: false,
            warnings: Vec::new(),
        };
        assert_eq!(
            report.totals(),
            ReportTotals {
                tests: 5,
                passed: 2,
                failed: 1,
                errored: 1,
                skipped: 1,
                retried: 2,
                flaky: 1,
            }
        );
    }

    #[test]
    fn totals_of_an_empty_report_are_all_zero() {
        let report = Report {
            format: ReportFormat::Junit,
            tests: Vec::new(),
            bailed_out: false,
            warnings: Vec::new(),
        };
        assert_eq!(report.totals(), ReportTotals::default());
    }
}
