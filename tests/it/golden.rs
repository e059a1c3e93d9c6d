//! Golden files of the deterministic demo (issue 17, point 5): the real
//! binary serves `--demo` with its clock fixed (`--now`), and its `/metrics`
//! (both formats) and JSON API answers must equal the files in
//! `tests/golden/` byte for byte; so must a summary of `backfill-openmetrics`
//! on the same database (per family: sample lines and their SHA-256). A refactor that changes none of the numbers
//! keeps them equal; a change of behaviour shows up here as a diff, which must
//! be intended and documented (README "Tests").
//!
//! `UPDATE_GOLDEN=1 cargo test --test it golden::` rewrites the files (and removes
//! those no longer produced).
//!
//! Normalised, because they are not functions of the data and the clock:
//! the sample lines of the self-metrics in [`NOT_DETERMINISTIC`] are left out
//! of both `/metrics` files (their `# HELP`/`# TYPE`/`# UNIT` lines stay).
//! Nothing else is: JSON answers are stored re-indented by [`indent`], which
//! only inserts whitespace outside strings into the server's compact JSON
//! (checked), so comparing the indented forms compares the bytes.

use crate::common;

use common::Exporter;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fixed clock: any instant works; this one is a Sunday at noon UTC, so
/// the demo's nightlies (02:00-02:10) are far from midnight.
const NOW: &str = "2026-11-01T12:00:00Z";

/// Self-metric families whose samples depend on the process rather than on the
/// data and the clock, with the reason.
const NOT_DETERMINISTIC: &[(&str, &str)] = &[
    (
        "ci_exporter_snapshot_build_duration_seconds",
        "wall time of the last snapshot build",
    ),
    (
        "ci_exporter_snapshot_age_seconds",
        "wall time since the last snapshot build",
    ),
    (
        "ci_exporter_snapshot_refreshes_total",
        "how often the refresher ran (timer and write notifications)",
    ),
    (
        "ci_exporter_http_requests_total",
        "counts the test's own requests, including its /readyz polling",
    ),
    (
        "ci_exporter_http_connections",
        "connections open at the scrape (the test client's keep-alive)",
    ),
    (
        "ci_exporter_http_connections_closed_total",
        "connections the server closed, by reason (timing of keep-alive)",
    ),
    (
        "ci_exporter_build_info",
        "the crate version: a release must not change the golden files",
    ),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The sample's family name: the metric name up to `{` or a space.
fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// `/metrics` without the samples of [`NOT_DETERMINISTIC`].
fn normalise_metrics(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let skip = !line.starts_with('#')
            && NOT_DETERMINISTIC
                .iter()
                .any(|(family, _)| sample_name(line) == *family);
        if !skip {
            out.push_str(line);
        }
    }
    out
}

/// Re-indent compact JSON: a newline and two spaces per level after `{`, `[`
/// and `,`, and before `}`, `]` (empty `{}`/`[]` stay as they are). Panics if
/// `json` has whitespace outside strings, i.e. if the indentation would not
/// be lossless.
fn indent(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let chars: Vec<char> = json.chars().collect();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    for (i, &c) in chars.iter().enumerate() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        assert!(
            !c.is_whitespace(),
            "the answer is not compact JSON (whitespace at byte {i}): the golden files assume it is"
        );
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if !matches!(chars.get(i + 1), Some('}' | ']')) {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                if !matches!(chars.get(i.wrapping_sub(1)), Some('{' | '[')) || i == 0 {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            _ => out.push(c),
        }
    }
    out.push('\n');
    out
}

/// Where the answers and the golden files first differ, as a message.
fn first_difference(name: &str, want: &str, got: &str) -> String {
    let (mut w, mut g) = (want.lines(), got.lines());
    let mut n = 1;
    loop {
        match (w.next(), g.next()) {
            (Some(a), Some(b)) if a == b => n += 1,
            (None, None) => {
                return format!("{name}: differs only in line endings or a final newline");
            }
            (a, b) => {
                return format!(
                    "{name}: first difference at line {n}\n  golden: {}\n  served: {}",
                    a.unwrap_or("<end of file>"),
                    b.unwrap_or("<end of answer>")
                );
            }
        }
    }
}

struct Answers {
    exporter: Exporter,
    files: BTreeMap<String, String>,
}

