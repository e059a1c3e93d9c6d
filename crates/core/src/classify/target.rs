//! The rules compiled for one kind of input (job logs or test messages): what
//! one cleaned line matches.
//!
//! One [`regex::RegexSet`] pass tells which rules may match a line (and, for
//! logs, whether the error-word heuristic does); only those are confirmed with
//! their own [`regex::Regex`]. The set is built from the patterns with
//! word-boundary assertions removed (a strict superset: a Unicode `\b` makes the
//! set's lazy DFA fall back to a ~100x slower engine on every non-ASCII line).
//! The byte-level [`Prefilter`] over the same patterns (plus the CI step
//! markers, for logs) decides which lines reach the set at all.

use regex::{Regex, RegexSet, RegexSetBuilder};

use super::heuristic::{self, HEURISTIC_PATTERN};
use super::prefilter::{PatternInfo, Prefilter};
use super::rank::{Hit, RuleHit};
use super::rules::{AppliesTo, ClassifyError, Evidence, OUTSIDE_PRIORITY, RuleConfig, one_line};
use super::steps::{self, MARKER_PATTERNS};

/// Per compiled regex set: size of the compiled program and of the lazy DFA cache.
pub(crate) const SET_SIZE_LIMIT: usize = 32 * 1024 * 1024;
pub(crate) const SET_DFA_LIMIT: usize = 8 * 1024 * 1024;

/// One rule of a target.
#[derive(Debug, Clone)]
struct Entry {
    /// Index into the classifier's rules.
    rule: usize,
    priority: i32,
    evidence: Evidence,
    confirm: Regex,
}

/// The rules of one [`AppliesTo`], compiled.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    entries: Vec<Entry>,
    /// One pattern per entry, then the heuristic (logs only).
    set: RegexSet,
    /// Logs: CI structure (step markers, command echoes) and the error-word
    /// heuristic count. Test messages: only the rules.
    pub(crate) structure: bool,
    pub(crate) prefilter: Prefilter,
}

impl Target {
    pub(crate) fn build(
        rules: &[RuleConfig],
        confirm: &[Regex],
        which: AppliesTo,
    ) -> Result<Self, ClassifyError> {
        let structure = which == AppliesTo::Log;
        let mut entries = Vec::new();
        let mut pats = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if r.applies_to.contains(&which) {
                entries.push(Entry {
                    rule: i,
                    priority: r.priority,
                    evidence: if structure {
                        r.evidence
                    } else {
                        Evidence::Line
                    },
                    confirm: confirm[i].clone(),
                });
                pats.push(prefilter_pattern(&r.pattern));
            }
        }
        if structure {
            pats.push(prefilter_pattern(HEURISTIC_PATTERN));
        }
        let compile = |p: &[String]| {
            RegexSetBuilder::new(p)
                .size_limit(SET_SIZE_LIMIT)
                .dfa_size_limit(SET_DFA_LIMIT)
                .build()
        };
        let set = match compile(&pats) {
            Ok(s) => s,
            // The word-boundary rewrite should never break a pattern, but if it
            // does, fall back to the patterns as written.
            Err(_) => {
                let mut orig: Vec<String> = entries
                    .iter()
                    .map(|e| rules[e.rule].pattern.clone())
                    .collect();
                if structure {
                    orig.push(HEURISTIC_PATTERN.to_string());
                }
                compile(&orig).map_err(|e| ClassifyError::RuleSet(one_line(&e.to_string())))?
            }
        };
        let mut infos: Vec<PatternInfo> = entries
            .iter()
            .map(|e| PatternInfo::new(&rules[e.rule].pattern))
            .collect();
        if structure {
            infos.push(PatternInfo::new(HEURISTIC_PATTERN));
            infos.extend(MARKER_PATTERNS.iter().map(|p| PatternInfo::new(p)));
        }
        let prefilter = Prefilter::new(&infos.iter().collect::<Vec<_>>());
        Ok(Target {
            entries,
            set,
            structure,
            prefilter,
        })
    }

    /// What the cleaned, non-blank `text` (decoded line before cleaning: `raw`)
    /// is: a step marker, a command echo, a rule match (the highest priority;
    /// on ties the earlier rule), an error-like line or nothing.
    pub(crate) fn hit(&self, text: &str, raw: &str) -> Hit {
        let marker = if self.structure {
            steps::marker(text, raw)
        } else {
            None
        };
        if marker.is_none() && self.structure && heuristic::is_not_output(text) {
            return Hit::Echo;
        }
        let heuristic_index = self.entries.len();
        let mut best: Option<RuleHit> = None;
        let mut heuristic_hit = false;
        if self.set.is_match(text) {
            for k in self.set.matches(text).iter() {
                if k == heuristic_index {
                    heuristic_hit = true;
                    continue;
                }
                let e = &self.entries[k];
                if best.is_some_and(|b| e.priority <= b.priority) {
                    continue;
                }
                if e.confirm.is_match(text) {
                    best = Some(RuleHit {
                        rule: e.rule,
                        priority: e.priority,
                        evidence: e.evidence,
                    });
                }
            }
        }
        if let Some(m) = marker {
            return Hit::Marker(m, best.filter(|b| b.priority >= OUTSIDE_PRIORITY));
        }
        if let Some(b) = best {
            return Hit::Rule(b);
        }
        if heuristic_hit && let Some(s) = heuristic::strength(text) {
            return Hit::Error(s);
        }
        Hit::Quiet
    }

    /// What a line the prefilter ruled out is: a command echo or nothing.
    pub(crate) fn quiet_hit(&self, text: &str) -> Hit {
        if self.structure && heuristic::is_not_output(text) {
            Hit::Echo
        } else {
            Hit::Quiet
        }
    }

    #[cfg(test)]
    pub(crate) fn set_patterns(&self) -> &[String] {
        self.set.patterns()
    }
}

/// The prefilter form of a pattern: word-boundary assertions (`\b`, `\B`, `\<`, `\>`,
/// `\b{start}`, ...) outside character classes are removed. Dropping an assertion
/// can only make a pattern match more lines, so the prefilter set is a strict
/// superset of the rules, and without Unicode word boundaries the set's lazy DFA
/// never bails out to a slow engine on non-ASCII lines (a Unicode `\b` in a set costs
/// ~100x throughput). Every set hit is confirmed with the original regex.
pub(crate) fn prefilter_pattern(pattern: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefilter_drops_word_boundary_assertions_only() {
        let table = [
            (r"\bfoo\b", "foo"),
            (r"(?i)\bab\B", "(?i)ab"),
            (r"[\b]x", r"[\b]x"),
            (r"\b{start}x\b{end}", "x"),
            (r"\\b", r"\\b"),
            (r"\d\s\.", r"\d\s\."),
        ];
        for (input, want) in table {
            assert_eq!(prefilter_pattern(input), want, "{input}");
        }
    }

    #[test]
    fn the_compiled_sets_contain_no_word_boundaries() {
        let rules = super::super::rules::default_rules();
        let confirm = super::super::rules::compile(&rules).unwrap();
        for which in [AppliesTo::Log, AppliesTo::TestMessage] {
            let t = Target::build(&rules, &confirm, which).unwrap();
            for p in t.set_patterns() {
                assert!(!p.contains(r"\b"), "{p}");
            }
        }
    }
}
