//! `classify` and `report`: what the classifier and the report parsers make
//! of local files, one JSON line per file (the commands users tune rules with).

use crate::config::Config;
use anyhow::Result;
use std::path::PathBuf;

/// Print one JSON line per log; a file that cannot be read gets
/// `{"file","error"}` and makes the command fail after all files are done.
pub(super) fn classify_files(config: &Config, logs: &[PathBuf]) -> Result<()> {
    let classifier = config.classifier()?;
    let mut failed = 0;
    for path in logs {
        let file = path.display().to_string();
        let result = if path.as_os_str() == "-" {
            classifier.classify_log(std::io::stdin().lock())
        } else {
            std::fs::File::open(path).and_then(|f| classifier.classify_log(f))
        };
        let line = match result {
            Ok(c) => match c.primary {
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
            },
            Err(e) => {
                failed += 1;
                serde_json::json!({ "file": file, "error": e.to_string() })
            }
        };
        crate::output::line(&line)?;
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} files could not be read",
        logs.len()
    );
    Ok(())
}

/// Print one JSON line per report; a corrupt report gets `{"file","error"}`,
/// the others are still summarised, and the command fails at the end.
pub(super) fn report_files(files: &[PathBuf]) -> Result<()> {
    let mut failed = 0;
    for path in files {
        let file = path.display().to_string();
        let line = match crate::report::parse_file(path) {
            Ok(r) => {
                let t = r.totals();
                serde_json::json!({
                    "file": file, "format": r.format.as_str(), "tests": t.tests, "passed": t.passed,
                    "failed": t.failed, "errored": t.errored, "skipped": t.skipped,
                    "retried": t.retried, "flaky": t.flaky,
                })
            }
            Err(e) => {
                failed += 1;
                serde_json::json!({ "file": file, "error": e.to_string() })
            }
        };
        crate::output::line(&line)?;
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} reports could not be parsed",
        files.len()
    );
    Ok(())
}
