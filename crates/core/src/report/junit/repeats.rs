//! The repeated-name rule: a `<testcase>` repeated under the same suites,
//! class and name after a failed or errored occurrence is a retry of that test,
//! merged into it; a repeat after a passed or skipped one is another test.

use std::collections::HashMap;

use super::MAX_RETRY_REASONS;
use super::mapping::outcome_word;
use super::message::{cap, first_line};
use crate::model::{TestOutcome, TestResult};

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
pub(super) struct RetryIndex {
    pub(super) failed: HashMap<String, usize>,
    pub(super) filter: Vec<u64>,
}

impl RetryIndex {
    const FILTER_BITS: u64 = 4096;

    pub(super) fn hash(name: &str) -> u64 {
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

    pub(super) fn bit(name_hash: u64) -> (usize, u64) {
        let i = name_hash % Self::FILTER_BITS;
        ((i / 64) as usize, 1 << (i % 64))
    }

    pub(super) fn may_contain(&self, name_hash: u64) -> bool {
        let (word, mask) = Self::bit(name_hash);
        self.filter.get(word).is_some_and(|w| w & mask != 0)
    }

    pub(super) fn insert(&mut self, key: &str, name_hash: u64, index: usize) {
        if self.filter.is_empty() {
            self.filter = vec![0; (Self::FILTER_BITS / 64) as usize];
        }
        let (word, mask) = Self::bit(name_hash);
        self.filter[word] |= mask;
        self.failed.insert(key.to_string(), index);
    }
}

/// The tests of a report in order, with the index that finds the test a
/// repeated case retries.
#[derive(Default)]
pub(super) struct Tests {
    pub(super) list: Vec<TestResult>,
    pub(super) retries: RetryIndex,
}

impl Tests {
    /// Adds `test`, whose retry key (suite names, class name, test name) is
    /// `key` and whose name hashes to `name_hash` ([`RetryIndex::hash`]): merged
    /// into the earlier test with that key when that one failed or errored,
    /// else appended.
    pub(super) fn record(&mut self, key: &str, name_hash: u64, test: TestResult) {
        let maybe_seen = self.retries.may_contain(name_hash);
        let retry_of = maybe_seen
            .then(|| self.retries.failed.get(key).copied())
            .flatten()
            .filter(|&i| {
                self.list
                    .get(i)
                    .is_some_and(|t| failed_or_errored(t.outcome))
            });
        match retry_of {
            Some(i) => {
                if let Some(prev) = self.list.get_mut(i) {
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
                    self.retries.insert(key, name_hash, self.list.len());
                } else if maybe_seen {
                    self.retries.failed.remove(key);
                }
                self.list.push(test);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::tests::{only_test, parse, suite};

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
}
