//! Progress of a long command (an import, a backfill): a bar on a terminal,
//! and a log line every few seconds otherwise (a cron job's log, a CI step), so a
//! long run never looks hung. The first and the last step are always logged
//! when there is no bar.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a line is logged when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    unit: &'static str,
    total: u64,
    started: Instant,
    /// When the last line was logged, and the count it showed.
    last_line: Option<(Instant, u64)>,
    /// What was done so far besides the count (`12 runs, 3 logs`).
    message: String,
}

impl Progress {
    /// Progress over `total` `unit`s of `what` (e.g. "importing cockpit.db", "runs").
    pub fn new(what: impl Into<String>, unit: &'static str, total: u64) -> Progress {
        let what = what.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {human_pos}/{human_len} {msg} ({per_sec}, ETA {eta})",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(what.clone());
            b.set_message(unit);
            b
        });
        Progress {
            bar,
            what,
            unit,
            total,
            started: Instant::now(),
            last_line: None,
            message: String::new(),
        }
    }

    /// `done` of `total` (a total learnt on the way), with `message`.
    pub fn step(&mut self, done: u64, total: u64, message: &str) {
        self.total = total;
        message.clone_into(&mut self.message);
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_message(format!("{} {message}", self.unit));
        }
        self.set(done);
    }

    /// The total this progress counts to.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// `done` of the total are done.
    pub fn set(&mut self, done: u64) {
        match &self.bar {
            Some(b) => b.set_position(done),
            None => {
                let due = self
                    .last_line
                    .is_none_or(|(at, _)| at.elapsed() >= LINE_EVERY);
                if due || done >= self.total {
                    self.line(done);
                }
            }
        }
    }

    fn line(&mut self, done: u64) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let sep = if self.message.is_empty() { "" } else { ", " };
        tracing::info!(
            "{}: {done}/{} {}{sep}{} ({:.0}%, {rate:.0}/s, {secs:.0} s)",
            self.what,
            self.total,
            self.unit,
            self.message,
            if self.total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / self.total as f64
            }
        );
        self.last_line = Some((Instant::now(), done));
    }

    /// The work is done (clears the bar; logs the final count unless the
    /// last line showed it).
    pub fn finish(&mut self, done: u64) {
        match &self.bar {
            Some(b) => b.finish_and_clear(),
            None => {
                if self.last_line.is_none_or(|(_, shown)| shown != done) {
                    self.line(done);
                }
            }
        }
    }
}
