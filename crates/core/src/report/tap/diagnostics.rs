//! The message of a failed test: its YAML diagnostics block (`message:` first)
//! and the comment lines that follow it, capped at [`MAX_MESSAGE_BYTES`].

use super::MAX_MESSAGE_BYTES;
use super::lexer::split_indent;
use super::parser::{Mode, Parser};
use crate::text::clip;

/// Appends a line to a capped message.
pub(super) fn push_message(message: &mut Option<String>, text: &str) {
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
    s.push_str(clip(text, room));
}

/// Message text of a YAML diagnostics block: `message:` first, then the
/// other lines, de-indented.
pub(super) fn yaml_message(lines: &[&str]) -> String {
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

impl<'a> Parser<'a> {
    pub(super) fn end_yaml(&mut self) {
        if let Mode::Yaml { target, lines, .. } = std::mem::take(&mut self.mode)
            && let Some(target) = target
            && self.meta[target].takes_diagnostics
        {
            let text = yaml_message(&lines);
            push_message(&mut self.tests[target].message, &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TestOutcome;
    use crate::report::tap::tests::{has_warning, only_test, outcomes, parse};

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
}
