//! Pure domain types: the vocabulary of docs/design.md §2.
//!
//! Nothing in here does I/O. Forges, report parsers and the HTTP API convert
//! their wire formats into these types at their boundary; the store persists
//! them; the SLO math reads them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a repository lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    Github,
    Gitlab,
    Generic,
}

/// The state of one run (one attempt of one context on one commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Pending,
    Running,
    Success,
    Failure,
    /// Infrastructure error (the CI could not run the job).
    Error,
    Cancelled,
    TimedOut,
    Skipped,
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    PullRequest,
    Push,
    /// Scheduled (nightly) runs.
    Schedule,
    Manual,
    Other,
}

/// A test's outcome in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    Passed,
    Failed,
    Errored,
    Skipped,
}

/// How a merged change got (or did not get) to green; the label values of
/// `ci_merged_changes_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeOutcome {
    GreenFirstAttempt,
    GreenAfterOneRetry,
    GreenAfterMoreRetries,
    MergedRed,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stable text form (label values, database, JSON).
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(UnknownValue {
                        kind: stringify!($ty),
                        value: s.to_string(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

string_enum!(Forge { Github => "github", Gitlab => "gitlab", Generic => "generic" });
string_enum!(RunState {
    Pending => "pending",
    Running => "running",
    Success => "success",
    Failure => "failure",
    Error => "error",
    Cancelled => "cancelled",
    TimedOut => "timed_out",
    Skipped => "skipped",
});
string_enum!(Trigger {
    PullRequest => "pull_request",
    Push => "push",
    Schedule => "schedule",
    Manual => "manual",
    Other => "other",
});
string_enum!(TestOutcome {
    Passed => "passed",
    Failed => "failed",
    Errored => "errored",
    Skipped => "skipped",
});
string_enum!(MergeOutcome {
    GreenFirstAttempt => "green_first_attempt",
    GreenAfterOneRetry => "green_after_one_retry",
    GreenAfterMoreRetries => "green_after_more_retries",
    MergedRed => "merged_red",
});

/// A text value that is not one of an enum's allowed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}, expected one of: {}", expected.join(", "))]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl RunState {
    /// A terminal state ends the run: it will not change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Pending | RunState::Running)
    }

    /// A state that counts as "green" for a required context.
    pub fn is_green(self) -> bool {
        matches!(self, RunState::Success | RunState::Skipped)
    }

    /// A finished run that reported a result of its own (for `runs_completed`):
    /// success or failure. Error, cancelled and timed out runs were aborted.
    pub fn reported_result(self) -> bool {
        matches!(self, RunState::Success | RunState::Failure)
    }
}

/// Repository identity: forge + full path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RepositoryRef {
    pub forge: Forge,
    pub path: String,
}

/// A PR or MR, as far as a run knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRef {
    pub number: i64,
    pub merged_at: Option<DateTime<Utc>>,
}

/// One test's result inside a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_seconds: Option<f64>,
    /// Retries inside the run (0 when it ran once).
    pub retries: u32,
    pub retry_reasons: Vec<String>,
    pub message: Option<String>,
}

/// A run as it arrives from any source, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub repository: RepositoryRef,
    pub context: String,
    pub commit: String,
    /// The source's own id for this run; runs are deduplicated by it.
    pub external_id: Option<String>,
    /// The sequence of attempts this run belongs to, when a context can run
    /// more than once on a commit independently: a GitHub workflow run (its
    /// re-runs are its attempts; a push run and a pull_request run of the same
    /// commit are two groups). None: one sequence per context and commit.
    pub attempt_group: Option<String>,
    pub attempt: u32,
    pub trigger: Trigger,
    /// The source does not know the trigger yet (a GitHub job delivered
    /// before its workflow run): the run is stored, but counted only once the
    /// trigger is decided (see `Store::decide_trigger`).
    pub trigger_pending: bool,
    pub state: RunState,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub url: Option<String>,
    pub log_url: Option<String>,
    pub change: Option<ChangeRef>,
    pub tests: Vec<TestResult>,
    /// Raw reports kept with the run: (format, name, content).
    pub reports: Vec<RawReport>,
    /// Failures found in the run's log and test messages.
    pub failures: Vec<FailureEvidence>,
    /// Package versions the run used (package → version); empty when unknown.
    pub dependencies: std::collections::BTreeMap<String, String>,
    /// Where the run came from: "api", "cli", "demo", "github", ...
    pub source: String,
    /// Whether this report carries the whole run or one part of its story
    /// (see [`Completeness`]); it decides what a report of a finished run may
    /// still change.
    pub completeness: Completeness,
}

