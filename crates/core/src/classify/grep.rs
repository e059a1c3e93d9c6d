//! The classifier's patterns in GNU `grep -E` syntax, for the throughput
//! baseline of `scripts/bench` (`LC_ALL=C grep -E -c -f patterns`).
//!
//! Patterns are parsed with `regex-syntax` (ASCII mode: `\w`, `\d`, `\s`, `\b`
//! are ASCII, as in grep's C locale) and printed back as POSIX ERE with GNU
//! extensions (`\b`, `\B`, `\<`, `\>`): `(?i)` becomes bracket pairs, `(?:` a
//! plain group, lazy quantifiers greedy.

use regex_syntax::ParserBuilder;
use regex_syntax::hir::{Class, Hir, HirKind, Look};

use super::heuristic::HEURISTIC_PATTERN;
use super::rules::default_rules;
use super::steps::MARKER_PATTERNS;

/// The patterns the classifier looks for with the default rules (every rule,
/// the error-word heuristic and the CI step markers), one ERE per entry.
pub fn default_patterns_for_grep() -> Vec<String> {
    default_rules()
        .iter()
        .map(|r| r.pattern.as_str())
        .chain([HEURISTIC_PATTERN])
        .chain(MARKER_PATTERNS.iter().copied())
        .map(|p| {
            rust_regex_to_ere(p).unwrap_or_else(|e| panic!("pattern {p:?} has no ERE form: {e}"))
        })
        .collect()
}

/// Translates a Rust regex to ERE (an error names what has no ERE form).
pub(crate) fn rust_regex_to_ere(pattern: &str) -> Result<String, String> {
    let hir = ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    print(&hir, &mut out)?;
    String::from_utf8(out).map_err(|_| "a class of non-ASCII bytes".to_string())
}

fn print(h: &Hir, out: &mut Vec<u8>) -> Result<(), String> {
    match h.kind() {
        HirKind::Empty => out.extend_from_slice(b"()"),
        HirKind::Literal(lit) => {
            for &b in lit.0.iter() {
                if b".[]()*+?{}|^$\\".contains(&b) {
                    out.push(b'\\');
                }
                out.push(b);
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut set = [false; 256];
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    set[b as usize] = true;
                }
            }
            bracket(&set, out)?;
        }
        HirKind::Class(Class::Unicode(c)) => {
            // only from alternations of a few non-ASCII characters: (?:✗|×)
            let chars: Vec<char> = c
                .ranges()
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .take(65)
                .collect();
            if chars.len() > 64 {
                return Err("a large Unicode class".into());
            }
            out.push(b'(');
            for (i, ch) in chars.iter().enumerate() {
                if i > 0 {
                    out.push(b'|');
                }
                let mut buf = [0u8; 4];
                let bytes = ch.encode_utf8(&mut buf).as_bytes();
                if bytes.len() == 1 && b".[]()*+?{}|^$\\".contains(&bytes[0]) {
                    out.push(b'\\');
                }
                out.extend_from_slice(bytes);
            }
            out.push(b')');
        }
        HirKind::Look(look) => out.extend_from_slice(match look {
            Look::Start | Look::StartLF | Look::StartCRLF => b"^",
            Look::End | Look::EndLF | Look::EndCRLF => b"$",
            Look::WordAscii | Look::WordUnicode => b"\\b",
            Look::WordAsciiNegate | Look::WordUnicodeNegate => b"\\B",
            Look::WordStartAscii | Look::WordStartUnicode => b"\\<",
            Look::WordEndAscii | Look::WordEndUnicode => b"\\>",
            other => return Err(format!("the assertion {other:?}")),
        }),
        HirKind::Repetition(rep) => {
            atom(&rep.sub, out)?;
            let q = match (rep.min, rep.max) {
                (0, None) => "*".to_string(),
                (1, None) => "+".to_string(),
                (0, Some(1)) => "?".to_string(),
                (n, Some(m)) if n == m => format!("{{{n}}}"),
                (n, None) => format!("{{{n},}}"),
                (n, Some(m)) => format!("{{{n},{m}}}"),
            };
            out.extend_from_slice(q.as_bytes());
        }
        HirKind::Capture(cap) => {
            out.push(b'(');
            print(&cap.sub, out)?;
            out.push(b')');
        }
        HirKind::Concat(subs) => {
            for s in subs {
                if matches!(s.kind(), HirKind::Alternation(_)) {
                    out.push(b'(');
                    print(s, out)?;
                    out.push(b')');
                } else {
                    print(s, out)?;
                }
            }
        }
        HirKind::Alternation(subs) => {
            for (i, s) in subs.iter().enumerate() {
                if i > 0 {
                    out.push(b'|');
                }
                print(s, out)?;
            }
        }
    }
    Ok(())
}

