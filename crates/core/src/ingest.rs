//! The one path every generic run takes into the store: the JSON body of
//! `POST /api/v1/runs`, `ingest --json FILE`, and the `ingest` flags all become a
//! [`RunRequest`], which is validated, its reports parsed and its failures
//! classified, and turned into a [`NewRun`].
//!
//! A corrupt report does not reject the run: it is skipped with a warning
//! that the caller shows, and the rest of the run is stored.

pub mod validate;

use crate::classify::Classifier;
use crate::deps::Extractor;
use crate::model::{
    ChangeRef, Completeness, EvidenceCandidate, FailureEvidence, Forge, NewRun, RawReport,
    RepositoryRef, RunState, TestOutcome, TestResult, Trigger,
};
use crate::report;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest accepted repository, context, commit or test name.
pub use crate::names::MAX_NAME_LEN;

/// The JSON body of `POST /api/v1/runs` (and of `ingest --json`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub repository: String,
    /// `github`, `gitlab` or `generic` (default).
    #[serde(default)]
    pub forge: Option<Forge>,
    pub context: String,
    pub commit: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    /// Default `other`.
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// Derived from the tests when absent (any failed or errored → failure).
    #[serde(default)]
    pub state: Option<RunState>,
    #[serde(default)]
    pub queued_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub log_url: Option<String>,
    #[serde(default)]
    pub change: Option<ChangeRequest>,
    #[serde(default)]
    pub tests: Vec<TestRequest>,
    /// A TAP stream.
    #[serde(default)]
    pub tap: Option<String>,
    /// A JUnit XML document.
    #[serde(default)]
    pub junit: Option<String>,
    /// Log text to classify (the relevant tail of the job log); package
    /// versions are also read from it.
    #[serde(default)]
    pub log: Option<String>,
    /// Package versions the run used, when the CI knows them (merged with what the log says).
    #[serde(default)]
    pub dependencies: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    pub number: i64,
    #[serde(default)]
    pub merged_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    pub name: String,
    pub outcome: TestOutcome,
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub message: Option<String>,
}

