//! The streaming scanner: reads a log of any size a block of lines at a time and
//! feeds the [`Ranker`] the lines that matter.
//!
//! Per block, the candidate lines are found first: lines the [`Prefilter`]
//! cannot rule out (they may match a rule, the error-word heuristic or a CI step
//! marker), Travis CI step starts (found in the raw bytes), and lines the
//! prefilter cannot judge (invalid UTF-8, longer than [`MAX_LINE_BYTES`]). Only
//! candidates are decoded, cleaned and matched. Of the lines in between only
//! the few the ranker needs are cleaned: those following a candidate while it
//! lacks context or waits for its next line, and the last [`TAIL`] non-blank
//! lines before the next candidate (its context, and "the line above" for a
//! summary). The result is the same as feeding every line (a unit test checks
//! it on thousands of generated logs).

use std::io::{self, Read};

use super::clean::{ansi_segments, clean_bytes, clean_line, decode};
use super::prefilter::Prefilter;
use super::rank::{CONTEXT_LINES, Ranked, Ranker};
use super::sections::{SECTION_FINDER, Sections, may_have_section_marker};
use super::steps::TRAVIS_STEP_START;
use super::target::Target;

/// Lines longer than this are truncated for matching; the remainder is skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Largest block of lines scanned at once (see [`BlockReader`]).
const BLOCK_BYTES: usize = 1024 * 1024;
/// Initial read buffer; grows while blocks fill it.
const FIRST_BLOCK_BYTES: usize = 16 * 1024;
/// Non-blank lines before a candidate that are fed to the ranker: its context,
/// plus one so that the last of them has its own full context.
const TAIL: usize = CONTEXT_LINES + 1;
/// When more than 3 in 4 of the first `DENSE_MIN_LINES` or more lines of a block
/// are prefilter hits, the rest of the block and the next `DENSE_SKIP_BLOCKS`
/// blocks skip the prefilter: every line is a candidate, as in a plain line-by-line
/// scan (the result is the same either way).
const DENSE_MIN_LINES: usize = 64;
const DENSE_SKIP_BLOCKS: u32 = 4;

static TRAVIS_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(TRAVIS_STEP_START));

/// The result of one scan.
pub(crate) struct Scan {
    pub ranked: Ranked,
    pub lines: u64,
    pub bytes: u64,
    pub sections: Vec<(String, u64)>,
}

/// Scans `reader` with `target`'s rules. `use_prefilter = false` feeds every
/// line to the ranker (the reference the prefiltered scan must agree with).
pub(crate) fn scan<R: Read>(target: &Target, reader: R, use_prefilter: bool) -> io::Result<Scan> {
    scan_from(
        target,
        BlockReader::new(reader, FIRST_BLOCK_BYTES),
        use_prefilter,
    )
}

/// [`scan`] of a text in memory (a test's failure message): its read buffer
/// no larger than the text. Messages are short and many (one per failed
/// test of a bulk import); a buffer of [`FIRST_BLOCK_BYTES`] each was a
/// large allocation, and glibc's allocator merges every small free block
/// before it serves one (`malloc_consolidate`: 8 % of a fresh import's
/// reading thread).
pub(crate) fn scan_text(target: &Target, text: &str, use_prefilter: bool) -> io::Result<Scan> {
    let first = (text.len() + 1).min(FIRST_BLOCK_BYTES);
    scan_from(
        target,
        BlockReader::new(text.as_bytes(), first),
        use_prefilter,
    )
}

fn scan_from<R: Read>(
    target: &Target,
    mut blocks: BlockReader<R>,
    use_prefilter: bool,
) -> io::Result<Scan> {
    let mut state = ScanState {
        target,
        use_prefilter,
        sections: Sections::default(),
        ranker: Ranker::new(target.structure),
        lines: 0,
        dense_blocks: 0,
    };
    let mut work = BlockWork::default();
    while let Some((data, terminated)) = blocks.next_block()? {
        state.block(data, terminated, &mut work);
    }
    Ok(Scan {
        ranked: state.ranker.finish(),
        lines: state.lines,
        bytes: blocks.bytes,
        sections: state.sections.done,
    })
}

