//! TAP (Test Anything Protocol) 12/13/14 reader, including the Cockpit flavour.
//!
//! One pass over the lines, constant state per line, no recursion: the run time
//! is linear in the input and nothing depends on how deeply subtests nest.
//!
//! # What becomes a test
//!
//! Only **top-level** test points (`ok` / `not ok` at column 0) become
//! [`ParsedTest`]s. Subtests (TAP 14 indented children announced by
//! `# Subtest: name`, and the buffered `ok 1 - name {` … `}` form) are summed up
//! by their parent's result line, exactly as tapjs/tap-parser counts them; their
//! own points are not reported separately. The names of failing first-level
//! child points are added to a failing parent's message. Indented content is
//! never interpreted deeper than [`MAX_NESTING_DEPTH`] levels (a warning says
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
//! [`MAX_MESSAGE_BYTES`]; names and retry reasons at [`MAX_NAME_BYTES`].
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

use std::collections::{HashMap, HashSet};

use super::{ParsedTest, Report, ReportError, ReportFormat};
use crate::model::TestOutcome;

/// Largest input accepted; larger inputs give [`ReportError::TooLarge`].
pub const MAX_TAP_BYTES: u64 = 64 * 1024 * 1024;
/// Cap of [`ParsedTest::message`], in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Cap of a test name and of each retry reason, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Subtest levels (4 columns each) interpreted at all; deeper lines are skipped.
pub const MAX_NESTING_DEPTH: usize = 64;
/// Warnings kept per report; the rest are summed up in one last warning.
pub const MAX_WARNINGS: usize = 100;
/// Names of failing child points quoted in a parent's message.
const MAX_CHILD_FAILURES: usize = 20;

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
/// Never panics; only an input over [`MAX_TAP_BYTES`] is an error. Anything
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

// ---------------------------------------------------------------------------
// Line-level parsing helpers (pure functions)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirectiveKind {
    Skip,
    Todo,
}

#[derive(Debug, Default, PartialEq)]
struct Comment {
    directive: Option<(DirectiveKind, String)>,
    duration: Option<f64>,
    retry: Option<Option<String>>,
    /// comment text that is none of the above
    extra: Option<String>,
}

#[derive(Debug, PartialEq)]
struct ResultLine {
    ok: bool,
    number: Option<u64>,
    number_too_large: bool,
    description: String,
    comment: Comment,
    brace: bool,
}

#[derive(Debug, PartialEq)]
enum PlanLine {
    Valid { start: u64, end: u64 },
    Invalid,
}

/// Leading whitespace: (columns, rest). A tab counts as 4 columns.
fn split_indent(line: &str) -> (usize, &str) {
    let mut columns = 0usize;
    for (i, b) in line.bytes().enumerate() {
        match b {
            b' ' => columns += 1,
            b'\t' => columns += 4,
            _ => return (columns, &line[i..]),
        }
    }
    (columns, "")
}

/// Byte index of the `#` that starts the comment of a result line: not escaped
/// by a backslash, and at the start or after whitespace or after an escaped
/// backslash (`\\#`).
fn comment_start(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut backslashes = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && backslashes.is_multiple_of(2) {
            let after_space = i == 0 || bytes[i - 1].is_ascii_whitespace();
            if after_space || backslashes > 0 {
                return Some(i);
            }
        }
        if b == b'\\' {
            backslashes += 1;
        } else {
            backslashes = 0;
        }
    }
    None
}

/// `\#` → `#`, `\\` → `\`.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && (next == '#' || next == '\\')
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

fn truncate_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Case-insensitive ASCII prefix match; returns the rest.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// `skip…`/`todo…` at the start of a comment: kind and reason.
fn parse_directive_word(text: &str) -> Option<(DirectiveKind, String)> {
    let (kind, rest) = if let Some(rest) = strip_prefix_ci(text, "skip") {
        (DirectiveKind::Skip, rest)
    } else if let Some(rest) = strip_prefix_ci(text, "todo") {
        (DirectiveKind::Todo, rest)
    } else {
        return None;
    };
    // the rest of the word ("Skipped:", "TODOORNOTTODO") belongs to the keyword
    let word_end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    let reason = rest[word_end..].trim();
    Some((kind, unescape(reason)))
}

