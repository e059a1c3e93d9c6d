//! A run's content hash: an identical replay has the same one. Every engine
//! stores it (the PostgreSQL store calls this one), so both recognise a
//! replay the same way.
//!
//! The hash is the SHA-256 of the run's `Debug` text (its first 16 bytes in
//! hex): a stable, complete rendering of the content (field order fixed by
//! the struct definitions). Stored hashes must never change, so the text
//! must stay byte for byte what `format!("{run:?}")` writes. [`debug_text`]
//! writes it without `fmt`'s machinery (a `Formatter` and a dynamic call per
//! field, an escape check per character of every text): texts that need no
//! escape are copied as they are, anything else (an escaped text, a float, a
//! time, an enum) goes through its own `Debug`. `import cockpit` hashes a
//! million runs on its reading thread, and `Debug` took a quarter of it.
//! The destructuring below names every field: a field added to a model type
//! does not compile until it is written here, and
//! `tests::the_text_is_what_debug_writes` compares the two.

use ci_slo_core::model::{
    ChangeRef, EvidenceCandidate, FailureEvidence, NewRun, RawReport, RepositoryRef, TestResult,
};
use std::fmt::{Debug, Write};

/// The run's content hash (see the module documentation).
pub fn content_hash(run: &NewRun) -> String {
    use sha2::{Digest, Sha256};
    thread_local! {
        /// The text of the run being hashed (kept: no allocation per run).
        static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let digest = TEXT.with(|text| {
        let mut text = text.borrow_mut();
        text.clear();
        debug_text(run, &mut text);
        let digest = Sha256::digest(text.as_bytes());
        // A rare huge run does not keep its buffer.
        if text.capacity() > 1 << 20 {
            *text = String::new();
        }
        digest
    });
    let mut hex = String::with_capacity(32);
    for b in digest.iter().take(16) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Append `format!("{run:?}")` to `out`.
pub(crate) fn debug_text(run: &NewRun, out: &mut String) {
    let NewRun {
        repository,
        context,
        commit,
        external_id,
        attempt_group,
        attempt,
        trigger,
        trigger_pending,
        state,
        queued_at,
        started_at,
        finished_at,
        url,
        log_url,
        change,
        tests,
        reports,
        failures,
        dependencies,
        source,
        completeness,
    } = run;
    let mut s = Struct::new(out, "NewRun");
    s.field("repository", |o| repository_text(repository, o));
    s.field("context", |o| text(context, o));
    s.field("commit", |o| text(commit, o));
    s.field("external_id", |o| option_text(external_id, o));
    s.field("attempt_group", |o| option_text(attempt_group, o));
    s.field("attempt", |o| debug(attempt, o));
    s.field("trigger", |o| debug(trigger, o));
    s.field("trigger_pending", |o| debug(trigger_pending, o));
    s.field("state", |o| debug(state, o));
    s.field("queued_at", |o| debug(queued_at, o));
    s.field("started_at", |o| debug(started_at, o));
    s.field("finished_at", |o| debug(finished_at, o));
    s.field("url", |o| option_text(url, o));
    s.field("log_url", |o| option_text(log_url, o));
    s.field("change", |o| option(change.as_ref(), o, change_text));
    s.field("tests", |o| list(tests, o, test_text));
    s.field("reports", |o| list(reports, o, report_text));
    s.field("failures", |o| list(failures, o, failure_text));
    s.field("dependencies", |o| {
        o.push('{');
        for (i, (k, v)) in dependencies.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            text(k, o);
            o.push_str(": ");
            text(v, o);
        }
        o.push('}');
    });
    s.field("source", |o| text(source, o));
    s.field("completeness", |o| debug(completeness, o));
    s.end();
}

fn repository_text(r: &RepositoryRef, out: &mut String) {
    let RepositoryRef { forge, path } = r;
    let mut s = Struct::new(out, "RepositoryRef");
    s.field("forge", |o| debug(forge, o));
    s.field("path", |o| text(path, o));
    s.end();
}

fn change_text(c: &ChangeRef, out: &mut String) {
    let ChangeRef { number, merged_at } = c;
    let mut s = Struct::new(out, "ChangeRef");
    s.field("number", |o| debug(number, o));
    s.field("merged_at", |o| debug(merged_at, o));
    s.end();
}

fn test_text(t: &TestResult, out: &mut String) {
    let TestResult {
        name,
        outcome,
        duration_seconds,
        retries,
        retry_reasons,
        message,
    } = t;
    let mut s = Struct::new(out, "TestResult");
    s.field("name", |o| text(name, o));
    s.field("outcome", |o| debug(outcome, o));
    s.field("duration_seconds", |o| debug(duration_seconds, o));
    s.field("retries", |o| debug(retries, o));
    s.field("retry_reasons", |o| {
        list(retry_reasons, o, |r, o| text(r, o))
    });
    s.field("message", |o| option_text(message, o));
    s.end();
}

fn report_text(r: &RawReport, out: &mut String) {
    let RawReport {
        format,
        name,
        content,
    } = r;
    let mut s = Struct::new(out, "RawReport");
    s.field("format", |o| text(format, o));
    s.field("name", |o| text(name, o));
    s.field("content", |o| text(content, o));
    s.end();
}

fn failure_text(f: &FailureEvidence, out: &mut String) {
    let FailureEvidence {
        class,
        category,
        line,
        evidence,
        context,
        context_before,
        fingerprint,
        test_name,
        candidates,
    } = f;
    let mut s = Struct::new(out, "FailureEvidence");
    s.field("class", |o| text(class, o));
    s.field("category", |o| text(category, o));
    s.field("line", |o| debug(line, o));
    s.field("evidence", |o| text(evidence, o));
    s.field("context", |o| list(context, o, |c, o| text(c, o)));
    s.field("context_before", |o| debug(context_before, o));
    s.field("fingerprint", |o| option_text(fingerprint, o));
    s.field("test_name", |o| option_text(test_name, o));
    s.field("candidates", |o| list(candidates, o, candidate_text));
    s.end();
}

fn candidate_text(c: &EvidenceCandidate, out: &mut String) {
    let EvidenceCandidate {
        line,
        text: t,
        class,
    } = c;
    let mut s = Struct::new(out, "EvidenceCandidate");
    s.field("line", |o| debug(line, o));
    s.field("text", |o| text(t, o));
    s.field("class", |o| text(class, o));
    s.end();
}

/// A struct as `#[derive(Debug)]` writes it: `Name { a: 1, b: 2 }`.
struct Struct<'a> {
    out: &'a mut String,
    fields: usize,
}

