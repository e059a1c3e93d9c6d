//! The one rule for names that arrive from outside: repository paths,
//! contexts, commits, external ids, dependency names and test names, whatever
//! path brought them (ingest API, CLI, GitHub and GitLab webhooks and polls,
//! the Cockpit importer).
//!
//! Names become label values, page titles and database keys, so every source
//! refuses the same things: an empty (or all-blank) name, one longer than
//! [`MAX_NAME_LEN`] bytes, and control characters (a newline in a context
//! would split a log line or a create-issue title). Test names are the one
//! exception: real reports put newlines, tabs and any Unicode in them (the
//! exposition formats escape them), so only NUL is refused there.

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Why a name was refused; its text completes "`field` …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("must not contain control characters")]
    Control,
    #[error("must not contain NUL")]
    Nul,
}

impl NameError {
    /// A bounded label value for data-quality counters.
    pub fn reason(&self) -> &'static str {
        match self {
            NameError::Empty => "empty_name",
            NameError::TooLong => "name_too_long",
            NameError::Control | NameError::Nul => "name_control_character",
        }
    }
}

/// A repository path, context, commit, external id or dependency name.
pub fn check(name: &str) -> Result<(), NameError> {
    check_common(name)?;
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(())
}

/// A test name: anything but empty, too long or NUL.
pub fn check_test(name: &str) -> Result<(), NameError> {
    check_common(name)?;
    if name.contains('\0') {
        return Err(NameError::Nul);
    }
    Ok(())
}

fn check_common(name: &str) -> Result<(), NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_refused_for_the_same_reasons_everywhere() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let longest = "é".repeat(MAX_NAME_LEN / 2);
        type Want = Result<(), NameError>;
        let cases: &[(&str, Want, Want)] = &[
            // name, check, check_test
            ("acme/shop", Ok(()), Ok(())),
            ("ci / build (ubuntu, 3.12)", Ok(()), Ok(())),
            ("", Err(NameError::Empty), Err(NameError::Empty)),
            ("  \t", Err(NameError::Empty), Err(NameError::Empty)),
            (&long, Err(NameError::TooLong), Err(NameError::TooLong)),
            (&longest, Ok(()), Ok(())),
            ("build\nfake line", Err(NameError::Control), Ok(())),
            ("tab\there", Err(NameError::Control), Ok(())),
            ("nul\0byte", Err(NameError::Control), Err(NameError::Nul)),
            ("test_ünïcode[π]", Ok(()), Ok(())),
        ];
        for (name, want, want_test) in cases {
            assert_eq!(&check(name), want, "check({name:?})");
            assert_eq!(&check_test(name), want_test, "check_test({name:?})");
        }
    }
}