struct ScanState<'a> {
    target: &'a Target,
    use_prefilter: bool,
    sections: Sections,
    ranker: Ranker,
    /// lines in the blocks before the current one
    lines: u64,
    /// blocks still to scan without the prefilter (see [`DENSE_SKIP_BLOCKS`])
    dense_blocks: u32,
}

/// The lines of one block: `data[starts[i]..end(i)]`, without their `\n`.
struct BlockLines<'b> {
    data: &'b [u8],
    starts: &'b [usize],
    terminated: bool,
}

impl BlockLines<'_> {
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn end(&self, i: usize) -> usize {
        if i + 1 < self.starts.len() {
            self.starts[i + 1] - 1
        } else if self.terminated {
            self.data.len() - 1
        } else {
            self.data.len()
        }
    }

    /// The line holding byte `pos`, which is at or after the start of line `hint`
    /// (scans go forward: the line is usually close to the hint).
    fn of(&self, hint: usize, pos: usize) -> usize {
        let mut i = hint;
        for _ in 0..8 {
            match self.starts.get(i + 1) {
                Some(&next) if next <= pos => i += 1,
                _ => return i,
            }
        }
        i + self.starts[i..].partition_point(|&s| s <= pos) - 1
    }

    /// Line `i`, cut at [`MAX_LINE_BYTES`].
    fn line(&self, i: usize) -> &[u8] {
        let start = self.starts[i];
        &self.data[start..self.end(i).min(start + MAX_LINE_BYTES)]
    }
}

/// Scratch buffers of [`ScanState::block`], reused from block to block.
#[derive(Default)]
struct BlockWork {
    starts: Vec<usize>,
    stream: Vec<u8>,
    candidates: Vec<usize>,
    travis: Vec<usize>,
}

