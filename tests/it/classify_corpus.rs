//! Recall of the evidence line on the development corpus of real failed CI
//! logs (`../shared/corpora/logchunks-dev`, see its NOTICE.md): the evidence
//! line must lie inside the hand-labelled chunk for at least 80% of the logs,
//! and for at least one log of every language. The chunk is located in the log
//! as `../shared/tools/evidence-score` does it. The corpus is never copied into
//! the project; without it this test fails and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use ci_slo_exporter::classify::Classifier;
use regex::Regex;

const TARGET_RECALL: f64 = 0.80;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora/logchunks-dev")
}

static ANSI: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07").unwrap());
static SPACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").unwrap());

fn norm(s: &str) -> String {
    SPACE
        .replace_all(&ANSI.replace_all(s, ""), " ")
        .trim()
        .to_string()
}

/// 1-based lines of `text` covered by the labelled `chunk` (empty when it
/// cannot be located), as evidence-score computes them.
fn chunk_lines(text: &str, chunk: &str) -> BTreeSet<u64> {
    let cl: Vec<String> = chunk
        .split('\n')
        .map(norm)
        .filter(|l| !l.is_empty())
        .collect();
    if cl.is_empty() {
        return BTreeSet::new();
    }
    let nl: Vec<String> = text.split('\n').map(norm).collect();
    for i in 0..nl.len() {
        if !nl[i].is_empty() && (nl[i] == cl[0] || nl[i].contains(&cl[0])) {
            let mut span = BTreeSet::from([i as u64 + 1]);
            let (mut j, mut k) = (i + 1, 1);
            while k < cl.len() && j < nl.len() {
                if nl[j].is_empty() {
                    span.insert(j as u64 + 1);
                    j += 1;
                    continue;
                }
                if nl[j].contains(&cl[k]) || cl[k].contains(&nl[j]) {
                    span.insert(j as u64 + 1);
                    j += 1;
                    k += 1;
                } else {
                    break;
                }
            }
            if k == cl.len() {
                return span;
            }
        }
    }
    BTreeSet::new()
}

#[derive(serde::Deserialize)]
struct Label {
    log: String,
    language: String,
    chunk: String,
}

#[test]
fn the_evidence_line_is_inside_the_labelled_chunk_for_80_percent_of_the_dev_corpus() {
    let dir = corpus();
    let labels = dir.join("labels.jsonl");
    let text = std::fs::read_to_string(&labels).unwrap_or_else(|e| {
        panic!(
            "the development corpus is missing: cannot read {} ({e}). It is expected at \
             ../shared/corpora/logchunks-dev relative to the repository root.",
            labels.display()
        )
    });
    let c = Classifier::with_defaults();
    let mut per_language: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let label: Label = serde_json::from_str(line).unwrap();
        let bytes = std::fs::read(dir.join(&label.log)).unwrap();
        let span = chunk_lines(&String::from_utf8_lossy(&bytes), &label.chunk);
        if span.is_empty() {
            continue;
        }
        let got = c.classify_log(&bytes[..]).unwrap().primary;
        let hit = got.as_ref().is_some_and(|m| span.contains(&m.line));
        let entry = per_language.entry(label.language.clone()).or_default();
        entry.1 += 1;
        if hit {
            entry.0 += 1;
        } else {
            misses.push(format!(
                "{}: chunk at {:?}, picked {:?}",
                label.log,
                span.first(),
                got.map(|m| (m.line, m.class))
            ));
        }
    }
    let logs: usize = per_language.values().map(|v| v.1).sum();
    let hits: usize = per_language.values().map(|v| v.0).sum();
    assert!(logs >= 250, "only {logs} logs with a locatable chunk");
    let recall = hits as f64 / logs as f64;
    let languages: Vec<String> = per_language
        .iter()
        .map(|(l, (h, n))| format!("{l} {h}/{n}"))
        .collect();
    println!(
        "evidence inside the labelled chunk: {hits}/{logs} = {:.1}%",
        recall * 100.0
    );
    println!("per language: {}", languages.join(", "));
    let zero: Vec<&String> = per_language
        .iter()
        .filter(|(_, (h, _))| *h == 0)
        .map(|(l, _)| l)
        .collect();
    assert!(
        recall >= TARGET_RECALL,
        "recall {:.1}% is below {:.0}%; misses:\n{}",
        recall * 100.0,
        TARGET_RECALL * 100.0,
        misses.join("\n")
    );
    assert!(zero.is_empty(), "languages at 0: {zero:?}");
}

#[test]
fn chunks_are_located_like_evidence_score_does() {
    let text = "a\n\x1b[31mError:   boom\x1b[0m\n\n  at x\nz\n";
    assert_eq!(
        chunk_lines(text, "Error: boom\nat x"),
        BTreeSet::from([2, 3, 4])
    );
    assert!(chunk_lines(text, "not there").is_empty());
}
