//! The parser as a whole: dialects, entities, errors and robustness.

use std::time::{Duration, Instant};

use super::*;
use crate::model::{TestOutcome, TestResult};
use crate::report::{Report, ReportError, ReportFormat};

pub(super) fn parse(xml: &str) -> Report {
    match parse_junit_str("t.xml", xml) {
        Ok(report) => report,
        Err(err) => panic!("expected a report, got {err}"),
    }
}

pub(super) fn malformed_at(xml: &str) -> (String, String) {
    match parse_junit_str("t.xml", xml) {
        Err(ReportError::Malformed {
            file,
            position,
            reason,
        }) => {
            assert_eq!(file, "t.xml");
            (position, reason)
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

pub(super) fn suite(cases: &str) -> String {
    format!("<testsuites><testsuite name=\"s\">{cases}</testsuite></testsuites>")
}

/// Both entry points on the same bytes, as comparable text.
pub(super) fn fast_and_reader(xml: &[u8]) -> (String, String) {
    (
        format!("{:?}", parse_junit_bytes("t.xml", xml)),
        format!("{:?}", parse_junit("t.xml", xml)),
    )
}

pub(super) fn only_test(xml: &str) -> TestResult {
    let report = parse(xml);
    assert_eq!(report.tests.len(), 1, "{:?}", report.tests);
    report
        .tests
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable!())
}

#[test]
fn suites_nest_to_any_depth_and_the_root_may_be_a_testsuite() {
    let nested = parse(
        r#"<testsuites><testsuite name="a"><testsuite name="b"><testsuite name="c">
             <testcase name="x"/></testsuite><testcase name="y"/></testsuite></testsuite>
             <testcase name="z"/></testsuites>"#,
    );
    let names: Vec<&str> = nested.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["x", "y", "z"]);
    let single = parse(r#"<testsuite name="s"><testcase name="x"/></testsuite>"#);
    assert_eq!(single.tests.len(), 1);
}

#[test]
fn nunit3_test_run_reports_are_understood() {
    let report = parse(
        r#"<?xml version="1.0" encoding="utf-8"?>
<test-run total="5"><test-suite type="Assembly" name="a.dll"><failure><message>suite level</message></failure>
  <test-suite type="TestFixture" name="C">
<test-case name="Ok" fullname="N.C.Ok" result="Passed" duration="0.5"/>
<test-case name="Bad" fullname="N.C.Bad" result="Failed" duration="0.1"><failure><message><![CDATA[Expected: 3]]></message><stack-trace><![CDATA[   at N.C.Bad()]]></stack-trace></failure></test-case>
<test-case name="Boom" fullname="N.C.Boom" result="Failed" label="Error"><failure><message>System.Exception</message></failure></test-case>
<test-case name="Later" fullname="N.C.Later" result="Skipped" label="Ignored"><reason><message>not yet</message></reason></test-case>
<test-case name="Maybe" fullname="N.C.Maybe" result="Inconclusive"/>
<test-case name="Slow" fullname="N.C.Slow" result="Failed" label="Test exceeded Timeout value 1ms."><failure/></test-case>
  </test-suite></test-suite></test-run>"#,
    );
    let got: Vec<(&str, TestOutcome, Option<&str>)> = report
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.outcome, t.message.as_deref()))
        .collect();
    use TestOutcome::*;
    assert_eq!(
        got,
        [
            ("N.C.Ok", Passed, None),
            ("N.C.Bad", Failed, Some("Expected: 3\nat N.C.Bad()")),
            ("N.C.Boom", Errored, Some("System.Exception")),
            ("N.C.Later", Skipped, Some("not yet")),
            ("N.C.Maybe", Skipped, None),
            ("N.C.Slow", Failed, Some("Test exceeded Timeout value 1ms.")),
        ]
    );
    assert_eq!(report.tests[0].duration_seconds, Some(0.5));
}

