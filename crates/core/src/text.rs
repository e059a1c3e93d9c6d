//! Byte caps on text that never split a character, shared by the report
//! parsers and the failure classifier.

/// The largest char boundary of `s` at or below `index` (`s.len()` past the end).
pub(crate) fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    if index >= s.len() {
        return s.len();
    }
    while index > 0 && !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// `s` cut to at most `max` bytes on a char boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    &s[..floor_char_boundary(s, max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_never_splits_a_character() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abc", 0), "");
        // "é" is two bytes: a cut inside it drops it
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("aé", 3), "aé");
        assert_eq!(clip("€x", 2), "");
        assert_eq!(floor_char_boundary("€x", 2), 0);
        assert_eq!(floor_char_boundary("€x", 9), 4);
    }
}
