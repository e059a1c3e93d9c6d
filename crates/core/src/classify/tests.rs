//! Tests of the classifier as a whole: every default rule on realistic lines,
//! the ranking on realistic logs, streaming edge cases, and the equivalence of
//! the prefiltered scan with a scan that feeds every line.

use std::io::{self, Read};

use super::examples::{RULE_EXAMPLES, parse};
use super::rules::default_applies_to;
use super::target::prefilter_pattern;
use super::*;

fn classify(text: &str) -> Classification {
    Classifier::with_defaults()
        .classify_log(text.as_bytes())
        .unwrap()
}

fn class_of(text: &str) -> Option<String> {
    classify(text).primary.map(|m| m.class)
}

fn evidence_of(text: &str) -> Option<(String, u64)> {
    classify(text).primary.map(|m| (m.class, m.line))
}

fn rule(name: &str, pattern: &str, priority: i32) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        pattern: pattern.into(),
        category: Category::Build,
        description: "d".into(),
        known_issue_url: None,
        applies_to: default_applies_to(),
        priority,
        evidence: Evidence::Line,
    }
}

// ---- every default rule: a realistic match and a near miss -------------------

#[test]
fn every_default_rule_has_an_example_and_a_near_miss() {
    for r in Classifier::default_rules() {
        assert!(
            RULE_EXAMPLES.iter().any(|(name, _, _)| *name == r.name),
            "rule {} has no example",
            r.name
        );
    }
    for (name, _, _) in RULE_EXAMPLES {
        assert!(
            Classifier::default_rules().iter().any(|r| r.name == *name),
            "example for unknown rule {name}"
        );
    }
}

#[test]
fn each_default_rule_classifies_its_realistic_snippet() {
    for (name, snippet, _) in RULE_EXAMPLES {
        let (text, evidence) = parse(snippet);
        let m = classify(&text)
            .primary
            .unwrap_or_else(|| panic!("{name}: nothing for {text:?}"));
        assert_eq!(&m.class, name, "{text:?}: {m:?}");
        assert_eq!(m.line, evidence as u64 + 1, "{name}: {m:?}");
        // the same inside a failing CI step, with the markers around it
        let framed = format!(
            "travis_time:start:0a1b\r\x1b[0K$ make check\n{text}\n\x1b[31;1mThe command \"make check\" exited with 2.\x1b[0m\n"
        );
        let m = classify(&framed).primary.unwrap();
        assert_eq!(&m.class, name, "framed {text:?}: {m:?}");
        assert_eq!(m.line, evidence as u64 + 2, "framed {name}");
    }
}

#[test]
fn each_default_rule_ignores_its_near_miss() {
    for (name, _, miss) in RULE_EXAMPLES {
        let (text, _) = parse(miss);
        assert_ne!(class_of(&text).as_deref(), Some(*name), "{text:?}");
    }
}

#[test]
fn each_default_rule_matches_through_the_prefilter_rewrite() {
    let rules = Classifier::default_rules();
    for (name, snippet, _) in RULE_EXAMPLES {
        let r = rules.iter().find(|r| r.name == *name).unwrap();
        let re = regex::Regex::new(&prefilter_pattern(&r.pattern)).unwrap();
        let original = regex::Regex::new(&r.pattern).unwrap();
        let (text, _) = parse(snippet);
        for line in text.lines() {
            let cleaned = strip_ansi_and_sections(line);
            if original.is_match(&cleaned) {
                assert!(re.is_match(&cleaned), "{name}: {line:?}");
            }
        }
    }
}

// ---- finding the failing step ------------------------------------------------

/// A Travis CI log: setup, a passing step, the failing `step` lines, an
/// `after_failure` step and the job's end.
fn travis(step: &[&str], code: u32) -> String {
    let mut log = String::from(
        "Worker information\nhostname: worker-7\nAllow some information gathering to give useful error messages\n",
    );
    log.push_str("travis_time:start:01\r\x1b[0K$ ./configure\nchecking for gcc... gcc\n");
    log.push_str("\x1b[32;1mThe command \"./configure\" exited with 0.\x1b[0m\n");
    log.push_str("travis_time:start:02\r\x1b[0K$ make check\n");
    for l in step {
        log.push_str(l);
        log.push('\n');
    }
    log.push_str(&format!(
        "travis_time:end:02:start=1,finish=2,duration=1\r\x1b[0K\x1b[31;1mThe command \"make check\" exited with {code}.\x1b[0m\n"
    ));
    log.push_str(
        "travis_time:start:03\r\x1b[0K$ cat test-suite.log\nall logs: error summary written\n",
    );
    log.push_str("\nDone. Your build exited with 1.\n");
    log
}

