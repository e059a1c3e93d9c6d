//! Dependency snapshots: which package versions a run's log says it used,
//! and what changed since the previous run of the same context (docs/design.md §2).
//!
//! Rules are regexes with the named groups `name` and `version`, applied to
//! every cleaned log line (all matches on a line count); an optional `when`
//! regex restricts a rule to lines it matches. Defaults cover the install
//! lines of pip, npm, cargo, Maven and Julia's Pkg.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most packages kept from one log (a runaway pattern cannot grow memory).
pub const MAX_PACKAGES: usize = 5000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencyRule {
    pub name: String,
    /// Only lines matching this regex are searched.
    #[serde(default)]
    pub when: Option<String>,
    /// A regex with the named groups `name` and `version`.
    pub pattern: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DepsError {
    #[error("dependency rule {rule:?}: {reason}")]
    Rule { rule: String, reason: String },
}

#[derive(Debug, Clone)]
struct Compiled {
    when: Option<Regex>,
    pattern: Regex,
}

/// Compiled extraction rules.
#[derive(Debug, Clone)]
pub struct Extractor {
    rules: Vec<Compiled>,
}

fn rule(name: &str, when: Option<&str>, pattern: &str) -> DependencyRule {
    DependencyRule {
        name: name.into(),
        when: when.map(str::to_string),
        pattern: pattern.into(),
    }
}

/// The shipped rules; later rules win when two give a version for the same package.
pub fn default_rules() -> Vec<DependencyRule> {
    vec![
        rule(
            "pip-installed",
            Some(r"^\s*Successfully installed "),
            r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)-(?P<version>\d[A-Za-z0-9.+!_]*)",
        ),
        rule(
            "pip-collecting",
            None,
            r"^\s*Collecting (?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;,]+)",
        ),
        rule(
            "npm-tree",
            None,
            r"^[\s│]*(?:\+ |[├└]─[─┬]\s?)(?P<name>@?[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)?)@(?P<version>\d[A-Za-z0-9.+-]*)",
        ),
        rule(
            "cargo",
            None,
            r"^\s*(?:Compiling|Downloaded|Checking) (?P<name>[A-Za-z0-9_-]+) v(?P<version>\d[A-Za-z0-9.+-]*)",
        ),
        rule(
            "maven",
            None,
            r"Download(?:ed|ing) from [\w.-]+: \S*/(?P<name>[^/\s]+)/(?P<version>\d[^/\s]*)/[^/\s]+\.(?:jar|pom)\b",
        ),
        rule(
            "julia-pkg",
            None,
            r"\[[0-9a-f]{8}\] (?:[+~] )?(?P<name>[A-Za-z][A-Za-z0-9_]*) v(?P<version>\d[A-Za-z0-9.+-]*)",
        ),
        rule(
            "julia-pkg-upgrade",
            None,
            r"\[[0-9a-f]{8}\] [↑↓] (?P<name>[A-Za-z][A-Za-z0-9_]*) v\S+ ⇒ v(?P<version>\d[A-Za-z0-9.+-]*)",
        ),
    ]
}

impl Extractor {
    pub fn new(rules: &[DependencyRule]) -> Result<Extractor, DepsError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for r in rules {
            let err = |reason: String| DepsError::Rule {
                rule: r.name.clone(),
                reason,
            };
            let pattern =
                Regex::new(&r.pattern).map_err(|e| err(format!("invalid pattern: {e}")))?;
            let groups: Vec<_> = pattern.capture_names().flatten().collect();
            if !groups.contains(&"name") || !groups.contains(&"version") {
                return Err(err(
                    "the pattern needs the named groups (?P<name>...) and (?P<version>...)".into(),
                ));
            }
            let when = match &r.when {
                Some(w) => Some(Regex::new(w).map_err(|e| err(format!("invalid when: {e}")))?),
                None => None,
            };
            compiled.push(Compiled { when, pattern });
        }
        Ok(Extractor { rules: compiled })
    }

    pub fn with_defaults() -> Extractor {
        Extractor::new(&default_rules()).expect("the default dependency rules compile")
    }

    /// package → version as the log reports them (the last report of a package wins).
    pub fn extract(&self, log: &str) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        for raw in log.lines() {
            let line = crate::classify::strip_ansi_and_sections(raw);
            for rule in &self.rules {
                if rule.when.as_ref().is_some_and(|w| !w.is_match(&line)) {
                    continue;
                }
                for c in rule.pattern.captures_iter(&line) {
                    if let (Some(name), Some(version)) = (c.name("name"), c.name("version")) {
                        if found.len() >= MAX_PACKAGES && !found.contains_key(name.as_str()) {
                            continue;
                        }
                        found.insert(name.as_str().to_string(), version.as_str().to_string());
                    }
                }
            }
        }
        found
    }
}

