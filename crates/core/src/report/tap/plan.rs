//! Plans and test numbering: each rule gives a warning with the line number,
//! never a failure (see the module docs of `tap`).

use super::lexer::PlanLine;
use super::parser::Parser;

#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) start: u64,
    pub(super) end: u64,
    /// test points seen when the plan came
    pub(super) points_before: u64,
}

impl<'a> Parser<'a> {
    pub(super) fn plan(&mut self, no: usize, plan: PlanLine) {
        let PlanLine::Valid { start, end } = plan else {
            self.warn(no, "unrecognised plan line ignored");
            return;
        };
        self.recent = None;
        self.comment_target = None;
        if let Some(existing) = self.plan {
            self.warn(
                no,
                format!(
                    "extra plan {start}..{end} ignored (plan {}..{} came first)",
                    existing.start, existing.end
                ),
            );
            return;
        }
        let points = self.counts.count;
        self.plan = Some(Plan {
            start,
            end,
            points_before: points,
        });
        if end < start {
            if points == 0 {
                self.skip_all = true;
            } else {
                self.warn(
                    no,
                    format!("plan {start}..{end} says no tests, but {points} ran"),
                );
            }
            return;
        }
        if points > 0 {
            let outside: Vec<(usize, u64)> = self
                .numbers
                .iter()
                .copied()
                .filter(|&(_, n)| n < start || n > end)
                .collect();
            for (line, n) in outside {
                self.warn(
                    line,
                    format!("test number {n} is outside the plan {start}..{end}"),
                );
            }
            self.numbers = Vec::new();
        }
    }

    /// The number a point without one gets: previous + 1, or the plan's start.
    pub(super) fn implied_number(&self) -> u64 {
        match (self.last_number, self.plan) {
            (Some(n), _) => n.saturating_add(1),
            (None, Some(plan)) => plan.start,
            (None, None) => 1,
        }
    }

    /// Numbering rules for a new test; returns its number.
    pub(super) fn check_number(&mut self, no: usize, number: Option<u64>, implied: u64) -> u64 {
        let n = number.unwrap_or(implied);
        if number.is_some() {
            let first_without_plan = self.last_number.is_none() && self.plan.is_none();
            if self.seen_numbers.contains(&n) {
                self.warn(no, format!("test number {n} used more than once"));
            } else if n != implied && !first_without_plan {
                self.warn(
                    no,
                    format!("test number {n} out of sequence (expected {implied})"),
                );
            }
        }
        if let Some(plan) = self.plan {
            if plan.end >= plan.start && (n < plan.start || n > plan.end) {
                self.warn(
                    no,
                    format!(
                        "test number {n} is outside the plan {}..{}",
                        plan.start, plan.end
                    ),
                );
            }
        } else {
            self.numbers.push((no, n));
        }
        self.seen_numbers.insert(n);
        self.last_number = Some(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use crate::report::tap::MAX_WARNINGS;
    use crate::report::tap::tests::{has_warning, parse};

    // --- plans and numbering ---------------------------------------------

    #[test]
    fn plan_and_numbering_problems_are_warnings_not_failures() {
        let table: &[(&str, &str, &str)] = &[
            ("no plan", "ok 1\nok 2\n", "no plan"),
            (
                "too few",
                "1..3\nok 1\nok 2\n",
                "expects 3 tests, the stream has 2",
            ),
            ("too many", "1..1\nok 1\nok 2\n", "outside the plan 1..1"),
            ("duplicate", "1..2\nok 1\nok 1\n", "used more than once"),
            (
                "out of sequence",
                "1..3\nok 1\nok 3\nok 2\n",
                "out of sequence (expected 2)",
            ),
            ("extra plan", "1..1\nok 1\n1..1\n", "extra plan"),
            (
                "bad plan",
                "1..2 todo 1;\nok 1\nok 2\n",
                "unrecognised plan line",
            ),
            (
                "tests after the trailing plan",
                "ok 1\n1..1\nok 2\n",
                "after the plan",
            ),
            (
                "outside a trailing plan",
                "ok 1\nok 7\n1..2\n",
                "7 is outside the plan 1..2",
            ),
            ("1..0 with tests", "ok 1\n1..0\n", "says no tests"),
        ];
        for (what, input, needle) in table {
            let report = parse(input);
            assert!(
                has_warning(&report, needle),
                "{what}: {:?}",
                report.warnings
            );
            assert_eq!(report.totals().failed, 0, "{what}");
        }
    }

    #[test]
    fn well_formed_streams_have_no_warnings() {
        let table = [
            "TAP version 13\n1..2\nok 1 - a\nnot ok 2 - b\n",
            "ok 1\nok 2\n1..2\n",
            "8..9\nok 8\nok 9\n",
            "1..0 # SKIP no tests here\n",
            "ok 1 a\nok b\nok 3 c\n1..3\n",
        ];
        for input in table {
            assert!(
                parse(input).warnings.is_empty(),
                "{input}: {:?}",
                parse(input).warnings
            );
        }
    }

    #[test]
    fn a_skip_all_plan_means_no_tests_and_later_points_are_ignored() {
        let report = parse("1..0 # SKIP no flux\nok 1 - nope\n");
        assert!(report.tests.is_empty());
        assert!(has_warning(&report, "skip-all"));
    }

    #[test]
    fn too_many_warnings_are_summed_up() {
        let input: String = (0..1000).map(|_| "ok 1\n").collect();
        let report = parse(&input);
        assert_eq!(report.tests.len(), 1000);
        assert_eq!(report.warnings.len(), MAX_WARNINGS + 1);
        assert!(
            report
                .warnings
                .last()
                .unwrap()
                .contains("more warnings not shown")
        );
    }
}
