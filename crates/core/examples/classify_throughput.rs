//! Throughput and memory check for the classifier over a generated CI log.
//!
//! ```text
//! cargo run --release -p ci-slo-core --example classify_throughput -- [MB]            # classify, print MB/s + peak RSS
//! cargo run --release -p ci-slo-core --example classify_throughput -- emit [MB] | grep -E -c -f patterns.txt
//! cargo run --release -p ci-slo-core --example classify_throughput -- patterns > patterns.txt
//! ```
//! The log is generated on the fly by a `Read` impl: nothing is written to disk.
use std::io::{self, Read, Write};
use std::time::Instant;

use ci_slo_core::classify::{Classifier, default_patterns_for_grep};

/// Realistic line shapes: GitHub timestamps, ANSI colours, GitLab markers, non-ASCII.
const LINES: &[&str] = &[
    "2024-05-01T10:11:12.1234567Z    Compiling serde_derive v1.0.{n} (/home/runner/.cargo/registry/src/index.crates.io-6f17d22bba15001f/serde_derive-1.0.{n})",
    "2024-05-01T10:11:12.1234567Z test tests::case_{n} ... ok",
    "\x1b[32;1m   Compiling\x1b[0m tokio v1.{n}.0",
    "\x1b[0Ksection_start:17000{n}:step_{c}\r\x1b[0K\x1b[36;1mRunning step {n}\x1b[0;m",
    "\x1b[0Ksection_end:17000{n}:step_{c}\r\x1b[0K",
    "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/example/lib/{n}/lib-{n}.jar (12 kB at 340 kB/s)",
    "  ✓ renders the dashboard component #{n} (23 ms)",
    "PASSED tests/test_api.py::test_endpoint_{n} [ 42%]",
    "warning: unused variable: `x{n}` --> src/lib.rs:{n}:9",
    "Downloading 10%\rDownloading 50%\rDownloading 100% — blob sha256:4f1c{n}e9",
    "npm WARN deprecated inflight@1.0.{n}: This module is not supported, and leaks memory.",
    "+ echo \"step {n} done\"",
];

struct Generated {
    remaining: u64,
    line: u64,
    pending: Vec<u8>,
    pos: usize,
}

impl Generated {
    fn new(bytes: u64) -> Self {
        Generated {
            remaining: bytes,
            line: 0,
            pending: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < buf.len() {
            if self.pos == self.pending.len() {
                if self.remaining == 0 {
                    break;
                }
                self.pending.clear();
                self.pos = 0;
                self.line += 1;
                let text = if self.remaining < 200 {
                    "ERROR: Job failed: exit code 137".to_string()
                } else {
                    let t = LINES[(self.line % LINES.len() as u64) as usize];
                    let cycle = self.line / LINES.len() as u64;
                    t.replace("{n}", &self.line.to_string())
                        .replace("{c}", &cycle.to_string())
                };
                self.pending.extend_from_slice(text.as_bytes());
                self.pending.push(b'\n');
                self.remaining = self.remaining.saturating_sub(self.pending.len() as u64);
            }
            let n = (self.pending.len() - self.pos).min(buf.len() - written);
            buf[written..written + n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
            self.pos += n;
            written += n;
        }
        Ok(written)
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mb = |i: usize| {
        args.get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(100)
    };
    match args.first().map(String::as_str) {
        Some("patterns") => {
            for p in default_patterns_for_grep() {
                println!("{p}");
            }
        }
        Some("emit") => {
            let mut out = io::stdout().lock();
            io::copy(&mut Generated::new(mb(1) << 20), &mut out)?;
            out.flush()?;
        }
        _ => {
            let bytes = mb(0) << 20;
            let t = Instant::now();
            let classifier = Classifier::with_defaults();
            println!(
                "compiled {} default rules in {:.1} ms",
                classifier.rules().len(),
                t.elapsed().as_secs_f64() * 1e3
            );
            // warm-up pass so lazy DFA caches are populated as in a long-running service
            classifier.classify_log(Generated::new(4 << 20))?;
            let t = Instant::now();
            let c = classifier.classify_log(Generated::new(bytes))?;
            let secs = t.elapsed().as_secs_f64();
            let gen_t = Instant::now();
            io::copy(&mut Generated::new(bytes), &mut io::sink())?;
            let gen_secs = gen_t.elapsed().as_secs_f64();
            let m = c.primary.as_ref();
            println!(
                "scanned {:.0} MiB, {} lines in {secs:.2}s = {:.0} MiB/s (generator alone {:.2}s; classifier only ≈ {:.0} MiB/s)",
                c.bytes_scanned as f64 / 1048576.0,
                c.lines_scanned,
                c.bytes_scanned as f64 / 1048576.0 / secs,
                gen_secs,
                c.bytes_scanned as f64 / 1048576.0 / (secs - gen_secs).max(1e-9),
            );
            println!(
                "primary: {:?} at line {:?}; sections: {}; peak RSS: {} KiB",
                m.map(|m| &m.class),
                m.map(|m| m.line),
                c.sections.len(),
                peak_rss_kib().map_or("?".into(), |k| k.to_string())
            );
        }
    }
    Ok(())
}
