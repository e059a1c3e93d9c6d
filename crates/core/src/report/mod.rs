//! Test reports (TAP, JUnit XML) parsed into one neutral shape.
use crate::model::{TestOutcome, TestResult};
pub mod junit;
pub mod tap;
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
    pub tests: Vec<TestResult>,
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
/// Give every test of one report a name of its own, so that what a report
/// counts is what the store keeps (one result per test name and run).
///
/// The parsers keep a name repeated after a passed or skipped run as another
/// test, not a retry (a parameterised test: TestNG data providers, Jest
/// `test.each`, TAP points with the same description). The second and later
/// tests with a name are named `name [2]`, `name [3]`, … in report order (a
/// number is skipped if the report already has a test of that name). Returns
/// how many tests were renamed.
pub fn distinct_names(tests: &mut [TestResult]) -> usize {
    use std::collections::{HashMap, HashSet};
    let mut taken: HashSet<String> = tests.iter().map(|t| t.name.clone()).collect();
    if taken.len() == tests.len() {
        return 0;
    }
    // name → occurrences so far
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut renamed = 0;
    for test in tests.iter_mut() {
        let n = seen.entry(test.name.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            continue;
        }
        let mut k = *n;
        let mut name = format!("{} [{k}]", test.name);
        while taken.contains(&name) {
            k += 1;
            name = format!("{} [{k}]", test.name);
        }
        *n = k;
        taken.insert(name.clone());
        test.name = name;
        renamed += 1;
    }
    renamed
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

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Tap => "tap",
            ReportFormat::Junit => "junit",
        }
    }
}

/// Guess a report file's format: `.xml` is JUnit, `.tap` is TAP, otherwise a
/// document whose first non-blank byte is `<` is JUnit and anything else TAP.
pub fn detect_format(path: &std::path::Path, head: &[u8]) -> ReportFormat {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("xml") => ReportFormat::Junit,
        Some("tap") => ReportFormat::Tap,
        _ => {
            let first = head
                .iter()
                .find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF);
            if first == Some(&b'<') {
                ReportFormat::Junit
            } else {
                ReportFormat::Tap
            }
        }
    }
}

/// Parse a report file of either format, streaming JUnit from disk.
pub fn parse_file(path: &std::path::Path) -> Result<Report, ReportError> {
    use std::io::{BufRead, BufReader, Read};
    let name = path.display().to_string();
    let io_err = |e: std::io::Error| ReportError::Malformed {
        file: name.clone(),
        position: "open".into(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(io_err)?.to_vec();
    match detect_format(path, &head) {
        ReportFormat::Junit => junit::parse_junit(&name, reader),
        ReportFormat::Tap => {
            let mut bytes = Vec::new();
            reader
                .take(tap::MAX_TAP_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(io_err)?;
            tap::parse_tap_bytes(&name, &bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(outcome: TestOutcome, retries: u32) -> TestResult {
        TestResult {
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
    fn repeated_names_become_distinct_in_report_order() {
        let named = |name: &str| TestResult {
            name: name.into(),
            ..test(TestOutcome::Passed, 0)
        };
        let mut tests = vec![
            named("each"),
            named("other"),
            named("each"),
            named("each [3]"),
            named("each"),
        ];
        assert_eq!(distinct_names(&mut tests), 2);
        let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["each", "other", "each [2]", "each [3]", "each [4]"]);
        let mut unique = vec![named("a"), named("b")];
        assert_eq!(distinct_names(&mut unique), 0);
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
