//! The element state machine: which dialect the root names, which element is
//! a test case, a suite or a result, and where text and references go.

use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesStart, Event};

use super::mapping::display_name;
use super::mapping::{self, parse_seconds};
use super::message::{ResultElem, ResultKind};
use super::repeats::RetryIndex;
use super::repeats::Tests;
use super::suite::Suite;
use super::xml::{
    SimpleAttr, after_colon, attr_value, for_each_attr, local_name, predefined_entity,
};
use super::{MAX_DEPTH, MAX_RETRY_REASONS, MAX_WARNINGS};
use crate::report::{Report, ReportFormat};
use crate::text::clip;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Junit,
    Nunit,
    Xunit,
}

pub(super) enum Flow {
    Continue,
    Stop,
}

/// The attributes of a JUnit `<testcase>` the parser reads.
#[derive(Default)]
struct JunitCaseAttrs<'v> {
    pub(super) name: Option<Cow<'v, str>>,
    pub(super) classname: Option<Cow<'v, str>>,
    pub(super) time: Option<Cow<'v, str>>,
    pub(super) status: Option<Cow<'v, str>>,
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

#[derive(Debug)]
pub(super) struct CaseBuilder {
    pub(super) depth: usize,
    pub(super) name: String,
    /// [`RetryIndex::hash`] of the name part of the retry key (`Parser::key`)
    pub(super) name_hash: u64,
    pub(super) duration: Option<f64>,
    /// JUnit `status`, NUnit / xUnit `result`
    pub(super) status: Option<String>,
    pub(super) label: Option<String>,
    pub(super) executed: Option<String>,
    pub(super) results: Vec<ResultElem>,
    pub(super) retries: Vec<ResultElem>,
    pub(super) retry_count: u32,
}

/// Where text inside a test case currently goes.
#[derive(Debug)]
pub(super) struct Capture {
    /// depth of the result element (failure, error, ...)
    pub(super) depth: usize,
    pub(super) retry: bool,
    /// a suite-level `<error>`/`<failure>` (of the innermost open suite)
    pub(super) suite: bool,
    /// depth of a `<message>` child being read
    pub(super) message_depth: Option<usize>,
    /// depth of an ignored child (system-out, ...)
    pub(super) muted_depth: Option<usize>,
}

pub(super) struct Ctx<'a> {
    pub(super) position: &'a dyn Fn() -> String,
    pub(super) unknown_entity: &'a mut bool,
}

pub(super) struct Parser {
    pub(super) dialect: Option<Dialect>,
    pub(super) depth: usize,
    /// names of the open elements (clipped), concatenated; `open[i]` is where the
    /// name of the element at depth `i + 1` starts
    pub(super) open_names: String,
    pub(super) open: Vec<usize>,
    pub(super) root_closed: bool,
    /// the enclosing suites, innermost last
    pub(super) suites: Vec<Suite>,
    pub(super) case: Option<CaseBuilder>,
    pub(super) capture: Option<Capture>,
    pub(super) tests: Tests,
    /// retry key of the current test case: suite names, class name, test name
    pub(super) key: String,
    pub(super) warnings: Vec<String>,
    pub(super) warned_unknown_entity: bool,
    pub(super) unknown_entity: bool,
    pub(super) warned_nested_case: bool,
    pub(super) warned_bad_charref: bool,
}

impl Parser {
    pub(super) fn new() -> Self {
        Parser {
            dialect: None,
            depth: 0,
            open_names: String::new(),
            open: Vec::new(),
            root_closed: false,
            suites: Vec::new(),
            case: None,
            capture: None,
            tests: Tests::default(),
            key: String::new(),
            warnings: Vec::new(),
            warned_unknown_entity: false,
            unknown_entity: false,
            warned_nested_case: false,
            warned_bad_charref: false,
        }
    }

    pub(super) fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        }
    }

    pub(super) fn finish(self) -> Report {
        Report {
            format: ReportFormat::Junit,
            tests: self.tests.list,
            bailed_out: false,
            warnings: self.warnings,
        }
    }

    pub(super) fn handle(
        &mut self,
        event: Event<'_>,
        position: &dyn Fn() -> String,
    ) -> Result<Flow, String> {
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
            | (Dialect::Xunit, "collection") => self.open_suite(e, depth, ctx)?,
            (Dialect::Junit, "error" | "failure")
                if self.suites.last().is_some_and(|s| s.depth + 1 == depth) =>
            {
                self.open_suite_result(e, depth, ctx)?;
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
    pub(super) fn simple_testcase_allowed(&self) -> bool {
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
    pub(super) fn simple_testcase(
        &mut self,
        attrs: &[SimpleAttr<'_>],
        position: &dyn Fn() -> String,
    ) {
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
    pub(super) fn begin_case(
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

    /// Adds a finished test case to the report (or to the test it retries).
    pub(super) fn finish_case(&mut self, case: CaseBuilder) {
        let dialect = self.dialect.unwrap_or(Dialect::Junit);
        let name_hash = case.name_hash;
        let test = mapping::parsed_test(dialect, case);
        self.tests.record(&self.key, name_hash, test);
    }
}
