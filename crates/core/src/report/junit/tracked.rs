//! The input side of the quick-xml reader: the size limit, a leading UTF-8
//! byte order mark, and the line and column of the current event (without
//! keeping the file).

use std::io::{self, BufRead, Read};

/// Newline offsets remembered inside one XML event for line/column reporting.
const MAX_TRACKED_NEWLINES: usize = 1 << 20;

// Byte/line tracking reader
// ---------------------------------------------------------------------------

/// A `BufRead` adapter that enforces the size limit, drops a leading UTF-8 BOM
/// and remembers enough about newlines to turn a byte offset of the current XML
/// event into a line and column without keeping the file.
pub(super) struct Tracked<R> {
    inner: R,
    limit: u64,
    pub(super) exceeded: bool,
    bom_checked: bool,
    /// the first bytes of the input, read ahead to look for a BOM
    pending: [u8; 3],
    pending_start: usize,
    pending_end: usize,
    /// bytes consumed so far (quick-xml's offsets count the same bytes)
    pos: u64,
    lines: Lines,
}

impl<R: BufRead> Tracked<R> {
    pub(super) fn new(inner: R, limit: u64) -> Self {
        Tracked {
            inner,
            limit,
            exceeded: false,
            bom_checked: false,
            pending: [0; 3],
            pending_start: 0,
            pending_end: 0,
            pos: 0,
            lines: Lines {
                newlines: 0,
                last_newline: None,
                mark_pos: 0,
                mark_newlines: 0,
                mark_last_newline: None,
                since_mark: Vec::new(),
                untracked_from: None,
            },
        }
    }

    /// Called before each XML event: forget newline offsets of earlier events.
    pub(super) fn mark(&mut self) {
        let lines = &mut self.lines;
        lines.mark_pos = self.pos;
        lines.mark_newlines = lines.newlines;
        lines.mark_last_newline = lines.last_newline;
        if lines.since_mark.capacity() > 4096 {
            lines.since_mark = Vec::new();
        } else {
            lines.since_mark.clear();
        }
        lines.untracked_from = None;
    }

    /// `"line L, column C"` for a byte offset inside the current event (or at
    /// the current position), `"byte offset N"` otherwise.
    pub(super) fn describe(&self, offset: u64) -> String {
        let lines = &self.lines;
        let resolvable = offset >= lines.mark_pos
            && offset <= self.pos
            && lines.untracked_from.is_none_or(|u| offset <= u);
        if !resolvable {
            return format!("byte offset {offset}");
        }
        let idx = lines.since_mark.partition_point(|&nl| nl < offset);
        let line = lines
            .mark_newlines
            .saturating_add(idx as u64)
            .saturating_add(1);
        let last_nl = match idx.checked_sub(1) {
            Some(i) => lines.since_mark.get(i).copied(),
            None => lines.mark_last_newline,
        };
        let column = match last_nl {
            Some(nl) => offset.saturating_sub(nl),
            None => offset.saturating_add(1),
        };
        format!("line {line}, column {column}")
    }
}

impl<R: BufRead> Read for Tracked<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tracked<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.bom_checked {
            // Read the first three bytes even from a reader that yields fewer
            // at a time, and drop them if they are a UTF-8 byte order mark.
            while self.pending_end < self.pending.len() {
                let available = self.inner.fill_buf()?;
                if available.is_empty() {
                    break;
                }
                let n = available.len().min(self.pending.len() - self.pending_end);
                self.pending[self.pending_end..self.pending_end + n]
                    .copy_from_slice(&available[..n]);
                self.inner.consume(n);
                self.pending_end += n;
            }
            self.bom_checked = true;
            if self.pending[..self.pending_end] == *b"\xEF\xBB\xBF" {
                self.pending_end = 0;
            }
        }
        let remaining = self.limit.saturating_sub(self.pos);
        let available: &[u8] = if self.pending_start < self.pending_end {
            &self.pending[self.pending_start..self.pending_end]
        } else {
            self.inner.fill_buf()?
        };
        if available.is_empty() {
            return Ok(available);
        }
        if remaining == 0 {
            self.exceeded = true;
            return Err(io::Error::other("report exceeds the size limit"));
        }
        let n = usize::try_from(remaining).map_or(available.len(), |r| r.min(available.len()));
        Ok(&available[..n])
    }

    fn consume(&mut self, amt: usize) {
        if amt == 0 {
            return;
        }
        let from_pending = self.pending_start < self.pending_end;
        {
            // `fill_buf` on a non-empty buffer returns it again without any I/O.
            let seen: &[u8] = if from_pending {
                &self.pending[self.pending_start..self.pending_end]
            } else {
                self.inner.fill_buf().unwrap_or(&[])
            };
            let seen = &seen[..amt.min(seen.len())];
            for i in memchr::memchr_iter(b'\n', seen) {
                self.lines.record(self.pos.saturating_add(i as u64));
            }
        }
        if from_pending {
            self.pending_start = (self.pending_start + amt).min(self.pending_end);
        } else {
            self.inner.consume(amt);
        }
        self.pos = self.pos.saturating_add(amt as u64);
    }
}

