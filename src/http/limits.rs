//! Bounded work per ingested run: how many tests, how many bytes of reports
//! and of log one `POST /api/v1/runs` may carry (`[server]` limits), each
//! refused with `413` naming the limit, and which runs are large enough to
//! go to the writer's bulk lane.

use super::ApiError;
use crate::config::ServerConfig;
use crate::ingest::RunRequest;
use axum::http::StatusCode;

/// A run with more tests than this, or more bytes of reports, is written
/// through the bulk lane (`StoreHandle::write_bulk`).
pub const BULK_TESTS: usize = 2_000;
pub const BULK_REPORT_BYTES: usize = 512 * 1024;

fn too_large(what: &str, n: usize, limit: usize, key: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the run has {n} {what}, over the limit of {limit} (server.{key})"),
    )
}

/// Check what can be checked before the reports are parsed.
pub fn check_request(r: &RunRequest, c: &ServerConfig) -> Result<(), ApiError> {
    if r.tests.len() > c.max_tests_per_run {
        return Err(too_large(
            "tests",
            r.tests.len(),
            c.max_tests_per_run,
            "max_tests_per_run",
        ));
    }
    let report_bytes = report_bytes(r);
    if report_bytes > c.max_report_bytes_per_run {
        return Err(too_large(
            "bytes of TAP and JUnit reports",
            report_bytes,
            c.max_report_bytes_per_run,
            "max_report_bytes_per_run",
        ));
    }
    let log_bytes = r.log.as_ref().map_or(0, String::len);
    if log_bytes > c.max_log_bytes_per_run {
        return Err(too_large(
            "bytes of log",
            log_bytes,
            c.max_log_bytes_per_run,
            "max_log_bytes_per_run",
        ));
    }
    Ok(())
}

fn report_bytes(r: &RunRequest) -> usize {
    r.tap.as_ref().map_or(0, String::len) + r.junit.as_ref().map_or(0, String::len)
}

/// Check the tests once the reports are parsed (a report adds its tests).
pub fn check_tests(n: usize, c: &ServerConfig) -> Result<(), ApiError> {
    if n > c.max_tests_per_run {
        return Err(too_large(
            "tests",
            n,
            c.max_tests_per_run,
            "max_tests_per_run",
        ));
    }
    Ok(())
}

/// Whether a run goes to the writer's bulk lane.
pub fn is_bulk(tests: usize, report_bytes: usize) -> bool {
    tests > BULK_TESTS || report_bytes > BULK_REPORT_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_named_in_its_refusal() {
        let c = ServerConfig {
            max_tests_per_run: 2,
            max_report_bytes_per_run: 10,
            max_log_bytes_per_run: 5,
            ..ServerConfig::default()
        };
        let test = |name: &str| crate::ingest::TestRequest {
            name: name.into(),
            outcome: crate::model::TestOutcome::Passed,
            duration_seconds: None,
            retries: 0,
            message: None,
        };
        let mut r = RunRequest {
            tests: vec![test("a"), test("b"), test("c")],
            ..RunRequest::default()
        };
        let e = check_request(&r, &c).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("3 tests") && e.message.contains("server.max_tests_per_run"));
        r.tests.pop();
        r.tap = Some("ok 1 - a\nok 2 - b\n".into());
        let e = check_request(&r, &c).unwrap_err();
        assert!(
            e.message.contains("max_report_bytes_per_run"),
            "{}",
            e.message
        );
        r.tap = None;
        r.log = Some("0123456789".into());
        let e = check_request(&r, &c).unwrap_err();
        assert!(e.message.contains("limit of 5"), "{}", e.message);
        r.log = None;
        assert!(check_request(&r, &c).is_ok());
        assert!(check_tests(3, &c).is_err() && check_tests(2, &c).is_ok());
    }
}
