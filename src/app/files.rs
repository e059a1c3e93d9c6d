//! `classify` and `report`: what the classifier and the report parsers make
//! of local files, one JSON line per file (the commands users tune rules with).

use crate::config::Config;
use anyhow::Result;
use std::path::PathBuf;

/// Print `line(path)` as one JSON line per file; a file it fails on gets
/// `{"file","error"}`, the others still get their line, and the command fails
/// after all files are done, saying how many `failed` (e.g. "could not be read").
fn per_file<E: std::fmt::Display>(
    paths: &[PathBuf],
    failed_what: &str,
    mut line: impl FnMut(&PathBuf) -> std::result::Result<serde_json::Value, E>,
) -> Result<()> {
    let mut failed = 0;
    for path in paths {
        let file = path.display().to_string();
        let line = line(path).unwrap_or_else(|e| {
            failed += 1;
            serde_json::json!({ "file": file, "error": e.to_string() })
        });
        crate::output::line(&line)?;
    }
    anyhow::ensure!(failed == 0, "{failed} of {} {failed_what}", paths.len());
    Ok(())
}

/// Print one JSON line per log; a file that cannot be read gets
/// `{"file","error"}` and makes the command fail after all files are done.
pub(super) fn classify_files(config: &Config, logs: &[PathBuf]) -> Result<()> {
    let classifier = config.classifier()?;
    per_file(logs, "files could not be read", |path| {
        let file = path.display().to_string();
        let result = if path.as_os_str() == "-" {
            classifier.classify_log(std::io::stdin().lock())
        } else {
            std::fs::File::open(path).and_then(|f| classifier.classify_log(f))
        };
        result.map(|c| match c.primary {
            Some(m) => serde_json::json!({
                "file": file, "class": m.class, "category": m.category, "line": m.line,
                "evidence": m.evidence, "fingerprint": m.fingerprint, "context": m.context,
                "context_before": m.context_before, "candidates": m.candidates,
            }),
            None => serde_json::json!({
                "file": file, "class": null, "category": null, "line": null,
                "evidence": null, "fingerprint": null, "context": [],
                "context_before": 0, "candidates": [],
            }),
        })
    })
}

/// Print one JSON line per report; a corrupt report gets `{"file","error"}`,
/// the others are still summarised, and the command fails at the end.
pub(super) fn report_files(files: &[PathBuf]) -> Result<()> {
    per_file(files, "reports could not be parsed", |path| {
        crate::report::parse_file(path).map(|r| {
            let t = r.totals();
            serde_json::json!({
                "file": path.display().to_string(), "format": r.format.as_str(), "tests": t.tests,
                "passed": t.passed, "failed": t.failed, "errored": t.errored, "skipped": t.skipped,
                "retried": t.retried, "flaky": t.flaky,
            })
        })
    })
}