impl Answers {
    fn json(&mut self, file: &str, path: &str) -> Value {
        let (status, body) = self.exporter.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        let value: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
        let previous = self
            .files
            .insert(file.to_string(), format!("GET {path}\n{}", indent(&body)));
        assert!(previous.is_none(), "{file} written twice");
        value
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {v}"))
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Every golden answer of a demo served at [`NOW`], by file name.
fn collect(exporter: Exporter) -> BTreeMap<String, String> {
    let mut a = Answers {
        exporter,
        files: BTreeMap::new(),
    };
    // With PostgreSQL the demo's one replica takes the database's
    // leadership in the background, maybe after it is ready: its answers
    // are taken once it leads (`ci_exporter_leader` 1, as with SQLite from
    // the start). The polling scrapes only move the left-out request
    // counters.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !a
        .exporter
        .scrape(false)
        .lines()
        .any(|l| l == "ci_exporter_leader 1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo's only replica did not lead within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let prometheus = a.exporter.scrape(false);
    let openmetrics = a.exporter.scrape(true);
    assert!(openmetrics.ends_with("# EOF\n"), "not OpenMetrics");
    assert!(!prometheus.contains("# EOF"), "not Prometheus text");
    a.files
        .insert("metrics.prom".into(), normalise_metrics(&prometheus));
    a.files
        .insert("metrics.om".into(), normalise_metrics(&openmetrics));

    let slos = a.json("api-slos.json", "/api/v1/slos");
    let slo_names: Vec<String> = slos["slos"]
        .as_array()
        .expect("slos")
        .iter()
        .map(|s| str_at(s, "/slo").to_string())
        .collect();
    assert!(
        slo_names.len() >= 5,
        "the demo has every SLO: {slo_names:?}"
    );
    for slo in &slo_names {
        a.json(
            &format!("api-slo-{slo}.json"),
            &format!("/api/v1/slos/{slo}"),
        );
        a.json(
            &format!("api-slo-{slo}-events.json"),
            &format!("/api/v1/slos/{slo}/events"),
        );
    }
    a.json(
        "api-slos-repository.json",
        "/api/v1/slos?repository=acme%2Fweb-shop",
    );

    let nightly = a.json("api-nightly.json", "/api/v1/nightly");
    let repository = str_at(&nightly, "/rows/0/repository").to_string();
    a.json(
        "api-nightly-repository.json",
        &format!("/api/v1/nightly/{}", encode(&repository)),
    );
    a.json("api-nightly-runtime.json", "/api/v1/nightly?color=runtime");

    let failures = a.json("api-failures.json", "/api/v1/failures");
    let class = str_at(&failures, "/classes/0/class").to_string();
    let fingerprint = str_at(&failures, "/fingerprints/0/fingerprint").to_string();
    a.json(
        "api-failures-last-seen.json",
        "/api/v1/failures?sort=last_seen&window=30d",
    );
    let class_page = a.json(
        "api-failure-class.json",
        &format!("/api/v1/failures/classes/{}", encode(&class)),
    );
    a.json(
        "api-failure-fingerprint.json",
        &format!("/api/v1/failures/fingerprints/{}", encode(&fingerprint)),
    );

    let tests = a.json("api-tests.json", "/api/v1/tests");
    a.json("api-tests-flaky.json", "/api/v1/tests?verdict=flaky");
    let test = &tests["tests"][0];
    a.json(
        "api-test.json",
        &format!(
            "/api/v1/tests/{}/{}/{}",
            encode(str_at(test, "/repository")),
            encode(str_at(test, "/context")),
            encode(str_at(test, "/test"))
        ),
    );

    let failed_run = class_page["runs"][0]["run_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("a run of class {class}: {class_page}"));
    a.json("api-run-failed.json", &format!("/api/v1/runs/{failed_run}"));
    a.json(
        "api-run-failed-related.json",
        &format!("/api/v1/runs/{failed_run}/related"),
    );
    a.json("api-run-1.json", "/api/v1/runs/1");
    a.json("api-run-1-related.json", "/api/v1/runs/1/related");
    let (db, dir) = (a.exporter.db.clone(), a.exporter.dir.clone());
    a.exporter.stop();
    a.files
        .insert("backfill-openmetrics.sums".into(), backfill_sums(&db, &dir));
    a.files
}

/// `backfill-openmetrics` of the demo database up to [`NOW`], summarised: per
/// family, its number of sample lines and their SHA-256 (the whole output is
/// 59 MB). A change names the family whose history changed.
fn backfill_sums(db: &Path, dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let args = [
        "backfill-openmetrics",
        "--db",
        db.to_str().unwrap(),
        "--since",
        "30d",
        "--until",
        NOW,
        "--instance",
        "exporter:9787",
    ];
    let out = common::run(&args, dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("# EOF\n"), "not a whole OpenMetrics file");
    let mut sums = format!(
        "# ci-slo-exporter {}\n# family, sample lines, SHA-256 of its sample lines\n",
        args.join(" ").replace(db.to_str().unwrap(), "demo.db")
    );
    let mut family: Option<(String, usize, Sha256)> = None;
    let flush = |f: Option<(String, usize, Sha256)>, sums: &mut String| {
        if let Some((name, n, h)) = f {
            let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            sums.push_str(&format!("{name} {n} {digest}\n"));
        }
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            flush(family.take(), &mut sums);
            let name = rest.split(' ').next().unwrap().to_string();
            family = Some((name, 0, Sha256::new()));
        } else if !line.starts_with('#') {
            let (_, n, h) = family.as_mut().expect("a sample before any # TYPE");
            *n += 1;
            h.update(line.as_bytes());
            h.update(b"\n");
        }
    }
    flush(family.take(), &mut sums);
    sums
}

fn serve_demo(dir: &Path) -> Exporter {
    Exporter::start(
        dir,
        &dir.join("demo.db"),
        &["--demo", "--now", NOW],
        &[("CI_SLO_LOG", "warn")],
    )
}

#[test]
fn the_demo_answers_equal_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let served = collect(serve_demo(dir.path()));
    let golden = golden_dir();
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&golden).unwrap();
        for entry in std::fs::read_dir(&golden).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !served.contains_key(&name) {
                std::fs::remove_file(&path).unwrap();
            }
        }
        for (name, text) in &served {
            std::fs::write(golden.join(name), text).unwrap();
        }
        eprintln!(
            "UPDATE_GOLDEN=1: wrote {} files to {}",
            served.len(),
            golden.display()
        );
        return;
    }
    let mut problems = Vec::new();
    for (name, text) in &served {
        match std::fs::read_to_string(golden.join(name)) {
            Ok(want) if want == *text => {}
            Ok(want) => problems.push(first_difference(name, &want, text)),
            Err(e) => problems.push(format!("{name}: no golden file ({e})")),
        }
    }
    for entry in std::fs::read_dir(&golden).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if !served.contains_key(&name) {
            problems.push(format!("{name}: golden file no longer produced"));
        }
    }
    assert!(
        problems.is_empty(),
        "the demo's answers differ from tests/golden/ ({} files):\n{}\n\n\
         If the change is intended, rewrite them with `UPDATE_GOLDEN=1 cargo test --test it golden::`, \
         review `git diff tests/golden` and say why in the commit message (README \"Tests\").",
        problems.len(),
        problems.join("\n")
    );
}

