//! Server time of the drill-down pages on a database of 1 M runs, next to the
//! same on 10 k runs: `cargo bench --bench ui_pages` (`UI_BENCH_RUNS=200000`
//! for a quicker large database). Figures are recorded in docs/benchmarks.md.
//!
//! The databases are generated directly with rusqlite in one transaction
//! (repositories, runs over a year, test results, failures with a pool of
//! fingerprints, SLO events, dependency snapshots of scheduled runs), then the
//! real binary serves each and every page is requested over loopback: the
//! median of several requests after one warm-up is reported.
//!
//! `UI_BENCH_BASELINE_BIN=path/to/older/ci-slo-exporter` also serves the large
//! database with that build and prints its figures in a further column (`–`
//! for pages it does not have): old and new measured in the same run.

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;
use support::{Spec, generate, get, serve, serve_with, time};

fn main() {
    // `cargo test --benches` runs benches with no arguments but `--bench` absent: stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ui_pages: run with `cargo bench --bench ui_pages`");
        return;
    }
    let large: usize = std::env::var("UI_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // UI_BENCH_DIR keeps the generated databases there and reuses them.
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("UI_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp.path());
    std::fs::create_dir_all(dir).expect("create the database directory");
    let now_ms = chrono::Utc::now().timestamp_millis();
    let pages = [
        "/",
        "/api/v1/slos",
        "/nightly",
        "/nightly?color=runtime",
        "/api/v1/nightly",
        "/failures",
        "/failures?window=30d",
        "/failures?repository=org0%2Frepo-0&window=30d",
        "/api/v1/failures",
        "/tests/org0%2Frepo-5/test/suite.Test3?window=30d",
        "/api/v1/tests/org0%2Frepo-5/test/suite.Test3?window=30d",
        "/runs/4242",
        "/api/v1/runs/4242/related",
        "/slos/queue_time",
        "/api/v1/slos/queue_time",
        "/slos/queue_time/events",
        "/api/v1/slos/queue_time/events",
        "/slos/queue_time/events?repository=org0%2Frepo-0",
        "/nightly/org0%2Frepo-0",
        "/api/v1/nightly/org0%2Frepo-0",
        "/failures?new=1",
        "/failures?sort=last_seen&window=30d",
        "/failures/classes/class-3?window=30d",
        "/failures/fingerprints/0000000000003039?window=30d",
    ];
    let baseline = std::env::var("UI_BENCH_BASELINE_BIN").ok();
    let mut old: Vec<Option<f64>> = Vec::new();
    let mut results: Vec<Vec<f64>> = Vec::new();
    for runs in [10_000, large] {
        let db = dir.join(format!("ui-{runs}.db"));
        let t = Instant::now();
        let fresh = keep.is_none() || !db.exists();
        if fresh {
            generate(
                &db,
                Spec {
                    runs,
                    tests_per_run: 8,
                    tests_every: 5,
                },
                now_ms,
            );
        }
        let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "{} {runs} runs in {:.1} s ({} MB)",
            if fresh { "generated" } else { "reused" },
            t.elapsed().as_secs_f64(),
            size / 1_000_000
        );
        // The baseline build gets a copy made before the new build migrates
        // the database (an older build refuses a newer schema).
        let base_db = dir.join(format!("ui-{runs}-baseline.db"));
        if runs == large && baseline.is_some() && (fresh || !base_db.exists()) {
            std::fs::copy(&db, &base_db).expect("copy the database for the baseline build");
        }
        let server = serve(&db, &[]);
        if runs == large
            && let Some(bin) = &baseline
        {
            // Old and new build on the same database, page by page in turn,
            // so that both see the same load.
            let old_server = serve_with(bin, &base_db, &[]);
            let mut new = Vec::new();
            for p in &pages {
                new.push(time(&server.base, p, 9));
                old.push((get(&old_server.base, p).0 == 200).then(|| time(&old_server.base, p, 9)));
            }
            results.push(new);
            old_server.stop();
        } else {
            results.push(pages.iter().map(|p| time(&server.base, p, 9)).collect());
        }
        server.stop();
    }
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    if baseline.is_some() {
        println!(
            "| page | 10k runs (ms) | {large} runs (ms) | {large} runs, baseline build (ms) |"
        );
        println!("|---|---:|---:|---:|");
    } else {
        println!("| page | 10k runs (ms) | {large} runs (ms) |");
        println!("|---|---:|---:|");
    }
    for (i, p) in pages.iter().enumerate() {
        let extra = if baseline.is_some() {
            format!(" {} |", fmt(old.get(i).copied().flatten()))
        } else {
            String::new()
        };
        println!(
            "| `{p}` | {:.1} | {:.1} |{extra}",
            results[0][i], results[1][i]
        );
    }
}
