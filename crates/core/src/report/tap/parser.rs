//! The stateful reader: one pass over the lines, constant state per line; what
//! each line does to the report (tests, counts, warnings).

use std::collections::{HashMap, HashSet};

use super::cockpit::{normalize_name, parse_cockpit_duration};
use super::diagnostics::push_message;
use super::lexer::parse_retry;
use super::lexer::{
    DirectiveKind, ResultLine, bailout_reason, is_bailout, parse_plan, parse_result, split_indent,
    strip_prefix_ci,
};
use super::plan::Plan;
use super::subtests::subtest_header;
use super::{MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_WARNINGS, TapCounts};
use crate::model::{TestOutcome, TestResult};
use crate::report::{Report, ReportFormat};
use crate::text::clip;

#[derive(Debug, Default)]
pub(super) struct Meta {
    pub(super) number: u64,
    pub(super) has_duration: bool,
    /// the last attempt said `# RETRY`
    pub(super) awaiting_retry: bool,
    /// outcome of the last attempt allows diagnostics to be attached
    pub(super) takes_diagnostics: bool,
}

#[derive(Debug, Default)]
pub(super) enum Mode<'a> {
    #[default]
    Normal,
    Yaml {
        target: Option<usize>,
        lines: Vec<&'a str>,
        bytes: usize,
    },
    /// inside `{` … `}` of a buffered subtest
    Brace { target: Option<usize> },
}

#[derive(Debug, Default)]
pub(super) struct Parser<'a> {
    pub(super) tests: Vec<TestResult>,
    pub(super) meta: Vec<Meta>,
    pub(super) warnings: Vec<String>,
    pub(super) suppressed_warnings: u64,
    pub(super) counts: TapCounts,
    pub(super) mode: Mode<'a>,
    pub(super) plan: Option<Plan>,
    pub(super) skip_all: bool,
    pub(super) warned_after_plan: bool,
    pub(super) warned_depth: bool,
    pub(super) bailed: bool,
    /// last explicit or implied test number
    pub(super) last_number: Option<u64>,
    pub(super) seen_numbers: HashSet<u64>,
    pub(super) numbers: Vec<(usize, u64)>,
    /// test whose result line is the last significant top-level line
    pub(super) recent: Option<usize>,
    /// failed test that takes the following comment lines as diagnostics
    pub(super) comment_target: Option<usize>,
    /// duration announced before the result line it belongs to
    pub(super) pending_duration: Option<f64>,
    /// `# Subtest: name` seen, its parent result not yet
    pub(super) subtest_name: Option<String>,
    pub(super) in_child: bool,
    pub(super) child_failures: Vec<String>,
    /// tests waiting for a retry, by name
    pub(super) awaiting: HashMap<String, usize>,
}

impl<'a> Parser<'a> {
    pub(super) fn warn(&mut self, line: usize, message: impl AsRef<str>) {
        if self.warnings.len() < MAX_WARNINGS {
            let message = clip(message.as_ref(), MAX_NAME_BYTES);
            self.warnings.push(format!("line {line}: {message}"));
        } else {
            self.suppressed_warnings += 1;
        }
    }

    pub(super) fn line(&mut self, no: usize, line: &'a str) {
        let (indent, body) = split_indent(line);

        if let Mode::Yaml { lines, bytes, .. } = &mut self.mode {
            let ends_block = indent == 0 && (parse_result(body).is_some() || is_bailout(body));
            if !ends_block {
                if body.trim_end() == "..." {
                    self.end_yaml();
                } else if *bytes < MAX_MESSAGE_BYTES {
                    *bytes += line.len() + 1;
                    lines.push(line);
                }
                return;
            }
            self.warn(no, "YAML diagnostics block not closed with '...'");
            self.end_yaml();
        }

        if let Mode::Brace { target } = self.mode {
            if indent > 0 {
                self.child_line(no, indent, body, target);
                return;
            }
            if body.trim_end() == "}" {
                self.mode = Mode::Normal;
                return;
            }
            if parse_result(body).is_some() {
                self.warn(
                    no,
                    "buffered subtest '{' not closed by '}' before the next test",
                );
                self.mode = Mode::Normal;
            } else if !is_bailout(body) {
                return; // plans, comments and noise inside a buffered child
            }
        }

        if body.trim().is_empty() {
            return;
        }

        if indent > 0 {
            if indent < 4 && body.trim_end() == "---" {
                self.mode = Mode::Yaml {
                    target: self.recent,
                    lines: Vec::new(),
                    bytes: 0,
                };
                return;
            }
            if indent >= 4 {
                self.child_line(no, indent, body, None);
            }
            return;
        }

        let body = body.trim_end();
        if body == "{" {
            self.mode = Mode::Brace {
                target: self.recent,
            };
            return;
        }
        if let Some(result) = parse_result(body) {
            self.result(no, result);
            return;
        }
        if let Some(reason) = bailout_reason(body) {
            self.bail_out(no, reason);
            return;
        }
        if let Some(plan) = parse_plan(body) {
            self.plan(no, plan);
            return;
        }
        if strip_prefix_ci(body, "tap version").is_some() || body.starts_with("pragma ") {
            return;
        }
        if let Some(text) = body.strip_prefix('#') {
            self.comment(no, text.trim());
        }
        // anything else is output noise: ignored
    }

