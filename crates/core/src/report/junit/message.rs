//! Result elements (`<failure>`, `<error>`, `<skipped>`, reruns, NUnit
//! `<reason>`) and the texts they give: a test's message and a retry's reason,
//! capped at [`MESSAGE_CAP`].

use quick_xml::events::BytesStart;

use super::MESSAGE_CAP;
use super::parser::Ctx;
use super::xml::for_each_attr;
use crate::text::{clip, floor_char_boundary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResultKind {
    Failure,
    Error,
    Skipped,
    FlakyFailure,
    FlakyError,
    RerunFailure,
    RerunError,
    /// NUnit / xUnit `<reason>` of a skipped test
    Reason,
}

impl ResultKind {
    pub(super) fn is_retry(self) -> bool {
        matches!(
            self,
            Self::FlakyFailure | Self::FlakyError | Self::RerunFailure | Self::RerunError
        )
    }

    pub(super) fn element(self) -> &'static str {
        match self {
            Self::Failure => "failure",
            Self::Error => "error",
            Self::Skipped => "skipped",
            Self::FlakyFailure => "flakyFailure",
            Self::FlakyError => "flakyError",
            Self::RerunFailure => "rerunFailure",
            Self::RerunError => "rerunError",
            Self::Reason => "reason",
        }
    }
}

/// Text with a byte cap; leading whitespace of the whole text is never stored.
#[derive(Debug, Default)]
pub(super) struct Capped {
    pub(super) text: String,
    pub(super) truncated: bool,
}

impl Capped {
    pub(super) fn push(&mut self, piece: &str) {
        let piece = if self.text.is_empty() {
            piece.trim_start()
        } else {
            piece
        };
        if piece.is_empty() {
            return;
        }
        let room = (MESSAGE_CAP + 4).saturating_sub(self.text.len());
        if piece.len() <= room {
            self.text.push_str(piece);
        } else {
            self.text
                .push_str(&piece[..floor_char_boundary(piece, room)]);
            self.truncated = true;
        }
    }

    pub(super) fn push_char(&mut self, c: char) {
        let mut tmp = [0u8; 4];
        self.push(c.encode_utf8(&mut tmp));
    }

    pub(super) fn separate(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.push("\n");
        }
    }
}

#[derive(Debug)]
pub(super) struct ResultElem {
    pub(super) kind: ResultKind,
    pub(super) message: Option<String>,
    pub(super) kind_attr: Option<String>,
    /// text of a `<message>` child (NUnit, xUnit)
    pub(super) message_child: Capped,
    pub(super) body: Capped,
}