fn line_of(log: &str, text: &str) -> u64 {
    log.lines().position(|l| l.ends_with(text)).unwrap() as u64 + 1
}

#[test]
fn the_evidence_is_in_the_step_whose_exit_ended_the_job() {
    let log = travis(
        &[
            "PASS: test_parse",
            "FAIL: test_render (tests.RenderTest)",
            "AssertionError: 'a' != 'b'",
            "Ran 2 tests: FAILED (failures=1)",
        ],
        1,
    );
    let m = classify(&log).primary.unwrap();
    assert_eq!(m.class, "unittest-test-failed");
    assert_eq!(
        m.line,
        line_of(&log, "FAIL: test_render (tests.RenderTest)")
    );
    // the preamble's "error" and the after_failure step do not count
    assert!(m.candidates.iter().all(|c| !c.text.contains("gathering")));
}

#[test]
fn the_summary_line_is_not_the_evidence_when_the_failure_is_named() {
    let log = travis(
        &[
            "Results :",
            "Tests in error: ",
            "  ParserTest.parsesEmptyInput:42 » NullPointer",
            "[ERROR] Tests run: 9, Failures: 0, Errors: 9, Skipped: 0, Time elapsed: 0.3 s <<< FAILURE! - in com.example.ParserTest",
            "Tests run: 9, Failures: 0, Errors: 9, Skipped: 0",
            "[INFO] BUILD FAILURE",
        ],
        1,
    );
    let m = classify(&log).primary.unwrap();
    assert_eq!(m.class, "surefire-test-failed");
    assert!(m.evidence.contains("<<< FAILURE!"), "{m:?}");
}

#[test]
fn an_announcement_names_the_next_line() {
    let log = travis(
        &[
            "rake aborted!",
            "No Rakefile found (looking for: rakefile, Rakefile, rakefile.rb, Rakefile.rb)",
            "/home/travis/.rvm/gems/ruby-2.6.3/bin/ruby_executable_hooks:15:in `eval'",
            "(See full trace by running task with --trace)",
        ],
        1,
    );
    let m = classify(&log).primary.unwrap();
    assert_eq!(
        m.line,
        line_of(
            &log,
            "No Rakefile found (looking for: rakefile, Rakefile, rakefile.rb, Rakefile.rb)"
        )
    );
}

#[test]
fn a_see_above_summary_names_the_line_above_it() {
    let log = travis(
        &[
            "checking the generated files",
            "stale file: src/gen/parser.rs",
            "make: *** [Makefile:12: check-generated] Error 1",
            "make[1]: Leaving directory '/build'",
            "make: *** [check] Error 2",
        ],
        2,
    );
    let m = classify(&log).primary.unwrap();
    assert_eq!(m.line, line_of(&log, "stale file: src/gen/parser.rs"));
    assert_eq!(m.class, "make-failed");
    let log = travis(
        &[
            "(./docs/intro.md): found character that cannot start any token while scanning at line 8 column 1",
            "FAILURE!!! 1 files were unable to be parsed!",
            "Please check the headers of the documents that failed!",
        ],
        1,
    );
    let m = classify(&log).primary.unwrap();
    assert_eq!(m.line, line_of(&log, "at line 8 column 1"));
}

#[test]
fn an_unexplained_step_is_named_by_its_last_output_line() {
    let log = travis(
        &[
            " M assets/app.js",
            "Please rebuild the assets and commit the changes.",
        ],
        1,
    );
    let m = classify(&log).primary.unwrap();
    assert_eq!(m.class, UNKNOWN_CLASS);
    assert_eq!(
        m.line,
        line_of(&log, "Please rebuild the assets and commit the changes.")
    );
}

