//! The failures of a window grouped by fingerprint (or class), ranked, with
//! their classes, trends, example runs and a prefilled issue; a class's or a
//! fingerprint's page adds its runs.

use super::issue::IssueDraft;
use super::urls::gitlab_web_base;
use super::{UiQuery, human, safe_url};
use crate::http::{ApiError, AppState};
use crate::store::ui::{FailureKey, FailureOccurrence};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TestRef {
    pub repository: String,
    pub context: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ExampleRun {
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub repository: String,
    pub context: String,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FingerprintRow {
    /// The fingerprint hash; `null` groups a class's failures without one.
    pub fingerprint: Option<String>,
    pub class: String,
    pub category: String,
    pub normalized: Option<String>,
    /// The latest evidence line.
    pub evidence: String,
    pub occurrences: u64,
    /// Occurrences per day of the window, oldest first.
    pub trend: Vec<u64>,
    pub first_seen: Option<DateTime<Utc>>,
    /// The newest occurrence in the window.
    pub last_seen: DateTime<Utc>,
    pub is_new: bool,
    pub repositories: Vec<String>,
    pub tests: Vec<TestRef>,
    pub examples: Vec<ExampleRun>,
    /// A link to the forge's new-issue form, prefilled; `null` for generic repositories.
    pub create_issue_url: Option<String>,
    /// Title and body of the issue, for copy and paste where there is no form.
    pub issue_title: String,
    pub issue_body: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClassRow {
    pub class: String,
    pub category: String,
    pub occurrences: u64,
    pub last_seen: DateTime<Utc>,
    pub trend: Vec<u64>,
    pub fingerprints: usize,
    pub repositories: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FailuresView {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub window: String,
    pub new_window: String,
    /// Set on a class's page (`/failures/classes/{class}`) or by `?class=`.
    pub class: Option<String>,
    /// Set on a fingerprint's page (`/failures/fingerprints/{fingerprint}`).
    pub fingerprint: Option<String>,
    pub new_only: bool,
    /// `count` or `last_seen`.
    pub sort: String,
    pub days: Vec<NaiveDate>,
    pub classes: Vec<ClassRow>,
    pub fingerprints: Vec<FingerprintRow>,
    /// On a class's or fingerprint's page: its runs in the window, newest first
    /// (at most 200); empty on the failures page.
    pub runs: Vec<FailureRun>,
}

/// A run with a failure of a class or fingerprint.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FailureRun {
    pub run_id: i64,
    pub at: DateTime<Utc>,
    pub repository: String,
    pub context: String,
    pub class: String,
    pub test: Option<String>,
}

/// Most runs listed on a class's or fingerprint's page.
const MAX_FAILURE_RUNS: usize = 200;

/// Most fingerprints listed on the page.
const MAX_FINGERPRINTS: usize = 100;
/// Most tests listed under one fingerprint.
const MAX_TESTS_PER_FINGERPRINT: usize = 50;

pub(crate) async fn failures(
    state: &AppState,
    q: &UiQuery,
    fingerprint: Option<String>,
) -> Result<FailuresView, ApiError> {
    let now = state.clock.now();
    let sort = match q.sort.as_deref() {
        None | Some("count") => "count",
        Some("last_seen") => "last_seen",
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("sort {other:?}: expected count or last_seen"),
            ));
        }
    };
    let window = q.window_or(std::time::Duration::from_secs(7 * 86400))?;
    let max = state.config.web.max_failures_window;
    if window.to_std().is_ok_and(|w| w > max) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "window is longer than {} (web.max_failures_window)",
                human(Duration::from_std(max).unwrap_or(Duration::days(90)))
            ),
        ));
    }
    let since = now - window;
    let filter = q.filter();
    // 1. Every failure of the window as names only (one covering-index scan),
    //    grouped and ranked here; 2. text, links and fingerprints of the few
    //    failures the page shows (the latest and the example runs of each
    //    listed group), by id.
    let hash = fingerprint.clone();
    let (mut keys, repositories, fingerprint_id) = state
        .store
        .read(move |s| {
            let fingerprint_id = match &hash {
                Some(h) => Some(s.fingerprint_id(h)?),
                None => None,
            };
            Ok((
                s.failure_keys_between(since, now + Duration::seconds(1), &filter)?,
                s.repositories_by_id()?,
                fingerprint_id,
            ))
        })
        .await?;
    match fingerprint_id {
        Some(None) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no fingerprint {:?}", fingerprint.unwrap_or_default()),
            ));
        }
        Some(Some(id)) => keys.retain(|k| k.fingerprint_id == Some(id)),
        None => {}
    }
    if let Some(c) = &q.class {
        keys.retain(|k| k.class == *c);
    }
    let path_of = |id: i64| -> String {
        repositories
            .get(&id)
            .map(|r| r.path.clone())
            .unwrap_or_default()
    };
    let new_window = Duration::from_std(state.config.ui.new_window).unwrap_or(Duration::hours(24));
    let first_day = since.date_naive();
    let n_days = (now.date_naive() - first_day).num_days() as usize + 1;
    let days: Vec<NaiveDate> = (0..n_days as i64)
        .map(|i| first_day + Duration::days(i))
        .collect();
    let day_index = |at: DateTime<Utc>| {
        ((at.date_naive() - first_day).num_days().max(0) as usize).min(n_days - 1)
    };
    // Group by fingerprint (or class when there is none), keeping first-appearance order (newest first).
    let mut groups: Vec<Vec<&FailureKey>> = Vec::new();
    let mut index: HashMap<(Option<i64>, &str), usize> = HashMap::new();
    for f in &keys {
        let key = match f.fingerprint_id {
            Some(id) => (Some(id), ""),
            None => (None, f.class.as_str()),
        };
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(f);
    }
    struct Group<'a> {
        occ: Vec<&'a FailureKey>,
        trend: Vec<u64>,
        repositories: BTreeSet<String>,
        /// Failure ids of the first failure of up to 3 distinct runs, newest first.
        examples: Vec<i64>,
    }
    let mut ranked: Vec<Group> = groups
        .into_iter()
        .map(|occ| {
            let mut trend = vec![0u64; n_days];
            for f in &occ {
                trend[day_index(f.at)] += 1;
            }
            let repositories = occ.iter().map(|f| path_of(f.repository_id)).collect();
            let mut seen_runs = BTreeSet::new();
            let examples = occ
                .iter()
                .filter(|f| seen_runs.insert(f.run_id))
                .take(3)
                .map(|f| f.id)
                .collect();
            Group {
                occ,
                trend,
                repositories,
                examples,
            }
        })
        .collect();
    let new_only = q.new_only();
    if new_only {
        // The fingerprints first seen within the NEW window (all of them, not
        // only those the page would list).
        let ids: Vec<i64> = ranked
            .iter()
            .filter_map(|g| g.occ[0].fingerprint_id)
            .collect();
        let first_seen = state
            .store
            .read(move |s| s.fingerprints_first_seen(&ids))
            .await?;
        ranked.retain(|g| {
            g.occ[0]
                .fingerprint_id
                .and_then(|id| first_seen.get(&id))
                .is_some_and(|t| *t >= now - new_window)
        });
    }
    if sort == "last_seen" {
        ranked.sort_by(|a, b| b.occ[0].at.cmp(&a.occ[0].at));
    } else {
        // Most occurrences first; ties: the newest first.
        ranked.sort_by(|a, b| {
            b.occ
                .len()
                .cmp(&a.occ.len())
                .then_with(|| b.occ[0].at.cmp(&a.occ[0].at))
        });
    }
    let mut classes: BTreeMap<String, ClassRow> = BTreeMap::new();
    for g in &ranked {
        let latest = g.occ[0];
        let c = classes
            .entry(latest.class.clone())
            .or_insert_with(|| ClassRow {
                class: latest.class.clone(),
                category: latest.category.clone(),
                occurrences: 0,
                last_seen: latest.at,
                trend: vec![0; n_days],
                fingerprints: 0,
                repositories: Vec::new(),
            });
        c.occurrences += g.occ.len() as u64;
        c.last_seen = c.last_seen.max(latest.at);
        c.fingerprints += 1;
        for (t, x) in c.trend.iter_mut().zip(&g.trend) {
            *t += x;
        }
        for r in &g.repositories {
            if !c.repositories.contains(r) {
                c.repositories.push(r.clone());
            }
        }
    }
    let mut classes: Vec<ClassRow> = classes.into_values().collect();
    for c in &mut classes {
        c.repositories.sort();
    }
    if sort == "last_seen" {
        classes.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.class.cmp(&b.class)));
    } else {
        classes.sort_by(|a, b| {
            b.occurrences
                .cmp(&a.occurrences)
                .then(a.class.cmp(&b.class))
        });
    }
    let runs: Vec<FailureRun> = if fingerprint.is_some() || q.class.is_some() {
        let mut seen = BTreeSet::new();
        ranked
            .iter()
            .flat_map(|g| g.occ.iter())
            .filter(|f| seen.insert(f.run_id))
            .map(|f| FailureRun {
                run_id: f.run_id,
                at: f.at,
                repository: path_of(f.repository_id),
                context: f.context.clone(),
                class: f.class.clone(),
                test: f.test_name.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut runs = runs;
    runs.sort_by(|a, b| b.at.cmp(&a.at).then(b.run_id.cmp(&a.run_id)));
    runs.truncate(MAX_FAILURE_RUNS);
    ranked.truncate(MAX_FINGERPRINTS);
    let wanted: Vec<i64> = ranked.iter().flat_map(|g| g.examples.clone()).collect();
    let details: HashMap<i64, FailureOccurrence> = state
        .store
        .read(move |s| {
            let mut out = HashMap::new();
            for id in wanted {
                if let Some(f) = s.failure_occurrence(id)? {
                    out.insert(id, f);
                }
            }
            Ok(out)
        })
        .await?;
    let gitlab_web = gitlab_web_base(&state.config.gitlab.api_url);
    let fingerprints: Vec<FingerprintRow> = ranked
        .iter()
        // A failure pruned between the two reads drops its group from the page.
        .filter_map(|g| {
            let latest = details.get(&g.examples[0])?;
            let tests: BTreeSet<TestRef> = g
                .occ
                .iter()
                .filter_map(|f| {
                    f.test_name.as_ref().map(|t| TestRef {
                        repository: path_of(f.repository_id),
                        context: f.context.clone(),
                        name: t.clone(),
                    })
                })
                .collect();
            let examples: Vec<ExampleRun> = g
                .examples
                .iter()
                .filter_map(|id| details.get(id))
                .map(|f| ExampleRun {
                    run_id: f.run_id,
                    at: f.at,
                    repository: f.repository.clone(),
                    context: f.context.clone(),
                    url: f.url.as_deref().and_then(safe_url).map(str::to_string),
                })
                .collect();
            let first_seen = latest.first_seen;
            let is_new = first_seen.is_some_and(|t| t >= now - new_window);
            let occurrences = g.occ.len() as u64;
            let mut issue =
                IssueDraft::new(latest, occurrences, &human(window), first_seen, &examples);
            // Failures stored before redaction existed, or under other patterns.
            let redactor = &state.policy.redactor;
            redactor.redact_string(&mut issue.title);
            redactor.redact_string(&mut issue.body);
            Some(FingerprintRow {
                fingerprint: latest.fingerprint.clone(),
                class: latest.class.clone(),
                category: latest.category.clone(),
                normalized: latest.normalized.clone(),
                evidence: latest.evidence.clone(),
                occurrences,
                trend: g.trend.clone(),
                first_seen,
                last_seen: g.occ[0].at,
                is_new,
                repositories: g.repositories.iter().cloned().collect(),
                tests: tests.into_iter().take(MAX_TESTS_PER_FINGERPRINT).collect(),
                create_issue_url: issue.url(&latest.forge, &latest.repository, &gitlab_web),
                issue_title: issue.title,
                issue_body: issue.body,
                examples,
            })
        })
        .collect();
    Ok(FailuresView {
        since,
        until: now,
        window: human(window),
        new_window: human(new_window),
        class: q.class.clone(),
        fingerprint,
        new_only,
        sort: sort.into(),
        days,
        classes,
        fingerprints,
        runs,
    })
}