#[test]
fn nunit2_and_xunit_net_reports_are_understood() {
    let nunit2 = parse(
        r#"<test-results><test-suite name="S"><results>
             <test-case name="N.A" executed="True" result="Success" time="0.1"/>
             <test-case name="N.B" executed="True" result="Failure"><failure><message>bad</message></failure></test-case>
             <test-case name="N.C" executed="False" result="Ignored"><reason><message>later</message></reason></test-case>
             <test-case name="N.D" executed="True" result="Error"/>
           </results></test-suite></test-results>"#,
    );
    let outcomes: Vec<TestOutcome> = nunit2.tests.iter().map(|t| t.outcome).collect();
    use TestOutcome::*;
    assert_eq!(outcomes, [Passed, Failed, Skipped, Errored]);

    let xunit = parse(
        r#"<assemblies><assembly name="a.dll"><collection name="C">
             <test name="N.C.Ok" type="N.C" method="Ok" result="Pass" time="0.01"/>
             <test name="N.C.Bad" type="N.C" method="Bad" result="Fail"><failure><message>Assert.Equal() Failure</message><stack-trace>at N.C.Bad()</stack-trace></failure></test>
             <test name="N.C.Skip" type="N.C" method="Skip" result="Skip"><reason><![CDATA[nope]]></reason></test>
           </collection></assembly></assemblies>"#,
    );
    let got: Vec<(&str, TestOutcome)> = xunit
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.outcome))
        .collect();
    assert_eq!(
        got,
        [
            ("N.C.Ok", Passed),
            ("N.C.Bad", Failed),
            ("N.C.Skip", Skipped)
        ]
    );
    assert_eq!(
        xunit.tests[1].message.as_deref(),
        Some("Assert.Equal() Failure\nat N.C.Bad()")
    );
    assert_eq!(xunit.tests[2].message.as_deref(), Some("nope"));
}

#[test]
fn go_junit_report_output_is_understood() {
    let report = parse(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3" failures="1">
	<testsuite tests="3" failures="1" time="0.010" name="example.com/pkg" timestamp="2024-01-01T00:00:00Z">
		<properties><property name="go.version" value="go1.22.0 linux/amd64"></property></properties>
		<testcase classname="example.com/pkg" name="TestOk" time="0.000"></testcase>
		<testcase classname="example.com/pkg" name="TestBad" time="0.010"><failure message="Failed" type="">    pkg_test.go:12: want 1, got 2</failure></testcase>
		<testcase classname="example.com/pkg" name="TestSkip" time="0.000"><skipped message="    pkg_test.go:20: slow"></skipped></testcase>
	</testsuite>
</testsuites>"#,
    );
    let totals = report.totals();
    assert_eq!(
        (totals.tests, totals.passed, totals.failed, totals.skipped),
        (3, 1, 1, 1)
    );
    assert_eq!(report.tests[1].name, "example.com/pkg.TestBad");
    assert_eq!(
        report.tests[1].message.as_deref(),
        Some("Failed\npkg_test.go:12: want 1, got 2")
    );
}

#[test]
fn external_entities_are_never_resolved() {
    let xml = r#"<?xml version="1.0"?>
<!DOCTYPE testsuites [
  <!ENTITY xxe SYSTEM "file:///etc/passwd">
  <!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd">
  %remote;
]>
<testsuites><testsuite name="s">
  <testcase name="&xxe;"><failure message="&xxe;">&xxe;</failure></testcase>
</testsuite></testsuites>"#;
    let report = parse(xml);
    let test = &report.tests[0];
    assert_eq!(test.name, "&xxe;");
    assert_eq!(test.message.as_deref(), Some("&xxe;"));
    assert!(!format!("{report:?}").contains("root:"), "no file was read");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("DOCTYPE ignored"))
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("undeclared entity"))
    );

    let external_dtd = parse(
        r#"<!DOCTYPE testsuites SYSTEM "file:///etc/passwd"><testsuites><testsuite><testcase name="t"/></testsuite></testsuites>"#,
    );
    assert_eq!(external_dtd.tests.len(), 1);
}

