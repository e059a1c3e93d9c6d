//! A finished test case as a [`TestResult`]: its outcome (per dialect), its
//! display name and its duration.

use super::message::{ResultElem, ResultKind, cap};
use super::parser::{CaseBuilder, Dialect};
use crate::model::{TestOutcome, TestResult};

/// The test a finished case reports: outcome (by the dialect's rules), message
/// (from the result elements that made the outcome), retries inside the case
/// and their reasons.
pub(super) fn parsed_test(dialect: Dialect, case: CaseBuilder) -> TestResult {
    let outcome = match dialect {
        Dialect::Junit => junit_outcome(&case),
        Dialect::Nunit | Dialect::Xunit => nunit_outcome(&case),
    };
    let message = if outcome == TestOutcome::Passed {
        None
    } else {
        let relevant: Vec<&ResultElem> = case
            .results
            .iter()
            .filter(|r| match outcome {
                TestOutcome::Skipped => {
                    matches!(r.kind, ResultKind::Skipped | ResultKind::Reason)
                }
                _ => matches!(r.kind, ResultKind::Failure | ResultKind::Error),
            })
            .collect();
        let relevant: Vec<&ResultElem> = if relevant.is_empty() {
            case.retries
                .iter()
                .rev()
                .find(|r| matches!(r.kind, ResultKind::RerunFailure | ResultKind::RerunError))
                .into_iter()
                .collect()
        } else {
            relevant
        };
        let parts: Vec<String> = relevant.iter().filter_map(|r| r.text()).collect();
        if parts.is_empty() {
            // NUnit puts e.g. "Test exceeded Timeout value 1ms." in `label`.
            case.label
                .as_deref()
                .map(str::trim)
                .filter(|l| l.contains(' '))
                .map(|l| cap(l.to_string()))
        } else {
            Some(cap(parts.join("\n")))
        }
    };
    let reasons: Vec<String> = case.retries.iter().map(ResultElem::reason).collect();
    TestResult {
        name: case.name,
        outcome,
        duration_seconds: case.duration,
        retries: case.retry_count,
        retry_reasons: reasons,
        message,
    }
}

fn junit_outcome(case: &CaseBuilder) -> TestOutcome {
    let has = |k: ResultKind| case.results.iter().any(|r| r.kind == k);
    if has(ResultKind::Error) {
        return TestOutcome::Errored;
    }
    if has(ResultKind::Failure) {
        return TestOutcome::Failed;
    }
    if has(ResultKind::Skipped) {
        return TestOutcome::Skipped;
    }
    if let Some(last_rerun) = case
        .retries
        .iter()
        .rev()
        .find(|r| matches!(r.kind, ResultKind::RerunFailure | ResultKind::RerunError))
    {
        return if last_rerun.kind == ResultKind::RerunError {
            TestOutcome::Errored
        } else {
            TestOutcome::Failed
        };
    }
    match case
        .status
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some(
            "disabled" | "skipped" | "skip" | "notrun" | "not run" | "not_run" | "ignored"
            | "pending" | "suppressed",
        ) => TestOutcome::Skipped,
        Some("failed" | "failure" | "fail") => TestOutcome::Failed,
        Some("error" | "errored") => TestOutcome::Errored,
        _ => TestOutcome::Passed,
    }
}

fn nunit_outcome(case: &CaseBuilder) -> TestOutcome {
    let label = case
        .label
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let has_failure = case.results.iter().any(|r| r.kind == ResultKind::Failure);
    let result = case
        .status
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match result.as_str() {
        "passed" | "success" | "pass" | "warning" => TestOutcome::Passed,
        "failed" | "failure" | "fail" => match label.as_str() {
            "error" | "cancelled" | "invalid" => TestOutcome::Errored,
            _ => TestOutcome::Failed,
        },
        "error" | "cancelled" | "notrunnable" | "invalid" => TestOutcome::Errored,
        "skipped" | "skip" | "ignored" | "inconclusive" | "notrun" | "not run" => {
            TestOutcome::Skipped
        }
        _ => {
            if has_failure {
                TestOutcome::Failed
            } else if case
                .executed
                .as_deref()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case("false"))
            {
                TestOutcome::Skipped
            } else {
                TestOutcome::Passed
            }
        }
    }
}

pub(super) fn outcome_word(outcome: TestOutcome) -> &'static str {
    match outcome {
        TestOutcome::Passed => "passed",
        TestOutcome::Failed => "failed",
        TestOutcome::Errored => "errored",
        TestOutcome::Skipped => "skipped",
    }
}

