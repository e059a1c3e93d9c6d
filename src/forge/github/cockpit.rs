//! The Cockpit status story (docs/design.md §2): per context on a commit, a pending
//! "Not yet tested" opens an attempt, a pending "... in progress" starts it,
//! success/failure/error ends it, and each new "Not yet tested" after a start
//! is a retry. The phrases are configurable per repository.
//!
//! Statuses that match no phrase tell a plainer story: a pending status means
//! the context is running, a final one finishes it.
//!
//! [`advance`] is one step, used by webhooks (from the latest stored attempt)
//! and by polling (folding a commit's whole status list), so both agree.

use super::{StatusPhrases, new_run, repository, wire};
use crate::model::{NewRun, RunState};
use crate::store::github::RunBrief;
use chrono::{DateTime, Utc};

/// What one commit status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusStep {
    /// Pending, "Not yet tested": a new attempt is queued.
    Queued,
    /// Pending, "Testing in progress" (or any other pending): the attempt runs.
    Started,
    /// success, failure or error: the attempt ends.
    Finished(RunState),
}

/// Read a status's state and description; None for a state GitHub does not define.
pub fn classify(
    state: &str,
    description: Option<&str>,
    phrases: &StatusPhrases,
) -> Option<StatusStep> {
    let has = |list: &[String]| {
        let d = description.unwrap_or("").to_lowercase();
        list.iter().any(|p| d.contains(&p.to_lowercase()))
    };
    match state {
        "pending" if has(&phrases.queued) => Some(StatusStep::Queued),
        "pending" => Some(StatusStep::Started),
        "success" => Some(StatusStep::Finished(RunState::Success)),
        "failure" => Some(StatusStep::Finished(RunState::Failure)),
        "error" => Some(StatusStep::Finished(RunState::Error)),
        _ => None,
    }
}

/// One attempt as the story knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub attempt: u32,
    pub state: RunState,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&RunBrief> for Attempt {
    fn from(b: &RunBrief) -> Attempt {
        Attempt {
            attempt: b.attempt,
            state: b.state,
            queued_at: b.queued_at,
            started_at: b.started_at,
            finished_at: b.finished_at,
        }
    }
}

impl Attempt {
    /// Copy the attempt into a run.
    pub fn fill(&self, run: &mut NewRun) {
        run.attempt = self.attempt;
        run.state = self.state;
        run.queued_at = self.queued_at;
        run.started_at = self.started_at;
        run.finished_at = self.finished_at;
    }

    fn open(&self) -> bool {
        !self.state.is_terminal()
    }
}

/// The attempt a status creates or changes, given the latest attempt of its
/// context; None when it changes nothing.
pub fn advance(latest: Option<&Attempt>, step: StatusStep, at: DateTime<Utc>) -> Option<Attempt> {
    let next = |l: Option<&Attempt>| l.map(|l| l.attempt + 1).unwrap_or(0);
    match step {
        StatusStep::Queued => match latest {
            // Queued twice before it started: still the same attempt.
            Some(l) if l.open() && l.started_at.is_none() => None,
            l => Some(Attempt {
                attempt: next(l),
                state: RunState::Pending,
                queued_at: Some(at),
                started_at: None,
                finished_at: None,
            }),
        },
        StatusStep::Started => match latest {
            Some(l) if l.open() && l.started_at.is_some() => None,
            Some(l) if l.open() => Some(Attempt {
                state: RunState::Running,
                started_at: Some(at),
                ..l.clone()
            }),
            l => Some(Attempt {
                attempt: next(l),
                state: RunState::Running,
                queued_at: None,
                started_at: Some(at),
                finished_at: None,
            }),
        },
        StatusStep::Finished(state) => match latest {
            Some(l) if l.open() => Some(Attempt {
                state,
                finished_at: Some(at),
                ..l.clone()
            }),
            Some(l) if l.state == state && l.finished_at == Some(at) => None,
            l => Some(Attempt {
                attempt: next(l),
                state,
                queued_at: None,
                started_at: None,
                finished_at: Some(at),
            }),
        },
    }
}

