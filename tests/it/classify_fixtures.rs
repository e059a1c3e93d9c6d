//! The classifier on real tool logs (tests/fixtures/ci-logs, see its README):
//! logs of passing jobs stay quiet, logs of failing jobs point at the lines a
//! maintainer would want to see.

use std::path::{Path, PathBuf};

use ci_slo_exporter::classify::Classifier;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ci-logs")
}

fn logs_in(dir: &str) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn at_most_five_percent_of_passing_jobs_get_a_failure_class() {
    let c = Classifier::with_defaults();
    let logs = logs_in("passing");
    assert!(logs.len() >= 30, "only {} passing logs", logs.len());
    let mut alarms = Vec::new();
    for path in &logs {
        let got = c.classify_log(std::fs::File::open(path).unwrap()).unwrap();
        if let Some(m) = got.primary {
            alarms.push(format!(
                "{}: {} at line {}: {:?}",
                path.file_name().unwrap().to_string_lossy(),
                m.class,
                m.line,
                m.evidence
            ));
        }
    }
    println!(
        "passing logs with a failure class: {} of {}",
        alarms.len(),
        logs.len()
    );
    assert!(
        alarms.len() * 20 <= logs.len(),
        "{} of {} passing logs classified as failures (max 5%):\n{}",
        alarms.len(),
        logs.len(),
        alarms.join("\n")
    );
}

#[derive(serde::Deserialize)]
struct Expected {
    logs: Vec<ExpectedLog>,
}

#[derive(serde::Deserialize)]
struct ExpectedLog {
    file: String,
    /// `2,5-10`: 1-based lines and inclusive ranges.
    lines: String,
    category: Option<String>,
}

fn parse_lines(spec: &str) -> Vec<u64> {
    spec.split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
            a..=b
        })
        .collect()
}

#[test]
fn failing_jobs_point_at_the_failing_block() {
    let c = Classifier::with_defaults();
    let text = std::fs::read_to_string(fixtures().join("expected.toml")).unwrap();
    let expected: Expected = toml::from_str(&text).unwrap();
    // every failing log has an expectation
    let listed: Vec<String> = expected.logs.iter().map(|e| e.file.clone()).collect();
    for path in logs_in("failing") {
        let name = format!("failing/{}", path.file_name().unwrap().to_string_lossy());
        assert!(
            listed.contains(&name),
            "{name} has no entry in expected.toml"
        );
    }
    let mut wrong = Vec::new();
    for e in &expected.logs {
        let log = std::fs::File::open(fixtures().join(&e.file)).unwrap();
        let m = c
            .classify_log(log)
            .unwrap()
            .primary
            .unwrap_or_else(|| panic!("{}: no evidence", e.file));
        let lines = parse_lines(&e.lines);
        let category_ok = e
            .category
            .as_deref()
            .is_none_or(|want| m.category.as_str() == want);
        if !lines.contains(&m.line) || !category_ok {
            wrong.push(format!(
                "{}: want lines {} ({}), got line {} {} ({}): {:?}",
                e.file,
                e.lines,
                e.category.as_deref().unwrap_or("any"),
                m.line,
                m.class,
                m.category,
                m.evidence
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn line_specs_parse() {
    assert_eq!(parse_lines("2,5-7"), vec![2, 5, 6, 7]);
    assert_eq!(parse_lines("9"), vec![9]);
}