#[test]
fn billion_laughs_is_left_unexpanded_in_bounded_memory() {
    let mut xml =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        let refs = format!("&{prev};").repeat(10);
        xml.push_str(&format!(" <!ENTITY lol{i} \"{refs}\">\n"));
    }
    xml.push_str("]>\n<testsuites><testsuite><testcase name=\"t\"><failure message=\"&lol8;\">&lol9;&lol9;</failure></testcase></testsuite></testsuites>");
    let started = Instant::now();
    let report = parse(&xml);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "returns quickly"
    );
    let test = &report.tests[0];
    assert_eq!(test.message.as_deref(), Some("&lol8;\n&lol9;&lol9;"));
    assert!(test.message.as_ref().is_some_and(|m| m.len() < 64));

    // Quadratic blow-up: one big entity referenced many times.
    let big = "a".repeat(100_000);
    let refs = "&big;".repeat(10_000);
    let xml = format!(
        "<!DOCTYPE t [<!ENTITY big \"{big}\">]><testsuite><testcase name=\"t\"><failure>{refs}</failure></testcase></testsuite>"
    );
    let started = Instant::now();
    let report = parse(&xml);
    assert!(started.elapsed() < Duration::from_secs(2));
    let message = report.tests[0].message.clone().unwrap_or_default();
    assert!(message.starts_with("&big;&big;") && message.len() <= MESSAGE_CAP);
}

#[test]
fn broken_or_non_report_input_is_malformed_with_a_position() {
    let table: &[(&str, &str, &str, &str)] = &[
        (
            "an empty file has no root element",
            "",
            "line 1, column 1",
            "no root element",
        ),
        (
            "a blank file has no root element",
            "\n\n  ",
            "line 3, column 3",
            "no root element",
        ),
        (
            "a declaration alone has no root element",
            "<?xml version=\"1.0\"?>\n",
            "line 2, column 1",
            "no root element",
        ),
        (
            "plain text is not XML",
            "hello",
            "line 1, column 1",
            "text outside the root element",
        ),
        (
            "a mismatched end tag is located",
            "<testsuites>\n  <testsuite>\n  </testsuites>",
            "line 3, column 3",
            "not well-formed",
        ),
        (
            "a truncated file names the open element",
            "<testsuites>\n<testsuite>\n<testcase name=\"a\">",
            "line 3, column 20",
            "<testcase>",
        ),
        (
            "an unclosed CDATA points at its start",
            "<testsuite>\n <testcase name=\"a\"><failure><![CDATA[oops",
            "line 2, column 30",
            "CDATA",
        ),
        (
            "another root element is not a test report",
            "<html><body/></html>",
            "line 1, column 1",
            "root element <html>",
        ),
        (
            "an unquoted attribute is invalid",
            "<testsuites>\n<testcase name=a/></testsuites>",
            "line 2, column 1",
            "invalid attribute",
        ),
        (
            "a duplicated attribute is invalid",
            "<testsuite><testcase name=\"a\" name=\"b\"/></testsuite>",
            "line 1, column 12",
            "invalid attribute",
        ),
    ];
    for (sentence, xml, position, reason) in table {
        let (got_position, got_reason) = malformed_at(xml);
        assert_eq!(&got_position, position, "{sentence}: {got_reason}");
        assert!(got_reason.contains(reason), "{sentence}: {got_reason}");
    }
}

#[test]
fn only_testsuites_is_an_empty_report() {
    for xml in [
        "<testsuites/>",
        "<?xml version=\"1.0\"?>\n<testsuites></testsuites>\n",
        "<testsuite tests=\"0\"/>",
    ] {
        let report = parse(xml);
        assert!(report.tests.is_empty(), "{xml}");
        assert_eq!(report.totals(), Default::default());
        assert!(!report.bailed_out);
        assert_eq!(report.format, ReportFormat::Junit);
    }
}

