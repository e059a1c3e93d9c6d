//! End-to-end classification of generated CI logs (GitHub Actions, GitLab, Jenkins).
//!
//! Logs are generated here; no fixture files are needed. Each generated line records
//! its expected cleaned text, so evidence, line numbers and context are checked
//! against what a reader of the log would see, not against the implementation.

use std::io::{self, Read};

use ci_slo_exporter::classify::{
    AppliesTo, Category, Classification, Classifier, Evidence, RuleConfig, fingerprint,
};

/// A log under construction: raw bytes plus the expected clean text of every line
/// (`None` = blank after cleaning, e.g. a group end or a section end marker).
#[derive(Default)]
struct Log {
    raw: Vec<u8>,
    clean: Vec<Option<String>>,
    clock: u64,
}

impl Log {
    fn push(&mut self, raw: &str, clean: &str) {
        self.raw.extend_from_slice(raw.as_bytes());
        self.raw.push(b'\n');
        let c = clean.trim_end();
        self.clean.push((!c.is_empty()).then(|| c.to_string()));
        self.clock += 1;
    }

    /// The 1-based number the next line will get.
    fn next_line(&self) -> u64 {
        self.clean.len() as u64 + 1
    }

    fn expected_context(&self, line: u64) -> Vec<String> {
        let i = (line - 1) as usize;
        let mut before: Vec<String> = self.clean[..i]
            .iter()
            .rev()
            .flatten()
            .take(3)
            .cloned()
            .collect();
        before.reverse();
        let after = self.clean[i + 1..].iter().flatten().take(3).cloned();
        before.into_iter().chain(after).collect()
    }

