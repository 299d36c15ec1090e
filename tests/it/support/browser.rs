//! A real headless Chromium for the console's browser tests, driven over
//! WebDriver (the system's `chromedriver`, Debian's `chromium-driver`).
//!
//! `Browser::start` runs chromedriver on a free port of 127.0.0.1, waits
//! until it answers, and opens a session of `chromium --headless=new` in a
//! fresh profile. Every page a test visits is saved as
//! `target/console-screenshots/<name>.png`. Without a chromedriver the
//! test says by name that it was skipped, unless `CALLGATE_REQUIRE_BROWSER=1`
//! (set by `.ci/run`) makes that a failure.
//!
//! Trust: the test server's certificate is a throwaway self-signed one for
//! 127.0.0.1, made per test run. Chromium is told
//! `--ignore-certificate-errors` because it has no way to trust one
//! certificate for one session short of installing it in a system store
//! (which a test must not touch); the profile is a temporary one, only ever
//! pointed at the test server on 127.0.0.1, and thrown away afterwards.
//! `--no-sandbox`: CI runs as root, where Chromium's sandbox refuses to
//! start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Where chromedriver is looked for (`CALLGATE_CHROMEDRIVER` overrides).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    pub client: Client,
    _driver: Driver,
    /// The test's name, prefixed to its screenshots.
    test: String,
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

impl Browser {
    /// A browser for the test named `test`, or `None` (said on stderr)
    /// when chromedriver is not installed and not required.
    pub async fn start(test: &str) -> Option<Browser> {
        let driver_path = std::env::var("CALLGATE_CHROMEDRIVER").unwrap_or(CHROMEDRIVER.into());
        if !Path::new(&driver_path).exists() {
            if std::env::var("CALLGATE_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("{test}: CALLGATE_REQUIRE_BROWSER=1 but no chromedriver at {driver_path}");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: no chromedriver at {driver_path} (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        // A free port: bound, read, released. chromedriver binds it at once;
        // another process taking it in between fails the status wait below.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Driver(
            Command::new(&driver_path)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {driver_path}: {e}")),
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&url).await;
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",
            "--window-size=1280,900",
        ];
        args.push("--no-first-run");
        let mut options = json!({"args": args});
        if Path::new(CHROMIUM).exists() {
            options["binary"] = json!(CHROMIUM);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        caps.insert("acceptInsecureCerts".into(), json!(true));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("a chromium session from {url}: {e}"));
        std::fs::create_dir_all(screenshots_dir()).unwrap();
        Some(Browser {
            client,
            _driver: driver,
            test: test.to_owned(),
        })
    }

    /// Opens `url` and saves the page as `<test>-<name>.png`.
    pub async fn visit(&self, url: &str, name: &str) {
        self.client.goto(url).await.unwrap();
        self.shot(name).await;
    }

    /// Saves the current page as `<test>-<name>.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshots_dir().join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).unwrap();
    }

    /// The text of the element `css`, once it exists (bounded wait).
    pub async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Types `value` into the input `css`.
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }

    /// Clicks `css` and waits for the page at a path starting `path`.
    pub async fn click_to(&self, css: &str, path: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to click: {e}"))
            .click()
            .await
            .unwrap();
        self.wait_path(path).await;
    }

    /// Waits until the current URL's path (and query) starts with `path`.
    pub async fn wait_path(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.client.current_url().await.unwrap();
            let here = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            if here.starts_with(path) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still at {here}, not {path}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs in at `base` with `key` and lands on the overview.
    pub async fn login(&self, base: &str, key: &str) {
        self.visit(&format!("{base}/console/login"), "login").await;
        self.fill("#api_key", key).await;
        self.click_to("#login", "/console").await;
        self.text("h1#overview").await;
        self.shot("overview").await;
    }

    /// Ends the browser session (and, on drop, chromedriver).
    pub async fn close(self) {
        let Browser { client, .. } = &self;
        let _ = client.clone().close().await;
    }
}

/// The chromedriver process, stopped when dropped (a test that fails
/// anywhere after it started leaves none behind).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until chromedriver answers `/status` as ready.
async fn wait_ready(url: &str) {
    super::crypto();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{url}/status")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["value"]["ready"] == true
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver at {url} did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