/// A commit's statuses (any order) as runs, one per attempt per context.
pub(crate) fn story(
    repo: &str,
    commit: &str,
    mut statuses: Vec<wire::Status>,
    phrases: &StatusPhrases,
) -> Vec<NewRun> {
    statuses.sort_by_key(|s| (s.created_at, s.id));
    // context → its attempts with their log URLs, in order of appearance
    type Attempts = Vec<(Attempt, Option<String>)>;
    let mut contexts: Vec<(String, Attempts)> = Vec::new();
    for s in statuses {
        let Some(step) = classify(&s.state, s.description.as_deref(), phrases) else {
            continue;
        };
        if crate::names::check(&s.context).is_err() {
            continue;
        }
        let i = match contexts.iter().position(|(c, _)| *c == s.context) {
            Some(i) => i,
            None => {
                contexts.push((s.context.clone(), Vec::new()));
                contexts.len() - 1
            }
        };
        let attempts = &mut contexts[i].1;
        let Some(a) = advance(attempts.last().map(|(a, _)| a), step, s.created_at) else {
            continue;
        };
        match attempts.last_mut() {
            Some((last, url)) if last.attempt == a.attempt => {
                *last = a;
                if s.target_url.is_some() {
                    *url = s.target_url;
                }
            }
            _ => attempts.push((a, s.target_url)),
        }
    }
    let mut runs = Vec::new();
    for (context, attempts) in contexts {
        for (a, url) in attempts {
            let mut run = new_run(repository(repo), context.clone(), commit.to_string());
            a.fill(&mut run);
            run.url = url;
            runs.push(run);
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 10, m, 0).unwrap()
    }

    fn status(state: &str, desc: &str, m: u32) -> wire::Status {
        wire::Status {
            id: Some(m as u64),
            state: state.into(),
            context: "fedora-42".into(),
            description: Some(desc.into()),
            target_url: None,
            created_at: t(m),
        }
    }

    #[test]
    fn the_cockpit_story_gives_attempts_with_wait_and_run_times() {
        let statuses = vec![
            status("pending", "Not yet tested", 0),
            status("pending", "Testing in progress [host]", 3),
            status("failure", "Failed", 20),
            status("pending", "Not yet tested", 21),
            status("pending", "Testing in progress", 25),
            status("success", "Tests passed", 40),
        ];
        let runs = story("o/r", "abc", statuses, &StatusPhrases::default());
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (
                runs[0].attempt,
                runs[0].state,
                runs[0].queued_at,
                runs[0].started_at,
                runs[0].finished_at
            ),
            (0, RunState::Failure, Some(t(0)), Some(t(3)), Some(t(20)))
        );
        assert_eq!(
            (
                runs[1].attempt,
                runs[1].state,
                runs[1].queued_at,
                runs[1].started_at,
                runs[1].finished_at
            ),
            (1, RunState::Success, Some(t(21)), Some(t(25)), Some(t(40)))
        );
    }

    #[test]
    fn phrases_are_configurable_and_plain_statuses_tell_a_plain_story() {
        let phrases = StatusPhrases {
            queued: vec!["waiting for a runner".into()],
            started: vec!["running".into()],
        };
        assert_eq!(
            classify("pending", Some("Not yet tested"), &phrases),
            Some(StatusStep::Started)
        );
        assert_eq!(
            classify("pending", Some("Waiting for a runner"), &phrases),
            Some(StatusStep::Queued)
        );
        assert_eq!(classify("weird", None, &phrases), None);
        let runs = story(
            "o/r",
            "abc",
            vec![
                status("pending", "Build started", 1),
                status("success", "ok", 5),
            ],
            &StatusPhrases::default(),
        );
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].queued_at, runs[0].started_at, runs[0].finished_at),
            (None, Some(t(1)), Some(t(5)))
        );
        // A repeated final status is not a retry.
        let a = advance(None, StatusStep::Finished(RunState::Success), t(5)).unwrap();
        assert_eq!(
            advance(Some(&a), StatusStep::Finished(RunState::Success), t(5)),
            None
        );
        // A second "Not yet tested" before the start keeps the attempt.
        let q = advance(None, StatusStep::Queued, t(1)).unwrap();
        assert_eq!(advance(Some(&q), StatusStep::Queued, t(2)), None);
    }
}