    fn classify(&self) -> Classification {
        Classifier::with_defaults()
            .classify_log(&self.raw[..])
            .unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
enum Flavor {
    GitHub,
    GitLab,
    Jenkins,
}

impl Flavor {
    fn line(self, log: &mut Log, text: &str) {
        match self {
            Flavor::GitHub => {
                let ts = format!(
                    "2024-03-01T12:{:02}:{:02}.{:07}Z ",
                    log.clock / 60 % 60,
                    log.clock % 60,
                    log.clock * 7919 % 10_000_000
                );
                log.push(&format!("{ts}{text}"), text);
            }
            Flavor::GitLab => {
                // GitLab colours most interesting lines and ends them with a reset
                if log.clock.is_multiple_of(2) {
                    log.push(&format!("\x1b[0;33m{text}\x1b[0;m"), text);
                } else {
                    log.push(text, text);
                }
            }
            Flavor::Jenkins => log.push(text, text),
        }
    }

    /// A failure line, coloured red on GitLab (as `echo -e "\e[31m..."` would).
    fn failure(self, log: &mut Log, text: &str) {
        match self {
            Flavor::GitLab => log.push(&format!("\x1b[31;1m{text}\x1b[0m"), text),
            _ => self.line(log, text),
        }
    }

    fn open(self, log: &mut Log, name: &str, title: &str) {
        match self {
            Flavor::GitHub => {
                let ts = "2024-03-01T12:00:00.0000000Z ";
                log.push(&format!("{ts}##[group]{title}"), title);
            }
            Flavor::GitLab => {
                let ts = 1_709_294_400 + log.clock * 3;
                log.push(
                    &format!("\x1b[0Ksection_start:{ts}:{name}[collapsed=true]\r\x1b[0K\x1b[0;36m{title}\x1b[0;m"),
                    title,
                );
            }
            Flavor::Jenkins => log.push(
                &format!("[Pipeline] {{ ({title})"),
                &format!("[Pipeline] {{ ({title})"),
            ),
        }
    }

    fn close(self, log: &mut Log, name: &str) {
        match self {
            Flavor::GitHub => log.push("2024-03-01T12:00:00.0000000Z ##[endgroup]", ""),
            Flavor::GitLab => {
                let ts = 1_709_294_400 + log.clock * 3;
                log.push(&format!("\x1b[0Ksection_end:{ts}:{name}\r\x1b[0K"), "");
            }
            Flavor::Jenkins => log.push("[Pipeline] }", "[Pipeline] }"),
        }
    }

    fn preamble(self, log: &mut Log) {
        match self {
            Flavor::GitHub => {
                self.line(log, "Current runner version: '2.316.1'");
                self.open(log, "setup", "Operating System");
                self.line(log, "Ubuntu 22.04.4 LTS");
                self.close(log, "setup");
                self.open(log, "checkout", "Run actions/checkout@v4");
                self.line(log, "Syncing repository: org/app");
                self.line(log, "[command]/usr/bin/git version");
                self.close(log, "checkout");
            }
            Flavor::GitLab => {
                log.push(
                    "\x1b[0KRunning with gitlab-runner 16.11.0 (91a27b2a)\x1b[0;m",
                    "Running with gitlab-runner 16.11.0 (91a27b2a)",
                );
                self.open(log, "prepare_executor", "Preparing the \"docker\" executor");
                self.line(log, "Using docker image sha256:4f1c9e for rust:1.80 ...");
                self.close(log, "prepare_executor");
                self.open(log, "get_sources", "Getting source from Git repository");
                self.line(log, "Fetching changes with git depth set to 20...");
                self.line(
                    log,
                    "Checking out 3f9a2b7c as detached HEAD (ref is main)...",
                );
                self.close(log, "get_sources");
            }
            Flavor::Jenkins => {
                self.line(log, "Started by an SCM change");
                self.line(log, "[Pipeline] Start of Pipeline");
                self.line(log, "[Pipeline] node");
                self.line(log, "Running on agent-7 in /var/lib/jenkins/workspace/app");
                self.open(log, "build", "Build");
                self.line(log, "[Pipeline] sh");
                self.line(log, "+ make test");
            }
        }
        // a little build noise, including non-ASCII and progress redraws
        self.line(log, "   Compiling serde v1.0.200");
        self.line(log, "  ✓ parses config (3 ms)");
        log.push(
            "Downloading 12%\rDownloading 64%\rDownloading 100%",
            "Downloading 100%",
        );
        self.line(log, "test tests::roundtrip ... ok");
    }

    fn epilogue(self, log: &mut Log) {
        match self {
            Flavor::GitHub => {
                log.push(
                    "2024-03-01T12:59:59.9999999Z ##[error]Process completed with exit code 1.",
                    "Process completed with exit code 1.",
                );
                self.line(log, "Post job cleanup.");
            }
            Flavor::GitLab => {
                self.close(log, "step_script");
                self.line(
                    log,
                    "Cleaning up project directory and file based variables",
                );
                log.push(
                    "\x1b[31;1mERROR: Job failed: exit code 1\x1b[0;m",
                    "ERROR: Job failed: exit code 1",
                );
            }
            Flavor::Jenkins => {
                self.close(log, "build");
                self.line(log, "[Pipeline] End of Pipeline");
                self.line(log, "Finished: FAILURE");
            }
        }
    }
}

const FLAVORS: [Flavor; 3] = [Flavor::GitHub, Flavor::GitLab, Flavor::Jenkins];

/// (expected class, lines of the failure; the evidence line is marked with `>>`)
const FAILURES: &[(&str, &[&str])] = &[
    (
        "oom",
        &[
            "Running 48 tests",
            ">>java.lang.OutOfMemoryError: Java heap space",
            "\tat java.util.Arrays.copyOf(Arrays.java:3236)",
        ],
    ),
    (
        "oom",
        &[">>Warning: OOMKilled: container app exceeded its memory limit"],
    ),
    (
        "killed",
        &[
            "running 120 tests",
            ">>/bin/bash: line 142:  8123 Killed                  cargo test --workspace",
        ],
    ),
    (
        "job-timeout",
        &[
            "test slow::case ... has been running for over 60 seconds",
            ">>ERROR: Job failed: execution took longer than 1h0m0s seconds",
        ],
    ),
    (
        "timed-out",
        &[">>Connection to 10.0.0.3:5432 timed out after 30s"],
    ),
    (
        "deadline-exceeded",
        &[">>Error: rpc error: code = DeadlineExceeded desc = context deadline exceeded"],
    ),
    (
        "dns-resolution",
        &[
            "Cloning into 'vendor/lib'...",
            ">>fatal: unable to access 'https://github.com/org/lib.git/': Could not resolve host: github.com",
        ],
    ),
    (
        "connection-refused",
        &[
            ">>redis.exceptions.ConnectionError: Error 111 connecting to localhost:6379. Connection refused.",
        ],
    ),
    (
        "connection-reset",
        &[">>error: RPC failed; curl 56 Recv failure: Connection reset by peer"],
    ),
    (
        "tls-handshake-timeout",
        &[">>go: downloading golang.org/x/net v0.24.0: net/http: TLS handshake timeout"],
    ),
    (
        "disk-full",
        &[">>OSError: [Errno 28] No space left on device: '/tmp/pip-build-x'"],
    ),
    (
        "dependency-pip",
        &[
            "Collecting torch==9.9.9",
            ">>ERROR: Could not find a version that satisfies the requirement torch==9.9.9 (from versions: 2.2.0, 2.3.0)",
            "ERROR: No matching distribution found for torch==9.9.9",
        ],
    ),
    (
        "dependency-npm",
        &[
            ">>npm ERR! code ERESOLVE",
            "npm ERR! ERESOLVE unable to resolve dependency tree",
        ],
    ),
    (
        "dependency-cargo",
        &[
            "    Updating crates.io index",
            ">>error: failed to select a version for `tokio`.",
        ],
    ),
    (
        "dependency-jvm",
        &[
            ">>[ERROR] Failed to execute goal on project app: Could not resolve dependencies for project com.example:app:jar:1.0",
        ],
    ),
    (
        "dependency-julia",
        &[">>ERROR: Unsatisfiable requirements detected for package CSV [336ed68f]:"],
    ),
    (
        "rust-compile-error",
        &[
            ">>error[E0425]: cannot find value `cfg` in this scope",
            "  --> src/main.rs:12:5",
            "error: could not compile `app` (bin \"app\") due to 1 previous error",
        ],
    ),
    (
        "c-compile-error",
        &[
            ">>src/parser.c:88:13: error: use of undeclared identifier 'tok'",
            "1 error generated.",
        ],
    ),
    (
        "javac-error",
        &[">>src/main/java/com/example/App.java:17: error: cannot find symbol"],
    ),
    (
        "syntax-error",
        &[
            "  File \"app/main.py\", line 3",
            ">>SyntaxError: invalid syntax",
        ],
    ),
    (
        "assertion-failed",
        &[
            "Traceback (most recent call last):",
            "  File \"tests/test_math.py\", line 9, in test_add",
            ">>AssertionError: 3 != 4",
        ],
    ),
    (
        "assertion-failed",
        &[
            "thread 'tests::adds' panicked at src/lib.rs:42:9:",
            ">>assertion `left == right` failed",
            "  left: 3",
            " right: 4",
        ],
    ),
    ("segfault", &[">>Segmentation fault (core dumped)"]),
    (
        "panic",
        &[
            ">>panic: runtime error: index out of range [3] with length 3",
            "goroutine 1 [running]:",
        ],
    ),
    (
        "python-traceback",
        &[
            ">>Traceback (most recent call last):",
            "  File \"app.py\", line 1, in <module>",
            "ValueError: bad",
        ],
    ),
    (
        "rate-limited",
        &[">>Error response from daemon: toomanyrequests: You have reached your pull rate limit."],
    ),
    (
        "docker-pull-failed",
        &[
            ">>ERROR: Job failed: failed to pull image \"registry.example.com/ci/builder:42\": manifest unknown",
        ],
    ),
    (
        "runner-lost",
        &[
            "running 12 tests",
            ">>##[error]The runner has received a shutdown signal. This can happen when the runner service is stopped.",
            "##[error]The operation was canceled.",
        ],
    ),
    (
        "cancelled",
        &[
            "test it ... FAILED",
            ">>##[error]The operation was canceled.",
        ],
    ),
    (
        "tests-failed",
        &[">>test result: FAILED. 41 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"],
    ),
];

fn build(flavor: Flavor, failure: &[&str]) -> (Log, u64, String) {
    let mut log = Log::default();
    flavor.preamble(&mut log);
    flavor.open(
        &mut log,
        "step_script",
        "Executing \"step_script\" stage of the job script",
    );
    flavor.line(&mut log, "$ cargo test --workspace");
    let mut evidence = None;
    for l in failure {
        let (is_evidence, text) = match l.strip_prefix(">>") {
            Some(t) => (true, t),
            None => (false, *l),
        };
        // `##[error]` only exists on GitHub (and is cleaned away); other CIs print
        // the bare message
        let shown = text.strip_prefix("##[error]").unwrap_or(text);
        let raw = if matches!(flavor, Flavor::GitHub) {
            text
        } else {
            shown
        };
        if is_evidence {
            evidence = Some((log.next_line(), shown.to_string()));
            flavor.failure(&mut log, raw);
        } else {
            flavor.line(&mut log, raw);
        }
        let last = log.clean.len() - 1;
        log.clean[last] = Some(shown.to_string());
    }
    flavor.epilogue(&mut log);
    let (line, text) = evidence.expect("failure has an evidence line");
    (log, line, text)
}

#[test]
fn every_failure_kind_is_classified_in_every_ci_flavor() {
    let mut seen_classes = std::collections::BTreeSet::new();
    for (class, failure) in FAILURES {
        for flavor in FLAVORS {
            let (log, line, evidence) = build(flavor, failure);
            let c = log.classify();
            let m = c
                .primary
                .unwrap_or_else(|| panic!("{flavor:?}/{class}: nothing classified"));
            let ctx = format!("{flavor:?}/{class}");
            assert_eq!(&m.class, class, "{ctx}: evidence {:?}", m.evidence);
            assert_eq!(m.line, line, "{ctx}");
            assert_eq!(m.evidence, evidence, "{ctx}");
            assert!(
                !m.evidence.contains('\x1b') && !m.evidence.contains('\r'),
                "{ctx}"
            );
            assert_eq!(m.context, log.expected_context(line), "{ctx}");
            assert!(m.context.iter().all(|l| !l.contains('\x1b')), "{ctx}");
            assert_eq!(m.fingerprint, fingerprint(&evidence), "{ctx}");
            assert!(!m.description.is_empty(), "{ctx}");
            assert_eq!(c.lines_scanned, log.clean.len() as u64, "{ctx}");
            assert_eq!(c.bytes_scanned, log.raw.len() as u64, "{ctx}");
            seen_classes.insert(*class);
        }
    }
    assert!(seen_classes.len() >= 25, "{seen_classes:?}");
}

#[test]
fn a_gitlab_trace_yields_section_durations() {
    let mut log = Log::default();
    let marker =
        |kind: &str, ts: u64, name: &str| format!("\x1b[0Ksection_{kind}:{ts}:{name}\r\x1b[0K");
    log.push(
        &format!(
            "{}\x1b[36;1mPreparing executor\x1b[0;m",
            marker("start", 1_700_000_000, "prepare_executor")
        ),
        "Preparing executor",
    );
    log.push(&marker("end", 1_700_000_012, "prepare_executor"), "");
    log.push(
        &format!(
            "{}\x1b[36;1mGetting source\x1b[0;m",
            marker("start", 1_700_000_012, "get_sources")
        ),
        "Getting source",
    );
    // an end and the next start on the same physical line, as the runner writes them
    log.push(
        &format!(
            "{}{}\x1b[36;1mExecuting step_script\x1b[0;m",
            marker("end", 1_700_000_015, "get_sources"),
            marker("start", 1_700_000_015, "step_script")
        ),
        "Executing step_script",
    );
    log.push("$ make", "$ make");
    log.push(
        &format!(
            "{}cc: fatal error: no input files",
            marker("start", 1_700_000_020, "nested_custom[collapsed=true]")
        ),
        "cc: fatal error: no input files",
    );
    log.push(&marker("end", 1_700_000_080, "nested_custom"), "");
    log.push(
        "\x1b[31;1mmake: *** [all] Error 2\x1b[0m",
        "make: *** [all] Error 2",
    );
    log.push(&marker("end", 1_700_000_095, "step_script"), "");
    log.push(
        "\x1b[31;1mERROR: Job failed: exit code 2\x1b[0;m",
        "ERROR: Job failed: exit code 2",
    );
    let c = log.classify();
    assert_eq!(
        c.sections,
        vec![
            ("prepare_executor".to_string(), 12),
            ("get_sources".to_string(), 3),
            ("nested_custom".to_string(), 60),
            ("step_script".to_string(), 80),
        ]
    );
    // make's "Error 2" points at the line above it: the compiler's error
    let m = c.primary.unwrap();
    assert_eq!(
        (m.class.as_str(), m.category, m.line),
        ("make-failed", Category::Build, 6)
    );
    assert_eq!(m.evidence, "cc: fatal error: no input files");
    assert_eq!(m.context, log.expected_context(6));
}

#[test]
fn a_megabyte_long_line_with_invalid_utf8_survives() {
    let mut raw = Vec::new();
    raw.extend_from_slice(b"2024-03-01T12:00:00.0000000Z start\n");
    // 1 MiB line of junk with invalid UTF-8 and an error phrase far past the cap
    for i in 0..(1 << 20) / 16 {
        raw.extend_from_slice(if i % 3 == 0 {
            b"\xff\xfe garbage \xc3(xx"
        } else {
            b"0123456789abcde "
        });
    }
    raw.extend_from_slice(b" Segmentation fault\n");
    raw.extend_from_slice(
        b"2024-03-01T12:00:01.0000000Z \xe2\x9c\x97 write failed: No space left on device \xff\n",
    );
    raw.extend_from_slice(b"tail line\n");
    let c = Classifier::with_defaults().classify_log(&raw[..]).unwrap();
    assert_eq!(c.lines_scanned, 4);
    assert_eq!(c.bytes_scanned, raw.len() as u64);
    let m = c.primary.unwrap();
    assert_eq!((m.class.as_str(), m.line), ("disk-full", 3));
    assert_eq!(
        m.evidence,
        "✗ write failed: No space left on device \u{fffd}"
    );
    assert_eq!(m.context.len(), 3);
    assert_eq!(m.context[0], "start");
    assert!(m.context[1].len() <= 1024);
    assert_eq!(m.context[2], "tail line");
}

#[test]
fn a_log_without_failures_has_no_primary() {
    let mut log = Log::default();
    for flavor in FLAVORS {
        flavor.preamble(&mut log);
        flavor.line(&mut log, "test result: ok. 42 passed; 0 failed; 0 ignored");
        flavor.line(
            &mut log,
            "Build finished with 0 errors and 2 warnings (-Werror disabled)",
        );
    }
    let c = log.classify();
    assert_eq!(c.primary, None);
    assert_eq!(c.lines_scanned, log.clean.len() as u64);
}

#[test]
fn an_empty_log_is_fine() {
    let c = Classifier::with_defaults()
        .classify_log(io::empty())
        .unwrap();
    assert_eq!(c, Classification::default());
}

#[test]
fn read_errors_are_reported() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let err = Classifier::with_defaults()
        .classify_log(Broken)
        .unwrap_err();
    assert_eq!(err.to_string(), "disk on fire");
}

#[test]
fn rules_load_from_the_documented_toml_format() {
    #[derive(serde::Deserialize)]
    struct Config {
        classify: ClassifyConfig,
    }
    #[derive(serde::Deserialize)]
    struct ClassifyConfig {
        rules: Vec<RuleConfig>,
    }
    let text = r#"
[[classify.rules]]
name = "flaky-postgres"
pattern = '(?i)could not connect to server: .*port 5432'
category = "infra"
description = "Postgres service container not ready"
known_issue_url = "https://issues.example.com/CI-123"
priority = 60

[[classify.rules]]
name = "snapshot-mismatch"
pattern = 'Snapshot .* mismatched'
category = "test"
applies_to = ["test_message"]
"#;
    let cfg: Config = toml::from_str(text).unwrap();
    let rules = cfg.classify.rules;
    assert_eq!(
        rules[0].applies_to,
        vec![AppliesTo::Log, AppliesTo::TestMessage]
    );
    assert_eq!(rules[1].priority, 0);
    assert_eq!(rules[1].description, "");
    let mut all = Classifier::default_rules();
    all.extend(rules);
    let c = Classifier::new(&all).unwrap();
    let log = "psql: error: could not connect to server: Connection refused on port 5432\n";
    let m = c.classify_log(log.as_bytes()).unwrap().primary.unwrap();
    // priority 60 beats the default connection-refused (50) on the same line
    assert_eq!(m.class, "flaky-postgres");
    assert_eq!(
        m.known_issue_url.as_deref(),
        Some("https://issues.example.com/CI-123")
    );
    let m = c.classify_message("Snapshot `home` mismatched").unwrap();
    assert_eq!(
        (m.class.as_str(), m.category),
        ("snapshot-mismatch", Category::Test)
    );

    let bad =
        "[[classify.rules]]\nname = \"x\"\npattern = \"y\"\ncategory = \"infra\"\nseverity = 3\n";
    let err = toml::from_str::<Config>(bad).err().unwrap().to_string();
    assert!(err.contains("severity"), "{err}");
    let bad_cat = "[[classify.rules]]\nname = \"x\"\npattern = \"y\"\ncategory = \"network\"\n";
    assert!(toml::from_str::<Config>(bad_cat).is_err());
}

#[test]
fn config_errors_name_the_rule() {
    let rule = RuleConfig {
        name: "foo".into(),
        pattern: "a(b".into(),
        category: Category::Build,
        description: String::new(),
        known_issue_url: None,
        applies_to: vec![AppliesTo::Log],
        priority: 0,
        evidence: Evidence::Line,
    };
    let err = Classifier::new(&[rule]).unwrap_err().to_string();
    assert!(err.starts_with("rule \"foo\": invalid regex: "), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// Generates an endless-looking CI log on the fly with a failure at the very end.
struct Endless {
    remaining: u64,
    n: u64,
    line: Vec<u8>,
    pos: usize,
}

impl Endless {
    fn new(bytes: u64) -> Self {
        Endless {
            remaining: bytes,
            n: 0,
            line: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.line.len() {
            if self.remaining == 0 {
                return Ok(0);
            }
            self.n += 1;
            self.line.clear();
            let text = if self.remaining <= 64 {
                "ERROR: Job failed: exit code 137".to_string()
            } else {
                match self.n % 4 {
                    0 => format!("2024-03-01T12:00:00.0000000Z test case_{} ... ok", self.n),
                    1 => format!("\x1b[32;1m   Compiling\x1b[0m crate_{} v0.1.0", self.n),
                    2 => format!("  ✓ step {} (12 ms)", self.n),
                    _ => format!("Downloading 50%\rDownloading 100% part {}", self.n),
                }
            };
            self.line.extend_from_slice(text.as_bytes());
            self.line.push(b'\n');
            self.remaining = self.remaining.saturating_sub(self.line.len() as u64);
            self.pos = 0;
        }
        let k = (self.line.len() - self.pos).min(buf.len());
        buf[..k].copy_from_slice(&self.line[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_generated_20_mb_stream_is_classified_at_its_last_line() {
    let c = Classifier::with_defaults()
        .classify_log(Endless::new(20 << 20))
        .unwrap();
    let m = c.primary.unwrap();
    assert_eq!(m.class, "killed");
    assert_eq!(m.line, c.lines_scanned);
    assert!(c.bytes_scanned >= 20 << 20);
    assert_eq!(m.context.len(), 3);
}

/// `cargo test --release --test it classify_logs:: -- --ignored`
///
/// Peak RSS is the whole process's, and this test binary runs many tests at
/// once: so the measurement runs in a child process, this test binary again
/// with only this test, whatever else the parent runs.
#[test]
#[ignore = "streams 200 MB; run in release mode"]
fn a_200_mb_stream_stays_in_bounded_memory() {
    const ALONE: &str = "IT_MEASURE_ALONE";
    if std::env::var_os(ALONE).is_none() {
        let module = module_path!().split_once("::").expect("crate::module").1;
        let name = format!("{module}::a_200_mb_stream_stays_in_bounded_memory");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                name.as_str(),
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{name} in a child process:\n{stdout}");
        assert!(
            stdout.contains("test result: ok. 1 passed"),
            "the child ran no test named {name}:\n{stdout}"
        );
        return;
    }
    let classifier = Classifier::with_defaults();
    classifier.classify_log(Endless::new(8 << 20)).unwrap();
    let before = peak_rss_kib();
    let t = std::time::Instant::now();
    let c = classifier.classify_log(Endless::new(200 << 20)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let after = peak_rss_kib();
    eprintln!(
        "200 MiB in {secs:.2}s = {:.0} MiB/s; peak RSS before {before:?} KiB, after {after:?} KiB",
        200.0 / secs
    );
    assert_eq!(c.primary.unwrap().class, "killed");
    if let (Some(b), Some(a)) = (before, after) {
        assert!(a < 64 * 1024, "peak RSS {a} KiB");
        assert!(a.saturating_sub(b) < 16 * 1024, "grew by {} KiB", a - b);
    }
}
