//! The "error-like line" heuristic for lines no rule recognises.
//!
//! A failing step whose cause no rule names still needs an evidence line. A
//! cleaned line is *error-like* when it contains an error word (`error`,
//! `failed`, `exception`, ...) or a CamelCase `FooError` once noise is removed
//! (`0 errors`, `-Werror`, URLs, file names such as `error_handler.rb`, test names
//! such as `test_error_path ... ok`); command echoes (`$ cmd`, `+ cmd`) and lines
//! reporting a pass never are. An error-like line is *strong* when it starts with
//! the error word (`error: ...`, `FATAL ...`, `TypeError: ...`): tools print their
//! own failures that way, while the word elsewhere is often incidental.

use std::sync::LazyLock;

use regex::Regex;

/// Error words at word boundaries (case-insensitive), or CamelCase `...Error` /
/// `...Exception` type names. Also used as a prefilter pattern.
pub(crate) const HEURISTIC_PATTERN: &str = r"(?i:\b(?:error|errors|fatal|failed|failure|failures|panic|panicked|exception|traceback|assert|assertion|aborted|abort)\b)|[a-z](?:Error|Exception)\b";

static HEURISTIC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(HEURISTIC_PATTERN).expect("heuristic regex"));

/// Spans that contain error words but mean "no error".
static NOISE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i:\b(?:0|no|zero|without)\s+(?:\w+\s+)?(?:errors?|failures?|failed|fatal|exceptions?|panics?)\b",
        r"|\b(?:errors?|failures?|failed|exceptions?)\s*[:=]\s*0\b",
        r"|-W(?:no-)?error\S*",
        r"|\berror_log\b",
        r"|\b(?:continue|stop|fail)[-_]on[-_](?:error|failure)\S*",
        r"|\ballow[-_]failures?\S*",
        r"|\bignore[-_]errors?\S*",
        r"|\bfail[-_]fast\S*",
        r"|\bset -e\b",
        r"|\bhttps?://\S+",
        // file names: maven-error-diagnostics-2.0.jar, error_handler.rb, FooException.m
        r"|\b[\w.-]*(?:error|fail|exception)[\w-]*\.[a-z]{1,5}\b)",
        // identifiers: test_error_path, on-failure; option values: --state=failed,slow
        r"|\b\w+[_-](?:errors?|fail\w*|exceptions?)\b|\b(?:errors?|fail\w*|exceptions?)[_-]\w+\b",
        r"|(?:^|\s)--?[\w-]+=\S+",
    ))
    .expect("noise regex")
});

/// Lines that report a pass: `✓ handles errors`, `ok 3 - error path`,
/// `test_error ... ok`, `--- PASS: TestError`, `[ OK ] ErrorTest`.
static PASSED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^\s*(?:[✓✔√]|ok \d|ok\b|PASS(?:ED)?\b|SKIP(?:PED)?\b|XFAIL\b|XPASS\b|--- (?:PASS|SKIP)\b|\[ +OK +\]|\[ +PASSED +\]|\[ +SKIPPED +\])",
        r"|(?:\.\.\.|:)\s*(?:ok|OK|PASS(?:ED)?|passed|\[OK\])\s*(?:\(.*\))?$",
        // pytest -v, unittest -v: a skipped or expected-to-fail test is not a failure
        r"|^\S+::\S+\s+(?:PASSED|SKIPPED|XFAIL|XPASS)\b",
        r"|\.\.\.\s+(?:skipped|SKIPPED|expected failure)\b",
    ))
    .expect("passed regex")
});

/// An error word (or error type) opening the line.
static STRONG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?i:\W{0,4}(?:error|fatal|err|failure|failed)\b[:!\]]?\W*\w)",
        // a tool naming itself first: `configure: error: …`, `git: fatal: …`
        r"|^(?i:[\w./+-]+: (?:error|fatal)\b:?\s*\w)",
        r"|^\s*(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)\b(?::|$)",
    ))
    .expect("strong regex")
});

/// How much an error-like line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Strength {
    /// The error word is somewhere in the line.
    Weak,
    /// The line starts with it.
    Strong,
}

/// Whether a cleaned line looks like an error for the "unknown" fallback: it contains
/// `error`, `fatal`, `failed`, `failure`, `panic`, `exception`, `traceback`,
/// `assert` or `aborted` as a whole word (case-insensitive) or a CamelCase
/// `FooError` / `FooException`, after removing noise such as `0 errors`, `-Werror`,
/// `error_log`, URLs and file names. Command echoes (`$ cmd`, `+ cmd`) and lines
/// reporting a pass are excluded.
pub fn looks_like_error(line: &str) -> bool {
    strength(line).is_some()
}

