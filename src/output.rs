//! Command output on stdout that survives its reader going away.
//!
//! `println!` panics when stdout is a pipe whose reader has exited
//! (`ci-slo-exporter report *.xml | head -1`). Commands write through these
//! functions instead: a closed pipe becomes [`StdoutClosed`], which `main`
//! turns into a quiet, successful exit (the reader got what it asked for),
//! like `cat` or `grep` do. Any other write error is an ordinary error.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

/// The reader of stdout has gone away: stop writing and exit quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// The error to return for a failed write to stdout.
pub fn write_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// Whether `e` (or an error it wraps) is a write to a closed stdout.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// Write `text` and a newline to stdout.
pub fn line(text: impl Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(write_error)
}

/// Write `text` to stdout as it is.
pub fn text(text: impl Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(write_error)
}