/// `h` as something a quantifier can follow.
fn atom(h: &Hir, out: &mut Vec<u8>) -> Result<(), String> {
    let single = match h.kind() {
        HirKind::Literal(lit) => lit.0.len() == 1,
        HirKind::Class(_) | HirKind::Capture(_) => true,
        _ => false,
    };
    if single {
        print(h, out)
    } else {
        out.push(b'(');
        print(h, out)?;
        out.push(b')');
        Ok(())
    }
}

/// A bracket expression for the bytes in `set` (a negated one when that is
/// shorter, as for `[^x]` whose set holds every non-ASCII byte).
fn bracket(set: &[bool; 256], out: &mut Vec<u8>) -> Result<(), String> {
    let negate = set[0xff];
    // lines never hold a newline, and a raw one would split the patterns file
    let members: Vec<u8> = (0..=255u8)
        .filter(|&b| set[b as usize] != negate && b != b'\n')
        .collect();
    if negate && members.is_empty() {
        out.push(b'.');
        return Ok(());
    }
    if members.iter().any(|&b| b >= 0x80) {
        return Err("a class of non-ASCII bytes".into());
    }
    out.push(b'[');
    if negate {
        out.push(b'^');
    }
    // `]` first, `^` not first, `-` last: the only places they are literal
    if members.contains(&b']') {
        out.push(b']');
    }
    let plain: Vec<u8> = members
        .iter()
        .copied()
        .filter(|b| !matches!(b, b']' | b'^' | b'-'))
        .collect();
    let mut i = 0;
    while i < plain.len() {
        let mut j = i;
        while j + 1 < plain.len() && plain[j + 1] == plain[j] + 1 {
            j += 1;
        }
        out.push(plain[i]);
        if j >= i + 2 {
            out.push(b'-');
            out.push(plain[j]);
            i = j + 1;
        } else {
            i += 1;
        }
    }
    if members.contains(&b'^') {
        out.push(b'^');
    }
    if members.contains(&b'-') {
        out.push(b'-');
    }
    out.push(b']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_syntax_translates_to_ere() {
        let table = [
            (r"(?i)ab\d", "[Aa][Bb][0-9]"),
            (r"(?:x|y)+?", "(x|y)+"),
            (r"\bfoo\s\.", "\\bfoo[\t\u{b}-\r ]\\."),
            (r"[^`]*`", "[^`]*`"),
            (r"a\-b", "a-b"),
            (r"^x.y$", "^x.y$"),
            (r"a{2,3}b{4}c{5,}", "a{2,3}b{4}c{5,}"),
            (r"[\]^-]", r"[]^-]"),
            ("(?:✗|×) x", "(×|✗) x"),
            (r"ab+", "ab+"),
            (r"(?:ab)+", "(ab)+"),
        ];
        for (input, want) in table {
            assert_eq!(rust_regex_to_ere(input).unwrap(), want, "{input}");
        }
        assert!(rust_regex_to_ere("(").is_err());
    }

    #[test]
    fn every_default_pattern_has_an_ere_form() {
        let pats = default_patterns_for_grep();
        assert_eq!(
            pats.len(),
            default_rules().len() + 1 + MARKER_PATTERNS.len()
        );
    }

    fn grep_matches(pattern: &str, line: &str) -> Option<bool> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("grep")
            .args(["-E", "-c", "-e", pattern])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        child
            .stdin
            .take()?
            .write_all(format!("{line}\n").as_bytes())
            .ok()?;
        let out = child.wait_with_output().ok()?;
        match out.status.code()? {
            0 => Some(true),
            1 => Some(false),
            _ => panic!("grep rejected {pattern:?}"),
        }
    }

    #[test]
    fn grep_agrees_with_the_rust_rules_on_the_examples() {
        if grep_matches("x", "x").is_none() {
            eprintln!("grep is not installed: skipping");
            return;
        }
        let rules = default_rules();
        let compiled = super::super::rules::compile(&rules).unwrap();
        for (name, hit, miss) in super::super::examples::RULE_EXAMPLES {
            let k = rules.iter().position(|r| r.name == *name).unwrap();
            let ere = rust_regex_to_ere(&rules[k].pattern).unwrap();
            for line in hit.lines().chain(miss.lines()) {
                if !line.is_ascii() {
                    continue; // grep's C locale and Rust's Unicode \b differ there
                }
                assert_eq!(
                    grep_matches(&ere, line),
                    Some(compiled[k].is_match(line)),
                    "{name}: {line:?} with {ere}"
                );
            }
        }
    }
}