impl ScanState<'_> {
    /// Scans `data`: whole lines, each ending in `\n` except (when `terminated`
    /// is false) the last one.
    fn block(&mut self, data: &[u8], terminated: bool, work: &mut BlockWork) {
        let BlockWork {
            starts,
            stream,
            candidates,
            travis,
        } = work;
        starts.clear();
        candidates.clear();
        travis.clear();
        starts.push(0);
        for nl in memchr::memchr_iter(b'\n', data) {
            if nl - starts[starts.len() - 1] > MAX_LINE_BYTES {
                candidates.push(starts.len() - 1);
            }
            if nl + 1 < data.len() {
                starts.push(nl + 1);
            }
        }
        let lines = BlockLines {
            data,
            starts,
            terminated,
        };

        // lines the prefilter cannot judge
        let (mut from, mut line) = (0, 0);
        while from < data.len() {
            match std::str::from_utf8(&data[from..]) {
                Ok(_) => break,
                Err(e) => {
                    line = lines.of(line, from + e.valid_up_to());
                    candidates.push(line);
                    from = lines.end(line) + 1;
                }
            }
        }

        if self.target.structure {
            self.observe_sections(&lines);
            let (mut from, mut line) = (0, 0);
            while let Some(offset) = TRAVIS_FINDER.find(&data[from..]) {
                line = lines.of(line, from + offset);
                travis.push(line);
                candidates.push(line);
                from = lines.end(line) + 1;
                if from >= data.len() {
                    break;
                }
            }
        }

        let pre = &self.target.prefilter;
        if !self.use_prefilter || pre.is_everything() || self.dense_blocks > 0 {
            self.dense_blocks = self.dense_blocks.saturating_sub(1);
            candidates.extend(0..lines.len());
        } else if !pre.is_nothing() {
            self.prefilter_block(pre, &lines, stream, candidates);
        }
        candidates.sort_unstable();
        candidates.dedup();

        let mut next = 0;
        let mut t = 0;
        for &c in candidates.iter() {
            self.quiet(&lines, next, c);
            let travis_start = travis.get(t) == Some(&c);
            if travis_start {
                t += 1;
            }
            self.candidate(&lines, c, travis_start);
            next = c + 1;
        }
        self.quiet(&lines, next, lines.len());
        self.lines += lines.len() as u64;
    }

    fn prefilter_block(
        &mut self,
        pre: &Prefilter,
        lines: &BlockLines<'_>,
        stream: &mut Vec<u8>,
        candidates: &mut Vec<usize>,
    ) {
        let data = lines.data;
        build_stream(lines, pre.lowercase(), stream);
        let (mut from, mut line, mut hits) = (0, 0, 0);
        let mut dense = false;
        while let Some(pos) = pre.find(stream, from) {
            line = lines.of(line, pos);
            candidates.push(line);
            from = lines.end(line) + 1;
            hits += 1;
            if line >= DENSE_MIN_LINES && hits * 4 > (line + 1) * 3 {
                // Most lines are candidates: searching costs more than
                // it saves, here and probably in the next blocks.
                candidates.extend(line + 1..lines.len());
                self.dense_blocks = DENSE_SKIP_BLOCKS;
                dense = true;
                break;
            }
        }
        let (mut from, mut line) = (0, 0);
        while let Some(pos) = pre.find_flag(data, from).filter(|_| !dense) {
            line = lines.of(line, pos);
            candidates.push(line);
            from = lines.end(line) + 1;
        }
    }

    /// GitLab section markers, wherever they are.
    fn observe_sections(&mut self, lines: &BlockLines<'_>) {
        let data = lines.data;
        let (mut from, mut i) = (0, 0);
        while from < data.len() {
            let Some(offset) = SECTION_FINDER.find(&data[from..]) else {
                break;
            };
            i = lines.of(i, from + offset);
            let decoded = decode(lines.line(i));
            let raw = decoded.trim_end_matches('\r');
            if may_have_section_marker(raw) {
                self.sections.observe(raw);
            }
            from = lines.end(i) + 1;
        }
    }

    /// Lines `a..b` of the block, which match nothing: fed to the ranker only as
    /// far as it needs them.
    fn quiet(&mut self, lines: &BlockLines<'_>, a: usize, b: usize) {
        let mut i = a;
        while i < b && self.ranker.wants_lines() {
            self.feed_quiet(lines, i);
            i += 1;
        }
        // the last TAIL non-blank lines before the next candidate
        let mut tail: Vec<(usize, String)> = Vec::with_capacity(TAIL);
        let mut j = b;
        while j > i && tail.len() < TAIL {
            j -= 1;
            let text = clean_bytes(lines.line(j));
            if !text.trim().is_empty() {
                tail.push((j, text));
            }
        }
        for (j, text) in tail.into_iter().rev() {
            let hit = self.target.quiet_hit(&text);
            self.ranker.line(self.lines + j as u64 + 1, &text, hit);
        }
    }

    fn feed_quiet(&mut self, lines: &BlockLines<'_>, i: usize) {
        let text = clean_bytes(lines.line(i));
        if !text.trim().is_empty() {
            let hit = self.target.quiet_hit(&text);
            self.ranker.line(self.lines + i as u64 + 1, &text, hit);
        }
    }

    /// Line `i` of the block, through the rules.
    fn candidate(&mut self, lines: &BlockLines<'_>, i: usize, travis_start: bool) {
        let line_no = self.lines + i as u64 + 1;
        if travis_start {
            self.ranker.step_starts(line_no);
        }
        let decoded = decode(lines.line(i));
        let raw = decoded.trim_end_matches('\r');
        let clean = clean_line(raw);
        let text: &str = &clean;
        if text.trim().is_empty() {
            return;
        }
        let hit = self.target.hit(text, raw);
        self.ranker.line(line_no, text, hit);
    }
}