impl ResultElem {
    pub(super) fn new(
        kind: ResultKind,
        e: &BytesStart<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Self, String> {
        let mut elem = ResultElem {
            kind,
            message: None,
            kind_attr: None,
            message_child: Capped::default(),
            body: Capped::default(),
        };
        for_each_attr(e, ctx, |key, value| match key {
            "message" => elem.message = Some(value.into_owned()),
            "type" => elem.kind_attr = Some(value.into_owned()),
            _ => {}
        })?;
        Ok(elem)
    }

    /// Composed diagnostics of this element, `None` when it carries nothing.
    pub(super) fn text(&self) -> Option<String> {
        let attr = self.message.as_deref().map(str::trim).unwrap_or("");
        let child = normalize_text(&self.message_child.text);
        let message = if attr.is_empty() { child.trim() } else { attr };
        let body = normalize_text(&self.body.text);
        let body = trim_leading_blank_lines(body.trim_end());
        let composed = match (message.is_empty(), body.is_empty()) {
            (true, true) => self.kind_attr.as_deref().map(str::trim).unwrap_or(""),
            (false, true) => message,
            (true, false) => body,
            (false, false) if clip(body, message.len() + 256).contains(message) => body,
            (false, false) => return Some(format!("{message}\n{body}")),
        };
        (!composed.is_empty()).then(|| composed.to_string())
    }

    /// Reason of one retry: the message, else first line of the text, else the
    /// type, else the element name.
    pub(super) fn reason(&self) -> String {
        let attr = self.message.as_deref().map(str::trim).unwrap_or("");
        let child = normalize_text(&self.message_child.text);
        let body = normalize_text(&self.body.text);
        let reason = [attr, child.trim(), first_line(&body)]
            .into_iter()
            .find(|s| !s.is_empty())
            .or_else(|| self.kind_attr.as_deref().map(str::trim))
            .filter(|s| !s.is_empty())
            .unwrap_or(self.kind.element());
        cap(reason.to_string())
    }
}

/// XML end-of-line handling: `\r\n` and lone `\r` become `\n`.
fn normalize_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\r') {
        std::borrow::Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn trim_leading_blank_lines(s: &str) -> &str {
    let mut rest = s;
    while let Some(nl) = rest.find('\n') {
        if rest[..nl].trim().is_empty() {
            rest = &rest[nl + 1..];
        } else {
            break;
        }
    }
    if rest.trim().is_empty() { "" } else { rest }
}

pub(super) fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Caps a message at [`MESSAGE_CAP`] bytes, marking a cut with `…`.
pub(super) fn cap(s: String) -> String {
    if s.len() <= MESSAGE_CAP {
        return s;
    }
    let keep = floor_char_boundary(&s, MESSAGE_CAP - '…'.len_utf8());
    let mut out = s[..keep].trim_end().to_string();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::tests::{only_test, suite};

    #[test]
    fn messages_combine_attribute_and_text_in_a_capped_form() {
        let long = "x".repeat(10_000);
        let table: &[(&str, String, Option<&str>)] = &[
            (
                "the message attribute and the text are joined",
                r#"<failure message="boom">stack
  at a</failure>"#
                    .to_string(),
                Some("boom\nstack\n  at a"),
            ),
            (
                "text whose opening already holds the message is used alone",
                r#"<failure message="boom">java.lang.AssertionError: boom
	at X</failure>"#
                    .to_string(),
                Some("java.lang.AssertionError: boom\n\tat X"),
            ),
            (
                "CDATA is taken verbatim and blank leading lines dropped",
                "<failure><![CDATA[\n\n  <b>&amp;</b>\n]]></failure>".to_string(),
                Some("<b>&amp;</b>"),
            ),
            (
                "character references in attributes are decoded",
                r#"<failure message="a&#10;b &lt;c&gt; &#x41;"/>"#.to_string(),
                Some("a\nb <c> A"),
            ),
            (
                "literal newlines in attributes are normalised to spaces",
                "<failure message=\"a\nb\"/>".to_string(),
                Some("a b"),
            ),
            (
                "CRLF in text becomes LF",
                "<failure>a\r\nb\rc</failure>".to_string(),
                Some("a\nb\nc"),
            ),
            (
                "system-out inside a failure is not part of the message",
                "<failure message=\"m\"><system-out>noise</system-out></failure>".to_string(),
                Some("m"),
            ),
            (
                "the type is used when nothing else is given",
                r#"<failure type="java.lang.AssertionError"/>"#.to_string(),
                Some("java.lang.AssertionError"),
            ),
            (
                "an empty failure has no message",
                "<failure/>".to_string(),
                None,
            ),
            (
                "several failures are joined in document order",
                r#"<failure message="one"/><failure message="two"/>"#.to_string(),
                Some("one\ntwo"),
            ),
            (
                "a skip reason is the message of a skipped test",
                r#"<skipped message="not on windows"/>"#.to_string(),
                Some("not on windows"),
            ),
            (
                "a passed test has no message even with output",
                "<system-out>hello</system-out>".to_string(),
                None,
            ),
            (
                "undeclared entities stay verbatim",
                "<failure>&nope; &amp;</failure>".to_string(),
                Some("&nope; &"),
            ),
            (
                "a lone ampersand is kept as text",
                "<failure>a & b</failure>".to_string(),
                Some("a & b"),
            ),
            (
                "a long text is capped",
                format!("<failure>{long}</failure>"),
                None,
            ),
        ];
        for (sentence, inner, expected) in table {
            let test = only_test(&suite(&format!("<testcase name=\"t\">{inner}</testcase>")));
            if sentence.contains("capped") {
                let message = test.message.unwrap_or_default();
                assert_eq!(message.len(), MESSAGE_CAP, "{sentence}");
                assert!(message.ends_with('…'), "{sentence}");
                continue;
            }
            assert_eq!(test.message.as_deref(), *expected, "{sentence}");
        }
    }

    #[test]
    fn a_multibyte_message_is_capped_on_a_char_boundary() {
        let text = "é".repeat(5000);
        let test = only_test(&suite(&format!(
            "<testcase name=\"t\"><failure message=\"{text}\"/></testcase>"
        )));
        let message = test.message.unwrap_or_default();
        assert!(message.len() <= MESSAGE_CAP);
        assert!(message.ends_with('…'));
    }
}
