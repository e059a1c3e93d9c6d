//! The Cockpit flavour of TAP: a test retried after `# RETRY n (reason)` is one
//! test (same name once the machine and cost suffixes are dropped), and
//! `# N TEST PASSED [26s on host]` lines give durations.

use super::lexer::parse_human_duration;
use super::parser::Parser;

/// `# 3 TEST PASSED [26s on host]`: test number and seconds.
pub(super) fn parse_cockpit_duration(text: &str) -> Option<(u64, f64)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number: u64 = text[..digits].parse().ok()?;
    let rest = text[digits..]
        .trim_start()
        .strip_prefix("TEST ")?
        .trim_start();
    let rest = rest
        .strip_prefix("PASSED")
        .or_else(|| rest.strip_prefix("FAILED"))?;
    let inside = rest.trim_start().strip_prefix('[')?;
    let (seconds, _) = parse_human_duration(inside)?;
    Some((number, seconds))
}

/// Cockpit adds ` [ND@<machine>]` and ` $<cost>` to names; neither identifies
/// the test (a retry may run on another machine).
pub(super) fn normalize_name(name: &str) -> &str {
    let mut name = name;
    if let Some(open) = name.rfind(" [ND@") {
        let tail = &name[open + 5..];
        if let Some(inner) = tail.strip_suffix(']') {
            let inner = inner.strip_prefix('-').unwrap_or(inner);
            if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
                name = &name[..open];
            }
        }
    }
    if let Some(dollar) = name.rfind(" $") {
        let tail = &name[dollar + 2..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            name = &name[..dollar];
        }
    }
    name
}

