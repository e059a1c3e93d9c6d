//! The rule table of the classifier.
//!
//! A rule names a kind of failure: a regex matched against one cleaned log line,
//! a category, a priority and what the matching line says about where the
//! evidence is ([`Evidence`]). Rules come from `[[classify.rules]]` tables of the
//! config file and from the shipped set in `default_rules.toml` (the same format,
//! compiled into the binary). This module defines the rule types, loads the
//! defaults and validates rules; matching and ranking live elsewhere.

use std::fmt;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// Rules of at least this priority report that the job was stopped from outside
/// (timeout, cancellation, lost runner, OOM kill): their match is the evidence
/// wherever it is in the log.
pub const OUTSIDE_PRIORITY: i32 = 100;
/// The class of the fallback match when no rule matched.
pub const UNKNOWN_CLASS: &str = "unknown";
const MAX_RULE_NAME_BYTES: usize = 64;

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
    /// CI job logs (`Classifier::classify_log`).
    Log,
    /// Test failure messages, e.g. from JUnit XML (`Classifier::classify_message`).
    TestMessage,
}

pub(crate) fn default_applies_to() -> Vec<AppliesTo> {
    vec![AppliesTo::Log, AppliesTo::TestMessage]
}

/// Which line a rule's match points at, and how much it says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// The matching line is the evidence (a failing test, a compiler error, ...).
    #[default]
    Line,
    /// The matching line announces the failure (`rake aborted!`, `Failures:`):
    /// the next non-blank line is the evidence, with this rule's class.
    Next,
    /// The matching line reports a failure explained above it (`make: *** [x]
    /// Error 1`, `npm ERR! Test failed.  See above for more details.`): the last
    /// non-blank line before it that is not such a line is the evidence. Ranks
    /// below rule matches and explicit error lines of the same step.
    Previous,
    /// The matching line only counts failures (`Tests run: 9, Failures: 2`): it is
    /// the evidence only when nothing more specific is in the failing step.
    Summary,
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
    /// Within the failing step, higher wins (ties go to the earliest line, then to
    /// the earlier rule). At [`OUTSIDE_PRIORITY`] and above the match wins
    /// wherever it is.
    #[serde(default)]
    pub priority: i32,
    /// Which line the match points at (default: the matching line).
    #[serde(default, skip_serializing_if = "is_line")]
    pub evidence: Evidence,
}

