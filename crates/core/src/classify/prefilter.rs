//! The byte-level line prefilter of the classifier.
//!
//! A [`Prefilter`] is built from the patterns of the rules that can still change
//! the result. It answers one question over a whole block of lines at once:
//! which lines *may* match one of them. It is conservative: it never rejects a
//! line that one of the patterns matches after cleaning; it may accept lines that
//! do not match (those are confirmed by the rule set as before).
//!
//! The block is searched as a "cleaned stream" built by the scanner (see
//! `Classifier::scan_block`): the raw bytes of every line, except that lines with
//! escape sequences or `\r` overwrites are replaced by their ANSI-stripped
//! visible part (padded with `\n`). Every cleaned line is therefore a substring
//! of its region of the stream.
//!
//! # Required literals
//! For each pattern, [`required_literals`] computes a small set of byte strings
//! such that every match of the pattern contains one of them (look-around
//! assertions such as `^`, `$`, `\b` match no bytes, so they are ignored, which
//! only widens the set of accepted lines). Literals are ASCII-lowercased and
//! searched in an ASCII-lowercased stream, with Teddy (SIMD) when there are
//! fewer than 128 literals of at least 3 bytes, else with an Aho-Corasick DFA.
//!
//! Case-insensitive patterns also match a few non-ASCII characters that fold to
//! ASCII letters (`(?i)k` matches U+212A KELVIN SIGN, `(?i)s` matches U+017F
//! LONG S). Instead of multiplying the literals, such characters become *flags*:
//! any line containing one of them is a candidate, found with a separate search
//! over the raw bytes.
//!
//! When some pattern has no usable literal (every match could avoid any given
//! string of 3+ bytes), the prefilter falls back to one combined regex (the
//! alternation of all patterns with their look-around assertions removed) over
//! the un-lowercased stream, and if even that cannot be built, every line is a
//! candidate.

use aho_corasick::packed;
use aho_corasick::{AhoCorasick, AhoCorasickKind, Input};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Strings per literal set produced by a cross product.
const MAX_SET: usize = 64;
/// Strings per literal set of one pattern (unions of alternatives).
const MAX_PATTERN_SET: usize = 256;
/// Bytes per exact literal.
const MAX_LITERAL: usize = 48;
/// Characters of a class that are expanded into literals.
const MAX_CLASS: usize = 8;
/// Literals shorter than this make a literal search too unselective.
const MIN_LITERAL: usize = 3;
/// Limit of the packed (Teddy) searcher.
const MAX_TEDDY: usize = 127;

/// What one pattern contributes to a prefilter.
#[derive(Debug, Clone)]
pub(super) struct PatternInfo {
    pattern: String,
    /// `None` when the pattern has no usable required literal.
    literals: Option<Vec<Vec<u8>>>,
    /// Non-ASCII characters (UTF-8) whose presence makes a line a candidate.
    flags: Vec<Vec<u8>>,
}

impl PatternInfo {
    pub(super) fn new(pattern: &str) -> Self {
        let mut flags = Vec::new();
        let literals = required_literals(pattern, &mut flags);
        flags.sort();
        flags.dedup();
        PatternInfo {
            pattern: pattern.to_string(),
            literals,
            flags,
        }
    }
}

#[derive(Debug, Clone)]
enum Finder {
    /// No pattern: no line can match.
    Nothing,
    /// Literals in an ASCII-lowercased stream.
    Teddy(packed::Searcher),
    Ac(AhoCorasick),
    /// All patterns (without look-arounds) in the un-lowercased stream.
    Regex(regex::bytes::Regex),
    /// Every line is a candidate.
    Everything,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(super) struct Prefilter {
    finder: Finder,
    /// Searched in the raw (not lowercased) bytes; only with literal finders.
    flags: Option<AhoCorasick>,
}

impl Prefilter {
    pub(super) fn new(patterns: &[&PatternInfo]) -> Self {
        if patterns.is_empty() {
            return Prefilter {
                finder: Finder::Nothing,
                flags: None,
            };
        }
        let literal = patterns
            .iter()
            .map(|p| p.literals.as_ref())
            .collect::<Option<Vec<_>>>()
            .map(|sets| minimal(sets.into_iter().flatten().cloned().collect()))
            .filter(|lits| lits.iter().all(|l| l.len() >= MIN_LITERAL));
        if let Some(lits) = literal {
            let mut flags: Vec<Vec<u8>> = patterns.iter().flat_map(|p| p.flags.clone()).collect();
            flags.sort();
            flags.dedup();
            let flags = if flags.is_empty() {
                Some(None)
            } else {
                AhoCorasick::new(&flags).ok().map(Some)
            };
            if let Some(flags) = flags {
                let teddy = (lits.len() <= MAX_TEDDY)
                    .then(|| {
                        let mut b = packed::Config::new()
                            .heuristic_pattern_limits(false)
                            .builder();
                        b.extend(&lits);
                        b.build()
                    })
                    .flatten();
                let finder = match teddy {
                    Some(t) => Some(Finder::Teddy(t)),
                    None => AhoCorasick::builder()
                        .kind(Some(AhoCorasickKind::DFA))
                        .build(&lits)
                        .or_else(|_| AhoCorasick::new(&lits))
                        .ok()
                        .map(Finder::Ac),
                };
                if let Some(finder) = finder {
                    return Prefilter { finder, flags };
                }
            }
        }
        let finder = combined_regex(patterns)
            .map(Finder::Regex)
            .unwrap_or(Finder::Everything);
        Prefilter {
            finder,
            flags: None,
        }
    }

