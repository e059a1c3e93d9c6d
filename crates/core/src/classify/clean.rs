//! Line cleaning: what a reader of the log sees on one line.
//!
//! CI logs carry terminal and CI decorations that hide the text rules must
//! match: `\r` progress redraws, ANSI escape sequences, GitHub Actions
//! timestamps and `##[group]` / `::error::` markers, GitLab `section_start:`
//! markers, Travis CI `travis_fold:` / `travis_time:` markers. This module
//! removes them. It is pure string work; the prefilter relies on one property:
//! the cleaned line is always a substring of the line with its escape
//! sequences removed and only the text after the last `\r` kept.

use std::borrow::Cow;

/// The line as text, invalid UTF-8 replaced by U+FFFD.
pub(crate) fn decode(line: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(line),
    }
}

/// The cleaned text of one raw line (see [`clean_line`]).
pub(crate) fn clean_bytes(line: &[u8]) -> String {
    let decoded = decode(line);
    clean_line(decoded.trim_end_matches('\r')).into_owned()
}

/// Cleans one log line for display and matching:
/// * trailing `\r`/`\n` are dropped, and of a `\r` progress overwrite only the text
///   after the last `\r` is kept (this also drops GitLab `section_start:`/
///   `section_end:` markers, which end in `\r`; a marker without `\r` is cut too);
/// * ANSI escape sequences (CSI such as colours and `\x1b[0K`, OSC such as
///   hyperlinks/titles, and two-byte escapes) are removed;
/// * a leading GitHub Actions timestamp (`2024-01-02T03:04:05.1234567Z `) is removed;
/// * a leading GitHub marker is removed: `##[group]`, `##[endgroup]`, `##[error]`, any
///   `##[word]`, and workflow commands `::group::`, `::endgroup::`, `::error ...::`,
///   `::warning ...::`, `::notice ...::`, `::debug::`;
/// * leading Travis CI markers are removed (`travis_fold:start:NAME`,
///   `travis_fold:end:NAME`, `travis_time:start:ID`,
///   `travis_time:end:ID:start=..,finish=..,duration=..`, each ended by `\x1b[0K`);
/// * trailing whitespace is removed.
pub fn strip_ansi_and_sections(line: &str) -> String {
    clean_line(line.trim_end_matches(['\r', '\n'])).into_owned()
}

/// Zero-copy unless the line contains escape sequences.
pub(crate) fn clean_line(raw: &str) -> Cow<'_, str> {
    let visible = match raw.rfind('\r') {
        Some(i) => &raw[i + 1..],
        None => raw,
    };
    let visible = strip_travis_markers(visible);
    if visible.contains('\x1b') {
        let stripped = strip_ansi(visible);
        let kept = strip_prefixes(&stripped);
        if kept.len() == stripped.len() {
            Cow::Owned(stripped)
        } else {
            Cow::Owned(kept.to_string())
        }
    } else {
        Cow::Borrowed(strip_prefixes(visible))
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    ansi_segments(s.as_bytes(), |a, b| out.push_str(&s[a..b]));
    out
}

/// Calls `keep(start, end)` for each run of `b` outside ANSI escape sequences
/// (CSI, OSC/DCS/SOS/PM/APC strings, charset designations, two-byte escapes).
/// In UTF-8 text the runs start and end on char boundaries.
pub(crate) fn ansi_segments(b: &[u8], mut keep: impl FnMut(usize, usize)) {
    let mut seg = 0;
    let mut i = 0;
    while i < b.len() {
        match memchr::memchr(0x1b, &b[i..]) {
            Some(k) => i += k,
            None => break,
        }
        if seg < i {
            keep(seg, i);
        }
        i += 1;
        if i < b.len() {
            match b[i] {
                b'[' => {
                    i += 1;
                    while i < b.len() && (0x30..=0x3f).contains(&b[i]) {
                        i += 1;
                    }
                    while i < b.len() && (0x20..=0x2f).contains(&b[i]) {
                        i += 1;
                    }
                    if i < b.len() && (0x40..=0x7e).contains(&b[i]) {
                        i += 1;
                    }
                }
                // OSC, DCS, SOS, PM, APC: string terminated by BEL or ESC '\'
                b']' | b'P' | b'X' | b'^' | b'_' => {
                    i += 1;
                    while i < b.len() {
                        if b[i] == 0x07 {
                            i += 1;
                            break;
                        }
                        if b[i] == 0x1b {
                            if i + 1 < b.len() && b[i + 1] == b'\\' {
                                i += 2;
                            }
                            break;
                        }
                        i += 1;
                    }
                }
                // charset designation: ESC ( B etc.
                b'(' | b')' | b'*' | b'+' => {
                    i += 1;
                    if i < b.len() && b[i].is_ascii() {
                        i += 1;
                    }
                }
                c if c.is_ascii() && c != 0x1b => i += 1,
                _ => {}
            }
        }
        seg = i;
    }
    if seg < b.len() {
        keep(seg, b.len());
    }
}

fn strip_prefixes(s: &str) -> &str {
    let s = strip_gh_timestamp(s);
    let s = strip_gh_marker(s);
    let s = strip_section_marker(s);
    s.trim_end()
}

