//! A generated Cockpit `test-results.db`, as cockpit-project/bots'
//! `store-tests` writes it (tables TestRuns and Tests, its exact schema): per
//! merged revision, one run per test context with retries, the tests found in
//! each run's log. Realistic shapes: the cockpit-project projects and their
//! branch projects (`cockpit-project/cockpit/rhel-8`), their real context
//! names (`fedora-42/firefox`, `rhel-9-6/devel`, ...), 40-hex revisions, log
//! URLs as the bots write them, thousands of distinct test names
//! (`test/verify/check-<area> Test<Class>.test<Method>`), flaky retries with
//! their reasons, infrastructure errors with descriptions. A few revisions are
//! tested in a project and its branch project with the same contexts (the
//! overlap the import must keep apart). Deterministic for a seed.
#![allow(dead_code)]

use rusqlite::{Connection, params};
use std::path::Path;

/// store-tests' `init_db`, verbatim.
pub(crate) const SCHEMA: &str = "CREATE TABLE if not exists TestRuns
    (id INTEGER PRIMARY KEY, project TEXT, revision TEXT, context TEXT, url TEXT, time TIMESTAMP,
     retry INTEGER, wait_seconds INTEGER, run_seconds INTEGER, state TEXT, description TEXT,
     UNIQUE (url));
CREATE TABLE if not exists Tests
    (testname TEXT NOT NULL, retry_reason TEXT, failed INTEGER, run INTEGER NOT NULL,
     seconds INTEGER NOT NULL, FOREIGN KEY (run) REFERENCES TestRuns(id));";

const PROJECTS: &[(&str, u32, &[&str])] = &[
    (
        "cockpit-project/cockpit",
        50,
        &[
            "fedora-42",
            "fedora-42/devel",
            "fedora-42/firefox",
            "fedora-42/pybridge",
            "fedora-41",
            "fedora-rawhide",
            "fedora-coreos",
            "centos-10",
            "rhel-9-6",
            "rhel-9-6/devel",
            "rhel-10-0",
            "rhel-10-0/firefox",
            "rhel-8-10",
            "rhel4edge",
            "debian-stable",
            "debian-testing",
            "ubuntu-2404",
            "ubuntu-stable",
            "arch",
            "opensuse-tumbleweed",
        ],
    ),
    (
        "cockpit-project/cockpit-podman",
        10,
        &[
            "fedora-42",
            "fedora-41",
            "rhel-9-6",
            "rhel-10-0",
            "debian-testing",
            "ubuntu-2404",
            "centos-10",
        ],
    ),
    (
        "cockpit-project/cockpit-machines",
        10,
        &[
            "fedora-42",
            "fedora-42/firefox",
            "fedora-41",
            "rhel-9-6",
            "rhel-10-0",
            "debian-testing",
            "arch",
            "ubuntu-stable",
        ],
    ),
    (
        "cockpit-project/cockpit-files",
        7,
        &[
            "fedora-42",
            "fedora-42/firefox",
            "rhel-9-6",
            "debian-testing",
            "arch",
        ],
    ),
    (
        "osbuild/cockpit-composer",
        6,
        &[
            "fedora-42",
            "fedora-41",
            "rhel-9-6",
            "rhel-10-0",
            "centos-10",
        ],
    ),
    (
        "cockpit-project/cockpit-ostree",
        3,
        &["fedora-coreos", "rhel4edge", "centos-10"],
    ),
    (
        "cockpit-project/starter-kit",
        3,
        &["fedora-42", "centos-10", "debian-testing"],
    ),
    (
        "cockpit-project/bots",
        3,
        &["fedora-42/devel", "rhel-9-6/devel"],
    ),
    (
        "cockpit-project/cockpit/rhel-8",
        4,
        &["rhel-8-10", "rhel-8-10/devel", "centos-8-stream"],
    ),
    (
        "cockpit-project/cockpit/rhel-9.6",
        4,
        &["rhel-9-6", "rhel-9-6/devel", "centos-9-stream"],
    ),
];