/// A report file given by name (CLI) or inline (API).
#[derive(Debug, Clone)]
pub struct ReportInput {
    pub format: ReportKind,
    pub name: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Tap,
    Junit,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidRun {
    pub field: String,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> InvalidRun {
    InvalidRun {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A run ready to store, and what was skipped on the way.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub run: NewRun,
    pub warnings: Vec<String>,
}

/// Names follow the one rule of [`crate::names`].
fn check_name(field: &str, v: &str) -> Result<(), InvalidRun> {
    crate::names::check(v).map_err(|e| invalid(field, e.to_string()))
}

/// Test names: see [`crate::names::check_test`].
fn check_test_name(field: &str, v: &str) -> Result<(), InvalidRun> {
    crate::names::check_test(v).map_err(|e| invalid(field, e.to_string()))
}

fn check_url(field: &str, v: &Option<String>) -> Result<(), InvalidRun> {
    match v {
        Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
            Err(invalid(field, "must be an http(s) URL"))
        }
        Some(u) if u.len() > 4096 => Err(invalid(field, "longer than 4096 bytes")),
        _ => Ok(()),
    }
}

impl RunRequest {
    /// Validate, parse reports, classify, and build the run to store.
    pub fn prepare(
        self,
        source: &str,
        extra_reports: Vec<ReportInput>,
        classifier: &Classifier,
        extractor: &Extractor,
    ) -> Result<Prepared, InvalidRun> {
        check_name("repository", &self.repository)?;
        if self.repository.starts_with('/')
            || self.repository.ends_with('/')
            || self
                .repository
                .trim()
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(invalid(
                "repository",
                "expected a path like owner/name (no empty, . or .. segments)",
            ));
        }
        check_name("context", &self.context)?;
        check_name("commit", &self.commit)?;
        if let Some(id) = &self.external_id {
            check_name("external_id", id)?;
        }
        check_url("url", &self.url)?;
        check_url("log_url", &self.log_url)?;
        if let Some(c) = &self.change
            && c.number <= 0
        {
            return Err(invalid("change.number", "must be a positive number"));
        }

        let mut warnings = Vec::new();
        let mut tests: Vec<TestResult> = Vec::new();
        for (i, t) in self.tests.iter().enumerate() {
            check_test_name(&format!("tests[{i}].name"), &t.name)?;
            if let Some(d) = t.duration_seconds
                && !(d.is_finite() && d >= 0.0)
            {
                return Err(invalid(
                    &format!("tests[{i}].duration_seconds"),
                    "must be a non-negative number",
                ));
            }
            tests.push(TestResult {
                name: t.name.clone(),
                outcome: t.outcome,
                duration_seconds: t.duration_seconds,
                retries: t.retries,
                retry_reasons: Vec::new(),
                message: t.message.clone(),
            });
        }

        let mut inputs = Vec::new();
        if let Some(tap) = self.tap {
            inputs.push(ReportInput {
                format: ReportKind::Tap,
                name: "tap".into(),
                content: tap,
            });
        }
        if let Some(junit) = self.junit {
            inputs.push(ReportInput {
                format: ReportKind::Junit,
                name: "junit".into(),
                content: junit,
            });
        }
        inputs.extend(extra_reports);
        let mut reports = Vec::new();
        for input in inputs {
            let parsed = match input.format {
                ReportKind::Tap => report::tap::parse_tap(&input.name, &input.content),
                ReportKind::Junit => report::junit::parse_junit_str(&input.name, &input.content),
            };
            match parsed {
                Ok(mut r) => {
                    warnings.extend(r.warnings.iter().map(|w| format!("{}: {w}", input.name)));
                    // Every test the report counts is stored (docs/reports.md).
                    report::distinct_names(&mut r.tests);
                    tests.append(&mut r.tests);
                    reports.push(RawReport {
                        format: match input.format {
                            ReportKind::Tap => "tap".into(),
                            ReportKind::Junit => "junit".into(),
                        },
                        name: input.name,
                        content: input.content,
                    });
                }
                Err(e) => warnings.push(format!("report skipped: {e}")),
            }
        }
        // A test named twice (in two reports, or a report and `tests`): the last one wins.
        let mut seen = std::collections::HashMap::new();
        for (i, t) in tests.iter().enumerate() {
            seen.insert(t.name.clone(), i);
        }
        if seen.len() != tests.len() {
            warnings.push(format!(
                "{} duplicate test names: the last result of each was kept",
                tests.len() - seen.len()
            ));
            let keep: std::collections::HashSet<usize> = seen.into_values().collect();
            tests = tests
                .into_iter()
                .enumerate()
                .filter_map(|(i, t)| keep.contains(&i).then_some(t))
                .collect();
        }

        let state = match self.state {
            Some(s) => s,
            None if tests.is_empty() => {
                return Err(invalid(
                    "state",
                    "is required when the run has no tests to derive it from",
                ));
            }
            None if tests
                .iter()
                .any(|t| matches!(t.outcome, TestOutcome::Failed | TestOutcome::Errored)) =>
            {
                RunState::Failure
            }
            None => RunState::Success,
        };

        let failures = classify_run(classifier, self.log.as_deref(), &tests);
        let mut dependencies = self
            .log
            .as_deref()
            .map(|l| extractor.extract(l))
            .unwrap_or_default();
        for (name, version) in self.dependencies {
            check_name("dependencies", &name)?;
            dependencies.insert(name, version);
        }

        Ok(Prepared {
            run: NewRun {
                repository: RepositoryRef {
                    forge: self.forge.unwrap_or(Forge::Generic),
                    path: self.repository.trim().to_string(),
                },
                context: self.context,
                commit: self.commit,
                external_id: self.external_id,
                attempt_group: None,
                attempt: self.attempt,
                trigger: self.trigger.unwrap_or(Trigger::Other),
                trigger_pending: false,
                state,
                queued_at: self.queued_at,
                started_at: self.started_at,
                finished_at: self.finished_at,
                url: self.url,
                log_url: self.log_url,
                change: self.change.map(|c| ChangeRef {
                    number: c.number,
                    merged_at: c.merged_at,
                }),
                tests,
                reports,
                failures,
                dependencies,
                source: source.to_string(),
                completeness: Completeness::Whole,
            },
            warnings,
        })
    }
}

/// The class of a failed test that carries no message, in a run whose log
/// gave no evidence either (issue 14 §6).
pub const TEST_FAILED_CLASS: &str = "test-failed";

/// Failures of a run: the decisive match in its log, and one per failed test
/// (classified by its message).
pub fn classify_run(
    classifier: &Classifier,
    log: Option<&str>,
    tests: &[TestResult],
) -> Vec<FailureEvidence> {
    let primary = log
        .and_then(|log| classifier.classify_text(log).ok())
        .and_then(|c| c.primary);
    failures_from(classifier, primary, tests)
}

/// The same, for a caller that already classified the log (and wants its
/// section timings too): the log's decisive match and the failed tests.
pub fn failures_from(
    classifier: &Classifier,
    primary: Option<crate::classify::Match>,
    tests: &[TestResult],
) -> Vec<FailureEvidence> {
    let mut failures = Vec::new();
    // A failed test without a message is attributed to its test, with the
    // class of the run's log evidence when there is one.
    let log_class = primary
        .as_ref()
        .map(|m| (m.class.clone(), m.category.as_str().to_string()));
    if let Some(m) = primary {
        failures.push(FailureEvidence {
            class: m.class,
            category: m.category.as_str().to_string(),
            line: Some(m.line),
            evidence: m.evidence,
            context: m.context,
            context_before: Some(m.context_before as u32),
            fingerprint: Some(m.fingerprint),
            test_name: None,
            candidates: m
                .candidates
                .into_iter()
                .map(|c| EvidenceCandidate {
                    line: c.line,
                    text: c.text,
                    class: c.class,
                })
                .collect(),
        });
    }
    for t in tests
        .iter()
        .filter(|t| matches!(t.outcome, TestOutcome::Failed | TestOutcome::Errored))
    {
        let message = t.message.as_deref().unwrap_or_default();
        if message.trim().is_empty() {
            let (class, category) = log_class
                .clone()
                .unwrap_or_else(|| (TEST_FAILED_CLASS.into(), "test".into()));
            failures.push(FailureEvidence {
                class,
                category,
                line: None,
                evidence: format!("{} (no failure message)", t.name),
                context: Vec::new(),
                context_before: None,
                // One fingerprint per test: its failures group on the test.
                fingerprint: Some(crate::classify::fingerprint(&format!(
                    "{TEST_FAILED_CLASS} {}",
                    t.name
                ))),
                test_name: Some(t.name.clone()),
                candidates: Vec::new(),
            });
            continue;
        }
        let m = classifier.classify_message(message);
        failures.push(match m {
            Some(m) => FailureEvidence {
                class: m.class,
                category: m.category.as_str().to_string(),
                line: None,
                evidence: m.evidence,
                context: Vec::new(),
                context_before: None,
                fingerprint: Some(m.fingerprint),
                test_name: Some(t.name.clone()),
                candidates: Vec::new(),
            },
            None => {
                let first = message
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("test failed");
                FailureEvidence {
                    class: "unknown".into(),
                    category: "unknown".into(),
                    line: None,
                    evidence: first.chars().take(1024).collect(),
                    context: Vec::new(),
                    context_before: None,
                    fingerprint: Some(crate::classify::fingerprint(&format!("{} {first}", t.name))),
                    test_name: Some(t.name.clone()),
                    candidates: Vec::new(),
                }
            }
        });
    }
    failures
}

#[cfg(test)]
mod failure_attribution_tests {
    use super::*;
    use crate::classify::Classifier;

