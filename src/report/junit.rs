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
//!   named suites are distinct tests. At most [`MAX_RETRY_REASONS`] reasons are
//!   kept per test (`retries` keeps counting). (Ingest stores such same-named
//!   tests as `name [2]`, ...: `report::distinct_names`.)
//! * **Suite-level `<error>` / `<failure>`** (a direct child of a `<testsuite>`;
//!   Ant writes one for a test class that failed to load): the suite's own
//!   results become one `Errored` test named after the suite (its `name`, else
//!   [`UNNAMED_SUITE`]), with their messages, after the suite's test cases, as
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
//!   [`MESSAGE_CAP`] bytes (a cut ends with `…`). `None` for passed tests.
//! * **Entities**: only the five predefined XML entities and numeric character
//!   references are decoded. A `<!DOCTYPE>` is skipped (with a warning): its entity
//!   declarations are never read, external DTDs/entities are never fetched, and a
//!   reference to any other entity (`&xxe;`, `&lol9;`) is kept verbatim in the
//!   text, so XXE and "billion laughs" inputs parse in bounded memory with the
//!   reference left unexpanded.
//! * **Leniency**: a lone `&` in text is kept as text; content after the root
//!   element is ignored with a warning. Errors (not well-formed XML, unclosed
//!   elements at end of file, invalid UTF-8 (other declared encodings are not
//!   transcoded), nesting deeper than [`MAX_DEPTH`],
//!   an empty file, an unknown root element) are [`ReportError::Malformed`] with
//!   `"line L, column C"` (column counted in bytes, 1-based).
mod fast;

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, BufRead, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use super::{ParsedTest, Report, ReportError, ReportFormat};
use crate::model::TestOutcome;

/// Cap, in bytes, on a test's `message` and on each retry reason.
pub const MESSAGE_CAP: usize = 4096;
/// Maximal element nesting accepted.
pub const MAX_DEPTH: usize = 256;
/// At most this many retry reasons are kept per test (`retries` keeps counting).
pub const MAX_RETRY_REASONS: usize = 64;
/// At most this many warnings are kept per report.
pub const MAX_WARNINGS: usize = 32;
/// Newline offsets remembered inside one XML event for line/column reporting.
const MAX_TRACKED_NEWLINES: usize = 1 << 20;

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

// ---------------------------------------------------------------------------
// Byte/line tracking reader
// ---------------------------------------------------------------------------

/// A `BufRead` adapter that enforces the size limit, drops a leading UTF-8 BOM
/// and remembers enough about newlines to turn a byte offset of the current XML
/// event into a line and column without keeping the file.
struct Tracked<R> {
    inner: R,
    limit: u64,
    exceeded: bool,
    bom_checked: bool,
    /// the first bytes of the input, read ahead to look for a BOM
    pending: [u8; 3],
    pending_start: usize,
    pending_end: usize,
    /// bytes consumed so far (quick-xml's offsets count the same bytes)
    pos: u64,
    lines: Lines,
}

impl<R: BufRead> Tracked<R> {
    fn new(inner: R, limit: u64) -> Self {
        Tracked {
            inner,
            limit,
            exceeded: false,
            bom_checked: false,
            pending: [0; 3],
            pending_start: 0,
            pending_end: 0,
            pos: 0,
            lines: Lines {
                newlines: 0,
                last_newline: None,
                mark_pos: 0,
                mark_newlines: 0,
                mark_last_newline: None,
                since_mark: Vec::new(),
                untracked_from: None,
            },
        }
    }

    /// Called before each XML event: forget newline offsets of earlier events.
    fn mark(&mut self) {
        let lines = &mut self.lines;
        lines.mark_pos = self.pos;
        lines.mark_newlines = lines.newlines;
        lines.mark_last_newline = lines.last_newline;
        if lines.since_mark.capacity() > 4096 {
            lines.since_mark = Vec::new();
        } else {
            lines.since_mark.clear();
        }
        lines.untracked_from = None;
    }

    /// `"line L, column C"` for a byte offset inside the current event (or at
    /// the current position), `"byte offset N"` otherwise.
    fn describe(&self, offset: u64) -> String {
        let lines = &self.lines;
        let resolvable = offset >= lines.mark_pos
            && offset <= self.pos
            && lines.untracked_from.is_none_or(|u| offset <= u);
        if !resolvable {
            return format!("byte offset {offset}");
        }
        let idx = lines.since_mark.partition_point(|&nl| nl < offset);
        let line = lines
            .mark_newlines
            .saturating_add(idx as u64)
            .saturating_add(1);
        let last_nl = match idx.checked_sub(1) {
            Some(i) => lines.since_mark.get(i).copied(),
            None => lines.mark_last_newline,
        };
        let column = match last_nl {
            Some(nl) => offset.saturating_sub(nl),
            None => offset.saturating_add(1),
        };
        format!("line {line}, column {column}")
    }
}

impl<R: BufRead> Read for Tracked<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tracked<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.bom_checked {
            // Read the first three bytes even from a reader that yields fewer
            // at a time, and drop them if they are a UTF-8 byte order mark.
            while self.pending_end < self.pending.len() {
                let available = self.inner.fill_buf()?;
                if available.is_empty() {
                    break;
                }
                let n = available.len().min(self.pending.len() - self.pending_end);
                self.pending[self.pending_end..self.pending_end + n]
                    .copy_from_slice(&available[..n]);
                self.inner.consume(n);
                self.pending_end += n;
            }
            self.bom_checked = true;
            if self.pending[..self.pending_end] == *b"\xEF\xBB\xBF" {
                self.pending_end = 0;
            }
        }
        let remaining = self.limit.saturating_sub(self.pos);
        let available: &[u8] = if self.pending_start < self.pending_end {
            &self.pending[self.pending_start..self.pending_end]
        } else {
            self.inner.fill_buf()?
        };
        if available.is_empty() {
            return Ok(available);
        }
        if remaining == 0 {
            self.exceeded = true;
            return Err(io::Error::other("report exceeds the size limit"));
        }
        let n = usize::try_from(remaining).map_or(available.len(), |r| r.min(available.len()));
        Ok(&available[..n])
    }

    fn consume(&mut self, amt: usize) {
        if amt == 0 {
            return;
        }
        let from_pending = self.pending_start < self.pending_end;
        {
            // `fill_buf` on a non-empty buffer returns it again without any I/O.
            let seen: &[u8] = if from_pending {
                &self.pending[self.pending_start..self.pending_end]
            } else {
                self.inner.fill_buf().unwrap_or(&[])
            };
            let seen = &seen[..amt.min(seen.len())];
            for i in memchr::memchr_iter(b'\n', seen) {
                self.lines.record(self.pos.saturating_add(i as u64));
            }
        }
        if from_pending {
            self.pending_start = (self.pending_start + amt).min(self.pending_end);
        } else {
            self.inner.consume(amt);
        }
        self.pos = self.pos.saturating_add(amt as u64);
    }
}

/// Newline bookkeeping of [`Tracked`].
struct Lines {
    newlines: u64,
    last_newline: Option<u64>,
    mark_pos: u64,
    mark_newlines: u64,
    mark_last_newline: Option<u64>,
    /// offsets of newlines consumed since `mark_pos`
    since_mark: Vec<u64>,
    /// newlines after this offset were not recorded
    untracked_from: Option<u64>,
}

impl Lines {
    fn record(&mut self, offset: u64) {
        self.newlines = self.newlines.saturating_add(1);
        self.last_newline = Some(offset);
        if self.since_mark.len() < MAX_TRACKED_NEWLINES {
            self.since_mark.push(offset);
        } else if self.untracked_from.is_none() {
            self.untracked_from = Some(offset);
        }
    }
}

// ---------------------------------------------------------------------------
// Parser state machine
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Junit,
    Nunit,
    Xunit,
}