    fn comment(&mut self, no: usize, text: &str) {
        if let Some(name) = subtest_header(text) {
            self.subtest_name = (!name.is_empty()).then(|| name.to_string());
            self.recent = None;
            self.comment_target = None;
            return;
        }
        if let Some((number, seconds)) = parse_cockpit_duration(text) {
            match self.recent {
                Some(r) if self.meta[r].number == number && !self.meta[r].has_duration => {
                    self.tests[r].duration_seconds = Some(seconds);
                    self.meta[r].has_duration = true;
                }
                _ => self.pending_duration = Some(seconds),
            }
            return;
        }
        if let Some((reason, _)) = parse_retry(text) {
            if let Some(r) = self.recent {
                self.mark_retry(r, reason);
            } else {
                self.warn(no, "RETRY comment without a test result before it");
            }
            return;
        }
        if let Some(target) = self.comment_target {
            push_message(&mut self.tests[target].message, text);
        }
    }

    pub(super) fn bail_out(&mut self, no: usize, reason: &str) {
        self.bailed = true;
        let reason = reason.trim();
        self.warn(no, format!("Bail out! {reason}").trim_end());
        let running =
            matches!(self.mode, Mode::Normal) && (self.in_child || self.subtest_name.is_some());
        if running {
            let number = self.implied_number();
            let name = self
                .subtest_name
                .take()
                .unwrap_or_else(|| format!("test {number}"));
            let mut message = None;
            push_message(&mut message, &format!("Bail out! {reason}"));
            self.tests.push(TestResult {
                name,
                outcome: TestOutcome::Errored,
                duration_seconds: self.pending_duration.take(),
                retries: 0,
                retry_reasons: Vec::new(),
                message,
            });
            self.meta.push(Meta {
                number,
                ..Meta::default()
            });
        }
    }