    fn failed(name: &str, message: Option<&str>) -> TestResult {
        TestResult {
            name: name.into(),
            outcome: TestOutcome::Failed,
            duration_seconds: None,
            retries: 0,
            retry_reasons: vec![],
            message: message.map(str::to_string),
        }
    }

    #[test]
    fn a_failure_without_a_message_is_attributed_to_its_test_not_to_a_new_unknown() {
        let c = Classifier::new(&Classifier::default_rules()).unwrap();
        let tests = [
            failed("test_login", None),
            failed("test_cart", Some("  \n")),
        ];
        let first = classify_run(&c, None, &tests);
        let again = classify_run(&c, None, &tests);
        assert_eq!(first.len(), 2);
        for (f, name) in first.iter().zip(["test_login", "test_cart"]) {
            assert_eq!(f.class, TEST_FAILED_CLASS);
            assert_eq!(f.test_name.as_deref(), Some(name));
        }
        // Each test keeps one fingerprint across runs; two tests, two fingerprints.
        assert_eq!(first[0].fingerprint, again[0].fingerprint);
        assert_ne!(first[0].fingerprint, first[1].fingerprint);

        // With evidence in the run's log, the failure takes the log's class.
        let log = "step 3/4: running tests\nKilled\nmake: *** [Makefile:12: test] Error 137\n";
        let with_log = classify_run(&c, Some(log), &tests[..1]);
        assert_eq!(with_log.len(), 2, "{with_log:?}");
        assert!(with_log[0].test_name.is_none());
        assert_ne!(with_log[0].class, "unknown", "{with_log:?}");
        assert_eq!(with_log[1].class, with_log[0].class);
        assert_eq!(with_log[1].category, with_log[0].category);
        assert_eq!(with_log[1].test_name.as_deref(), Some("test_login"));
    }
}