/// How much of a run one report carries.
///
/// A finished run is immutable. A *whole* report (the ingest API and the CLI:
/// the client sends everything it knows at once) of a finished run must repeat
/// it exactly; anything else is a conflict. A forge reports a run in *parts*
/// (a webhook per state change, a poll, a log downloaded after the run
/// finished): a part may add what the stored run does not know yet (a time, a
/// link, its tests, failure evidence), never change what it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Completeness {
    #[default]
    Partial,
    Whole,
}

/// An empty run: no repository, context or commit yet, state pending,
/// trigger other, nothing attached. Sources fill in what they know and take
/// the rest from here (`NewRun { context, state, ..NewRun::default() }`).
impl Default for NewRun {
    fn default() -> Self {
        NewRun {
            repository: RepositoryRef {
                forge: Forge::Generic,
                path: String::new(),
            },
            context: String::new(),
            commit: String::new(),
            external_id: None,
            attempt_group: None,
            attempt: 0,
            trigger: Trigger::Other,
            trigger_pending: false,
            state: RunState::Pending,
            queued_at: None,
            started_at: None,
            finished_at: None,
            url: None,
            log_url: None,
            change: None,
            tests: Vec::new(),
            reports: Vec::new(),
            failures: Vec::new(),
            dependencies: Default::default(),
            source: String::new(),
            completeness: Completeness::Partial,
        }
    }
}

/// A report file stored verbatim with its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReport {
    pub format: String,
    pub name: String,
    pub content: String,
}

/// A failure found in a run's log or test messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureEvidence {
    pub class: String,
    pub category: String,
    pub line: Option<u64>,
    pub evidence: String,
    pub context: Vec<String>,
    /// How many of `context` come before the evidence line (absent for
    /// failures stored before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_before: Option<u32>,
    pub fingerprint: Option<String>,
    pub test_name: Option<String>,
    /// Up to 3 further lines of the log that could explain the failure, best
    /// first (empty for test failures and for failures stored before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<EvidenceCandidate>,
}

/// A further candidate for a failure's evidence line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceCandidate {
    /// 1-based line number in the log.
    pub line: u64,
    pub text: String,
    /// The failure class the line would give.
    pub class: String,
}

/// Durations derived from a run's timestamps, after plausibility checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Durations {
    pub queue_seconds: Option<f64>,
    pub run_seconds: Option<f64>,
}

/// Why a duration was not used (the `reason` label of the data-quality counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataQualityIssue {
    NegativeQueueTime,
    AbsurdQueueTime,
    NegativeRunTime,
    AbsurdRunTime,
}

impl DataQualityIssue {
    pub fn as_str(self) -> &'static str {
        match self {
            DataQualityIssue::NegativeQueueTime => "negative_queue_time",
            DataQualityIssue::AbsurdQueueTime => "absurd_queue_time",
            DataQualityIssue::NegativeRunTime => "negative_run_time",
            DataQualityIssue::AbsurdRunTime => "absurd_run_time",
        }
    }
}

/// Upper limits beyond which a duration is treated as a data error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationLimits {
    pub max_queue_seconds: f64,
    pub max_run_seconds: f64,
}

impl Default for DurationLimits {
    fn default() -> Self {
        DurationLimits {
            max_queue_seconds: 7.0 * 86400.0,
            max_run_seconds: 3.0 * 86400.0,
        }
    }
}