#[test]
fn a_stop_from_outside_wins_wherever_it_is() {
    let mut log = travis(&["FAIL: test_render (tests.RenderTest)"], 1);
    log.push_str("No output has been received in the last 10m0s, this potentially indicates a stalled build or something wrong with the build itself.\n");
    let m = classify(&log).primary.unwrap();
    assert_eq!(m.class, "job-timeout");
    assert_eq!(m.candidates[0].class, "unittest-test-failed");
    // GitHub: the timeout outranks the cancellation that follows it
    let gh = "2024-01-02T03:04:05.1Z ##[group]Run make test\nFAIL: test_x (t.T)\n##[error]The job running on runner R has exceeded the maximum execution time of 60 minutes.\n##[error]The operation was canceled.\n";
    assert_eq!(class_of(gh).as_deref(), Some("job-timeout"));
}

#[test]
fn an_assertion_quoting_a_timeout_is_an_assertion() {
    let log = "FAIL: test_timeout_message (tests.T)\nAssertionError: 'test timed out' != 'done'\n";
    assert_eq!(
        evidence_of(log),
        Some(("unittest-test-failed".to_string(), 1))
    );
    assert_eq!(
        class_of("AssertionError: 'test timed out' != 'done'").as_deref(),
        Some("assertion-failed")
    );
}

#[test]
fn a_failing_subtest_with_its_message_beats_its_parent() {
    let log = travis(
        &[
            "=== RUN   TestAlpha",
            "--- FAIL: TestAlpha (0.02s)",
            "    --- PASS: TestAlpha/Audio (0.00s)",
            "    --- FAIL: TestAlpha/Meetups (0.00s)",
            "        repo_test.go:131: expected 'golang auckland' but actual is 'golang boston'",
            "FAIL",
            "FAIL\tgithub.com/org/repo\t0.165s",
        ],
        1,
    );
    let m = classify(&log).primary.unwrap();
    assert_eq!(m.line, line_of(&log, "--- FAIL: TestAlpha/Meetups (0.00s)"));
}

#[test]
fn words_inside_urls_versions_and_options_are_not_errors() {
    for line in [
        "Downloading https://repo.maven.apache.org/maven2/org/apache/maven/maven-error-diagnostics/2.0.6/maven-error-diagnostics-2.0.6.pom",
        "+export GIT_PROVE_OPTS=--timer --jobs 3 --state=failed,slow,save",
        "Installing libfoo-2.1 failed-fast-mode disabled",
    ] {
        assert_eq!(class_of(line), None, "{line:?}");
    }
    // tests-failed needs a count, not the tail of a version number
    assert_eq!(
        class_of("Building libfoo 2.1 failed"),
        Some(UNKNOWN_CLASS.into())
    );
    assert_eq!(class_of("3 failed, 12 passed"), Some("tests-failed".into()));
}

#[test]
fn a_job_that_reports_success_is_not_classified() {
    let log = "error: retrying the download\nwarning: 1 test failed and was retried\nDone. Your build exited with 0.\n";
    assert_eq!(classify(log).primary, None);
    let gitlab = "\x1b[0Ksection_start:1:step_script\r\x1b[0K$ make\nerror_count=0\nsection_end:2:step_script\r\x1b[0K\nJob succeeded\n";
    assert_eq!(classify(gitlab).primary, None);
}

#[test]
fn gitlab_and_jenkins_exit_markers_end_the_failing_step() {
    let gitlab = "\x1b[0Ksection_start:1:step_script\r\x1b[0K$ cargo test\nerror[E0425]: cannot find value `x`\nsection_end:2:step_script\r\x1b[0K\n\x1b[31;1mERROR: Job failed: exit code 101\x1b[0;m\n";
    assert_eq!(evidence_of(gitlab), Some(("rust-compile-error".into(), 2)));
    let jenkins = "[Pipeline] sh\n+ make\nerror: oops in the first step\n[Pipeline] sh\n+ make test\ntest it ... FAILED\nERROR: script returned exit code 2\nFinished: FAILURE\n";
    assert_eq!(evidence_of(jenkins), Some(("test-failed".into(), 6)));
}