/// Reads `12`, `12.5` at the start of `s`: value and rest.
fn leading_number(s: &str) -> Option<(f64, &str)> {
    let mut end = 0;
    let mut seen_dot = false;
    for (i, c) in s.char_indices() {
        if c.is_ascii_digit() {
            end = i + 1;
        } else if c == '.' && !seen_dot && i > 0 {
            seen_dot = true;
        } else {
            break;
        }
    }
    if end == 0 {
        return None;
    }
    let value: f64 = s[..end].parse().ok()?;
    value.is_finite().then_some((value, &s[end..]))
}

/// Human durations: `26s`, `105s`, `1m 5s`, `1m5s`, `1h 2m`, `250ms`, `1.5s`.
/// Returns seconds and the unparsed rest. At least one `<number><unit>`.
fn parse_human_duration(s: &str) -> Option<(f64, &str)> {
    let mut total = 0.0;
    let mut rest = s;
    let mut any = false;
    loop {
        let trimmed = rest.trim_start();
        let Some((value, after)) = leading_number(trimmed) else {
            break;
        };
        let (factor, after) = if let Some(a) = after.strip_prefix("ms") {
            (0.001, a)
        } else if let Some(a) = after.strip_prefix('h') {
            (3600.0, a)
        } else if let Some(a) = after.strip_prefix("min") {
            (60.0, a)
        } else if let Some(a) = after.strip_prefix('m') {
            (60.0, a)
        } else if let Some(a) = after.strip_prefix('s') {
            (1.0, a)
        } else {
            break;
        };
        if after.starts_with(|c: char| c.is_alphabetic()) {
            break; // "5sec", "12 apples" are not durations
        }
        total += value * factor;
        rest = after;
        any = true;
    }
    any.then_some((total, rest))
}

/// Text after the next comment `#` in `rest`, trimmed, or `None`.
fn next_segment(rest: &str) -> Option<&str> {
    comment_start(rest).map(|i| rest[i + 1..].trim())
}

/// Reads the comment of a result line (text after its first `#`).
fn parse_comment(comment: &str) -> Comment {
    let mut out = Comment::default();
    let mut text = comment.trim();
    // each iteration consumes one token; the text shrinks, so this terminates
    while !text.is_empty() {
        if let Some(directive) = parse_directive_word(text) {
            out.directive = Some(directive);
            break;
        }
        let timing = strip_prefix_ci(text, "time=")
            .or_else(|| strip_prefix_ci(text, "duration:"))
            .and_then(parse_human_duration);
        let after = if let Some((seconds, after)) = timing {
            out.duration = Some(seconds);
            Some(after)
        } else if let Some((reason, after)) = parse_retry(text) {
            out.retry = Some(reason);
            Some(after)
        } else {
            None
        };
        if let Some(after) = after {
            match next_segment(after) {
                Some(next) => {
                    text = next;
                    continue;
                }
                None => break,
            }
        }
        out.extra = Some(unescape(text));
        break;
    }
    out
}

/// `RETRY 2 (reason text)`: the reason (if any) and the rest of the text.
fn parse_retry(text: &str) -> Option<(Option<String>, &str)> {
    let rest = strip_prefix_ci(text, "retry")?;
    if !rest.starts_with(|c: char| c.is_whitespace()) {
        return None;
    }
    let rest = rest.trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let rest = rest[digits..].trim_start();
    let segment_end = comment_start(rest).unwrap_or(rest.len());
    let segment = &rest[..segment_end];
    let reason = segment.strip_prefix('(').map(|inner| {
        let inner = match inner.rfind(')') {
            Some(close) => &inner[..close],
            None => inner,
        };
        truncate_to(inner.trim(), MAX_NAME_BYTES).to_string()
    });
    Some((reason.filter(|r| !r.is_empty()), &rest[segment_end..]))
}