/// A second demo database, built again from scratch, answers the same: the
/// files do not depend on anything but the data and the fixed clock.
#[test]
fn a_second_demo_answers_the_same_bytes() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = collect(serve_demo(one.path()));
    let second = collect(serve_demo(two.path()));
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    for (name, text) in &first {
        assert!(
            second[name] == *text,
            "{}",
            first_difference(name, text, &second[name])
        );
    }
}

#[test]
fn indentation_is_lossless_and_normalisation_only_drops_the_listed_samples() {
    let compact = r#"{"a":[1,{"b":"x, {y}: \"z\""},[]],"c":{},"d":-0.5e3}"#;
    let indented = indent(compact);
    let back: String = {
        let mut out = String::new();
        let mut in_string = false;
        let mut escaped = false;
        for c in indented.chars() {
            if in_string {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
                out.push(c);
            } else if !c.is_whitespace() {
                in_string = c == '"';
                out.push(c);
            }
        }
        out
    };
    assert_eq!(back, compact);
    assert!(indented.contains("\"c\": {}"), "{indented}");
    let metrics = "# TYPE ci_exporter_snapshot_age_seconds gauge\nci_exporter_snapshot_age_seconds 0.25\nci_exporter_snapshot_age_seconds_other 1\nci_runs_total{a=\"b\"} 3\n";
    assert_eq!(
        normalise_metrics(metrics),
        "# TYPE ci_exporter_snapshot_age_seconds gauge\nci_exporter_snapshot_age_seconds_other 1\nci_runs_total{a=\"b\"} 3\n"
    );
}

/// `/metrics` gauge samples by (family, slo, window); `ci_slo_tests` by
/// (family, slo, window/repository/result).
fn slo_gauges(prometheus: &str) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for line in prometheus.lines().filter(|l| l.starts_with("ci_slo_")) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let family = sample_name(series).to_string();
        let label = |k: &str| {
            series
                .split_once(&format!("{k}=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_string())
                .unwrap_or_default()
        };
        let key = if family == "ci_slo_tests" {
            format!(
                "{}/{}/{}",
                label("window"),
                label("repository"),
                label("result")
            )
        } else {
            label("window")
        };
        out.insert((family, label("slo"), key), value.parse::<f64>().unwrap());
    }
    out
}

