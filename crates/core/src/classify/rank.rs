//! Ranking: which line of the log is the evidence.
//!
//! The scanner feeds every line that matters, in order, with what was found on
//! it ([`Hit`]). The [`Ranker`] first locates *where* the job failed, then picks
//! the most specific line there:
//!
//! 1. A match of a rule of priority [`OUTSIDE_PRIORITY`] or more (the job was
//!    stopped from outside: timeout, cancellation, OOM kill, lost runner) wins
//!    wherever it is.
//! 2. Otherwise the log is cut into steps at the CI's step markers (see the
//!    `steps` module). The failing steps are those that ended with a non-zero
//!    exit code; when no step did (a truncated log, a CI that prints no such
//!    line, plain tool output), every step after the job's preamble; a log
//!    without markers is one step. A job that reported success has none.
//! 3. Within the failing steps each line gets a [`Rank`]: rule matches first
//!    (by rule priority), then lines that start with an error word, then the
//!    line a "see above" summary points at, then lines with an error word
//!    elsewhere, then summaries, then — when the step has nothing else — its
//!    last output line (a short step) or its exit marker. A rule match whose
//!    next line matches a rule of lower priority (its detail: an assertion, a
//!    file:line message) ranks above one that stands alone (a failing subtest
//!    with its message beats its parent test line). Equal ranks go to the
//!    earliest line.
//!
//! Memory is bounded: a history of the last [`HISTORY`] lines (for context and
//! for "the line above"), and the best [`KEEP`] candidates of the current step,
//! of the failing steps, of the unmarked steps, of the preamble and of the
//! outside events.

use std::collections::VecDeque;

use super::heuristic::Strength;
use super::rules::{Evidence, OUTSIDE_PRIORITY};
use super::steps::Marker;
use crate::text::clip;

/// Number of (non-blank) context lines kept before and after the evidence line.
pub const CONTEXT_LINES: usize = 3;
/// Cap on the evidence line and on every context line.
pub const EVIDENCE_CAP_BYTES: usize = 1024;
/// The evidence and the further candidates reported with it.
const KEEP: usize = 4;
/// Lines remembered for context and for "the line above".
const HISTORY: usize = 16;
/// A step of at most this many lines whose output no rule or error word
/// explains is reported by its last output line; a longer one by its exit marker.
pub(crate) const SHORT_STEP_LINES: u64 = 80;

/// How much a line says about the failure (declaration order = ascending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// The last output line of an unexplained step, or its exit marker.
    Fallback,
    /// A summary (`Tests run: 9, Failures: 2`).
    Summary,
    /// An error word somewhere in the line.
    WeakError,
    /// The line above a "see above" summary (`make: *** [x] Error 1`).
    SeeAbove,
    /// A line that starts with an error word.
    StrongError,
    /// A rule match.
    Rule,
}

/// Higher is better; ties go to the earlier line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    kind: Kind,
    priority: i32,
    /// The next non-blank line matched a rule of lower priority (a detail).
    confirmed: bool,
}

impl Rank {
    fn new(kind: Kind, priority: i32) -> Self {
        Rank {
            kind,
            priority,
            confirmed: false,
        }
    }
}

/// A rule that matched a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuleHit {
    /// Index into the classifier's rules.
    pub rule: usize,
    pub priority: i32,
    pub evidence: Evidence,
}

impl RuleHit {
    fn outside(&self) -> bool {
        self.priority >= OUTSIDE_PRIORITY
    }

    /// A match that points at its own line.
    fn direct(&self) -> bool {
        matches!(self.evidence, Evidence::Line | Evidence::Next)
    }
}

/// What the scanner found on one non-blank cleaned line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit {
    /// Nothing (always the case for lines the prefilter ruled out).
    Quiet,
    /// A command echo (`$ make`, `+ make`): context, never evidence.
    Echo,
    /// A CI step marker, and the outside rule that matched it, if any.
    Marker(Marker, Option<RuleHit>),
    Rule(RuleHit),
    /// An error-like line no rule matched.
    Error(Strength),
}

/// A candidate evidence line with its context.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    /// `None`: no rule matched (class "unknown").
    pub rule: Option<usize>,
    pub rank: Rank,
    pub line: u64,
    pub text: String,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// The outcome of a ranked log.
#[derive(Debug, Default)]
pub(crate) struct Ranked {
    pub primary: Option<Found>,
    /// Up to 3 further candidates, best first.
    pub others: Vec<Found>,
}