/// `YYYY-MM-DDTHH:MM:SS(.f+)?Z ` at the start.
fn strip_gh_timestamp(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() < 20 {
        return s;
    }
    let d = |i: usize| b[i].is_ascii_digit();
    let shape = d(0) && d(1) && d(2) && d(3) && b[4] == b'-' && d(5) && d(6) && b[7] == b'-';
    let shape = shape && d(8) && d(9) && b[10] == b'T' && d(11) && d(12) && b[13] == b':';
    let shape = shape && d(14) && d(15) && b[16] == b':' && d(17) && d(18);
    if !shape {
        return s;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i + 1 < b.len() && b[i] == b'Z' && b[i + 1] == b' ' {
        &s[i + 2..]
    } else if i + 1 == b.len() && b[i] == b'Z' {
        ""
    } else {
        s
    }
}

fn strip_gh_marker(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix("##[") {
        if let Some(end) = rest.find(']') {
            let tag = &rest[..end];
            if !tag.is_empty() && tag.bytes().all(|c| c.is_ascii_lowercase()) {
                return &rest[end + 1..];
            }
        }
        return s;
    }
    if let Some(rest) = s.strip_prefix("::") {
        let cmd_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_lowercase() || *c == b'-')
            .count();
        let cmd = &rest[..cmd_len];
        if matches!(
            cmd,
            "group" | "endgroup" | "error" | "warning" | "notice" | "debug"
        ) && let Some(end) = rest[cmd_len..].find("::")
        {
            let params = &rest[cmd_len..cmd_len + end];
            if params.is_empty() || params.starts_with(' ') {
                return &rest[cmd_len + end + 2..];
            }
        }
    }
    s
}

fn strip_section_marker(s: &str) -> &str {
    let tail = if let Some(t) = s.strip_prefix("section_start:") {
        t
    } else if let Some(t) = s.strip_prefix("section_end:") {
        t
    } else {
        return s;
    };
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = tail[digits..].strip_prefix(':') else {
        return s;
    };
    let name = rest
        .bytes()
        .take_while(|&b| !matches!(b, b'[' | b' ' | b'\t'))
        .count();
    let mut rest = &rest[name..];
    if rest.starts_with('[')
        && let Some(end) = rest.find(']')
    {
        rest = &rest[end + 1..];
    }
    rest
}

/// Travis CI prints its fold and timing markers in front of the text, each
/// ended by `\x1b[0K` (the markers before a `\r` are already gone).
fn strip_travis_markers(mut s: &str) -> &str {
    loop {
        let t = s.trim_start_matches("\x1b[0K");
        if !(t.starts_with("travis_fold:") || t.starts_with("travis_time:")) {
            return s;
        }
        s = t;
        match s.find("\x1b[0K") {
            Some(end) => s = &s[end + "\x1b[0K".len()..],
            // a marker alone on its line
            None if !s.contains(' ') => return "",
            None => return s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_strips_terminal_and_ci_decorations() {
        let cases = [
            ("\x1b[31;1mERROR\x1b[0m: boom\r", "ERROR: boom"),
            ("10%\r50%\r100% done", "100% done"),
            (
                "\x1b[0Ksection_start:1700000000:build[collapsed=true]\r\x1b[0KBuilding",
                "Building",
            ),
            ("section_start:1700000000:build\rBuilding", "Building"),
            ("section_end:1700000000:build", ""),
            (
                "2024-01-02T03:04:05.1234567Z ##[error]Process completed",
                "Process completed",
            ),
            (
                "2024-01-02T03:04:05.1234567Z ##[group]Run cargo test",
                "Run cargo test",
            ),
            ("::error file=a.rs,line=1::bad thing", "bad thing"),
            ("::endgroup::", ""),
            (
                "link \x1b]8;;https://x.example\x07text\x1b]8;;\x07 end",
                "link text end",
            ),
            ("\x1b(Bplain", "plain"),
            ("trailing spaces   ", "trailing spaces"),
            (
                "travis_time:end:0a6b4124:start=1555676451137144000,finish=1555676719326659000,duration=268189515000\x1b[0K\x1b[31;1mThe command \"make\" exited with 2.\x1b[0m",
                "The command \"make\" exited with 2.",
            ),
            (
                "travis_fold:end:git.checkout\x1b[0Ktravis_fold:start:git.submodule\x1b[0Ktravis_time:start:2e898708\x1b[0K$ git submodule update",
                "$ git submodule update",
            ),
            (
                "travis_fold:end:out\r\x1b[0KR CMD check failed\r",
                "R CMD check failed",
            ),
            ("travis_should_stay", "travis_should_stay"),
            ("\x1b[0Ktravis_time:start:33a6ff71", ""),
            (
                "travis_time:end:1f:start=1,finish=2,duration=3,event=before_install\x1b[0K$ make",
                "$ make",
            ),
            ("##[Weird]stays", "##[Weird]stays"),
        ];
        for (raw, want) in cases {
            assert_eq!(strip_ansi_and_sections(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        assert_eq!(clean_bytes(b"ab\xffcd\r"), "ab\u{fffd}cd");
    }
}
