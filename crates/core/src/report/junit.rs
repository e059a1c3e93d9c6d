//! JUnit XML (and the NUnit / xUnit.net XML dialects CI tools also emit) parsed
//! into the neutral [`Report`] shape.
//!
//! The parser streams with [`quick_xml::Reader`]: no DOM of the file is built.
//! Memory is bounded by the number of distinct tests (plus the largest single
//! XML event, which quick-xml buffers, and which [`parse_junit_limited`] bounds).
//!
//! A report already in memory ([`parse_junit_bytes`], [`parse_junit_str`]) is
//! first read by a tokenizer that mirrors quick-xml's slice reader for the markup
//! reports use and borrows everything from the input; passing `<testcase>`s in
//! the plain form go straight to the test list. Anything else it meets (DOCTYPE,
//! a lone `&`, any error) sends the input through quick-xml instead, so both
//! entry points give the same reports, warnings and errors (a unit test compares
//! them on every fixture and on damaged variants).
//!
//! # Dialects
//!
//! The root element picks the dialect:
//! * `<testsuites>` / `<testsuite>`: JUnit XML as written by Maven Surefire,
//!   Gradle, pytest, Jest (jest-junit), go-junit-report / gotestsum, PHPUnit,
//!   Catch2, cargo-nextest, CUnit, Mocha, Perl (TAP::Harness::JUnit), Marathon,
//!   container-structure-test, Nette Tester, Swift and others.
//!   `<testsuite>` may nest to any depth.
//! * `<test-run>` (NUnit 3) / `<test-results>` (NUnit 2): `<test-suite>` /
//!   `<test-case result=... label=...>`.
//! * `<assemblies>` / `<assembly>` (xUnit.net v2): `<collection>` / `<test result=...>`.
//!
//! Any other root element is [`ReportError::Malformed`]. All dialects give
//! `ReportFormat::Junit`; `bailed_out` is always `false`.
//!
//! # Semantics
//!
//! * **Name**: `classname.name` when `classname` is present and non-empty, unless
//!   `name` already starts with `classname` (or ends with `" " + classname`, as
//!   Mocha writes it); otherwise `name`. NUnit uses `fullname`.
//! * **Outcome** (JUnit): any `<error>` child → `Errored`, else any `<failure>` →
//!   `Failed`, else `<skipped>` / `<disabled>` → `Skipped`; with no such child a
//!   `status` attribute of `disabled`/`skipped`/`notrun`/`ignored`/... → `Skipped`
//!   (`failed` → `Failed`, `error(ed)` → `Errored`); otherwise `Passed`. A child
//!   element always wins over `status`.
//! * **Outcome** (NUnit / xUnit.net, from `result`): `Passed`/`Success`/`Pass`/
//!   `Warning` → `Passed`; `Failed` → `Failed`, or `Errored` with `label`
//!   `Error`/`Cancelled`/`Invalid`; `Error`/`Cancelled`/`NotRunnable` → `Errored`;
//!   `Skipped`/`Ignored`/`Inconclusive`/`NotRun`/`Skip` → `Skipped`.
//! * **Retries inside one `<testcase>`** (Surefire, nextest): each `<flakyFailure>`
//!   / `<flakyError>` / `<rerunFailure>` / `<rerunError>` child is one retry and
//!   its `message` (else first line of its `<stackTrace>`, else its `type`) is the
//!   retry reason. Flaky elements alone leave the test `Passed` (flaky);
//!   rerun elements alone make it `Failed` (`Errored` when the last is `rerunError`).
//! * **Repeated `<testcase>`** with the same `(classname, name)` under the same
//!   chain of enclosing `<testsuite name>`s, where the earlier occurrence
//!   **failed or errored**, is a retry of that test (gotestsum `--rerun-fails`,
//!   pytest-rerunfailures, Web Test Runner, ...): `retries` = occurrences − 1
//!   (plus any flaky/rerun children); outcome, message and duration are those of
//!   the **last** occurrence (so fail-then-pass is flaky); the test keeps the
//!   position of its first occurrence; each earlier occurrence gives its
//!   message's first line (else its outcome word) as a retry reason. A repeat
//!   after a *passed or skipped* occurrence is **not** a retry (runners only
//!   retry failures) but another test with the same name: TestNG data providers
//!   and Jest `test.each` repeat names that way, and counting those as retries
//!   would report passing tests as flaky. Same-named test cases in differently
//!   named suites are distinct tests. At most `MAX_RETRY_REASONS` reasons are
//!   kept per test (`retries` keeps counting). (Ingest stores such same-named
//!   tests as `name [2]`, ...: `report::distinct_names`.)
//! * **Suite-level `<error>` / `<failure>`** (a direct child of a `<testsuite>`;
//!   Ant writes one for a test class that failed to load): the suite's own
//!   results become one `Errored` test named after the suite (its `name`, else
//!   `UNNAMED_SUITE`), with their messages, after the suite's test cases, as
//!   Jenkins counts it. A suite with only such an element is not 0 tests.
//! * **Duration**: `time` (JUnit, NUnit 2, xUnit) or `duration` (NUnit 3), in
//!   seconds. `"1,234.5"` and `"1,234"` are read with `,` as thousands separator,
//!   a lone comma not in thousands groups (`"0,5"`) as the decimal point; missing,
//!   negative, non-finite or garbage → `None`.
//! * **Message**: the `message` attribute and the element text (CDATA included;
//!   `<system-out>`/`<system-err>` never; NUnit/xUnit `<message>` + `<stack-trace>`),
//!   joined with a newline unless the text's opening already contains the
//!   attribute (Surefire repeats it there); leading blank lines and trailing whitespace
//!   removed; several result elements joined in document order; capped at
//!   `MESSAGE_CAP` bytes (a cut ends with `…`). `None` for passed tests.
//! * **Entities**: only the five predefined XML entities and numeric character
//!   references are decoded. A `<!DOCTYPE>` is skipped (with a warning): its entity
//!   declarations are never read, external DTDs/entities are never fetched, and a
//!   reference to any other entity (`&xxe;`, `&lol9;`) is kept verbatim in the
//!   text, so XXE and "billion laughs" inputs parse in bounded memory with the
//!   reference left unexpanded.
//! * **Leniency**: a lone `&` in text is kept as text; content after the root
//!   element is ignored with a warning. Errors (not well-formed XML, unclosed
//!   elements at end of file, invalid UTF-8 (other declared encodings are not
//!   transcoded), nesting deeper than `MAX_DEPTH`,
//!   an empty file, an unknown root element) are [`ReportError::Malformed`] with
//!   `"line L, column C"` (column counted in bytes, 1-based).
//!
//! # Modules
//!
//! One concern each:
//! * `tracked`: the input side of quick-xml: size limit, byte order mark,
//!   line and column of an event;
//! * `fast`: the in-memory tokenizer that stands in for quick-xml;
//! * `xml`: XML details: qualified names, attributes, entities, white space;
//! * `swar`: byte searches eight bytes at a time;
//! * `parser`: the element state machine (dialects, which element is a test
//!   case, where text goes);
//! * `message`: result elements and the message and retry reason they give;
//! * `suite`: suite-level `<error>`/`<failure>` as a test of its own;
//! * `mapping`: a finished test case as a [`TestResult`](crate::model::TestResult):
//!   outcome, name, duration;
//! * `repeats`: the repeated-name rule (a repeat of a failed test is a retry).
mod fast;
mod mapping;
mod message;
mod parser;
mod repeats;
mod suite;
mod swar;
#[cfg(test)]
mod tests;
mod tracked;
mod xml;

