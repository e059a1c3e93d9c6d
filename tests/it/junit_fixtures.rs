//! The JUnit parser against real reports (see tests/fixtures/junit/NOTICE.md).
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ci_slo_exporter::model::TestOutcome;
use ci_slo_exporter::model::TestResult;
use ci_slo_exporter::report::junit::parse_junit;
use ci_slo_exporter::report::{Report, ReportError, ReportTotals};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit")
}

/// Every fixture file that is meant to be a report, whatever its extension:
/// everything but the attribution and the expected-totals data.
fn report_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("json" | "md")
            ) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &mut out);
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .expect("under the fixture root")
        .to_string_lossy()
        .replace('\\', "/")
}

fn parse(rel_path: &str) -> Result<Report, ReportError> {
    let path = root().join(rel_path);
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_junit(rel_path, BufReader::new(file))
}

fn parse_ok(rel_path: &str) -> Report {
    parse(rel_path).unwrap_or_else(|e| panic!("{rel_path}: {e}"))
}

/// Deliberately corrupt fixtures and where the parser must say they break.
const CORRUPT: &[(&str, &str)] = &[(
    // Truncated inside `<system-out><![CDATA[` on line 18, which starts at column 17.
    "mikepenz/corrupt-junit/e2e-tests/corrupt/target/sf-reports/TEST-test.CorruptTest.xml",
    "line 18, column 17",
)];

#[test]
fn every_fixture_parses_except_the_corrupt_ones_which_name_file_and_position() {
    let files = report_files();
    assert!(
        files.len() >= 63,
        "found only {} fixture files",
        files.len()
    );
    let mut corrupt_seen = 0;
    for path in &files {
        let name = rel(path);
        let expected_error = CORRUPT.iter().find(|(f, _)| *f == name);
        match (parse(&name), expected_error) {
            (Ok(report), None) => {
                for test in &report.tests {
                    assert!(!test.name.is_empty(), "{name}: empty test name");
                    assert!(test.message.as_ref().is_none_or(|m| m.len() <= 4096));
                    assert!(test.retry_reasons.len() <= test.retries as usize);
                }
            }
            (
                Err(ReportError::Malformed {
                    file,
                    position,
                    reason,
                }),
                Some((_, at)),
            ) => {
                corrupt_seen += 1;
                assert_eq!(file, name);
                assert_eq!(&position, at, "{name}: {reason}");
                assert!(reason.contains("CDATA"), "{name}: {reason}");
                let shown = ReportError::Malformed {
                    file,
                    position,
                    reason,
                }
                .to_string();
                assert!(
                    shown.starts_with(&format!("{name}: line 18, column 17: ")),
                    "{shown}"
                );
            }
            (Ok(_), Some(_)) => panic!("{name}: corrupt fixture parsed"),
            (Err(err), _) => panic!("{name}: {err}"),
        }
    }
    assert_eq!(corrupt_seen, CORRUPT.len());
}

/// A fixture whose totals differ from dorny/test-reporter's by design.
struct Exception {
    file: &'static str,
    /// (tests, passed, failed incl. errored, skipped) as this parser counts them
    ours: (u64, u64, u64, u64),
    why: &'static str,
}

/// Empty on purpose: the retry rule (a repeated `<testcase>` is a retry only
/// when the earlier occurrence failed or errored) counts the repeated passing
/// TestNG data-provider cases in `pulsar-test-report.xml` and the repeated
/// `test.each` titles in `jest-test-results.xml` as separate tests, exactly as
/// dorny does. Merging every repetition (occurrences − 1 retries) would give
/// 670 tests with 35 false "flaky" ones for Pulsar and 4142 tests with 31 false
/// "flaky" ones for Jest; such a rule would need entries here.
const EXCEPTIONS: &[Exception] = &[];

