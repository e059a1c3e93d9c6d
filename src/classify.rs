//! Classification of CI failures from job logs and test failure messages.
//!
//! A [`Classifier`] is compiled once from a list of [`RuleConfig`]s (the
//! `[[classify.rules]]` tables of the config file, or [`Classifier::default_rules`])
//! and then streams logs of any size line by line in bounded memory.
//!
//! # Pipeline
//! 1. The reader hands out blocks of whole lines (up to 1 MiB, in a buffer that starts
//!    at 16 KiB). Lines longer than [`MAX_LINE_BYTES`] are cut for matching and the
//!    rest of the line is skipped without being stored. Invalid UTF-8 is decoded
//!    lossily.
//! 2. GitLab `section_start:TS:name` / `section_end:TS:name` markers are recorded
//!    (section durations end up in [`Classification::sections`]).
//! 3. A byte-level prefilter (see the `prefilter` module) finds, for the whole block
//!    at once, the lines that may match a rule that can still change the result (or
//!    the unknown-error heuristic): ASCII-case-insensitive required literals of the
//!    rules (Teddy / Aho-Corasick), searched in the block's bytes where lines with
//!    escape sequences or `\r` overwrites are replaced by their ANSI-stripped
//!    visible part. It never rejects a line that matches after cleaning; lines it
//!    cannot judge (invalid UTF-8, cut lines) are always candidates.
//! 4. Only candidate lines are decoded and cleaned (see [`strip_ansi_and_sections`]):
//!    `\r` progress overwrites keep the text after the last `\r`, ANSI escapes (CSI,
//!    OSC, others) are removed, then a leading GitHub Actions timestamp and
//!    `##[group]`-style / `::group::`-style markers. Of the other lines only the few
//!    needed as context are cleaned.
//! 5. One [`regex::RegexSet`] pass tells which rules may match a candidate line; only
//!    those are confirmed with their individual [`regex::Regex`].
//!
//! # Which match is decisive
//! * The match of the rule with the highest `priority` wins.
//! * Among matches of equal priority, the earliest line in the log wins.
//! * When several rules match the *same* line, the highest priority wins and ties go
//!   to the rule that comes first in the rule list.
//!
//! The shipped defaults give "the job was stopped from outside" rules the highest
//! priorities (job timeout 110 > lost runner 105 > cancelled 100), then resource
//! exhaustion (OOM, disk full, killed), then network / registry trouble, then
//! dependency resolution, timeouts, build errors, assertions, panics, tracebacks and
//! finally generic "N tests failed" summaries.
//!
//! When no rule matches anywhere, the first line that looks like an error
//! (see [`looks_like_error`]) becomes the primary match with class `"unknown"` and
//! category [`Category::Unknown`]. If nothing looks like an error, `primary` is `None`.

mod prefilter;

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use prefilter::{PatternInfo, Prefilter};

/// Lines longer than this are truncated for matching; the remainder is skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Cap on [`Match::evidence`] and on every entry of [`Match::context`].
pub const EVIDENCE_CAP_BYTES: usize = 1024;
/// Number of (non-blank) context lines kept before and after the evidence line.
pub const CONTEXT_LINES: usize = 3;
/// The class of the fallback match when no rule matched.
pub const UNKNOWN_CLASS: &str = "unknown";

/// Largest block of lines scanned at once (see [`BlockReader`]).
const BLOCK_BYTES: usize = 1024 * 1024;
/// Initial read buffer; grows while blocks fill it.
const FIRST_BLOCK_BYTES: usize = 16 * 1024;
const MAX_SECTIONS: usize = 4096;
const MAX_OPEN_SECTIONS: usize = 64;
const MAX_SECTION_NAME_BYTES: usize = 128;
const MAX_RULE_NAME_BYTES: usize = 64;
/// Per compiled regex set: size of the compiled program and of the lazy DFA cache.
const SET_SIZE_LIMIT: usize = 32 * 1024 * 1024;
const SET_DFA_LIMIT: usize = 8 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// Coarse owner of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Infra,
    Test,
    Build,
    Dependency,
    Timeout,
    Product,
    Unknown,
}

impl Category {
    /// All categories, in declaration order.
    pub const ALL: [Category; 7] = [
        Category::Infra,
        Category::Test,
        Category::Build,
        Category::Dependency,
        Category::Timeout,
        Category::Product,
        Category::Unknown,
    ];

    /// The lowercase name, as used in the config file and as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Infra => "infra",
            Category::Test => "test",
            Category::Build => "build",
            Category::Dependency => "dependency",
            Category::Timeout => "timeout",
            Category::Product => "product",
            Category::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesTo {
    /// CI job logs ([`Classifier::classify_log`]).
    Log,
    /// Test failure messages, e.g. from JUnit XML ([`Classifier::classify_message`]).
    TestMessage,
}

fn default_applies_to() -> Vec<AppliesTo> {
    vec![AppliesTo::Log, AppliesTo::TestMessage]
}

/// A rule as written in the TOML config (`[[classify.rules]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// e.g. `"oom-killed"`; used as a metrics label value, so `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// A Rust regex, matched against one cleaned line at a time.
    pub pattern: String,
    pub category: Category,
    #[serde(default)]
    pub description: String,
    /// Must be an absolute `http://` or `https://` URL.
    #[serde(default)]
    pub known_issue_url: Option<String>,
    /// Defaults to both `log` and `test_message`.
    #[serde(default = "default_applies_to")]
    pub applies_to: Vec<AppliesTo>,
    /// Higher wins when several rules match; ties go to the earliest line, then to
    /// the earlier rule.
    #[serde(default)]
    pub priority: i32,
}

/// Why a rule was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleProblem {
    #[error("invalid name (expected 1-64 characters of [a-z0-9_-])")]
    InvalidName,
    #[error("the name \"unknown\" is reserved for unmatched errors")]
    ReservedName,
    #[error("duplicate name (already used by rule #{0})")]
    DuplicateName(usize),
    #[error("pattern is empty")]
    EmptyPattern,
    #[error("invalid regex: {0}")]
    InvalidRegex(String),
    #[error("pattern matches an empty line, so it would match every line")]
    MatchesEmptyLine,
    #[error("known_issue_url must be an absolute http(s) URL without whitespace, got {0:?}")]
    InvalidUrl(String),
    #[error("applies_to is empty")]
    NoTargets,
}

/// Error building a [`Classifier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// One rule is invalid. Displays as `rule "foo": invalid regex: ...`.
    #[error("rule \"{name}\": {problem}")]
    Rule {
        /// 0-based position in the rule list.
        index: usize,
        name: String,
        problem: RuleProblem,
    },
    /// The rules are individually valid but the combined set is too large.
    #[error("rule set: {0}")]
    RuleSet(String),
}

/// One classified failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    /// Rule name, or `"unknown"` for the fallback.
    pub class: String,
    pub category: Category,
    pub description: String,
    pub known_issue_url: Option<String>,
    /// 1-based line number of the evidence line.
    pub line: u64,
    /// The cleaned evidence line, capped at [`EVIDENCE_CAP_BYTES`].
    pub evidence: String,
    /// Up to 3 non-blank cleaned lines before the evidence followed by up to 3 after
    /// it, each capped at [`EVIDENCE_CAP_BYTES`].
    pub context: Vec<String>,
    /// How many of `context` come before the evidence line.
    pub context_before: usize,
    /// [`fingerprint`] of the evidence.
    pub fingerprint: String,
}

/// Result of [`Classifier::classify_log`].
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Classification {
    /// The decisive match (see the module docs), `None` when nothing failed.
    /// When no rule matched but error-looking lines exist, this is the first such
    /// line with class `"unknown"` and category [`Category::Unknown`].
    pub primary: Option<Match>,
    pub lines_scanned: u64,
    pub bytes_scanned: u64,
    /// Section name -> duration in seconds, from GitLab section markers, in the order
    /// the sections ended (a name appears once per start/end pair).
    pub sections: Vec<(String, u64)>,
}

// ---------------------------------------------------------------------------
// Classifier
// ---------------------------------------------------------------------------

/// Rules compiled for one [`AppliesTo`] target.
#[derive(Debug, Clone)]
struct Target {
    /// Indices into `Classifier::rules`, in rule order.
    rules: Vec<usize>,
    /// Individual regexes (confirmation), parallel to `rules`.
    confirm: Vec<Regex>,
    /// Prefilter over the rules, one pattern per entry of `rules`.
    set: RegexSet,
    /// Same plus the error heuristic as the last pattern (logs only).
    set_with_heuristic: Option<RegexSet>,
    max_priority: i32,
    /// Line prefilter over all rules.
    pre_all: Prefilter,
    /// Same plus the error heuristic (logs only).
    pre_heuristic: Option<Prefilter>,
    /// `(p, prefilter over the rules of priority > p)` for every rule priority
    /// `p` below `max_priority`: once the best match has priority `p`, only those
    /// rules can replace it.
    pre_above: Vec<(i32, Prefilter)>,
}

/// Compiled classifier. Cheap to share (`Send + Sync`); compile once.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<RuleConfig>,
    log: Target,
    message: Target,
}

impl Classifier {
    /// Compiles `rules`. The error names the first invalid rule and the reason.
    pub fn new(rules: &[RuleConfig]) -> Result<Self, ClassifyError> {
        let mut confirm = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            let fail = |problem| ClassifyError::Rule {
                index,
                name: rule.name.clone(),
                problem,
            };
            if !valid_rule_name(&rule.name) {
                return Err(fail(RuleProblem::InvalidName));
            }
            if rule.name == UNKNOWN_CLASS {
                return Err(fail(RuleProblem::ReservedName));
            }
            if let Some(first) = rules[..index].iter().position(|r| r.name == rule.name) {
                return Err(fail(RuleProblem::DuplicateName(first)));
            }
            if rule.pattern.is_empty() {
                return Err(fail(RuleProblem::EmptyPattern));
            }
            let re = RegexBuilder::new(&rule.pattern)
                .build()
                .map_err(|e| fail(RuleProblem::InvalidRegex(one_line(&e.to_string()))))?;
            if re.is_match("") {
                return Err(fail(RuleProblem::MatchesEmptyLine));
            }
            if let Some(url) = &rule.known_issue_url
                && !valid_http_url(url)
            {
                return Err(fail(RuleProblem::InvalidUrl(url.clone())));
            }
            if rule.applies_to.is_empty() {
                return Err(fail(RuleProblem::NoTargets));
            }
            confirm.push(re);
        }
        let log = Target::build(rules, &confirm, AppliesTo::Log, true)?;
        let message = Target::build(rules, &confirm, AppliesTo::TestMessage, false)?;
        Ok(Classifier {
            rules: rules.to_vec(),
            log,
            message,
        })
    }

    /// The classifier with the shipped default rule set.
    pub fn with_defaults() -> Self {
        Classifier::new(&Classifier::default_rules()).expect("default rules are valid")
    }

    /// The shipped default rule set (see `CLASSIFY.md`).
    pub fn default_rules() -> Vec<RuleConfig> {
        DEFAULT_RULES
            .iter()
            .map(|d| RuleConfig {
                name: d.name.to_string(),
                pattern: d.pattern.to_string(),
                category: d.category,
                description: d.description.to_string(),
                known_issue_url: None,
                applies_to: if d.messages {
                    vec![AppliesTo::Log, AppliesTo::TestMessage]
                } else {
                    vec![AppliesTo::Log]
                },
                priority: d.priority,
            })
            .collect()
    }

    /// The rules this classifier was built from.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// Streams a log of any size line by line in bounded memory.
    pub fn classify_log<R: Read>(&self, reader: R) -> io::Result<Classification> {
        let scan = self.scan(&self.log, true, reader)?;
        let primary = match (scan.best, scan.unknown) {
            (Some(best), _) => Some(self.to_match(best)),
            (None, Some(unknown)) => Some(self.to_match(unknown)),
            (None, None) => None,
        };
        Ok(Classification {
            primary,
            lines_scanned: scan.lines,
            bytes_scanned: scan.bytes,
            sections: scan.sections.done,
        })
    }

    /// Classifies a test failure message (possibly multi-line) with the
    /// `test_message` rules only. No "unknown" fallback: `None` when no rule matches.
    pub fn classify_message(&self, msg: &str) -> Option<Match> {
        let scan = self
            .scan(&self.message, false, msg.as_bytes())
            .expect("reading from a byte slice cannot fail");
        scan.best.map(|c| self.to_match(c))
    }

    fn to_match(&self, c: Candidate) -> Match {
        let context_before = c.before.len();
        let mut context = c.before;
        context.extend(c.after);
        let fingerprint = fingerprint(&c.evidence);
        match c.rule {
            Some(i) => {
                let r = &self.rules[i];
                Match {
                    class: r.name.clone(),
                    category: r.category,
                    description: r.description.clone(),
                    known_issue_url: r.known_issue_url.clone(),
                    line: c.line,
                    evidence: c.evidence,
                    context,
                    context_before,
                    fingerprint,
                }
            }
            None => Match {
                class: UNKNOWN_CLASS.to_string(),
                category: Category::Unknown,
                description: "no rule matched; first error-like line".to_string(),
                known_issue_url: None,
                line: c.line,
                evidence: c.evidence,
                context,
                context_before,
                fingerprint,
            },
        }
    }

    fn scan<R: Read>(&self, target: &Target, heuristic: bool, reader: R) -> io::Result<Scan> {
        let mut state = ScanState {
            classifier: self,
            target,
            heuristic,
            sections: Sections::default(),
            ring: Ring::default(),
            best: None,
            unknown: None,
            lines: 0,
            dense_blocks: 0,
        };
        let mut blocks = BlockReader::new(reader);
        let mut work = BlockWork::default();
        while let Some((data, terminated)) = blocks.next_block()? {
            state.block(data, terminated, &mut work);
        }
        Ok(Scan {
            best: state.best,
            unknown: state.unknown,
            lines: state.lines,
            bytes: blocks.bytes,
            sections: state.sections,
        })
    }
}