#[test]
fn candidates_list_up_to_three_further_lines_best_first() {
    let log = travis(
        &[
            "Error: first strong line",
            "FAIL: test_a (t.T)",
            "FAIL: test_b (t.T)",
            "it failed again",
            "FAIL: test_c (t.T)",
        ],
        1,
    );
    let m = classify(&log).primary.unwrap();
    assert_eq!(m.line, line_of(&log, "FAIL: test_a (t.T)"));
    let others: Vec<(&str, &str)> = m
        .candidates
        .iter()
        .map(|c| (c.class.as_str(), c.text.as_str()))
        .collect();
    assert_eq!(
        others,
        vec![
            ("unittest-test-failed", "FAIL: test_b (t.T)"),
            ("unittest-test-failed", "FAIL: test_c (t.T)"),
            (UNKNOWN_CLASS, "Error: first strong line"),
        ]
    );
    assert!(m.candidates.iter().all(|c| c.line > 0));
}

// ---- configured rules ------------------------------------------------------------

#[test]
fn context_before_says_where_the_evidence_sits_among_its_context_lines() {
    let c = Classifier::new(&[rule("boom", "BOOM", 0)]).unwrap();
    let at = |log: &str| {
        let m = c.classify_log(log.as_bytes()).unwrap().primary.unwrap();
        (m.line, m.context_before, m.context.len())
    };
    assert_eq!(at("BOOM\na\nb\nc\nd\n"), (1, 0, 3));
    // Blank lines are not context; at most 3 on each side.
    assert_eq!(at("a\n\nb\nBOOM\nc\n"), (4, 2, 3));
    assert_eq!(at("a\nb\nc\nd\ne\nBOOM\n"), (6, 3, 3));
}

#[test]
fn within_a_step_a_higher_priority_wins_then_the_earliest_line() {
    let c = Classifier::new(&[rule("low", "low", 1), rule("high", "high", 5)]).unwrap();
    let m = c
        .classify_log("low\nhigh\nlow\nhigh\n".as_bytes())
        .unwrap()
        .primary
        .unwrap();
    assert_eq!((m.class.as_str(), m.line), ("high", 2));
    // on one line, equal priorities go to the earlier rule
    let c = Classifier::new(&[rule("first", "x", 1), rule("second", "x", 1)]).unwrap();
    let m = c.classify_log("x\n".as_bytes()).unwrap().primary.unwrap();
    assert_eq!(m.class, "first");
}

#[test]
fn a_configured_rule_outranks_error_words() {
    let c = Classifier::new(&[rule("flaky-db", "database is locked", 0)]).unwrap();
    let m = c
        .classify_log("Error: something\nwarn: database is locked\n".as_bytes())
        .unwrap()
        .primary
        .unwrap();
    assert_eq!((m.class.as_str(), m.line), ("flaky-db", 2));
}

#[test]
fn a_configured_evidence_kind_is_honoured() {
    let mut r = rule("see-log", "^Check the log above", 3);
    r.evidence = Evidence::Previous;
    r.applies_to = vec![AppliesTo::Log];
    let c = Classifier::new(&[r]).unwrap();
    let m = c
        .classify_log("step 1\nthe real reason\nCheck the log above\n".as_bytes())
        .unwrap()
        .primary
        .unwrap();
    assert_eq!((m.class.as_str(), m.line), ("see-log", 2));
}

#[test]
fn message_rules_only_apply_to_messages() {
    let mut log_only = rule("log-only", "flaky", 0);
    log_only.applies_to = vec![AppliesTo::Log];
    log_only.known_issue_url = Some("https://issues.example.com/1".into());
    let mut msg_only = rule("msg-only", "expected \\d+", 0);
    msg_only.applies_to = vec![AppliesTo::TestMessage];
    let c = Classifier::new(&[log_only, msg_only]).unwrap();
    assert_eq!(c.classify_message("flaky thing"), None);
    let m = c.classify_message("first line\nexpected 3\nlast").unwrap();
    assert_eq!((m.class.as_str(), m.line), ("msg-only", 2));
    assert_eq!(m.context, vec!["first line", "last"]);
    assert_eq!(m.context_before, 1, "{m:?}");
    let p = c
        .classify_log("expected 3\nflaky here\n".as_bytes())
        .unwrap()
        .primary
        .unwrap();
    assert_eq!(p.class, "log-only");
    assert_eq!(
        p.known_issue_url.as_deref(),
        Some("https://issues.example.com/1")
    );
    // no unknown fallback for messages
    assert_eq!(c.classify_message("some Error"), None);
}