#[test]
fn totals_match_dorny_test_reporter_for_every_entry() {
    let json = std::fs::read_to_string(root().join("dorny/expected-totals.json")).expect("read");
    let expected: BTreeMap<String, BTreeMap<String, u64>> =
        serde_json::from_str(&json).expect("expected-totals.json");
    assert_eq!(expected.len(), 18);
    for (file, want) in &expected {
        let name = format!("dorny/{file}");
        let t = parse_ok(&name).totals();
        let ours = (t.tests, t.passed, t.failed + t.errored, t.skipped);
        let theirs = (
            want["tests"],
            want["passed"],
            want["failed"],
            want["skipped"],
        );
        match EXCEPTIONS.iter().find(|e| e.file == file) {
            Some(exception) => {
                assert_ne!(ours, theirs, "{file}: exception no longer needed");
                assert_eq!(ours, exception.ours, "{file}: {}", exception.why);
            }
            None => assert_eq!(
                ours, theirs,
                "{file}: (tests, passed, failed+errored, skipped)"
            ),
        }
    }
}

fn totals(
    tests: u64,
    passed: u64,
    failed: u64,
    errored: u64,
    skipped: u64,
    retried: u64,
    flaky: u64,
) -> ReportTotals {
    ReportTotals {
        tests,
        passed,
        failed,
        errored,
        skipped,
        retried,
        flaky,
    }
}

fn find<'a>(report: &'a Report, name: &str) -> &'a TestResult {
    report
        .tests
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no test {name} in {:?}", report.tests))
}

#[test]
fn surefire_flaky_failure_elements_are_retries_of_a_passing_test() {
    // One <testcase> with one <flakyFailure> (no message: the stackTrace's first line is the reason).
    let r = parse_ok("mikepenz/junit_flaky_failure/marathon_junit_report.xml");
    assert_eq!(r.totals(), totals(1, 1, 0, 0, 0, 1, 1));
    let t = find(&r, "com.mikepenz.Class.testFlakyFailure");
    assert_eq!((t.outcome, t.retries), (TestOutcome::Passed, 1));
    assert_eq!(t.retry_reasons, ["junit.framework.AssertionFailedError"]);
    assert_eq!(t.duration_seconds, Some(1.86));

    // Three tests, one of them with a <flakyFailure>.
    let r = parse_ok("mikepenz/junit_flaky_failure/mixed_flaky_and_passed.xml");
    assert_eq!(r.totals(), totals(3, 3, 0, 0, 0, 1, 1));
    let t = find(&r, "com.example.FlakyTest.testFlaky");
    assert_eq!(t.retry_reasons, ["java.lang.AssertionError: Flaky failure"]);

    // Maven Surefire: message attribute with encoded newlines is the reason.
    let r = parse_ok("mikepenz/maven_surefire_flaky/surefire-report.xml");
    assert_eq!(r.totals(), totals(1, 1, 0, 0, 0, 1, 1));
    let t = &r.tests[0];
    assert_eq!(
        t.name,
        "io.sodadata.dependson.soda.integrations.msteams.MicrosoftTeamsCrudTest.createWebhook"
    );
    assert_eq!(t.retries, 1);
    assert_eq!(t.retry_reasons, ["Expected: <false>\n     but: was <true>"]);
    assert_eq!(t.message, None);
}