impl<'a> Parser<'a> {
    pub(super) fn mark_retry(&mut self, index: usize, reason: Option<String>) {
        let test = &mut self.tests[index];
        test.retries = test.retries.saturating_add(1);
        if let Some(reason) = reason {
            test.retry_reasons.push(reason);
        }
        if !self.meta[index].awaiting_retry {
            self.meta[index].awaiting_retry = true;
            self.awaiting.insert(test.name.clone(), index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TestOutcome;
    use crate::report::tap::tests::{has_warning, only_test, outcomes, parse};

    #[test]
    fn cockpit_machine_and_cost_suffixes_are_not_part_of_the_name() {
        let table = [
            (
                "test/verify/check-foo TestFoo.testBar [ND@0]",
                "test/verify/check-foo TestFoo.testBar",
            ),
            (
                "check-foo TestFoo.testBar [ND@-1]",
                "check-foo TestFoo.testBar",
            ),
            (
                "check-foo TestFoo.testBar $3 [ND@2]",
                "check-foo TestFoo.testBar",
            ),
            ("check-foo TestFoo.testBar $3", "check-foo TestFoo.testBar"),
            ("keeps [ND@x]", "keeps [ND@x]"),
            ("costs $ money", "costs $ money"),
        ];
        for (name, want) in table {
            assert_eq!(normalize_name(name), want, "{name}");
        }
    }

    // --- Cockpit flavour --------------------------------------------------

    #[test]
    fn a_cockpit_retry_that_then_passes_is_one_flaky_test() {
        let report = parse(
            "3..3\n\
             not ok 3 test/verify/check-foo TestFoo.testBar # RETRY 1 (test affected tests 3 times)\n\
             # Unexpected journal message 'oops'\n\
             ok 3 test/verify/check-foo TestFoo.testBar\n",
        );
        let test = only_test(&report);
        assert_eq!(test.name, "test/verify/check-foo TestFoo.testBar");
        assert_eq!(test.outcome, TestOutcome::Passed);
        assert_eq!(test.retries, 1);
        assert_eq!(test.retry_reasons, vec!["test affected tests 3 times"]);
        assert_eq!(
            test.message.as_deref(),
            Some("Unexpected journal message 'oops'")
        );
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let totals = report.totals();
        assert_eq!((totals.retried, totals.flaky, totals.passed), (1, 1, 1));
    }

    #[test]
    fn a_cockpit_test_retried_twice_keeps_both_reasons_and_the_last_outcome() {
        let report = parse(
            "1..2\n\
             not ok 1 check-a TestA.testOne [ND@0] # RETRY 1 (be robust against unstable tests)\n\
             ok 2 check-a TestA.testTwo [ND@1]\n\
             not ok 1 check-a TestA.testOne [ND@1] # RETRY 2 (be robust against unstable tests)\n\
             not ok 1 check-a TestA.testOne [ND@0]\n\
             # Traceback: boom\n",
        );
        assert_eq!(
            outcomes(&report),
            vec![
                ("check-a TestA.testOne", TestOutcome::Failed),
                ("check-a TestA.testTwo", TestOutcome::Passed)
            ]
        );
        let test = &report.tests[0];
        assert_eq!(test.retries, 2);
        assert_eq!(test.retry_reasons.len(), 2);
        assert_eq!(test.message.as_deref(), Some("Traceback: boom"));
        assert_eq!(report.totals().flaky, 0);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    }

    #[test]
    fn passing_attempts_retried_because_the_test_was_affected_count_as_retries() {
        let report = parse(
            "1..1\n\
             ok 1 check-x TestX.testY # RETRY 1 (test affected tests 3 times)\n\
             ok 1 check-x TestX.testY # RETRY 2 (test affected tests 3 times)\n\
             ok 1 check-x TestX.testY\n",
        );
        let test = only_test(&report);
        assert_eq!((test.retries, test.outcome), (2, TestOutcome::Passed));
    }

    #[test]
    fn a_retry_comment_on_its_own_line_applies_to_the_result_before_it() {
        let report = parse("1..1\nnot ok 1 - t\n# RETRY 1 (infra)\nok 1 - t\n");
        let test = only_test(&report);
        assert_eq!((test.retries, test.outcome), (1, TestOutcome::Passed));
        assert_eq!(test.retry_reasons, vec!["infra"]);
    }

    #[test]
    fn a_retry_without_a_later_attempt_is_kept_and_warned_about() {
        let report = parse("1..1\nnot ok 1 - t # RETRY 1 (flake)\n");
        let test = only_test(&report);
        assert_eq!((test.retries, test.outcome), (1, TestOutcome::Failed));
        assert!(
            has_warning(&report, "retry was announced"),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn repeated_names_without_retry_stay_separate_tests() {
        let report = parse("1..2\nok 1 - same\nok 2 - same\n");
        assert_eq!(report.tests.len(), 2);
    }

    #[test]
    fn cockpit_duration_lines_give_durations() {
        let table: &[(&str, &str, Option<f64>)] = &[
            (
                "after the result with its number",
                "ok 3 - t\n# 3 TEST PASSED [26s on host-name]\n",
                Some(26.0),
            ),
            (
                "before the result",
                "# 1 TEST FAILED [105s on host]\nnot ok 3 - t\n",
                Some(105.0),
            ),
            (
                "minutes and seconds",
                "ok 3 - t\n# 3 TEST PASSED [1m 5s on host]\n",
                Some(65.0),
            ),
            ("inline duration", "ok 3 - t # duration: 26s\n", Some(26.0)),
            (
                "inline duration then skip",
                "ok 3 - t # duration: 4s # SKIP nope\n",
                Some(4.0),
            ),
            ("node-tap time", "ok 3 - t # time=1500ms\n", Some(1.5)),
            (
                "summary lines are not durations",
                "ok 3 - t\n# 3 TESTS FAILED [99s on host]\n",
                None,
            ),
            (
                "passed summary is not a duration",
                "ok 3 - t\n# TESTS PASSED [99s on host]\n",
                None,
            ),
        ];
        for (what, body, want) in table {
            let report = parse(&format!("1..1\n{body}"));
            assert_eq!(only_test(&report).duration_seconds, *want, "{what}");
        }
    }

    #[test]
    fn a_duration_line_for_another_number_goes_to_the_next_result() {
        let report = parse(
            "1..2\n\
             # 1 TEST PASSED [10s on h]\n\
             ok 1 - a\n\
             # 1 TEST PASSED [20s on h]\n\
             ok 2 - b\n",
        );
        let durations: Vec<_> = report.tests.iter().map(|t| t.duration_seconds).collect();
        assert_eq!(durations, vec![Some(10.0), Some(20.0)]);
    }

    #[test]
    fn inline_duration_and_skip_work_together_on_one_cockpit_line() {
        let report = parse("1..1\nok 1 testFoo (check_foo.TestFoo) # duration: 3s # SKIP no kvm\n");
        let test = only_test(&report);
        assert_eq!(test.outcome, TestOutcome::Skipped);
        assert_eq!(test.duration_seconds, Some(3.0));
        assert_eq!(test.message.as_deref(), Some("no kvm"));
    }
}