/// The state of one scan, fed a block of whole lines at a time.
///
/// Per block, the candidate lines are found first: lines the [`Prefilter`] cannot
/// rule out, plus lines it cannot judge (invalid UTF-8, longer than
/// [`MAX_LINE_BYTES`]). Only candidates are decoded, cleaned and run through the
/// rule set, exactly as every line used to be. Of the lines in between, only the
/// few needed as context are cleaned: those after a match that still lacks its
/// [`CONTEXT_LINES`] following lines, and the last non-blank lines before the next
/// candidate. Section markers are observed for every line that has one.
struct ScanState<'a> {
    classifier: &'a Classifier,
    target: &'a Target,
    heuristic: bool,
    sections: Sections,
    ring: Ring,
    best: Option<Candidate>,
    unknown: Option<Candidate>,
    /// lines in the blocks before the current one
    lines: u64,
    /// blocks still to scan without the prefilter (see [`DENSE_SKIP_BLOCKS`])
    dense_blocks: u32,
}

/// When more than 3 in 4 of the first `DENSE_MIN_LINES` or more lines of a block
/// are prefilter hits, the rest of the block and the next `DENSE_SKIP_BLOCKS`
/// blocks skip the prefilter: every line is a candidate, as in a plain line-by-line
/// scan (the result is the same either way).
const DENSE_MIN_LINES: usize = 64;
const DENSE_SKIP_BLOCKS: u32 = 4;

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
}

static SECTION_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"section_"));

impl<'a> ScanState<'a> {
    /// The prefilter for the rules that can still change the result, `None` when
    /// none can.
    fn prefilter(&self) -> Option<&'a Prefilter> {
        let t = self.target;
        match self.best.as_ref().map(|b| b.priority) {
            Some(floor) if floor >= t.max_priority => None,
            Some(floor) => Some(
                t.pre_above
                    .iter()
                    .find(|(p, _)| *p == floor)
                    .map_or(&t.pre_all, |(_, pre)| pre),
            ),
            None if self.heuristic && self.unknown.is_none() => {
                Some(t.pre_heuristic.as_ref().unwrap_or(&t.pre_all))
            }
            None => Some(&t.pre_all),
        }
    }

    /// Scans `data`: whole lines, each ending in `\n` except (when `terminated`
    /// is false) the last one.
    fn block(&mut self, data: &[u8], terminated: bool, work: &mut BlockWork) {
        let BlockWork {
            starts,
            stream,
            candidates,
        } = work;
        starts.clear();
        candidates.clear();
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

        self.observe_sections(&lines);

        match self.prefilter() {
            None => {}
            Some(pre) if pre.is_nothing() => {}
            Some(pre) if pre.is_everything() || self.dense_blocks > 0 => {
                self.dense_blocks = self.dense_blocks.saturating_sub(1);
                candidates.extend(0..lines.len());
            }
            Some(pre) => {
                build_stream(&lines, pre.lowercase(), stream);
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
        }
        candidates.sort_unstable();
        candidates.dedup();

        let mut next = 0;
        for &c in candidates.iter() {
            self.quiet(&lines, next, c);
            self.candidate(&lines, c);
            next = c + 1;
        }
        self.quiet(&lines, next, lines.len());
        self.lines += lines.len() as u64;
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

    fn wants_after(&self) -> bool {
        [self.best.as_ref(), self.unknown.as_ref()]
            .into_iter()
            .flatten()
            .any(|c| c.after.len() < CONTEXT_LINES)
    }

    /// `text` (cleaned, not blank) follows the current candidates.
    fn push_after(&mut self, text: &str) {
        for cand in [self.best.as_mut(), self.unknown.as_mut()]
            .into_iter()
            .flatten()
        {
            if cand.after.len() < CONTEXT_LINES {
                cand.after.push(cap(text, EVIDENCE_CAP_BYTES).to_string());
            }
        }
    }

    /// Lines `a..b` of the block, which no rule that can still change the result
    /// matches: only context is taken from them.
    fn quiet(&mut self, lines: &BlockLines<'_>, a: usize, b: usize) {
        let mut i = a;
        while i < b && self.wants_after() {
            let text = clean_bytes(lines.line(i));
            if !text.trim().is_empty() {
                self.push_after(&text);
            }
            i += 1;
        }
        if self.prefilter().is_none() {
            return; // no further candidate can need the lines before it
        }
        let mut tail: Vec<String> = Vec::with_capacity(CONTEXT_LINES);
        let mut j = b;
        while j > a && tail.len() < CONTEXT_LINES {
            j -= 1;
            let text = clean_bytes(lines.line(j));
            if !text.trim().is_empty() {
                tail.push(text);
            }
        }
        for text in tail.iter().rev() {
            self.ring.push(text);
        }
    }

    /// Line `i` of the block, through the full rule set.
    fn candidate(&mut self, lines: &BlockLines<'_>, i: usize) {
        let target = self.target;
        let rules = &self.classifier.rules;
        let heuristic_index = target.rules.len();
        let line_no = self.lines + i as u64 + 1;
        let decoded = decode(lines.line(i));
        let raw = decoded.trim_end_matches('\r');
        let clean = clean_line(raw);
        let text: &str = &clean;
        let blank = text.trim().is_empty();

        if !blank {
            self.push_after(text);
        }

        let floor = self.best.as_ref().map(|b| b.priority);
        let want_unknown = self.heuristic && floor.is_none() && self.unknown.is_none();
        let set = match (&target.set_with_heuristic, want_unknown) {
            (Some(s), true) => s,
            _ => &target.set,
        };
        let worth_matching = !blank && floor.is_none_or(|f| f < target.max_priority);
        if worth_matching && set.is_match(text) {
            let mut line_best: Option<(usize, i32)> = None;
            let mut heuristic_hit = false;
            for k in set.matches(text).iter() {
                if k == heuristic_index {
                    heuristic_hit = true;
                    continue;
                }
                let rule = target.rules[k];
                let p = rules[rule].priority;
                if line_best.is_some_and(|(_, bp)| p <= bp) {
                    continue;
                }
                if target.confirm[k].is_match(text) {
                    line_best = Some((rule, p));
                }
            }
            if let Some((rule, p)) = line_best {
                if floor.is_none_or(|f| p > f) {
                    self.best = Some(Candidate::new(Some(rule), p, line_no, text, &self.ring));
                    self.unknown = None;
                }
            } else if heuristic_hit && looks_like_error(text) && !is_command_echo(raw) {
                self.unknown = Some(Candidate::new(None, i32::MIN, line_no, text, &self.ring));
            }
        }
        if !blank {
            self.ring.push(text);
        }
    }
}

/// The line as text, invalid UTF-8 replaced by U+FFFD.
fn decode(line: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(line),
    }
}

