//! Throughput of the streaming JUnit parser on one file, parsed N times, to
//! compare with `bench/junit_etree.py FILE N` (used by scripts/bench):
//! `cargo run --release --example junit_throughput -- FILE [N]`
use ci_slo_exporter::report::junit::parse_junit;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: junit_throughput FILE [N]");
    let n: usize = args
        .next()
        .map(|v| v.parse().expect("N is a number"))
        .unwrap_or(50);
    let bytes = std::fs::read(&path).expect("read the file");
    let mut best = f64::MAX;
    let mut tests = 0;
    for _ in 0..n {
        let start = Instant::now();
        let report = parse_junit(&path, bytes.as_slice()).expect("parse");
        best = best.min(start.elapsed().as_secs_f64());
        tests = report.tests.len();
    }
    println!(
        "rust {:.1} MB/s best of {n} ({tests} tests, {} bytes)",
        bytes.len() as f64 / 1e6 / best,
        bytes.len()
    );
}