    fn result(&mut self, no: usize, result: ResultLine) {
        if self.skip_all {
            self.warn(no, "test point after a skip-all plan (1..0) ignored");
            return;
        }
        // tap-parser compatible counts, one per point
        let c = &mut self.counts;
        c.count += 1;
        if result.ok {
            c.pass += 1;
        } else {
            c.fail += 1;
        }
        match result.comment.directive {
            Some((DirectiveKind::Skip, _)) => c.skip += 1,
            Some((DirectiveKind::Todo, _)) => c.todo += 1,
            None => {}
        }
        if result.comment.directive.is_some() {
            if result.ok {
                c.pass_with_directive += 1;
            } else {
                c.fail_with_directive += 1;
            }
        }
        if let Some(plan) = self.plan
            && plan.points_before > 0
            && !self.warned_after_plan
        {
            self.warned_after_plan = true;
            self.warn(no, "test points after the plan at the end of the stream");
        }
        if result.number_too_large {
            self.warn(no, "test number too large; numbered implicitly");
        }

        let outcome = match (&result.comment.directive, result.ok) {
            (Some(_), _) => TestOutcome::Skipped,
            (None, true) => TestOutcome::Passed,
            (None, false) => TestOutcome::Failed,
        };
        let mut message: Option<String> = None;
        match &result.comment.directive {
            Some((DirectiveKind::Skip, reason)) => push_message(&mut message, reason),
            Some((DirectiveKind::Todo, reason)) if reason.is_empty() => {
                push_message(&mut message, "TODO")
            }
            Some((DirectiveKind::Todo, reason)) => {
                push_message(&mut message, &format!("TODO: {reason}"))
            }
            None => {}
        }
        if outcome == TestOutcome::Failed {
            if let Some(extra) = &result.comment.extra {
                push_message(&mut message, extra);
            }
            if !self.child_failures.is_empty() {
                let list = std::mem::take(&mut self.child_failures);
                push_message(
                    &mut message,
                    &format!("failed subtest points: {}", list.join("; ")),
                );
            }
        }

        let description = normalize_name(&result.description);
        let implied = self.implied_number();
        let name = if !description.is_empty() {
            clip(description, MAX_NAME_BYTES).to_string()
        } else if let Some(subtest) = self.subtest_name.take() {
            clip(&subtest, MAX_NAME_BYTES).to_string()
        } else {
            format!("test {}", result.number.unwrap_or(implied))
        };
        if description.len() > MAX_NAME_BYTES {
            self.warn(
                no,
                format!("test name longer than {MAX_NAME_BYTES} bytes truncated"),
            );
        }
        let duration = result.comment.duration.or(self.pending_duration.take());
        self.pending_duration = None;

        let index = match self.awaiting.remove(&name) {
            Some(index) => {
                // another attempt of a test that announced a retry
                let test = &mut self.tests[index];
                test.outcome = outcome;
                if duration.is_some() {
                    test.duration_seconds = duration;
                }
                if outcome != TestOutcome::Passed {
                    test.message = message;
                }
                self.meta[index].awaiting_retry = false;
                self.meta[index].has_duration = test.duration_seconds.is_some();
                index
            }
            None => {
                let number = self.check_number(no, result.number, implied);
                self.tests.push(TestResult {
                    name,
                    outcome,
                    duration_seconds: duration,
                    retries: 0,
                    retry_reasons: Vec::new(),
                    message,
                });
                self.meta.push(Meta {
                    number,
                    has_duration: duration.is_some(),
                    ..Meta::default()
                });
                self.tests.len() - 1
            }
        };
        let takes_diagnostics = outcome == TestOutcome::Failed;
        self.meta[index].takes_diagnostics = takes_diagnostics;
        if let Some(reason) = result.comment.retry {
            self.mark_retry(index, reason);
        }
        self.recent = Some(index);
        self.comment_target = takes_diagnostics.then_some(index);
        self.subtest_name = None;
        self.in_child = false;
        self.child_failures.clear();
        if result.brace {
            self.mode = Mode::Brace {
                target: Some(index),
            };
        }
    }

    pub(super) fn finish(mut self) -> (Report, TapCounts) {
        if matches!(self.mode, Mode::Yaml { .. }) {
            self.warn_end("YAML diagnostics block not closed with '...'");
            self.end_yaml();
        }
        if matches!(self.mode, Mode::Brace { .. }) && !self.bailed {
            self.warn_end("buffered subtest '{' not closed by '}'");
        }
        if !self.bailed {
            match self.plan {
                None if self.counts.count == 0 => {
                    self.warn_end("no TAP plan and no test points found")
                }
                None => self.warn_end("no plan (1..N) in the stream"),
                Some(plan) if plan.end >= plan.start => {
                    let planned = plan.end - plan.start + 1;
                    let seen = self.tests.len() as u64;
                    if planned != seen {
                        self.warn_end(&format!(
                            "plan {}..{} expects {planned} tests, the stream has {seen}",
                            plan.start, plan.end
                        ));
                    }
                }
                Some(_) => {}
            }
            let mut waiting: Vec<usize> = self.awaiting.values().copied().collect();
            waiting.sort_unstable();
            for index in waiting {
                let name = self.tests[index].name.clone();
                self.warn_end(&format!(
                    "{name}: a retry was announced but no later result came"
                ));
            }
        }
        if self.suppressed_warnings > 0 {
            let n = self.suppressed_warnings;
            self.warnings.push(format!("{n} more warnings not shown"));
        }
        let report = Report {
            format: ReportFormat::Tap,
            tests: self.tests,
            bailed_out: self.bailed,
            warnings: self.warnings,
        };
        (report, self.counts)
    }

    fn warn_end(&mut self, message: &str) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings
                .push(format!("end of stream: {}", clip(message, MAX_NAME_BYTES)));
        } else {
            self.suppressed_warnings += 1;
        }
    }
}