impl<'a> Struct<'a> {
    fn new(out: &'a mut String, name: &str) -> Struct<'a> {
        out.push_str(name);
        Struct { out, fields: 0 }
    }

    fn field(&mut self, name: &str, value: impl FnOnce(&mut String)) {
        self.out
            .push_str(if self.fields == 0 { " { " } else { ", " });
        self.out.push_str(name);
        self.out.push_str(": ");
        value(self.out);
        self.fields += 1;
    }

    fn end(self) {
        if self.fields > 0 {
            self.out.push_str(" }");
        }
    }
}

/// A text as `<str as Debug>` writes it: quoted, escaped. Printable ASCII
/// but `"` and `\` is written as it is; anything else by `Debug` itself.
fn text(s: &str, out: &mut String) {
    // Folded over every byte without stopping early, which the compiler
    // vectorizes (test messages run to kilobytes).
    let escaped = s.bytes().fold(false, |any, b| {
        any | !(0x20..0x7f).contains(&b) | (b == b'"') | (b == b'\\')
    });
    if !escaped {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        debug(s, out);
    }
}

fn option_text(o: &Option<String>, out: &mut String) {
    option(o.as_ref(), out, |s, out| text(s, out));
}

fn option<T>(o: Option<&T>, out: &mut String, some: impl FnOnce(&T, &mut String)) {
    match o {
        None => out.push_str("None"),
        Some(v) => {
            out.push_str("Some(");
            some(v, out);
            out.push(')');
        }
    }
}

fn list<T>(items: &[T], out: &mut String, item: impl Fn(&T, &mut String)) {
    out.push('[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(v, out);
    }
    out.push(']');
}

fn debug(v: &(impl Debug + ?Sized), out: &mut String) {
    let _ = write!(out, "{v:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ci_slo_core::model::{Completeness, Forge, RunState, TestOutcome, Trigger};

    fn text_of(run: &NewRun) -> String {
        let mut out = String::new();
        debug_text(run, &mut out);
        out
    }

    /// Runs with every field set, texts that need escapes (quotes,
    /// backslashes, control characters, non-ASCII, grapheme extenders,
    /// unprintable characters), floats Debug writes in other forms.
    fn runs() -> Vec<NewRun> {
        let at = chrono::Utc.timestamp_millis_opt(1_733_000_000_123).unwrap();
        let odd = [
            "",
            "plain text",
            "quote \" and \\ backslash",
            "tab\tnew\nline\r\u{1}\u{7f}",
            "ü € 日本",
            "\u{301}starts with a combining accent",
            "zero\u{200b}width and \u{feff} bom",
            "it's 'single'",
        ];
        let mut all = vec![NewRun::default()];
        for (i, s) in odd.iter().enumerate() {
            let s = s.to_string();
            all.push(NewRun {
                repository: RepositoryRef {
                    forge: [Forge::Github, Forge::Gitlab, Forge::Generic][i % 3],
                    path: format!("o/{s}"),
                },
                context: s.clone(),
                commit: "abc123".into(),
                external_id: Some(format!("id {s}")),
                attempt_group: (i % 2 == 0).then(|| s.clone()),
                attempt: i as u32,
                trigger: Trigger::ALL[i % Trigger::ALL.len()],
                trigger_pending: i % 2 == 1,
                state: RunState::ALL[i % RunState::ALL.len()],
                queued_at: Some(at),
                started_at: (i % 3 != 0).then_some(at + chrono::Duration::nanoseconds(1)),
                finished_at: (i % 2 == 0).then_some(at + chrono::Duration::seconds(61)),
                url: Some(format!("https://x/{s}")),
                log_url: None,
                change: Some(ChangeRef {
                    number: -(i as i64) * 1_000_000_007,
                    merged_at: (i % 2 == 0).then_some(at),
                }),
                tests: vec![
                    TestResult {
                        name: s.clone(),
                        outcome: TestOutcome::Failed,
                        duration_seconds: Some([0.1, 1.0, 1e21, 1e-7, f64::NAN, -0.0, 3.5][i % 7]),
                        retries: 2,
                        retry_reasons: vec![s.clone(), "again".into()],
                        message: Some(s.clone()),
                    },
                    TestResult {
                        name: "t".into(),
                        outcome: TestOutcome::Skipped,
                        duration_seconds: None,
                        retries: 0,
                        retry_reasons: Vec::new(),
                        message: None,
                    },
                ],
                reports: vec![RawReport {
                    format: "junit".into(),
                    name: s.clone(),
                    content: format!("<x>{s}</x>"),
                }],
                failures: vec![FailureEvidence {
                    class: "test-failure".into(),
                    category: "test".into(),
                    line: Some(i as u64),
                    evidence: s.clone(),
                    context: vec![s.clone(), String::new()],
                    context_before: Some(1),
                    fingerprint: Some("f".into()),
                    test_name: Some(s.clone()),
                    candidates: vec![EvidenceCandidate {
                        line: 3,
                        text: s.clone(),
                        class: "c".into(),
                    }],
                }],
                dependencies: [(s.clone(), "1.0".to_string()), ("a".into(), s.clone())]
                    .into_iter()
                    .collect(),
                source: s,
                completeness: if i % 2 == 0 {
                    Completeness::Whole
                } else {
                    Completeness::Partial
                },
            });
        }
        all
    }

    #[test]
    fn the_text_is_what_debug_writes() {
        for run in runs() {
            assert_eq!(text_of(&run), format!("{run:?}"));
        }
    }

    #[test]
    fn the_hash_is_the_debug_texts_and_tells_runs_apart() {
        use sha2::{Digest, Sha256};
        let runs = runs();
        for run in &runs {
            let digest = Sha256::digest(format!("{run:?}").as_bytes());
            let want: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            assert_eq!(content_hash(run), want);
        }
        let mut hashes: Vec<String> = runs.iter().map(content_hash).collect();
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), runs.len());
    }
}
