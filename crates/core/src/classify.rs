//! Classification of CI failures from job logs and test failure messages.
//!
//! A [`Classifier`] is compiled once from a list of [`RuleConfig`]s (the
//! `[[classify.rules]]` tables of the config file, or [`Classifier::default_rules`])
//! and then streams logs of any size in bounded memory. It answers "why did this
//! job fail?" with one evidence line (class, category, line number, text,
//! context, fingerprint) and up to 3 further candidates.
//!
//! The work is split by concern:
//! * `rules`: the rule table (types, validation, `default_rules.toml`);
//! * `clean`: what a line looks like without terminal and CI decorations;
//! * `steps`: the CI step markers (where a command starts, how it ended);
//! * `heuristic`: error-like lines no rule names;
//! * `target`: the rules compiled for logs or test messages (what a line matches);
//! * `prefilter`: the byte-level search that skips lines that match nothing;
//! * `scan`: the streaming reader that feeds the ranking;
//! * `rank`: which line is the evidence (the failing step, then the most
//!   specific line in it);
//! * `fingerprint`, `sections`, `grep`: clustering, GitLab section durations,
//!   the patterns in `grep -E` syntax for the benchmark.
//!
//! See docs/classification.md for the method and the rule list.

mod clean;
#[cfg(test)]
mod examples;
mod fingerprint;
mod grep;
mod heuristic;
mod prefilter;
mod rank;
mod rules;
mod scan;
mod sections;
mod steps;
mod target;

use std::io::{self, Read};

use serde::Serialize;

pub use clean::strip_ansi_and_sections;
pub use fingerprint::{fingerprint, normalize_fingerprint};
pub use grep::default_patterns_for_grep;
pub use heuristic::looks_like_error;
pub use rank::{CONTEXT_LINES, EVIDENCE_CAP_BYTES};
pub use rules::{
    AppliesTo, Category, ClassifyError, Evidence, OUTSIDE_PRIORITY, RuleConfig, RuleProblem,
    UNKNOWN_CLASS,
};
pub use scan::MAX_LINE_BYTES;

use rank::Found;
use target::Target;

/// A further candidate for the evidence, reported with the main one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// 1-based line number.
    pub line: u64,
    /// The cleaned line, capped at [`EVIDENCE_CAP_BYTES`].
    pub text: String,
    /// Rule name, or `"unknown"`.
    pub class: String,
}

/// One classified failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    /// Rule name, or `"unknown"` when no rule matched the evidence line.
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
    /// Up to 3 further candidates for the evidence, best first.
    pub candidates: Vec<Candidate>,
}

/// Result of [`Classifier::classify_log`].
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Classification {
    /// The evidence (see docs/classification.md), `None` when nothing failed.
    /// When no rule matched it, the class is `"unknown"` and the category
    /// [`Category::Unknown`].
    pub primary: Option<Match>,
    pub lines_scanned: u64,
    pub bytes_scanned: u64,
    /// Section name -> duration in seconds, from GitLab section markers, in the order
    /// the sections ended (a name appears once per start/end pair).
    pub sections: Vec<(String, u64)>,
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
        let confirm = rules::compile(rules)?;
        let log = Target::build(rules, &confirm, AppliesTo::Log)?;
        let message = Target::build(rules, &confirm, AppliesTo::TestMessage)?;
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

    /// The shipped default rule set (see docs/classification.md).
    pub fn default_rules() -> Vec<RuleConfig> {
        rules::default_rules()
    }

    /// The rules this classifier was built from.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// Streams a log of any size in bounded memory.
    pub fn classify_log<R: Read>(&self, reader: R) -> io::Result<Classification> {
        self.classify_log_with(reader, true)
    }

    /// [`Classifier::classify_log`] of a log already in memory (its read
    /// buffer no larger than the log: see `scan::scan_text`).
    pub fn classify_text(&self, log: &str) -> io::Result<Classification> {
        let scan = scan::scan_text(&self.log, log, true)?;
        Ok(self.classification(scan))
    }

    fn classify_log_with<R: Read>(
        &self,
        reader: R,
        use_prefilter: bool,
    ) -> io::Result<Classification> {
        let scan = scan::scan(&self.log, reader, use_prefilter)?;
        Ok(self.classification(scan))
    }

    fn classification(&self, scan: scan::Scan) -> Classification {
        Classification {
            primary: self.to_match(scan.ranked),
            lines_scanned: scan.lines,
            bytes_scanned: scan.bytes,
            sections: scan.sections,
        }
    }

    /// Classifies a test failure message (possibly multi-line) with the
    /// `test_message` rules only. No "unknown" fallback: `None` when no rule matches.
    pub fn classify_message(&self, msg: &str) -> Option<Match> {
        self.classify_message_with(msg, true)
    }

    fn classify_message_with(&self, msg: &str, use_prefilter: bool) -> Option<Match> {
        // reading from a byte slice cannot fail
        let scan = scan::scan_text(&self.message, msg, use_prefilter).ok()?;
        self.to_match(scan.ranked)
    }

    fn class_of(&self, f: &Found) -> &str {
        f.rule
            .map_or(UNKNOWN_CLASS, |i| self.rules[i].name.as_str())
    }

    fn to_match(&self, ranked: rank::Ranked) -> Option<Match> {
        let primary = ranked.primary?;
        let candidates = ranked
            .others
            .iter()
            .map(|f| Candidate {
                line: f.line,
                text: f.text.clone(),
                class: self.class_of(f).to_string(),
            })
            .collect();
        let class = self.class_of(&primary).to_string();
        let context_before = primary.before.len();
        let mut context = primary.before;
        context.extend(primary.after);
        let fingerprint = fingerprint(&primary.text);
        let (category, description, known_issue_url) = match primary.rule {
            Some(i) => {
                let r = &self.rules[i];
                (r.category, r.description.clone(), r.known_issue_url.clone())
            }
            None => (
                Category::Unknown,
                "no rule matched; the most specific error-like line of the failing step"
                    .to_string(),
                None,
            ),
        };
        Some(Match {
            class,
            category,
            description,
            known_issue_url,
            line: primary.line,
            evidence: primary.text,
            context,
            context_before,
            fingerprint,
            candidates,
        })
    }
}

#[cfg(test)]
mod tests;
