//! GitLab section bookkeeping: `section_start:TS:name` / `section_end:TS:name`
//! markers give each section's duration (`Classification::sections`). Bounded:
//! at most [`MAX_SECTIONS`] finished and [`MAX_OPEN_SECTIONS`] open sections.

use std::sync::LazyLock;

use crate::text::clip;

const MAX_SECTIONS: usize = 4096;
const MAX_OPEN_SECTIONS: usize = 64;
const MAX_SECTION_NAME_BYTES: usize = 128;

pub(crate) static SECTION_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"section_"));

#[derive(Default)]
pub(crate) struct Sections {
    open: Vec<(String, u64)>,
    pub(crate) done: Vec<(String, u64)>,
}

/// Whether the raw line may hold a marker (cheap test before [`Sections::observe`]).
pub(crate) fn may_have_section_marker(raw: &str) -> bool {
    (raw.starts_with("section_") || memchr::memchr2(b'\r', 0x1b, raw.as_bytes()).is_some())
        && SECTION_FINDER.find(raw.as_bytes()).is_some()
}

impl Sections {
    pub(crate) fn observe(&mut self, raw: &str) {
        let mut rest = raw;
        while let Some(pos) = SECTION_FINDER.find(rest.as_bytes()) {
            let after = &rest[pos + "section_".len()..];
            let (is_start, tail) = if let Some(t) = after.strip_prefix("start:") {
                (true, t)
            } else if let Some(t) = after.strip_prefix("end:") {
                (false, t)
            } else {
                rest = after;
                continue;
            };
            rest = tail;
            let Some((ts, name)) = parse_marker(tail) else {
                continue;
            };
            if is_start {
                if self.open.len() == MAX_OPEN_SECTIONS {
                    self.open.remove(0);
                }
                self.open.push((name.to_string(), ts));
            } else if let Some(k) = self.open.iter().rposition(|(n, _)| n == name) {
                let (n, start) = self.open.remove(k);
                if self.done.len() < MAX_SECTIONS {
                    self.done.push((n, ts.saturating_sub(start)));
                }
            }
        }
    }
}

/// Parses `TS:name` at the start of `s` (after `section_start:`).
fn parse_marker(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let ts: u64 = s[..digits].parse().ok()?;
    let rest = s[digits..].strip_prefix(':')?;
    let len = rest
        .bytes()
        .take_while(|&b| !matches!(b, b'\r' | b'\n' | b'\x1b' | b'[' | b' ' | b'\t'))
        .count()
        .min(MAX_SECTION_NAME_BYTES);
    let name = clip(&rest[..len], MAX_SECTION_NAME_BYTES);
    if name.is_empty() {
        None
    } else {
        Some((ts, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_pair_starts_with_ends_and_stay_bounded() {
        let mut s = Sections::default();
        s.observe("\x1b[0Ksection_start:100:outer[collapsed=true]\r\x1b[0Kx");
        s.observe("\x1b[0Ksection_start:105:inner\r\x1b[0K");
        s.observe("\x1b[0Ksection_end:107:inner\r\x1b[0K\x1b[0Ksection_end:130:outer\r\x1b[0K");
        s.observe("section_end:1:never_started\r");
        s.observe("section_start:bad:x\r");
        assert_eq!(
            s.done,
            vec![("inner".to_string(), 2), ("outer".to_string(), 30)]
        );
        for i in 0..(MAX_OPEN_SECTIONS as u64 + 10) {
            s.observe(&format!("section_start:{i}:s{i}\r"));
        }
        assert_eq!(s.open.len(), MAX_OPEN_SECTIONS);
    }
}
