//! Fingerprints: which failures are "the same".
//!
//! An evidence line is normalised (temporary paths, timestamps, UUIDs, IP
//! addresses and ports, hex ids, durations and other numbers become
//! placeholders) and hashed, so that runs failing for the same reason cluster
//! and a new reason gets a NEW badge.

use std::sync::LazyLock;

use regex::{Captures, Regex};
use sha2::{Digest, Sha256};

use super::clean::strip_ansi_and_sections;

struct Norm {
    re: Regex,
    rep: fn(&Captures<'_>) -> String,
}

fn norm(pattern: &str, rep: fn(&Captures<'_>) -> String) -> Norm {
    Norm {
        re: Regex::new(pattern).expect("normalisation regex"),
        rep,
    }
}

fn group(c: &Captures<'_>, i: usize) -> String {
    c.get(i).map_or(String::new(), |m| m.as_str().to_string())
}

static NORMALISERS: LazyLock<Vec<Norm>> = LazyLock::new(|| {
    vec![
        // temporary paths (before anything that would eat their digits)
        norm(
            concat!(
                r#"(?:/private)?/var/folders/[^\s'"`,;:)\]]+"#,
                r#"|/(?:var/)?tmp/[^\s'"`,;:)\]]+"#,
                r#"|/home/runner/work/_temp/[^\s'"`,;:)\]]+"#,
                r#"|(?i:[a-z]:\\Users\\[^\\\s]+\\AppData\\Local\\Temp)(?:\\[^\s'"`,;:)\]]*)?"#,
                r#"|(?i:[a-z]:\\a\\_temp)(?:\\[^\s'"`,;:)\]]*)?"#,
            ),
            |_| "<tmp>".into(),
        ),
        // ISO timestamps and dates
        norm(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2}|\s?UTC)?)?\b",
            |_| "<ts>".into(),
        ),
        norm(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b", |_| "<ts>".into()),
        norm(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z\b)?", |_| {
            "<ts>".into()
        }),
        // UUIDs
        norm(
            r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
            |_| "<uuid>".into(),
        ),
        // IPv4 with optional port
        norm(r"\b(?:\d{1,3}\.){3}\d{1,3}\b(:\d{1,5}\b)?", |c| {
            if c.get(1).is_some() {
                "<ip>:<port>".into()
            } else {
                "<ip>".into()
            }
        }),
        // IPv6 (compressed or full); checked below for context
        norm(
            r"(?i)(^|[^\w:.])((?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4})(\]:\d{1,5}\b)?",
            |c| {
                let addr = &c[2];
                let ok = addr.bytes().any(|b| b.is_ascii_digit())
                    && (addr.contains("::") || addr.bytes().filter(|&b| b == b':').count() == 7)
                    && !addr.contains(":::");
                if !ok {
                    return c[0].to_string();
                }
                let port = if c.get(3).is_some() { "]:<port>" } else { "" };
                format!("{}<ip>{port}", &c[1])
            },
        ),
        // host:port for localhost and dotted host names with a common TLD
        norm(
            r"(?i)\b(localhost|(?:[a-z0-9-]+\.)+(?:com|net|org|io|dev|local|internal|cloud|app|svc)):\d{1,5}\b",
            |c| format!("{}:<port>", &c[1]),
        ),
        // 0x... (memory addresses) and hex ids of 7+ chars with a digit and a letter
        norm(r"\b0[xX][0-9a-fA-F]+\b", |_| "<hex>".into()),
        norm(r"\b[0-9a-fA-F]{7,}\b", |c| {
            let s = &c[0];
            if s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic()) {
                "<hex>".into()
            } else {
                s.to_string()
            }
        }),
        // durations: 12.3s, 450ms, 1h0m0s, 30 seconds
        norm(
            concat!(
                r"(^|[^A-Za-z0-9_.])",
                r"((?:\d+(?:\.\d+)?(?:ns|us|µs|ms|h|m|s))+",
                r"|\d+(?:\.\d+)?\s?(?:secs?|seconds?|mins?|minutes?|hrs?|hours?|milliseconds?))\b",
            ),
            |c| format!("{}<dur>", group(c, 1)),
        ),
        // remaining numbers that are not part of an identifier (E0308 stays)
        norm(r"(^|[^A-Za-z0-9_])\d+(?:\.\d+)*", |c| {
            format!("{}<num>", group(c, 1))
        }),
    ]
});