/// Two optional ratios are the same number. Counts are compared exactly; the
/// ratios computed from them are the same `f64` on both sides, but
/// serde_json's default number parser may be one unit in the last place off
/// (it is not correctly rounded), hence the tolerance.
fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(1.0),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// The UI's window name as a `window` label: "6 hours" is "6h".
fn window_label(human: &str) -> String {
    let (n, unit) = human.split_once(' ').unwrap();
    format!("{n}{}", &unit[..1])
}

/// The UI and its JSON show the SLO numbers `/metrics` exports (issue 17
/// point 3: one path for each number), at a whole hour and in the middle of
/// one (where the windows' first hour is partial).
#[test]
fn the_ui_shows_the_slo_numbers_of_metrics() {
    for now in [NOW, "2026-11-01T12:34:56.789Z"] {
        let dir = tempfile::tempdir().unwrap();
        let e = Exporter::start(
            dir.path(),
            &dir.path().join("demo.db"),
            &["--demo", "--now", now],
            &[("CI_SLO_LOG", "warn")],
        );
        let gauges = slo_gauges(&e.scrape(false));
        let (status, body) = e.get("/api/v1/slos");
        assert_eq!(status, 200, "{body}");
        let ui: Value = serde_json::from_str(&body).unwrap();
        let period = window_label(str_at(&ui, "/period"));
        let gauge = |family: &str, slo: &str, window: &str| {
            gauges
                .get(&(family.to_string(), slo.to_string(), window.to_string()))
                .copied()
        };
        let mut compared = 0;
        for row in ui["slos"].as_array().unwrap() {
            let slo = str_at(row, "/slo");
            let at = format!("{slo} at {now}");
            assert!(
                same(
                    gauge("ci_slo_error_budget_remaining_ratio", slo, ""),
                    row["budget_remaining"].as_f64()
                ),
                "budget of {at}: {:?} vs {}",
                gauge("ci_slo_error_budget_remaining_ratio", slo, ""),
                row["budget_remaining"]
            );
            let mut windows = vec![(period.clone(), row.clone())];
            for w in row["windows"].as_array().unwrap() {
                windows.push((window_label(str_at(w, "/window")), w.clone()));
            }
            for (window, w) in windows {
                let total = w["total"].as_f64();
                assert_eq!(
                    gauge("ci_slo_window_events", slo, &window),
                    total,
                    "events of {at} over {window}"
                );
                assert!(
                    same(gauge("ci_slo_sli_ratio", slo, &window), w["sli"].as_f64()),
                    "SLI of {at} over {window}: {:?} vs {}",
                    gauge("ci_slo_sli_ratio", slo, &window),
                    w["sli"]
                );
                if window != period {
                    assert!(
                        same(
                            gauge("ci_slo_burn_rate", slo, &window),
                            w["burn_rate"].as_f64()
                        ),
                        "burn rate of {at} over {window}: {:?} vs {}",
                        gauge("ci_slo_burn_rate", slo, &window),
                        w["burn_rate"]
                    );
                }
                compared += 1;
            }
            if let Some(ex) = row.get("executions").filter(|x| !x.is_null()) {
                assert_eq!(
                    gauge("ci_slo_window_events", "test_executions", &period),
                    ex["total"].as_f64(),
                    "test executions at {now}"
                );
                assert!(
                    same(
                        gauge("ci_slo_sli_ratio", "test_executions", &period),
                        ex["sli"].as_f64()
                    ),
                    "test executions' SLI at {now}"
                );
            }
        }
        assert!(compared >= 30, "{compared} windows compared");
        // test_success per repository over the period: tests meeting and
        // evaluated on the SLO page, ci_slo_tests in /metrics.
        let (status, body) = e.get("/api/v1/slos/test_success");
        assert_eq!(status, 200, "{body}");
        let detail: Value = serde_json::from_str(&body).unwrap();
        let repositories = detail["repositories"].as_array().unwrap();
        assert!(!repositories.is_empty());
        for r in repositories {
            let repo = str_at(r, "/repository");
            let tests = |result: &str| {
                gauge(
                    "ci_slo_tests",
                    "test_success",
                    &format!("{period}/{repo}/{result}"),
                )
            };
            assert_eq!(tests("meeting"), r["good"].as_f64(), "{repo} at {now}");
            assert_eq!(tests("breaching"), r["bad"].as_f64(), "{repo} at {now}");
        }
        e.stop();
    }
}