/// The cleaned text of one raw line (see [`clean_line`]).
fn clean_bytes(line: &[u8]) -> String {
    let decoded = decode(line);
    clean_line(decoded.trim_end_matches('\r')).into_owned()
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
    fn new(reader: R) -> Self {
        BlockReader {
            reader,
            buf: vec![0u8; FIRST_BLOCK_BYTES],
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
                match find_byte(&self.buf[..self.filled], b'\n') {
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

impl Target {
    fn build(
        rules: &[RuleConfig],
        confirm: &[Regex],
        which: AppliesTo,
        heuristic: bool,
    ) -> Result<Self, ClassifyError> {
        let mut idx = Vec::new();
        let mut res = Vec::new();
        let mut pats = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if r.applies_to.contains(&which) {
                idx.push(i);
                res.push(confirm[i].clone());
                pats.push(prefilter_pattern(&r.pattern));
            }
        }
        let build = |pats: &[String]| -> Result<RegexSet, ClassifyError> {
            let compile = |p: &[String]| {
                RegexSetBuilder::new(p)
                    .size_limit(SET_SIZE_LIMIT)
                    .dfa_size_limit(SET_DFA_LIMIT)
                    .build()
            };
            match compile(pats) {
                Ok(s) => Ok(s),
                // The ASCII-boundary rewrite should never break a pattern, but if it
                // does, fall back to the patterns as written.
                Err(_) => {
                    let orig: Vec<String> = idx
                        .iter()
                        .map(|&i| rules[i].pattern.clone())
                        .chain(pats.get(idx.len()).cloned())
                        .collect();
                    compile(&orig).map_err(|e| ClassifyError::RuleSet(one_line(&e.to_string())))
                }
            }
        };
        let set = build(&pats)?;
        let set_with_heuristic = if heuristic {
            let mut with = pats.clone();
            with.push(prefilter_pattern(HEURISTIC_PATTERN));
            Some(build(&with)?)
        } else {
            None
        };
        let max_priority = idx.iter().map(|&i| rules[i].priority).max().unwrap_or(0);

        let infos: Vec<PatternInfo> = idx
            .iter()
            .map(|&i| PatternInfo::new(&rules[i].pattern))
            .collect();
        let above = |floor: Option<i32>| -> Vec<&PatternInfo> {
            idx.iter()
                .zip(&infos)
                .filter(|(i, _)| floor.is_none_or(|f| rules[**i].priority > f))
                .map(|(_, info)| info)
                .collect()
        };
        let pre_all = Prefilter::new(&above(None));
        let pre_heuristic = heuristic.then(|| {
            let info = PatternInfo::new(HEURISTIC_PATTERN);
            let mut with = above(None);
            with.push(&info);
            Prefilter::new(&with)
        });
        let mut priorities: Vec<i32> = idx.iter().map(|&i| rules[i].priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let pre_above = priorities
            .into_iter()
            .filter(|&p| p < max_priority)
            .map(|p| (p, Prefilter::new(&above(Some(p)))))
            .collect();
        Ok(Target {
            rules: idx,
            confirm: res,
            set,
            set_with_heuristic,
            max_priority,
            pre_all,
            pre_heuristic,
            pre_above,
        })
    }
}

fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RULE_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_http_url(url: &str) -> bool {
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        r
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The prefilter form of a pattern: word-boundary assertions (`\b`, `\B`, `\<`, `\>`,
/// `\b{start}`, ...) outside character classes are removed. Dropping an assertion
/// can only make a pattern match more lines, so the prefilter set is a strict
/// superset of the rules, and without Unicode word boundaries the set's lazy DFA
/// never bails out to a slow engine on non-ASCII lines (a Unicode `\b` in a set costs
/// ~100x throughput). Every set hit is confirmed with the original regex.
fn prefilter_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    let mut class_depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let n = chars[i + 1];
            if class_depth == 0 && matches!(n, 'b' | 'B' | '<' | '>') {
                i += 2;
                if n == 'b' && chars.get(i) == Some(&'{') {
                    match chars[i..].iter().position(|&c| c == '}') {
                        Some(close) => i += close + 1,
                        None => return pattern.to_string(),
                    }
                }
                continue;
            }
            out.push(c);
            out.push(n);
            i += 2;
            continue;
        }
        match c {
            '[' => class_depth += 1,
            ']' if class_depth > 0 => class_depth -= 1,
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Scanning state
// ---------------------------------------------------------------------------

struct Scan {
    best: Option<Candidate>,
    unknown: Option<Candidate>,
    lines: u64,
    bytes: u64,
    sections: Sections,
}

struct Candidate {
    /// index into the classifier's rules; `None` = unknown fallback
    rule: Option<usize>,
    priority: i32,
    line: u64,
    evidence: String,
    before: Vec<String>,
    after: Vec<String>,
}

impl Candidate {
    fn new(rule: Option<usize>, priority: i32, line: u64, text: &str, ring: &Ring) -> Self {
        Candidate {
            rule,
            priority,
            line,
            evidence: cap(text.trim_end(), EVIDENCE_CAP_BYTES).to_string(),
            before: ring.lines(),
            after: Vec::with_capacity(CONTEXT_LINES),
        }
    }
}

/// The last [`CONTEXT_LINES`] non-blank cleaned lines, capped, reusing allocations.
#[derive(Default)]
struct Ring {
    slots: [String; CONTEXT_LINES],
    next: usize,
    len: usize,
}

impl Ring {
    fn push(&mut self, line: &str) {
        let slot = &mut self.slots[self.next];
        slot.clear();
        slot.push_str(cap(line.trim_end(), EVIDENCE_CAP_BYTES));
        self.next = (self.next + 1) % CONTEXT_LINES;
        self.len = (self.len + 1).min(CONTEXT_LINES);
    }

    fn lines(&self) -> Vec<String> {
        let start = (self.next + CONTEXT_LINES - self.len) % CONTEXT_LINES;
        (0..self.len)
            .map(|k| self.slots[(start + k) % CONTEXT_LINES].clone())
            .collect()
    }
}

/// GitLab section bookkeeping, bounded.
#[derive(Default)]
struct Sections {
    open: Vec<(String, u64)>,
    done: Vec<(String, u64)>,
}

fn may_have_section_marker(raw: &str) -> bool {
    (raw.starts_with("section_") || memchr::memchr2(b'\r', 0x1b, raw.as_bytes()).is_some())
        && SECTION_FINDER.find(raw.as_bytes()).is_some()
}

impl Sections {
    fn observe(&mut self, raw: &str) {
        let mut rest = raw;
        while let Some(pos) = SECTION_FINDER.find(rest.as_bytes()) {
            let after = &rest[pos + "section_".len()..];
            let (is_start, tail) = if let Some(t) = after.strip_prefix("start:") {
                (true, t)
            } else if let Some(t) = after.strip_prefix("end:") {
                (false, t)
            } else {
                rest = after;
                continue;
            };
            rest = tail;
            let Some((ts, name)) = parse_marker(tail) else {
                continue;
            };
            if is_start {
                if self.open.len() == MAX_OPEN_SECTIONS {
                    self.open.remove(0);
                }
                self.open.push((name.to_string(), ts));
            } else if let Some(k) = self.open.iter().rposition(|(n, _)| n == name) {
                let (n, start) = self.open.remove(k);
                if self.done.len() < MAX_SECTIONS {
                    self.done.push((n, ts.saturating_sub(start)));
                }
            }
        }
    }
}

/// Parses `TS:name` at the start of `s` (after `section_start:`).
fn parse_marker(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let ts: u64 = s[..digits].parse().ok()?;
    let rest = s[digits..].strip_prefix(':')?;
    let len = rest
        .bytes()
        .take_while(|&b| !matches!(b, b'\r' | b'\n' | b'\x1b' | b'[' | b' ' | b'\t'))
        .count()
        .min(MAX_SECTION_NAME_BYTES);
    let name = cap(&rest[..len], MAX_SECTION_NAME_BYTES);
    if name.is_empty() {
        None
    } else {
        Some((ts, name))
    }
}

/// Position of the first `needle` in `hay` (SIMD, via `memchr`).
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// The longest prefix of `s` of at most `max` bytes ending on a char boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------------------
// Line cleaning
// ---------------------------------------------------------------------------

/// Cleans one log line for display and matching:
/// * trailing `\r`/`\n` are dropped, and of a `\r` progress overwrite only the text
///   after the last `\r` is kept (this also drops GitLab `section_start:`/
///   `section_end:` markers, which end in `\r`; a marker without `\r` is cut too);
/// * ANSI escape sequences (CSI such as colours and `\x1b[0K`, OSC such as
///   hyperlinks/titles, and two-byte escapes) are removed;
/// * a leading GitHub Actions timestamp (`2024-01-02T03:04:05.1234567Z `) is removed;
/// * a leading GitHub marker is removed: `##[group]`, `##[endgroup]`, `##[error]`, any
///   `##[word]`, and workflow commands `::group::`, `::endgroup::`, `::error ...::`,
///   `::warning ...::`, `::notice ...::`, `::debug::`;
/// * trailing whitespace is removed.
pub fn strip_ansi_and_sections(line: &str) -> String {
    clean_line(line.trim_end_matches(['\r', '\n'])).into_owned()
}

/// Zero-copy unless the line contains escape sequences.
fn clean_line(raw: &str) -> Cow<'_, str> {
    let visible = match raw.rfind('\r') {
        Some(i) => &raw[i + 1..],
        None => raw,
    };
    if visible.contains('\x1b') {
        let stripped = strip_ansi(visible);
        let kept = strip_prefixes(&stripped);
        if kept.len() == stripped.len() {
            Cow::Owned(stripped)
        } else {
            Cow::Owned(kept.to_string())
        }
    } else {
        Cow::Borrowed(strip_prefixes(visible))
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    ansi_segments(s.as_bytes(), |a, b| out.push_str(&s[a..b]));
    out
}

/// Calls `keep(start, end)` for each run of `b` outside ANSI escape sequences
/// (CSI, OSC/DCS/SOS/PM/APC strings, charset designations, two-byte escapes).
/// In UTF-8 text the runs start and end on char boundaries.
fn ansi_segments(b: &[u8], mut keep: impl FnMut(usize, usize)) {
    let mut seg = 0;
    let mut i = 0;
    while i < b.len() {
        match find_byte(&b[i..], 0x1b) {
            Some(k) => i += k,
            None => break,
        }
        if seg < i {
            keep(seg, i);
        }
        i += 1;
        if i < b.len() {
            match b[i] {
                b'[' => {
                    i += 1;
                    while i < b.len() && (0x30..=0x3f).contains(&b[i]) {
                        i += 1;
                    }
                    while i < b.len() && (0x20..=0x2f).contains(&b[i]) {
                        i += 1;
                    }
                    if i < b.len() && (0x40..=0x7e).contains(&b[i]) {
                        i += 1;
                    }
                }
                // OSC, DCS, SOS, PM, APC: string terminated by BEL or ESC '\'
                b']' | b'P' | b'X' | b'^' | b'_' => {
                    i += 1;
                    while i < b.len() {
                        if b[i] == 0x07 {
                            i += 1;
                            break;
                        }
                        if b[i] == 0x1b {
                            if i + 1 < b.len() && b[i + 1] == b'\\' {
                                i += 2;
                            }
                            break;
                        }
                        i += 1;
                    }
                }
                // charset designation: ESC ( B etc.
                b'(' | b')' | b'*' | b'+' => {
                    i += 1;
                    if i < b.len() && b[i].is_ascii() {
                        i += 1;
                    }
                }
                c if c.is_ascii() && c != 0x1b => i += 1,
                _ => {}
            }
        }
        seg = i;
    }
    if seg < b.len() {
        keep(seg, b.len());
    }
}

fn strip_prefixes(s: &str) -> &str {
    let s = strip_gh_timestamp(s);
    let s = strip_gh_marker(s);
    let s = strip_section_marker(s);
    s.trim_end()
}

/// `YYYY-MM-DDTHH:MM:SS(.f+)?Z ` at the start.
fn strip_gh_timestamp(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() < 21 {
        return s;
    }
    let d = |i: usize| b[i].is_ascii_digit();
    let shape = d(0) && d(1) && d(2) && d(3) && b[4] == b'-' && d(5) && d(6) && b[7] == b'-';
    let shape = shape && d(8) && d(9) && b[10] == b'T' && d(11) && d(12) && b[13] == b':';
    let shape = shape && d(14) && d(15) && b[16] == b':' && d(17) && d(18);
    if !shape {
        return s;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i + 1 < b.len() && b[i] == b'Z' && b[i + 1] == b' ' {
        &s[i + 2..]
    } else if i + 1 == b.len() && b[i] == b'Z' {
        ""
    } else {
        s
    }
}

fn strip_gh_marker(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix("##[") {
        if let Some(end) = rest.find(']') {
            let tag = &rest[..end];
            if !tag.is_empty() && tag.bytes().all(|c| c.is_ascii_lowercase()) {
                return &rest[end + 1..];
            }
        }
        return s;
    }
    if let Some(rest) = s.strip_prefix("::") {
        let cmd_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_lowercase() || *c == b'-')
            .count();
        let cmd = &rest[..cmd_len];
        if matches!(
            cmd,
            "group" | "endgroup" | "error" | "warning" | "notice" | "debug"
        ) && let Some(end) = rest[cmd_len..].find("::")
        {
            let params = &rest[cmd_len..cmd_len + end];
            if params.is_empty() || params.starts_with(' ') {
                return &rest[cmd_len + end + 2..];
            }
        }
    }
    s
}

fn strip_section_marker(s: &str) -> &str {
    let tail = if let Some(t) = s.strip_prefix("section_start:") {
        t
    } else if let Some(t) = s.strip_prefix("section_end:") {
        t
    } else {
        return s;
    };
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = tail[digits..].strip_prefix(':') else {
        return s;
    };
    let name = rest
        .bytes()
        .take_while(|&b| !matches!(b, b'[' | b' ' | b'\t'))
        .count();
    let mut rest = &rest[name..];
    if rest.starts_with('[')
        && let Some(end) = rest.find(']')
    {
        rest = &rest[end + 1..];
    }
    rest
}

// ---------------------------------------------------------------------------
// Unknown-error heuristic
// ---------------------------------------------------------------------------

/// Error words at word boundaries (case-insensitive), or CamelCase `...Error` /
/// `...Exception` type names.
const HEURISTIC_PATTERN: &str = r"(?i:\b(?:error|fatal|failed|failure|panic|panicked|exception|traceback|assert|assertion)\b)|[a-z](?:Error|Exception)\b";

static HEURISTIC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(HEURISTIC_PATTERN).expect("heuristic regex"));

/// Spans that contain error words but mean "no error": `0 errors`, `no failures`,
/// `failed: 0`, `-Wno-error`, `error_log`, `continue-on-error`, `allow_failure`, ...
static NOISE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)\b(?:0|no|zero|without)\s+(?:errors?|failures?|failed|fatal|exceptions?|panics?)\b",
        r"|\b(?:errors?|failures?|failed|exceptions?)\s*[:=]\s*0\b",
        r"|-W(?:no-)?error\S*",
        r"|\berror_log\b",
        r"|\b(?:continue|stop|fail)[-_]on[-_](?:error|failure)\S*",
        r"|\ballow[-_]failures?\S*",
        r"|\bignore[-_]errors?\S*",
        r"|\bfail[-_]fast\S*",
        r"|\bset -e\b",
    ))
    .expect("noise regex")
});

/// Whether a cleaned line looks like an error for the "unknown" fallback: it contains
/// `error`, `fatal`, `failed`, `failure`, `panic`, `exception`, `traceback` or `assert`
/// as a whole word (case-insensitive) or a CamelCase `FooError` / `FooException`, after
/// removing noise such as `0 errors`, `-Werror`, `error_log`. Command echo lines
/// (`$ cmd`, `+ cmd`) are excluded too.
pub fn looks_like_error(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with("$ ") || t.starts_with("+ ") {
        return false;
    }
    if !HEURISTIC.is_match(line) {
        return false;
    }
    if !NOISE.is_match(line) {
        return true;
    }
    HEURISTIC.is_match(&NOISE.replace_all(line, " "))
}

fn is_command_echo(raw: &str) -> bool {
    raw.contains("##[command]")
}

// ---------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------

