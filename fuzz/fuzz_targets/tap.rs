// cargo-fuzz target for the TAP reader. Place as fuzz/fuzz_targets/tap.rs and add
// a `[[bin]] name = "tap"` entry to fuzz/Cargo.toml; run with `cargo fuzz run tap`.
#![no_main]

use ci_slo_exporter::report::tap::parse_tap_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_tap_bytes("fuzz", data);
});