#[test]
fn invalid_utf8_is_malformed() {
    let bytes = b"<testsuite>\n  <testcase name=\"\xff\xfe\"/></testsuite>";
    match parse_junit("t.xml", &bytes[..]) {
        Err(ReportError::Malformed {
            position, reason, ..
        }) => {
            assert!(reason.contains("UTF-8"), "{reason}");
            assert_eq!(
                position, "line 2, column 3",
                "the element holding the bytes"
            );
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn nesting_deeper_than_the_limit_is_malformed() {
    let xml = format!("<testsuites>{}", "<testsuite>".repeat(MAX_DEPTH + 5));
    let (_, reason) = malformed_at(&xml);
    assert!(reason.contains("nested deeper"), "{reason}");
}

#[test]
fn content_after_the_root_element_is_ignored_with_a_warning() {
    let report = parse(
        "<testsuite><testcase name=\"t\"/></testsuite>\n<!-- c -->\n<testsuite><testcase name=\"u\"/></testsuite>",
    );
    assert_eq!(report.tests.len(), 1);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("after the root element"))
    );
    let report = parse("<testsuite/>\n  \n");
    assert!(report.warnings.is_empty());
    let report = parse("<testsuite/><!-- unterminated");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("after the root element"))
    );
}

#[test]
fn errors_display_file_position_and_reason() {
    let err = parse_junit_str("a/b.xml", "<testsuite>")
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a/b.xml: line 1, column 12: unexpected end of file: 1 element(s) still open, innermost <testsuite>"
    );
}

#[test]
fn totals_count_outcomes_retried_and_flaky_tests() {
    let report = parse(&suite(
        r#"<testcase name="p"/><testcase name="f"><failure/></testcase>
           <testcase name="e"><error/></testcase><testcase name="s"><skipped/></testcase>
           <testcase name="flaky"><flakyFailure/></testcase>
           <testcase name="hard"><failure/><rerunFailure/></testcase>"#,
    ));
    assert_eq!(
        report.totals(),
        crate::report::ReportTotals {
            tests: 6,
            passed: 2,
            failed: 2,
            errored: 1,
            skipped: 1,
            retried: 2,
            flaky: 1,
        }
    );
}

/// A small deterministic mutation fuzzer: truncations, byte flips and
/// splices of a realistic report must never panic.
#[test]
fn mutated_reports_never_panic() {
    let seed_doc = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE x [<!ENTITY e \"v\">]>\n{}",
        suite(
            r#"<testcase classname="c" name="t" time="1,5"><failure message="a&#10;b">x &amp; <![CDATA[y]]></failure><flakyFailure><stackTrace>s</stackTrace></flakyFailure></testcase><testcase name="t"/><test-case result="Failed"/>"#
        )
    );
    let seed = seed_doc.as_bytes();
    let alphabet: &[u8] = b"<>/&;#x\"'=![]-?: \n\xc3\xa9\xff";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut doc = seed.to_vec();
        for _ in 0..(next() % 6 + 1) {
            let at = (next() as usize) % doc.len().max(1);
            match next() % 4 {
                0 => doc.truncate(at),
                1 => {
                    if let Some(b) = doc.get_mut(at) {
                        *b = alphabet[(next() as usize) % alphabet.len()];
                    }
                }
                2 => doc.insert(
                    at.min(doc.len()),
                    alphabet[(next() as usize) % alphabet.len()],
                ),
                _ => {
                    let from = (next() as usize) % seed.len();
                    let to = (from + (next() as usize) % 40).min(seed.len());
                    let at = at.min(doc.len());
                    doc.splice(at..at, seed[from..to].iter().copied());
                }
            }
        }
        let _ = parse_junit("fuzz.xml", &doc[..]);
        let _ = parse_junit_str("fuzz.xml", &String::from_utf8_lossy(&doc));
    }
}