const AREAS: &[&str] = &[
    "accounts",
    "apps",
    "bonding",
    "bridge",
    "client",
    "connection",
    "journal",
    "kdump",
    "kernel-settings",
    "keys",
    "language",
    "lib",
    "loopback",
    "menu",
    "metrics",
    "multi-machine",
    "networking-bond",
    "networking-firewall",
    "networking-mtu",
    "networking-settings",
    "networking-team",
    "networking-vlan",
    "networking-wireguard",
    "packagekit",
    "pages",
    "reauthorize",
    "selinux",
    "services",
    "session",
    "shell-active-pages",
    "shell-host-switching",
    "shell-keys",
    "shell-multi-machine",
    "shutdown-restart",
    "sosreport",
    "static-login",
    "storage-anaconda",
    "storage-basic",
    "storage-btrfs",
    "storage-format",
    "storage-hidden",
    "storage-ignored",
    "storage-iscsi",
    "storage-lvm2",
    "storage-luks",
    "storage-mdraid",
    "storage-mounting",
    "storage-msdos",
    "storage-nfs",
    "storage-partitions",
    "storage-resize",
    "storage-stratis",
    "storage-used",
    "storage-vdo",
    "superuser",
    "system-info",
    "system-terminal",
    "timeout",
    "tuned",
    "users",
    "machines-lifecycle",
    "machines-storage",
    "machines-networks",
    "podman",
];

const METHODS: &[&str] = &[
    "Basic",
    "Create",
    "Delete",
    "Edit",
    "Expire",
    "Rename",
    "Resize",
    "Mount",
    "Unmount",
    "Encrypt",
    "Unlock",
    "Dialog",
    "Navigation",
    "Permissions",
    "Reboot",
    "Restart",
    "Logout",
    "Login",
    "Terminal",
    "Firewall",
    "Zones",
    "Teardown",
    "Wait",
    "Auth",
    "Keys",
    "Privileged",
    "Unprivileged",
    "Redirect",
    "Timeout",
    "Fallback",
    "Overview",
    "Details",
    "Search",
    "Filter",
    "Sort",
    "Export",
    "Import",
    "Upgrade",
    "Downgrade",
    "Layout",
];

const REASONS: &[&str] = &[
    "be robust against unstable tests",
    "test affected tests 3 times",
    "Error: timeout waiting for browser",
    "unexpected journal message '/usr/libexec/cockpit-pcp: bridge was killed: 9'",
];

const ERRORS: &[&str] = &[
    "Error: Testing failed: Could not connect to machine",
    "Error: Test timed out after 120 minutes",
    "Error: Failed to download image fedora-42: 503 Service Unavailable",
    "Error: No space left on device",
    "Error: The test machine was killed (out of memory)",
];

/// A test name of the pool of `AREAS.len() × 4 classes × METHODS.len()` names.
pub(crate) fn test_name(i: usize) -> String {
    let area = AREAS[i % AREAS.len()];
    let class = (i / AREAS.len()) % 4;
    let method = METHODS[(i / (AREAS.len() * 4)) % METHODS.len()];
    let camel: String = area
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let suffix = ["", "Dialogs", "Privileged", "Anaconda"][class];
    format!("test/verify/check-{area} Test{camel}{suffix}.test{method}")
}