/// The best [`KEEP`] candidates, best first, one per line.
#[derive(Debug, Default)]
struct TopK(Vec<Found>);

impl TopK {
    fn better(a: &Found, b: &Found) -> bool {
        a.rank > b.rank || (a.rank == b.rank && a.line < b.line)
    }

    /// Adds `f`; a line already kept keeps the better rank, and a rule's class
    /// rather than none (an error-like line that a "see above" summary points
    /// at gets the summary's class).
    fn offer(&mut self, mut f: Found) {
        if let Some(k) = self.0.iter().position(|g| g.line == f.line) {
            if !Self::better(&f, &self.0[k]) {
                if self.0[k].rule.is_none() {
                    self.0[k].rule = f.rule;
                }
                return;
            }
            let old = self.0.remove(k);
            f.rule = f.rule.or(old.rule);
        }
        let at = self
            .0
            .iter()
            .position(|g| Self::better(&f, g))
            .unwrap_or(self.0.len());
        if at < KEEP {
            self.0.insert(at, f);
            self.0.truncate(KEEP);
        }
    }

    fn merge(&mut self, other: TopK) {
        for f in other.0 {
            self.offer(f);
        }
    }

    fn confirm(&mut self, line: u64) {
        if let Some(k) = self.0.iter().position(|g| g.line == line) {
            let mut f = self.0.remove(k);
            f.rank.confirmed = true;
            self.offer(f);
        }
    }

    fn wants_after(&self) -> bool {
        self.0.iter().any(|f| f.after.len() < CONTEXT_LINES)
    }

    fn push_after(&mut self, text: &str) {
        for f in &mut self.0 {
            if f.after.len() < CONTEXT_LINES {
                f.after.push(clip(text, EVIDENCE_CAP_BYTES).to_string());
            }
        }
    }
}

/// One remembered non-blank line.
#[derive(Debug)]
struct Entry {
    line: u64,
    text: String,
    /// Output of the current step that a summary can point at: not an echo, a
    /// marker or a summary itself.
    content: bool,
    /// Output of the step (not an echo or a marker).
    output: bool,
}

/// The step being read.
#[derive(Debug, Default)]
struct Step {
    /// The line of the marker that started it (0: the start of the log).
    start: u64,
    top: TopK,
    /// Entries of `history` that belong to this step.
    entries: usize,
    /// A line was seen since it started.
    has_lines: bool,
}

/// The ranking state machine (see the module docs).
#[derive(Debug)]
pub(crate) struct Ranker {
    /// Logs: steps and markers count; test messages: only rule matches.
    structure: bool,
    history: VecDeque<Entry>,
    step: Step,
    /// A step start marker was seen (so the lines before it are the preamble).
    started: bool,
    failing: TopK,
    unmarked: TopK,
    preamble: TopK,
    outside: TopK,
    job_end: Option<u32>,
    /// An announcement rule whose evidence is the next non-blank line.
    pending_next: Option<RuleHit>,
    /// The line and priority of a rule match waiting to be confirmed by the
    /// next line.
    unconfirmed: Option<(u64, i32)>,
}

impl Ranker {
    pub(crate) fn new(structure: bool) -> Self {
        Ranker {
            structure,
            history: VecDeque::with_capacity(HISTORY),
            step: Step::default(),
            started: false,
            failing: TopK::default(),
            unmarked: TopK::default(),
            preamble: TopK::default(),
            outside: TopK::default(),
            job_end: None,
            pending_next: None,
            unconfirmed: None,
        }
    }

    /// Whether the next non-blank lines are needed (as context, or to resolve
    /// an announcement or a confirmation), even if nothing matches them.
    pub(crate) fn wants_lines(&self) -> bool {
        self.pending_next.is_some()
            || self.unconfirmed.is_some()
            || self.step.top.wants_after()
            || self.failing.wants_after()
            || self.unmarked.wants_after()
            || self.preamble.wants_after()
            || self.outside.wants_after()
    }

    /// A Travis CI step starts on line `n` (its marker is in the raw bytes).
    pub(crate) fn step_starts(&mut self, n: u64) {
        if self.structure {
            if self.step.has_lines {
                self.close(None, n.saturating_sub(1));
            }
            self.started = true;
        }
    }

