//! Times a run cannot have, checked before the ingest API or the CLI stores
//! it: a finish before the start, a start before the queue time (beyond
//! [`QUEUE_CLOCK_SKEW_SECONDS`], the clocks of two machines), a time further
//! ahead than `ingest.max_future_skew`. The client can fix its report, so it
//! gets a 400 naming the rule (and nothing is stored); each refusal is counted
//! by its reason in `ci_exporter_data_quality_rejections_total`, with the
//! same reasons a forge's impossible times are counted under (a forge's run is
//! stored without them instead: `store::plausible`, `model::durations`).

use super::RunRequest;
use crate::model::QUEUE_CLOCK_SKEW_SECONDS;
use chrono::{DateTime, Duration, Utc};

/// Why a run's times are impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImpossibleTimes {
    #[error("finished_at ({finished}) is before started_at ({started})")]
    FinishedBeforeStarted { started: String, finished: String },
    #[error(
        "started_at ({started}) is before queued_at ({queued}) by more than the {QUEUE_CLOCK_SKEW_SECONDS} s allowed for clock skew"
    )]
    StartedBeforeQueued { queued: String, started: String },
    #[error(
        "{field} ({at}) is more than {skew} ahead of the exporter's clock ({now}; ingest.max_future_skew)"
    )]
    InTheFuture {
        field: &'static str,
        at: String,
        now: String,
        skew: String,
    },
}

impl ImpossibleTimes {
    /// The `reason` label of `ci_exporter_data_quality_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ImpossibleTimes::FinishedBeforeStarted { .. } => "negative_run_time",
            ImpossibleTimes::StartedBeforeQueued { .. } => "negative_queue_time",
            ImpossibleTimes::InTheFuture { .. } => "future_time",
        }
    }
}

fn show(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Check a run's times against each other and against `now`.
pub fn check_times(
    run: &RunRequest,
    now: DateTime<Utc>,
    max_future_skew: std::time::Duration,
) -> Result<(), ImpossibleTimes> {
    let skew = Duration::from_std(max_future_skew).unwrap_or(Duration::MAX);
    let limit = now
        .checked_add_signed(skew)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    for (field, t) in [
        ("queued_at", run.queued_at),
        ("started_at", run.started_at),
        ("finished_at", run.finished_at),
    ] {
        if let Some(t) = t
            && t > limit
        {
            return Err(ImpossibleTimes::InTheFuture {
                field,
                at: show(t),
                now: show(now),
                skew: humantime::format_duration(max_future_skew).to_string(),
            });
        }
    }
    if let (Some(started), Some(finished)) = (run.started_at, run.finished_at)
        && finished < started
    {
        return Err(ImpossibleTimes::FinishedBeforeStarted {
            started: show(started),
            finished: show(finished),
        });
    }
    if let (Some(queued), Some(started)) = (run.queued_at, run.started_at)
        && started < queued - Duration::seconds(QUEUE_CLOCK_SKEW_SECONDS)
    {
        return Err(ImpossibleTimes::StartedBeforeQueued {
            queued: show(queued),
            started: show(started),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(2026, 11, 1, h, m, s).unwrap())
    }

    fn times(
        q: Option<DateTime<Utc>>,
        s: Option<DateTime<Utc>>,
        f: Option<DateTime<Utc>>,
    ) -> RunRequest {
        RunRequest {
            queued_at: q,
            started_at: s,
            finished_at: f,
            ..RunRequest::default()
        }
    }

    #[test]
    fn each_impossible_time_has_its_reason() {
        let now = at(12, 0, 0).unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let check = |r: RunRequest| check_times(&r, now, hour).map_err(|e| e.reason());
        assert_eq!(
            check(times(at(10, 0, 0), at(10, 1, 0), at(10, 5, 0))),
            Ok(())
        );
        assert_eq!(check(times(None, None, None)), Ok(()));
        assert_eq!(
            check(times(at(10, 0, 0), at(10, 1, 0), at(10, 0, 30))),
            Err("negative_run_time")
        );
        assert_eq!(
            check(times(at(10, 0, 10), at(10, 0, 0), at(10, 5, 0))),
            Err("negative_queue_time")
        );
        // Within the clock skew: accepted (the queue time is 0).
        assert_eq!(check(times(at(10, 0, 4), at(10, 0, 0), None)), Ok(()));
        // Up to an hour ahead is a clock difference; more is impossible.
        assert_eq!(check(times(None, at(12, 59, 0), None)), Ok(()));
        assert_eq!(check(times(None, None, at(13, 0, 1))), Err("future_time"));
        let ten_years = Utc.with_ymd_and_hms(2036, 11, 1, 0, 0, 0).single();
        let err = check_times(&times(ten_years, None, None), now, hour).unwrap_err();
        assert_eq!(
            err.to_string(),
            "queued_at (2036-11-01T00:00:00Z) is more than 1h ahead of the exporter's clock \
             (2026-11-01T12:00:00Z; ingest.max_future_skew)"
        );
    }
}
