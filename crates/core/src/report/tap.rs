//! TAP (Test Anything Protocol) 12/13/14 reader, including the Cockpit flavour.
//!
//! One pass over the lines, constant state per line, no recursion: the run time
//! is linear in the input and nothing depends on how deeply subtests nest.
//!
//! # What becomes a test
//!
//! Only **top-level** test points (`ok` / `not ok` at column 0) become
//! [`TestResult`](crate::model::TestResult)s. Subtests (TAP 14 indented children announced by
//! `# Subtest: name`, and the buffered `ok 1 - name {` … `}` form) are summed up
//! by their parent's result line, exactly as tapjs/tap-parser counts them; their
//! own points are not reported separately. The names of failing first-level
//! child points are added to a failing parent's message. Indented content is
//! never interpreted deeper than `MAX_NESTING_DEPTH` levels (a warning says
//! so); it is skipped in constant memory whatever its depth.
//!
//! # Outcomes
//!
//! * `ok` → `Passed`, `not ok` → `Failed`.
//! * `# SKIP …` and `# TODO …` (case-insensitive, any word starting with
//!   `skip`/`todo`, e.g. `# Skipped: reason`, `#todo`) → `Skipped`, whether the
//!   line said `ok` or `not ok`. The reason becomes the message (`TODO: ` is
//!   put in front of a todo reason). tap-parser keeps such points in `pass` /
//!   `fail` *and* in `skip` / `todo`; [`TapCounts`] reproduces that view.
//! * `Errored` is used for one case only: the stream said `Bail out!` while a
//!   subtest was running whose parent result line never came; that subtest is
//!   reported as an `Errored` test. (`bailed_out` is set in every bail-out.)
//!
//! # Directives and comments on a result line
//!
//! The comment starts at the first unescaped `#` that follows whitespace (so
//! `testTitle#skip` is part of the name and `\#` is a literal hash). If it
//! starts with `skip`/`todo` it is the directive. Before the directive, the
//! tokens `time=12.3ms` (node-tap), `duration: 26s` (older Cockpit) and
//! `RETRY n (reason)` (Cockpit) are read and the next `#` segment is examined;
//! any other text ends the scan, so `ok 4 - x # hash # todo` is *not* a todo.
//! Unrecognised comment text on a `not ok` line starts its message.
//!
//! # Diagnostics
//!
//! A YAML block (`  ---` … `  ...`, indented 1–3 columns) after a result line
//! belongs to that test. For a failed test its `message:` value (quoted, plain
//! or block scalar) comes first, then the other lines of the block. Comment
//! lines at column 0 following a `not ok` (Perl's `#   Failed test …`,
//! Cockpit's `# Unexpected journal message …`) are appended too, until the
//! next result, plan, subtest or child line. Messages are capped at
//! `MAX_MESSAGE_BYTES`; names and retry reasons at `MAX_NAME_BYTES`.
//!
//! # Cockpit flavour
//!
//! * `not ok 3 test/verify/check-foo TestFoo.testBar # RETRY 1 (reason)` marks an
//!   attempt that will be retried. When a later result line carries the same
//!   name (after dropping Cockpit's ` [ND@n]` machine and ` $n` cost suffixes),
//!   it is the same test: `retries` counts the `RETRY` annotations,
//!   `retry_reasons` keeps their reasons in order, and the final outcome and
//!   duration are those of the last attempt. A passing final attempt keeps the
//!   message of the failed one. A lone `# RETRY n (reason)` comment line right
//!   after a result applies to that result.
//! * `# 3 TEST PASSED [26s on host]` / `# 1 TEST FAILED [1m 5s on host]` gives a
//!   duration: to the immediately preceding result if its number is 3 and it has
//!   no duration yet, otherwise to the next result line (Cockpit prints a test's
//!   output, which ends in that line, before the test's result line).
//!   `# duration: 26s` and `# time=…` on the result line itself win over both.
//!
//! # Plans and numbering (warnings, never failures)
//!
//! Rules, each producing one warning with the line number: no plan; more than
//! one plan (the first wins); a plan line that is not `N..M` with an optional
//! `# comment` (ignored); an invalid range like `100..1` (ignored); test points
//! after a trailing plan; a count of distinct tests different from the plan
//! (not checked after a bail out); a test number seen before; a number other
//! than previous + 1 (the first point may start anywhere when no plan came yet);
//! a number outside the plan's range (checked as points arrive, or when a
//! trailing plan arrives). `1..0` is a skip-all plan: no tests, and test points
//! after it are ignored with a warning. Lines after `Bail out!` are ignored.
//! tap-parser counts most of these as failures instead.
//!
//! # Modules
//!
//! One concern each:
//! * `lexer`: one line of TAP read on its own (result, plan, directive,
//!   comment tokens, bail out);
//! * `parser`: the stateful reader: what each line does to the report;
//! * `plan`: plans and test numbering (warnings, never failures);
//! * `subtests`: indented children and buffered `{ … }` subtests;
//! * `diagnostics`: YAML blocks and comment lines that make a failure's message;
//! * `cockpit`: the Cockpit flavour (retries of one test, duration lines, name
//!   suffixes).

