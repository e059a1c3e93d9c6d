//! Suite-level `<error>` / `<failure>` (a direct child of a `<testsuite>`; Ant
//! writes one for a test class that failed to load): the suite's own results
//! become one errored test named after the suite, after its test cases.

use quick_xml::events::BytesStart;

use super::message::{ResultElem, ResultKind};
use super::parser::{Capture, Ctx, Parser};
use super::xml::for_each_attr;

/// An open `<testsuite>` (or NUnit `<test-suite>`, xUnit `<collection>`).
#[derive(Debug)]
pub(super) struct Suite {
    pub(super) depth: usize,
    pub(super) name: String,
    /// its own `<error>`/`<failure>` children (JUnit)
    pub(super) results: Vec<ResultElem>,
}

/// The name of the test a suite-level error of an unnamed suite becomes.
pub(super) const UNNAMED_SUITE: &str = "(unnamed test suite)";

impl Parser {
    /// An opening `<testsuite>` (NUnit `<test-suite>`, xUnit `<collection>`).
    pub(super) fn open_suite(
        &mut self,
        e: &BytesStart<'_>,
        depth: usize,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), String> {
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
        Ok(())
    }

    /// A suite-level result: the suite failed outside its test cases (Ant
    /// writes it for a test class that failed to load).
    pub(super) fn open_suite_result(
        &mut self,
        e: &BytesStart<'_>,
        depth: usize,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), String> {
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
        Ok(())
    }

    /// A suite's own `<error>`/`<failure>` elements as one errored test named
    /// after the suite (what Jenkins does for a class that failed to load).
    pub(super) fn finish_suite_case(&mut self, suite: Suite) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TestOutcome;
    use crate::report::junit::tests::{fast_and_reader, only_test, parse, suite};

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
}