/// Normalises a line so that lines differing only in volatile details cluster:
/// temporary paths become `<tmp>`, timestamps/dates/times `<ts>`, UUIDs `<uuid>`,
/// IPv4/IPv6 addresses `<ip>` (with `:<port>`), `0x...` and 7+ character hex ids
/// (with at least one digit and one letter) `<hex>`, durations `<dur>`, other numbers
/// not glued to a letter `<num>`; whitespace is collapsed and trimmed. ANSI escapes
/// and CI markers are stripped first.
pub fn normalize_fingerprint(line: &str) -> String {
    let mut s = strip_ansi_and_sections(line);
    for n in NORMALISERS.iter() {
        if n.re.is_match(&s) {
            s = n.re.replace_all(&s, n.rep).into_owned();
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Short stable id: the first 16 hex digits of SHA-256 of [`normalize_fingerprint`].
pub fn fingerprint(line: &str) -> String {
    let digest = Sha256::digest(normalize_fingerprint(line).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// grep export
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_normalisation_replaces_volatile_parts() {
        let table = [
            ("failed after 3 retries", "failed after <num> retries"),
            (
                "error[E0308] at src/main.rs:12:5",
                "error[E0308] at src/main.rs:<num>:<num>",
            ),
            ("commit 3f9a2b7c1d is bad", "commit <hex> is bad"),
            (
                "segfault at 0x7ffd5e8c and 0XDEADBEEF",
                "segfault at <hex> and <hex>",
            ),
            (
                "word deadbeef stays, facade too",
                "word deadbeef stays, facade too",
            ),
            (
                "request 123e4567-e89b-12d3-a456-426614174000 failed",
                "request <uuid> failed",
            ),
            ("connect 10.0.0.3 failed", "connect <ip> failed"),
            ("connect 10.0.0.3:5432 failed", "connect <ip>:<port> failed"),
            (
                "connect [2001:db8::8a2e:370:7334]:443 failed",
                "connect [<ip>]:<port> failed",
            ),
            ("connect fe80::1 failed", "connect <ip> failed"),
            ("connect ::1 failed", "connect <ip> failed"),
            ("std::io::Error stays", "std::io::Error stays"),
            ("at 2024-01-02T03:04:05.123Z boom", "at <ts> boom"),
            ("at 2024-01-02 03:04:05+02:00 boom", "at <ts> boom"),
            ("on 2024-01-02 boom", "on <ts> boom"),
            ("at 12:34:56 boom", "at <ts> boom"),
            ("on 1/2/2024 boom", "on <ts> boom"),
            (
                "open /tmp/pytest-of-runner/pytest-12/test_x0/db.sqlite: denied",
                "open <tmp>: denied",
            ),
            (
                "open /var/folders/xy/abc123/T/foo failed",
                "open <tmp> failed",
            ),
            (
                "open /private/var/folders/xy/T/foo failed",
                "open <tmp> failed",
            ),
            (
                r"open C:\Users\RUNNER~1\AppData\Local\Temp\tmp12ab\x.txt failed",
                "open <tmp> failed",
            ),
            ("took 12.3s then 450ms", "took <dur> then <dur>"),
            ("exceeded 1h0m0s", "exceeded <dur>"),
            ("waited 30 seconds", "waited <dur>"),
            ("-Xmx256m stays", "-Xmx256m stays"),
            ("localhost:8080 down", "localhost:<port> down"),
            ("api.example.com:443 down", "api.example.com:<port> down"),
            ("  lots   of\tspace  ", "lots of space"),
            ("\x1b[31mred 42\x1b[0m", "red <num>"),
            (
                "python3.11 and sha256 stay",
                "python3.<num> and sha256 stay",
            ),
        ];
        for (input, want) in table {
            assert_eq!(normalize_fingerprint(input), want, "{input:?}");
        }
    }

    #[test]
    fn fingerprints_cluster_lines_that_differ_only_in_volatile_parts() {
        let pairs = [
            (
                "Connection to 10.0.0.3:5432 timed out after 30s",
                "Connection to 10.1.2.9:6543 timed out after 12s",
            ),
            (
                "2024-01-01T00:00:00Z job 123e4567-e89b-12d3-a456-426614174000 failed",
                "2025-06-30T23:59:59Z job 00000000-0000-0000-0000-000000000000 failed",
            ),
            (
                "write /tmp/abc/1: No space left",
                "write /tmp/zz9/77: No space left",
            ),
            ("segfault at 0x0000deadbeef", "segfault at 0x00001234"),
        ];
        for (a, b) in pairs {
            assert_eq!(fingerprint(a), fingerprint(b), "{a} vs {b}");
        }
        assert_ne!(fingerprint("disk full"), fingerprint("out of memory"));
        let f = fingerprint("anything");
        assert_eq!(f.len(), 16);
        assert!(f.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