mod cockpit;
mod diagnostics;
mod lexer;
mod parser;
mod plan;
mod subtests;
#[cfg(test)]
mod tests;

use super::{Report, ReportError};
use parser::Parser;

/// Largest input accepted; larger inputs give [`ReportError::TooLarge`].
pub(crate) const MAX_TAP_BYTES: u64 = 64 * 1024 * 1024;
/// Cap of [`TestResult::message`](crate::model::TestResult::message), in bytes.
pub(crate) const MAX_MESSAGE_BYTES: usize = 4096;
/// Cap of a test name and of each retry reason, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 1024;
/// Subtest levels (4 columns each) interpreted at all; deeper lines are skipped.
pub(crate) const MAX_NESTING_DEPTH: usize = 64;
/// Warnings kept per report; the rest are summed up in one last warning.
pub(crate) const MAX_WARNINGS: usize = 100;

/// Top-level test points counted the way tapjs/tap-parser counts them: every
/// point (each Cockpit retry attempt too) is in `pass` or `fail` by its
/// `ok`/`not ok`, and additionally in `skip` or `todo` by its directive.
/// Plan and numbering problems are *not* counted (they are warnings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapCounts {
    pub count: u64,
    pub pass: u64,
    pub fail: u64,
    pub skip: u64,
    pub todo: u64,
    /// `ok` points that carry a SKIP or TODO directive (reported as `Skipped`).
    pub pass_with_directive: u64,
    /// `not ok` points that carry a SKIP or TODO directive (reported as `Skipped`).
    pub fail_with_directive: u64,
}

/// Parses a TAP stream. `file` is only used in error messages.
///
/// Never panics; only an input over `MAX_TAP_BYTES` is an error. Anything
/// else unusual is reported in [`Report::warnings`].
pub fn parse_tap(file: &str, input: &str) -> Result<Report, ReportError> {
    parse_tap_with_counts(file, input).map(|(report, _)| report)
}

/// Like [`parse_tap`], for raw bytes: invalid UTF-8 is replaced by U+FFFD
/// (with a warning) instead of being an error.
pub fn parse_tap_bytes(file: &str, input: &[u8]) -> Result<Report, ReportError> {
    check_size(file, input.len())?;
    let text = String::from_utf8_lossy(input);
    let mut report = parse_tap(file, &text)?;
    if let std::borrow::Cow::Owned(_) = text {
        report.warnings.insert(
            0,
            "input is not valid UTF-8; invalid bytes were replaced".into(),
        );
    }
    Ok(report)
}

/// Like [`parse_tap`], also returning the tap-parser-compatible [`TapCounts`].
pub fn parse_tap_with_counts(file: &str, input: &str) -> Result<(Report, TapCounts), ReportError> {
    check_size(file, input.len())?;
    let mut parser = Parser::default();
    for (index, raw) in input.split('\n').enumerate() {
        if parser.bailed {
            break;
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        parser.line(index + 1, line);
    }
    Ok(parser.finish())
}

fn check_size(file: &str, len: usize) -> Result<(), ReportError> {
    if len as u64 > MAX_TAP_BYTES {
        return Err(ReportError::TooLarge {
            file: file.to_string(),
            limit: MAX_TAP_BYTES,
        });
    }
    Ok(())
}