struct Norm {
    re: Regex,
    rep: fn(&Captures<'_>) -> String,
}

fn norm(pattern: &str, rep: fn(&Captures<'_>) -> String) -> Norm {
    Norm {
        re: Regex::new(pattern).expect("normalisation regex"),
        rep,
    }
}

fn group(c: &Captures<'_>, i: usize) -> String {
    c.get(i).map_or(String::new(), |m| m.as_str().to_string())
}

static NORMALISERS: LazyLock<Vec<Norm>> = LazyLock::new(|| {
    vec![
        // temporary paths (before anything that would eat their digits)
        norm(
            concat!(
                r#"(?:/private)?/var/folders/[^\s'"`,;:)\]]+"#,
                r#"|/(?:var/)?tmp/[^\s'"`,;:)\]]+"#,
                r#"|/home/runner/work/_temp/[^\s'"`,;:)\]]+"#,
                r#"|(?i:[a-z]:\\Users\\[^\\\s]+\\AppData\\Local\\Temp)(?:\\[^\s'"`,;:)\]]*)?"#,
                r#"|(?i:[a-z]:\\a\\_temp)(?:\\[^\s'"`,;:)\]]*)?"#,
            ),
            |_| "<tmp>".into(),
        ),
        // ISO timestamps and dates
        norm(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2}|\s?UTC)?)?\b",
            |_| "<ts>".into(),
        ),
        norm(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b", |_| "<ts>".into()),
        norm(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z\b)?", |_| {
            "<ts>".into()
        }),
        // UUIDs
        norm(
            r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
            |_| "<uuid>".into(),
        ),
        // IPv4 with optional port
        norm(r"\b(?:\d{1,3}\.){3}\d{1,3}\b(:\d{1,5}\b)?", |c| {
            if c.get(1).is_some() {
                "<ip>:<port>".into()
            } else {
                "<ip>".into()
            }
        }),
        // IPv6 (compressed or full); checked below for context
        norm(
            r"(?i)(^|[^\w:.])((?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4})(\]:\d{1,5}\b)?",
            |c| {
                let addr = &c[2];
                let ok = addr.bytes().any(|b| b.is_ascii_digit())
                    && (addr.contains("::") || addr.bytes().filter(|&b| b == b':').count() == 7)
                    && !addr.contains(":::");
                if !ok {
                    return c[0].to_string();
                }
                let port = if c.get(3).is_some() { "]:<port>" } else { "" };
                format!("{}<ip>{port}", &c[1])
            },
        ),
        // host:port for localhost and dotted host names with a common TLD
        norm(
            r"(?i)\b(localhost|(?:[a-z0-9-]+\.)+(?:com|net|org|io|dev|local|internal|cloud|app|svc)):\d{1,5}\b",
            |c| format!("{}:<port>", &c[1]),
        ),
        // 0x... (memory addresses) and hex ids of 7+ chars with a digit and a letter
        norm(r"\b0[xX][0-9a-fA-F]+\b", |_| "<hex>".into()),
        norm(r"\b[0-9a-fA-F]{7,}\b", |c| {
            let s = &c[0];
            if s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic()) {
                "<hex>".into()
            } else {
                s.to_string()
            }
        }),
        // durations: 12.3s, 450ms, 1h0m0s, 30 seconds
        norm(
            concat!(
                r"(^|[^A-Za-z0-9_.])",
                r"((?:\d+(?:\.\d+)?(?:ns|us|µs|ms|h|m|s))+",
                r"|\d+(?:\.\d+)?\s?(?:secs?|seconds?|mins?|minutes?|hrs?|hours?|milliseconds?))\b",
            ),
            |c| format!("{}<dur>", group(c, 1)),
        ),
        // remaining numbers that are not part of an identifier (E0308 stays)
        norm(r"(^|[^A-Za-z0-9_])\d+(?:\.\d+)*", |c| {
            format!("{}<num>", group(c, 1))
        }),
    ]
});

