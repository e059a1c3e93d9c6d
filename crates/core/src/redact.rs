//! Redaction: credentials that CI output carries (tokens echoed by a script, a
//! clone URL with `user:password@`, an `Authorization:` header in a curl
//! trace, a private key printed by a failing test) are replaced by
//! `[REDACTED]` before any of it is stored, so that no page, JSON answer or
//! prefilled issue link can show them.
//!
//! It runs on what is stored, not on whole logs: evidence lines, their context
//! lines, test messages, dependency versions, report text and run links. It is
//! cheap on clean text: one Aho-Corasick pass over the text looks for the
//! literals every pattern needs (`://`, `ghp_`, `glpat-`, `password`, ...),
//! and only text that contains one is searched with the patterns themselves.

use crate::model::NewRun;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// `[redact]`: redaction of credentials in CI text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Start from the shipped patterns (URL credentials, auth headers, GitHub,
    /// GitLab, AWS and Slack tokens, private keys, `password=`/`token=`).
    pub default_patterns: bool,
    /// More regexes; a match (or its `secret` group) becomes `[REDACTED]`.
    pub patterns: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            default_patterns: true,
            patterns: Vec::new(),
        }
    }
}

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("pattern {index} ({pattern:?}): {source}")]
    Pattern {
        index: usize,
        pattern: String,
        source: regex::Error,
    },
    #[error("cannot build the literal prefilter: {0}")]
    Prefilter(String),
}

/// One shipped pattern: the regex (its `secret` group, or the whole match,
/// is replaced) and literals of which every match contains at least one
/// (ASCII case-insensitive).
struct Shipped {
    pattern: &'static str,
    literals: &'static [&'static str],
}

/// The shipped patterns, in the order they are applied.
const SHIPPED: &[Shipped] = &[
    // A private key block, to its END line or the end of the text.
    Shipped {
        pattern: r"(?s)-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
        literals: &["private key"],
    },
    // user:password@ in any URL.
    Shipped {
        pattern: r"(?i)\b[a-z][a-z0-9+.-]*://(?P<secret>[^\s/?#@:]+:[^\s/?#@]+)@",
        literals: &["://"],
    },
    // Authorization headers with any scheme.
    Shipped {
        pattern: r#"(?i)\b(?:proxy-)?authorization"?\s*[:=]\s*"?(?:bearer|basic|token|bot|digest|negotiate)?\s*(?P<secret>[^\s'",;]+)"#,
        literals: &["authorization"],
    },
    // A bearer token anywhere (tokens have digits; words do not).
    Shipped {
        pattern: r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/-]*[0-9][A-Za-z0-9._~+/-]*=*)",
        literals: &["bearer"],
    },
    // GitHub tokens: classic, OAuth, user-to-server, server-to-server, refresh; fine-grained.
    Shipped {
        pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255})",
        literals: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
    },
    // GitLab tokens (personal, deploy, runner, CI job, trigger, feed, OAuth, ...).
    Shipped {
        pattern: r"\bgl(?:pat|dt|rt|cbt|ptt|ft|imt|oas|soat|ffct|agent)-[A-Za-z0-9_.-]{10,}",
        literals: &[
            "glpat-", "gldt-", "glrt-", "glcbt-", "glptt-", "glft-", "glimt-", "gloas-", "glsoat-",
            "glffct-", "glagent-",
        ],
    },
    // AWS access key ids, and secret access keys where they are assigned.
    Shipped {
        pattern: r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|APKA)[0-9A-Z]{16}\b",
        literals: &[
            "akia", "asia", "abia", "acca", "agpa", "aida", "aroa", "anpa", "anva", "apka",
        ],
    },
    Shipped {
        pattern: r#"(?i)aws_?secret_?(?:access_?)?key"?\s*[:=]\s*["']?(?P<secret>[A-Za-z0-9/+=]{30,})"#,
        literals: &["aws_secret", "awssecret"],
    },
    // Slack tokens and incoming-webhook URLs.
    Shipped {
        pattern: r"\b(?:xox[abposr]|xapp)-[A-Za-z0-9-]{10,}",
        literals: &[
            "xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xapp-",
        ],
    },
    Shipped {
        pattern: r"(?i)hooks\.slack\.com/services/(?P<secret>[A-Za-z0-9/_-]+)",
        literals: &["hooks.slack.com"],
    },
    // password=..., token=..., api_key=... (shell, env, query strings).
    Shipped {
        pattern: r#"(?i)\b[a-z0-9_.-]*(?:password|passwd|secret|token|api_?key|access_?key)\s*=\s*(?P<secret>"[^"\n]*"|'[^'\n]*'|[^\s'",;&=$][^\s'",;&]*)"#,
        literals: &[
            "password",
            "passwd",
            "secret",
            "token",
            "apikey",
            "api_key",
            "accesskey",
            "access_key",
        ],
    },
    // "password": "..." (JSON) and password: ... (YAML, properties).
    Shipped {
        pattern: r#"(?i)"[a-z0-9_.-]*(?:password|passwd|secret|token|api_?key)"\s*:\s*"(?P<secret>[^"\n]+)""#,
        literals: &["password", "passwd", "secret", "token", "apikey", "api_key"],
    },
    Shipped {
        pattern: r"(?i)\b(?:password|passwd)\s*:\s*(?P<secret>[^\s'\x22]+)",
        literals: &["password", "passwd"],
    },
];

