//! The issue drafted for a failure: title and body (evidence, fingerprint,
//! example runs) and the forge's new-issue form prefilled with them.

use super::enc;
use super::failures::ExampleRun;
use crate::store::ui::FailureOccurrence;
use chrono::{DateTime, Utc};

/// Most characters of evidence put into an issue (forms take URLs of a few KB).
const ISSUE_EVIDENCE_MAX: usize = 1500;

pub(super) struct IssueDraft {
    pub title: String,
    pub body: String,
}

impl IssueDraft {
    pub(super) fn new(
        latest: &FailureOccurrence,
        occurrences: u64,
        window: &str,
        first_seen: Option<DateTime<Utc>>,
        examples: &[ExampleRun],
    ) -> IssueDraft {
        let mut evidence: String = latest.evidence.chars().take(ISSUE_EVIDENCE_MAX).collect();
        if evidence.len() < latest.evidence.len() {
            evidence.push('…');
        }
        use crate::http::text::{code_span, fenced, reveal};
        let short: String = latest.evidence.chars().take(80).collect();
        let title = format!("CI failure ({}): {short}", latest.class);
        let mut body = format!(
            "CI failure class {} ({}), seen {occurrences} times in the last {window}",
            code_span(&latest.class),
            latest.category
        );
        if let Some(t) = first_seen {
            body.push_str(&format!(", first seen {}", t.format("%Y-%m-%d %H:%M UTC")));
        }
        body.push_str(".\n\nEvidence:\n\n");
        body.push_str(&fenced(&evidence));
        if let Some(fp) = &latest.fingerprint {
            body.push_str(&format!("\nFingerprint: {}\n", code_span(fp)));
        }
        if !examples.is_empty() {
            body.push_str("\nExample runs:\n");
            for e in examples {
                let link = e.url.as_deref().unwrap_or("(no link)");
                body.push_str(&format!(
                    "- {} {} {}: {link}\n",
                    code_span(&e.repository),
                    code_span(&e.context),
                    e.at.format("%Y-%m-%d %H:%M UTC")
                ));
            }
        }
        IssueDraft {
            title: reveal(&title).into_owned(),
            body: reveal(&body).into_owned(),
        }
    }

    /// GitHub's or GitLab's new-issue form, prefilled; none for other forges.
    pub(super) fn url(&self, forge: &str, repository: &str, gitlab_web: &str) -> Option<String> {
        // `..` would climb out of the repository on the forge.
        if !crate::http::text::safe_repository_path(repository) {
            return None;
        }
        let path: String = repository.split('/').map(enc).collect::<Vec<_>>().join("/");
        match forge {
            "github" => Some(format!(
                "https://github.com/{path}/issues/new?title={}&body={}",
                enc(&self.title),
                enc(&self.body)
            )),
            "gitlab" => Some(format!(
                "{gitlab_web}/{path}/-/issues/new?{}={}&{}={}",
                enc("issue[title]"),
                enc(&self.title),
                enc("issue[description]"),
                enc(&self.body)
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::views::urls::gitlab_web_base;

    #[test]
    fn issue_links_are_prefilled_and_encoded() {
        let occ = FailureOccurrence {
            run_id: 7,
            at: "2026-11-20T02:00:00Z".parse().unwrap(),
            forge: "github".into(),
            repository: "o/r".into(),
            context: "ci".into(),
            url: Some("https://github.com/o/r/actions/runs/7".into()),
            class: "oom".into(),
            category: "infrastructure".into(),
            evidence: "Killed & <gone> #1".into(),
            test_name: None,
            fingerprint: Some("abc".into()),
            normalized: None,
            first_seen: None,
        };
        let ex = vec![ExampleRun {
            run_id: 7,
            at: occ.at,
            repository: "o/r".into(),
            context: "ci".into(),
            url: occ.url.clone(),
        }];
        let d = IssueDraft::new(&occ, 3, "7days", None, &ex);
        let gh = d.url("github", "o/r", "https://gitlab.com").unwrap();
        assert!(gh.starts_with("https://github.com/o/r/issues/new?title=CI%20failure%20%28oom%29%3A%20Killed%20%26%20%3Cgone%3E%20%231&body="), "{gh}");
        assert!(gh.contains("https%3A%2F%2Fgithub.com%2Fo%2Fr%2Factions%2Fruns%2F7"));
        let gl = d
            .url("gitlab", "g/s/p", "https://gitlab.example.com")
            .unwrap();
        assert!(
            gl.starts_with(
                "https://gitlab.example.com/g/s/p/-/issues/new?issue%5Btitle%5D=CI%20failure"
            ),
            "{gl}"
        );
        assert!(gl.contains("&issue%5Bdescription%5D=CI%20failure%20class%20%60oom%60"));
        assert_eq!(d.url("generic", "j/n", ""), None);
        assert_eq!(
            gitlab_web_base("https://gitlab.com/api/v4/"),
            "https://gitlab.com"
        );
    }
}