/// How far a run's start may precede its queue time before that is a data
/// error: the two are often stamped by different machines. Within it the queue
/// time is 0.
pub const QUEUE_CLOCK_SKEW_SECONDS: i64 = 5;

/// Queue time = started − queued, run time = finished − started; a negative
/// (beyond [`QUEUE_CLOCK_SKEW_SECONDS`] for the queue time) or absurdly long
/// value is dropped and reported instead of exported.
pub fn durations(
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    limits: DurationLimits,
) -> (Durations, Vec<DataQualityIssue>) {
    let mut issues = Vec::new();
    let mut check = |from: Option<DateTime<Utc>>,
                     to: Option<DateTime<Utc>>,
                     max: f64,
                     skew: f64,
                     negative: DataQualityIssue,
                     absurd: DataQualityIssue| {
        let (from, to) = (from?, to?);
        let seconds = (to - from).num_milliseconds() as f64 / 1000.0;
        if seconds < 0.0 && seconds >= -skew {
            Some(0.0)
        } else if seconds < 0.0 {
            issues.push(negative);
            None
        } else if seconds > max {
            issues.push(absurd);
            None
        } else {
            Some(seconds)
        }
    };
    let queue_seconds = check(
        queued_at,
        started_at,
        limits.max_queue_seconds,
        QUEUE_CLOCK_SKEW_SECONDS as f64,
        DataQualityIssue::NegativeQueueTime,
        DataQualityIssue::AbsurdQueueTime,
    );
    let run_seconds = check(
        started_at,
        finished_at,
        limits.max_run_seconds,
        0.0,
        DataQualityIssue::NegativeRunTime,
        DataQualityIssue::AbsurdRunTime,
    );
    (
        Durations {
            queue_seconds,
            run_seconds,
        },
        issues,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(2026, 11, 1, h, m, s).unwrap())
    }

    #[test]
    fn durations_are_derived_or_rejected_with_a_reason() {
        let limits = DurationLimits::default();
        let cases = [
            (
                "ordinary run",
                t(10, 0, 0),
                t(10, 1, 0),
                t(10, 4, 18),
                Some(60.0),
                Some(198.0),
                vec![],
            ),
            ("never started", t(10, 0, 0), None, None, None, None, vec![]),
            (
                "start before queue is negative",
                t(10, 5, 0),
                t(10, 0, 0),
                t(10, 6, 0),
                None,
                Some(360.0),
                vec![DataQualityIssue::NegativeQueueTime],
            ),
            (
                "a start 2 s before the queue time is clock skew: no wait",
                t(10, 0, 2),
                t(10, 0, 0),
                t(10, 1, 0),
                Some(0.0),
                Some(60.0),
                vec![],
            ),
            (
                "finish before start is negative",
                t(10, 0, 0),
                t(10, 1, 0),
                t(10, 0, 30),
                Some(60.0),
                None,
                vec![DataQualityIssue::NegativeRunTime],
            ),
        ];
        for (name, q, s, f, want_q, want_r, want_issues) in cases {
            let (d, issues) = durations(q, s, f, limits);
            assert_eq!(d.queue_seconds, want_q, "{name}");
            assert_eq!(d.run_seconds, want_r, "{name}");
            assert_eq!(issues, want_issues, "{name}");
        }
    }

    #[test]
    fn a_queue_time_of_days_is_absurd() {
        let queued = Some(Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap());
        let (d, issues) = durations(queued, t(10, 0, 0), t(11, 0, 0), DurationLimits::default());
        assert_eq!(d.queue_seconds, None);
        assert_eq!(d.run_seconds, Some(3600.0));
        assert_eq!(issues, vec![DataQualityIssue::AbsurdQueueTime]);
    }

    #[test]
    fn enum_text_round_trips_and_unknown_values_list_the_choices() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), *s);
        }
        let err = "sucess".parse::<RunState>().unwrap_err();
        assert!(
            err.to_string()
                .contains("expected one of: pending, running, success")
        );
    }
}