/// `classname.name`, unless `classname` is empty or `name` already starts
/// with it (or ends with `" " + classname`, as Mocha writes it).
pub(super) fn display_name(name: Option<&str>, classname: Option<&str>) -> String {
    let name = name.unwrap_or("");
    let classname = classname.unwrap_or("");
    if name.is_empty() {
        return if classname.is_empty() {
            "(unnamed)".to_string()
        } else {
            classname.to_string()
        };
    }
    if classname.is_empty()
        || name.starts_with(classname)
        || name
            .strip_suffix(classname)
            .is_some_and(|rest| rest.ends_with(' '))
    {
        name.to_string()
    } else {
        let mut joined = String::with_capacity(classname.len() + 1 + name.len());
        joined.push_str(classname);
        joined.push('.');
        joined.push_str(name);
        joined
    }
}

/// Seconds from a `time`/`duration` attribute. See the module docs.
pub(super) fn parse_seconds(raw: &str) -> Option<f64> {
    let s = raw.trim();
    if let Some(value) = plain_decimal(s) {
        return Some(value);
    }
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let cleaned: std::borrow::Cow<'_, str> = if s.contains(',') {
        let (int_part, has_dot) = match s.split_once('.') {
            Some((int_part, _)) => (int_part, true),
            None => (s, false),
        };
        if thousands_grouped(int_part) {
            s.replace(',', "").into()
        } else if !has_dot && s.matches(',').count() == 1 {
            s.replace(',', ".").into()
        } else {
            return None;
        }
    } else {
        s.into()
    };
    if !cleaned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let value: f64 = cleaned.parse().ok()?;
    if value.is_finite() && value >= 0.0 {
        Some(value.abs())
    } else {
        None
    }
}

/// `DIGITS` or `DIGITS.DIGITS` with at most 15 digits in all: the mantissa and the
/// power of ten are exact `f64`s and the division is correctly rounded, so this
/// is the value `str::parse` gives, without its general machinery.
pub(super) fn plain_decimal(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut dot: Option<usize> = None;
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            mantissa = mantissa * 10 + u64::from(c - b'0');
        } else if c == b'.' && dot.is_none() && i > 0 && i + 1 < b.len() {
            dot = Some(i);
        } else {
            return None;
        }
    }
    let fraction_digits = dot.map_or(0, |d| b.len() - d - 1);
    if b.len() - usize::from(dot.is_some()) > 15 {
        return None;
    }
    let scale = 10u64.pow(u32::try_from(fraction_digits).ok()?);
    Some(mantissa as f64 / scale as f64)
}

