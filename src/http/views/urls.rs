//! URLs of the drill-down pages and of the forges: percent-encoding of path
//! segments, the links a page may show (only http(s)), and the commit, change
//! and GitLab web addresses of a run.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is percent-encoded: safe in a
/// path segment (a `/` in a repository becomes `%2F`) and in a query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub(crate) fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// The page of a test: each of the three parts is one percent-encoded segment.
pub(crate) fn test_path(repository: &str, context: &str, test: &str) -> String {
    format!("/tests/{}/{}/{}", enc(repository), enc(context), enc(test))
}

/// A URL from the data, only when it is http(s) and has nothing that could
/// break out of an attribute or smuggle a scheme: else `None` (no link).
pub(crate) fn safe_url(url: &str) -> Option<&str> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
        && url.len() > 8
        && !url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '<' | '>' | '`'));
    ok.then_some(url)
}

/// A commit's page on its forge; none for generic repositories.
pub(super) fn commit_url(
    forge: &str,
    repository: &str,
    sha: &str,
    gitlab_web: &str,
) -> Option<String> {
    if !crate::http::text::safe_repository_path(repository)
        || !sha.chars().all(|c| c.is_ascii_hexdigit())
        || sha.is_empty()
    {
        return None;
    }
    let path: String = repository.split('/').map(enc).collect::<Vec<_>>().join("/");
    match forge {
        "github" => Some(format!("https://github.com/{path}/commit/{sha}")),
        "gitlab" => Some(format!("{gitlab_web}/{path}/-/commit/{sha}")),
        _ => None,
    }
}

/// A change's page on its forge; none for generic repositories.
pub(super) fn change_url(
    forge: &str,
    repository: &str,
    number: i64,
    gitlab_web: &str,
) -> Option<String> {
    if !crate::http::text::safe_repository_path(repository) {
        return None;
    }
    let path: String = repository.split('/').map(enc).collect::<Vec<_>>().join("/");
    match forge {
        "github" => Some(format!("https://github.com/{path}/pull/{number}")),
        "gitlab" => Some(format!("{gitlab_web}/{path}/-/merge_requests/{number}")),
        _ => None,
    }
}

/// The web base of GitLab from its API URL (`https://host/api/v4` → `https://host`).
pub(super) fn gitlab_web_base(api_url: &str) -> String {
    let base = api_url.trim_end_matches('/');
    base.strip_suffix("/api/v4").unwrap_or(base).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_become_links() {
        assert_eq!(
            safe_url("https://x.test/a?b=1"),
            Some("https://x.test/a?b=1")
        );
        assert_eq!(safe_url("HTTP://x.test"), Some("HTTP://x.test"));
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            " https://x.test",
            "data:text/html,<script>",
            "https://",
            "https://x.test/\"onmouseover=\"x",
            "//x.test",
            "https://x.test/a\nb",
        ] {
            assert_eq!(safe_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_paths_round_trip_slashes_spaces_and_markup() {
        let p = test_path("group/sub/repo", "ci / test", "<T> a&b \"q\"");
        assert_eq!(
            p,
            "/tests/group%2Fsub%2Frepo/ci%20%2F%20test/%3CT%3E%20a%26b%20%22q%22"
        );
        let segments: Vec<String> = p
            .trim_start_matches("/tests/")
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            })
            .collect();
        assert_eq!(segments, ["group/sub/repo", "ci / test", "<T> a&b \"q\""]);
    }
}