    /// No line can match: the stream need not be built.
    pub(super) fn is_nothing(&self) -> bool {
        matches!(self.finder, Finder::Nothing)
    }

    /// Every line must be treated as a candidate.
    pub(super) fn is_everything(&self) -> bool {
        matches!(self.finder, Finder::Everything)
    }

    /// Whether [`Prefilter::find`] expects an ASCII-lowercased stream.
    pub(super) fn lowercase(&self) -> bool {
        matches!(self.finder, Finder::Teddy(_) | Finder::Ac(_))
    }

    /// A position `p >= from` in `stream` such that no line before the line of `p`
    /// (and at or after the line of `from`) contains a match; `None` when no line
    /// from `from` on contains one.
    pub(super) fn find(&self, stream: &[u8], from: usize) -> Option<usize> {
        if from >= stream.len() {
            return None;
        }
        match &self.finder {
            Finder::Nothing => None,
            Finder::Everything => Some(from),
            Finder::Teddy(t) => t
                .find_in(stream, aho_corasick::Span::from(from..stream.len()))
                .map(|m| m.start()),
            Finder::Ac(ac) => ac.find(Input::new(stream).range(from..)).map(|m| m.start()),
            // The shortest match ends at `e`; every match in a line at or after
            // `from` ends no earlier, so it lies in the line of `e - 1` or later.
            Finder::Regex(re) => re
                .shortest_match_at(stream, from)
                .map(|e| e.saturating_sub(1).max(from)),
        }
    }