    /// Line `n` (non-blank once cleaned), in order.
    pub(crate) fn line(&mut self, n: u64, text: &str, hit: Hit) {
        self.step.has_lines = true;
        // the candidates kept so far get this line as context after them
        self.push_after(text);
        let (rule_hit, marker) = match hit {
            Hit::Echo => {
                // transparent for announcements and confirmations
                self.remember(n, text, false, false);
                return;
            }
            Hit::Marker(marker, outside) => (outside, Some(marker)),
            Hit::Rule(r) => (Some(r), None),
            Hit::Quiet | Hit::Error(_) => (None, None),
        };
        if let Some(r) = rule_hit.filter(RuleHit::outside) {
            let f = self.found_here(Some(r.rule), Rank::new(Kind::Rule, r.priority), n, text);
            self.outside.offer(f);
        }
        if let Some(marker) = marker {
            self.marker(marker, n, text);
            return;
        }
        // the previous rule match is confirmed by a detail on this line: a
        // match of lower priority (a failing test followed by its assertion or
        // file:line message, not by the next failing test)
        if let Some((l, p)) = self.unconfirmed.take()
            && let Some(r) = rule_hit
            && r.direct()
            && r.priority < p
        {
            self.step.top.confirm(l);
        }
        let mut new: Vec<Found> = Vec::new();
        if let Some(anchor) = self.pending_next.take() {
            let takes_over = rule_hit.is_some_and(|r| !r.direct() || r.priority > anchor.priority);
            if !takes_over {
                new.push(self.found_here(
                    Some(anchor.rule),
                    Rank::new(Kind::Rule, anchor.priority),
                    n,
                    text,
                ));
            }
        }
        let mut content = true;
        match hit {
            Hit::Rule(r) if r.outside() => {}
            Hit::Rule(r) => match r.evidence {
                Evidence::Line => new.push(self.found_here(
                    Some(r.rule),
                    Rank::new(Kind::Rule, r.priority),
                    n,
                    text,
                )),
                Evidence::Next => self.pending_next = Some(r),
                Evidence::Previous => {
                    content = false;
                    let f = match self.last(|e| e.content) {
                        Some(k) => self.found_at(
                            k,
                            Some(r.rule),
                            Rank::new(Kind::SeeAbove, r.priority),
                            text,
                        ),
                        None => self.found_here(
                            Some(r.rule),
                            Rank::new(Kind::Summary, r.priority),
                            n,
                            text,
                        ),
                    };
                    new.push(f);
                }
                Evidence::Summary => {
                    content = false;
                    new.push(self.found_here(
                        Some(r.rule),
                        Rank::new(Kind::Summary, r.priority),
                        n,
                        text,
                    ));
                }
            },
            Hit::Error(s) => {
                let kind = match s {
                    Strength::Strong => Kind::StrongError,
                    Strength::Weak => Kind::WeakError,
                };
                new.push(self.found_here(None, Rank::new(kind, 0), n, text));
            }
            Hit::Quiet | Hit::Echo | Hit::Marker(..) => {}
        }
        for f in new {
            if f.line == n && f.rank.kind == Kind::Rule {
                self.unconfirmed = Some((n, f.rank.priority));
            }
            self.step.top.offer(f);
        }
        self.remember(n, text, content, true);
    }

    fn marker(&mut self, marker: Marker, n: u64, text: &str) {
        if !self.structure {
            self.remember(n, text, true, true);
            return;
        }
        match marker {
            Marker::Exit(code) => {
                if self.step.top.0.is_empty() {
                    let short = n.saturating_sub(self.step.start + 1) <= SHORT_STEP_LINES;
                    let f = match self.last(|e| e.output) {
                        Some(k) if short => {
                            self.found_at(k, None, Rank::new(Kind::Fallback, 0), text)
                        }
                        _ => self.found_here(None, Rank::new(Kind::Fallback, -1), n, text),
                    };
                    self.step.top.offer(f);
                }
                self.remember(n, text, false, false);
                self.close(Some(code), n);
            }
            Marker::StepStart => {
                self.remember(n, text, false, false);
                self.close(None, n);
                self.started = true;
            }
            Marker::ExitContinues => self.remember(n, text, false, false),
            Marker::JobEnd(code) => {
                self.job_end = Some(code);
                self.remember(n, text, false, false);
            }
        }
    }

    /// Ends the current step (`code`: its exit code, if a marker said) at line
    /// `at`; the next one starts after it.
    fn close(&mut self, code: Option<u32>, at: u64) {
        let step = std::mem::replace(
            &mut self.step,
            Step {
                start: at,
                ..Step::default()
            },
        );
        match code {
            Some(0) => {}
            Some(_) => self.failing.merge(step.top),
            None if self.started => self.unmarked.merge(step.top),
            None => self.preamble.merge(step.top),
        }
        self.pending_next = None;
        self.unconfirmed = None;
    }