fn is_line(e: &Evidence) -> bool {
    *e == Evidence::Line
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

/// Error building a classifier.
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

/// Checks every rule and compiles its regex (in rule order).
pub(crate) fn compile(rules: &[RuleConfig]) -> Result<Vec<Regex>, ClassifyError> {
    let mut compiled = Vec::with_capacity(rules.len());
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
        compiled.push(re);
    }
    Ok(compiled)
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
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

/// The shipped rules, in the format of `[[classify.rules]]` (see
/// docs/classification.md for the table).
const DEFAULT_RULES_TOML: &str = include_str!("default_rules.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<RuleConfig>,
}

static DEFAULT_RULES: LazyLock<Vec<RuleConfig>> = LazyLock::new(|| {
    // a unit test parses and compiles the file, so this cannot fail at run time
    toml::from_str::<RuleFile>(DEFAULT_RULES_TOML)
        .map(|f| f.rules)
        .unwrap_or_else(|e| panic!("default_rules.toml: {e}"))
});

/// The shipped default rule set.
pub(crate) fn default_rules() -> Vec<RuleConfig> {
    DEFAULT_RULES.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rule_file_parses_and_every_rule_compiles() {
        let rules = default_rules();
        assert!(rules.len() >= 40, "{}", rules.len());
        compile(&rules).unwrap();
        for r in &rules {
            assert!(!r.description.is_empty(), "{}: no description", r.name);
            assert!(r.priority >= 0, "{}", r.name);
            if r.evidence != Evidence::Line {
                assert_eq!(r.applies_to, vec![AppliesTo::Log], "{}", r.name);
            }
        }
    }

    #[test]
    fn every_default_rule_is_in_the_documentation_table() {
        let doc = include_str!("../../../../docs/classification.md");
        for r in default_rules() {
            let row = format!("| `{}` | {} | {} |", r.name, r.category, r.priority);
            assert!(doc.contains(&row), "docs/classification.md lacks {row}");
        }
    }

    #[test]
    fn no_default_rule_names_a_project() {
        // rules describe tools, never the projects of the development corpus
        let projects = [
            "nancy",
            "caffe",
            "material",
            "lighttable",
            "atom",
            "elixir-lang",
            "otp",
            "awesome",
            "web-starter",
            "pandoc",
            "rxjava",
            "freecodecamp",
            "openface",
            "reactivecocoa",
            "codeigniter",
            "git-it",
            "thefuck",
            "shiny",
            "discourse",
            "ripgrep",
            "akka",
            "git-extras",
            "alamofire",
            "learnxinyminutes",
            "vim-plug",
        ];
        for r in default_rules() {
            let text = format!("{} {} {}", r.name, r.pattern, r.description).to_lowercase();
            for p in projects {
                assert!(!text.contains(p), "rule {} mentions {p}", r.name);
            }
        }
    }

    #[test]
    fn bad_rules_are_rejected_with_the_rule_name_and_reason() {
        let rule = |name: &str, pattern: &str| RuleConfig {
            name: name.into(),
            pattern: pattern.into(),
            category: Category::Build,
            description: String::new(),
            known_issue_url: None,
            applies_to: default_applies_to(),
            priority: 0,
            evidence: Evidence::Line,
        };
        let problem = |rules: &[RuleConfig]| match compile(rules) {
            Err(ClassifyError::Rule { problem, .. }) => problem,
            other => panic!("{other:?}"),
        };
        assert_eq!(problem(&[rule("Bad Name", "x")]), RuleProblem::InvalidName);
        assert_eq!(problem(&[rule("unknown", "x")]), RuleProblem::ReservedName);
        assert_eq!(
            problem(&[rule("a", "x"), rule("a", "y")]),
            RuleProblem::DuplicateName(0)
        );
        assert_eq!(problem(&[rule("a", "")]), RuleProblem::EmptyPattern);
        assert!(matches!(
            problem(&[rule("a", "(")]),
            RuleProblem::InvalidRegex(_)
        ));
        assert_eq!(problem(&[rule("a", "x*")]), RuleProblem::MatchesEmptyLine);
        let mut r = rule("a", "x");
        r.known_issue_url = Some("ftp://x".into());
        assert!(matches!(problem(&[r]), RuleProblem::InvalidUrl(_)));
        let mut r = rule("a", "x");
        r.applies_to.clear();
        assert_eq!(problem(&[r]), RuleProblem::NoTargets);
        let err = compile(&[rule("ok", "x"), rule("foo", "(")]).unwrap_err();
        assert!(
            err.to_string().starts_with("rule \"foo\": invalid regex: "),
            "{err}"
        );
        assert!(matches!(err, ClassifyError::Rule { index: 1, .. }));
    }

    #[test]
    fn evidence_defaults_to_the_line_and_parses_from_toml() {
        let r: RuleConfig = toml::from_str(
            "name = \"x\"\npattern = \"a\"\ncategory = \"build\"\nevidence = \"next\"\n",
        )
        .unwrap();
        assert_eq!(r.evidence, Evidence::Next);
        let r: RuleConfig =
            toml::from_str("name = \"x\"\npattern = \"a\"\ncategory = \"build\"\n").unwrap();
        assert_eq!(r.evidence, Evidence::Line);
        assert!(
            toml::from_str::<RuleConfig>(
                "name = \"x\"\npattern = \"a\"\ncategory = \"build\"\nevidence = \"above\"\n"
            )
            .is_err()
        );
    }
}