enum Flow {
    Continue,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResultKind {
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
    fn is_retry(self) -> bool {
        matches!(
            self,
            Self::FlakyFailure | Self::FlakyError | Self::RerunFailure | Self::RerunError
        )
    }

    fn element(self) -> &'static str {
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
struct Capped {
    text: String,
    truncated: bool,
}

impl Capped {
    fn push(&mut self, piece: &str) {
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

    fn push_char(&mut self, c: char) {
        let mut tmp = [0u8; 4];
        self.push(c.encode_utf8(&mut tmp));
    }

    fn separate(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.push("\n");
        }
    }
}

#[derive(Debug)]
struct ResultElem {
    kind: ResultKind,
    message: Option<String>,
    kind_attr: Option<String>,
    /// text of a `<message>` child (NUnit, xUnit)
    message_child: Capped,
    body: Capped,
}

impl ResultElem {
    fn new(kind: ResultKind, e: &BytesStart<'_>, ctx: &mut Ctx<'_>) -> Result<Self, String> {
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
    fn text(&self) -> Option<String> {
        let attr = self.message.as_deref().map(str::trim).unwrap_or("");
        let child = normalize_text(&self.message_child.text);
        let message = if attr.is_empty() { child.trim() } else { attr };
        let body = normalize_text(&self.body.text);
        let body = trim_leading_blank_lines(body.trim_end());
        let composed = match (message.is_empty(), body.is_empty()) {
            (true, true) => self.kind_attr.as_deref().map(str::trim).unwrap_or(""),
            (false, true) => message,
            (true, false) => body,
            (false, false) if opening(body, message.len() + 256).contains(message) => body,
            (false, false) => return Some(format!("{message}\n{body}")),
        };
        (!composed.is_empty()).then(|| composed.to_string())
    }

    /// Reason of one retry: the message, else first line of the text, else the
    /// type, else the element name.
    fn reason(&self) -> String {
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

/// The attributes of a JUnit `<testcase>` the parser reads.
#[derive(Default)]
struct JunitCaseAttrs<'v> {
    name: Option<Cow<'v, str>>,
    classname: Option<Cow<'v, str>>,
    time: Option<Cow<'v, str>>,
    status: Option<Cow<'v, str>>,
}

impl<'v> JunitCaseAttrs<'v> {
    fn set(&mut self, key: &str, value: Cow<'v, str>) {
        match key {
            "name" => self.name = Some(value),
            "classname" => self.classname = Some(value),
            "time" => self.time = Some(value),
            "status" => self.status = Some(value),
            _ => {}
        }
    }
}

/// An open `<testsuite>` (or NUnit `<test-suite>`, xUnit `<collection>`).
#[derive(Debug)]
struct Suite {
    depth: usize,
    name: String,
    /// its own `<error>`/`<failure>` children (JUnit)
    results: Vec<ResultElem>,
}

/// The name of the test a suite-level error of an unnamed suite becomes.
pub const UNNAMED_SUITE: &str = "(unnamed test suite)";

#[derive(Debug)]
struct CaseBuilder {
    depth: usize,
    name: String,
    /// [`RetryIndex::hash`] of the name part of the retry key (`Parser::key`)
    name_hash: u64,
    duration: Option<f64>,
    /// JUnit `status`, NUnit / xUnit `result`
    status: Option<String>,
    label: Option<String>,
    executed: Option<String>,
    results: Vec<ResultElem>,
    retries: Vec<ResultElem>,
    retry_count: u32,
}

/// Where text inside a test case currently goes.
#[derive(Debug)]
struct Capture {
    /// depth of the result element (failure, error, ...)
    depth: usize,
    retry: bool,
    /// a suite-level `<error>`/`<failure>` (of the innermost open suite)
    suite: bool,
    /// depth of a `<message>` child being read
    message_depth: Option<usize>,
    /// depth of an ignored child (system-out, ...)
    muted_depth: Option<usize>,
}

struct Ctx<'a> {
    position: &'a dyn Fn() -> String,
    unknown_entity: &'a mut bool,
}

struct Parser {
    dialect: Option<Dialect>,
    depth: usize,
    /// names of the open elements (clipped), concatenated; `open[i]` is where the
    /// name of the element at depth `i + 1` starts
    open_names: String,
    open: Vec<usize>,
    root_closed: bool,
    /// the enclosing suites, innermost last
    suites: Vec<Suite>,
    case: Option<CaseBuilder>,
    capture: Option<Capture>,
    tests: Vec<ParsedTest>,
    /// retry key of the current test case: suite names, class name, test name
    key: String,
    retries: RetryIndex,
    warnings: Vec<String>,
    warned_unknown_entity: bool,
    unknown_entity: bool,
    warned_nested_case: bool,
    warned_bad_charref: bool,
}

impl Parser {
    fn new() -> Self {
        Parser {
            dialect: None,
            depth: 0,
            open_names: String::new(),
            open: Vec::new(),
            root_closed: false,
            suites: Vec::new(),
            case: None,
            capture: None,
            tests: Vec::new(),
            key: String::new(),
            retries: RetryIndex::default(),
            warnings: Vec::new(),
            warned_unknown_entity: false,
            unknown_entity: false,
            warned_nested_case: false,
            warned_bad_charref: false,
        }
    }

    fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        }
    }

    fn finish(self) -> Report {
        Report {
            format: ReportFormat::Junit,
            tests: self.tests,
            bailed_out: false,
            warnings: self.warnings,
        }
    }

    fn handle(&mut self, event: Event<'_>, position: &dyn Fn() -> String) -> Result<Flow, String> {
        let flow = self.handle_inner(event, position);
        self.warn_unknown_entity_once(position);
        flow
    }

    fn warn_unknown_entity_once(&mut self, position: &dyn Fn() -> String) {
        if self.unknown_entity && !self.warned_unknown_entity {
            self.warned_unknown_entity = true;
            self.warn(format!(
                "{}: reference to an undeclared entity kept verbatim (only the predefined XML entities are expanded)",
                position()
            ));
        }
    }

    fn handle_inner(
        &mut self,
        event: Event<'_>,
        position: &dyn Fn() -> String,
    ) -> Result<Flow, String> {
        if self.root_closed {
            return Ok(match event {
                Event::Eof => Flow::Stop,
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => Flow::Continue,
                Event::Text(t) if t.trim().is_empty() => Flow::Continue,
                _ => {
                    self.warn(format!(
                        "{}: content after the root element ignored",
                        position()
                    ));
                    Flow::Stop
                }
            });
        }
        match event {
            Event::Start(e) => {
                self.start(&e, position)?;
            }
            Event::Empty(e) => {
                self.start(&e, position)?;
                self.end();
            }
            Event::End(_) => self.end(),
            Event::Text(t) => {
                if self.depth == 0 {
                    if !t.trim().is_empty() {
                        return Err("text outside the root element".into());
                    }
                } else {
                    self.text(&t);
                }
            }
            Event::CData(t) => {
                if self.depth == 0 {
                    return Err("CDATA outside the root element".into());
                }
                self.text(&t);
            }
            Event::GeneralRef(r) => {
                if self.depth == 0 {
                    return Err("entity reference outside the root element".into());
                }
                self.reference(&r, position);
            }
            Event::DocType(_) => {
                self.warn(format!(
                    "{}: DOCTYPE ignored: entity declarations are not processed and external DTDs are never loaded",
                    position()
                ));
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => {
                if self.dialect.is_none() {
                    return Err("no root element (empty document)".into());
                }
                let open = self.open.last().map_or("?", |&at| &self.open_names[at..]);
                return Err(format!(
                    "unexpected end of file: {} element(s) still open, innermost <{open}>",
                    self.depth
                ));
            }
        }
        Ok(Flow::Continue)
    }

    fn start(&mut self, e: &BytesStart<'_>, position: &dyn Fn() -> String) -> Result<(), String> {
        let local = local_name(e);
        if self.depth == 0 {
            let dialect = match local {
                "testsuites" | "testsuite" => Dialect::Junit,
                "test-run" | "test-results" => Dialect::Nunit,
                "assemblies" | "assembly" => Dialect::Xunit,
                other => {
                    return Err(format!(
                        "root element <{}> is not a test report (expected <testsuites>, <testsuite>, <test-run>, <test-results> or <assemblies>)",
                        clip(other, 64)
                    ));
                }
            };
            self.dialect = Some(dialect);
        }
        if self.depth >= MAX_DEPTH {
            return Err(format!("elements nested deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        self.open.push(self.open_names.len());
        self.open_names.push_str(clip(local, 64));
        let depth = self.depth;
        let dialect = self.dialect.unwrap_or(Dialect::Junit);
        let mut unknown_entity = self.unknown_entity;
        let mut ctx = Ctx {
            position,
            unknown_entity: &mut unknown_entity,
        };
        let result = self.start_inner(e, local, depth, dialect, &mut ctx);
        self.unknown_entity = unknown_entity;
        result
    }

    fn start_inner(
        &mut self,
        e: &BytesStart<'_>,
        local: &str,
        depth: usize,
        dialect: Dialect,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), String> {
        // Inside a result element: route the text of its children.
        let mut separate = false;
        if let Some(capture) = self.capture.as_mut() {
            if capture.muted_depth.is_none() && capture.message_depth.is_none() {
                match local {
                    "system-out" | "system-err" | "properties" | "output" | "traits"
                    | "attachments" => capture.muted_depth = Some(depth),
                    "message" => capture.message_depth = Some(depth),
                    _ => separate = true,
                }
            }
            if separate && let Some(elem) = self.current_elem() {
                elem.body.separate();
            }
            return Ok(());
        }
        if let Some(case) = self.case.as_mut() {
            let is_case = matches!(
                (dialect, local),
                (Dialect::Junit, "testcase")
                    | (Dialect::Nunit, "test-case")
                    | (Dialect::Xunit, "test")
            );
            if is_case {
                if !self.warned_nested_case {
                    self.warned_nested_case = true;
                    let w = format!(
                        "{}: test case nested in a test case ignored",
                        (ctx.position)()
                    );
                    self.warn(w);
                }
                return Ok(());
            }
            if depth != case.depth + 1 {
                return Ok(());
            }
            let kind = match (dialect, local) {
                (Dialect::Junit, "failure") => ResultKind::Failure,
                (Dialect::Junit, "error") => ResultKind::Error,
                (Dialect::Junit, "skipped" | "disabled") => ResultKind::Skipped,
                (Dialect::Junit, "flakyFailure") => ResultKind::FlakyFailure,
                (Dialect::Junit, "flakyError") => ResultKind::FlakyError,
                (Dialect::Junit, "rerunFailure") => ResultKind::RerunFailure,
                (Dialect::Junit, "rerunError") => ResultKind::RerunError,
                (Dialect::Nunit | Dialect::Xunit, "failure") => ResultKind::Failure,
                (Dialect::Nunit | Dialect::Xunit, "reason") => ResultKind::Reason,
                _ => return Ok(()),
            };
            let elem = ResultElem::new(kind, e, ctx)?;
            let retry = kind.is_retry();
            if retry {
                case.retry_count = case.retry_count.saturating_add(1);
                if case.retries.len() < MAX_RETRY_REASONS {
                    case.retries.push(elem);
                } else {
                    return Ok(());
                }
            } else {
                case.results.push(elem);
            }
            self.capture = Some(Capture {
                depth,
                retry,
                suite: false,
                message_depth: None,
                muted_depth: None,
            });
            return Ok(());
        }
        match (dialect, local) {
            (Dialect::Junit, "testsuite")
            | (Dialect::Nunit, "test-suite")
            | (Dialect::Xunit, "collection") => {
                let mut name = String::new();
                for_each_attr(e, ctx, |key, value| {
                    if key == "name" {
                        name = value.into_owned();
                    }
                })?;
                self.suites.push(Suite {
                    depth,
                    name,
                    results: Vec::new(),
                });
            }
            (Dialect::Junit, "error" | "failure")
                if self.suites.last().is_some_and(|s| s.depth + 1 == depth) =>
            {
                // A suite-level result: the suite failed outside its test
                // cases (Ant writes it for a test class that failed to load).
                let elem = ResultElem::new(ResultKind::Error, e, ctx)?;
                if let Some(suite) = self.suites.last_mut() {
                    suite.results.push(elem);
                }
                self.capture = Some(Capture {
                    depth,
                    retry: false,
                    suite: true,
                    message_depth: None,
                    muted_depth: None,
                });
            }
            (Dialect::Junit, "testcase") => {
                let mut attrs = JunitCaseAttrs::default();
                for_each_attr(e, ctx, |key, value| attrs.set(key, value))?;
                self.begin_junit_case(depth, attrs);
            }
            (Dialect::Nunit, "test-case") => {
                let mut name = None;
                let mut fullname = None;
                let mut classname = None;
                let mut time = None;
                let mut duration = None;
                let mut result = None;
                let mut label = None;
                let mut executed = None;
                for_each_attr(e, ctx, |key, value| match key {
                    "name" => name = Some(value),
                    "fullname" => fullname = Some(value),
                    "classname" => classname = Some(value),
                    "time" => time = Some(value),
                    "duration" => duration = Some(value),
                    "result" => result = Some(value),
                    "label" => label = Some(value),
                    "executed" => executed = Some(value),
                    _ => {}
                })?;
                let display = match fullname.as_deref().filter(|f| !f.is_empty()) {
                    Some(full) => full.to_string(),
                    None => display_name(name.as_deref(), classname.as_deref()),
                };
                let key_name = display.clone();
                self.begin_case(
                    depth,
                    display,
                    None,
                    Some(&key_name),
                    duration.or(time).as_deref(),
                    result.map(Cow::into_owned),
                    label.map(Cow::into_owned),
                    executed.map(Cow::into_owned),
                );
            }
            (Dialect::Xunit, "test") => {
                let mut name = None;
                let mut class = None;
                let mut time = None;
                let mut result = None;
                for_each_attr(e, ctx, |key, value| match key {
                    "name" => name = Some(value),
                    "type" => class = Some(value),
                    "time" => time = Some(value),
                    "result" => result = Some(value),
                    _ => {}
                })?;
                let display = display_name(name.as_deref(), class.as_deref());
                self.begin_case(
                    depth,
                    display,
                    class.as_deref(),
                    name.as_deref(),
                    time.as_deref(),
                    result.map(Cow::into_owned),
                    None,
                    None,
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn begin_junit_case(&mut self, depth: usize, attrs: JunitCaseAttrs<'_>) {
        let display = display_name(attrs.name.as_deref(), attrs.classname.as_deref());
        self.begin_case(
            depth,
            display,
            attrs.classname.as_deref(),
            attrs.name.as_deref(),
            attrs.time.as_deref(),
            attrs.status.map(Cow::into_owned),
            None,
            None,
        );
    }

    /// Whether [`Parser::simple_testcase`] may stand for the events of a
    /// `<testcase>` element arriving now.
    fn simple_testcase_allowed(&self) -> bool {
        self.dialect == Some(Dialect::Junit)
            && !self.root_closed
            && (1..MAX_DEPTH).contains(&self.depth)
            && self.case.is_none()
            && self.capture.is_none()
    }

    /// What `handle` does for the `Start` and `End` events (or the `Empty` event)
    /// of a JUnit `<testcase>` with these attributes and no content the parser
    /// reads (no child element, no entity reference), when
    /// [`Parser::simple_testcase_allowed`]: the same test, the same retry
    /// bookkeeping and warnings, without the events.
    fn simple_testcase(&mut self, attrs: &[SimpleAttr<'_>], position: &dyn Fn() -> String) {
        let mut unknown_entity = self.unknown_entity;
        let mut case_attrs = JunitCaseAttrs::default();
        for &(key, raw, special) in attrs {
            case_attrs.set(
                after_colon(key),
                attr_value(raw, special, &mut unknown_entity),
            );
        }
        self.unknown_entity = unknown_entity;
        self.begin_junit_case(self.depth + 1, case_attrs);
        self.warn_unknown_entity_once(position);
        if let Some(case) = self.case.take() {
            self.finish_case(case);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn begin_case(
        &mut self,
        depth: usize,
        display: String,
        classname: Option<&str>,
        name: Option<&str>,
        time: Option<&str>,
        status: Option<String>,
        label: Option<String>,
        executed: Option<String>,
    ) {
        // the retry key, in a buffer reused from test to test
        let key = &mut self.key;
        key.clear();
        for suite in &self.suites {
            key.push_str(&suite.name);
            key.push('\u{1f}');
        }
        key.push('\u{0}');
        key.push_str(classname.unwrap_or(""));
        key.push('\u{0}');
        key.push_str(name.unwrap_or(""));
        self.case = Some(CaseBuilder {
            depth,
            name: display,
            name_hash: RetryIndex::hash(name.unwrap_or("")),
            duration: time.and_then(parse_seconds),
            status,
            label,
            executed,
            results: Vec::new(),
            retries: Vec::new(),
            retry_count: 0,
        });
    }

    fn current_elem(&mut self) -> Option<&mut ResultElem> {
        let capture = self.capture.as_ref()?;
        if capture.suite {
            return self.suites.last_mut()?.results.last_mut();
        }
        let case = self.case.as_mut()?;
        if capture.retry {
            case.retries.last_mut()
        } else {
            case.results.last_mut()
        }
    }

    fn end(&mut self) {
        let depth = self.depth;
        if let Some(capture) = self.capture.as_mut() {
            if capture.muted_depth == Some(depth) {
                capture.muted_depth = None;
            } else if capture.message_depth == Some(depth) {
                capture.message_depth = None;
            } else if capture.depth == depth {
                self.capture = None;
            }
        }
        if self.case.as_ref().is_some_and(|c| c.depth == depth) {
            if let Some(case) = self.case.take() {
                self.finish_case(case);
            }
            self.capture = None;
        }
        if self.suites.last().is_some_and(|s| s.depth == depth)
            && let Some(suite) = self.suites.pop()
            && !suite.results.is_empty()
        {
            self.finish_suite_case(suite);
        }
        if let Some(at) = self.open.pop() {
            self.open_names.truncate(at);
        }
        self.depth = depth.saturating_sub(1);
        if self.depth == 0 {
            self.root_closed = true;
        }
    }

    fn text(&mut self, text: &str) {
        let Some(capture) = self.capture.as_ref() else {
            return;
        };
        if capture.muted_depth.is_some() {
            return;
        }
        let to_message = capture.message_depth.is_some();
        if let Some(elem) = self.current_elem() {
            if to_message {
                elem.message_child.push(text);
            } else {
                elem.body.push(text);
            }
        }
    }

    fn reference(&mut self, r: &BytesRef<'_>, position: &dyn Fn() -> String) {
        let name: &str = r;
        let resolved = if r.is_char_ref() {
            match r.resolve_char_ref() {
                Ok(Some(c)) => Some(c),
                _ => {
                    if !self.warned_bad_charref {
                        self.warned_bad_charref = true;
                        self.warn(format!(
                            "{}: invalid character reference &{}; kept verbatim",
                            position(),
                            clip(name, 32)
                        ));
                    }
                    None
                }
            }
        } else {
            let predefined = predefined_entity(name);
            if predefined.is_none() {
                self.unknown_entity = true;
            }
            predefined
        };
        let Some(capture) = self.capture.as_ref() else {
            return;
        };
        if capture.muted_depth.is_some() {
            return;
        }
        let to_message = capture.message_depth.is_some();
        if let Some(elem) = self.current_elem() {
            let target = if to_message {
                &mut elem.message_child
            } else {
                &mut elem.body
            };
            match resolved {
                Some(c) => target.push_char(c),
                None => {
                    target.push("&");
                    target.push(name);
                    target.push(";");
                }
            }
        }
    }

    /// A suite's own `<error>`/`<failure>` elements as one errored test named
    /// after the suite (what Jenkins does for a class that failed to load).
    fn finish_suite_case(&mut self, suite: Suite) {
        let name = if suite.name.trim().is_empty() {
            UNNAMED_SUITE.to_string()
        } else {
            suite.name
        };
        self.begin_case(
            suite.depth,
            name.clone(),
            None,
            Some(&name),
            None,
            None,
            None,
            None,
        );
        if let Some(mut case) = self.case.take() {
            case.results = suite.results;
            self.finish_case(case);
        }
    }

    fn finish_case(&mut self, case: CaseBuilder) {
        let dialect = self.dialect.unwrap_or(Dialect::Junit);
        let outcome = match dialect {
            Dialect::Junit => junit_outcome(&case),
            Dialect::Nunit | Dialect::Xunit => nunit_outcome(&case),
        };
        let message = if outcome == TestOutcome::Passed {
            None
        } else {
            let relevant: Vec<&ResultElem> = case
                .results
                .iter()
                .filter(|r| match outcome {
                    TestOutcome::Skipped => {
                        matches!(r.kind, ResultKind::Skipped | ResultKind::Reason)
                    }
                    _ => matches!(r.kind, ResultKind::Failure | ResultKind::Error),
                })
                .collect();
            let relevant: Vec<&ResultElem> = if relevant.is_empty() {
                case.retries
                    .iter()
                    .rev()
                    .find(|r| matches!(r.kind, ResultKind::RerunFailure | ResultKind::RerunError))
                    .into_iter()
                    .collect()
            } else {
                relevant
            };
            let parts: Vec<String> = relevant.iter().filter_map(|r| r.text()).collect();
            if parts.is_empty() {
                // NUnit puts e.g. "Test exceeded Timeout value 1ms." in `label`.
                case.label
                    .as_deref()
                    .map(str::trim)
                    .filter(|l| l.contains(' '))
                    .map(|l| cap(l.to_string()))
            } else {
                Some(cap(parts.join("\n")))
            }
        };
        let reasons: Vec<String> = case.retries.iter().map(ResultElem::reason).collect();
        let test = ParsedTest {
            name: case.name,
            outcome,
            duration_seconds: case.duration,
            retries: case.retry_count,
            retry_reasons: reasons,
            message,
        };
        let maybe_seen = self.retries.may_contain(case.name_hash);
        let retry_of = maybe_seen
            .then(|| self.retries.failed.get(&self.key).copied())
            .flatten()
            .filter(|&i| {
                self.tests
                    .get(i)
                    .is_some_and(|t| failed_or_errored(t.outcome))
            });
        match retry_of {
            Some(i) => {
                if let Some(prev) = self.tests.get_mut(i) {
                    let reason = prev
                        .message
                        .as_deref()
                        .map(first_line)
                        .filter(|l| !l.is_empty())
                        .map(|l| cap(l.to_string()))
                        .unwrap_or_else(|| outcome_word(prev.outcome).to_string());
                    prev.retries = prev.retries.saturating_add(1).saturating_add(test.retries);
                    for r in std::iter::once(reason).chain(test.retry_reasons) {
                        if prev.retry_reasons.len() < MAX_RETRY_REASONS {
                            prev.retry_reasons.push(r);
                        }
                    }
                    prev.outcome = test.outcome;
                    prev.duration_seconds = test.duration_seconds;
                    prev.message = test.message;
                }
            }
            None => {
                // The key now names this test: a later repeat is a retry only if
                // this one failed.
                if failed_or_errored(test.outcome) {
                    self.retries
                        .insert(&self.key, case.name_hash, self.tests.len());
                } else if maybe_seen {
                    self.retries.failed.remove(&self.key);
                }
                self.tests.push(test);
            }
        }
    }
}

fn failed_or_errored(outcome: TestOutcome) -> bool {
    matches!(outcome, TestOutcome::Failed | TestOutcome::Errored)
}

/// Where a repeated `<testcase>` finds the earlier occurrence it retries.
///
/// Only keys whose latest occurrence failed or errored are kept (only those can
/// be retried), under the default, DoS-resistant hasher. A 4096-bit filter over a
/// cheap hash of the test name lets the many tests whose name was never kept skip
/// building and hashing the key.
#[derive(Default)]
struct RetryIndex {
    failed: HashMap<String, usize>,
    filter: Vec<u64>,
}

impl RetryIndex {
    const FILTER_BITS: u64 = 4096;

    fn hash(name: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut chunks = name.as_bytes().chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
            h = (h.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        h ^ (h >> 29)
    }

    fn bit(name_hash: u64) -> (usize, u64) {
        let i = name_hash % Self::FILTER_BITS;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn may_contain(&self, name_hash: u64) -> bool {
        let (word, mask) = Self::bit(name_hash);
        self.filter.get(word).is_some_and(|w| w & mask != 0)
    }

    fn insert(&mut self, key: &str, name_hash: u64, index: usize) {
        if self.filter.is_empty() {
            self.filter = vec![0; (Self::FILTER_BITS / 64) as usize];
        }
        let (word, mask) = Self::bit(name_hash);
        self.filter[word] |= mask;
        self.failed.insert(key.to_string(), index);
    }
}

fn junit_outcome(case: &CaseBuilder) -> TestOutcome {
    let has = |k: ResultKind| case.results.iter().any(|r| r.kind == k);
    if has(ResultKind::Error) {
        return TestOutcome::Errored;
    }
    if has(ResultKind::Failure) {
        return TestOutcome::Failed;
    }
    if has(ResultKind::Skipped) {
        return TestOutcome::Skipped;
    }
    if let Some(last_rerun) = case
        .retries
        .iter()
        .rev()
        .find(|r| matches!(r.kind, ResultKind::RerunFailure | ResultKind::RerunError))
    {
        return if last_rerun.kind == ResultKind::RerunError {
            TestOutcome::Errored
        } else {
            TestOutcome::Failed
        };
    }
    match case
        .status
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some(
            "disabled" | "skipped" | "skip" | "notrun" | "not run" | "not_run" | "ignored"
            | "pending" | "suppressed",
        ) => TestOutcome::Skipped,
        Some("failed" | "failure" | "fail") => TestOutcome::Failed,
        Some("error" | "errored") => TestOutcome::Errored,
        _ => TestOutcome::Passed,
    }
}

fn nunit_outcome(case: &CaseBuilder) -> TestOutcome {
    let label = case
        .label
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let has_failure = case.results.iter().any(|r| r.kind == ResultKind::Failure);
    let result = case
        .status
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match result.as_str() {
        "passed" | "success" | "pass" | "warning" => TestOutcome::Passed,
        "failed" | "failure" | "fail" => match label.as_str() {
            "error" | "cancelled" | "invalid" => TestOutcome::Errored,
            _ => TestOutcome::Failed,
        },
        "error" | "cancelled" | "notrunnable" | "invalid" => TestOutcome::Errored,
        "skipped" | "skip" | "ignored" | "inconclusive" | "notrun" | "not run" => {
            TestOutcome::Skipped
        }
        _ => {
            if has_failure {
                TestOutcome::Failed
            } else if case
                .executed
                .as_deref()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case("false"))
            {
                TestOutcome::Skipped
            } else {
                TestOutcome::Passed
            }
        }
    }
}

fn outcome_word(outcome: TestOutcome) -> &'static str {
    match outcome {
        TestOutcome::Passed => "passed",
        TestOutcome::Failed => "failed",
        TestOutcome::Errored => "errored",
        TestOutcome::Skipped => "skipped",
    }
}

/// `classname.name`, unless `classname` is empty or `name` already starts
/// with it (or ends with `" " + classname`, as Mocha writes it).
fn display_name(name: Option<&str>, classname: Option<&str>) -> String {
    let name = name.unwrap_or("");
    let classname = classname.unwrap_or("");
    if name.is_empty() {
        return if classname.is_empty() {
            "(unnamed)".to_string()
        } else {
            classname.to_string()
        };
    }
    if classname.is_empty()
        || name.starts_with(classname)
        || name
            .strip_suffix(classname)
            .is_some_and(|rest| rest.ends_with(' '))
    {
        name.to_string()
    } else {
        let mut joined = String::with_capacity(classname.len() + 1 + name.len());
        joined.push_str(classname);
        joined.push('.');
        joined.push_str(name);
        joined
    }
}

fn local_name<'a>(e: &'a BytesStart<'_>) -> &'a str {
    after_colon(e.name().0)
}

/// The local part of a qualified name (after the last `:`).
fn after_colon(name: &str) -> &str {
    match name.bytes().rposition(|b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Calls `f(local_key, unescaped_value)` for each attribute.
///
/// Tags in the usual form (`key="value"` or `key='value'` separated by white
/// space, no duplicate keys) are split here; anything else goes through
/// quick-xml's attribute parser, which reports the problem.
fn for_each_attr<'e>(
    e: &'e BytesStart<'_>,
    ctx: &mut Ctx<'_>,
    mut f: impl FnMut(&str, Cow<'e, str>),
) -> Result<(), String> {
    let mut attrs = [("", "", false); SIMPLE_ATTRS];
    if let Some(n) = simple_attributes(e.attributes_raw(), &mut attrs) {
        for &(key, raw, special) in &attrs[..n] {
            f(
                after_colon(key),
                attr_value(raw, special, ctx.unknown_entity),
            );
        }
        return Ok(());
    }
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("invalid attribute: {err}"))?;
        f(
            after_colon(attr.key.0),
            Cow::Owned(unescape_attr(&attr.value, ctx.unknown_entity)),
        );
    }
    Ok(())
}

/// The value of an attribute split by [`simple_attributes`].
fn attr_value<'r>(raw: &'r str, special: bool, unknown_entity: &mut bool) -> Cow<'r, str> {
    if special {
        Cow::Owned(unescape_attr(raw, unknown_entity))
    } else {
        Cow::Borrowed(raw)
    }
}

/// Attributes [`simple_attributes`] splits without quick-xml.
const SIMPLE_ATTRS: usize = 16;

/// One attribute split by [`simple_attributes`]: key, raw value, and whether the
/// value has a byte [`unescape_attr`] may change.
type SimpleAttr<'r> = (&'r str, &'r str, bool);

/// Splits `raw` (the tag after its name) into attributes when it is a sequence of
/// `key="value"` / `key='value'` with white space before each key, at most
/// [`SIMPLE_ATTRS`] of them, no key twice. quick-xml's attribute parser gives the
/// same pairs for such input. `None` for anything else.
fn simple_attributes<'r>(raw: &'r str, out: &mut [SimpleAttr<'r>; SIMPLE_ATTRS]) -> Option<usize> {
    /// 1: XML white space, 2: `=`, 3: a quote, 0: anything else
    const CLASS: [u8; 256] = {
        let mut t = [0u8; 256];
        t[b' ' as usize] = 1;
        t[b'\t' as usize] = 1;
        t[b'\r' as usize] = 1;
        t[b'\n' as usize] = 1;
        t[b'=' as usize] = 2;
        t[b'"' as usize] = 3;
        t[b'\'' as usize] = 3;
        t
    };
    let b = raw.as_bytes();
    let class = |i: usize| b.get(i).map_or(u8::MAX, |&c| CLASS[usize::from(c)]);
    let mut n = 0;
    let mut i = 0;
    loop {
        let start = i;
        while class(i) == 1 {
            i += 1;
        }
        if i == b.len() {
            return Some(n);
        }
        if i == start || n == SIMPLE_ATTRS {
            return None;
        }
        let key_start = i;
        while class(i) == 0 {
            i += 1;
        }
        if i == key_start || class(i) != 2 {
            return None;
        }
        let key = &raw[key_start..i];
        i += 1;
        let quote = *b.get(i)?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let (len, special) = swar::until_quote(&b[i + 1..], quote)?;
        let value = &raw[i + 1..i + 1 + len];
        i += len + 2;
        if out[..n]
            .iter()
            .any(|(k, _, _)| k.len() == key.len() && *k == key)
        {
            return None;
        }
        out[n] = (key, value, special);
        n += 1;
    }
}

/// Byte searches eight bytes at a time in a `u64` (the inputs are short: attribute
/// values and tags, where a call into a SIMD search costs more than it saves).
///
/// The masks have the high bit set in matching bytes. A borrow can also set it in
/// bytes *above* a true match, never below one, so the lowest set bit is exact.
pub(crate) mod swar {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    fn word(b: &[u8]) -> u64 {
        u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
    }

    /// Bytes of `w` equal to `byte`.
    fn eq(w: u64, byte: u8) -> u64 {
        let x = w ^ (LO * u64::from(byte));
        x.wrapping_sub(LO) & !x & HI
    }

    /// Bytes of `w` below `n` (`n <= 128`).
    fn below(w: u64, n: u8) -> u64 {
        w.wrapping_sub(LO * u64::from(n)) & !w & HI
    }

    /// Bytes `unescape_attr` may change: `&` and control characters below `\x0e`
    /// (tab, line feed, carriage return among them).
    fn special(w: u64) -> u64 {
        eq(w, b'&') | below(w, 0x0e)
    }

    fn is_special(c: u8) -> bool {
        c == b'&' || c < 0x0e
    }

    /// Offset of the first `quote` in `b`, and whether a special byte (see
    /// `special`) comes before it.
    #[inline]
    pub(crate) fn until_quote(b: &[u8], quote: u8) -> Option<(usize, bool)> {
        let mut seen = false;
        let mut i = 0;
        while i + 8 <= b.len() {
            let w = word(&b[i..]);
            let q = eq(w, quote);
            let s = special(w);
            if q != 0 {
                let at = (q.trailing_zeros() / 8) as usize;
                let before = (1u64 << (at * 8)) - 1;
                return Some((i + at, seen || s & before != 0));
            }
            seen |= s != 0;
            i += 8;
        }
        for (k, &c) in b[i..].iter().enumerate() {
            if c == quote {
                return Some((i + k, seen));
            }
            seen |= is_special(c);
        }
        None
    }

    /// Offset of the first of `x`, `y`, `z` in `b`.
    pub(crate) fn find3(b: &[u8], x: u8, y: u8, z: u8) -> Option<usize> {
        let mut i = 0;
        while i + 8 <= b.len() {
            let w = word(&b[i..]);
            let m = eq(w, x) | eq(w, y) | eq(w, z);
            if m != 0 {
                return Some(i + (m.trailing_zeros() / 8) as usize);
            }
            i += 8;
        }
        b[i..]
            .iter()
            .position(|&c| c == x || c == y || c == z)
            .map(|k| i + k)
    }

    /// Offset of the first `x` in `b`.
    pub(crate) fn find(b: &[u8], x: u8) -> Option<usize> {
        let mut i = 0;
        while i + 8 <= b.len() {
            let m = eq(word(&b[i..]), x);
            if m != 0 {
                return Some(i + (m.trailing_zeros() / 8) as usize);
            }
            i += 8;
        }
        b[i..].iter().position(|&c| c == x).map(|k| i + k)
    }
}

/// White space as XML (and quick-xml) define it.
fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

fn char_ref(body: &str) -> Option<char> {
    let code = match body.strip_prefix('x') {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) => {
            body.parse::<u32>().ok()?
        }
        None => return None,
    };
    char::from_u32(code).filter(|&c| c != '\0')
}

/// Attribute value normalisation and unescaping: literal tabs/newlines become
/// spaces (XML 1.0 §3.3.3), predefined entities and character references are
/// decoded, anything else (unknown entities, a lone `&`) is kept verbatim.
fn unescape_attr(raw: &str, unknown_entity: &mut bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut previous_cr = false;
    while let Some(c) = rest.chars().next() {
        match c {
            '&' => {
                previous_cr = false;
                let candidate = rest.get(1..).unwrap_or("");
                let end = candidate.char_indices().take(33).find(|(_, ch)| *ch == ';');
                if let Some((semi, _)) = end {
                    let name = &candidate[..semi];
                    let decoded = match name.strip_prefix('#') {
                        Some(num) => char_ref(num),
                        None => predefined_entity(name),
                    };
                    match decoded {
                        Some(ch) => out.push(ch),
                        None => {
                            if !name.starts_with('#') {
                                *unknown_entity = true;
                            }
                            out.push('&');
                            out.push_str(name);
                            out.push(';');
                        }
                    }
                    rest = candidate.get(semi + 1..).unwrap_or("");
                    continue;
                }
                out.push('&');
            }
            '\r' => {
                out.push(' ');
                previous_cr = true;
                rest = &rest[1..];
                continue;
            }
            '\n' => {
                if !previous_cr {
                    out.push(' ');
                }
            }
            '\t' => out.push(' '),
            _ => {
                // copy up to the next character that needs work
                let run = rest
                    .bytes()
                    .position(|b| matches!(b, b'&' | b'\r' | b'\n' | b'\t'))
                    .unwrap_or(rest.len());
                out.push_str(&rest[..run]);
                previous_cr = false;
                rest = &rest[run..];
                continue;
            }
        }
        previous_cr = false;
        rest = &rest[c.len_utf8()..];
    }
    out
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

/// The first `max` bytes of `s` (on a char boundary).
fn opening(s: &str, max: usize) -> &str {
    &s[..floor_char_boundary(s, max)]
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    if index >= s.len() {
        return s.len();
    }
    while index > 0 && !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// Caps a message at [`MESSAGE_CAP`] bytes, marking a cut with `…`.
fn cap(s: String) -> String {
    if s.len() <= MESSAGE_CAP {
        return s;
    }
    let keep = floor_char_boundary(&s, MESSAGE_CAP - '…'.len_utf8());
    let mut out = s[..keep].trim_end().to_string();
    out.push('…');
    out
}

fn clip(s: &str, max: usize) -> &str {
    &s[..floor_char_boundary(s, max)]
}

/// Seconds from a `time`/`duration` attribute. See the module docs.
fn parse_seconds(raw: &str) -> Option<f64> {
    let s = raw.trim();
    if let Some(value) = plain_decimal(s) {
        return Some(value);
    }
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let cleaned: std::borrow::Cow<'_, str> = if s.contains(',') {
        let (int_part, has_dot) = match s.split_once('.') {
            Some((int_part, _)) => (int_part, true),
            None => (s, false),
        };
        if thousands_grouped(int_part) {
            s.replace(',', "").into()
        } else if !has_dot && s.matches(',').count() == 1 {
            s.replace(',', ".").into()
        } else {
            return None;
        }
    } else {
        s.into()
    };
    if !cleaned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let value: f64 = cleaned.parse().ok()?;
    if value.is_finite() && value >= 0.0 {
        Some(value.abs())
    } else {
        None
    }
}

/// `DIGITS` or `DIGITS.DIGITS` with at most 15 digits in all: the mantissa and the
/// power of ten are exact `f64`s and the division is correctly rounded, so this
/// is the value `str::parse` gives, without its general machinery.
fn plain_decimal(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut dot: Option<usize> = None;
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            mantissa = mantissa * 10 + u64::from(c - b'0');
        } else if c == b'.' && dot.is_none() && i > 0 && i + 1 < b.len() {
            dot = Some(i);
        } else {
            return None;
        }
    }
    let fraction_digits = dot.map_or(0, |d| b.len() - d - 1);
    if b.len() - usize::from(dot.is_some()) > 15 {
        return None;
    }
    let scale = 10u64.pow(u32::try_from(fraction_digits).ok()?);
    Some(mantissa as f64 / scale as f64)
}

/// `1,234` / `12,345,678`: 1–3 digits, then groups of exactly three.
fn thousands_grouped(s: &str) -> bool {
    let mut groups = s.split(',');
    let Some(first) = groups.next() else {
        return false;
    };
    let mut any = false;
    let first_ok = (1..=3).contains(&first.len()) && first.bytes().all(|b| b.is_ascii_digit());
    for g in groups {
        any = true;
        if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    first_ok && any
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn parse(xml: &str) -> Report {
        match parse_junit_str("t.xml", xml) {
            Ok(report) => report,
            Err(err) => panic!("expected a report, got {err}"),
        }
    }

    fn malformed_at(xml: &str) -> (String, String) {
        match parse_junit_str("t.xml", xml) {
            Err(ReportError::Malformed {
                file,
                position,
                reason,
            }) => {
                assert_eq!(file, "t.xml");
                (position, reason)
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    fn suite(cases: &str) -> String {
        format!("<testsuites><testsuite name=\"s\">{cases}</testsuite></testsuites>")
    }

    fn only_test(xml: &str) -> ParsedTest {
        let report = parse(xml);
        assert_eq!(report.tests.len(), 1, "{:?}", report.tests);
        report
            .tests
            .into_iter()
            .next()
            .unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn outcomes_follow_the_result_children_and_status() {
        use TestOutcome::*;
        let table: &[(&str, &str, TestOutcome)] = &[
            (
                "a testcase without children passes",
                r#"<testcase name="t"/>"#,
                Passed,
            ),
            (
                "a failure child fails the test",
                r#"<testcase name="t"><failure/></testcase>"#,
                Failed,
            ),
            (
                "an error child errors the test",
                r#"<testcase name="t"><error/></testcase>"#,
                Errored,
            ),
            (
                "an error wins over a failure",
                r#"<testcase name="t"><failure/><error/></testcase>"#,
                Errored,
            ),
            (
                "a skipped child skips the test",
                r#"<testcase name="t"><skipped/></testcase>"#,
                Skipped,
            ),
            (
                "a disabled child skips the test",
                r#"<testcase name="t"><disabled/></testcase>"#,
                Skipped,
            ),
            (
                "a failure wins over skipped (pytest xfail strict)",
                r#"<testcase name="t"><skipped/><failure/></testcase>"#,
                Failed,
            ),
            (
                "status disabled without a child skips the test",
                r#"<testcase name="t" status="disabled"/>"#,
                Skipped,
            ),
            (
                "status notrun skips the test",
                r#"<testcase name="t" status="notrun"/>"#,
                Skipped,
            ),
            (
                "status failed without a child fails the test",
                r#"<testcase name="t" status="failed"/>"#,
                Failed,
            ),
            (
                "status run passes the test (Catch2)",
                r#"<testcase name="t" status="run"/>"#,
                Passed,
            ),
            (
                "a failure child wins over status disabled",
                r#"<testcase name="t" status="disabled"><failure/></testcase>"#,
                Failed,
            ),
            (
                "system-out and properties do not change the outcome",
                r#"<testcase name="t"><properties/><system-out>failure</system-out><system-err/></testcase>"#,
                Passed,
            ),
            (
                "a flakyFailure alone leaves the test passed",
                r#"<testcase name="t"><flakyFailure/></testcase>"#,
                Passed,
            ),
            (
                "a flakyError alone leaves the test passed",
                r#"<testcase name="t"><flakyError/></testcase>"#,
                Passed,
            ),
            (
                "a rerunFailure alone fails the test",
                r#"<testcase name="t"><rerunFailure/></testcase>"#,
                Failed,
            ),
            (
                "a rerunError alone errors the test",
                r#"<testcase name="t"><rerunError/></testcase>"#,
                Errored,
            ),
            (
                "a failure nested below another child is ignored",
                r#"<testcase name="t"><system-out><failure/></system-out></testcase>"#,
                Passed,
            ),
            (
                "namespaced result elements count",
                r#"<testcase name="t"><j:failure xmlns:j="urn:x"/></testcase>"#,
                Failed,
            ),
        ];
        for (sentence, case, expected) in table {
            let test = only_test(&suite(case));
            assert_eq!(test.outcome, *expected, "{sentence}");
        }
    }

    #[test]
    fn names_join_classname_and_name_unless_already_prefixed() {
        let table: &[(&str, &str, &str)] = &[
            (
                "classname and name are joined with a dot",
                r#"classname="a.B" name="t""#,
                "a.B.t",
            ),
            (
                "a name already starting with the classname is kept",
                r#"classname="a.B" name="a.B.t""#,
                "a.B.t",
            ),
            (
                "an empty classname is ignored",
                r#"classname="" name="t""#,
                "t",
            ),
            ("a missing classname is ignored", r#"name="t""#, "t"),
            (
                "a Mocha name ending with the classname is kept",
                r#"classname="does x" name="Suite does x""#,
                "Suite does x",
            ),
            (
                "a missing name falls back to the classname",
                r#"classname="a.B""#,
                "a.B",
            ),
            ("a test with neither is named (unnamed)", "", "(unnamed)"),
            (
                "entities in names are decoded",
                r#"classname="a &amp; b" name="&lt;t&gt;""#,
                "a & b.<t>",
            ),
        ];
        for (sentence, attrs, expected) in table {
            let test = only_test(&suite(&format!("<testcase {attrs}/>")));
            assert_eq!(test.name, *expected, "{sentence}");
        }
    }

    #[test]
    fn durations_are_read_leniently_from_time() {
        let table: &[(&str, &str, Option<f64>)] = &[
            ("a plain decimal is seconds", "1.5", Some(1.5)),
            ("surrounding spaces are ignored", " 2.0 ", Some(2.0)),
            (
                "a thousands separator before a decimal point is dropped",
                "1,234.5",
                Some(1234.5),
            ),
            (
                "a thousands-grouped integer is read as such",
                "12,345,678",
                Some(12_345_678.0),
            ),
            ("a lone decimal comma is a decimal point", "0,5", Some(0.5)),
            ("an exponent is accepted", "4.5e-05", Some(4.5e-5)),
            ("zero is zero", "0", Some(0.0)),
            ("an empty value is unknown", "", None),
            ("garbage is unknown", "<<computed>>", None),
            ("words are unknown", "abc", None),
            ("a negative value is unknown", "-1", None),
            ("NaN is unknown", "NaN", None),
            ("infinity is unknown", "inf", None),
            ("an overflowing value is unknown", "1e999", None),
            (
                "commas that are not thousands groups are unknown",
                "1,2.5",
                None,
            ),
            ("two decimal commas are unknown", "1,5,5", None),
        ];
        for (sentence, raw, expected) in table {
            assert_eq!(parse_seconds(raw), *expected, "{sentence}");
        }
        let test = only_test(&suite(r#"<testcase name="t" time="1,234.5"/>"#));
        assert_eq!(test.duration_seconds, Some(1234.5));
        let test = only_test(&suite(r#"<testcase name="t"/>"#));
        assert_eq!(test.duration_seconds, None, "a missing time is unknown");
    }

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

    #[test]
    fn repeated_testcases_after_a_failure_are_retries_of_one_test() {
        let report = parse(&suite(
            r#"<testcase classname="c" name="t" time="1"><failure message="first"/></testcase>
               <testcase classname="c" name="other"/>
               <testcase classname="c" name="t" time="2"><error message="second"/></testcase>
               <testcase classname="c" name="t" time="3"/>"#,
        ));
        assert_eq!(report.tests.len(), 2);
        let t = &report.tests[0];
        assert_eq!(t.name, "c.t", "the test keeps its first position");
        assert_eq!(
            t.outcome,
            TestOutcome::Passed,
            "the last occurrence decides"
        );
        assert_eq!(t.retries, 2);
        assert_eq!(t.retry_reasons, ["first", "second"]);
        assert_eq!(
            t.duration_seconds,
            Some(3.0),
            "duration of the last attempt"
        );
        assert_eq!(t.message, None);
        let totals = report.totals();
        assert_eq!((totals.retried, totals.flaky), (1, 1));
    }

    #[test]
    fn repeated_testcases_that_passed_are_distinct_parameterized_tests() {
        let report = parse(&suite(
            r#"<testcase classname="c" name="t"/><testcase classname="c" name="t"/>
               <testcase classname="c" name="s"><skipped/></testcase>
               <testcase classname="c" name="s"><failure/></testcase>"#,
        ));
        assert_eq!(report.tests.len(), 4);
        assert!(report.tests.iter().all(|t| t.retries == 0));
        assert_eq!(report.totals().flaky, 0);
    }

    #[test]
    fn a_retry_that_fails_again_keeps_the_chain_going_and_failing() {
        let report = parse(&suite(
            r#"<testcase name="t"><failure message="a"/></testcase>
               <testcase name="t"><failure message="b"/></testcase>
               <testcase name="t"><failure message="c"/></testcase>"#,
        ));
        let t = &report.tests[0];
        assert_eq!((report.tests.len(), t.retries), (1, 2));
        assert_eq!(t.outcome, TestOutcome::Failed);
        assert_eq!(t.message.as_deref(), Some("c"));
        assert_eq!(t.retry_reasons, ["a", "b"]);
        assert_eq!(report.totals().flaky, 0);
    }

    #[test]
    fn same_names_in_differently_named_suites_are_distinct_tests() {
        let report = parse(
            r#"<testsuites>
                 <testsuite name="A"><testcase name="t"><failure/></testcase></testsuite>
                 <testsuite name="B"><testcase name="t"/></testsuite>
                 <testsuite name="A"><testcase name="t"/></testsuite>
               </testsuites>"#,
        );
        assert_eq!(
            report.tests.len(),
            2,
            "A's second run is a retry, B is another test"
        );
        assert_eq!(report.tests[0].retries, 1);
        assert_eq!(report.tests[0].outcome, TestOutcome::Passed);
        assert_eq!(report.tests[1].retries, 0);
    }

    #[test]
    fn surefire_and_nextest_rerun_elements_count_as_retries() {
        let flaky = only_test(&suite(
            r#"<testcase classname="C" name="t"><flakyFailure message="m1" type="E"><stackTrace>trace</stackTrace><system-out>o</system-out></flakyFailure><flakyError type="T"><stackTrace>

  first line
  second</stackTrace></flakyError></testcase>"#,
        ));
        assert_eq!(flaky.outcome, TestOutcome::Passed);
        assert_eq!(flaky.retries, 2);
        assert_eq!(flaky.retry_reasons, ["m1", "first line"]);
        assert_eq!(flaky.message, None);

        let rerun = only_test(&suite(
            r#"<testcase name="t"><failure message="boom">trace</failure><rerunFailure message="r1"/><rerunFailure message="r2"/></testcase>"#,
        ));
        assert_eq!(rerun.outcome, TestOutcome::Failed);
        assert_eq!(rerun.retries, 2);
        assert_eq!(rerun.retry_reasons, ["r1", "r2"]);
        assert_eq!(rerun.message.as_deref(), Some("boom\ntrace"));

        let nameless = only_test(&suite(r#"<testcase name="t"><flakyFailure/></testcase>"#));
        assert_eq!(
            nameless.retry_reasons,
            ["flakyFailure"],
            "the element names a bare retry"
        );
    }

    #[test]
    fn retry_reasons_are_bounded_while_retries_keep_counting() {
        let many = r#"<flakyFailure message="m"/>"#.repeat(MAX_RETRY_REASONS + 10);
        let test = only_test(&suite(&format!("<testcase name=\"t\">{many}</testcase>")));
        assert_eq!(test.retries as usize, MAX_RETRY_REASONS + 10);
        assert_eq!(test.retry_reasons.len(), MAX_RETRY_REASONS);
    }

    #[test]
    fn suites_nest_to_any_depth_and_the_root_may_be_a_testsuite() {
        let nested = parse(
            r#"<testsuites><testsuite name="a"><testsuite name="b"><testsuite name="c">
                 <testcase name="x"/></testsuite><testcase name="y"/></testsuite></testsuite>
                 <testcase name="z"/></testsuites>"#,
        );
        let names: Vec<&str> = nested.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["x", "y", "z"]);
        let single = parse(r#"<testsuite name="s"><testcase name="x"/></testsuite>"#);
        assert_eq!(single.tests.len(), 1);
    }

    #[test]
    fn nunit3_test_run_reports_are_understood() {
        let report = parse(
            r#"<?xml version="1.0" encoding="utf-8"?>
<test-run total="5"><test-suite type="Assembly" name="a.dll"><failure><message>suite level</message></failure>
  <test-suite type="TestFixture" name="C">
    <test-case name="Ok" fullname="N.C.Ok" result="Passed" duration="0.5"/>
    <test-case name="Bad" fullname="N.C.Bad" result="Failed" duration="0.1"><failure><message><![CDATA[Expected: 3]]></message><stack-trace><![CDATA[   at N.C.Bad()]]></stack-trace></failure></test-case>
    <test-case name="Boom" fullname="N.C.Boom" result="Failed" label="Error"><failure><message>System.Exception</message></failure></test-case>
    <test-case name="Later" fullname="N.C.Later" result="Skipped" label="Ignored"><reason><message>not yet</message></reason></test-case>
    <test-case name="Maybe" fullname="N.C.Maybe" result="Inconclusive"/>
    <test-case name="Slow" fullname="N.C.Slow" result="Failed" label="Test exceeded Timeout value 1ms."><failure/></test-case>
  </test-suite></test-suite></test-run>"#,
        );
        let got: Vec<(&str, TestOutcome, Option<&str>)> = report
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.outcome, t.message.as_deref()))
            .collect();
        use TestOutcome::*;
        assert_eq!(
            got,
            [
                ("N.C.Ok", Passed, None),
                ("N.C.Bad", Failed, Some("Expected: 3\nat N.C.Bad()")),
                ("N.C.Boom", Errored, Some("System.Exception")),
                ("N.C.Later", Skipped, Some("not yet")),
                ("N.C.Maybe", Skipped, None),
                ("N.C.Slow", Failed, Some("Test exceeded Timeout value 1ms.")),
            ]
        );
        assert_eq!(report.tests[0].duration_seconds, Some(0.5));
    }

    #[test]
    fn nunit2_and_xunit_net_reports_are_understood() {
        let nunit2 = parse(
            r#"<test-results><test-suite name="S"><results>
                 <test-case name="N.A" executed="True" result="Success" time="0.1"/>
                 <test-case name="N.B" executed="True" result="Failure"><failure><message>bad</message></failure></test-case>
                 <test-case name="N.C" executed="False" result="Ignored"><reason><message>later</message></reason></test-case>
                 <test-case name="N.D" executed="True" result="Error"/>
               </results></test-suite></test-results>"#,
        );
        let outcomes: Vec<TestOutcome> = nunit2.tests.iter().map(|t| t.outcome).collect();
        use TestOutcome::*;
        assert_eq!(outcomes, [Passed, Failed, Skipped, Errored]);

        let xunit = parse(
            r#"<assemblies><assembly name="a.dll"><collection name="C">
                 <test name="N.C.Ok" type="N.C" method="Ok" result="Pass" time="0.01"/>
                 <test name="N.C.Bad" type="N.C" method="Bad" result="Fail"><failure><message>Assert.Equal() Failure</message><stack-trace>at N.C.Bad()</stack-trace></failure></test>
                 <test name="N.C.Skip" type="N.C" method="Skip" result="Skip"><reason><![CDATA[nope]]></reason></test>
               </collection></assembly></assemblies>"#,
        );
        let got: Vec<(&str, TestOutcome)> = xunit
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.outcome))
            .collect();
        assert_eq!(
            got,
            [
                ("N.C.Ok", Passed),
                ("N.C.Bad", Failed),
                ("N.C.Skip", Skipped)
            ]
        );
        assert_eq!(
            xunit.tests[1].message.as_deref(),
            Some("Assert.Equal() Failure\nat N.C.Bad()")
        );
        assert_eq!(xunit.tests[2].message.as_deref(), Some("nope"));
    }

    #[test]
    fn go_junit_report_output_is_understood() {
        let report = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3" failures="1">
	<testsuite tests="3" failures="1" time="0.010" name="example.com/pkg" timestamp="2024-01-01T00:00:00Z">
		<properties><property name="go.version" value="go1.22.0 linux/amd64"></property></properties>
		<testcase classname="example.com/pkg" name="TestOk" time="0.000"></testcase>
		<testcase classname="example.com/pkg" name="TestBad" time="0.010"><failure message="Failed" type="">    pkg_test.go:12: want 1, got 2</failure></testcase>
		<testcase classname="example.com/pkg" name="TestSkip" time="0.000"><skipped message="    pkg_test.go:20: slow"></skipped></testcase>
	</testsuite>
</testsuites>"#,
        );
        let totals = report.totals();
        assert_eq!(
            (totals.tests, totals.passed, totals.failed, totals.skipped),
            (3, 1, 1, 1)
        );
        assert_eq!(report.tests[1].name, "example.com/pkg.TestBad");
        assert_eq!(
            report.tests[1].message.as_deref(),
            Some("Failed\npkg_test.go:12: want 1, got 2")
        );
    }

    #[test]
    fn external_entities_are_never_resolved() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE testsuites [
  <!ENTITY xxe SYSTEM "file:///etc/passwd">
  <!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd">
  %remote;
]>
<testsuites><testsuite name="s">
  <testcase name="&xxe;"><failure message="&xxe;">&xxe;</failure></testcase>
</testsuite></testsuites>"#;
        let report = parse(xml);
        let test = &report.tests[0];
        assert_eq!(test.name, "&xxe;");
        assert_eq!(test.message.as_deref(), Some("&xxe;"));
        assert!(!format!("{report:?}").contains("root:"), "no file was read");
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("DOCTYPE ignored"))
        );
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("undeclared entity"))
        );

        let external_dtd = parse(
            r#"<!DOCTYPE testsuites SYSTEM "file:///etc/passwd"><testsuites><testsuite><testcase name="t"/></testsuite></testsuites>"#,
        );
        assert_eq!(external_dtd.tests.len(), 1);
    }

    #[test]
    fn billion_laughs_is_left_unexpanded_in_bounded_memory() {
        let mut xml =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
        for i in 1..=9 {
            let prev = if i == 1 {
                "lol".to_string()
            } else {
                format!("lol{}", i - 1)
            };
            let refs = format!("&{prev};").repeat(10);
            xml.push_str(&format!(" <!ENTITY lol{i} \"{refs}\">\n"));
        }
        xml.push_str("]>\n<testsuites><testsuite><testcase name=\"t\"><failure message=\"&lol8;\">&lol9;&lol9;</failure></testcase></testsuite></testsuites>");
        let started = Instant::now();
        let report = parse(&xml);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "returns quickly"
        );
        let test = &report.tests[0];
        assert_eq!(test.message.as_deref(), Some("&lol8;\n&lol9;&lol9;"));
        assert!(test.message.as_ref().is_some_and(|m| m.len() < 64));

        // Quadratic blow-up: one big entity referenced many times.
        let big = "a".repeat(100_000);
        let refs = "&big;".repeat(10_000);
        let xml = format!(
            "<!DOCTYPE t [<!ENTITY big \"{big}\">]><testsuite><testcase name=\"t\"><failure>{refs}</failure></testcase></testsuite>"
        );
        let started = Instant::now();
        let report = parse(&xml);
        assert!(started.elapsed() < Duration::from_secs(2));
        let message = report.tests[0].message.clone().unwrap_or_default();
        assert!(message.starts_with("&big;&big;") && message.len() <= MESSAGE_CAP);
    }

    #[test]
    fn broken_or_non_report_input_is_malformed_with_a_position() {
        let table: &[(&str, &str, &str, &str)] = &[
            (
                "an empty file has no root element",
                "",
                "line 1, column 1",
                "no root element",
            ),
            (
                "a blank file has no root element",
                "\n\n  ",
                "line 3, column 3",
                "no root element",
            ),
            (
                "a declaration alone has no root element",
                "<?xml version=\"1.0\"?>\n",
                "line 2, column 1",
                "no root element",
            ),
            (
                "plain text is not XML",
                "hello",
                "line 1, column 1",
                "text outside the root element",
            ),
            (
                "a mismatched end tag is located",
                "<testsuites>\n  <testsuite>\n  </testsuites>",
                "line 3, column 3",
                "not well-formed",
            ),
            (
                "a truncated file names the open element",
                "<testsuites>\n<testsuite>\n<testcase name=\"a\">",
                "line 3, column 20",
                "<testcase>",
            ),
            (
                "an unclosed CDATA points at its start",
                "<testsuite>\n <testcase name=\"a\"><failure><![CDATA[oops",
                "line 2, column 30",
                "CDATA",
            ),
            (
                "another root element is not a test report",
                "<html><body/></html>",
                "line 1, column 1",
                "root element <html>",
            ),
            (
                "an unquoted attribute is invalid",
                "<testsuites>\n<testcase name=a/></testsuites>",
                "line 2, column 1",
                "invalid attribute",
            ),
            (
                "a duplicated attribute is invalid",
                "<testsuite><testcase name=\"a\" name=\"b\"/></testsuite>",
                "line 1, column 12",
                "invalid attribute",
            ),
        ];
        for (sentence, xml, position, reason) in table {
            let (got_position, got_reason) = malformed_at(xml);
            assert_eq!(&got_position, position, "{sentence}: {got_reason}");
            assert!(got_reason.contains(reason), "{sentence}: {got_reason}");
        }
    }

    #[test]
    fn only_testsuites_is_an_empty_report() {
        for xml in [
            "<testsuites/>",
            "<?xml version=\"1.0\"?>\n<testsuites></testsuites>\n",
            "<testsuite tests=\"0\"/>",
        ] {
            let report = parse(xml);
            assert!(report.tests.is_empty(), "{xml}");
            assert_eq!(report.totals(), Default::default());
            assert!(!report.bailed_out);
            assert_eq!(report.format, ReportFormat::Junit);
        }
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let bytes = b"<testsuite>\n  <testcase name=\"\xff\xfe\"/></testsuite>";
        match parse_junit("t.xml", &bytes[..]) {
            Err(ReportError::Malformed {
                position, reason, ..
            }) => {
                assert!(reason.contains("UTF-8"), "{reason}");
                assert_eq!(
                    position, "line 2, column 3",
                    "the element holding the bytes"
                );
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_malformed() {
        let xml = format!("<testsuites>{}", "<testsuite>".repeat(MAX_DEPTH + 5));
        let (_, reason) = malformed_at(&xml);
        assert!(reason.contains("nested deeper"), "{reason}");
    }

    #[test]
    fn a_bom_is_skipped_and_positions_still_count_lines() {
        let report =
            parse("\u{feff}<?xml version=\"1.0\"?><testsuite><testcase name=\"t\"/></testsuite>");
        assert_eq!(report.tests.len(), 1);
        let (position, _) = malformed_at("\u{feff}<testsuite>\n\n  <a></b></testsuite>");
        assert_eq!(position, "line 3, column 6");
        let trickled = parse_junit(
            "t.xml",
            io::BufReader::with_capacity(
                1,
                "\u{feff}<testsuite>\n\n  <a></b></testsuite>".as_bytes(),
            ),
        );
        match trickled {
            Err(ReportError::Malformed { position, .. }) => {
                assert_eq!(
                    position, "line 3, column 6",
                    "a BOM split across reads is skipped too"
                );
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn a_reader_yielding_one_byte_at_a_time_gives_the_same_answers() {
        let xml = "<testsuites>\n <testsuite name=\"s\">\n  <testcase classname=\"c\" name=\"t\" time=\"1.5\"><failure message=\"m\">body &amp; more</failure></testcase>\n</testsuite></testsuites>";
        let whole = parse(xml);
        let trickled = parse_junit("t.xml", io::BufReader::with_capacity(1, xml.as_bytes()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(whole, trickled);
        let broken = "<testsuites>\n <testsuite>\n  </testcase>";
        let err = parse_junit("t.xml", io::BufReader::with_capacity(1, broken.as_bytes()));
        match err {
            Err(ReportError::Malformed { position, .. }) => {
                assert_eq!(position, "line 3, column 3")
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn content_after_the_root_element_is_ignored_with_a_warning() {
        let report = parse(
            "<testsuite><testcase name=\"t\"/></testsuite>\n<!-- c -->\n<testsuite><testcase name=\"u\"/></testsuite>",
        );
        assert_eq!(report.tests.len(), 1);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("after the root element"))
        );
        let report = parse("<testsuite/>\n  \n");
        assert!(report.warnings.is_empty());
        let report = parse("<testsuite/><!-- unterminated");
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("after the root element"))
        );
    }

    #[test]
    fn the_size_limit_counts_bytes_read() {
        let xml = suite(r#"<testcase name="t"/>"#);
        let len = xml.len() as u64;
        assert!(
            parse_junit_limited("t.xml", xml.as_bytes(), len).is_ok(),
            "exactly the limit is fine"
        );
        match parse_junit_limited("big.xml", xml.as_bytes(), len - 1) {
            Err(ReportError::TooLarge { file, limit }) => {
                assert_eq!((file.as_str(), limit), ("big.xml", len - 1));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let err = parse_junit_limited("big.xml", xml.as_bytes(), 0)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.to_string(), "big.xml: report larger than 0 bytes");
    }

    #[test]
    fn errors_display_file_position_and_reason() {
        let err = parse_junit_str("a/b.xml", "<testsuite>")
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a/b.xml: line 1, column 12: unexpected end of file: 1 element(s) still open, innermost <testsuite>"
        );
    }

    #[test]
    fn totals_count_outcomes_retried_and_flaky_tests() {
        let report = parse(&suite(
            r#"<testcase name="p"/><testcase name="f"><failure/></testcase>
               <testcase name="e"><error/></testcase><testcase name="s"><skipped/></testcase>
               <testcase name="flaky"><flakyFailure/></testcase>
               <testcase name="hard"><failure/><rerunFailure/></testcase>"#,
        ));
        assert_eq!(
            report.totals(),
            crate::report::ReportTotals {
                tests: 6,
                passed: 2,
                failed: 2,
                errored: 1,
                skipped: 1,
                retried: 2,
                flaky: 1,
            }
        );
    }

    /// A small deterministic mutation fuzzer: truncations, byte flips and
    /// splices of a realistic report must never panic.
    #[test]
    fn mutated_reports_never_panic() {
        let seed_doc = format!(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE x [<!ENTITY e \"v\">]>\n{}",
            suite(
                r#"<testcase classname="c" name="t" time="1,5"><failure message="a&#10;b">x &amp; <![CDATA[y]]></failure><flakyFailure><stackTrace>s</stackTrace></flakyFailure></testcase><testcase name="t"/><test-case result="Failed"/>"#
            )
        );
        let seed = seed_doc.as_bytes();
        let alphabet: &[u8] = b"<>/&;#x\"'=![]-?: \n\xc3\xa9\xff";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut doc = seed.to_vec();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % doc.len().max(1);
                match next() % 4 {
                    0 => doc.truncate(at),
                    1 => {
                        if let Some(b) = doc.get_mut(at) {
                            *b = alphabet[(next() as usize) % alphabet.len()];
                        }
                    }
                    2 => doc.insert(
                        at.min(doc.len()),
                        alphabet[(next() as usize) % alphabet.len()],
                    ),
                    _ => {
                        let from = (next() as usize) % seed.len();
                        let to = (from + (next() as usize) % 40).min(seed.len());
                        let at = at.min(doc.len());
                        doc.splice(at..at, seed[from..to].iter().copied());
                    }
                }
            }
            let _ = parse_junit("fuzz.xml", &doc[..]);
            let _ = parse_junit_str("fuzz.xml", &String::from_utf8_lossy(&doc));
        }
    }

    // -- suite-level results --------------------------------------------------

    #[test]
    fn a_suite_with_only_a_suite_level_error_is_one_errored_test_named_after_it() {
        let xml = r#"<testsuite errors="1" name="com.example.InventoryTest" tests="1">
  <properties><property name="x" value="y"/></properties>
  <error message="com/example/Fixtures" type="java.lang.NoClassDefFoundError">java.lang.NoClassDefFoundError: com/example/Fixtures
	at java.base/java.lang.ClassLoader.defineClass1(Native Method)</error>
  <system-out><![CDATA[]]></system-out>
</testsuite>"#;
        let t = only_test(xml);
        assert_eq!(t.name, "com.example.InventoryTest");
        assert_eq!(t.outcome, TestOutcome::Errored);
        let message = t.message.unwrap_or_default();
        assert!(
            message.starts_with("java.lang.NoClassDefFoundError: com/example/Fixtures\n\tat "),
            "{message}"
        );
        let (fast, reader) = fast_and_reader(xml.as_bytes());
        assert_eq!(fast, reader);
    }

    #[test]
    fn suite_level_results_join_the_suites_test_cases_in_any_nesting() {
        let xml = r#"<testsuites>
  <testsuite name="outer">
    <testcase name="ok" classname="A"/>
    <testsuite name="inner"><failure message="setUpClass failed">boom</failure></testsuite>
    <testsuite name=""><error type="ImportError"/></testsuite>
  </testsuite>
  <testsuite name="teardown">
    <testcase name="t" classname="B"/>
    <error message="@AfterClass failed"/>
  </testsuite>
</testsuites>"#;
        let report = parse(xml);
        let got: Vec<(&str, TestOutcome, Option<&str>)> = report
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.outcome, t.message.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A.ok", TestOutcome::Passed, None),
                (
                    "inner",
                    TestOutcome::Errored,
                    Some("setUpClass failed\nboom")
                ),
                (UNNAMED_SUITE, TestOutcome::Errored, Some("ImportError")),
                ("B.t", TestOutcome::Passed, None),
                ("teardown", TestOutcome::Errored, Some("@AfterClass failed")),
            ]
        );
        let (fast, reader) = fast_and_reader(xml.as_bytes());
        assert_eq!(fast, reader);
        // An error inside a test case stays that test's.
        assert_eq!(
            parse(&suite(
                r#"<testcase name="t"><error message="x"/></testcase>"#
            ))
            .tests
            .len(),
            1
        );
    }

    // -- the in-memory fast path gives what quick-xml gives ------------------

    /// Both entry points on the same bytes, as comparable text.
    fn fast_and_reader(xml: &[u8]) -> (String, String) {
        (
            format!("{:?}", parse_junit_bytes("t.xml", xml)),
            format!("{:?}", parse_junit("t.xml", xml)),
        )
    }

    fn junit_fixtures() -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "xml") {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit"),
            &mut out,
        );
        out.sort();
        out
    }

    #[test]
    fn the_fast_path_agrees_with_quick_xml_on_every_fixture() {
        let files = junit_fixtures();
        assert!(files.len() > 20, "{files:?}");
        let mut fast = 0;
        for path in &files {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let (a, b) = fast_and_reader(&bytes);
            assert_eq!(a, b, "{path:?}");
            fast += usize::from(fast::parse(&bytes).is_some());
        }
        // all but the corrupt fixtures and those with a DOCTYPE or a lone `&`
        assert!(fast * 10 >= files.len() * 8, "{fast} of {}", files.len());
    }

    #[test]
    fn the_fast_path_agrees_with_quick_xml_on_damaged_and_unusual_input() {
        const SNIPPETS: &[&str] = &[
            "<!-- c -->",
            "<!---->",
            "<!-->",
            "<![CDATA[x<y&z]]>",
            "<?pi x?>",
            "<?>",
            "<?xml version=\"1.0\"?>",
            "&amp;",
            "&bogus;",
            "&#x41;",
            "&#xZZ;",
            "& ",
            "&",
            "<",
            ">",
            "\"",
            "'",
            "/",
            "=",
            "</testcase>",
            "</testsuite >",
            "<testcase name=\"n\"/>",
            "<testcase name=\"n\" />",
            "<testcase name='n' time='1,5'>\n</testcase>",
            "<testcase name=\"n\" >x</testcase>",
            "<testcase name=\"n\">&amp;</testcase>",
            "<testcase name=\"a&lt;b&zz;\" classname=\"c\" time=\"0.25\"/>",
            "<testcase name=\"t\tab\nnl\"/>",
            "<testcase name = \"spaced\"/>",
            "<testcase name=\"dup\" name=\"dup\"/>",
            "<testcase name=unquoted/>",
            "<testcase x:name=\"ns\"/>",
            "<testcase name=\"a>b\"/>",
            "<testcase name=\"c\" classname=\"k\"><failure/></testcase><testcase name=\"c\" classname=\"k\"/>",
            "<testcase name=\"r\"><failure message=\"m\">body &lt;1&gt;</failure></testcase>",
            "<testcase name=\"s\" status=\"skipped\"/>",
            "<testcasex name=\"z\"/>",
            "<testcase/>",
            "<testcase><testcase name=\"nested\"/></testcase>",
            "<system-out>out &amp; about</system-out>",
            "<!DOCTYPE x>",
            "\u{feff}",
            "\r\n",
            "\t",
            "é",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        let bases: Vec<Vec<u8>> = junit_fixtures()
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter(|b| b.len() < 40_000)
            .collect();
        assert!(bases.len() > 10);
        for round in 0..1500 {
            let mut doc = bases[next(bases.len())].clone();
            for _ in 0..1 + next(3) {
                let at = next(doc.len() + 1);
                match next(6) {
                    0 => doc.truncate(at),
                    1 => {
                        let end = (at + next(40)).min(doc.len());
                        doc.drain(at..end);
                    }
                    2 => doc.insert(at, 0xff),
                    _ => {
                        let snippet = SNIPPETS[next(SNIPPETS.len())].as_bytes();
                        doc.splice(at..at, snippet.iter().copied());
                    }
                }
            }
            let (a, b) = fast_and_reader(&doc);
            assert_eq!(a, b, "round {round}: {}", String::from_utf8_lossy(&doc));
        }
    }

    #[test]
    fn well_formed_reports_take_the_fast_path() {
        for xml in [
            "<testsuites><testsuite name=\"s\"><testcase name=\"a\" time=\"1\"/></testsuite></testsuites>",
            "\u{feff}<?xml version=\"1.0\"?>\n<!-- c --><testsuite><testcase name='a'>\n</testcase></testsuite>\n",
            "<testsuite><testcase name=\"a\"><failure><![CDATA[x < y]]> &amp; more</failure></testcase></testsuite>",
            "<test-run><test-suite name=\"s\"><test-case fullname=\"a\" result=\"Passed\"/></test-suite></test-run>",
        ] {
            let fast = fast::parse(xml.as_bytes());
            assert!(fast.is_some(), "{xml}");
            assert_eq!(fast, parse_junit("t.xml", xml.as_bytes()).ok(), "{xml}");
        }
        for xml in [
            "<!DOCTYPE t><testsuite/>",
            "<testsuite><testcase name=\"a\"><failure>a & b</failure></testcase></testsuite>",
            "<testsuite></testsuites>",
            "<testsuite>",
        ] {
            assert!(fast::parse(xml.as_bytes()).is_none(), "{xml}");
        }
    }

    #[test]
    fn plain_decimals_parse_exactly_as_str_parse_does() {
        for s in [
            "0",
            "0.006",
            "1.5",
            "165.872",
            "123456789012345",
            "0.1",
            "0.3",
            "9.999999999999",
            "12345678.9012345",
        ] {
            assert_eq!(plain_decimal(s), s.parse::<f64>().ok(), "{s}");
        }
        for s in [
            "",
            ".5",
            "5.",
            "1.2.3",
            "1e3",
            "-1",
            "1234567890123456",
            "1,5",
        ] {
            assert_eq!(plain_decimal(s), None, "{s}");
        }
        // the general path still reads these
        assert_eq!(parse_seconds("5."), Some(5.0));
        assert_eq!(parse_seconds("1e3"), Some(1000.0));
    }

    #[test]
    fn swar_searches_agree_with_naive_ones() {
        let hay: Vec<u8> = (0..300u32).map(|i| (i * 37 % 127) as u8).collect();
        for start in 0..40 {
            let h = &hay[start..];
            for q in [b'"', b'\'', 0u8, 0x7e] {
                let naive = h
                    .iter()
                    .position(|&c| c == q)
                    .map(|at| (at, h[..at].iter().any(|&c| c == b'&' || c < 0x0e)));
                assert_eq!(swar::until_quote(h, q), naive);
                assert_eq!(swar::find(h, q), h.iter().position(|&c| c == q));
            }
            assert_eq!(
                swar::find3(h, b'>', b'"', 9),
                h.iter().position(|&c| c == b'>' || c == b'"' || c == 9)
            );
        }
    }
}
