//! cargo-fuzz target for the TAP reader: `cargo fuzz run tap` (docs/fuzzing.md).
#![no_main]

use ci_slo_core::report::tap::parse_tap_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_tap_bytes("fuzz", data);
});