#[test]
fn default_rules_classify_typical_test_messages() {
    let c = Classifier::with_defaults();
    let table = [
        ("AssertionError: assert 1 == 2", "assertion-failed"),
        ("expected: <1> but was: <2>", "expected-mismatch"),
        (
            "java.net.ConnectException: Connection refused",
            "connection-refused",
        ),
        ("TimeoutError: waited 5000ms", "timed-out"),
    ];
    for (msg, class) in table {
        assert_eq!(
            c.classify_message(msg).map(|m| m.class).as_deref(),
            Some(class),
            "{msg}"
        );
    }
    assert_eq!(c.classify_message("test result: FAILED. 1 failed"), None);
}

// ---- streaming -------------------------------------------------------------------

#[test]
fn long_lines_are_truncated_for_matching_and_do_not_shift_line_numbers() {
    let mut log = Vec::new();
    log.extend_from_slice(b"first\n");
    log.extend(std::iter::repeat_n(b'a', 3 * MAX_LINE_BYTES));
    log.extend_from_slice(b" No space left on device (beyond the cap)\n");
    log.extend_from_slice(b"Connection refused\n");
    let c = Classifier::with_defaults().classify_log(&log[..]).unwrap();
    let m = c.primary.unwrap();
    assert_eq!((m.class.as_str(), m.line), ("connection-refused", 3));
    assert_eq!(c.lines_scanned, 3);
    assert_eq!(c.bytes_scanned, log.len() as u64);
    assert_eq!(m.context.len(), 2);
    assert!(m.context[1].len() <= EVIDENCE_CAP_BYTES);
}

#[test]
fn a_line_of_exactly_the_cap_is_not_treated_as_truncated() {
    let mut log = vec![b'x'; MAX_LINE_BYTES];
    log.extend_from_slice(b"\nKilled\n");
    let c = Classifier::with_defaults().classify_log(&log[..]).unwrap();
    assert_eq!(c.lines_scanned, 2);
    assert_eq!(c.primary.unwrap().line, 2);
}

#[test]
fn evidence_is_capped_on_a_char_boundary() {
    let line = format!(
        "{} Connection refused {}",
        "é".repeat(300),
        "ü".repeat(2000)
    );
    let m = classify(&line).primary.unwrap();
    assert!(m.evidence.len() <= EVIDENCE_CAP_BYTES);
    assert!(m.evidence.len() > EVIDENCE_CAP_BYTES - 4);
}

/// A reader that returns tiny, irregular chunks, to exercise buffer boundaries.
struct Dribble<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step = self.step % 7 + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn chunking_of_the_input_does_not_change_the_result() {
    let log = "a\r\n\x1b[0Ksection_start:10:build\r\x1b[0Kb\nc ok\nerror[E0425]: cannot find value\nd\n\x1b[0Ksection_end:25:build\r\x1b[0K\nlast";
    let whole = classify(log);
    let dribbled = Classifier::with_defaults()
        .classify_log(Dribble {
            data: log.as_bytes(),
            step: 0,
        })
        .unwrap();
    assert_eq!(whole, dribbled);
    assert_eq!(whole.lines_scanned, 7);
    assert_eq!(whole.sections, vec![("build".to_string(), 15)]);
    let m = whole.primary.unwrap();
    assert_eq!(m.line, 4);
    assert_eq!(m.context, vec!["a", "b", "c ok", "d", "last"]);
}

