//! Progress of a poll or backfill: a bar on a terminal, a log line every ten
//! seconds otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress of a poll or backfill: a bar on a terminal, lines otherwise.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    label: String,
}

impl Progress {
    pub(super) fn new(show_bar: bool, label: String) -> Progress {
        let bar = (show_bar && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} PRs {msg}")
            {
                b.set_style(style);
            }
            b.set_prefix(label.clone());
            b
        });
        Progress {
            bar,
            last_line: Instant::now(),
            label,
        }
    }

    pub(super) fn total(&self, n: usize) {
        if let Some(b) = &self.bar {
            b.set_length(n as u64);
            b.set_position(0);
        }
    }

    pub(super) fn step(&mut self, done: usize, total: usize) {
        match &self.bar {
            Some(b) => b.set_position(done as u64),
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(10) || done == total {
                    tracing::info!(target: "ci_slo_exporter::github", "{}: {done}/{total} merged pull requests", self.label);
                    self.last_line = Instant::now();
                }
            }
        }
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