    /// The start of the next flag character in the raw bytes at or after `from`.
    pub(super) fn find_flag(&self, raw: &[u8], from: usize) -> Option<usize> {
        let flags = self.flags.as_ref()?;
        if from >= raw.len() {
            return None;
        }
        flags.find(Input::new(raw).range(from..)).map(|m| m.start())
    }
}

/// Drops duplicates and every literal that contains another one (a line with the
/// longer literal has the shorter one too).
fn minimal(mut lits: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    lits.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    lits.dedup();
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(lits.len());
    for l in lits {
        if !kept.iter().any(|k| contains(&l, k)) {
            kept.push(l);
        }
    }
    kept
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The alternation of all patterns with look-around assertions and capture
/// groups removed, compiled over bytes.
fn combined_regex(patterns: &[&PatternInfo]) -> Option<regex::bytes::Regex> {
    let mut parts = Vec::with_capacity(patterns.len());
    for p in patterns {
        let hir = regex_syntax::Parser::new().parse(&p.pattern).ok()?;
        parts.push(without_looks(&hir));
    }
    let combined = Hir::alternation(parts).to_string();
    regex::bytes::RegexBuilder::new(&combined)
        .size_limit(super::target::SET_SIZE_LIMIT)
        .dfa_size_limit(super::target::SET_DFA_LIMIT)
        .build()
        .ok()
}

/// `h` with every look-around assertion replaced by the empty regex (which can
/// only make it match more) and capture groups dissolved.
fn without_looks(h: &Hir) -> Hir {
    match h.kind() {
        HirKind::Look(_) => Hir::empty(),
        HirKind::Capture(c) => without_looks(&c.sub),
        HirKind::Repetition(r) => Hir::repetition(regex_syntax::hir::Repetition {
            min: r.min,
            max: r.max,
            greedy: r.greedy,
            sub: Box::new(without_looks(&r.sub)),
        }),
        HirKind::Concat(v) => Hir::concat(v.iter().map(without_looks).collect()),
        HirKind::Alternation(v) => Hir::alternation(v.iter().map(without_looks).collect()),
        _ => h.clone(),
    }
}

// ---------------------------------------------------------------------------
// Required literals
// ---------------------------------------------------------------------------

type Set = Vec<Vec<u8>>;

/// What is known about the strings a sub-expression matches, ignoring matches
/// that contain a flag character.
struct Info {
    /// Every string it can match (ASCII-lowercased), when few and short.
    exact: Option<Set>,
    /// Every match contains one of these (ASCII-lowercased).
    required: Option<Set>,
}

/// ASCII-lowercased literals such that every match of `pattern` either contains
/// one of them (compared ASCII-case-insensitively) or contains one of the `flags`
/// characters. `None` when no such set is known.
pub(super) fn required_literals(pattern: &str, flags: &mut Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let info = analyse(&hir, flags);
    better(info.required, info.exact)
}

fn normalise(mut s: Set) -> Set {
    for l in &mut s {
        l.make_ascii_lowercase();
    }
    s.sort();
    s.dedup();
    s
}

/// The set, if every string in it is non-empty (else it requires nothing).
fn usable(s: Option<Set>) -> Option<Set> {
    s.filter(|s| !s.is_empty() && s.iter().all(|l| !l.is_empty()))
}

/// Longer shortest literal is better (up to 8 bytes), then fewer literals.
fn score(s: &Set) -> (usize, std::cmp::Reverse<usize>) {
    let shortest = s.iter().map(Vec::len).min().unwrap_or(0);
    (shortest.min(8), std::cmp::Reverse(s.len()))
}

fn better(a: Option<Set>, b: Option<Set>) -> Option<Set> {
    match (usable(a), usable(b)) {
        (Some(x), Some(y)) => Some(if score(&y) > score(&x) { y } else { x }),
        (x, y) => x.or(y),
    }
}

fn cross(a: &Set, b: &Set) -> Option<Set> {
    if a.len() * b.len() > MAX_SET {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            if x.len() + y.len() > MAX_LITERAL {
                return None;
            }
            let mut v = x.clone();
            v.extend_from_slice(y);
            out.push(v);
        }
    }
    Some(normalise(out))
}

fn nothing_known() -> Info {
    Info {
        exact: None,
        required: None,
    }
}

fn analyse(h: &Hir, flags: &mut Vec<Vec<u8>>) -> Info {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Info {
            exact: Some(vec![Vec::new()]),
            required: None,
        },
        HirKind::Literal(lit) => {
            if lit.0.len() <= MAX_LITERAL {
                Info {
                    exact: Some(normalise(vec![lit.0.to_vec()])),
                    required: None,
                }
            } else {
                Info {
                    exact: None,
                    required: Some(normalise(vec![lit.0[..MAX_LITERAL].to_vec()])),
                }
            }
        }
        HirKind::Class(Class::Unicode(c)) => {
            let size: usize = c
                .ranges()
                .iter()
                .map(|r| r.end() as usize - r.start() as usize + 1)
                .sum();
            if size == 0 || size > MAX_CLASS {
                return nothing_known();
            }
            let chars: Vec<char> = c
                .ranges()
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .collect();
            let has_ascii = chars.iter().any(char::is_ascii);
            let mut set = Vec::new();
            for ch in chars {
                let mut utf8 = [0u8; 4];
                let bytes = ch.encode_utf8(&mut utf8).as_bytes().to_vec();
                // e.g. the KELVIN SIGN in (?i)k: a line containing it is a
                // candidate anyway, so the literals need not spell it out
                if has_ascii && !ch.is_ascii() {
                    flags.push(bytes);
                } else {
                    set.push(bytes);
                }
            }
            Info {
                exact: Some(normalise(set)),
                required: None,
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            let size: usize = c
                .ranges()
                .iter()
                .map(|r| usize::from(r.end()) - usize::from(r.start()) + 1)
                .sum();
            if size == 0 || size > MAX_CLASS {
                return nothing_known();
            }
            let set = c
                .ranges()
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .map(|b| vec![b])
                .collect();
            Info {
                exact: Some(normalise(set)),
                required: None,
            }
        }
        HirKind::Capture(c) => analyse(&c.sub, flags),
        HirKind::Repetition(r) => {
            let sub = analyse(&r.sub, flags);
            if r.min == 0 {
                let exact = match (r.max, sub.exact) {
                    (Some(1), Some(mut e)) => {
                        e.push(Vec::new());
                        Some(normalise(e))
                    }
                    _ => None,
                };
                Info {
                    exact,
                    required: None,
                }
            } else if r.max == Some(1) {
                sub
            } else {
                Info {
                    exact: None,
                    required: better(sub.required, sub.exact),
                }
            }
        }
        HirKind::Concat(children) => {
            // `run`: the exact strings of the current run of exact children
            let mut run: Set = vec![Vec::new()];
            let mut all_exact = true;
            let mut best: Option<Set> = None;
            for child in children {
                let info = analyse(child, flags);
                match info.exact {
                    Some(e) => match cross(&run, &e) {
                        Some(joined) => run = joined,
                        None => {
                            best = better(best, Some(std::mem::replace(&mut run, e)));
                            all_exact = false;
                        }
                    },
                    None => {
                        best = better(best, Some(std::mem::replace(&mut run, vec![Vec::new()])));
                        best = better(best, info.required);
                        all_exact = false;
                    }
                }
            }
            if all_exact {
                Info {
                    exact: Some(run),
                    required: best,
                }
            } else {
                Info {
                    exact: None,
                    required: better(best, Some(run)),
                }
            }
        }
        HirKind::Alternation(children) => {
            let infos: Vec<Info> = children.iter().map(|c| analyse(c, flags)).collect();
            let exact = infos
                .iter()
                .map(|i| i.exact.clone())
                .collect::<Option<Vec<Set>>>()
                .map(|sets| normalise(sets.concat()))
                .filter(|u| u.len() <= MAX_SET);
            let required = infos
                .into_iter()
                .map(|i| better(i.required, i.exact))
                .collect::<Option<Vec<Set>>>()
                .map(|sets| normalise(sets.concat()))
                .filter(|u| u.len() <= MAX_PATTERN_SET);
            Info { exact, required }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(pattern: &str) -> (Option<Vec<String>>, Vec<String>) {
        let mut flags = Vec::new();
        let l = required_literals(pattern, &mut flags).map(|s| {
            s.into_iter()
                .map(|l| String::from_utf8(l).unwrap())
                .collect()
        });
        flags.sort();
        flags.dedup();
        (
            l,
            flags
                .into_iter()
                .map(|f| String::from_utf8(f).unwrap())
                .collect(),
        )
    }

    #[test]
    fn required_literals_of_typical_patterns() {
        // (pattern, required literals, flags)
        type Case<'a> = (&'a str, Option<&'a [&'a str]>, &'a [&'a str]);
        let table: &[Case] = &[
            ("Killed", Some(&["killed"]), &[]),
            (
                r"^Killed\s*$|\bSIGKILL\b",
                Some(&["killed", "sigkill"]),
                &[],
            ),
            (
                r"(?i)cancell?ed by",
                Some(&["canceled by", "cancelled by"]),
                &[],
            ),
            // the long s and the Kelvin sign become flags
            (r"(?i)disk", Some(&["disk"]), &["\u{17f}", "\u{212a}"]),
            (
                r"\bexpected\b.*\bbut (?:got|was)\b",
                Some(&["expected"]),
                &[],
            ),
            (r"failed to get `[^`]+` as", Some(&["failed to get `"]), &[]),
            (r"error TS\d{4,5}:", Some(&["error ts"]), &[]),
            (r"a\d+b", Some(&["a"]), &[]),
            (r"\d+", None, &[]),
            (r"[a-z]+ing|x", Some(&["ing", "x"]), &[]),
            (r"[a-z]+|x", None, &[]),
            (r"x*", None, &[]),
        ];
        for (pattern, want, want_flags) in table {
            let (got, flags) = lits(pattern);
            let want: Option<Vec<String>> = want.map(|w| w.iter().map(|s| s.to_string()).collect());
            assert_eq!(got, want, "{pattern}");
            assert_eq!(flags, *want_flags, "{pattern}");
        }
    }

    #[test]
    fn minimal_drops_literals_containing_others() {
        let got = minimal(vec![
            b"error: aborting".to_vec(),
            b"error".to_vec(),
            b"killed".to_vec(),
            b"error".to_vec(),
            b"oomkilled".to_vec(),
        ]);
        assert_eq!(got, vec![b"error".to_vec(), b"killed".to_vec()]);
    }

    #[test]
    fn patterns_without_literals_fall_back_to_a_regex_over_the_stream() {
        let p = PatternInfo::new(r"^\d{5}$");
        let f = Prefilter::new(&[&p]);
        assert!(matches!(f.finder, Finder::Regex(_)));
        assert!(!f.lowercase());
        let stream = b"abc\n12345\nxyz\n";
        let hit = f.find(stream, 0).unwrap();
        assert!((4..9).contains(&hit), "{hit}");
        assert_eq!(f.find(stream, 10), None);
    }

    #[test]
    fn no_pattern_means_no_candidate() {
        let f = Prefilter::new(&[]);
        assert!(f.is_nothing());
        assert_eq!(f.find(b"anything\n", 0), None);
    }
}
