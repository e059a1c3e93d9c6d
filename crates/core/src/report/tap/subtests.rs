//! Subtests: indented child lines (TAP 14 `# Subtest: name`) and buffered
//! `ok 1 - name {` … `}` blocks. Their points are summed up by the parent's
//! result line; failing first-level points are named in the parent's message.

use super::diagnostics::push_message;
use super::lexer::{bailout_reason, parse_result};
use super::parser::Parser;
use super::{MAX_NAME_BYTES, MAX_NESTING_DEPTH};
use crate::text::clip;

/// Names of failing child points quoted in a parent's message.
pub(super) const MAX_CHILD_FAILURES: usize = 20;

/// `Subtest: name` / `Subtest` (text after `#`).
pub(super) fn subtest_header(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("Subtest")?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix(':').map(str::trim)
}

impl<'a> Parser<'a> {
    /// An indented line outside YAML: part of a subtest.
    pub(super) fn child_line(
        &mut self,
        no: usize,
        indent: usize,
        body: &str,
        brace_target: Option<usize>,
    ) {
        let depth = indent / 4;
        if depth > MAX_NESTING_DEPTH {
            if !self.warned_depth {
                self.warned_depth = true;
                self.warn(
                    no,
                    format!(
                        "subtests nested deeper than {MAX_NESTING_DEPTH} levels; deeper lines ignored"
                    ),
                );
            }
            return;
        }
        if let Some(reason) = bailout_reason(body.trim_end()) {
            self.bail_out(no, reason);
            return;
        }
        if brace_target.is_none() {
            self.in_child = true;
            self.recent = None;
            self.comment_target = None;
        }
        if depth != 1 {
            return;
        }
        if let Some(text) = body.strip_prefix('#') {
            if brace_target.is_none()
                && self.subtest_name.is_none()
                && let Some(name) = subtest_header(text.trim())
            {
                self.subtest_name = Some(name.to_string());
            }
            return;
        }
        let Some(result) = parse_result(body.trim_end()) else {
            return;
        };
        if result.ok || result.comment.directive.is_some() {
            return;
        }
        let name = if result.description.is_empty() {
            match result.number {
                Some(n) => format!("test {n}"),
                None => "unnamed test".to_string(),
            }
        } else {
            clip(&result.description, MAX_NAME_BYTES).to_string()
        };
        match brace_target {
            Some(target) => {
                if self.meta[target].takes_diagnostics {
                    push_message(
                        &mut self.tests[target].message,
                        &format!("failed subtest point: {name}"),
                    );
                }
            }
            None => {
                if self.child_failures.len() < MAX_CHILD_FAILURES {
                    self.child_failures.push(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::TestOutcome;
    use crate::report::tap::tests::{only_test, outcomes, parse};

    // --- subtests ---------------------------------------------------------

    #[test]
    fn subtests_are_summed_up_by_their_parent_result() {
        let table: &[(&str, &str)] = &[
            (
                "TAP 14 indented",
                "# Subtest: parent\n    1..2\n    ok 1 - a\n    not ok 2 - b\nnot ok 1 - parent\n1..1\n",
            ),
            (
                "buffered braces",
                "not ok 1 - parent {\n    1..2\n    ok 1 - a\n    not ok 2 - b\n}\n1..1\n",
            ),
        ];
        for (what, input) in table {
            let report = parse(input);
            let test = only_test(&report);
            assert_eq!(
                (test.name.as_str(), test.outcome),
                ("parent", TestOutcome::Failed),
                "{what}"
            );
            assert!(
                test.message.as_deref().unwrap_or("").contains("b"),
                "{what}: {:?}",
                test.message
            );
            assert!(report.warnings.is_empty(), "{what}: {:?}", report.warnings);
        }
    }

    #[test]
    fn a_result_without_description_takes_the_subtest_name() {
        let report = parse("# Subtest: the child\n    ok 1\n    1..1\nok 1\n1..1\n");
        assert_eq!(only_test(&report).name, "the child");
    }

    #[test]
    fn ten_thousand_levels_of_nesting_are_skipped_with_one_warning() {
        // a tab is 4 columns, i.e. one level: 10k levels in about 50 MB
        let depth = 10_000;
        let mut input = String::from("TAP version 14\n");
        for level in 1..=depth {
            input.push_str(&"\t".repeat(level));
            input.push_str(if level % 2 == 0 {
                "# Subtest: deeper\n"
            } else {
                "not ok 1 - deeper\n"
            });
        }
        input.push_str("ok 1 - top\n1..1\n");
        let report = parse(&input);
        assert_eq!(outcomes(&report), vec![("top", TestOutcome::Passed)]);
        let depth_warnings = report
            .warnings
            .iter()
            .filter(|w| w.contains("nested deeper"))
            .count();
        assert_eq!(depth_warnings, 1, "{:?}", report.warnings);
    }

    #[test]
    fn ten_thousand_nested_braces_do_not_recurse() {
        let mut input = String::new();
        for _ in 0..10_000 {
            input.push_str("ok 1 - x {\n{\n");
        }
        input.push_str(&"}\n".repeat(10_000));
        let report = parse(&input);
        assert_eq!(report.tests.len(), 10_000);
    }
}
