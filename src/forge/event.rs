//! The forge-neutral event and its apply step, one for both forges: every
//! way in (a webhook, a poll, a backfill) of GitHub and GitLab produces
//! [`Event`]s in model types, and [`apply`] writes them through the store.
//! A webhook and a poll of the same run therefore converge on one stored run.

use super::github::{cockpit, new_run, trigger_of};
use crate::model::{NewRun, RepositoryRef, Trigger};
use crate::store::github::{RunBrief, WorkflowRunInfo};
use crate::store::{IngestStatus, Policy, Storage, StoreError};
use chrono::{DateTime, Utc};

/// One fact from a forge, ready to be applied to the store.
// Most events are runs: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A run observed.
    Run(Observed),
    /// A merge observed.
    Merge {
        repository: RepositoryRef,
        number: i64,
        head_sha: Option<String>,
        merged_at: DateTime<Utc>,
    },
    /// One GitHub commit status, applied as a step of the Cockpit story.
    Status {
        repository: RepositoryRef,
        commit: String,
        context: String,
        step: cockpit::StatusStep,
        at: DateTime<Utc>,
        url: Option<String>,
    },
    /// A GitHub Actions workflow run attempt: the trigger and request time
    /// of its jobs ([`Attempt::Actions`]).
    WorkflowRun {
        repository: RepositoryRef,
        run_id: u64,
        run_attempt: u32,
        info: WorkflowRunInfo,
    },
}

/// A run as a forge reported it, and how it meets what is stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observed {
    pub run: NewRun,
    pub attempt: Attempt,
    /// The external id of the run whose trigger this one takes when it
    /// knows none (a GitLab job's pipeline).
    pub parent: Option<String>,
    /// The report may be late, replayed or carry only part of the run
    /// (GitHub's events): older than the stored run it changes nothing, it
    /// never reopens a finished run, and the times and links it lacks are
    /// kept. Otherwise (GitLab) it is the whole run as the forge has it now
    /// (a retried job reopens its pipeline).
    pub partial: bool,
}

/// How a run's attempt number is decided when it is stored. A run stored
/// before under the same external id keeps its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The forge's number, `run.attempt`. Without an external id the stored
    /// run is that attempt of the context on the commit (the Cockpit story).
    Known,
    /// One more than the latest stored for the context on the commit (a
    /// GitHub check run; a GitLab job hook without `retries_count`).
    Next,
    /// An Actions job of workflow run `run_id`'s attempt `run_attempt`
    /// (`run.attempt` is `run_attempt − 1`): its trigger and the request time
    /// of its attempt come from the workflow run.
    Actions { run_id: u64, run_attempt: u32 },
}

impl Event {
    /// A run with its forge's number, no parent.
    pub(crate) fn run(run: NewRun, partial: bool) -> Event {
        Event::Run(Observed {
            run,
            attempt: Attempt::Known,
            parent: None,
            partial,
        })
    }

    /// The repository the event is about.
    pub(crate) fn repository(&self) -> &RepositoryRef {
        match self {
            Event::Run(o) => &o.run.repository,
            Event::Merge { repository, .. }
            | Event::Status { repository, .. }
            | Event::WorkflowRun { repository, .. } => repository,
        }
    }
}

/// What applying events did.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Applied {
    /// Stored runs in order: (id, what the ingest did, the run as stored).
    pub runs: Vec<(i64, IngestStatus, NewRun)>,
    /// The numbers of the merges recorded.
    pub merges: Vec<i64>,
    /// Stored jobs whose trigger a workflow run decided (and that were counted).
    pub triggers_decided: usize,
    /// Events older than what is stored for their run (or context), ignored.
    pub stale: usize,
}

impl Applied {
    pub(crate) fn changed(&self) -> bool {
        !self.merges.is_empty()
            || self.triggers_decided > 0
            || self
                .runs
                .iter()
                .any(|(_, s, _)| *s != IngestStatus::Unchanged)
    }
}

/// Apply events in order, in the caller's write (`StoreHandle::write`): when
/// that write is acknowledged all of them are committed, when it fails none is.
pub(crate) fn apply(
    store: &mut dyn Storage,
    policy: &Policy,
    events: Vec<Event>,
    now: DateTime<Utc>,
) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    for event in events {
        match event {
            Event::Run(observed) => apply_run(store, policy, observed, now, &mut applied)?,
            Event::Merge {
                repository,
                number,
                head_sha,
                merged_at,
            } => {
                store.record_merge(&repository, number, head_sha.as_deref(), merged_at, now)?;
                applied.merges.push(number);
            }
            Event::WorkflowRun {
                repository,
                run_id,
                run_attempt,
                info,
            } => {
                store.record_workflow_run(&repository.path, run_id, run_attempt, &info)?;
                // Jobs delivered before their workflow run waited for its trigger.
                if let Some(event) = &info.event {
                    let decided = store.decide_trigger(
                        &repository,
                        &run_id.to_string(),
                        trigger_of(event),
                        policy,
                        now,
                    )?;
                    applied.triggers_decided += decided.len();
                }
            }
            Event::Status {
                repository,
                commit,
                context,
                step,
                at,
                url,
            } => apply_status(
                store,
                policy,
                (repository, commit, context),
                (step, at, url),
                now,
                &mut applied,
            )?,
        }
    }
    Ok(applied)
}

