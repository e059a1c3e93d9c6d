//! Text that leaves the exporter for people: Markdown code spans and fences
//! that no content can close early, and invisible or direction-changing
//! characters made visible, so that a name or an evidence line cannot hide
//! text or reorder what a reader sees (Trojan Source, CVE-2021-42574).

use std::borrow::Cow;

/// Characters that change the direction of text or are invisible: bidi
/// embeddings, overrides and isolates, directional marks, zero-width spaces
/// and joiners, the word joiner and the byte-order mark.
pub fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{180E}')
}

/// `s` with every [`is_hidden`] character written as a visible `<U+XXXX>`;
/// borrowed when there is none.
pub fn reveal(s: &str) -> Cow<'_, str> {
    reveal_as(s, "<", ">")
}

/// The same for HTML already escaped (text and attribute values alike):
/// `&lt;U+XXXX&gt;`.
pub fn reveal_html(s: String) -> String {
    match reveal_as(&s, "&lt;", "&gt;") {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => o,
    }
}

fn reveal_as<'a>(s: &'a str, open: &str, close: &str) -> Cow<'a, str> {
    if !s.chars().any(is_hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_hidden(c) {
            out.push_str(&format!("{open}U+{:04X}{close}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn longest_backtick_run(s: &str) -> usize {
    let (mut longest, mut run) = (0, 0);
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// A Markdown code span holding `s` verbatim (CommonMark: delimiters longer
/// than any backtick run inside, padded when `s` starts or ends with one).
pub fn code_span(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    let ticks = "`".repeat(longest_backtick_run(&s) + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{s}{pad}{ticks}")
}

/// A fenced code block holding `s` (the fence is longer than any backtick
/// run inside, so the text cannot end it).
pub fn fenced(s: &str) -> String {
    let fence = "`".repeat((longest_backtick_run(s) + 1).max(3));
    format!("{fence}\n{s}\n{fence}\n")
}

/// Whether a repository path is safe in a URL path: segments that are not
/// empty, `.` or `..`.
pub fn safe_repository_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_and_fences_hold_any_backticks() {
        assert_eq!(code_span("ctx"), "`ctx`");
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_span("`x"), "`` `x ``");
        assert_eq!(
            code_span("x``` [y](http://e)"),
            "````x``` [y](http://e)````"
        );
        assert_eq!(fenced("plain"), "```\nplain\n```\n");
        assert_eq!(fenced("a ```` b"), "`````\na ```` b\n`````\n");
    }

    #[test]
    fn hidden_characters_become_visible() {
        assert_eq!(reveal("plain"), "plain");
        assert!(matches!(reveal("plain"), Cow::Borrowed(_)));
        assert_eq!(reveal("a\u{202E}b\u{200B}c"), "a<U+202E>b<U+200B>c");
        assert_eq!(reveal("e\u{2067}x"), "e<U+2067>x");
        assert_eq!(
            reveal_html("<td title=\"a\u{202E}\">b\u{FEFF}</td>".into()),
            "<td title=\"a&lt;U+202E&gt;\">b&lt;U+FEFF&gt;</td>"
        );
    }

    #[test]
    fn repository_paths_with_dot_segments_are_refused() {
        assert!(safe_repository_path("o/r"));
        assert!(safe_repository_path("g/sub/p.x"));
        for bad in ["", "../evil", "o/../../x", "o//r", "./r", "o/r/"] {
            assert!(!safe_repository_path(bad), "{bad}");
        }
    }
}