#[test]
fn repeated_testcases_are_retries_only_after_a_failure() {
    // failure, error, pass for test_foo.TestFoo.test_foo; same name in other classes stays apart.
    let r = parse_ok("mikepenz/flaky_retries/flaky_with_classname_file.xml");
    assert_eq!(r.totals(), totals(3, 3, 0, 0, 0, 1, 1));
    let t = find(&r, "test_foo.TestFoo.test_foo");
    assert_eq!((t.outcome, t.retries), (TestOutcome::Passed, 2));
    assert_eq!(t.retry_reasons, ["it failed", "it broke"]);
    assert_eq!(find(&r, "test_bar.TestBar.test_foo").retries, 0);

    // failure, failure, error: one errored test with 2 retries, not flaky.
    let r = parse_ok("mikepenz/flaky_retries/flaky_all_failures.xml");
    assert_eq!(r.totals(), totals(1, 0, 0, 1, 0, 1, 0));
    let t = &r.tests[0];
    assert_eq!(t.retries, 2);
    assert_eq!(t.retry_reasons, ["first failure", "second failure"]);
    assert_eq!(
        t.message.as_deref(),
        Some("third error\nThird attempt errored")
    );

    // pass, failure, error. A runner does not retry a passing test, so the
    // failure starts a new test (retried once, ending errored). mikepenz's own
    // test expects 1 passed test with 2 retries ("any pass wins"); the brief's
    // literal rule would give 1 errored test with 2 retries.
    let r = parse_ok("mikepenz/flaky_retries/flaky_success_first.xml");
    assert_eq!(r.totals(), totals(2, 1, 0, 1, 0, 1, 0));
    assert_eq!(r.tests[0].outcome, TestOutcome::Passed);
    assert_eq!(r.tests[1].outcome, TestOutcome::Errored);
    assert_eq!(r.tests[1].retry_reasons, ["later failure"]);

    // Web Test Runner: "retried flaky test" fails, another test is skipped in between, then it passes.
    let r = parse_ok("mikepenz/junit-web-test/expectedRetries.xml");
    assert_eq!(r.totals(), totals(7, 5, 1, 0, 1, 1, 1));
    let t = find(&r, "off-by-one boolean logic errors.retried flaky test");
    assert_eq!(t.retry_reasons, ["this is flaky, so is retried"]);

    // gotestsum --rerun-fails: TestWebSocketReconnectRace fails (3.32 s) then passes (7.78 s).
    let r = parse_ok("mikepenz/junit-server-test/report.xml");
    assert_eq!(r.totals(), totals(3, 2, 0, 0, 1, 1, 1));
    let t = find(
        &r,
        "github.com/example/example/server/v8/channels/api4.TestWebSocketReconnectRace",
    );
    assert_eq!((t.retries, t.duration_seconds), (1, Some(7.78)));
    assert_eq!(t.retry_reasons, ["Failed"]);
}

#[test]
fn nextest_report_has_one_failure_and_no_retries() {
    // This nextest fixture has no <flakyFailure>/<rerunFailure>; those are covered by unit tests.
    let r = parse_ok("mikepenz/nextest/basic.xml");
    assert_eq!(r.totals(), totals(3, 2, 1, 0, 0, 0, 0));
    let t = find(&r, "oxidized_navigation::parry3d.test_failure");
    assert_eq!(t.duration_seconds, Some(0.774));
    let message = t.message.as_deref().unwrap_or_default();
    assert!(message.starts_with("thread 'test_failure' panicked at tests/parry3d.rs:154:5:"));
    assert!(
        !message.contains("running 1 test"),
        "system-out is not the message"
    );
}