struct Rule {
    regex: Regex,
    /// The `secret` group's index, when the pattern has one.
    group: Option<usize>,
}

/// The compiled patterns and their literal prefilter.
pub struct Redactor {
    rules: Vec<Rule>,
    /// Literals of every rule; None when some rule has none (then every text
    /// is searched).
    prefilter: Option<AhoCorasick>,
    enabled: bool,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &self.rules.len())
            .field("prefilter", &self.prefilter.is_some())
            .finish()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        // The shipped patterns are tested to compile.
        Redactor::from_config(&RedactConfig::default()).unwrap_or_else(|_| Redactor::disabled())
    }
}

/// Literals every match of `pattern` contains one of, when regex-syntax can
/// tell (each at least 3 bytes); None otherwise.
fn required_literals(pattern: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    // Prefixes, then suffixes: a finite set of long-enough literals that
    // every match starts (or ends) with.
    for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
        let mut extractor = Extractor::new();
        extractor.kind(kind);
        let seq = extractor.extract(&hir);
        if let Some(lits) = seq.literals()
            && !lits.is_empty()
            && lits.iter().all(|l| l.as_bytes().len() >= 3)
        {
            return Some(
                lits.iter()
                    .map(|l| String::from_utf8_lossy(l.as_bytes()).to_ascii_lowercase())
                    .collect(),
            );
        }
    }
    None
}

impl Redactor {
    /// A redactor that changes nothing.
    pub fn disabled() -> Redactor {
        Redactor {
            rules: Vec::new(),
            prefilter: None,
            enabled: false,
        }
    }

