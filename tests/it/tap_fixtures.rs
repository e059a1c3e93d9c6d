//! Every TAP stream of tapjs/tap-parser's fixtures, compared with the totals that
//! parser reports (`expected-final-results.json`, the `bail=false` run).
//!
//! How our numbers map onto tap-parser's (checked for every file):
//!
//! * tap-parser's `count`/`pass`/`fail`/`skip`/`todo` are compared with our
//!   [`TapCounts`], which counts top-level points the same way (a `# SKIP` or
//!   `# TODO` point is in `pass` or `fail` *and* in `skip` or `todo`).
//! * the neutral [`Report`] must then agree with them: `tests == count`,
//!   `skipped == skip + todo`, `passed == pass - ok points with a directive`,
//!   `failed + errored == fail - not-ok points with a directive`.
//!
//! By design we differ on one thing: tap-parser adds a failure for each plan or
//! protocol violation (test number outside the plan, duplicate number, missing
//! plan, plan in the middle, `pragma +strict` noise, …). We report those as
//! warnings and never invent failed tests. Those files are listed in
//! [`BY_DESIGN`] with the reason and the exact counts our parser gives; for them
//! we also require at least one warning.

use std::collections::BTreeMap;
use std::path::Path;

use ci_slo_exporter::report::tap::{TapCounts, parse_tap_with_counts};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tap/tap-parser");

/// Why a file is in [`BY_DESIGN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Design {
    /// tap-parser adds failures for plan/numbering violations; we warn.
    /// Only `fail` differs, and our report must carry a warning.
    PlanWarning,
    /// `pragma +strict` (or a plan with trailing blanks) makes tap-parser fail
    /// lines it does not like; we do not enforce strict mode and stay silent.
    /// Only `fail` differs.
    NotStrict,
    /// Other documented difference (see the reason); counts may differ anywhere,
    /// and our report must carry a warning.
    Other,
}
use Design::*;