/// One package whose version differs between two runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyChange {
    pub package: String,
    /// None when the package is new.
    pub before: Option<String>,
    /// None when the package is gone.
    pub after: Option<String>,
}

/// What changed from `before` to `after`, by package name.
pub fn diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<DependencyChange> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, a) = (before.get(name), after.get(name));
            (b != a).then(|| DependencyChange {
                package: name.clone(),
                before: b.cloned(),
                after: a.cloned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Vec<(String, String)> {
        Extractor::with_defaults()
            .extract(line)
            .into_iter()
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn default_rules_read_the_install_lines_of_common_package_managers() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "Successfully installed requests-2.32.3 typing-extensions-4.12.2 urllib3-2.2.2",
                &[
                    ("requests", "2.32.3"),
                    ("typing-extensions", "4.12.2"),
                    ("urllib3", "2.2.2"),
                ],
            ),
            ("Collecting numpy==2.1.0", &[("numpy", "2.1.0")]),
            ("├── react@18.3.1", &[("react", "18.3.1")]),
            ("│ └─┬ @babel/core@7.25.2", &[("@babel/core", "7.25.2")]),
            ("+ lodash@4.17.21", &[("lodash", "4.17.21")]),
            ("   Compiling serde v1.0.229", &[("serde", "1.0.229")]),
            ("  Downloaded tokio v1.54.1", &[("tokio", "1.54.1")]),
            (
                "Downloaded from central: https://repo.maven.apache.org/maven2/org/slf4j/slf4j-api/2.0.13/slf4j-api-2.0.13.jar (68 kB at 1.2 MB/s)",
                &[("slf4j-api", "2.0.13")],
            ),
            ("  [682c06a0] + JSON v0.21.4", &[("JSON", "0.21.4")]),
            (
                "  [682c06a0] ↑ JSON v0.21.3 ⇒ v0.21.4",
                &[("JSON", "0.21.4")],
            ),
            (
                "\x1b[32m   Compiling\x1b[0m regex v1.13.2",
                &[("regex", "1.13.2")],
            ),
        ];
        for (line, want) in cases {
            assert_eq!(one(line), pairs(want), "{line}");
        }
    }

    #[test]
    fn ordinary_log_lines_are_not_dependencies() {
        for line in [
            "Contact me at dev@example.com",
            "Successfully built wheel",
            "error: could not compile `shop` (lib) due to 2 previous errors",
            "Running 42 tests on node@host",
            "Installed packages: none",
        ] {
            assert_eq!(one(line), vec![], "{line}");
        }
    }

    #[test]
    fn changes_list_upgrades_additions_and_removals() {
        let before: BTreeMap<_, _> = pairs(&[("a", "1"), ("b", "2"), ("gone", "1")])
            .into_iter()
            .collect();
        let after: BTreeMap<_, _> = pairs(&[("a", "1"), ("b", "3"), ("new", "0.1")])
            .into_iter()
            .collect();
        let d = diff(&before, &after);
        let got: Vec<(&str, Option<&str>, Option<&str>)> = d
            .iter()
            .map(|c| (c.package.as_str(), c.before.as_deref(), c.after.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b", Some("2"), Some("3")),
                ("gone", Some("1"), None),
                ("new", None, Some("0.1"))
            ]
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let err = Extractor::new(&[rule("mine", None, "(?P<name>x)")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"mine\"") && err.contains("version"), "{err}");
        let err = Extractor::new(&[rule("bad", Some("("), "(?P<name>x)(?P<version>y)")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid when"), "{err}");
    }
}
