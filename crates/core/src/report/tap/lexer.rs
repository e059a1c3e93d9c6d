//! One line of TAP read on its own, without state: indentation, result lines
//! (number, description, directive, the comment tokens before it), plan lines,
//! bail outs, and the human durations they carry.

use super::MAX_NAME_BYTES;
use crate::text::clip;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirectiveKind {
    Skip,
    Todo,
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct Comment {
    pub(super) directive: Option<(DirectiveKind, String)>,
    pub(super) duration: Option<f64>,
    pub(super) retry: Option<Option<String>>,
    /// comment text that is none of the above
    pub(super) extra: Option<String>,
}

#[derive(Debug, PartialEq)]
pub(super) struct ResultLine {
    pub(super) ok: bool,
    pub(super) number: Option<u64>,
    pub(super) number_too_large: bool,
    pub(super) description: String,
    pub(super) comment: Comment,
    pub(super) brace: bool,
}

#[derive(Debug, PartialEq)]
pub(super) enum PlanLine {
    Valid { start: u64, end: u64 },
    Invalid,
}

/// Leading whitespace: (columns, rest). A tab counts as 4 columns.
pub(super) fn split_indent(line: &str) -> (usize, &str) {
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

/// Case-insensitive ASCII prefix match; returns the rest.
pub(super) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
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
pub(super) fn parse_human_duration(s: &str) -> Option<(f64, &str)> {
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
pub(super) fn parse_retry(text: &str) -> Option<(Option<String>, &str)> {
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
        clip(inner.trim(), MAX_NAME_BYTES).to_string()
    });
    Some((reason.filter(|r| !r.is_empty()), &rest[segment_end..]))
}

/// `ok` / `not ok` lines (already without indentation).
pub(super) fn parse_result(body: &str) -> Option<ResultLine> {
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
pub(super) fn parse_plan(body: &str) -> Option<PlanLine> {
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

pub(super) fn is_bailout(body: &str) -> bool {
    bailout_reason(body).is_some()
}

pub(super) fn bailout_reason(body: &str) -> Option<&str> {
    strip_prefix_ci(body, "bail out!")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TestOutcome;
    use crate::report::tap::tests::{only_test, parse};

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
}