#[test]
fn a_text_in_memory_is_classified_as_the_same_text_streamed() {
    // `classify_text` and `classify_message` read a text in memory with a
    // buffer no larger than the text (`scan::scan_text`); the result is the
    // streamed one whatever the text's length, around the buffer's first
    // size (16 KiB) and its doublings, with a line cut at the largest block.
    let c = Classifier::with_defaults();
    let line = "ok 12 some step passed\n";
    let failing = "error[E0425]: cannot find value `x` in this scope\n";
    let mut texts: Vec<String> = vec![
        String::new(),
        "x".into(),
        "Killed".into(),
        failing.into(),
        format!("{line}{failing}{line}"),
    ];
    for len in [16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 40_000, 300_000] {
        let mut t = line.repeat(len / line.len() + 1);
        t.truncate(len - failing.len() - 1);
        t.push('\n');
        t.push_str(failing);
        assert_eq!(t.len(), len);
        texts.push(t);
    }
    // A line longer than the largest block (1 MiB), then the failure.
    texts.push(format!("{}\n{failing}", "y".repeat(1_100_000)));
    for t in &texts {
        let streamed = c.classify_log(t.as_bytes()).unwrap();
        assert_eq!(c.classify_text(t).unwrap(), streamed, "{} bytes", t.len());
        assert_eq!(c.classify_text(t).unwrap().bytes_scanned, t.len() as u64);
        let message = scan::scan(&c.message, t.as_bytes(), true).unwrap();
        assert_eq!(
            c.classify_message(t),
            c.to_match(message.ranked),
            "{} bytes",
            t.len()
        );
    }
    assert!(
        c.classify_text(&texts[8]).unwrap().primary.is_some(),
        "the failure at the end of a long text is found"
    );
}

#[test]
fn classification_serialises_with_lowercase_categories() {
    let c = classify("Killed\n");
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["primary"]["category"], "infra");
    assert_eq!(v["primary"]["class"], "killed");
    assert_eq!(v["primary"]["line"], 1);
    assert_eq!(v["primary"]["candidates"], serde_json::json!([]));
    for cat in Category::ALL {
        let s = serde_json::to_string(&cat).unwrap();
        assert_eq!(s, format!("\"{}\"", cat.as_str()));
    }
    let a: AppliesTo = serde_json::from_str("\"test_message\"").unwrap();
    assert_eq!(a, AppliesTo::TestMessage);
}

#[test]
fn the_classifier_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Classifier>();
}

// ---- the prefiltered scan agrees with a scan of every line ---------------------

/// xorshift64*: deterministic test inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
        items[self.below(items.len())]
    }
}

const QUIET_LINES: &[&str] = &[
    "   Compiling serde v1.0.200",
    "test tests::case_1 ... ok",
    "",
    "   ",
    "##[group]Run cargo test",
    "##[endgroup]",
    "2024-05-01T10:11:12.1234567Z building the workspace",
    "+ echo \"step done\"",
    "$ make error_log",
    "test result: ok. 0 errors, 0 failures",
    "Downloading 10%\rDownloading 100%",
    "\x1b[32;1m   Finished\x1b[0m release",
    "\x1b[0Ksection_start:1700000000:build[collapsed=true]\r\x1b[0KBuilding",
    "\x1b[0Ksection_end:1700000042:build\r\x1b[0K",
    "section_start:1700000050:deploy\rDeploying",
    "  ✓ renders the dashboard (23 ms)",
    "Kelvin \u{212a} and long \u{17f} in a quiet line",
    "::notice file=a.rs::all good",
    "travis_time:start:0a1b\r\x1b[0K$ make",
    "travis_fold:end:install\r\x1b[0K",
    "make[2]: Entering directory '/build/src'",
];

const EXTRA_HIT_LINES: &[&str] = &[
    "Error: something broke",
    "thrown: FooException in worker",
    "Killed",
    "123",
    "SKIPPED hard",
    "\u{17f}kipped hard",
    "\u{212a}aboom here",
    "w0rd42x appeared",
    "W0RD149X appeared",
    "The command \"make\" exited with 2.",
    "The command \"make\" exited with 0.",
    "##[error]Process completed with exit code 1.",
    "ERROR: Job failed: exit code 1",
    "Done. Your build exited with 1.",
    "Done. Your build exited with 0.",
    "[Pipeline] sh",
    "make: *** [all] Error 1",
    "npm ERR! Test failed.  See above for more details.",
    "rake aborted!",
    "Failures:",
    "Tests run: 9, Failures: 2",
    "--- FAIL: TestX (0.00s)",
    "    x_test.go:12: expected 1 but got 2",
];