use std::io::BufRead;

use quick_xml::Reader;

use super::{Report, ReportError};
use parser::{Flow, Parser};
use tracked::Tracked;

/// Cap, in bytes, on a test's `message` and on each retry reason.
pub(crate) const MESSAGE_CAP: usize = 4096;
/// Maximal element nesting accepted.
pub(crate) const MAX_DEPTH: usize = 256;
/// At most this many retry reasons are kept per test (`retries` keeps counting).
pub(crate) const MAX_RETRY_REASONS: usize = 64;
/// At most this many warnings are kept per report.
pub(crate) const MAX_WARNINGS: usize = 32;

/// Parses a JUnit XML report from `reader` (no size limit). `file` is only used
/// in error messages.
pub fn parse_junit<R: BufRead>(file: &str, reader: R) -> Result<Report, ReportError> {
    parse_junit_limited(file, reader, u64::MAX)
}

/// Parses a JUnit XML report held in memory.
pub fn parse_junit_str(file: &str, s: &str) -> Result<Report, ReportError> {
    parse_junit_bytes(file, s.as_bytes())
}

/// Parses a JUnit XML report held in memory: the same result as [`parse_junit`],
/// faster. Well-formed reports go through a tokenizer that mirrors quick-xml's
/// (see `fast`); anything it does not handle, and every error, is parsed with
/// quick-xml.
pub fn parse_junit_bytes(file: &str, bytes: &[u8]) -> Result<Report, ReportError> {
    match fast::parse(bytes) {
        Some(report) => Ok(report),
        None => parse_junit(file, bytes),
    }
}

/// Like [`parse_junit`], but fails with [`ReportError::TooLarge`] as soon as more
/// than `max_bytes` bytes would be read (a file of exactly `max_bytes` is fine).
pub fn parse_junit_limited<R: BufRead>(
    file: &str,
    reader: R,
    max_bytes: u64,
) -> Result<Report, ReportError> {
    let mut xml = Reader::from_reader(Tracked::new(reader, max_bytes));
    {
        let cfg = xml.config_mut();
        cfg.check_end_names = true;
        cfg.allow_unmatched_ends = false;
        cfg.expand_empty_elements = false;
        cfg.allow_dangling_amp = true;
    }
    let mut parser = Parser::new();
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        xml.get_mut().mark();
        let event_start = xml.buffer_position();
        let event = match xml.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(err) => {
                if xml.get_ref().exceeded {
                    return Err(ReportError::TooLarge {
                        file: file.to_string(),
                        limit: max_bytes,
                    });
                }
                let at = match err {
                    quick_xml::Error::Io(_) => xml.buffer_position(),
                    // not located by quick-xml: point at the event holding the bytes
                    quick_xml::Error::Encoding(_) => event_start,
                    _ => xml.error_position(),
                };
                let position = xml.get_ref().describe(at);
                if parser.root_closed {
                    parser.warn(format!(
                        "{position}: unreadable content after the root element ignored ({err})"
                    ));
                    break;
                }
                return Err(malformed(file, position, describe_xml_error(&err)));
            }
        };
        let position = || xml.get_ref().describe(event_start);
        match parser.handle(event, &position) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break,
            Err(reason) => return Err(malformed(file, position(), reason)),
        }
        if buf.capacity() > 64 * 1024 {
            buf = Vec::with_capacity(8 * 1024);
        } else {
            buf.clear();
        }
    }
    Ok(parser.finish())
}

fn malformed(file: &str, position: String, reason: String) -> ReportError {
    ReportError::Malformed {
        file: file.to_string(),
        position,
        reason,
    }
}

fn describe_xml_error(err: &quick_xml::Error) -> String {
    match err {
        quick_xml::Error::Io(e) => format!("read error: {e}"),
        quick_xml::Error::Encoding(e) => format!("not valid UTF-8 ({e})"),
        other => format!("not well-formed XML: {other}"),
    }
}