/// [`looks_like_error`], and how strongly.
pub(crate) fn strength(line: &str) -> Option<Strength> {
    if is_command_echo(line) || !HEURISTIC.is_match(line) || PASSED.is_match(line) {
        return None;
    }
    if NOISE.is_match(line) && !HEURISTIC.is_match(&NOISE.replace_all(line, " ")) {
        return None;
    }
    Some(if STRONG.is_match(line) {
        Strength::Strong
    } else {
        Strength::Weak
    })
}

/// A shell echo of a command (`$ make test` from Travis CI or GitLab, `+ make`
/// / `++ make` from `set -x`), not output of it. (Diff lines `+added` look the
/// same; they are not evidence either.)
pub(crate) fn is_command_echo(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with("$ ") {
        return true;
    }
    let rest = t.trim_start_matches('+');
    rest.len() < t.len() && {
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        rest.starts_with(|c: char| !c.is_whitespace())
    }
}

/// A line that is not output of the command being run: a command echo, or
/// make's `Entering directory` / `Leaving directory` notes.
pub(crate) fn is_not_output(line: &str) -> bool {
    is_command_echo(line) || is_make_directory_note(line)
}

fn is_make_directory_note(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("make") else {
        return false;
    };
    let rest = match rest.strip_prefix('[') {
        Some(r) => match r.find("]") {
            Some(end) if r[..end].bytes().all(|b| b.is_ascii_digit()) => &r[end + 1..],
            _ => return false,
        },
        None => rest,
    };
    rest.starts_with(": Entering directory") || rest.starts_with(": Leaving directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_words_make_a_line_error_like() {
        for line in [
            "Error: Cannot find module 'x'",
            "error: could not compile `app`",
            "FATAL: database is locked",
            "Build OTP........ failed.",
            "TypeError: undefined is not a function",
            "raised a ValueError while parsing",
            "rake aborted!",
        ] {
            assert!(looks_like_error(line), "{line:?}");
        }
    }

    #[test]
    fn noise_and_passes_are_not_error_like() {
        for line in [
            "0 errors, 0 failures",
            "Tests run: 12, Failures: 0, Errors: 0",
            "gcc -Wall -Werror -o app main.c",
            "Downloading https://repo.example.org/maven-error-diagnostics-2.0.jar",
            "Downloaded from central: https://repo.example.org/org/x/error_prone/2.0/x.pom",
            "export GIT_PROVE_OPTS=--timer --state=failed,slow,save",
            "  ✓ handles errors in the parser (3 ms)",
            "test tests::error_path ... ok",
            "ok 12 - reports an error for bad input",
            "--- PASS: TestErrorHandling (0.00s)",
            "[       OK ] ParserTest.ReportsErrors (0 ms)",
            "100% tests passed, 0 tests failed out of 1",
            "SKIPPED [1] tests/test_x.py:38: exception path covered elsewhere",
            "tests/test_x.py::test_exception_path SKIPPED (exception path covered elsewhere) [ 75%]",
            "test_error_path (tests.T.test_error_path) ... skipped 'needs a database'",
            "$ ./run-tests --fail-fast",
            "+ make error_log",
            "Compiling error_handler.rb",
            "▸ Compiling CwlCatchException.m",
            "set -e",
        ] {
            assert!(!looks_like_error(line), "{line:?}");
        }
    }

    #[test]
    fn strong_lines_start_with_the_error() {
        assert_eq!(strength("Error: boom"), Some(Strength::Strong));
        assert_eq!(strength("[error] boom"), Some(Strength::Strong));
        assert_eq!(
            strength("java.lang.IllegalStateException: bad"),
            Some(Strength::Strong)
        );
        assert_eq!(
            strength("configure: error: C compiler cannot create executables"),
            Some(Strength::Strong)
        );
        assert_eq!(strength("*** Failed ***"), Some(Strength::Weak));
        assert_eq!(
            strength("Please check the headers of the documents that failed!"),
            Some(Strength::Weak)
        );
        assert_eq!(strength("all fine"), None);
    }

    #[test]
    fn command_echoes_are_recognised() {
        for line in [
            "$ make test",
            "+ make test",
            "++ export X=1",
            "+t/run --flag",
        ] {
            assert!(is_command_echo(line), "{line:?}");
        }
        for line in ["make test", "$", "+", "+  indented", "a + b"] {
            assert!(!is_command_echo(line), "{line:?}");
        }
        assert!(is_not_output("make[4]: Leaving directory '/build/erts'"));
        assert!(is_not_output("make: Entering directory '/build'"));
        assert!(!is_not_output("make[4]: *** [all] Error 1"));
        assert!(!is_not_output("maker: Entering directory"));
    }
}
