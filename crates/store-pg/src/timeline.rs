//! When each counted event happened, on PostgreSQL, as the SQLite store's
//! `timeline.rs`: the stored rows behind every persisted counter and
//! histogram (for `backfill-openmetrics` and the exporter's history), and
//! each test's per-day counters. The rows are read here; which events a
//! row makes is the SQLite store's code (`ci_slo_store::timeline`).

use crate::reads::counts_at;
use crate::{PgStore, PgStoreError, Sql};
use ci_slo_core::model::DurationLimits;
use ci_slo_store::timeline::{
    FailureClasses, RunRow, TestDays, TimedEvent, change_events, fingerprint_event, run_slo_events,
    slo_event, test_slo_events,
};

impl PgStore {
    /// Every counted event of the persisted families, in no particular
    /// order. `limits` are the plausibility limits durations were counted
    /// with.
    pub fn counted_events(
        &self,
        limits: DurationLimits,
        emit: &mut dyn FnMut(TimedEvent),
    ) -> Result<(), PgStoreError> {
        let mut client = self.read();
        for r in client.query(
            "SELECT repo.path, r.context, r.trigger, r.state, r.attempt, r.queued_at, r.started_at,
                    r.finished_at, r.created_at, r.queue_counted, r.final_counted
             FROM runs r JOIN repositories repo ON repo.id = r.repository_id",
            &[],
        )? {
            RunRow {
                repository: r.get(0),
                context: r.get(1),
                trigger: r.get(2),
                state: r.get(3),
                attempt: u32::try_from(r.get::<_, i64>(4)).unwrap_or_default(),
                queued_at: r.get(5),
                started_at: r.get(6),
                finished_at: r.get(7),
                created_at: r.get(8),
                queue_counted: r.get::<_, i64>(9) != 0,
                final_counted: r.get::<_, i64>(10) != 0,
            }
            .events(limits, emit);
        }
        let mut classes = FailureClasses::default();
        for r in client.query(
            "SELECT f.run_id, f.class, f.category, repo.path,
                    coalesce(r.finished_at, r.started_at, r.queued_at, r.created_at)
             FROM failures f JOIN runs r ON r.id = f.run_id JOIN repositories repo ON repo.id = r.repository_id
             ORDER BY f.run_id, f.id",
            &[],
        )? {
            classes.failure(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), emit);
        }
        for r in client.query(
            "SELECT fp.first_seen,
                    (SELECT repo.path FROM failures f JOIN runs r ON r.id = f.run_id
                       JOIN repositories repo ON repo.id = r.repository_id
                     WHERE f.fingerprint_id = fp.id ORDER BY f.is_new DESC, f.id LIMIT 1)
             FROM fingerprints fp",
            &[],
        )? {
            fingerprint_event(r.get(0), r.get(1), emit);
        }
        for r in client.query(
            "SELECT repo.path, c.outcome, c.retries, c.merged_at
             FROM changes c JOIN repositories repo ON repo.id = c.repository_id
             WHERE c.decided_at IS NOT NULL AND c.merged_at IS NOT NULL",
            &[],
        )? {
            change_events(r.get(0), r.get(1), r.get(2), r.get(3), emit);
        }
        for r in client.query(
            "SELECT e.slo, repo.path, e.good, e.at FROM slo_events e
             JOIN repositories repo ON repo.id = e.repository_id",
            &[],
        )? {
            slo_event(r.get(0), r.get(1), r.get::<_, i64>(2) != 0, r.get(3), emit);
        }
        for r in client.query(
            "SELECT repo.path, e.queue_at, e.queue_good, e.run_time_at, e.run_time_good, e.completed_at,
                    e.completed_good
             FROM run_events e JOIN repositories repo ON repo.id = e.repository_id",
            &[],
        )? {
            let good = |i: usize| r.get::<_, Option<i64>>(i).map(|g| g != 0);
            let events = [
                (r.get(1), good(2)),
                (r.get(3), good(4)),
                (r.get(5), good(6)),
            ];
            run_slo_events(r.get(0), events, emit);
        }
        for r in client.query(
            "SELECT repo.path, e.good, e.total, e.at FROM test_events e
             JOIN repositories repo ON repo.id = e.repository_id",
            &[],
        )? {
            test_slo_events(r.get(0), r.get(1), r.get(2), r.get(3), emit);
        }
        Ok(())
    }

    /// Every test's per-day counters from day `since_day` to `until_day`
    /// (UTC day numbers, both included), grouped by (repository, context,
    /// test) in SQLite's (bytewise) order of text.
    pub fn test_day_counts(
        &self,
        since_day: i64,
        until_day: i64,
    ) -> Result<Vec<TestDays>, PgStoreError> {
        self.fold_for_read()?;
        let rows = self.read().query(
            r#"SELECT repo.path, t.context, t.name, d.day, d.runs::bigint, d.failures::bigint, d.commits::bigint,
                      d.flaky_commits::bigint, d.flips::bigint, d.flaky_failures::bigint
               FROM test_days d JOIN tests t ON t.id = d.test_id JOIN repositories repo ON repo.id = t.repository_id
               WHERE d.day >= $1 AND d.day <= $2
               ORDER BY repo.path COLLATE "C", t.context COLLATE "C", t.name COLLATE "C", d.day"#,
            &[&since_day, &until_day],
        )?;
        let mut out: Vec<TestDays> = Vec::new();
        for r in &rows {
            let key: (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let day: i64 = r.get(3);
            let counts = counts_at(r, 4);
            match out.last_mut() {
                Some((k, days)) if *k == key => days.push((day, counts)),
                _ => out.push((key, vec![(day, counts)])),
            }
        }
        Ok(out)
    }
}
