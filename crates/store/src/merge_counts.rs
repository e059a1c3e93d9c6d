//! The rules of counting a decided merged change, for every engine: in
//! `ci_merged_changes_total` by outcome and, unless it merged red, its
//! retries to green, when live (else one backdated `merged_change`), and
//! its SLO events (first attempt green, green merge, ...: `slo::merge_events`)
//! at its merge time, subject `change:<id>`. An engine supplies the
//! [`CountSink`] it counts runs with; the SQLite store (`settle.rs`) and
//! the PostgreSQL store both call [`count_merge_with`].

use crate::catalog;
use crate::run_counts::CountSink;
use ci_slo_core::model::MergeOutcome;
use ci_slo_core::slo::{self, MergeEvaluation};

/// A merged change whose outcome was just decided.
pub struct DecidedChange<'a> {
    pub change_id: i64,
    pub repository_id: i64,
    pub repository: &'a str,
    /// When it was merged (Unix ms): the time of its SLO events.
    pub merged_at_ms: i64,
}

/// Count a decided change once (the caller decides each change once).
pub fn count_merge_with<S: CountSink>(
    sink: &mut S,
    change: &DecidedChange<'_>,
    e: &MergeEvaluation,
    live: bool,
) -> Result<(), S::Error> {
    let path = change.repository;
    if live {
        sink.inc(
            catalog::MERGED_CHANGES,
            &[("repository", path), ("outcome", e.outcome.as_str())],
            1.0,
        )?;
        if e.outcome != MergeOutcome::MergedRed {
            sink.observe(
                catalog::RETRIES_TO_GREEN,
                &[("repository", path)],
                catalog::RETRIES_BUCKETS,
                f64::from(e.retries),
                None,
            )?;
        }
    } else {
        sink.inc(catalog::BACKDATED, &[("kind", "merged_change")], 1.0)?;
    }
    let subject = format!("change:{}", change.change_id);
    for (slo, good) in slo::merge_events(e.outcome) {
        sink.slo_event(
            slo,
            &subject,
            change.repository_id,
            path,
            change.merged_at_ms,
            good,
            live,
        )?;
    }
    Ok(())
}