    pub fn from_config(config: &RedactConfig) -> Result<Redactor, RedactError> {
        let mut rules = Vec::new();
        let mut literals: Vec<String> = Vec::new();
        let mut all_have_literals = true;
        let compile = |index: usize, pattern: &str| {
            Regex::new(pattern).map_err(|source| RedactError::Pattern {
                index,
                pattern: pattern.to_string(),
                source,
            })
        };
        if config.default_patterns {
            for (i, s) in SHIPPED.iter().enumerate() {
                let regex = compile(i, s.pattern)?;
                literals.extend(s.literals.iter().map(|l| l.to_string()));
                rules.push(rule(regex));
            }
        }
        for (i, p) in config.patterns.iter().enumerate() {
            let regex = compile(i, p)?;
            match required_literals(p) {
                Some(l) => literals.extend(l),
                None => all_have_literals = false,
            }
            rules.push(rule(regex));
        }
        let prefilter = if all_have_literals && !literals.is_empty() {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&literals)
                    .map_err(|e| RedactError::Prefilter(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Redactor {
            enabled: !rules.is_empty(),
            rules,
            prefilter,
        })
    }

    /// Whether `text` may hold something to redact (false: it surely does not).
    pub fn may_match(&self, text: &str) -> bool {
        if !self.enabled || text.is_empty() {
            return false;
        }
        match &self.prefilter {
            Some(ac) => ac.is_match(text),
            None => true,
        }
    }

    /// `text` with every secret replaced; borrowed when there is none.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.may_match(text) {
            return Cow::Borrowed(text);
        }
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        for rule in &self.rules {
            if let Cow::Owned(s) = rule.apply(&out) {
                out = Cow::Owned(s);
            }
        }
        out
    }

    /// Redact in place; true when something changed.
    pub fn redact_string(&self, text: &mut String) -> bool {
        match self.redact(text) {
            Cow::Borrowed(_) => false,
            Cow::Owned(s) => {
                *text = s;
                true
            }
        }
    }

    /// Redact consecutive lines in place: a private key block that starts on
    /// one line hides every line up to its END line. True when something changed.
    pub fn redact_lines(&self, lines: &mut [String]) -> bool {
        let mut changed = false;
        let mut in_key = false;
        for line in lines.iter_mut() {
            if in_key {
                if is_key_end(line) {
                    in_key = false;
                }
                if line != REDACTED {
                    *line = REDACTED.to_string();
                    changed = true;
                }
                continue;
            }
            let starts_key = is_key_begin(line) && !is_key_end(line);
            changed |= self.redact_string(line);
            in_key = starts_key && self.enabled;
        }
        changed
    }

    /// Whether anything of `run` may need redaction (cheap: literals only).
    fn run_may_match(&self, run: &NewRun) -> bool {
        let m = |s: &str| self.may_match(s);
        run.url.as_deref().is_some_and(m)
            || run.log_url.as_deref().is_some_and(m)
            || run.failures.iter().any(|f| {
                m(&f.evidence)
                    || f.context.iter().any(|c| m(c))
                    || f.candidates.iter().any(|c| m(&c.text))
            })
            || run.tests.iter().any(|t| {
                t.message.as_deref().is_some_and(m) || t.retry_reasons.iter().any(|r| m(r))
            })
            || run.dependencies.iter().any(|(k, v)| m(k) || m(v))
            || run.reports.iter().any(|r| m(&r.content))
    }

    /// The run with every stored text redacted, or None when nothing needs it
    /// (the common case, found without copying anything).
    pub fn redact_run(&self, run: &NewRun) -> Option<NewRun> {
        if !self.run_may_match(run) {
            return None;
        }
        let mut run = run.clone();
        self.redact_every_text(&mut run).then_some(run)
    }

    /// Redact every stored text of `run` in place (no copy of the run: a
    /// bulk import owns each run it redacts); true when something changed.
    pub fn redact_run_in_place(&self, run: &mut NewRun) -> bool {
        self.run_may_match(run) && self.redact_every_text(run)
    }

    fn redact_every_text(&self, run: &mut NewRun) -> bool {
        let mut changed = false;
        for url in [&mut run.url, &mut run.log_url].into_iter().flatten() {
            changed |= self.redact_string(url);
        }
        for f in &mut run.failures {
            // Evidence in its place among its context lines, so that a key
            // block that starts before it hides it.
            let before = f
                .context_before
                .map(|n| n as usize)
                .unwrap_or(0)
                .min(f.context.len());
            let mut lines = std::mem::take(&mut f.context);
            lines.insert(before, std::mem::take(&mut f.evidence));
            if self.redact_lines(&mut lines) {
                changed = true;
            }
            f.evidence = lines.remove(before);
            f.context = lines;
            for c in &mut f.candidates {
                changed |= self.redact_string(&mut c.text);
            }
        }
        for t in &mut run.tests {
            if let Some(m) = &mut t.message {
                changed |= self.redact_string(m);
            }
            for r in &mut t.retry_reasons {
                changed |= self.redact_string(r);
            }
        }
        if run
            .dependencies
            .iter()
            .any(|(k, v)| self.may_match(k) || self.may_match(v))
        {
            let deps = std::mem::take(&mut run.dependencies);
            for (k, v) in deps {
                let k2 = self.redact(&k).into_owned();
                let v2 = self.redact(&v).into_owned();
                changed |= k2 != k || v2 != v;
                run.dependencies.insert(k2, v2);
            }
        }
        for r in &mut run.reports {
            changed |= self.redact_string(&mut r.content);
        }
        changed
    }
}