/// Normalises a line so that lines differing only in volatile details cluster:
/// temporary paths become `<tmp>`, timestamps/dates/times `<ts>`, UUIDs `<uuid>`,
/// IPv4/IPv6 addresses `<ip>` (with `:<port>`), `0x...` and 7+ character hex ids
/// (with at least one digit and one letter) `<hex>`, durations `<dur>`, other numbers
/// not glued to a letter `<num>`; whitespace is collapsed and trimmed. ANSI escapes
/// and CI markers are stripped first.
pub fn normalize_fingerprint(line: &str) -> String {
    let mut s = strip_ansi_and_sections(line);
    for n in NORMALISERS.iter() {
        if n.re.is_match(&s) {
            s = n.re.replace_all(&s, n.rep).into_owned();
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Short stable id: the first 16 hex digits of SHA-256 of [`normalize_fingerprint`].
pub fn fingerprint(line: &str) -> String {
    let digest = Sha256::digest(normalize_fingerprint(line).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// grep export
// ---------------------------------------------------------------------------

/// The default rule patterns translated to POSIX ERE as accepted by `grep -E`
/// (GNU extensions `\b`, `\s`, `\S`, `\w` are kept; `(?i)` becomes bracket pairs,
/// `\d` becomes `[0-9]`, `(?:` becomes `(`, lazy quantifiers become greedy). One
/// pattern per default rule, in rule order: `grep -E -c -f patterns` counts the same
/// lines the classifier's prefilter considers.
pub fn default_patterns_for_grep() -> Vec<String> {
    DEFAULT_RULES
        .iter()
        .map(|d| rust_regex_to_ere(d.pattern).expect("default patterns translate to ERE"))
        .collect()
}

/// Translates the subset of Rust regex syntax used by the default rules to ERE.
fn rust_regex_to_ere(pattern: &str) -> Result<String, String> {
    let (fold, body) = match pattern.strip_prefix("(?i)") {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::with_capacity(body.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let n = *chars.get(i + 1).ok_or("trailing backslash")?;
                match n {
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    'b' | 'B' | 's' | 'S' | 'w' | 'W' => {
                        out.push('\\');
                        out.push(n);
                    }
                    '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '|' | '{' | '}' | '\\'
                    | '^' | '$' => {
                        out.push('\\');
                        out.push(n);
                    }
                    c if c.is_ascii_punctuation() || c == ' ' => out.push(c),
                    other => return Err(format!("unsupported escape \\{other}")),
                }
                i += 2;
            }
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    if chars.get(i + 2) == Some(&':') {
                        i += 3;
                    } else {
                        return Err("unsupported group flags".into());
                    }
                } else {
                    i += 1;
                }
                out.push('(');
            }
            '[' => {
                let mut j = i + 1;
                let mut negate = false;
                if chars.get(j) == Some(&'^') {
                    negate = true;
                    j += 1;
                }
                let mut class = String::new();
                let mut first = true;
                loop {
                    let ch = *chars.get(j).ok_or("unterminated class")?;
                    if ch == ']' && !first {
                        break;
                    }
                    first = false;
                    if ch == '\\' {
                        match chars.get(j + 1) {
                            Some('d') => class.push_str("0-9"),
                            _ => return Err("unsupported escape in class".into()),
                        }
                        j += 2;
                        continue;
                    }
                    if ch == '[' {
                        return Err("nested classes are not supported".into());
                    }
                    class.push(ch);
                    j += 1;
                }
                if fold {
                    // ranges like a-f gain A-F; single letters their other case
                    let extra = swapped_class(&class);
                    class.push_str(&extra);
                }
                out.push('[');
                if negate {
                    out.push('^');
                }
                out.push_str(&class);
                out.push(']');
                i = j + 1;
            }
            '*' | '+' | '?' | '}' => {
                out.push(c);
                i += 1;
                // drop a lazy marker
                if chars.get(i) == Some(&'?') {
                    i += 1;
                }
            }
            c if fold && c.is_ascii_alphabetic() => {
                out.push('[');
                out.push(c.to_ascii_lowercase());
                out.push(c.to_ascii_uppercase());
                out.push(']');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The other-case counterpart of the letters and letter ranges in a class body.
fn swapped_class(class: &str) -> String {
    let cs: Vec<char> = class.chars().collect();
    let mut out = String::new();
    let mut k = 0;
    while k < cs.len() {
        let swap = |c: char| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        };
        if k + 2 < cs.len() && cs[k + 1] == '-' && cs[k].is_ascii_alphabetic() {
            out.push(swap(cs[k]));
            out.push('-');
            out.push(swap(cs[k + 2]));
            k += 3;
        } else {
            if cs[k].is_ascii_alphabetic() {
                out.push(swap(cs[k]));
            }
            k += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Default rules
// ---------------------------------------------------------------------------

struct DefaultRule {
    name: &'static str,
    category: Category,
    priority: i32,
    /// also applies to test failure messages
    messages: bool,
    pattern: &'static str,
    description: &'static str,
}

const fn rule(
    name: &'static str,
    category: Category,
    priority: i32,
    messages: bool,
    pattern: &'static str,
    description: &'static str,
) -> DefaultRule {
    DefaultRule {
        name,
        category,
        priority,
        messages,
        pattern,
        description,
    }
}

use Category::{Build, Dependency, Infra, Product, Test, Timeout};

/// Order matters for ties (same priority, same line): earlier wins.
/// Patterns stay within the subset `rust_regex_to_ere` understands.
static DEFAULT_RULES: &[DefaultRule] = &[
    rule(
        "job-timeout",
        Timeout,
        110,
        false,
        r"(?i)has exceeded the maximum execution time|execution took longer than|\bBuild timed out \(after|\bjob exceeded (?:the )?maximum (?:execution )?time",
        "The CI system stopped the job at its maximum execution time (GitHub timeout-minutes, GitLab job timeout, Jenkins build-timeout).",
    ),
    rule(
        "runner-lost",
        Infra,
        105,
        false,
        r"(?i)The runner has received a shutdown signal|lost communication with the server|Runner system failure|\bAgent went offline during the build|ChannelClosedException|The hosted runner encountered an error",
        "The runner/agent went away during the job (shutdown, lost connection, runner system failure).",
    ),
    rule(
        "cancelled",
        Infra,
        100,
        false,
        r"(?i)The operation was cancell?ed|\bjob (?:was )?cancell?ed\b|\bcancell?ed by user\b|\bAborted by \S+|\bFinished: ABORTED\b|Job failed: cancell?ed\b",
        "The job was cancelled or aborted by a user or by the CI system (not a failure of the code).",
    ),
    rule(
        "oom",
        Infra,
        90,
        true,
        r"(?i)\bout of memory\b|\bOOMKilled\b|\bOOM[- ]killed\b|Cannot allocate memory|java\.lang\.OutOfMemoryError|\bMemoryError\b|memory allocation of \d+ bytes failed|\bENOMEM\b",
        "A process ran out of memory (kernel OOM killer, JVM/Node heap, allocation failure).",
    ),
    rule(
        "disk-full",
        Infra,
        90,
        true,
        r"(?i)No space left on device|\bENOSPC\b|Disk quota exceeded|not enough space on the disk|running out of disk space",
        "The runner's disk filled up.",
    ),
    rule(
        "killed",
        Infra,
        80,
        true,
        r"^Killed\s*$|\d\s+Killed(?:\s|$)|\bKilled signal terminated program\b|\bsignal: killed\b|\bSIGKILL\b|\bsignal 9\b|\bexit code 137\b|\bexit status 137\b|\bexited with code 137\b",
        "A process was killed with SIGKILL (exit code 137), usually by the OOM killer or the runner.",
    ),
    rule(
        "rate-limited",
        Infra,
        70,
        true,
        r"(?i)\brate limit exceeded\b|\b429 Too Many Requests\b|\btoomanyrequests\b|reached your pull rate limit|secondary rate limit|\bstatus(?: code)?:? 429\b",
        "An external service (GitHub API, Docker Hub, package registry) rate-limited the job.",
    ),
    rule(
        "docker-pull-failed",
        Infra,
        70,
        false,
        r#"(?i)\bpull access denied\b|\bmanifest (?:for \S+ )?(?:not found|unknown)\b|failed to pull image|\bErrImagePull\b|\bImagePullBackOff\b|Error response from daemon: Get "?https?:|\bError: failed to pull\b"#,
        "A container image could not be pulled (missing tag, auth, registry unreachable).",
    ),
    rule(
        "dns-resolution",
        Infra,
        60,
        true,
        r"(?i)Could not resolve host|Temporary failure in name resolution|Name or service not known|\bgetaddrinfo ENOTFOUND\b|\bgetaddrinfo EAI_AGAIN\b|\bno such host\b|nodename nor servname provided",
        "A host name could not be resolved (DNS failure).",
    ),
    rule(
        "tls-handshake-timeout",
        Infra,
        60,
        true,
        r"(?i)\bTLS handshake timeout\b|\bTLS handshake timed out\b|\bSSL handshake timed out\b|\bSSL handshake timeout\b",
        "A TLS handshake with a remote service timed out.",
    ),
    rule(
        "connection-refused",
        Infra,
        50,
        true,
        r"(?i)\bConnection refused\b|\bECONNREFUSED\b",
        "A network connection was refused (service down or not yet started).",
    ),
    rule(
        "connection-reset",
        Infra,
        50,
        true,
        r"(?i)\bConnection reset by peer\b|\bECONNRESET\b|\bConnectionResetError\b",
        "A network connection was reset by the remote side.",
    ),
    rule(
        "segfault",
        Product,
        45,
        true,
        r"(?i)\bSegmentation fault\b|\bSIGSEGV\b|\bcore dumped\b|\bsignal 11\b|\bexit code 139\b|\bexit status 139\b",
        "A process crashed with a segmentation fault (SIGSEGV, exit code 139).",
    ),
    rule(
        "dependency-pip",
        Dependency,
        40,
        true,
        r"\bResolutionImpossible\b|No matching distribution found for|Could not find a version that satisfies the requirement",
        "pip could not resolve or find a Python dependency.",
    ),
    rule(
        "dependency-npm",
        Dependency,
        40,
        true,
        r"\bERESOLVE\b|unable to resolve dependency tree|\bETARGET\b|No matching version found for",
        "npm could not resolve the JavaScript dependency tree.",
    ),
    rule(
        "dependency-cargo",
        Dependency,
        40,
        true,
        r"failed to select a version for|no matching package named|no matching package found|failed to get `[^`]+` as a dependency",
        "cargo could not resolve a Rust dependency.",
    ),
    rule(
        "dependency-jvm",
        Dependency,
        40,
        true,
        r"Could not resolve dependencies for project|Could not resolve all (?:files|dependencies|artifacts) for configuration|Could not find artifact|Failed to collect dependencies at",
        "Maven or Gradle could not resolve a dependency.",
    ),
    rule(
        "dependency-julia",
        Dependency,
        40,
        true,
        r"Unsatisfiable requirements",
        "Julia's Pkg resolver found unsatisfiable requirements.",
    ),
    rule(
        "deadline-exceeded",
        Timeout,
        35,
        true,
        r"(?i)\bdeadline[ _]exceeded\b",
        "An RPC or context deadline was exceeded (Go context, gRPC DEADLINE_EXCEEDED).",
    ),
    rule(
        "timed-out",
        Timeout,
        30,
        true,
        r"(?i)\btimed out\b|\bTimeoutError\b|\bTimeoutException\b|\btime ?out (?:exceeded|expired|reached|occurred|waiting)\b|\btimeout of \d+ ?ms exceeded\b",
        "An operation or test timed out.",
    ),
    rule(
        "rust-compile-error",
        Build,
        25,
        false,
        r"^error\[E\d{4}\]|^error: could not compile\b|^error: linking with\b|^error: aborting due to\b",
        "rustc failed to compile the code.",
    ),
    rule(
        "c-compile-error",
        Build,
        25,
        false,
        r"\.(?:c|cc|cpp|cxx|c\+\+|h|hh|hpp|hxx|m|mm|cu):\d+(?::\d+)?: (?:fatal )?error:|\): (?:fatal )?error C\d{4}:",
        "A C/C++/Objective-C/CUDA compiler (gcc, clang, MSVC) reported an error.",
    ),
    rule(
        "linker-error",
        Build,
        25,
        false,
        r"undefined reference to|ld: symbol\(s\) not found|collect2: error: ld returned|ld: cannot find -l|\berror LNK\d{4}\b|ld returned \d+ exit status",
        "The linker failed (undefined symbols, missing libraries).",
    ),
    rule(
        "javac-error",
        Build,
        25,
        false,
        r"\.java:\d+: error:|\[ERROR\] \S+\.java:\[\d+,\d+\]|\bCOMPILATION ERROR\b|\bCompilation failure\b",
        "javac (directly or via Maven/Gradle) failed to compile Java code.",
    ),
    rule(
        "tsc-error",
        Build,
        25,
        false,
        r"\berror TS\d{4,5}:",
        "The TypeScript compiler reported a type error.",
    ),
    rule(
        "syntax-error",
        Build,
        25,
        true,
        r"\bSyntaxError\b|\bIndentationError\b|syntax error near unexpected token|syntax error, unexpected",
        "A syntax error in Python, JavaScript, shell or a parser-generated language.",
    ),
    rule(
        "assertion-failed",
        Test,
        20,
        true,
        r"\bAssertionError\b|\b[Aa]ssertion failed\b|\bassertion `[^`]*` failed|\bAssertionFailedError\b|Assertion `[^']*' failed|\bassert_eq!|\bassert_ne!|^E\s+assert ",
        "A test assertion failed (Python, Rust, JUnit, C assert, pytest).",
    ),
    rule(
        "expected-mismatch",
        Test,
        20,
        true,
        r"(?i)\bexpected\b.*\bbut (?:got|was|received|found)\b",
        "A test compared values: \"expected X but got Y\".",
    ),
    rule(
        "panic",
        Product,
        15,
        true,
        r"\bpanicked at\b|^panic: |^goroutine \d+ \[running\]:",
        "A Rust or Go program panicked (unexpected crash of the code under test).",
    ),
    rule(
        "python-traceback",
        Product,
        10,
        true,
        r"^\s*Traceback \(most recent call last\):",
        "An uncaught Python exception; assertion errors are classified by higher-priority rules first.",
    ),
    rule(
        "tests-failed",
        Test,
        5,
        false,
        r"test result: FAILED|^FAILED \S|\bTests run: \d+, Failures: [1-9]|\bTests run: \d+, Failures: \d+, Errors: [1-9]|[1-9]\d* (?:failed|failing)\b|^--- FAIL: ",
        "A test runner's summary reports failed tests (the individual failure was not recognised).",
    ),
];

// ---------------------------------------------------------------------------
// Unit tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(text: &str) -> Classification {
        Classifier::with_defaults()
            .classify_log(text.as_bytes())
            .unwrap()
    }

    fn class_of(text: &str) -> Option<String> {
        classify(text).primary.map(|m| m.class)
    }

    /// (rule, a realistic line it must classify as, a near miss it must not match)
    const RULE_EXAMPLES: &[(&str, &str, &str)] = &[
        (
            "job-timeout",
            "##[error]The job running on runner GitHub Actions 3 has exceeded the maximum execution time of 60 minutes.",
            "Job timeout is set to 60 minutes",
        ),
        (
            "runner-lost",
            "##[error]The runner has received a shutdown signal. This can happen when the runner service is stopped, or a manually started runner is canceled.",
            "Runner registered with the server successfully",
        ),
        (
            "cancelled",
            "##[error]The operation was canceled.",
            "Cancelling stale workflow runs: none found, the job was not cancelled",
        ),
        (
            "oom",
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
            "Memory usage: 1.2 GiB of 7 GiB, out-of-memory guard disabled",
        ),
        (
            "disk-full",
            "write /var/lib/docker/tmp/GetImageBlob123: no space left on device",
            "Free space left on device /dev/sda1: 20G",
        ),
        (
            "killed",
            "/bin/bash: line 142:  8123 Killed                  cargo test --workspace",
            "Killed 3 stale docker containers before starting",
        ),
        (
            "rate-limited",
            "Error response from daemon: toomanyrequests: You have reached your pull rate limit.",
            "Rate limit remaining: 4999 of 5000",
        ),
        (
            "docker-pull-failed",
            "ERROR: Job failed: failed to pull image \"registry.example.com/ci/builder:42\" with specified policies [always]: Error response from daemon: manifest for registry.example.com/ci/builder:42 not found: manifest unknown",
            "Pulling docker image rust:1.80 ... done",
        ),
        (
            "dns-resolution",
            "fatal: unable to access 'https://github.com/org/repo.git/': Could not resolve host: github.com",
            "Resolved host github.com to 140.82.112.3",
        ),
        (
            "tls-handshake-timeout",
            "go: github.com/org/lib@v1.2.3: Get \"https://proxy.golang.org/github.com/org/lib/@v/v1.2.3.zip\": net/http: TLS handshake timeout",
            "TLS handshake completed in 120ms",
        ),
        (
            "connection-refused",
            "psycopg2.OperationalError: connection to server at \"localhost\" (127.0.0.1), port 5432 failed: Connection refused",
            "Connection accepted from 10.0.0.5",
        ),
        (
            "connection-reset",
            "error: RPC failed; curl 56 OpenSSL SSL_read: Connection reset by peer, errno 104",
            "Resetting connection pool after config change",
        ),
        (
            "segfault",
            "/tmp/run.sh: line 3:  4242 Segmentation fault      (core dumped) ./target/debug/app",
            "Segmentation of the test suite into 4 shards",
        ),
        (
            "dependency-pip",
            "ERROR: No matching distribution found for torch==9.9.9",
            "Successfully installed requests-2.31.0 urllib3-2.2.1",
        ),
        (
            "dependency-npm",
            "npm ERR! code ERESOLVE",
            "added 1201 packages, and audited 1202 packages in 12s",
        ),
        (
            "dependency-cargo",
            "error: failed to select a version for `serde`.",
            "    Locking 120 packages to latest compatible versions",
        ),
        (
            "dependency-jvm",
            "[ERROR] Failed to execute goal on project app: Could not resolve dependencies for project com.example:app:jar:1.0: Could not find artifact com.example:lib:jar:2.0 in central",
            "Downloaded from central: https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/2.0.9/slf4j-api-2.0.9.pom",
        ),
        (
            "dependency-julia",
            "ERROR: LoadError: Unsatisfiable requirements detected for package DataFrames [a93c6f00]:",
            "   Resolving package versions...",
        ),
        (
            "deadline-exceeded",
            "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
            "deadline set to 2024-12-01 for the migration",
        ),
        (
            "timed-out",
            "Connection to 10.0.0.3:5432 timed out after 30s",
            "Setting timeout to 300 seconds",
        ),
        (
            "rust-compile-error",
            "error[E0308]: mismatched types",
            "error: test failed, to rerun pass `-p app --lib`",
        ),
        (
            "c-compile-error",
            "src/parser.c:12:3: error: 'foo' undeclared (first use in this function)",
            "src/parser.c:12:3: warning: unused variable 'x' [-Wunused-variable]",
        ),
        (
            "linker-error",
            "/usr/bin/ld: main.o: in function `main': main.c:(.text+0x1a): undefined reference to `foo'",
            "[100%] Linking CXX executable bin/app",
        ),
        (
            "javac-error",
            "src/main/java/com/example/App.java:17: error: cannot find symbol",
            "[WARNING] /src/main/java/com/example/App.java:[12,8] [deprecation] Bar in Baz has been deprecated",
        ),
        (
            "tsc-error",
            "src/index.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.",
            "Found 0 errors. Watching for file changes.",
        ),
        (
            "syntax-error",
            "SyntaxError: Unexpected token '}' (12:4)",
            "Checking syntax of 42 files... ok",
        ),
        (
            "assertion-failed",
            "E       AssertionError: assert 3 == 4",
            "Running assertion suite: 42 checks registered",
        ),
        (
            "expected-mismatch",
            "    math_test.go:12: expected 4 but got 5",
            "Expected 42 tests to run",
        ),
        (
            "panic",
            "thread 'tests::it_parses' panicked at src/lib.rs:42:9:",
            "Don't panic: retrying in 5s",
        ),
        (
            "python-traceback",
            "Traceback (most recent call last):",
            "See the traceback above for details",
        ),
        (
            "tests-failed",
            "test result: FAILED. 10 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
            "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        ),
    ];

    fn rule_regex(name: &str) -> Regex {
        let r = Classifier::default_rules()
            .into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no default rule {name}"));
        Regex::new(&r.pattern).unwrap()
    }

    #[test]
    fn context_before_says_where_the_evidence_sits_among_its_context_lines() {
        let c = Classifier::new(&[RuleConfig {
            name: "boom".into(),
            pattern: "BOOM".into(),
            category: Category::Test,
            description: "d".into(),
            known_issue_url: None,
            applies_to: vec![AppliesTo::Log],
            priority: 0,
        }])
        .unwrap();
        let at = |log: &str| {
            let m = c.classify_log(log.as_bytes()).unwrap().primary.unwrap();
            (m.line, m.context_before, m.context.len())
        };
        assert_eq!(at("BOOM\na\nb\nc\nd\n"), (1, 0, 3));
        // Blank lines are not context; at most 3 on each side.
        assert_eq!(at("a\n\nb\nBOOM\nc\n"), (4, 2, 3));
        assert_eq!(at("a\nb\nc\nd\ne\nBOOM\n"), (6, 3, 3));
    }

    #[test]
    fn every_default_rule_has_an_example_and_a_near_miss() {
        let names: Vec<String> = Classifier::default_rules()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let covered: Vec<&str> = RULE_EXAMPLES.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, covered);
        assert!((20..=32).contains(&names.len()));
    }

    #[test]
    fn each_default_rule_classifies_its_realistic_line() {
        for (name, hit, _) in RULE_EXAMPLES {
            let c = classify(hit);
            let m = c
                .primary
                .unwrap_or_else(|| panic!("{name}: no match for {hit:?}"));
            assert_eq!(&m.class, name, "line {hit:?}");
            assert_eq!(m.line, 1);
            assert_eq!(m.evidence, strip_ansi_and_sections(hit));
        }
    }

    #[test]
    fn each_default_rule_ignores_its_near_miss() {
        for (name, _, miss) in RULE_EXAMPLES {
            assert!(!rule_regex(name).is_match(miss), "{name} matched {miss:?}");
            assert_ne!(class_of(miss).as_deref(), Some(*name), "{miss:?}");
        }
    }

    #[test]
    fn each_default_rule_matches_through_the_prefilter_rewrite() {
        for (name, hit, miss) in RULE_EXAMPLES {
            let r = Classifier::default_rules()
                .into_iter()
                .find(|r| r.name == *name)
                .unwrap();
            let pre = Regex::new(&prefilter_pattern(&r.pattern)).unwrap();
            assert!(pre.is_match(hit), "{name}");
            // with non-ASCII around it the Unicode rule still matches
            let decorated = format!("{hit} — ✓ é");
            assert!(pre.is_match(&decorated), "{name}: {decorated}");
            assert_eq!(pre.is_match(miss), rule_regex(name).is_match(miss));
        }
    }

    #[test]
    fn prefilter_drops_word_boundary_assertions_only() {
        let table = [
            (r"\bfoo\b", r"foo"),
            (r"\b(?:a|b)\B", r"(?:a|b)"),
            (r"x\\b", r"x\\b"),
            (r"\b{start}x\b{end}", r"x"),
            (r"\<x\>", r"x"),
            (r"[\b]", r"[\b]"),
            (r"é\b\d", r"é\d"),
            (r"(?-u:\b)x", r"(?-u:)x"),
        ];
        for (input, want) in table {
            assert_eq!(prefilter_pattern(input), want, "{input}");
        }
    }

    #[test]
    fn the_compiled_prefilter_sets_contain_no_word_boundaries() {
        // a Unicode \b in a RegexSet makes non-ASCII lines ~100x slower
        let c = Classifier::with_defaults();
        let sets = [
            &c.log.set,
            c.log.set_with_heuristic.as_ref().unwrap(),
            &c.message.set,
        ];
        for set in sets {
            for p in set.patterns() {
                assert!(!p.contains(r"\b"), "{p}");
            }
        }
    }

    #[test]
    fn a_higher_priority_rule_wins_over_an_earlier_line() {
        let log = "test foo ... FAILED\nAssertionError: boom\nKilled\n";
        let m = classify(log).primary.unwrap();
        assert_eq!((m.class.as_str(), m.line), ("killed", 3));
    }

    #[test]
    fn with_equal_priority_the_earliest_line_wins() {
        let log = "error[E0308]: mismatched types\nsrc/a.c:1:2: error: nope\n";
        let m = classify(log).primary.unwrap();
        assert_eq!((m.class.as_str(), m.line), ("rust-compile-error", 1));
    }

    #[test]
    fn on_one_line_equal_priorities_go_to_the_earlier_rule() {
        // rate-limited and docker-pull-failed both have priority 70
        let line = "Error response from daemon: toomanyrequests: pull access denied";
        assert_eq!(class_of(line).as_deref(), Some("rate-limited"));
    }

    #[test]
    fn job_timeout_beats_the_cancellation_that_follows_it() {
        let log = "##[error]The job running on runner X has exceeded the maximum execution time of 5 minutes.\n##[error]The operation was canceled.\n";
        assert_eq!(class_of(log).as_deref(), Some("job-timeout"));
    }

    #[test]
    fn a_lost_runner_beats_a_test_failure_and_the_cancellation() {
        let log = "AssertionError: x\nThe runner has received a shutdown signal.\nThe operation was canceled.\n";
        assert_eq!(class_of(log).as_deref(), Some("runner-lost"));
    }

    #[test]
    fn an_assertion_beats_the_rust_panic_line_before_it() {
        let log = "thread 'it' panicked at src/lib.rs:1:1:\nassertion `left == right` failed\n  left: 1\n right: 2\n";
        let m = classify(log).primary.unwrap();
        assert_eq!((m.class.as_str(), m.line), ("assertion-failed", 2));
        assert_eq!(
            m.context,
            vec![
                "thread 'it' panicked at src/lib.rs:1:1:",
                "  left: 1",
                " right: 2"
            ]
        );
    }

    #[test]
    fn unknown_errors_fall_back_to_the_first_error_like_line() {
        let table: &[(&str, Option<(u64, &str)>)] = &[
            (
                "all good\nsomething exploded: Error in module\nfailed again\n",
                Some((2, "something exploded: Error in module")),
            ),
            ("compiling\nbuild finished with 0 errors\n", None),
            ("cc -Werror -Wall main.c\n", None),
            ("tail -f error_log\n", None),
            ("gcc -Wno-error=unused main.c\n", None),
            ("test result: ok. 3 passed; 0 failed\n", None),
            ("$ make || echo \"build failed\"\n", None),
            ("+ test -f out || echo failed\n", None),
            ("##[command]bash -c 'exit_on_error failed'\n", None),
            (
                "  File \"x.py\", line 3\nValueError: invalid literal\n",
                Some((2, "ValueError: invalid literal")),
            ),
            (
                "java.lang.NullPointerException: x is null\n",
                Some((1, "java.lang.NullPointerException: x is null")),
            ),
            (
                "Fatal: could not read Username\n",
                Some((1, "Fatal: could not read Username")),
            ),
            ("ok\n", None),
            ("", None),
        ];
        for (log, want) in table {
            let got = classify(log).primary;
            match want {
                None => assert_eq!(got, None, "{log:?}"),
                Some((line, ev)) => {
                    let m = got.unwrap_or_else(|| panic!("no match for {log:?}"));
                    assert_eq!(m.class, UNKNOWN_CLASS);
                    assert_eq!(m.category, Category::Unknown);
                    assert_eq!((m.line, m.evidence.as_str()), (*line, *ev), "{log:?}");
                    assert_eq!(m.fingerprint, fingerprint(ev));
                }
            }
        }
    }

    #[test]
    fn a_rule_match_after_an_unknown_error_replaces_it() {
        let log = "weird Error here\nmore\nConnection refused\n";
        let m = classify(log).primary.unwrap();
        assert_eq!((m.class.as_str(), m.line), ("connection-refused", 3));
    }

    #[test]
    fn cleaning_strips_terminal_and_ci_decorations() {
        let table = [
            ("\x1b[31;1mERROR:\x1b[0;m Job failed", "ERROR: Job failed"),
            (
                "\x1b[0Ksection_start:1560896352:step_script\r\x1b[0KExecuting step",
                "Executing step",
            ),
            ("\x1b[0Ksection_end:1560896353:step_script\r\x1b[0K", ""),
            (
                "section_start:1560896352:build[collapsed=true]\rBuilding",
                "Building",
            ),
            (
                "section_start:1560896352:build[collapsed=true] Building",
                " Building",
            ),
            (
                "Downloading 10%\rDownloading 55%\rDownloading 100%",
                "Downloading 100%",
            ),
            ("line with crlf\r", "line with crlf"),
            (
                "2024-01-02T03:04:05.1234567Z ##[group]Run cargo test",
                "Run cargo test",
            ),
            ("2024-01-02T03:04:05.1234567Z ##[endgroup]", ""),
            ("2024-01-02T03:04:05Z plain", "plain"),
            ("2024-01-02T03:04:05.1Z", ""),
            (
                "2024-01-02 03:04:05 not a github stamp",
                "2024-01-02 03:04:05 not a github stamp",
            ),
            ("::group::Install deps", "Install deps"),
            ("::endgroup::", ""),
            (
                "::error file=app.js,line=1::Missing semicolon",
                "Missing semicolon",
            ),
            ("::notice-ish::not a command", "::notice-ish::not a command"),
            (
                "##[error]Process completed with exit code 1.",
                "Process completed with exit code 1.",
            ),
            (
                "\x1b]8;;https://example.com\x07link\x1b]8;;\x07 text",
                "link text",
            ),
            ("\x1b]0;title\x1b\\after", "after"),
            ("\x1b(Bplain\x1b[K", "plain"),
            ("ünïcode \x1b[1mbold\x1b[0m ✓", "ünïcode bold ✓"),
            ("dangling escape \x1b", "dangling escape"),
            ("dangling csi \x1b[12", "dangling csi"),
            ("trailing spaces   ", "trailing spaces"),
        ];
        for (input, want) in table {
            assert_eq!(strip_ansi_and_sections(input), want, "{input:?}");
        }
    }

    #[test]
    fn fingerprint_normalisation_replaces_volatile_parts() {
        let table = [
            ("failed after 3 retries", "failed after <num> retries"),
            (
                "error[E0308] at src/main.rs:12:5",
                "error[E0308] at src/main.rs:<num>:<num>",
            ),
            ("commit 3f9a2b7c1d is bad", "commit <hex> is bad"),
            (
                "segfault at 0x7ffd5e8c and 0XDEADBEEF",
                "segfault at <hex> and <hex>",
            ),
            (
                "word deadbeef stays, facade too",
                "word deadbeef stays, facade too",
            ),
            (
                "request 123e4567-e89b-12d3-a456-426614174000 failed",
                "request <uuid> failed",
            ),
            ("connect 10.0.0.3 failed", "connect <ip> failed"),
            ("connect 10.0.0.3:5432 failed", "connect <ip>:<port> failed"),
            (
                "connect [2001:db8::8a2e:370:7334]:443 failed",
                "connect [<ip>]:<port> failed",
            ),
            ("connect fe80::1 failed", "connect <ip> failed"),
            ("connect ::1 failed", "connect <ip> failed"),
            ("std::io::Error stays", "std::io::Error stays"),
            ("at 2024-01-02T03:04:05.123Z boom", "at <ts> boom"),
            ("at 2024-01-02 03:04:05+02:00 boom", "at <ts> boom"),
            ("on 2024-01-02 boom", "on <ts> boom"),
            ("at 12:34:56 boom", "at <ts> boom"),
            ("on 1/2/2024 boom", "on <ts> boom"),
            (
                "open /tmp/pytest-of-runner/pytest-12/test_x0/db.sqlite: denied",
                "open <tmp>: denied",
            ),
            (
                "open /var/folders/xy/abc123/T/foo failed",
                "open <tmp> failed",
            ),
            (
                "open /private/var/folders/xy/T/foo failed",
                "open <tmp> failed",
            ),
            (
                r"open C:\Users\RUNNER~1\AppData\Local\Temp\tmp12ab\x.txt failed",
                "open <tmp> failed",
            ),
            ("took 12.3s then 450ms", "took <dur> then <dur>"),
            ("exceeded 1h0m0s", "exceeded <dur>"),
            ("waited 30 seconds", "waited <dur>"),
            ("-Xmx256m stays", "-Xmx256m stays"),
            ("localhost:8080 down", "localhost:<port> down"),
            ("api.example.com:443 down", "api.example.com:<port> down"),
            ("  lots   of\tspace  ", "lots of space"),
            ("\x1b[31mred 42\x1b[0m", "red <num>"),
            (
                "python3.11 and sha256 stay",
                "python3.<num> and sha256 stay",
            ),
        ];
        for (input, want) in table {
            assert_eq!(normalize_fingerprint(input), want, "{input:?}");
        }
    }

    #[test]
    fn fingerprints_cluster_lines_that_differ_only_in_volatile_parts() {
        let pairs = [
            (
                "Connection to 10.0.0.3:5432 timed out after 30s",
                "Connection to 10.1.2.9:6543 timed out after 12s",
            ),
            (
                "2024-01-01T00:00:00Z job 123e4567-e89b-12d3-a456-426614174000 failed",
                "2025-06-30T23:59:59Z job 00000000-0000-0000-0000-000000000000 failed",
            ),
            (
                "write /tmp/abc/1: No space left",
                "write /tmp/zz9/77: No space left",
            ),
            ("segfault at 0x0000deadbeef", "segfault at 0x00001234"),
        ];
        for (a, b) in pairs {
            assert_eq!(fingerprint(a), fingerprint(b), "{a} vs {b}");
        }
        assert_ne!(fingerprint("disk full"), fingerprint("out of memory"));
        let f = fingerprint("anything");
        assert_eq!(f.len(), 16);
        assert!(f.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn bad_rules_are_rejected_with_the_rule_name_and_reason() {
        let base = RuleConfig {
            name: "foo".into(),
            pattern: "boom".into(),
            category: Category::Build,
            description: String::new(),
            known_issue_url: None,
            applies_to: default_applies_to(),
            priority: 0,
        };
        let with = |f: &dyn Fn(&mut RuleConfig)| {
            let mut r = base.clone();
            f(&mut r);
            r
        };
        let table: Vec<(Vec<RuleConfig>, &str)> = vec![
            (
                vec![with(&|r| r.pattern = "(unclosed".into())],
                "rule \"foo\": invalid regex: ",
            ),
            (
                vec![with(&|r| r.pattern = String::new())],
                "rule \"foo\": pattern is empty",
            ),
            (
                vec![with(&|r| r.pattern = "x*".into())],
                "rule \"foo\": pattern matches an empty line",
            ),
            (
                vec![with(&|r| r.name = "Foo Bar".into())],
                "rule \"Foo Bar\": invalid name",
            ),
            (
                vec![with(&|r| r.name = String::new())],
                "rule \"\": invalid name",
            ),
            (vec![with(&|r| r.name = "a".repeat(65))], "invalid name"),
            (
                vec![with(&|r| r.name = "unknown".into())],
                "rule \"unknown\": the name \"unknown\" is reserved",
            ),
            (
                vec![base.clone(), base.clone()],
                "rule \"foo\": duplicate name (already used by rule #0)",
            ),
            (
                vec![with(&|r| r.known_issue_url = Some("ftp://x/y".into()))],
                "rule \"foo\": known_issue_url must be",
            ),
            (
                vec![with(&|r| r.known_issue_url = Some("https://".into()))],
                "known_issue_url must be",
            ),
            (
                vec![with(&|r| r.known_issue_url = Some("https://x/a b".into()))],
                "known_issue_url must be",
            ),
            (
                vec![with(&|r| r.applies_to = vec![])],
                "rule \"foo\": applies_to is empty",
            ),
        ];
        for (rules, want) in table {
            let err = Classifier::new(&rules).unwrap_err().to_string();
            assert!(
                err.starts_with(want) || err.contains(want),
                "{err:?} !~ {want:?}"
            );
        }
        let ok = with(&|r| r.known_issue_url = Some("https://issues.example.com/42".into()));
        assert!(Classifier::new(&[ok]).is_ok());
    }

    #[test]
    fn a_rule_error_carries_its_index() {
        let mut rules = Classifier::default_rules();
        rules[3].pattern = "[".into();
        match Classifier::new(&rules).unwrap_err() {
            ClassifyError::Rule {
                index,
                name,
                problem,
            } => {
                assert_eq!((index, name.as_str()), (3, "oom"));
                assert!(matches!(problem, RuleProblem::InvalidRegex(_)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn message_rules_only_apply_to_messages() {
        let rules = vec![
            RuleConfig {
                name: "log-only".into(),
                pattern: "flaky".into(),
                category: Category::Infra,
                description: "d".into(),
                known_issue_url: Some("https://issues.example.com/1".into()),
                applies_to: vec![AppliesTo::Log],
                priority: 0,
            },
            RuleConfig {
                name: "msg-only".into(),
                pattern: "expected \\d+".into(),
                category: Category::Test,
                description: "d".into(),
                known_issue_url: None,
                applies_to: vec![AppliesTo::TestMessage],
                priority: 0,
            },
        ];
        let c = Classifier::new(&rules).unwrap();
        assert_eq!(c.classify_message("flaky thing"), None);
        let m = c.classify_message("first line\nexpected 3\nlast").unwrap();
        assert_eq!((m.class.as_str(), m.line), ("msg-only", 2));
        assert_eq!(m.context, vec!["first line", "last"]);
        assert_eq!(m.context_before, 1, "{m:?}");
        let log = c
            .classify_log("expected 3\nflaky here\n".as_bytes())
            .unwrap();
        let p = log.primary.unwrap();
        assert_eq!(p.class, "log-only");
        assert_eq!(
            p.known_issue_url.as_deref(),
            Some("https://issues.example.com/1")
        );
        // no unknown fallback for messages
        assert_eq!(c.classify_message("some Error"), None);
    }

    #[test]
    fn default_rules_classify_typical_test_messages() {
        let c = Classifier::with_defaults();
        let table = [
            ("AssertionError: assert 1 == 2", "assertion-failed"),
            ("expected: <1> but was: <2>", "expected-mismatch"),
            (
                "java.net.ConnectException: Connection refused",
                "connection-refused",
            ),
            ("TimeoutError: waited 5000ms", "timed-out"),
        ];
        for (msg, class) in table {
            assert_eq!(
                c.classify_message(msg).map(|m| m.class).as_deref(),
                Some(class),
                "{msg}"
            );
        }
        assert_eq!(c.classify_message("test result: FAILED. 1 failed"), None);
    }

    #[test]
    fn long_lines_are_truncated_for_matching_and_do_not_shift_line_numbers() {
        let mut log = Vec::new();
        log.extend_from_slice(b"first\n");
        log.extend(std::iter::repeat_n(b'a', 3 * MAX_LINE_BYTES));
        log.extend_from_slice(b" No space left on device (beyond the cap)\n");
        log.extend_from_slice(b"Connection refused\n");
        let c = Classifier::with_defaults().classify_log(&log[..]).unwrap();
        let m = c.primary.unwrap();
        assert_eq!((m.class.as_str(), m.line), ("connection-refused", 3));
        assert_eq!(c.lines_scanned, 3);
        assert_eq!(c.bytes_scanned, log.len() as u64);
        assert_eq!(m.context.len(), 2);
        assert!(m.context[1].len() <= EVIDENCE_CAP_BYTES);
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_not_treated_as_truncated() {
        let mut log = vec![b'x'; MAX_LINE_BYTES];
        log.extend_from_slice(b"\nKilled\n");
        let c = Classifier::with_defaults().classify_log(&log[..]).unwrap();
        assert_eq!(c.lines_scanned, 2);
        assert_eq!(c.primary.unwrap().line, 2);
    }

    #[test]
    fn evidence_is_capped_on_a_char_boundary() {
        let line = format!(
            "{} Connection refused {}",
            "é".repeat(300),
            "ü".repeat(2000)
        );
        let m = classify(&line).primary.unwrap();
        assert!(m.evidence.len() <= EVIDENCE_CAP_BYTES);
        assert!(m.evidence.len() > EVIDENCE_CAP_BYTES - 4);
    }

    /// A reader that returns tiny, irregular chunks, to exercise buffer boundaries.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.step = self.step % 7 + 1;
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunking_of_the_input_does_not_change_the_result() {
        let log = "a\r\n\x1b[0Ksection_start:10:build\r\x1b[0Kb\nc ok\nerror[E0425]: cannot find value\nd\n\x1b[0Ksection_end:25:build\r\x1b[0K\nlast";
        let whole = Classifier::with_defaults()
            .classify_log(log.as_bytes())
            .unwrap();
        let dribbled = Classifier::with_defaults()
            .classify_log(Dribble {
                data: log.as_bytes(),
                step: 0,
            })
            .unwrap();
        assert_eq!(whole, dribbled);
        assert_eq!(whole.lines_scanned, 7);
        assert_eq!(whole.sections, vec![("build".to_string(), 15)]);
        let m = whole.primary.unwrap();
        assert_eq!(m.line, 4);
        assert_eq!(m.context, vec!["a", "b", "c ok", "d", "last"]);
    }

    #[test]
    fn find_byte_agrees_with_a_naive_search() {
        let hay: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        for needle in [0u8, b'\n', 0x80, 0xff, 10, 200] {
            for start in 0..20 {
                let h = &hay[start..];
                assert_eq!(find_byte(h, needle), h.iter().position(|&b| b == needle));
            }
        }
    }

    #[test]
    fn sections_pair_starts_with_ends_and_stay_bounded() {
        let mut s = Sections::default();
        s.observe("\x1b[0Ksection_start:100:outer[collapsed=true]\r\x1b[0Kx");
        s.observe("\x1b[0Ksection_start:105:inner\r\x1b[0K");
        s.observe("\x1b[0Ksection_end:107:inner\r\x1b[0K\x1b[0Ksection_end:130:outer\r\x1b[0K");
        s.observe("section_end:1:never_started\r");
        s.observe("section_start:bad:x\r");
        assert_eq!(
            s.done,
            vec![("inner".to_string(), 2), ("outer".to_string(), 30)]
        );
        for i in 0..(MAX_OPEN_SECTIONS as u64 + 10) {
            s.observe(&format!("section_start:{i}:s{i}\r"));
        }
        assert_eq!(s.open.len(), MAX_OPEN_SECTIONS);
    }

    #[test]
    fn grep_patterns_translate_the_rust_syntax() {
        let table = [
            (r"(?i)ab\d", "[aA][bB][0-9]"),
            (r"(?:x|y)+?", "(x|y)+"),
            (r"\bfoo\s\.", r"\bfoo\s\."),
            (r"[^`]*`", "[^`]*`"),
            (r"(?i)[a-f\d]", "[a-f0-9A-F]"),
            (r"a\-b", "a-b"),
        ];
        for (input, want) in table {
            assert_eq!(rust_regex_to_ere(input).unwrap(), want, "{input}");
        }
        assert!(rust_regex_to_ere("(?P<x>a)").is_err());
        assert_eq!(default_patterns_for_grep().len(), DEFAULT_RULES.len());
    }

    fn grep_matches(pattern: &str, line: &str) -> Option<bool> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("grep")
            .args(["-E", "-c", "-e", pattern])
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        child
            .stdin
            .take()?
            .write_all(format!("{line}\n").as_bytes())
            .ok()?;
        let out = child.wait_with_output().ok()?;
        assert!(
            out.stderr.is_empty(),
            "grep complained about {pattern:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).trim() == "1")
    }

    #[test]
    fn grep_patterns_agree_with_the_rust_rules_on_the_examples() {
        let ere = default_patterns_for_grep();
        for (k, d) in DEFAULT_RULES.iter().enumerate() {
            let (_, hit, miss) = RULE_EXAMPLES[k];
            let Some(g_hit) = grep_matches(&ere[k], hit) else {
                eprintln!("grep not available; skipping");
                return;
            };
            assert!(g_hit, "{}: grep -E {:?} missed {hit:?}", d.name, ere[k]);
            let g_miss = grep_matches(&ere[k], miss).unwrap();
            assert_eq!(
                g_miss,
                rule_regex(d.name).is_match(miss),
                "{}: {miss:?}",
                d.name
            );
        }
    }

    #[test]
    fn classification_serialises_with_lowercase_categories() {
        let c = classify("Killed\n");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["primary"]["category"], "infra");
        assert_eq!(v["primary"]["class"], "killed");
        assert_eq!(v["primary"]["line"], 1);
        for cat in Category::ALL {
            let s = serde_json::to_string(&cat).unwrap();
            assert_eq!(s, format!("\"{}\"", cat.as_str()));
        }
        let a: AppliesTo = serde_json::from_str("\"test_message\"").unwrap();
        assert_eq!(a, AppliesTo::TestMessage);
    }

    #[test]
    fn the_classifier_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Classifier>();
    }

    // -- the block prefilter never changes the result -----------------------

    /// The scan as it was before the block prefilter: every line decoded, cleaned
    /// and matched against the full rule set. Lines are cut at `MAX_LINE_BYTES`.
    fn reference_scan(c: &Classifier, target: &Target, heuristic: bool, log: &[u8]) -> Scan {
        let heuristic_index = target.rules.len();
        let mut sections = Sections::default();
        let mut ring = Ring::default();
        let mut best: Option<Candidate> = None;
        let mut unknown: Option<Candidate> = None;
        let mut line_no: u64 = 0;
        let mut lines: Vec<&[u8]> = log.split(|&b| b == b'\n').collect();
        if log.is_empty() || log.last() == Some(&b'\n') {
            lines.pop();
        }
        for full in lines {
            let bytes = &full[..full.len().min(MAX_LINE_BYTES)];
            line_no += 1;
            let decoded = String::from_utf8_lossy(bytes);
            let raw = decoded.trim_end_matches('\r');
            if may_have_section_marker(raw) {
                sections.observe(raw);
            }
            let clean = clean_line(raw);
            let text: &str = &clean;
            let blank = text.trim().is_empty();
            if !blank {
                for cand in [best.as_mut(), unknown.as_mut()].into_iter().flatten() {
                    if cand.after.len() < CONTEXT_LINES {
                        cand.after.push(cap(text, EVIDENCE_CAP_BYTES).to_string());
                    }
                }
            }
            let floor = best.as_ref().map(|b| b.priority);
            let want_unknown = heuristic && floor.is_none() && unknown.is_none();
            let set = match (&target.set_with_heuristic, want_unknown) {
                (Some(s), true) => s,
                _ => &target.set,
            };
            if !blank && set.is_match(text) {
                let mut line_best: Option<(usize, i32)> = None;
                let mut heuristic_hit = false;
                for i in set.matches(text).iter() {
                    if i == heuristic_index {
                        heuristic_hit = true;
                        continue;
                    }
                    let rule = target.rules[i];
                    let p = c.rules[rule].priority;
                    if line_best.is_none_or(|(_, bp)| p > bp) && target.confirm[i].is_match(text) {
                        line_best = Some((rule, p));
                    }
                }
                if let Some((rule, p)) = line_best {
                    if floor.is_none_or(|f| p > f) {
                        best = Some(Candidate::new(Some(rule), p, line_no, text, &ring));
                        unknown = None;
                    }
                } else if heuristic_hit && looks_like_error(text) && !is_command_echo(raw) {
                    unknown = Some(Candidate::new(None, i32::MIN, line_no, text, &ring));
                }
            }
            if !blank {
                ring.push(text);
            }
        }
        Scan {
            best,
            unknown,
            lines: line_no,
            bytes: log.len() as u64,
            sections,
        }
    }

    fn reference_log(c: &Classifier, log: &[u8]) -> Classification {
        let scan = reference_scan(c, &c.log, true, log);
        let primary = match (scan.best, scan.unknown) {
            (Some(best), _) => Some(c.to_match(best)),
            (None, Some(unknown)) => Some(c.to_match(unknown)),
            (None, None) => None,
        };
        Classification {
            primary,
            lines_scanned: scan.lines,
            bytes_scanned: scan.bytes,
            sections: scan.sections.done,
        }
    }

    /// xorshift64*: deterministic test inputs without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
            items[self.below(items.len())]
        }
    }

    const QUIET_LINES: &[&str] = &[
        "   Compiling serde v1.0.200",
        "test tests::case_1 ... ok",
        "",
        "   ",
        "##[group]Run cargo test",
        "##[endgroup]",
        "2024-05-01T10:11:12.1234567Z building the workspace",
        "+ echo \"step done\"",
        "$ make error_log",
        "test result: ok. 0 errors, 0 failures",
        "Downloading 10%\rDownloading 100%",
        "\x1b[32;1m   Finished\x1b[0m release",
        "\x1b[0Ksection_start:1700000000:build[collapsed=true]\r\x1b[0KBuilding",
        "\x1b[0Ksection_end:1700000042:build\r\x1b[0K",
        "section_start:1700000050:deploy\rDeploying",
        "  ✓ renders the dashboard (23 ms)",
        "Kelvin \u{212a} and long \u{17f} in a quiet line",
        "::notice file=a.rs::all good",
    ];

    const EXTRA_HIT_LINES: &[&str] = &[
        "Error: something broke",
        "thrown: FooException in worker",
        "Killed",
        "123",
        "SKIPPED hard",
        "\u{17f}kipped hard",
        "\u{212a}aboom here",
        "w0rd42x appeared",
        "W0RD149X appeared",
    ];

    /// Applies 0-3 random decorations to `line`: an ANSI sequence at a random
    /// char boundary (splitting words), a `\r` overwrite, CRLF, case flips,
    /// the Kelvin sign / long s, invalid UTF-8, CI prefixes.
    fn decorate(rng: &mut Rng, line: &str) -> Vec<u8> {
        let mut text = line.to_string();
        for _ in 0..rng.below(4) {
            match rng.below(9) {
                0 | 1 => {
                    let bounds: Vec<usize> = (0..=text.len())
                        .filter(|&i| text.is_char_boundary(i))
                        .collect();
                    let at = bounds[rng.below(bounds.len())];
                    let seq = rng.pick(&[
                        "\x1b[31m",
                        "\x1b[0m",
                        "\x1b[0K",
                        "\x1b]8;;https://example.com\x07",
                        "\x1b(B",
                        "\x1b[1;2;3m",
                    ]);
                    text.insert_str(at, seq);
                }
                2 => text.insert_str(0, rng.pick(&["progress 5%\r", "\x1b[2K\r", "x\r\r"])),
                3 => text.push('\r'),
                4 => {
                    text = text
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphabetic() && rng.below(3) == 0 {
                                if c.is_ascii_lowercase() {
                                    c.to_ascii_uppercase()
                                } else {
                                    c.to_ascii_lowercase()
                                }
                            } else {
                                c
                            }
                        })
                        .collect();
                }
                5 => {
                    text = text
                        .replacen('k', "\u{212a}", 1)
                        .replacen('s', "\u{17f}", 1);
                }
                6 => text.insert_str(0, "2024-01-02T03:04:05.1234567Z "),
                7 => text.insert_str(0, rng.pick(&["##[error]", "::error file=x::"])),
                _ => {
                    let mut bytes = text.into_bytes();
                    let at = rng.below(bytes.len() + 1);
                    bytes.insert(at, 0xff);
                    return bytes;
                }
            }
        }
        text.into_bytes()
    }

    fn random_log(rng: &mut Rng, hits: &[&str]) -> Vec<u8> {
        let mut log = Vec::new();
        let lines = rng.below(40);
        for _ in 0..lines {
            let line = if rng.below(4) == 0 {
                rng.pick(hits)
            } else {
                rng.pick(QUIET_LINES)
            };
            log.extend(decorate(rng, line));
            if rng.below(60) == 0 {
                // longer than MAX_LINE_BYTES, with text on both sides of the cut
                log.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES - 5));
                let tail = rng.pick(hits);
                log.extend(decorate(rng, tail));
            }
            log.push(b'\n');
        }
        if rng.below(3) == 0 {
            log.pop(); // no final newline
        }
        log
    }

    fn custom_rules() -> Vec<RuleConfig> {
        let rule = |name: &str, pattern: String, priority| RuleConfig {
            name: name.into(),
            pattern,
            category: Category::Build,
            description: String::new(),
            known_issue_url: None,
            applies_to: default_applies_to(),
            priority,
        };
        let words: Vec<String> = (0..150).map(|i| format!("w0rd{i}x")).collect();
        vec![
            // no literal at all: regex fallback
            rule("digits", r"^\d{3}$".into(), 5),
            // (?i)s and (?i)k also match the long s and the Kelvin sign
            rule("skipped", r"(?i)skipped hard".into(), 10),
            rule("kaboom", r"(?i)\bkaboom\b".into(), 20),
            // too many literals for Teddy
            rule("words", format!(r"(?i)\b(?:{})\b", words.join("|")), 1),
            rule("killed", r"^Killed\s*$".into(), 15),
        ]
    }

    #[test]
    fn the_block_prefilter_never_changes_the_result() {
        let defaults = Classifier::with_defaults();
        let custom = Classifier::new(&custom_rules()).unwrap();
        let mut hits: Vec<&str> = RULE_EXAMPLES
            .iter()
            .flat_map(|(_, h, m)| [*h, *m])
            .collect();
        hits.extend(EXTRA_HIT_LINES);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut classified = 0;
        for round in 0..600 {
            let log = random_log(&mut rng, &hits);
            for c in [&defaults, &custom] {
                let want = reference_log(c, &log);
                let got = c.classify_log(&log[..]).unwrap();
                let shown: String = String::from_utf8_lossy(&log).chars().take(3000).collect();
                assert_eq!(got, want, "round {round}: {shown:?}");
                if round % 5 == 0 {
                    let dribbled = c
                        .classify_log(Dribble {
                            data: &log,
                            step: 0,
                        })
                        .unwrap();
                    assert_eq!(dribbled, want, "round {round} (dribbled)");
                }
                let text = String::from_utf8_lossy(&log);
                let want_msg = reference_scan(c, &c.message, false, text.as_bytes())
                    .best
                    .map(|m| c.to_match(m));
                assert_eq!(
                    c.classify_message(&text),
                    want_msg,
                    "round {round} (message)"
                );
                classified += usize::from(want.primary.is_some());
            }
        }
        // the inputs exercise matches, not just quiet logs
        assert!(classified > 600, "{classified}");
    }

    #[test]
    fn logs_where_most_lines_are_prefilter_hits_give_the_same_result() {
        // "error" in every line: the prefilter gives up on such blocks for a while
        let c = Classifier::with_defaults();
        let mut rng = Rng(7);
        let mut log = Vec::new();
        for round in 0..3 {
            for _ in 0..20_000 {
                log.extend(decorate(&mut rng, "make error_log; 0 errors, 0 failures"));
                log.push(b'\n');
            }
            for _ in 0..20_000 {
                let line = rng.pick(QUIET_LINES);
                log.extend(decorate(&mut rng, line));
                log.push(b'\n');
            }
            let hit = ["Error: something broke", "Connection refused", "Killed"][round];
            log.extend(decorate(&mut rng, hit));
            log.push(b'\n');
            let want = reference_log(&c, &log);
            assert_eq!(c.classify_log(&log[..]).unwrap(), want, "round {round}");
            assert!(want.primary.is_some());
        }
    }

    #[test]
    fn an_escape_sequence_inside_a_keyword_does_not_hide_it() {
        let c = Classifier::with_defaults();
        let quiet = "   Compiling crate v1.0.0 (/home/runner/work/x)\n".repeat(3000);
        let cases = [
            ("No space left on \x1b[1mde\x1b[0mvice", "disk-full"),
            ("Kil\x1b[0mled", "killed"),
            (
                "\x1b[31mSegmen\x1b[0mtation fault (core dumped)",
                "segfault",
            ),
            (
                "Connection re\x1b]8;;https://example.com\x07fused",
                "connection-refused",
            ),
            (
                "waiting 10%\rConnec\x1b[Ktion reset by peer",
                "connection-reset",
            ),
            (
                "2024-01-02T03:04:05.1234567Z \x1b[36;1mTraceback (most\x1b[0m recent call last):",
                "python-traceback",
            ),
            ("JavaScript heap out of mem\x1b(Bory", "oom"),
            ("Dis\u{212a} quota exceeded", "disk-full"),
            ("No \u{17f}pace left on device", "disk-full"),
            ("\x1b[0Ksection_start:1:x\r\x1b[0KKilled", "killed"),
        ];
        for (line, class) in cases {
            let log = format!("{quiet}{line}\n{quiet}");
            let m = c.classify_log(log.as_bytes()).unwrap().primary;
            let m = m.unwrap_or_else(|| panic!("{line:?}: no match"));
            assert_eq!((m.class.as_str(), m.line), (class, 3001), "{line:?}");
            assert_eq!(reference_log(&c, log.as_bytes()).primary, Some(m));
        }
    }
}