/// `1,234` / `12,345,678`: 1–3 digits, then groups of exactly three.
pub(super) fn thousands_grouped(s: &str) -> bool {
    let mut groups = s.split(',');
    let Some(first) = groups.next() else {
        return false;
    };
    let mut any = false;
    let first_ok = (1..=3).contains(&first.len()) && first.bytes().all(|b| b.is_ascii_digit());
    for g in groups {
        any = true;
        if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    first_ok && any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::tests::{only_test, suite};

    #[test]
    fn outcomes_follow_the_result_children_and_status() {
        use TestOutcome::*;
        let table: &[(&str, &str, TestOutcome)] = &[
            (
                "a testcase without children passes",
                r#"<testcase name="t"/>"#,
                Passed,
            ),
            (
                "a failure child fails the test",
                r#"<testcase name="t"><failure/></testcase>"#,
                Failed,
            ),
            (
                "an error child errors the test",
                r#"<testcase name="t"><error/></testcase>"#,
                Errored,
            ),
            (
                "an error wins over a failure",
                r#"<testcase name="t"><failure/><error/></testcase>"#,
                Errored,
            ),
            (
                "a skipped child skips the test",
                r#"<testcase name="t"><skipped/></testcase>"#,
                Skipped,
            ),
            (
                "a disabled child skips the test",
                r#"<testcase name="t"><disabled/></testcase>"#,
                Skipped,
            ),
            (
                "a failure wins over skipped (pytest xfail strict)",
                r#"<testcase name="t"><skipped/><failure/></testcase>"#,
                Failed,
            ),
            (
                "status disabled without a child skips the test",
                r#"<testcase name="t" status="disabled"/>"#,
                Skipped,
            ),
            (
                "status notrun skips the test",
                r#"<testcase name="t" status="notrun"/>"#,
                Skipped,
            ),
            (
                "status failed without a child fails the test",
                r#"<testcase name="t" status="failed"/>"#,
                Failed,
            ),
            (
                "status run passes the test (Catch2)",
                r#"<testcase name="t" status="run"/>"#,
                Passed,
            ),
            (
                "a failure child wins over status disabled",
                r#"<testcase name="t" status="disabled"><failure/></testcase>"#,
                Failed,
            ),
            (
                "system-out and properties do not change the outcome",
                r#"<testcase name="t"><properties/><system-out>failure</system-out><system-err/></testcase>"#,
                Passed,
            ),
            (
                "a flakyFailure alone leaves the test passed",
                r#"<testcase name="t"><flakyFailure/></testcase>"#,
                Passed,
            ),
            (
                "a flakyError alone leaves the test passed",
                r#"<testcase name="t"><flakyError/></testcase>"#,
                Passed,
            ),
            (
                "a rerunFailure alone fails the test",
                r#"<testcase name="t"><rerunFailure/></testcase>"#,
                Failed,
            ),
            (
                "a rerunError alone errors the test",
                r#"<testcase name="t"><rerunError/></testcase>"#,
                Errored,
            ),
            (
                "a failure nested below another child is ignored",
                r#"<testcase name="t"><system-out><failure/></system-out></testcase>"#,
                Passed,
            ),
            (
                "namespaced result elements count",
                r#"<testcase name="t"><j:failure xmlns:j="urn:x"/></testcase>"#,
                Failed,
            ),
        ];
        for (sentence, case, expected) in table {
            let test = only_test(&suite(case));
            assert_eq!(test.outcome, *expected, "{sentence}");
        }
    }

    #[test]
    fn names_join_classname_and_name_unless_already_prefixed() {
        let table: &[(&str, &str, &str)] = &[
            (
                "classname and name are joined with a dot",
                r#"classname="a.B" name="t""#,
                "a.B.t",
            ),
            (
                "a name already starting with the classname is kept",
                r#"classname="a.B" name="a.B.t""#,
                "a.B.t",
            ),
            (
                "an empty classname is ignored",
                r#"classname="" name="t""#,
                "t",
            ),
            ("a missing classname is ignored", r#"name="t""#, "t"),
            (
                "a Mocha name ending with the classname is kept",
                r#"classname="does x" name="Suite does x""#,
                "Suite does x",
            ),
            (
                "a missing name falls back to the classname",
                r#"classname="a.B""#,
                "a.B",
            ),
            ("a test with neither is named (unnamed)", "", "(unnamed)"),
            (
                "entities in names are decoded",
                r#"classname="a &amp; b" name="&lt;t&gt;""#,
                "a & b.<t>",
            ),
        ];
        for (sentence, attrs, expected) in table {
            let test = only_test(&suite(&format!("<testcase {attrs}/>")));
            assert_eq!(test.name, *expected, "{sentence}");
        }
    }

    #[test]
    fn durations_are_read_leniently_from_time() {
        let table: &[(&str, &str, Option<f64>)] = &[
            ("a plain decimal is seconds", "1.5", Some(1.5)),
            ("surrounding spaces are ignored", " 2.0 ", Some(2.0)),
            (
                "a thousands separator before a decimal point is dropped",
                "1,234.5",
                Some(1234.5),
            ),
            (
                "a thousands-grouped integer is read as such",
                "12,345,678",
                Some(12_345_678.0),
            ),
            ("a lone decimal comma is a decimal point", "0,5", Some(0.5)),
            ("an exponent is accepted", "4.5e-05", Some(4.5e-5)),
            ("zero is zero", "0", Some(0.0)),
            ("an empty value is unknown", "", None),
            ("garbage is unknown", "<<computed>>", None),
            ("words are unknown", "abc", None),
            ("a negative value is unknown", "-1", None),
            ("NaN is unknown", "NaN", None),
            ("infinity is unknown", "inf", None),
            ("an overflowing value is unknown", "1e999", None),
            (
                "commas that are not thousands groups are unknown",
                "1,2.5",
                None,
            ),
            ("two decimal commas are unknown", "1,5,5", None),
        ];
        for (sentence, raw, expected) in table {
            assert_eq!(parse_seconds(raw), *expected, "{sentence}");
        }
        let test = only_test(&suite(r#"<testcase name="t" time="1,234.5"/>"#));
        assert_eq!(test.duration_seconds, Some(1234.5));
        let test = only_test(&suite(r#"<testcase name="t"/>"#));
        assert_eq!(test.duration_seconds, None, "a missing time is unknown");
    }

    #[test]
    fn plain_decimals_parse_exactly_as_str_parse_does() {
        for s in [
            "0",
            "0.006",
            "1.5",
            "165.872",
            "123456789012345",
            "0.1",
            "0.3",
            "9.999999999999",
            "12345678.9012345",
        ] {
            assert_eq!(plain_decimal(s), s.parse::<f64>().ok(), "{s}");
        }
        for s in [
            "",
            ".5",
            "5.",
            "1.2.3",
            "1e3",
            "-1",
            "1234567890123456",
            "1,5",
        ] {
            assert_eq!(plain_decimal(s), None, "{s}");
        }
        // the general path still reads these
        assert_eq!(parse_seconds("5."), Some(5.0));
        assert_eq!(parse_seconds("1e3"), Some(1000.0));
    }
}
