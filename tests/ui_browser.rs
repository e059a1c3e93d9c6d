//! End-to-end: headless Chromium (Debian packages `chromium` and
//! `chromium-driver`) driven over WebDriver loads every page on demo data,
//! checks what a person would look at, and saves screenshots at 1280 px and
//! 375 px under `target/ui-screenshots/`. Fails when the browser is missing.

mod common;

use common::Exporter;
use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PACKAGES: &str =
    "Debian packages `chromium` and `chromium-driver` (apt-get install chromium chromium-driver)";

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(log_dir: &Path) -> Driver {
    let bin = which(&["chromedriver"])
        .unwrap_or_else(|| panic!("chromedriver not found on PATH: install the {PACKAGES}"));
    let port = common::free_port();
    let log = std::fs::File::create(log_dir.join("chromedriver.log")).unwrap();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start chromedriver");
    // Owned by `Driver` at once: killed and waited for on drop, also on a panic.
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = common::agent()
            .get(&format!("{}/status", driver.url))
            .call()
            && r.status() == 200
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn browser(driver: &Driver, profile: &Path, mobile: bool) -> Client {
    let chromium = which(&["chromium", "chromium-browser"])
        .unwrap_or_else(|| panic!("chromium not found on PATH: install the {PACKAGES}"));
    let mut options = serde_json::json!({
        "binary": chromium,
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars",
            format!("--user-data-dir={}", profile.display()),
            if mobile { "--window-size=375,812".to_string() } else { "--window-size=1280,1000".to_string() },
        ],
    });
    if mobile {
        options["mobileEmulation"] = serde_json::json!({
            "deviceMetrics": { "width": 375, "height": 812, "pixelRatio": 1.0, "touch": true },
        });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session with headless chromium")
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

fn query_param(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .unwrap()
                .into_owned()
        };
        (dec(k) == key).then(|| dec(v))
    })
}

/// The cell of jenkins' latest failing nightly (the NEW migrate panic): the
/// newest day is the first column.
const JENKINS_FAILING: &str =
    "//tr[th[contains(., 'jenkins/nightly-suite')]]/td[contains(@class, 's-failure')][1]";

