//! The data behind the drill-down pages, built once and served twice: as
//! HTML by [`super::ui`] and as JSON under `/api/v1/` (docs/ui.md).
//!
//! One file per page family: `query` (the filters every page takes), `urls`
//! (page and forge links), `slos` (with an SLO's bad events), `nightly`,
//! `failures` with the `issue` drafted for one, `test_page` and `run` (a run
//! page's links). The items the pages use are re-exported here.

mod failures;
mod issue;
mod nightly;
mod query;
mod run;
mod slos;
mod test_page;
mod urls;

pub(crate) use failures::{FailuresView, failures};
pub(crate) use nightly::{NightlyCellView, NightlyJob, NightlyView, nightly};
pub(crate) use query::UiQuery;
pub(crate) use run::{RunLinksView, run_links};
pub(crate) use slos::{
    SloDetailView, SloEventsView, SloRow, SlosView, slo_detail, slo_events, slos,
};
pub(crate) use test_page::{TestPageView, test_page};
pub(crate) use urls::{enc, safe_url, test_path};

use super::{ApiError, AppState};
use crate::store::ui::RepositoryRow;
use chrono::Duration;

/// A window for people: `28 days`, `6 hours`, `1 day 12 hours`.
fn human(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    let unit = |n: i64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    let (days, hours, minutes) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(unit(days, "day"));
    }
    if hours > 0 {
        parts.push(unit(hours, "hour"));
    }
    if minutes > 0 || parts.is_empty() {
        parts.push(unit(minutes, "minute"));
    }
    parts.join(" ")
}

pub(crate) async fn repositories(state: &AppState) -> Result<Vec<RepositoryRow>, ApiError> {
    Ok(state.store.read(|s| s.repositories()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_words() {
        assert_eq!(human(Duration::days(28)), "28 days");
        assert_eq!(human(Duration::hours(1)), "1 hour");
        assert_eq!(human(Duration::hours(36)), "1 day 12 hours");
        assert_eq!(human(Duration::seconds(30)), "0 minutes");
    }
}