/// (file, kind, reason, our exact [count, pass, fail, skip, todo])
const BY_DESIGN: &[(&str, Design, &str, [u64; 5])] = &[
    (
        "big-last.tap",
        PlanWarning,
        "test 6 outside plan 1..5",
        [5, 5, 0, 0, 0],
    ),
    (
        "bignum.tap",
        PlanWarning,
        "2 test numbers outside plan 1..2",
        [4, 4, 0, 0, 0],
    ),
    (
        "bignum_many.tap",
        PlanWarning,
        "9 test numbers outside plan 1..2",
        [11, 11, 0, 0, 0],
    ),
    (
        "combined_compat.tap",
        PlanWarning,
        "TAP 12 plan `1..10 todo 4 10` not read: no plan",
        [10, 7, 3, 1, 0],
    ),
    ("die_head_end.tap", PlanWarning, "no plan", [4, 4, 0, 0, 0]),
    (
        "die_unfinished.tap",
        PlanWarning,
        "3 of 4 planned tests",
        [3, 3, 0, 0, 0],
    ),
    (
        "duplicates.tap",
        PlanWarning,
        "test number 4 twice",
        [11, 11, 0, 0, 0],
    ),
    (
        "fail-right-before-indented-child-diag.tap",
        PlanWarning,
        "no plan",
        [2, 1, 1, 0, 0],
    ),
    (
        "fail-right-before-indented-child.tap",
        PlanWarning,
        "no plan",
        [2, 1, 1, 0, 0],
    ),
    (
        "missing.tap",
        PlanWarning,
        "5 of 6 planned tests",
        [5, 5, 0, 0, 0],
    ),
    ("no-plan.tap", PlanWarning, "no plan", [4, 4, 0, 0, 0]),
    (
        "not-enough.tap",
        PlanWarning,
        "4 of 5 planned tests",
        [4, 4, 0, 0, 0],
    ),
    (
        "offset-mismatch.tap",
        PlanWarning,
        "tests 8..11 outside plan 1..4",
        [4, 4, 0, 0, 0],
    ),
    (
        "outside-plan-end-many.tap",
        PlanWarning,
        "numbers outside trailing plan",
        [4, 4, 0, 0, 0],
    ),
    (
        "outside-plan-end.tap",
        PlanWarning,
        "number outside trailing plan",
        [4, 4, 0, 0, 0],
    ),
    (
        "outside-plan-start.tap",
        PlanWarning,
        "number outside trailing plan 2..5",
        [4, 4, 0, 0, 0],
    ),
    (
        "outside-plan.tap",
        PlanWarning,
        "numbers 234 and 5 outside plan 1..3",
        [3, 3, 0, 0, 0],
    ),
    (
        "plan-in-bad-places-post.tap",
        PlanWarning,
        "second plan line",
        [2, 2, 0, 0, 0],
    ),
    (
        "plan-invalid-strict.tap",
        PlanWarning,
        "invalid plan 100..1 under pragma +strict",
        [1, 1, 0, 0, 0],
    ),
    (
        "repeat-test-point-id.tap",
        PlanWarning,
        "test number 1 three times",
        [3, 3, 0, 0, 0],
    ),
    (
        "too-many.tap",
        PlanWarning,
        "4 tests for plan 1..3",
        [4, 4, 0, 0, 0],
    ),
    (
        "too_many.tap",
        PlanWarning,
        "7 tests for plan 1..3",
        [7, 7, 0, 0, 0],
    ),
    (
        "unfinished.tap",
        PlanWarning,
        "2 of 5 planned tests",
        [2, 2, 0, 0, 0],
    ),
    (
        "with_comments.tap",
        PlanWarning,
        "TAP 12 plan `1..5 todo 1 2 4 5;` not read: no plan",
        [5, 3, 2, 0, 0],
    ),
    (
        "wrong-last.tap",
        PlanWarning,
        "test number 4 twice",
        [5, 5, 0, 0, 0],
    ),
    (
        "zero_valid.tap",
        PlanWarning,
        "test number 0 outside plan 1..5",
        [5, 5, 0, 0, 0],
    ),
    (
        "pragma-mid-child-strict.tap",
        NotStrict,
        "pragma +strict not enforced",
        [1, 1, 0, 0, 0],
    ),
    (
        "space_after_plan.tap",
        NotStrict,
        "`1..5 ` with a trailing blank is a plan here",
        [5, 5, 0, 0, 0],
    ),
    (
        "strict-pragma-child-broken-diags.tap",
        NotStrict,
        "pragma +strict not enforced",
        [1, 0, 1, 0, 0],
    ),
    (
        "strict.tap",
        NotStrict,
        "pragma +strict not enforced",
        [1, 1, 0, 0, 0],
    ),
    (
        "version_old-strict.tap",
        NotStrict,
        "pragma +strict not enforced",
        [5, 5, 0, 0, 0],
    ),
    (
        "out_of_order.tap",
        Other,
        "plan 1..15 mid-stream: tap-parser stops counting there (10 tests, +1 failure); \
         we keep the 5 later tests and warn",
        [15, 15, 0, 0, 0],
    ),
    (
        "skip-all-with-test.tap",
        Other,
        "plan 1..0 after a passing test: tap-parser also counts it skipped and failed; \
         we keep it passed and warn",
        [1, 1, 0, 0, 0],
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    count: u64,
    pass: u64,
    fail: u64,
    skip: u64,
    todo: u64,
}

impl Counts {
    fn from_array(a: [u64; 5]) -> Self {
        Counts {
            count: a[0],
            pass: a[1],
            fail: a[2],
            skip: a[3],
            todo: a[4],
        }
    }
    fn from_tap(c: &TapCounts) -> Self {
        Counts {
            count: c.count,
            pass: c.pass,
            fail: c.fail,
            skip: c.skip,
            todo: c.todo,
        }
    }
}

fn expected_results() -> BTreeMap<String, Value> {
    let path = Path::new(FIXTURES).join("expected-final-results.json");
    let text = std::fs::read_to_string(&path).expect("expected-final-results.json is readable");
    serde_json::from_str(&text).expect("expected-final-results.json is JSON")
}

fn number(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a number in {v}"))
}

#[test]
fn every_tap_parser_fixture_gives_the_documented_totals() {
    let expected = expected_results();
    let tap_files: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixture folder exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".tap"))
        .collect();
    assert_eq!(
        tap_files.len(),
        expected.len(),
        "one expectation per .tap file"
    );

    let mut exact = 0;
    let mut by_design = 0;
    let mut problems = Vec::new();
    for (file, want) in &expected {
        let bytes = std::fs::read(Path::new(FIXTURES).join(file)).expect("fixture readable");
        let text = String::from_utf8_lossy(&bytes);
        let (report, counts) = parse_tap_with_counts(file, &text).expect("parses");
        let ours = Counts::from_tap(&counts);
        let theirs = Counts {
            count: number(want, "count"),
            pass: number(want, "pass"),
            fail: number(want, "fail"),
            skip: number(want, "skip"),
            todo: number(want, "todo"),
        };
        let want_bailout = !matches!(want["bailout"], Value::Bool(false));
        if report.bailed_out != want_bailout {
            problems.push(format!(
                "{file}: bailed_out {} but tap-parser says {}",
                report.bailed_out, want["bailout"]
            ));
        }

        // the neutral report agrees with the tap-parser-style counts
        let t = report.totals();
        let consistent = t.tests == ours.count
            && t.skipped == ours.skip + ours.todo
            && t.passed == ours.pass - counts.pass_with_directive
            && t.failed + t.errored == ours.fail - counts.fail_with_directive;
        if !consistent {
            problems.push(format!(
                "{file}: report totals {t:?} disagree with {counts:?}"
            ));
        }

        match BY_DESIGN.iter().find(|(name, ..)| name == file) {
            None => {
                if ours == theirs {
                    exact += 1;
                } else {
                    problems.push(format!(
                        "{file}: ours {ours:?}\n    tap-parser {theirs:?}\n    warnings {:?}",
                        report.warnings
                    ));
                }
            }
            Some((_, design, reason, documented)) => {
                let documented = Counts::from_array(*documented);
                let only_more_failures = Counts {
                    fail: theirs.fail,
                    ..documented
                } == theirs
                    && theirs.fail > documented.fail;
                if ours != documented {
                    problems.push(format!(
                        "{file}: ours {ours:?} but the table says {documented:?} ({reason})"
                    ));
                } else if *design != Other && !only_more_failures {
                    problems.push(format!(
                        "{file}: {design:?} entries differ from tap-parser {theirs:?} only by extra failures"
                    ));
                } else if *design == Other && documented == theirs {
                    problems.push(format!(
                        "{file}: listed as different but matches tap-parser"
                    ));
                } else if *design != NotStrict && report.warnings.is_empty() {
                    problems.push(format!(
                        "{file}: by-design difference but no warning ({reason})"
                    ));
                } else {
                    by_design += 1;
                }
            }
        }
    }
    println!(
        "tap-parser fixtures: {exact} match exactly, {by_design} differ by documented design \
         (plan/protocol violations are warnings here), {} problems, {} files",
        problems.len(),
        expected.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(exact + by_design, expected.len());
}
