//! The configuration the store decides and counts by ([`Policy`]), and
//! whether a write moves the live counters (`moves_live_counters`).

use crate::META_SERVING_SINCE;
use ci_slo_core::config::Config;
use ci_slo_core::model::{DurationLimits, Forge};
use ci_slo_core::slo::RunThresholds;
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;

/// The configuration the store needs to decide and count events.
#[derive(Debug, Clone)]
pub struct Policy {
    pub thresholds: RunThresholds,
    pub limits: DurationLimits,
    pub queue_buckets: Vec<f64>,
    pub run_buckets: Vec<f64>,
    /// History loaded on purpose (`--history`): on a database that has
    /// served, it does not move the live counters.
    pub history: bool,
    /// Times further ahead than this are impossible (`ingest.max_future_skew`).
    pub max_future_skew_ms: i64,
    pub merge_settle_ms: i64,
    pub lost_after_ms: i64,
    /// How long a run whose trigger is pending waits for it before it is
    /// counted with the trigger it has (`other`).
    pub trigger_wait_ms: i64,
    pub required: HashMap<(Forge, String), Vec<String>>,
    /// Secrets are removed from every text of a run before it is stored.
    pub redactor: std::sync::Arc<crate::redact::Redactor>,
}

impl Policy {
    pub fn from_config(c: &Config) -> Policy {
        Policy {
            thresholds: c.run_thresholds(),
            limits: DurationLimits {
                max_queue_seconds: c.slo.max_plausible_queue_time.as_secs_f64(),
                max_run_seconds: c.slo.max_plausible_run_time.as_secs_f64(),
            },
            queue_buckets: c.queue_buckets(),
            run_buckets: c.run_buckets(),
            history: false,
            max_future_skew_ms: c.ingest.max_future_skew.as_millis() as i64,
            merge_settle_ms: c.slo.merge_settle.as_millis() as i64,
            lost_after_ms: c.slo.lost_after.as_millis() as i64,
            trigger_wait_ms: c.github.trigger_wait.as_millis() as i64,
            required: c
                .repositories
                .iter()
                .map(|r| ((r.forge, r.path.clone()), r.required_contexts.clone()))
                .collect(),
            // The config was validated: its patterns compile.
            redactor: std::sync::Arc::new(
                crate::redact::Redactor::from_config(&c.redact).unwrap_or_default(),
            ),
        }
    }

    /// The contexts a change of repository `path` must pass before it merges
    /// (`repositories[].required_contexts`; a `generic` entry covers every
    /// forge): what settling a merged change judges it by, in every engine.
    pub fn required_contexts(&self, forge: Forge, path: &str) -> &[String] {
        self.required
            .get(&(forge, path.to_string()))
            .or_else(|| self.required.get(&(Forge::Generic, path.to_string())))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Whether what this write newly stores moves the live counters: always,
/// however old its timestamps, except history loaded on purpose into a
/// database that has served (a command given `--history`), which is counted
/// in `ci_exporter_backdated_events_total` instead. Into a database that has
/// never served, everything counts: Prometheus has not seen these series yet,
/// so they appear with their values (not a rate), and `backfill-openmetrics`
/// ends where they stand (docs/configuration.md, *History and live counters*).
pub(crate) fn moves_live_counters(tx: &Connection, policy: &Policy) -> rusqlite::Result<bool> {
    if !policy.history {
        return Ok(true);
    }
    let served = tx
        .prepare_cached("SELECT 1 FROM meta WHERE key = ?1")?
        .query_row([META_SERVING_SINCE], |_| Ok(()))
        .optional()?
        .is_some();
    Ok(!served)
}