/// Totals of the remaining mikepenz fixtures, read from the files by hand.
#[test]
fn mikepenz_fixtures_give_the_totals_read_from_the_files() {
    let table: &[(&str, ReportTotals)] = &[
        ("catch2/report.xml", totals(1, 0, 1, 0, 0, 0, 0)),
        // classname-less names; enormous but valid time values
        ("container-structure/test.xml", totals(3, 3, 0, 0, 0, 0, 0)),
        ("cunit/testEmpty.xml", totals(0, 0, 0, 0, 0, 0, 0)),
        ("cunit/testFailure.xml", totals(4, 3, 1, 0, 0, 0, 0)),
        // status='disabled' → skipped; failed/errored come from the children
        ("issues/testDisabled.xml", totals(22, 6, 4, 2, 10, 0, 0)),
        // status="disabled" but a <failure> child: the child wins
        ("issues/testFailedDisabled.xml", totals(1, 0, 1, 0, 0, 0, 0)),
        ("junit-web-test/expected.xml", totals(6, 4, 1, 0, 1, 0, 0)),
        (
            "marathon_tests/com.mikepenz.DummyTest#test_02_dummy.xml",
            totals(1, 1, 0, 0, 0, 0, 0),
        ),
        (
            "marathon_tests/com.mikepenz.DummyTest3#test_01.xml",
            totals(1, 0, 1, 0, 0, 0, 0),
        ),
        (
            "marathon_tests/com.mikepenz.DummyUtilTest#test_01_dummy.xml",
            totals(1, 0, 1, 0, 0, 0, 0),
        ),
        ("mocha/mocha.xml", totals(1, 1, 0, 0, 0, 0, 0)),
        ("multiple/test_10.xml", totals(3, 3, 0, 0, 0, 0, 0)),
        ("multiple/test_11.xml", totals(3, 2, 1, 0, 0, 0, 0)),
        ("multiple/test_12.xml", totals(3, 2, 0, 0, 1, 0, 0)),
        // two tests with several <error>s (one also with a <failure>), one passing
        (
            "multiple_failures/test_multiple_errors.xml",
            totals(3, 1, 0, 2, 0, 0, 0),
        ),
        (
            "multiple_failures/test_multiple_failures.xml",
            totals(4, 1, 2, 0, 1, 0, 0),
        ),
        // "A" and "B" under differently named nested suites are 5 distinct tests
        ("nested/junit.xml", totals(5, 2, 3, 0, 0, 0, 0)),
        ("nested/multi-level.xml", totals(3, 3, 0, 0, 0, 0, 0)),
        ("perl/result.xml", totals(1, 1, 0, 0, 0, 0, 0)),
        ("python/report.xml", totals(3, 1, 2, 0, 0, 0, 0)),
        ("python/report_flaky.xml", totals(4, 2, 2, 0, 0, 0, 0)),
        (
            "tests/email/target/surefire-reports/TEST-action.surefire.report.email.EmailAddressTest.xml",
            totals(9, 2, 2, 5, 0, 0, 0),
        ),
        (
            "tests/utils/target/surefire-reports/TEST-action.surefire.report.calc.AllOkTest.xml",
            totals(1, 1, 0, 0, 0, 0, 0),
        ),
        (
            "tests/utils/target/surefire-reports/TEST-action.surefire.report.calc.CalcUtilsTest.xml",
            totals(2, 0, 2, 0, 0, 0, 0),
        ),
        (
            "tests/utils/target/surefire-reports/TEST-action.surefire.report.calc.StringUtilsTest.xml",
            totals(5, 2, 2, 0, 1, 0, 0),
        ),
        ("xunit/report.xml", totals(4, 3, 1, 0, 0, 0, 0)),
        ("xunit/report_fl_on_f.xml", totals(4, 3, 1, 0, 0, 0, 0)),
    ];
    for (file, want) in table {
        let got = parse_ok(&format!("mikepenz/{file}")).totals();
        assert_eq!(&got, want, "{file}");
    }
}

#[test]
fn nunit3_reports_are_read_with_labels_and_fullnames() {
    let r = parse_ok("dorny/external/nunit-sample.xml");
    assert_eq!(r.totals(), totals(18, 12, 1, 1, 4, 0, 0));
    let r = parse_ok("dorny/dotnet-nunit.xml");
    let t = find(&r, "DotnetTests.XUnitTests.CalculatorTests.Timeout_Test");
    assert_eq!(
        t.message.as_deref(),
        Some("Test exceeded Timeout value 1ms.")
    );
    let t = find(
        &r,
        "DotnetTests.XUnitTests.CalculatorTests.Exception_In_TargetTest",
    );
    assert_eq!(t.outcome, TestOutcome::Errored);
    assert!(
        t.message
            .as_deref()
            .unwrap_or_default()
            .starts_with("System.DivideByZeroException : Attempted to divide by zero.\n")
    );
}

#[test]
fn a_fixture_streamed_through_a_tiny_buffer_gives_the_same_report() {
    let name = "dorny/external/java/pulsar-test-report.xml";
    let path = root().join(name);
    let small = BufReader::with_capacity(7, File::open(&path).expect("open"));
    let trickled = parse_junit(name, small).expect("parse");
    assert_eq!(trickled, parse_ok(name));
}

#[test]
fn a_test_class_that_failed_to_load_is_one_errored_test_not_zero() {
    // Ant's report for a test class whose superclass is missing: a suite-level
    // <error> and no <testcase> (as Jenkins counts it: one failing test).
    let report = parse_ok("ant/TEST-com.example.InventoryTest.xml");
    assert_eq!(report.totals().tests, 1);
    assert_eq!(report.totals().errored, 1);
    let t = &report.tests[0];
    assert_eq!(t.name, "com.example.InventoryTest");
    let message = t.message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with("java.lang.NoClassDefFoundError: com/example/Fixtures\n"),
        "{message}"
    );
    // The same run's other suite is counted as usual.
    let cart = parse_ok("ant/TEST-com.example.CartTest.xml").totals();
    assert_eq!((cart.tests, cart.passed, cart.failed), (2, 1, 1));
}