/// Distinct test names [`test_name`] can give.
pub(crate) fn test_names() -> usize {
    AREAS.len() * 4 * METHODS.len()
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Generated {
    pub runs: usize,
    pub tests: usize,
    pub revisions: usize,
    /// Runs of a revision tested in a project and in its branch project
    /// with the same context and retry number (the cross-project overlap).
    pub overlapping_runs: usize,
    pub pending: usize,
}

/// Write a Cockpit database with about `runs` runs and `tests_per_run`
/// test rows per run on average.
pub(crate) fn generate(path: &Path, runs: usize, tests_per_run: f64, seed: u64) -> Generated {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path).expect("create the Cockpit database");
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    conn.pragma_update(None, "journal_mode", "OFF").unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let total_weight: u32 = PROJECTS.iter().map(|p| p.1).sum();
    let names = test_names();
    let mut g = Generated::default();
    let t_end = 1_790_000_000.0_f64; // 2026-09-21
    let span = 3.0 * 365.0 * 86_400.0;
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut run_stmt = conn
            .prepare("INSERT INTO TestRuns VALUES (null, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .unwrap();
        let mut test_stmt = conn
            .prepare("INSERT INTO Tests VALUES (?, ?, ?, ?, ?)")
            .unwrap();
        let mut pr = 10_000u32;
        while g.runs < runs {
            g.revisions += 1;
            pr += rng.u32(1..4);
            let revision = format!(
                "{:016x}{:016x}{:08x}",
                rng.u64(..),
                rng.u64(..),
                rng.u32(..)
            );
            let mut pick = rng.u32(0..total_weight);
            let mut project = 0;
            while pick >= PROJECTS[project].1 {
                pick -= PROJECTS[project].1;
                project += 1;
            }
            let base = t_end - span + span * g.runs as f64 / runs as f64;
            let mut projects = vec![(PROJECTS[project].0, PROJECTS[project].2)];
            // 2 % of cockpit revisions are also tested in a branch project
            // under the same contexts (store-tests stores the branch as project).
            let overlap = project == 0 && rng.u8(0..100) < 2;
            if overlap {
                projects.push(("cockpit-project/cockpit/rhel-8", PROJECTS[0].2));
            }
            for (pi, (project, contexts)) in projects.iter().enumerate() {
                for context in contexts.iter() {
                    let retries = match rng.u8(0..100) {
                        0..=89 => 0,
                        90..=97 => 1,
                        _ => 2,
                    };
                    for retry in 0..=retries {
                        g.runs += 1;
                        if pi > 0 {
                            g.overlapping_runs += 1;
                        }
                        let time = base + rng.f64() * 3_600.0 + retry as f64 * 5_400.0;
                        let wait = rng.u32(5..400) as i64;
                        let took = rng.u32(300..5_400) as i64;
                        let last = retry == retries;
                        let state = match (last, rng.u16(0..1000)) {
                            (_, 0..=1) => "pending",
                            (false, _) => "failure",
                            (true, 0..=29) => "error",
                            (true, 30..=119) => "failure",
                            _ => "success",
                        };
                        if state == "pending" {
                            g.pending += 1;
                        }
                        let slug = context.replace('/', "-");
                        let url = format!(
                            "https://cockpit-logs.us-east-1.linodeobjects.com/pull-{pr}-{:08x}-{}-{slug}{}/log.html",
                            time as u64,
                            &revision[..8],
                            if pi > 0 { "-rhel-8" } else { "" }
                        );
                        let description = (state == "error")
                            .then(|| ERRORS[rng.usize(0..ERRORS.len())].to_string());
                        run_stmt
                            .execute(params![
                                project,
                                revision,
                                context,
                                url,
                                time,
                                retry,
                                wait,
                                took,
                                state,
                                description
                            ])
                            .unwrap();
                        let run_id = conn.last_insert_rowid();
                        if state == "pending" {
                            continue;
                        }
                        let mean = tests_per_run;
                        let n = rng.usize(0..=(2.0 * mean).round() as usize);
                        let first = rng.usize(0..names);
                        for k in 0..n {
                            let name = test_name((first + k * 97) % names);
                            let failed = state == "failure" && k == 0;
                            let flaky = !failed && rng.u8(0..100) < 3;
                            if flaky {
                                // A try that failed and was retried, then the pass.
                                test_stmt
                                    .execute(params![
                                        name,
                                        REASONS[rng.usize(0..REASONS.len())],
                                        1,
                                        run_id,
                                        rng.u32(5..300)
                                    ])
                                    .unwrap();
                                g.tests += 1;
                            }
                            let reason = failed.then(|| {
                                format!(
                                    "Error: timeout waiting for element #{}-dialog",
                                    rng.u16(..)
                                )
                            });
                            test_stmt
                                .execute(params![name, reason, failed, run_id, rng.u32(5..300)])
                                .unwrap();
                            g.tests += 1;
                        }
                        if g.runs >= runs {
                            break;
                        }
                    }
                    if g.runs >= runs {
                        break;
                    }
                }
            }
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    g
}
