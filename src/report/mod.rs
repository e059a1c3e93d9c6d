//! Test reports (TAP, JUnit XML) parsed into one neutral shape.
use crate::model::TestOutcome;
pub mod junit;
pub mod tap;
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedTest {
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_seconds: Option<f64>,
    pub retries: u32,
    pub retry_reasons: Vec<String>,
    pub message: Option<String>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Tap,
    Junit,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub format: ReportFormat,
    pub tests: Vec<ParsedTest>,
    pub bailed_out: bool,
    pub warnings: Vec<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{file}: {position}: {reason}")]
    Malformed {
        file: String,
        position: String,
        reason: String,
    },
}