/// The block as the prefilter searches it: `stream` gets the bytes of `lines`
/// (ASCII-lowercased when `lowercase`), except that a line with an escape
/// sequence or a `\r` overwrite gets its visible part with ANSI sequences
/// removed, padded to its length with `\n`. So every cleaned line (see
/// [`clean_line`]) is a substring of the stream's region of its line. A trailing
/// `\r` only (CRLF) leaves the line as it is: the cleaned line is a prefix.
fn build_stream(lines: &BlockLines<'_>, lowercase: bool, stream: &mut Vec<u8>) {
    let data = lines.data;
    stream.clear();
    stream.extend_from_slice(data);
    if lowercase {
        stream.make_ascii_lowercase();
    }
    let (mut from, mut i) = (0, 0);
    while from < data.len() {
        let Some(offset) = memchr::memchr2(0x1b, b'\r', &data[from..]) else {
            break;
        };
        i = lines.of(i, from + offset);
        let (start, end) = (lines.starts[i], lines.end(i));
        from = end + 1;
        let line = &data[start..end];
        let core = &line[..line.len() - line.iter().rev().take_while(|&&b| b == b'\r').count()];
        if memchr::memchr2(0x1b, b'\r', core).is_none() {
            continue;
        }
        let visible = match memchr::memrchr(b'\r', core) {
            Some(k) => &core[k + 1..],
            None => core,
        };
        let mut out = start;
        ansi_segments(visible, |a, b| {
            let piece = &mut stream[out..out + (b - a)];
            piece.copy_from_slice(&visible[a..b]);
            if lowercase {
                piece.make_ascii_lowercase();
            }
            out += b - a;
        });
        stream[out..end].fill(b'\n');
    }
}

/// Reads the input a block of whole lines at a time, in bounded memory.
///
/// The buffer starts small and doubles while blocks fill it, up to
/// [`BLOCK_BYTES`]. A line that does not fit is cut at [`MAX_LINE_BYTES`] and its
/// remainder skipped without being stored.
struct BlockReader<R> {
    reader: R,
    /// allocated size = `buf.len()`; input in `buf[..filled]`
    buf: Vec<u8>,
    filled: usize,
    /// length of the prefix handed out by the last `next_block`
    consumed: usize,
    eof: bool,
    /// inside the unread remainder of a cut line
    skipping: bool,
    bytes: u64,
}

impl<R: Read> BlockReader<R> {
    /// A reader of `reader` whose buffer starts at `first` bytes (and
    /// doubles while blocks fill it, up to [`BLOCK_BYTES`]).
    fn new(reader: R, first: usize) -> Self {
        BlockReader {
            reader,
            buf: vec![0u8; first.max(1)],
            filled: 0,
            consumed: 0,
            eof: false,
            skipping: false,
            bytes: 0,
        }
    }

    /// The next block of lines and whether its last line ends in `\n`. Every
    /// line but a cut one or the last line of the input ends in `\n`.
    fn next_block(&mut self) -> io::Result<Option<(&[u8], bool)>> {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        loop {
            self.fill()?;
            if self.skipping {
                match memchr::memchr(b'\n', &self.buf[..self.filled]) {
                    Some(nl) => {
                        self.buf.copy_within(nl + 1..self.filled, 0);
                        self.filled -= nl + 1;
                        self.skipping = false;
                    }
                    None => {
                        self.filled = 0;
                        if self.eof {
                            return Ok(None);
                        }
                    }
                }
                continue;
            }
            if self.filled == 0 {
                return Ok(None);
            }
            if let Some(nl) = memchr::memrchr(b'\n', &self.buf[..self.filled]) {
                self.consumed = nl + 1;
                return Ok(Some((&self.buf[..nl + 1], true)));
            }
            self.consumed = self.filled;
            if self.eof {
                let n = self.filled.min(MAX_LINE_BYTES);
                return Ok(Some((&self.buf[..n], false)));
            }
            // a full buffer without a line end
            self.skipping = true;
            return Ok(Some((&self.buf[..MAX_LINE_BYTES], false)));
        }
    }

    /// Reads until the buffer is full (growing it up to [`BLOCK_BYTES`]) or the
    /// input ends.
    fn fill(&mut self) -> io::Result<()> {
        while !self.eof {
            if self.filled == self.buf.len() {
                if self.buf.len() >= BLOCK_BYTES {
                    return Ok(());
                }
                let grown = (self.buf.len() * 2).min(BLOCK_BYTES);
                self.buf.resize(grown, 0);
            }
            match self.reader.read(&mut self.buf[self.filled..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.filled += n;
                    self.bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
