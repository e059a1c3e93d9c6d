//! Progress of a backfill, one for both forges: a bar on a terminal, a log
//! line every ten seconds (and at the end) otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    label: String,
    /// What is counted (`merged pull requests`, `projects`).
    unit: &'static str,
}

impl Progress {
    pub(crate) fn new(show_bar: bool, label: String, unit: &'static str) -> Progress {
        let bar = (show_bar && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            let template = format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}");
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                b.set_style(style);
            }
            b.set_prefix(label.clone());
            b
        });
        Progress {
            bar,
            last_line: Instant::now(),
            label,
            unit,
        }
    }

    /// `done` of `total`, with `msg` (counts so far) when not empty.
    pub(crate) fn step(&mut self, done: usize, total: usize, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.set_length(total as u64);
                b.set_position(done as u64);
                b.set_message(msg.to_string());
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(10) || done == total {
                    let sep = if msg.is_empty() { "" } else { ", " };
                    tracing::info!("{}: {done}/{total} {}{sep}{msg}", self.label, self.unit);
                    self.last_line = Instant::now();
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