    /// The evidence and up to 3 further candidates.
    pub(crate) fn finish(mut self) -> Ranked {
        let last = self.step.start;
        self.close(None, last);
        let chosen = if !self.failing.0.is_empty() {
            self.failing
        } else if self.job_end == Some(0) && self.structure {
            TopK::default()
        } else if self.started {
            self.unmarked
        } else {
            self.preamble
        };
        let mut all = self.outside.0;
        for f in chosen.0 {
            if !all.iter().any(|g| g.line == f.line) {
                all.push(f);
            }
        }
        let mut all = all.into_iter();
        let primary = all.next();
        Ranked {
            primary,
            others: all.take(KEEP - 1).collect(),
        }
    }

    fn push_after(&mut self, text: &str) {
        self.step.top.push_after(text);
        self.failing.push_after(text);
        self.unmarked.push_after(text);
        self.preamble.push_after(text);
        self.outside.push_after(text);
    }

    fn remember(&mut self, n: u64, text: &str, content: bool, output: bool) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Entry {
            line: n,
            text: clip(text, EVIDENCE_CAP_BYTES).to_string(),
            content,
            output,
        });
        self.step.entries = (self.step.entries + 1).min(HISTORY);
    }

    /// The index in `history` of the latest entry of this step with `want`.
    fn last(&self, want: impl Fn(&Entry) -> bool) -> Option<usize> {
        let len = self.history.len();
        (len - self.step.entries.min(len)..len)
            .rev()
            .find(|&k| want(&self.history[k]))
    }

    /// A candidate for the line being read: the history is its context before.
    fn found_here(&self, rule: Option<usize>, rank: Rank, n: u64, text: &str) -> Found {
        let len = self.history.len();
        Found {
            rule,
            rank,
            line: n,
            text: clip(text.trim_end(), EVIDENCE_CAP_BYTES).to_string(),
            before: self
                .history
                .range(len.saturating_sub(CONTEXT_LINES)..)
                .map(|e| e.text.clone())
                .collect(),
            after: Vec::with_capacity(CONTEXT_LINES),
        }
    }

    /// A candidate for history entry `k`, found while reading `current` (which
    /// follows it).
    fn found_at(&self, k: usize, rule: Option<usize>, rank: Rank, current: &str) -> Found {
        let e = &self.history[k];
        let mut after: Vec<String> = self
            .history
            .range(k + 1..)
            .take(CONTEXT_LINES)
            .map(|e| e.text.clone())
            .collect();
        if after.len() < CONTEXT_LINES {
            after.push(clip(current, EVIDENCE_CAP_BYTES).to_string());
        }
        Found {
            rule,
            rank,
            line: e.line,
            text: e.text.trim_end().to_string(),
            before: self
                .history
                .range(k.saturating_sub(CONTEXT_LINES)..k)
                .map(|e| e.text.clone())
                .collect(),
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rule: usize, priority: i32, evidence: Evidence) -> Hit {
        Hit::Rule(RuleHit {
            rule,
            priority,
            evidence,
        })
    }

    fn run(lines: &[(&str, Hit)]) -> Ranked {
        let mut r = Ranker::new(true);
        for (i, (text, hit)) in lines.iter().enumerate() {
            r.line(i as u64 + 1, text, *hit);
        }
        r.finish()
    }

    fn line_of(r: &Ranked) -> Option<u64> {
        r.primary.as_ref().map(|f| f.line)
    }

    #[test]
    fn the_failing_step_is_the_one_whose_exit_code_is_not_zero() {
        let r = run(&[
            ("error: in a passing step", Hit::Error(Strength::Strong)),
            (
                "The command \"a\" exited with 0.",
                Hit::Marker(Marker::Exit(0), None),
            ),
            ("some output", Hit::Quiet),
            ("warning: it failed", Hit::Error(Strength::Weak)),
            (
                "The command \"b\" exited with 1.",
                Hit::Marker(Marker::Exit(1), None),
            ),
        ]);
        assert_eq!(line_of(&r), Some(4));
    }

    #[test]
    fn an_outside_stop_wins_wherever_it_is() {
        let r = run(&[
            ("The job was cancelled", rule(0, 100, Evidence::Line)),
            ("FAIL: test_x", rule(1, 30, Evidence::Line)),
            (
                "The command \"b\" exited with 1.",
                Hit::Marker(Marker::Exit(1), None),
            ),
        ]);
        assert_eq!(line_of(&r), Some(1));
        assert_eq!(r.others.iter().map(|f| f.line).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_summary_points_at_the_line_above_it() {
        let r = run(&[
            ("compiling", Hit::Quiet),
            ("the real problem", Hit::Quiet),
            ("make: *** [all] Error 1", rule(0, 4, Evidence::Previous)),
            ("make: *** [top] Error 2", rule(0, 4, Evidence::Previous)),
            (
                "The command \"make\" exited with 2.",
                Hit::Marker(Marker::Exit(2), None),
            ),
        ]);
        let p = r.primary.unwrap();
        assert_eq!((p.line, p.rank.kind), (2, Kind::SeeAbove));
        assert_eq!(p.before, vec!["compiling"]);
        assert_eq!(
            p.after,
            vec![
                "make: *** [all] Error 1",
                "make: *** [top] Error 2",
                "The command \"make\" exited with 2."
            ]
        );
    }

    #[test]
    fn an_announcement_points_at_the_next_line() {
        let r = run(&[
            ("rake aborted!", rule(3, 12, Evidence::Next)),
            ("No Rakefile found", Hit::Quiet),
            (
                "The command \"rake\" exited with 1.",
                Hit::Marker(Marker::Exit(1), None),
            ),
        ]);
        let p = r.primary.unwrap();
        assert_eq!((p.line, p.rule), (2, Some(3)));
    }

    #[test]
    fn a_confirmed_rule_match_beats_an_earlier_lone_one() {
        let r = run(&[
            ("--- FAIL: TestParent", rule(0, 30, Evidence::Line)),
            ("--- PASS: TestParent/a", Hit::Quiet),
            ("--- FAIL: TestParent/b", rule(0, 30, Evidence::Line)),
            (
                "x_test.go:12: expected 1 got 2",
                rule(1, 12, Evidence::Line),
            ),
            (
                "The command \"go test\" exited with 1.",
                Hit::Marker(Marker::Exit(1), None),
            ),
        ]);
        assert_eq!(line_of(&r), Some(3));
    }

    #[test]
    fn an_unexplained_step_is_reported_by_its_last_output_line_or_exit_marker() {
        let r = run(&[
            (
                "The command \"a\" exited with 0.",
                Hit::Marker(Marker::Exit(0), None),
            ),
            ("Please rebuild the assets", Hit::Quiet),
            ("$ true", Hit::Echo),
            (
                "The command \"b\" exited with 1.",
                Hit::Marker(Marker::Exit(1), None),
            ),
        ]);
        assert_eq!(line_of(&r), Some(2));
        let mut lines: Vec<(String, Hit)> = vec![];
        for i in 0..=SHORT_STEP_LINES {
            lines.push((format!("output {i}"), Hit::Quiet));
        }
        lines.push((
            "The command \"b\" exited with 1.".into(),
            Hit::Marker(Marker::Exit(1), None),
        ));
        let lines: Vec<(&str, Hit)> = lines.iter().map(|(t, h)| (t.as_str(), *h)).collect();
        assert_eq!(line_of(&run(&lines)), Some(SHORT_STEP_LINES + 2));
    }

    #[test]
    fn a_job_that_reports_success_has_no_evidence() {
        let r = run(&[
            ("error: retrying download", Hit::Error(Strength::Strong)),
            (
                "Done. Your build exited with 0.",
                Hit::Marker(Marker::JobEnd(0), None),
            ),
        ]);
        assert!(r.primary.is_none());
    }

    #[test]
    fn without_a_failing_exit_the_steps_after_the_preamble_count() {
        let mut r = Ranker::new(true);
        r.line(
            1,
            "error: noise in the worker preamble",
            Hit::Error(Strength::Strong),
        );
        r.step_starts(2);
        r.line(2, "$ make", Hit::Echo);
        r.line(3, "Build failed.", Hit::Error(Strength::Weak));
        assert_eq!(r.finish().primary.map(|f| f.line), Some(3));
    }

    #[test]
    fn rules_outrank_error_words_which_outrank_summaries() {
        let r = run(&[
            ("Tests run: 3, Failures: 1", rule(0, 5, Evidence::Summary)),
            ("it failed somewhere", Hit::Error(Strength::Weak)),
            ("Error: strong", Hit::Error(Strength::Strong)),
            ("assert 1 == 2", rule(1, 1, Evidence::Line)),
        ]);
        assert_eq!(line_of(&r), Some(4));
        let others: Vec<u64> = r.others.iter().map(|f| f.line).collect();
        assert_eq!(others, vec![3, 2, 1]);
    }
}