fn apply_run(
    store: &mut dyn Storage,
    policy: &Policy,
    observed: Observed,
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    let Observed {
        mut run,
        attempt,
        parent,
        partial,
    } = observed;
    let existing = match (&run.external_id, attempt) {
        (Some(e), _) => store.run_by_external_id(&run.repository, e)?,
        (None, Attempt::Next) => None,
        (None, _) => store.run_attempt(
            &run.repository,
            &run.context,
            &run.commit,
            Some(run.attempt),
        )?,
    };
    run.attempt = match (&existing, attempt) {
        (Some(e), _) => e.attempt,
        (None, Attempt::Next) => store
            .latest_attempt(&run.repository, &run.context, &run.commit)?
            .map(|(a, _)| a + 1)
            .unwrap_or(0),
        (None, _) => run.attempt,
    };
    if let Attempt::Actions {
        run_id,
        run_attempt,
    } = attempt
    {
        // The trigger is the workflow run's event. It is decided once: by
        // the poller (which knows the run), by a stored workflow run, else
        // the job waits for its workflow run (Storage::decide_trigger).
        match &existing {
            Some(e) if !e.trigger_pending => run.trigger = e.trigger,
            _ if run.trigger != Trigger::Other => {}
            _ => match store.workflow_run_event(&run.repository.path, run_id)? {
                Some(event) => run.trigger = trigger_of(&event),
                None => run.trigger_pending = true,
            },
        }
        if run.attempt > 0 {
            // A re-run job can carry the created_at of the first attempt,
            // days before this attempt was requested: its queue starts when
            // the attempt was requested. Unknown: not measured.
            let info = store.workflow_run(&run.repository.path, run_id, run_attempt)?;
            run.queued_at = match info.and_then(|i| i.run_started_at) {
                Some(requested) => run.queued_at.map(|c| c.max(requested)),
                None => None,
            };
        }
    }
    if run.trigger == Trigger::Other {
        if let Some(e) = &existing {
            run.trigger = e.trigger;
        } else if let Some(parent) = &parent
            && let Some(p) = store.run_by_external_id(&run.repository, parent)?
        {
            run.trigger = p.trigger;
        }
    }
    match existing {
        Some(e) if partial => ingest_partial(store, policy, run, e, now, applied),
        _ => ingest(store, policy, run, now, applied),
    }
}

fn ingest(
    store: &mut dyn Storage,
    policy: &Policy,
    run: NewRun,
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    let ingested = store.ingest_run(&run, policy, now)?;
    applied.runs.push((ingested.id, ingested.status, run));
    Ok(())
}

/// Ingest a run that may carry only part of what is known about it: a late,
/// non-final event never reopens a finished run, and times and links the
/// event lacks are kept from the stored run.
fn ingest_partial(
    store: &mut dyn Storage,
    policy: &Policy,
    mut run: NewRun,
    e: RunBrief,
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    // An event older than what is stored for this run (a replayed or late
    // delivery) changes nothing.
    let newest = [run.queued_at, run.started_at, run.finished_at]
        .into_iter()
        .flatten()
        .max();
    if let (Some(event), Some(stored)) = (newest, e.newest())
        && event < stored
    {
        store.count_stale_event()?;
        applied.stale += 1;
        return Ok(());
    }
    if e.state.is_terminal() && !run.state.is_terminal() {
        return Ok(());
    }
    run.queued_at = run.queued_at.or(e.queued_at);
    run.started_at = run.started_at.or(e.started_at);
    run.url = run.url.or(e.url);
    run.log_url = run.log_url.or(e.log_url);
    if run.trigger == Trigger::Other {
        run.trigger = e.trigger;
    }
    ingest(store, policy, run, now, applied)
}

/// One commit status as a step of the Cockpit story of its context.
fn apply_status(
    store: &mut dyn Storage,
    policy: &Policy,
    (repository, commit, context): (RepositoryRef, String, String),
    (step, at, url): (cockpit::StatusStep, DateTime<Utc>, Option<String>),
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    let mut latest = store.run_attempt(&repository, &context, &commit, None)?;
    // A status older than the latest stored for this context (a replay, or a
    // delivery that came late) opens no attempt and changes no state; it may
    // only fill in a start time the attempt it belongs to lacks.
    if let Some(l) = latest.take_if(|l| l.newest().is_some_and(|newest| at < newest)) {
        let fills_start = step == cockpit::StatusStep::Started
            && l.started_at.is_none()
            && l.queued_at.is_none_or(|q| q <= at)
            && l.finished_at.is_none_or(|f| at <= f);
        if !fills_start {
            store.count_stale_event()?;
            applied.stale += 1;
            return Ok(());
        }
        let mut run = new_run(repository, context, commit);
        let mut attempt = cockpit::Attempt::from(&l);
        attempt.started_at = Some(at);
        attempt.fill(&mut run);
        run.url = url.or_else(|| l.url.clone());
        return ingest_partial(store, policy, run, l, now, applied);
    }
    let latest_attempt = latest.as_ref().map(cockpit::Attempt::from);
    let Some(next) = cockpit::advance(latest_attempt.as_ref(), step, at) else {
        return Ok(());
    };
    let mut run = new_run(repository, context, commit);
    next.fill(&mut run);
    run.url = url.or_else(|| {
        latest
            .as_ref()
            .filter(|l| l.attempt == next.attempt)
            .and_then(|l| l.url.clone())
    });
    match latest.filter(|l| l.attempt == next.attempt) {
        Some(l) => ingest_partial(store, policy, run, l, now, applied),
        None => ingest(store, policy, run, now, applied),
    }
}
