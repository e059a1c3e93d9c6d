//! The reader as a whole: bail outs and robustness.

use super::*;
use crate::model::{TestOutcome, TestResult};
use crate::report::ReportTotals;

pub(super) fn parse(input: &str) -> Report {
    parse_tap("test.tap", input).expect("parses")
}

pub(super) fn only_test(report: &Report) -> &TestResult {
    assert_eq!(report.tests.len(), 1, "{report:#?}");
    &report.tests[0]
}

pub(super) fn outcomes(report: &Report) -> Vec<(&str, TestOutcome)> {
    report
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.outcome))
        .collect()
}

pub(super) fn has_warning(report: &Report, needle: &str) -> bool {
    report.warnings.iter().any(|w| w.contains(needle))
}

// --- bail out ---------------------------------------------------------

#[test]
fn bail_out_stops_reading_and_is_flagged() {
    let report = parse("1..3\nok 1 - a\nBail out! no database\nok 2 - b\n");
    assert!(report.bailed_out);
    assert_eq!(report.tests.len(), 1);
    assert!(has_warning(&report, "Bail out! no database"));
    assert!(
        !has_warning(&report, "expects"),
        "no plan check after a bail out"
    );
}

#[test]
fn bail_out_inside_a_running_subtest_reports_it_as_errored() {
    let report = parse("1..2\nok 1 - a\n# Subtest: b\n    ok 1 - inner\n    Bail out! disk full\n");
    assert!(report.bailed_out);
    assert_eq!(
        outcomes(&report),
        vec![("a", TestOutcome::Passed), ("b", TestOutcome::Errored)]
    );
    assert_eq!(
        report.tests[1].message.as_deref(),
        Some("Bail out! disk full")
    );
    assert_eq!(report.totals().errored, 1);
}

// --- robustness -------------------------------------------------------

#[test]
fn empty_and_blank_input_give_an_empty_report_with_a_warning() {
    for input in ["", "\n\n", "   \r\n"] {
        let report = parse(input);
        assert!(report.tests.is_empty());
        assert!(!report.bailed_out);
        assert!(
            has_warning(&report, "no TAP plan and no test points"),
            "{input:?}"
        );
        assert_eq!(report.totals(), ReportTotals::default());
    }
}

#[test]
fn binary_garbage_is_read_lossily_without_panicking() {
    let mut garbage: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    garbage.extend_from_slice(b"\nok 1 - survivor \xff\xfe\n1..1\n");
    let report = parse_tap_bytes("garbage.bin", &garbage).expect("parses");
    assert_eq!(
        report.warnings[0],
        "input is not valid UTF-8; invalid bytes were replaced"
    );
    assert_eq!(
        report.tests.last().unwrap().name,
        "survivor \u{fffd}\u{fffd}"
    );
}

#[test]
fn a_one_megabyte_line_is_fine_and_long_names_are_capped() {
    let long = "x".repeat(1024 * 1024);
    let report = parse(&format!(
        "1..2\n{long}\nnot ok 1 - {long}\n# {long}\nok 2 - short\n"
    ));
    assert_eq!(report.tests.len(), 2);
    assert_eq!(report.tests[0].name.len(), MAX_NAME_BYTES);
    assert!(report.tests[0].message.as_ref().unwrap().len() <= MAX_MESSAGE_BYTES);
    assert!(has_warning(&report, "truncated"));
}

#[test]
fn crlf_line_endings_read_like_lf() {
    let lf =
        "TAP version 13\n1..2\nok 1 - a # SKIP why\nnot ok 2 - b\n  ---\n  message: m\n  ...\n";
    let crlf = lf.replace('\n', "\r\n");
    assert_eq!(parse(lf), parse(&crlf));
    assert_eq!(parse(&crlf).tests[0].message.as_deref(), Some("why"));
}

#[test]
fn inputs_over_the_size_limit_are_rejected() {
    let big = vec![b'\n'; MAX_TAP_BYTES as usize + 1];
    let err = parse_tap_bytes("huge.tap", &big).unwrap_err();
    assert!(matches!(err, ReportError::TooLarge { .. }));
    assert_eq!(
        err.to_string(),
        format!("huge.tap: report larger than {MAX_TAP_BYTES} bytes")
    );
}

#[test]
fn random_tap_like_inputs_never_panic() {
    const PIECES: &[&str] = &[
        "ok",
        "not ok",
        " ",
        "    ",
        "\t",
        "1",
        "99999999999999999999999",
        "..",
        "-",
        "#",
        "\\",
        "# SKIP",
        "# TODO",
        "# RETRY 1 (",
        ")",
        "{",
        "}",
        "---",
        "...",
        "Bail out!",
        "# Subtest: x",
        "1..0",
        "time=",
        "ms",
        "# 3 TEST PASSED [",
        "s on h]",
        "é",
        "\r",
        "\n",
        "\n",
        "\n",
        "[ND@1]",
        "message: |",
        "duration:",
        "pragma +strict",
        "TAP version 14",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..3000 {
        let mut input = String::new();
        for _ in 0..(seed % 200) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            input.push_str(PIECES[(seed % PIECES.len() as u64) as usize]);
        }
        let (report, counts) = parse_tap_with_counts("fuzz", &input).expect("parses");
        let totals = report.totals();
        assert_eq!(
            totals.passed + totals.failed + totals.errored + totals.skipped,
            totals.tests
        );
        assert!(totals.tests <= counts.count + 1, "{input:?}");
    }
}
