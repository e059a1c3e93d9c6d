//! cargo-fuzz target for the classifier: `cargo fuzz run classify` (docs/fuzzing.md).
#![no_main]

use std::sync::LazyLock;

use ci_slo_core::classify::{
    Classifier, EVIDENCE_CAP_BYTES, fingerprint, normalize_fingerprint, strip_ansi_and_sections,
};
use libfuzzer_sys::fuzz_target;

static CLASSIFIER: LazyLock<Classifier> = LazyLock::new(Classifier::with_defaults);

fuzz_target!(|data: &[u8]| {
    let c = CLASSIFIER
        .classify_log(data)
        .expect("reading from a byte slice cannot fail");

    // accounting
    assert_eq!(c.bytes_scanned, data.len() as u64);
    let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
    let unterminated = u64::from(!data.is_empty() && !data.ends_with(b"\n"));
    assert_eq!(c.lines_scanned, newlines + unterminated);
    assert!(c.sections.len() <= 4096);

    // the decisive match is well-formed and clean
    if let Some(m) = &c.primary {
        assert!(m.line >= 1 && m.line <= c.lines_scanned);
        assert!(m.evidence.len() <= EVIDENCE_CAP_BYTES);
        assert!(!m.evidence.contains('\x1b') && !m.evidence.contains('\r'));
        assert!(m.context.len() <= 6);
        for l in &m.context {
            assert!(l.len() <= EVIDENCE_CAP_BYTES);
            assert!(!l.contains('\x1b') && !l.contains('\r') && !l.contains('\n'));
        }
        assert_eq!(m.fingerprint, fingerprint(&m.evidence));
        assert_eq!(m.fingerprint.len(), 16);
    }

    // chunking must not matter: feed the same bytes through a 1-byte reader
    if data.len() <= 4096 {
        struct OneByte<'a>(&'a [u8]);
        impl std::io::Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let slow = CLASSIFIER.classify_log(OneByte(data)).expect("infallible reader");
        assert_eq!(slow, c);
    }

    // string helpers never panic and strip all escapes
    let text = String::from_utf8_lossy(data);
    let _ = CLASSIFIER.classify_message(&text);
    for line in text.lines().take(64) {
        let clean = strip_ansi_and_sections(line);
        assert!(!clean.contains('\x1b'));
        let norm = normalize_fingerprint(line);
        assert!(!norm.contains("  "));
    }
});