/// Applies 0-3 random decorations to `line`: an ANSI sequence at a random
/// char boundary (splitting words), a `\r` overwrite, CRLF, case flips,
/// the Kelvin sign / long s, invalid UTF-8, CI prefixes.
fn decorate(rng: &mut Rng, line: &str) -> Vec<u8> {
    let mut text = line.to_string();
    for _ in 0..rng.below(4) {
        match rng.below(9) {
            0 | 1 => {
                let bounds: Vec<usize> = (0..=text.len())
                    .filter(|&i| text.is_char_boundary(i))
                    .collect();
                let at = bounds[rng.below(bounds.len())];
                let seq = rng.pick(&[
                    "\x1b[31m",
                    "\x1b[0m",
                    "\x1b[0K",
                    "\x1b]8;;https://example.com\x07",
                    "\x1b(B",
                    "\x1b[1;2;3m",
                ]);
                text.insert_str(at, seq);
            }
            2 => text.insert_str(0, rng.pick(&["progress 5%\r", "\x1b[2K\r", "x\r\r"])),
            3 => text.push('\r'),
            4 => {
                text = text
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphabetic() && rng.below(3) == 0 {
                            if c.is_ascii_lowercase() {
                                c.to_ascii_uppercase()
                            } else {
                                c.to_ascii_lowercase()
                            }
                        } else {
                            c
                        }
                    })
                    .collect();
            }
            5 => {
                text = text
                    .replacen('k', "\u{212a}", 1)
                    .replacen('s', "\u{17f}", 1);
            }
            6 => text.insert_str(0, "2024-01-02T03:04:05.1234567Z "),
            7 => text.insert_str(0, rng.pick(&["##[error]", "::error file=x::"])),
            _ => {
                let mut bytes = text.into_bytes();
                let at = rng.below(bytes.len() + 1);
                bytes.insert(at, 0xff);
                return bytes;
            }
        }
    }
    text.into_bytes()
}

fn random_log(rng: &mut Rng, hits: &[&str]) -> Vec<u8> {
    let mut log = Vec::new();
    let lines = rng.below(60);
    for _ in 0..lines {
        // runs of quiet lines, so that tails and gaps are exercised
        let line = if rng.below(6) == 0 {
            rng.pick(hits)
        } else {
            rng.pick(QUIET_LINES)
        };
        log.extend(decorate(rng, line));
        if rng.below(60) == 0 {
            // longer than MAX_LINE_BYTES, with text on both sides of the cut
            log.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES - 5));
            let tail = rng.pick(hits);
            log.extend(decorate(rng, tail));
        }
        log.push(b'\n');
    }
    if rng.below(3) == 0 {
        log.pop(); // no final newline
    }
    log
}

fn custom_rules() -> Vec<RuleConfig> {
    let words: Vec<String> = (0..150).map(|i| format!("w0rd{i}x")).collect();
    let mut see_above = rule("see-above", "^Check above$", 3);
    see_above.evidence = Evidence::Previous;
    see_above.applies_to = vec![AppliesTo::Log];
    let mut next = rule("next", "^Failures:$", 4);
    next.evidence = Evidence::Next;
    next.applies_to = vec![AppliesTo::Log];
    vec![
        // no literal at all: regex fallback
        rule("digits", r"^\d{3}$", 5),
        // (?i)s and (?i)k also match the long s and the Kelvin sign
        rule("skipped", r"(?i)skipped hard", 10),
        rule("kaboom", r"(?i)\bkaboom\b", 20),
        // too many literals for Teddy
        rule("words", &format!(r"(?i)\b(?:{})\b", words.join("|")), 1),
        rule("killed", r"^Killed\s*$", 150),
        see_above,
        next,
    ]
}