fn rule(regex: Regex) -> Rule {
    let group = regex.capture_names().position(|n| n == Some("secret"));
    Rule { regex, group }
}

impl Rule {
    fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(group) = self.group else {
            return self.regex.replace_all(text, REDACTED);
        };
        let mut out = String::new();
        let mut last = 0;
        for caps in self.regex.captures_iter(text) {
            let Some(m) = caps.get(group) else {
                continue;
            };
            if m.as_str() == REDACTED {
                continue;
            }
            out.push_str(&text[last..m.start()]);
            out.push_str(REDACTED);
            last = m.end();
        }
        if last == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }
}

fn is_key_begin(line: &str) -> bool {
    line.contains("-----BEGIN") && line.contains("PRIVATE KEY")
}

fn is_key_end(line: &str) -> bool {
    line.contains("-----END") && line.contains("PRIVATE KEY")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::from_config(&RedactConfig::default()).unwrap()
    }

    /// Each shape the issue names, as it shows up in real CI output.
    const SHAPES: &[(&str, &str)] = &[
        (
            "fatal: unable to access 'https://oauth2:glpat-AbCdEf0123456789xyz1@gitlab.example.com/g/p.git/': 403",
            "glpat-AbCdEf0123456789xyz1",
        ),
        (
            "git clone https://deploy:s3cr3tP4ss@git.example.com/repo.git",
            "s3cr3tP4ss",
        ),
        (
            "> Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc123",
            "eyJhbGciOiJIUzI1NiJ9",
        ),
        (
            "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZDEyMw==' https://x",
            "dXNlcjpwYXNzd29yZDEyMw",
        ),
        (
            "export GH=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        ),
        (
            "token ghs_16C7e42F292c6912E7710c838347Ae178B4a used",
            "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
        ),
        (
            "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE aws s3 ls",
            "AKIAIOSFODNN7EXAMPLE",
        ),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "posting to slack with xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo",
        ),
        ("mysql -u root password=hunter2isbad -h db", "hunter2isbad"),
        (
            "GET /api?token=abcdef123456&page=2 HTTP/1.1",
            "abcdef123456",
        ),
    ];

    #[test]
    fn every_shape_is_redacted_and_the_rest_of_the_line_kept() {
        let r = r();
        for (line, secret) in SHAPES {
            let out = r.redact(line);
            assert!(!out.contains(secret), "{line:?} -> {out:?}");
            assert!(out.contains(REDACTED), "{line:?} -> {out:?}");
        }
        let out = r.redact(SHAPES[0].0);
        assert_eq!(
            out,
            "fatal: unable to access 'https://[REDACTED]@gitlab.example.com/g/p.git/': 403"
        );
        assert_eq!(
            r.redact("mysql -u root password=hunter2isbad -h db"),
            "mysql -u root password=[REDACTED] -h db"
        );
    }

    #[test]
    fn clean_text_is_borrowed_and_look_alikes_are_kept() {
        let r = r();
        for clean in [
            "error[E0308]: mismatched types",
            "ssh://git@github.com/o/r.git",
            "https://github.com/o/r/actions/runs/1",
            "basic functionality works",
            "SyntaxError: Unexpected token '}'",
            "if token == expected {",
            "password=$DB_PASSWORD",
        ] {
            assert!(
                matches!(r.redact(clean), Cow::Borrowed(_)) || r.redact(clean) == clean,
                "{clean:?} -> {:?}",
                r.redact(clean)
            );
        }
        assert!(matches!(r.redact("plain text"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_key_block_over_several_lines_hides_every_line_of_it() {
        let r = r();
        let mut lines: Vec<String> = [
            "before",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
            "AAAAMwAAAAtzc2gtZWQyNTUxOQAAACDx",
            "-----END OPENSSH PRIVATE KEY-----",
            "after",
        ]
        .map(String::from)
        .to_vec();
        assert!(r.redact_lines(&mut lines));
        assert_eq!(lines[0], "before");
        assert_eq!(lines[5], "after");
        for l in &lines[1..5] {
            assert!(!l.contains("b3Bl") && !l.contains("AAAAMw"), "{lines:?}");
        }
    }

    #[test]
    fn extra_patterns_are_applied_and_invalid_ones_named() {
        let config = RedactConfig {
            default_patterns: false,
            patterns: vec![r"corp-[0-9a-f]{8}".into(), r"pin (?P<secret>\d{4})".into()],
        };
        let r = Redactor::from_config(&config).unwrap();
        assert_eq!(
            r.redact("key corp-deadbeef pin 1234 ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
            "key [REDACTED] pin [REDACTED] ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
        );
        let bad = RedactConfig {
            default_patterns: true,
            patterns: vec!["(".into()],
        };
        let e = Redactor::from_config(&bad).unwrap_err().to_string();
        assert!(e.contains("pattern 0"), "{e}");
        // A pattern without a usable literal turns the prefilter off, not the pattern.
        let any = RedactConfig {
            default_patterns: false,
            patterns: vec![r"\d{6}".into()],
        };
        assert_eq!(
            Redactor::from_config(&any).unwrap().redact("otp 123456"),
            "otp [REDACTED]"
        );
    }

    #[test]
    fn a_run_is_copied_only_when_it_holds_a_secret() {
        use crate::model::*;
        let r = r();
        let mut run = NewRun {
            failures: vec![FailureEvidence {
                class: "c".into(),
                category: "infra".into(),
                line: Some(3),
                evidence: "fatal: clone failed".into(),
                context: vec![
                    "+ git clone https://ci:hunter2pass@git.example.com/x".into(),
                    "next".into(),
                ],
                context_before: Some(1),
                fingerprint: None,
                test_name: None,
                candidates: vec![EvidenceCandidate {
                    line: 9,
                    text: "curl -H 'Authorization: Bearer abcdef0123456789abcdef'".into(),
                    class: "network".into(),
                }],
            }],
            ..NewRun::default()
        };
        run.dependencies.insert(
            "pkg".into(),
            "1.0 @ https://u:p4ssw0rd@pypi.example/x".into(),
        );
        let out = r.redact_run(&run).expect("redacted");
        assert_eq!(out.failures[0].evidence, "fatal: clone failed");
        assert_eq!(
            out.failures[0].context[0],
            "+ git clone https://[REDACTED]@git.example.com/x"
        );
        assert_eq!(out.failures[0].context[1], "next");
        assert!(
            !out.failures[0].candidates[0]
                .text
                .contains("abcdef0123456789abcdef"),
            "{:?}",
            out.failures[0].candidates
        );
        assert!(!out.dependencies["pkg"].contains("p4ssw0rd"));
        let clean = NewRun::default();
        assert!(r.redact_run(&clean).is_none());

        // In place: the same run, and a clean one left as it was.
        let mut in_place = run.clone();
        assert!(r.redact_run_in_place(&mut in_place));
        assert_eq!(in_place, out);
        let mut evidence_only = run.clone();
        evidence_only.failures[0].context = vec!["a".into(), "password=hunter2pass".into()];
        evidence_only.failures[0].context_before = Some(2);
        evidence_only.failures[0].candidates.clear();
        evidence_only.dependencies.clear();
        let want = r.redact_run(&evidence_only).expect("redacted");
        assert!(r.redact_run_in_place(&mut evidence_only));
        assert_eq!(evidence_only, want);
        assert_eq!(evidence_only.failures[0].context[0], "a");
        assert_eq!(evidence_only.failures[0].evidence, "fatal: clone failed");
        let mut untouched = clean.clone();
        assert!(!r.redact_run_in_place(&mut untouched));
        assert_eq!(untouched, clean);
    }
}
