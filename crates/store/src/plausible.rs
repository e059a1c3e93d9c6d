//! Times a forge's report cannot have. The ingest API and the CLI refuse such
//! a run with a 400 (`ingest::validate`); a forge must not be told to retry a
//! delivery it cannot fix, so its run is stored without the impossible times
//! (and so without the durations they would give), and the store counts it
//! as a data-quality rejection, reason `future_time`.
//!
//! Finish-before-start and start-before-queue need nothing here: the
//! durations they give are dropped and counted when the run is counted
//! (`model::durations`).

use crate::model::NewRun;
use chrono::{DateTime, Utc};

/// `report` without the times later than `limit_ms` (Unix ms), or None when
/// it has none.
pub(crate) fn without_future_times(report: &NewRun, limit_ms: i64) -> Option<NewRun> {
    let future = |t: &Option<DateTime<Utc>>| t.is_some_and(|t| t.timestamp_millis() > limit_ms);
    if !(future(&report.queued_at) || future(&report.started_at) || future(&report.finished_at)) {
        return None;
    }
    let mut run = report.clone();
    for t in [
        &mut run.queued_at,
        &mut run.started_at,
        &mut run.finished_at,
    ] {
        if future(t) {
            *t = None;
        }
    }
    Some(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn only_the_times_beyond_the_limit_are_dropped() {
        let at = |y| Some(Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap());
        let run = NewRun {
            queued_at: at(2026),
            started_at: at(2026),
            finished_at: at(2036),
            ..NewRun::default()
        };
        let limit = at(2027).unwrap().timestamp_millis();
        let kept = without_future_times(&run, limit).unwrap();
        assert_eq!(
            (kept.queued_at, kept.started_at, kept.finished_at),
            (at(2026), at(2026), None)
        );
        assert_eq!(without_future_times(&kept, limit), None);
    }
}