#[test]
fn the_block_prefilter_never_changes_the_result() {
    let defaults = Classifier::with_defaults();
    let custom = Classifier::new(&custom_rules()).unwrap();
    let mut hits: Vec<String> = RULE_EXAMPLES
        .iter()
        .flat_map(|(_, h, m)| [parse(h).0, parse(m).0])
        .flat_map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    hits.extend(EXTRA_HIT_LINES.iter().map(|s| s.to_string()));
    hits.push("Check above".into());
    let hits: Vec<&str> = hits.iter().map(String::as_str).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut classified = 0;
    let mut with_candidates = 0;
    for round in 0..800 {
        let log = random_log(&mut rng, &hits);
        for c in [&defaults, &custom] {
            let want = c.classify_log_with(&log[..], false).unwrap();
            let got = c.classify_log(&log[..]).unwrap();
            let shown: String = String::from_utf8_lossy(&log).chars().take(3000).collect();
            assert_eq!(got, want, "round {round}: {shown:?}");
            if round % 5 == 0 {
                let dribbled = c
                    .classify_log(Dribble {
                        data: &log,
                        step: 0,
                    })
                    .unwrap();
                assert_eq!(dribbled, want, "round {round} (dribbled)");
            }
            let text = String::from_utf8_lossy(&log);
            assert_eq!(
                c.classify_message(&text),
                c.classify_message_with(&text, false),
                "round {round} (message)"
            );
            classified += usize::from(want.primary.is_some());
            with_candidates += usize::from(
                want.primary
                    .as_ref()
                    .is_some_and(|m| !m.candidates.is_empty()),
            );
        }
    }
    // the inputs exercise matches, not just quiet logs
    assert!(classified > 800, "{classified}");
    assert!(with_candidates > 400, "{with_candidates}");
}

#[test]
fn logs_where_most_lines_are_prefilter_hits_give_the_same_result() {
    // "error" in every line: the prefilter gives up on such blocks for a while
    let c = Classifier::with_defaults();
    let mut rng = Rng(7);
    let mut log = Vec::new();
    for round in 0..3 {
        for _ in 0..20_000 {
            log.extend(decorate(&mut rng, "make error_log; 0 errors, 0 failures"));
            log.push(b'\n');
        }
        for _ in 0..20_000 {
            let line = rng.pick(QUIET_LINES);
            log.extend(decorate(&mut rng, line));
            log.push(b'\n');
        }
        let hit = ["Error: something broke", "Connection refused", "Killed"][round];
        log.extend(decorate(&mut rng, hit));
        log.push(b'\n');
        let want = c.classify_log_with(&log[..], false).unwrap();
        assert_eq!(c.classify_log(&log[..]).unwrap(), want, "round {round}");
        assert!(want.primary.is_some());
    }
}

#[test]
fn an_escape_sequence_inside_a_keyword_does_not_hide_it() {
    let c = Classifier::with_defaults();
    let quiet = "   Compiling crate v1.0.0 (/home/runner/work/x)\n".repeat(3000);
    let cases = [
        ("No space left on \x1b[1mde\x1b[0mvice", "disk-full"),
        ("Kil\x1b[0mled", "killed"),
        (
            "\x1b[31mSegmen\x1b[0mtation fault (core dumped)",
            "segfault",
        ),
        (
            "Connection re\x1b]8;;https://example.com\x07fused",
            "connection-refused",
        ),
        (
            "waiting 10%\rConnec\x1b[Ktion reset by peer",
            "connection-reset",
        ),
        (
            "2024-01-02T03:04:05.1234567Z \x1b[36;1mTraceback (most\x1b[0m recent call last):",
            "python-traceback",
        ),
        ("JavaScript heap out of mem\x1b(Bory", "oom"),
        ("Dis\u{212a} quota exceeded", "disk-full"),
        ("No \u{17f}pace left on device", "disk-full"),
        ("\x1b[0Ksection_start:1:x\r\x1b[0KKilled", "killed"),
    ];
    for (line, class) in cases {
        let log = format!("{quiet}{line}\n{quiet}");
        let m = c.classify_log(log.as_bytes()).unwrap().primary;
        let m = m.unwrap_or_else(|| panic!("{line:?}: no match"));
        assert_eq!((m.class.as_str(), m.line), (class, 3001), "{line:?}");
        assert_eq!(
            c.classify_log_with(log.as_bytes(), false).unwrap().primary,
            Some(m)
        );
    }
}