/// `ok` / `not ok` lines (already without indentation).
fn parse_result(body: &str) -> Option<ResultLine> {
    let (ok, rest) = if let Some(rest) = body.strip_prefix("not ok") {
        (false, rest)
    } else if let Some(rest) = body.strip_prefix("ok") {
        (true, rest)
    } else {
        return None;
    };
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None; // "okay", "ok1"
    }
    let mut rest = rest.trim_start();
    let mut number = None;
    let mut number_too_large = false;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0
        && rest[digits..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
    {
        match rest[..digits].parse::<u64>() {
            Ok(n) => number = Some(n),
            Err(_) => number_too_large = true,
        }
        rest = rest[digits..].trim_start();
    }
    if let Some(after_dash) = rest.strip_prefix('-')
        && (after_dash.is_empty() || after_dash.starts_with(char::is_whitespace))
    {
        rest = after_dash.trim_start();
    }
    let (description, comment) = match comment_start(rest) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut brace = false;
    let mut description = description.trim_end();
    if let Some(d) = description.strip_suffix('{') {
        brace = true;
        description = d.trim_end();
    }
    let comment = match comment {
        Some(c) => {
            let mut c = c.trim_end();
            if let Some(stripped) = c.strip_suffix('{') {
                brace = true;
                c = stripped.trim_end();
            }
            parse_comment(c)
        }
        None => Comment::default(),
    };
    Some(ResultLine {
        ok,
        number,
        number_too_large,
        description: unescape(description),
        comment,
        brace,
    })
}

/// `1..N` lines (already without indentation).
fn parse_plan(body: &str) -> Option<PlanLine> {
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let rest = body[digits..].strip_prefix("..")?;
    let end_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if end_digits == 0 {
        return None;
    }
    // after the range: nothing, or a comment (`# SKIP reason`, `# skipping: rope`)
    let tail = rest[end_digits..].trim();
    if !tail.is_empty() && !tail.starts_with('#') {
        return Some(PlanLine::Invalid);
    }
    match (
        body[..digits].parse::<u64>(),
        rest[..end_digits].parse::<u64>(),
    ) {
        (Ok(start), Ok(end)) if end >= start || end.checked_add(1) == Some(start) => {
            Some(PlanLine::Valid { start, end })
        }
        _ => Some(PlanLine::Invalid),
    }
}

/// `# 3 TEST PASSED [26s on host]`: test number and seconds.
fn parse_cockpit_duration(text: &str) -> Option<(u64, f64)> {
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
fn normalize_name(name: &str) -> &str {
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

/// Appends a line to a capped message.
fn push_message(message: &mut Option<String>, text: &str) {
    let text = text.trim_end();
    if text.trim().is_empty() {
        return;
    }
    let s = message.get_or_insert_with(String::new);
    if s.len() >= MAX_MESSAGE_BYTES {
        return;
    }
    if !s.is_empty() {
        s.push('\n');
    }
    let room = MAX_MESSAGE_BYTES - s.len();
    s.push_str(truncate_to(text, room));
}

/// Message text of a YAML diagnostics block: `message:` first, then the
/// other lines, de-indented.
fn yaml_message(lines: &[&str]) -> String {
    let base = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| split_indent(l).0)
        .min()
        .unwrap_or(0);
    let dedent = |l: &str| -> String {
        let (indent, body) = split_indent(l);
        let extra = indent.saturating_sub(base);
        format!("{}{}", " ".repeat(extra.min(64)), body)
    };
    let mut message: Option<String> = None;
    let mut others: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let (indent, body) = split_indent(line);
        if message.is_none()
            && indent == base
            && let Some(value) = body.strip_prefix("message:")
        {
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                let mut block = Vec::new();
                i += 1;
                while i < lines.len() {
                    let (ind, b) = split_indent(lines[i]);
                    if !b.trim().is_empty() && ind <= base {
                        break;
                    }
                    block.push(b.trim_end());
                    i += 1;
                }
                message = Some(block.join("\n").trim().to_string());
                continue;
            }
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            message = Some(unquoted.to_string());
            i += 1;
            continue;
        }
        if !line.trim().is_empty() {
            others.push(dedent(line));
        }
        i += 1;
    }
    let mut out = message.unwrap_or_default();
    for other in others {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&other);
        if out.len() > MAX_MESSAGE_BYTES {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The stateful reader
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Meta {
    number: u64,
    has_duration: bool,
    /// the last attempt said `# RETRY`
    awaiting_retry: bool,
    /// outcome of the last attempt allows diagnostics to be attached
    takes_diagnostics: bool,
}

#[derive(Debug, Default)]
enum Mode<'a> {
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

#[derive(Debug, Clone, Copy)]
struct Plan {
    start: u64,
    end: u64,
    /// test points seen when the plan came
    points_before: u64,
}

#[derive(Debug, Default)]
struct Parser<'a> {
    tests: Vec<ParsedTest>,
    meta: Vec<Meta>,
    warnings: Vec<String>,
    suppressed_warnings: u64,
    counts: TapCounts,
    mode: Mode<'a>,
    plan: Option<Plan>,
    skip_all: bool,
    warned_after_plan: bool,
    warned_depth: bool,
    bailed: bool,
    /// last explicit or implied test number
    last_number: Option<u64>,
    seen_numbers: HashSet<u64>,
    numbers: Vec<(usize, u64)>,
    /// test whose result line is the last significant top-level line
    recent: Option<usize>,
    /// failed test that takes the following comment lines as diagnostics
    comment_target: Option<usize>,
    /// duration announced before the result line it belongs to
    pending_duration: Option<f64>,
    /// `# Subtest: name` seen, its parent result not yet
    subtest_name: Option<String>,
    in_child: bool,
    child_failures: Vec<String>,
    /// tests waiting for a retry, by name
    awaiting: HashMap<String, usize>,
}