/// A jenkins night where one of its two jobs failed.
const JENKINS_SPLIT: &str = "//tr[th[contains(., 'jenkins/nightly-suite')]]/td[contains(@class, 's-failure')][.//span[@class='count' and .='1/2']]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_in_headless_chromium_at_desktop_and_phone_width() {
    let dir = tempfile::tempdir().unwrap();
    let e = Exporter::start(dir.path(), &dir.path().join("demo.db"), &["--demo"], &[]);
    let driver = start_driver(dir.path());
    let base = e.base.clone();

    // ---- desktop, 1280 px
    let c = browser(&driver, &dir.path().join("profile-desktop"), false).await;

    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(text(&c, "h1").await, "Service-level objectives");
    let rows = c
        .find_all(Locator::Css("table.slos tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 7);
    let statuses = text(&c, "table.slos tbody").await;
    assert!(statuses.contains("budget exhausted"), "{statuses}");
    assert!(statuses.contains("recovers"), "{statuses}");
    shot(&c, "overview-1280").await;

    // An SLO's page: the daily SLI chart with its objective line, the budget
    // chart, the repositories, and the bad events down to their runs.
    c.find(Locator::Css("a[href='/slos/queue_time']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "SLO queue_time");
    let charts = c.find_all(Locator::Css("svg.chart")).await.unwrap();
    assert_eq!(charts.len(), 2);
    assert!(charts[0].is_displayed().await.unwrap());
    let points = c
        .find_all(Locator::Css("svg.chart circle.pt"))
        .await
        .unwrap();
    assert!(points.len() >= 40, "{} points", points.len());
    let objective = text(&c, "svg.chart text.reflabel.objective").await;
    assert!(objective.starts_with("objective "), "{objective}");
    let status = text(&c, "dl.facts").await;
    assert!(
        status.contains("budget exhausted") && status.contains("since "),
        "{status}"
    );
    assert!(
        c.find_all(Locator::Css("table.repos tbody tr"))
            .await
            .unwrap()
            .len()
            >= 3
    );
    shot(&c, "slo-1280").await;
    c.find(Locator::Css("a.events"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "Bad events of queue_time");
    let run_link = c
        .find(Locator::Css("table.events tbody tr a[href^='/runs/']"))
        .await
        .unwrap();
    let href = run_link.attr("href").await.unwrap().unwrap();
    shot(&c, "slo-events-1280").await;
    run_link.click().await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().ends_with(&href));
    assert!(text(&c, "h1").await.starts_with("Run "));

    c.goto(&format!("{base}/nightly")).await.unwrap();
    let cells = c.find_all(Locator::Css("td.cell[data-run]")).await.unwrap();
    assert!(cells.len() >= 30, "grid has {} cells", cells.len());
    let cell = c.find(Locator::XPath(JENKINS_FAILING)).await.unwrap();
    assert!(cell.text().await.unwrap().starts_with('✗'));
    let tip = cell.find(Locator::Css(".tip")).await.unwrap();
    assert!(!tip.is_displayed().await.unwrap(), "tooltip hidden at rest");
    // Keyboard: focusing the cell shows the tooltip with the evidence.
    let link = cell.find(Locator::Css(".cellink")).await.unwrap();
    c.execute(
        "arguments[0].focus();",
        vec![serde_json::to_value(&link).unwrap()],
    )
    .await
    .unwrap();
    assert!(tip.is_displayed().await.unwrap(), "tooltip shown on focus");
    let tip_text = tip.text().await.unwrap();
    assert!(tip_text.contains("thread 'migrate' panicked"), "{tip_text}");
    assert!(
        tip_text.contains("sqlalchemy"),
        "dependency diff: {tip_text}"
    );
    shot(&c, "nightly-focus-1280").await;
    c.execute("document.activeElement.blur();", vec![])
        .await
        .unwrap();
    // Mouse: hovering another failing cell shows its tooltip.
    let other = c
        .find(Locator::XPath("(//td[contains(@class, 's-failure')])[1]"))
        .await
        .unwrap();
    let other_tip = other.find(Locator::Css(".tip")).await.unwrap();
    assert!(!other_tip.is_displayed().await.unwrap());
    c.perform_actions(
        MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
            element: other.clone(),
            duration: None,
            x: 0.0,
            y: 0.0,
        }),
    )
    .await
    .unwrap();
    assert!(
        other_tip.is_displayed().await.unwrap(),
        "tooltip shown on hover"
    );
    assert!(other_tip.text().await.unwrap().contains("class "));
    shot(&c, "nightly-hover-1280").await;
    // A night where one of two jobs failed is red, says 1/2 and lists the
    // failed job on focus; the passed one is named too.
    c.goto(&format!("{base}/nightly")).await.unwrap();
    let split = c.find(Locator::XPath(JENKINS_SPLIT)).await.unwrap();
    let split_tip = split.find(Locator::Css(".tip")).await.unwrap();
    assert!(!split_tip.is_displayed().await.unwrap());
    split
        .find(Locator::Css(".cellink"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        split_tip.is_displayed().await.unwrap(),
        "tooltip shown on click/tap"
    );
    let t = split_tip.text().await.unwrap();
    assert!(t.starts_with("1/2 failed"), "{t}");
    let failed_job = split_tip
        .find(Locator::Css("li.job.s-failure a"))
        .await
        .unwrap();
    assert!(
        failed_job.text().await.unwrap().contains("upgrade-tests"),
        "{t}"
    );
    assert!(t.contains("class "), "{t}");
    assert!(t.contains("passed: full-regression"), "{t}");
    shot(&c, "nightly-split-1280").await;
    // The failed job in the tooltip opens its run.
    c.goto(&format!("{base}/nightly")).await.unwrap();
    let cell = c.find(Locator::XPath(JENKINS_FAILING)).await.unwrap();
    cell.find(Locator::Css(".cellink"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let link = cell.find(Locator::Css(".tip li.job a")).await.unwrap();
    let href = link.attr("href").await.unwrap().unwrap();
    assert!(href.starts_with("/runs/"), "{href}");
    link.click().await.unwrap();
    let url = c.current_url().await.unwrap();
    assert!(url.as_str().ends_with(&href), "{url} vs {href}");
    assert!(text(&c, "h1").await.starts_with("Run "));
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("thread 'migrate' panicked")
    );
    shot(&c, "run-1280").await;
    // The run page's links resolve: the last green run of its context, the
    // fingerprint's page.
    let run_url = c.current_url().await.unwrap();
    c.find(Locator::Css("a.green"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        text(&c, "h1").await.contains("success"),
        "the last green run"
    );
    c.goto(run_url.as_str()).await.unwrap();
    c.find(Locator::Css("a.fingerprint"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(&c, "h1").await.starts_with("Fingerprint "));
    assert!(
        !c.find_all(Locator::Css("table.runs tbody tr"))
            .await
            .unwrap()
            .is_empty()
    );

    // The repository opens its jobs × days grid: one row per job.
    c.goto(&format!("{base}/nightly")).await.unwrap();
    c.find(Locator::XPath("//th/a[.='jenkins/nightly-suite']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/nightly/jenkins%2Fnightly-suite"
    );
    assert_eq!(
        text(&c, "h1").await,
        "Nightly jobs of jenkins/nightly-suite"
    );
    let jobs = text(&c, "table.grid tbody").await;
    assert!(
        jobs.contains("full-regression") && jobs.contains("upgrade-tests"),
        "{jobs}"
    );
    assert_eq!(
        c.find_all(Locator::Css("table.grid tbody tr"))
            .await
            .unwrap()
            .len(),
        2
    );
    shot(&c, "nightly-jobs-1280").await;

    c.goto(&format!("{base}/nightly?color=runtime"))
        .await
        .unwrap();
    assert!(
        !c.find_all(Locator::Css("td.rt-veryslow"))
            .await
            .unwrap()
            .is_empty()
    );
    shot(&c, "nightly-runtime-1280").await;

    c.goto(&format!("{base}/failures")).await.unwrap();
    let badge = c.find(Locator::Css("li.fp .badge.new")).await.unwrap();
    assert!(badge.is_displayed().await.unwrap());
    assert_eq!(badge.text().await.unwrap(), "NEW");
    let new_fp = c
        .find(Locator::XPath(
            "//li[contains(@class,'fp')][.//span[contains(@class,'new')]]",
        ))
        .await
        .unwrap();
    assert!(
        new_fp
            .text()
            .await
            .unwrap()
            .contains("thread 'migrate' panicked")
    );
    let issue = c
        .find(Locator::XPath(
            "//li[contains(@class,'fp')][contains(., 'cockpit-project/cockpit')]//a[contains(@class,'create-issue')]",
        ))
        .await
        .unwrap();
    let href = issue.attr("href").await.unwrap().unwrap();
    assert!(
        href.starts_with("https://github.com/cockpit-project/cockpit/issues/new?"),
        "{href}"
    );
    assert!(
        query_param(&href, "title")
            .unwrap()
            .starts_with("CI failure (")
    );
    let body = query_param(&href, "body").unwrap();
    assert!(
        body.contains("Evidence:") && body.contains("Example runs:"),
        "{body}"
    );
    shot(&c, "failures-1280").await;
    // Compact rows: closed, one or two lines each; opening one shows its evidence.
    let heights = c
        .execute(
            "return [...document.querySelectorAll('li.fp')].map(li => li.getBoundingClientRect().height);",
            vec![],
        )
        .await
        .unwrap();
    let heights: Vec<f64> = heights
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_f64().unwrap())
        .collect();
    assert!(
        heights.len() > 5 && heights.iter().all(|h| *h < 90.0),
        "{heights:?}"
    );
    let first = c.find(Locator::Css("li.fp")).await.unwrap();
    let pre = first.find(Locator::Css("pre.evidence")).await.unwrap();
    assert!(!pre.is_displayed().await.unwrap());
    first
        .find(Locator::Css("summary .num"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(pre.is_displayed().await.unwrap(), "the row expands");
    // A class opens its page with its runs.
    let class_link = c.find(Locator::Css("table.classes a.class")).await.unwrap();
    let class = class_link.text().await.unwrap();
    class_link.click().await.unwrap();
    assert_eq!(text(&c, "h1").await, format!("Failure class {class}"));
    let runs = c
        .find_all(Locator::Css("table.runs tbody tr"))
        .await
        .unwrap();
    assert!(!runs.is_empty());
    shot(&c, "failure-class-1280").await;
    c.find(Locator::Css("table.runs tbody tr a[href^='/runs/']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(&c, "h1").await.starts_with("Run "));
    c.goto(&format!("{base}/failures")).await.unwrap();

    // A test page reached through a link of the failures page (in a row, opened).
    c.find(Locator::XPath(
        "//li[contains(@class,'fp')][.//a[starts-with(@href,'/tests/cockpit-project%2Fcockpit/')]]//summary/span[@class='num']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let test_link = c
        .find(Locator::Css("a[href^='/tests/cockpit-project%2Fcockpit/']"))
        .await
        .unwrap();
    test_link.click().await.unwrap();
    assert!(text(&c, "h1").await.starts_with("Test "));
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/tests/cockpit-project%2Fcockpit/")
    );
    shot(&c, "test-1280").await;
    c.goto(&format!(
        "{base}/tests/cockpit-project%2Fcockpit/fedora-42/TestStorage.testLvmRaid?window=30d"
    ))
    .await
    .unwrap();
    assert_eq!(text(&c, ".verdict").await, "flaky");
    let marks = c
        .find_all(Locator::Css("ol.strip li.daymark"))
        .await
        .unwrap();
    assert!(marks.len() > 3, "dates on the history strip");
    assert!(marks[0].is_displayed().await.unwrap());
    shot(&c, "test-strip-1280").await;

    // The test index, from the nav: the flaky tests of a repository, each
    // linked to its page.
    c.goto(&format!("{base}/failures")).await.unwrap();
    c.find(Locator::Css("nav a[href^='/tests']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "Tests");
    c.goto(&format!(
        "{base}/tests?repository=cockpit-project%2Fcockpit&verdict=flaky&window=30d"
    ))
    .await
    .unwrap();
    let verdicts = c
        .find_all(Locator::Css("table.tests tbody .verdict"))
        .await
        .unwrap();
    assert!(!verdicts.is_empty());
    for v in &verdicts {
        assert_eq!(v.text().await.unwrap(), "flaky");
    }
    let listed = text(&c, "table.tests tbody").await;
    assert!(listed.contains("TestStorage.testLvmRaid"), "{listed}");
    assert!(
        !c.find_all(Locator::Css("table.tests tbody ol.strip li"))
            .await
            .unwrap()
            .is_empty(),
        "history strips"
    );
    shot(&c, "tests-1280").await;
    c.find(Locator::Css("table.tests tbody th a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/tests/cockpit-project%2Fcockpit/")
    );
    assert_eq!(text(&c, ".verdict").await, "flaky");

    // The run of an exemplar from the OpenMetrics scrape.
    let om = e.scrape(true);
    let id: i64 = om
        .lines()
        .find_map(|l| {
            l.split_once("# {run_id=\"")?
                .1
                .split('"')
                .next()?
                .parse()
                .ok()
        })
        .expect("an exemplar");
    c.goto(&format!("{base}/runs/{id}")).await.unwrap();
    assert_eq!(
        text(&c, "h1").await.split(' ').take(2).collect::<Vec<_>>(),
        ["Run", &id.to_string()]
    );
    c.close().await.unwrap();

    // ---- phone, 375 px
    let m = browser(&driver, &dir.path().join("profile-phone"), true).await;
    for (path, name) in [
        ("/", "overview"),
        ("/slos/queue_time", "slo"),
        ("/slos/queue_time/events", "slo-events"),
        ("/slos/test_success", "slo-test-success"),
        ("/nightly", "nightly"),
        ("/nightly/jenkins%2Fnightly-suite", "nightly-jobs"),
        ("/failures", "failures"),
        ("/failures?new=1", "failures-new"),
        ("/failures/classes/panic", "failure-class"),
        (
            "/nightly/acme%2Fweb-shop?color=runtime",
            "nightly-jobs-runtime",
        ),
        ("/tests?window=30d", "tests"),
        (
            "/tests/cockpit-project%2Fcockpit/fedora-42/TestStorage.testLvmRaid?window=30d",
            "test",
        ),
        (&format!("/runs/{id}"), "run"),
    ] {
        m.goto(&format!("{base}{path}")).await.unwrap();
        let width = m
            .execute(
                "return [window.innerWidth, document.documentElement.scrollWidth];",
                vec![],
            )
            .await
            .unwrap();
        let (inner, scroll) = (width[0].as_f64().unwrap(), width[1].as_f64().unwrap());
        assert!(inner <= 400.0, "phone viewport is {inner} px");
        assert!(
            scroll <= inner + 1.0,
            "{path}: the page itself scrolls sideways ({scroll} > {inner})"
        );
        shot(&m, &format!("{name}-375")).await;
    }
    // Every SLO's status and burn rate on screen (no column cut off).
    m.goto(&format!("{base}/")).await.unwrap();
    let cut = m
        .execute(
            "return [...document.querySelectorAll('table.slos td')]
               .filter(td => td.getBoundingClientRect().right > window.innerWidth + 1)
               .map(td => td.dataset.label);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(cut, serde_json::json!([]), "SLO columns off-screen");
    let statuses = m
        .find_all(Locator::Css("table.slos td[data-label='Status']"))
        .await
        .unwrap();
    assert_eq!(statuses.len(), 7);
    for st in &statuses {
        assert!(st.is_displayed().await.unwrap());
    }
    // The grid scrolls inside its own box, the newest day in view, no
    // repository name cut.
    m.goto(&format!("{base}/nightly")).await.unwrap();
    let seen = m
        .execute(
            "const th = document.querySelector('table.grid thead th:nth-child(2)');
             const r = th.getBoundingClientRect();
             const names = [...document.querySelectorAll('table.grid tbody th')]
               .filter(h => h.scrollWidth > h.clientWidth + 1).map(h => h.textContent);
             return [r.left, r.right, window.innerWidth, th.querySelector('abbr').title, names];",
            vec![],
        )
        .await
        .unwrap();
    let (_, days) = e.get("/api/v1/nightly");
    let days: serde_json::Value = serde_json::from_str(&days).unwrap();
    let today = days["days"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        seen[3],
        today.as_str(),
        "the first day column is today: {seen}"
    );
    assert!(
        seen[0].as_f64().unwrap() >= 0.0 && seen[1].as_f64().unwrap() <= seen[2].as_f64().unwrap(),
        "the newest day is on screen: {seen}"
    );
    assert_eq!(
        seen[4],
        serde_json::json!([]),
        "cut repository names: {seen}"
    );
    let grid = m
        .execute(
            "const w = document.querySelector('.grid-wrap'); return [w.scrollWidth, w.clientWidth];",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        grid[0].as_f64().unwrap() > grid[1].as_f64().unwrap(),
        "grid scrolls: {grid}"
    );
    m.close().await.unwrap();
}
