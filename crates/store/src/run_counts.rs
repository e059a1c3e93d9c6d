//! The rules of counting a run, for every engine: what a run newly makes
//! known (its queue time once its start is known, its final state once it
//! is terminal), under which labels, live or backdated, and which SLO events
//! it gives. An engine supplies only how a counter moves, a histogram
//! observes and an SLO event is stored ([`CountSink`]); the SQLite store
//! (`counting::count_run`) and the PostgreSQL store (crates/store-pg) both
//! call [`count_run_with`], so their numbers cannot drift apart.

use crate::catalog::{self, FamilyDef};
use crate::policy::Policy;
use crate::tally::{ExemplarRef, Labels};
use chrono::{DateTime, Utc};
use ci_slo_core::model::{DataQualityIssue, RunState, Trigger, durations};
use ci_slo_core::slo::{self, SloId};

/// When a run happened, for the live window: its latest known time.
pub fn event_ms(
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    now_ms: i64,
) -> i64 {
    finished_at
        .or(started_at)
        .or(queued_at)
        .map(crate::to_ms)
        .unwrap_or(now_ms)
}

/// What counting a run needs: from the run being ingested, or from the
/// stored row when its trigger is decided later.
pub struct Counting<'a> {
    pub run_id: i64,
    pub repository_id: i64,
    pub repository: &'a str,
    pub context: &'a str,
    pub attempt: u32,
    pub trigger: Trigger,
    pub state: RunState,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub queue_counted: bool,
    pub final_counted: bool,
    /// The (queue_counted, final_counted) flags the stored row has now.
    pub row_flags: (bool, bool),
}

/// How an engine moves what [`count_run_with`] decides, inside the
/// transaction that stores the run.
pub trait CountSink {
    type Error;
    /// Add `by` to a counter series.
    fn inc(&mut self, family: FamilyDef, labels: &Labels<'_>, by: f64) -> Result<(), Self::Error>;
    /// Observe `value` in a histogram series with `bounds`.
    fn observe(
        &mut self,
        family: FamilyDef,
        labels: &Labels<'_>,
        bounds: &[f64],
        value: f64,
        exemplar: Option<ExemplarRef>,
    ) -> Result<(), Self::Error>;
    /// Store an SLO event of a subject once (counted when live and new).
    #[allow(clippy::too_many_arguments)]
    fn slo_event(
        &mut self,
        slo: SloId,
        subject: &str,
        repository_id: i64,
        repository: &str,
        at_ms: i64,
        good: bool,
        live: bool,
    ) -> Result<(), Self::Error>;
}

/// Count what a run newly makes known, once each: its queue time when its
/// start is known, its final state when it is terminal. Answers the
/// (queue_counted, final_counted) flags the run has after it; the caller
/// stores them when they differ from `c.row_flags`.
pub fn count_run_with<S: CountSink>(
    sink: &mut S,
    c: &Counting<'_>,
    policy: &Policy,
    live: bool,
    now_ms: i64,
) -> Result<(bool, bool), S::Error> {
    let event_ms = event_ms(c.queued_at, c.started_at, c.finished_at, now_ms);
    let (d, issues) = durations(c.queued_at, c.started_at, c.finished_at, policy.limits);
    let subject = format!("run:{}", c.run_id);
    let trigger = c.trigger.as_str();
    let exemplar = Some(ExemplarRef {
        run_id: c.run_id,
        at_ms: event_ms,
    });
    let (mut queue_counted, mut final_counted) = (c.queue_counted, c.final_counted);

    if !c.queue_counted && c.started_at.is_some() {
        for issue in issues.iter().filter(|i| {
            matches!(
                i,
                DataQualityIssue::NegativeQueueTime | DataQualityIssue::AbsurdQueueTime
            )
        }) {
            sink.inc(catalog::DATA_QUALITY, &[("reason", issue.as_str())], 1.0)?;
        }
        if let Some(q) = d.queue_seconds {
            let started_ms = c.started_at.map(crate::to_ms).unwrap_or(now_ms);
            if live {
                let labels: &Labels<'_> = &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                ];
                sink.observe(
                    catalog::RUN_QUEUE,
                    labels,
                    &policy.queue_buckets,
                    q,
                    exemplar,
                )?;
            }
            let (slo, good) = slo::queue_event(q, policy.thresholds);
            sink.slo_event(
                slo,
                &subject,
                c.repository_id,
                c.repository,
                started_ms,
                good,
                live,
            )?;
        }
        queue_counted = true;
    }

    if !c.final_counted && c.state.is_terminal() {
        for issue in issues.iter().filter(|i| {
            matches!(
                i,
                DataQualityIssue::NegativeRunTime | DataQualityIssue::AbsurdRunTime
            )
        }) {
            sink.inc(catalog::DATA_QUALITY, &[("reason", issue.as_str())], 1.0)?;
        }
        let state = c.state.as_str();
        if live {
            let attempt = if c.attempt == 0 { "first" } else { "retry" };
            sink.inc(
                catalog::RUNS,
                &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                    ("state", state),
                    ("attempt", attempt),
                ],
                1.0,
            )?;
            if let Some(seconds) = d.run_seconds {
                let labels: &Labels<'_> = &[
                    ("repository", c.repository),
                    ("context", c.context),
                    ("trigger", trigger),
                    ("state", state),
                ];
                sink.observe(
                    catalog::RUN_DURATION,
                    labels,
                    &policy.run_buckets,
                    seconds,
                    exemplar,
                )?;
            }
        } else {
            sink.inc(catalog::BACKDATED, &[("kind", "run")], 1.0)?;
        }
        for (slo, good) in
            slo::finished_run_events(c.state, c.trigger, d.run_seconds, policy.thresholds)
        {
            sink.slo_event(
                slo,
                &subject,
                c.repository_id,
                c.repository,
                event_ms,
                good,
                live,
            )?;
        }
        final_counted = true;
    }
    Ok((queue_counted, final_counted))
}
