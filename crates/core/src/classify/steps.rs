//! The step locator: where a CI log's commands start and how they ended.
//!
//! CI systems print a line when a command (a *step*) starts and when one fails:
//!
//! | CI | step starts | step ended with a code | job ended |
//! | --- | --- | --- | --- |
//! | Travis CI | `travis_time:start:` marker | `The command "…" exited with N.` | `Done. Your build exited with N.` |
//! | GitHub Actions | `##[group]Run …` | `##[error]Process completed with exit code N.` | |
//! | GitLab CI | | `ERROR: Job failed: exit code N` | `Job succeeded` |
//! | Jenkins | `[Pipeline] sh` | `ERROR: script returned exit code N` | `Finished: SUCCESS` / `FAILURE` |
//!
//! This module recognises those lines ([`marker`]); the ranking decides which
//! step's evidence to report. Every marker line matches one of
//! [`MARKER_PATTERNS`] (so the prefilter keeps it), except the Travis start
//! marker, which hides before a `\r` and is found in the raw bytes
//! ([`TRAVIS_STEP_START`]).

/// A structural line of a CI log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// A step (command) starts.
    StepStart,
    /// The step ended with this exit code.
    Exit(u32),
    /// The first line of a Travis exit marker whose command spans several lines
    /// (the code follows on a later line): not output of the step.
    ExitContinues,
    /// The whole job ended with this status (0 = success).
    JobEnd(u32),
}

/// Raw bytes that start a Travis CI step (before a `\r`, so invisible once the
/// line is cleaned).
pub(crate) const TRAVIS_STEP_START: &[u8] = b"travis_time:start:";

/// Regexes every marker line matches (for the prefilter).
pub(crate) const MARKER_PATTERNS: &[&str] = &[
    r#"exited with \d"#,
    r"^Process completed with exit code \d",
    r"^ERROR: Job failed: exit",
    r"^ERROR: script returned exit code \d",
    r#"^The command ""#,
    r"^Job succeeded",
    r"^Finished: (?:SUCCESS|FAILURE|UNSTABLE)",
    r"##\[group\]Run ",
    r"^\[Pipeline\] (?:sh|bat|powershell)$",
];

/// The marker on a line: `text` is the cleaned line, `raw` the decoded line
/// before cleaning (GitHub's `##[group]` is only visible there).
pub(crate) fn marker(text: &str, raw: &str) -> Option<Marker> {
    if let Some(code) = travis_exit(text) {
        return Some(Marker::Exit(code));
    }
    if text.starts_with("The command \"") {
        return Some(Marker::ExitContinues);
    }
    for prefix in [
        "Process completed with exit code ",
        "ERROR: Job failed: exit code ",
        "ERROR: Job failed: exit status ",
        "ERROR: script returned exit code ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return code(rest).map(Marker::Exit);
        }
    }
    if let Some(at) = text.find("Done. Your build exited with ") {
        return code(&text[at + "Done. Your build exited with ".len()..]).map(Marker::JobEnd);
    }
    if text.starts_with("Job succeeded") || text.starts_with("Finished: SUCCESS") {
        return Some(Marker::JobEnd(0));
    }
    if text.starts_with("Finished: FAILURE") || text.starts_with("Finished: UNSTABLE") {
        return Some(Marker::JobEnd(1));
    }
    if raw.contains("##[group]Run ")
        || matches!(
            text,
            "[Pipeline] sh" | "[Pipeline] bat" | "[Pipeline] powershell"
        )
    {
        return Some(Marker::StepStart);
    }
    None
}

/// `The command "…" exited with N.`, `The command "…" failed and exited with N
/// during .`, or the last line `" exited with N.` of a multi-line command.
fn travis_exit(text: &str) -> Option<u32> {
    if !(text.starts_with("The command \"") || text.starts_with('"')) {
        return None;
    }
    for sep in ["\" exited with ", "\" failed and exited with "] {
        if let Some(at) = text.rfind(sep) {
            return code(&text[at + sep.len()..]);
        }
    }
    None
}

fn code(s: &str) -> Option<u32> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    s[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn markers_of_each_ci_are_recognised() {
        let cases = [
            (
                "The command \"make test\" exited with 2.",
                "",
                Some(Marker::Exit(2)),
            ),
            (
                "The command \"npm ci\" failed and exited with 1 during .",
                "",
                Some(Marker::Exit(1)),
            ),
            ("\" exited with 1.", "", Some(Marker::Exit(1))),
            (
                "The command \"docker run \\",
                "",
                Some(Marker::ExitContinues),
            ),
            (
                "Process completed with exit code 1.",
                "##[error]Process completed with exit code 1.",
                Some(Marker::Exit(1)),
            ),
            (
                "ERROR: Job failed: exit code 137",
                "",
                Some(Marker::Exit(137)),
            ),
            (
                "ERROR: script returned exit code 2",
                "",
                Some(Marker::Exit(2)),
            ),
            (
                "Done. Your build exited with 1.",
                "",
                Some(Marker::JobEnd(1)),
            ),
            (
                "Done. Your build exited with 0.",
                "",
                Some(Marker::JobEnd(0)),
            ),
            ("Job succeeded", "", Some(Marker::JobEnd(0))),
            ("Finished: FAILURE", "", Some(Marker::JobEnd(1))),
            (
                "Run cargo test",
                "2024-01-02T03:04:05.1Z ##[group]Run cargo test",
                Some(Marker::StepStart),
            ),
            ("[Pipeline] sh", "[Pipeline] sh", Some(Marker::StepStart)),
        ];
        for (text, raw, want) in cases {
            let raw = if raw.is_empty() { text } else { raw };
            assert_eq!(marker(text, raw), want, "{text:?}");
        }
    }

    #[test]
    fn near_misses_are_not_markers() {
        for text in [
            "echo The command exited with 2",
            "Run the tests again",
            "ERROR: Job failed: execution took longer than 1h0m0s seconds",
            "Process completed",
            "[Pipeline] stage",
        ] {
            assert_eq!(marker(text, text), None, "{text:?}");
        }
    }

    #[test]
    fn every_marker_line_matches_a_marker_pattern() {
        let pats: Vec<Regex> = MARKER_PATTERNS
            .iter()
            .map(|p| Regex::new(p).unwrap())
            .collect();
        for line in [
            "The command \"make test\" exited with 2.",
            "\" exited with 1.",
            "The command \"docker run \\",
            "Process completed with exit code 1.",
            "ERROR: Job failed: exit code 137",
            "ERROR: script returned exit code 2",
            "Done. Your build exited with 1.",
            "Job succeeded",
            "Finished: SUCCESS",
            "##[group]Run cargo test",
            "[Pipeline] sh",
        ] {
            assert!(pats.iter().any(|p| p.is_match(line)), "{line:?}");
        }
    }
}
