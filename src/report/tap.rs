use super::*;
pub fn parse_tap(file: &str, input: &str) -> Result<Report, ReportError> {
    let mut tests = Vec::new();
    for line in input.lines() {
        let (ok, rest) = if let Some(r) = line.strip_prefix("not ok") {
            (false, r)
        } else if let Some(r) = line.strip_prefix("ok") {
            (true, r)
        } else {
            continue;
        };
        let name = rest
            .trim()
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim()
            .trim_start_matches("- ")
            .to_string();
        tests.push(ParsedTest {
            name,
            outcome: if ok {
                TestOutcome::Passed
            } else {
                TestOutcome::Failed
            },
            duration_seconds: None,
            retries: 0,
            retry_reasons: vec![],
            message: None,
        });
    }
    let _ = file;
    Ok(Report {
        format: ReportFormat::Tap,
        tests,
        bailed_out: false,
        warnings: vec![],
    })
}