impl<'a> Parser<'a> {
    fn warn(&mut self, line: usize, message: impl AsRef<str>) {
        if self.warnings.len() < MAX_WARNINGS {
            let message = truncate_to(message.as_ref(), MAX_NAME_BYTES);
            self.warnings.push(format!("line {line}: {message}"));
        } else {
            self.suppressed_warnings += 1;
        }
    }

    fn line(&mut self, no: usize, line: &'a str) {
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

    /// An indented line outside YAML: part of a subtest.
    fn child_line(&mut self, no: usize, indent: usize, body: &str, brace_target: Option<usize>) {
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
            truncate_to(&result.description, MAX_NAME_BYTES).to_string()
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

    fn end_yaml(&mut self) {
        if let Mode::Yaml { target, lines, .. } = std::mem::take(&mut self.mode)
            && let Some(target) = target
            && self.meta[target].takes_diagnostics
        {
            let text = yaml_message(&lines);
            push_message(&mut self.tests[target].message, &text);
        }
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

    fn mark_retry(&mut self, index: usize, reason: Option<String>) {
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

    fn plan(&mut self, no: usize, plan: PlanLine) {
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

    fn bail_out(&mut self, no: usize, reason: &str) {
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
            self.tests.push(ParsedTest {
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
            truncate_to(description, MAX_NAME_BYTES).to_string()
        } else if let Some(subtest) = self.subtest_name.take() {
            truncate_to(&subtest, MAX_NAME_BYTES).to_string()
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
                self.tests.push(ParsedTest {
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

    /// The number a point without one gets: previous + 1, or the plan's start.
    fn implied_number(&self) -> u64 {
        match (self.last_number, self.plan) {
            (Some(n), _) => n.saturating_add(1),
            (None, Some(plan)) => plan.start,
            (None, None) => 1,
        }
    }

    /// Numbering rules for a new test; returns its number.
    fn check_number(&mut self, no: usize, number: Option<u64>, implied: u64) -> u64 {
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

    fn finish(mut self) -> (Report, TapCounts) {
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
            self.warnings.push(format!(
                "end of stream: {}",
                truncate_to(message, MAX_NAME_BYTES)
            ));
        } else {
            self.suppressed_warnings += 1;
        }
    }
}

fn is_bailout(body: &str) -> bool {
    bailout_reason(body).is_some()
}

fn bailout_reason(body: &str) -> Option<&str> {
    strip_prefix_ci(body, "bail out!")
}

/// `Subtest: name` / `Subtest` (text after `#`).
fn subtest_header(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("Subtest")?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix(':').map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ReportTotals;

    fn parse(input: &str) -> Report {
        parse_tap("test.tap", input).expect("parses")
    }

    fn only_test(report: &Report) -> &ParsedTest {
        assert_eq!(report.tests.len(), 1, "{report:#?}");
        &report.tests[0]
    }

    fn outcomes(report: &Report) -> Vec<(&str, TestOutcome)> {
        report
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.outcome))
            .collect()
    }

    fn has_warning(report: &Report, needle: &str) -> bool {
        report.warnings.iter().any(|w| w.contains(needle))
    }

    // --- result lines -----------------------------------------------------

    #[test]
    fn result_lines_are_read_into_outcome_name_and_message() {
        use TestOutcome::*;
        let table: &[(&str, TestOutcome, &str, Option<&str>)] = &[
            ("ok 1 - adds numbers", Passed, "adds numbers", None),
            ("ok 1 adds numbers", Passed, "adds numbers", None),
            ("ok - no number", Passed, "no number", None),
            ("ok", Passed, "test 1", None),
            ("not ok 1 - broken", Failed, "broken", None),
            ("not ok", Failed, "test 1", None),
            ("ok 7 # skip", Skipped, "test 7", None),
            (
                "ok 1 - x # SKIP no network",
                Skipped,
                "x",
                Some("no network"),
            ),
            (
                "ok 1 - x # Skipped: no network",
                Skipped,
                "x",
                Some("no network"),
            ),
            ("ok 1 - x #skip", Skipped, "x", None),
            ("not ok 1 - x # SKIP flaky", Skipped, "x", Some("flaky")),
            (
                "not ok 1 - x # TODO later",
                Skipped,
                "x",
                Some("TODO: later"),
            ),
            ("ok 1 - x # todo", Skipped, "x", Some("TODO")),
            ("ok 1 - a\\#b", Passed, "a#b", None),
            (
                "ok 1 - url#skip is a name",
                Passed,
                "url#skip is a name",
                None,
            ),
            ("ok 1 - x # hash # todo", Passed, "x", None),
            (
                "not ok 1 - x # expected failure: bug",
                Failed,
                "x",
                Some("expected failure: bug"),
            ),
            (
                "ok 5 test-name # SKIP Known issue #1234",
                Skipped,
                "test-name",
                Some("Known issue #1234"),
            ),
            ("ok 1 - x # time=12ms", Passed, "x", None),
        ];
        for (line, outcome, name, message) in table {
            let report = parse(&format!("1..1\n{line}\n"));
            let test = only_test(&report);
            assert_eq!(test.outcome, *outcome, "{line}");
            assert_eq!(test.name, *name, "{line}");
            assert_eq!(test.message.as_deref(), *message, "{line}");
        }
    }

    #[test]
    fn lines_that_only_look_like_results_are_ignored() {
        for line in [
            "okay",
            "ok1",
            "not okay",
            "not ",
            "  ok 1 indented is a child",
            "Ok 1",
        ] {
            let report = parse(&format!("{line}\n"));
            assert!(report.tests.is_empty(), "{line}: {report:?}");
        }
    }

    #[test]
    fn the_comment_starts_at_an_unescaped_hash_after_whitespace() {
        let table: &[(&str, Option<usize>)] = &[
            ("name # SKIP", Some(5)),
            ("# SKIP", Some(0)),
            ("name#skip", None),
            ("name \\# not", None),
            ("slash \\\\# todo", Some(8)),
            ("plain", None),
        ];
        for (text, want) in table {
            assert_eq!(comment_start(text), *want, "{text}");
        }
    }

    #[test]
    fn human_durations_are_read_in_seconds() {
        let table: &[(&str, Option<f64>)] = &[
            ("26s on host", Some(26.0)),
            ("105s", Some(105.0)),
            ("1m 5s on host", Some(65.0)),
            ("1m5s", Some(65.0)),
            ("1h 2m 3s", Some(3723.0)),
            ("250ms", Some(0.25)),
            ("1.5s", Some(1.5)),
            ("s", None),
            ("12 apples", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_human_duration(text).map(|(s, _)| s), *want, "{text}");
        }
    }

    #[test]
    fn plan_lines_are_valid_only_as_a_range_with_an_optional_comment() {
        let table: &[(&str, Option<PlanLine>)] = &[
            ("1..5", Some(PlanLine::Valid { start: 1, end: 5 })),
            ("1..5 ", Some(PlanLine::Valid { start: 1, end: 5 })),
            (
                "1..0 # SKIP no db",
                Some(PlanLine::Valid { start: 1, end: 0 }),
            ),
            (
                "8..11 # offset",
                Some(PlanLine::Valid { start: 8, end: 11 }),
            ),
            ("100..1", Some(PlanLine::Invalid)),
            ("1..5 todo 1 2;", Some(PlanLine::Invalid)),
            ("1..99999999999999999999999", Some(PlanLine::Invalid)),
            ("1..", None),
            ("..5", None),
            ("version", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_plan(text), *want, "{text}");
        }
    }

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

    #[test]
    fn comments_after_a_failure_are_its_message_but_not_after_a_pass() {
        let report = parse(
            "1..2\n\
             ok 1 - fine\n\
             # just chatter\n\
             not ok 2 - broken\n\
             # Unexpected journal message 'audit: denied'\n\
             # Unexpected journal message 'kernel: oops'\n",
        );
        assert_eq!(report.tests[0].message, None);
        assert_eq!(
            report.tests[1].message.as_deref(),
            Some(
                "Unexpected journal message 'audit: denied'\nUnexpected journal message 'kernel: oops'"
            )
        );
    }

    // --- diagnostics ------------------------------------------------------

    #[test]
    fn yaml_message_comes_first_in_a_failure_message() {
        let table: &[(&str, &str)] = &[
            (
                "  message: \"boom\"\n  severity: fail\n",
                "boom\nseverity: fail",
            ),
            ("  message: 'boom'\n", "boom"),
            ("  message: boom\n", "boom"),
            (
                "  message: |\n    line one\n    line two\n  at: x.js\n",
                "line one\nline two\nat: x.js",
            ),
            ("  found: 1\n  wanted: 2\n", "found: 1\nwanted: 2"),
        ];
        for (yaml, want) in table {
            let report = parse(&format!("1..1\nnot ok 1 - t\n  ---\n{yaml}  ...\n"));
            assert_eq!(only_test(&report).message.as_deref(), Some(*want), "{yaml}");
        }
    }

    #[test]
    fn yaml_after_a_passing_test_is_not_a_message_and_is_not_parsed_as_tap() {
        let report =
            parse("1..2\nok 1 - t\n  ---\n  ok: 1\n  not ok 5 - inside yaml\n  ...\nok 2 - u\n");
        assert_eq!(
            outcomes(&report),
            vec![("t", TestOutcome::Passed), ("u", TestOutcome::Passed)]
        );
        assert_eq!(report.tests[0].message, None);
    }

    #[test]
    fn an_unterminated_yaml_block_ends_at_the_next_result_with_a_warning() {
        let report = parse("1..2\nnot ok 1 - t\n  ---\n  message: x\nok 2 - u\n");
        assert_eq!(report.tests.len(), 2);
        assert_eq!(report.tests[0].message.as_deref(), Some("x"));
        assert!(has_warning(&report, "YAML"));
    }

    #[test]
    fn messages_are_capped_at_4_kib_on_a_char_boundary() {
        let long = "é".repeat(10_000);
        let report = parse(&format!("1..1\nnot ok 1 - t\n# {long}\n# {long}\n"));
        let message = only_test(&report).message.clone().unwrap();
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        assert!(message.len() > MAX_MESSAGE_BYTES - 4);
    }

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
        let report =
            parse("1..2\nok 1 - a\n# Subtest: b\n    ok 1 - inner\n    Bail out! disk full\n");
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
}
