//! Throughput of the JUnit parser on one file, parsed N times, to compare with
//! `bench/junit_etree.py FILE N` (used by scripts/bench):
//! `cargo run --release -p ci-slo-core --example junit_throughput -- FILE [N]`
//!
//! Prints two lines: `rust` for the file in memory (`parse_junit_bytes`, what
//! ingest uses for uploaded reports) and `rust-reader` for the same bytes read
//! through `parse_junit` (the streaming reader path of `report FILE`).
use ci_slo_core::report::junit::{parse_junit, parse_junit_bytes};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: junit_throughput FILE [N]");
    let n: usize = args
        .next()
        .map(|v| v.parse().expect("N is a number"))
        .unwrap_or(50);
    let bytes = std::fs::read(&path).expect("read the file");
    let in_memory = best_of(n, || parse_junit_bytes(&path, &bytes));
    let reader = best_of(n, || parse_junit(&path, bytes.as_slice()));
    for (label, (best, tests)) in [("rust", in_memory), ("rust-reader", reader)] {
        println!(
            "{label} {:.1} MB/s best of {n} ({tests} tests, {} bytes)",
            bytes.len() as f64 / 1e6 / best,
            bytes.len()
        );
    }
}

/// Best time in seconds over `n` runs, and the number of tests.
fn best_of<E: std::fmt::Debug>(
    n: usize,
    parse: impl Fn() -> Result<ci_slo_core::report::Report, E>,
) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut tests = 0;
    for _ in 0..n {
        let start = Instant::now();
        let report = parse().expect("parse");
        best = best.min(start.elapsed().as_secs_f64());
        tests = report.tests.len();
    }
    (best, tests)
}
