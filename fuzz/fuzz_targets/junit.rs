//! cargo-fuzz target for the JUnit XML parser: `cargo fuzz run junit` (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Must never panic; any Ok/Err is fine. Check a few invariants on success.
    if let Ok(report) = ci_slo_core::report::junit::parse_junit_str("fuzz.xml", &text) {
        for test in &report.tests {
            assert!(test.message.as_ref().is_none_or(|m| m.len() <= 4096));
            assert!(test.retry_reasons.len() <= test.retries as usize);
        }
        let _ = report.totals();
    }
    // The streaming entry point on the raw bytes (invalid UTF-8 included).
    let _ = ci_slo_core::report::junit::parse_junit("fuzz.xml", data);
});