/// Newline bookkeeping of [`Tracked`].
struct Lines {
    newlines: u64,
    last_newline: Option<u64>,
    mark_pos: u64,
    mark_newlines: u64,
    mark_last_newline: Option<u64>,
    /// offsets of newlines consumed since `mark_pos`
    since_mark: Vec<u64>,
    /// newlines after this offset were not recorded
    untracked_from: Option<u64>,
}

impl Lines {
    fn record(&mut self, offset: u64) {
        self.newlines = self.newlines.saturating_add(1);
        self.last_newline = Some(offset);
        if self.since_mark.len() < MAX_TRACKED_NEWLINES {
            self.since_mark.push(offset);
        } else if self.untracked_from.is_none() {
            self.untracked_from = Some(offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ReportError;
    use crate::report::junit::tests::{malformed_at, parse, suite};
    use crate::report::junit::{parse_junit, parse_junit_limited};

    #[test]
    fn a_bom_is_skipped_and_positions_still_count_lines() {
        let report =
            parse("\u{feff}<?xml version=\"1.0\"?><testsuite><testcase name=\"t\"/></testsuite>");
        assert_eq!(report.tests.len(), 1);
        let (position, _) = malformed_at("\u{feff}<testsuite>\n\n  <a></b></testsuite>");
        assert_eq!(position, "line 3, column 6");
        let trickled = parse_junit(
            "t.xml",
            io::BufReader::with_capacity(
                1,
                "\u{feff}<testsuite>\n\n  <a></b></testsuite>".as_bytes(),
            ),
        );
        match trickled {
            Err(ReportError::Malformed { position, .. }) => {
                assert_eq!(
                    position, "line 3, column 6",
                    "a BOM split across reads is skipped too"
                );
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn a_reader_yielding_one_byte_at_a_time_gives_the_same_answers() {
        let xml = "<testsuites>\n <testsuite name=\"s\">\n  <testcase classname=\"c\" name=\"t\" time=\"1.5\"><failure message=\"m\">body &amp; more</failure></testcase>\n</testsuite></testsuites>";
        let whole = parse(xml);
        let trickled = parse_junit("t.xml", io::BufReader::with_capacity(1, xml.as_bytes()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(whole, trickled);
        let broken = "<testsuites>\n <testsuite>\n  </testcase>";
        let err = parse_junit("t.xml", io::BufReader::with_capacity(1, broken.as_bytes()));
        match err {
            Err(ReportError::Malformed { position, .. }) => {
                assert_eq!(position, "line 3, column 3")
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn the_size_limit_counts_bytes_read() {
        let xml = suite(r#"<testcase name="t"/>"#);
        let len = xml.len() as u64;
        assert!(
            parse_junit_limited("t.xml", xml.as_bytes(), len).is_ok(),
            "exactly the limit is fine"
        );
        match parse_junit_limited("big.xml", xml.as_bytes(), len - 1) {
            Err(ReportError::TooLarge { file, limit }) => {
                assert_eq!((file.as_str(), limit), ("big.xml", len - 1));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let err = parse_junit_limited("big.xml", xml.as_bytes(), 0)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.to_string(), "big.xml: report larger than 0 bytes");
    }
}
