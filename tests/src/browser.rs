//! A real headless Chromium, driven over WebDriver (chromedriver), for the
//! console's tests and benchmark. `deploy/local/browser.sh install` puts
//! both in place (Debian's chromium and chromium-driver); MUSTER_CHROMIUM
//! and MUSTER_CHROMEDRIVER override where they are.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A browser session and the chromedriver serving it; both stop on drop.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    artifacts: PathBuf,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killed alone, chromedriver leaves its Chromium running (adopted
        // by init, one per test run). Chromium's browser process is in
        // chromedriver's process group, and its helpers end with it: kill
        // the group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn tool(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found
        .flatten()
        .unwrap_or_else(|| panic!("{name} is not installed: run deploy/local/browser.sh install (or set {env})"))
}

/// Where screenshots go: `$MUSTER_ARTIFACTS_DIR/console`, or
/// `console-artifacts` in the build directory.
pub fn artifacts_dir() -> PathBuf {
    let base = std::env::var_os("MUSTER_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("artifacts")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts"));
    base.join("console")
}

impl Browser {
    /// Chromium, headless, with a fresh profile, trusting any certificate
    /// (the sandbox's own CA signs the controller's); screenshots of this
    /// session go to `artifacts_dir()/<name>/`.
    pub async fn start(name: &str) -> Self {
        let chromium = tool("MUSTER_CHROMIUM", "chromium");
        let chromedriver = tool("MUSTER_CHROMEDRIVER", "chromedriver");
        let port = muster_sim::testkit::free_port();
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            // Chromium's own temporary files (its singleton socket's
            // directory) go with the profile: Drop kills it, and it cannot
            // clean them up itself.
            .env("TMPDIR", profile.path())
            // A process group of its own, which Drop ends whole.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", chromedriver.display()));
        let capabilities = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                // The flags a closed network needs (no background fetches of
                // Google's services), and a size that shows a whole map.
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-quic", "--no-first-run", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object");
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                // chromedriver is still starting: its port refuses.
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(error) => panic!("no browser session from chromedriver at {url}: {error}"),
            }
        };
        let artifacts = artifacts_dir().join(name);
        std::fs::create_dir_all(&artifacts).expect("the artifacts directory");
        Self {
            client,
            driver,
            artifacts,
            _profile: profile,
        }
    }

    /// Signs in to the console at `base` (`https://host:port`) with
    /// `token`, and waits for a page that names who signed in.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/console/signin")).await;
        self.element("token")
            .await
            .send_keys(token)
            .await
            .expect("the token is typed");
        self.client
            .find(Locator::Css("form.signin button"))
            .await
            .expect("the sign-in button")
            .click()
            .await
            .expect("sign in");
        self.element("who").await;
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// A PNG of the window, written as `<name>.png` among the test's
    /// artifacts; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot is written");
        path
    }

    /// The text of the element with `id`, waiting for it to exist.
    /// An element found as a page is replaced (a navigation, a redrawn
    /// part) is read again from the page now.
    pub async fn text_of(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.element(id).await.text().await {
                Ok(text) => return text,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(error) => panic!("the text of #{id}: {error}"),
            }
        }
    }

    /// The element with `id`, waiting up to 10 s for it.
    pub async fn element(&self, id: &str) -> fantoccini::elements::Element {
        let selector = format!("#{id}");
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(&selector))
            .await
        {
            Ok(element) => element,
            Err(error) => {
                let url = self.client.current_url().await.ok();
                let text = self.eval("return document.body.innerText").await;
                panic!("no element #{id} on {url:?}: {error}; the page says: {text}")
            }
        }
    }

    /// Clicks the element `locator` finds (a link by its text, say),
    /// which must be on the page now.
    pub async fn click(&self, locator: Locator<'_>) {
        let described = format!("{locator:?}");
        self.client
            .find(locator)
            .await
            .unwrap_or_else(|e| panic!("no {described} to click: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {described}: {e}"));
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.expect("the script runs")
    }

    /// Runs `script` in the page, which calls `arguments[0]` with its value
    /// when done (a fetch, say), and returns that value.
    pub async fn eval_async(&self, script: &str) -> Value {
        self.client
            .execute_async(script, Vec::new())
            .await
            .expect("the script runs")
    }

    /// Waits until `check` holds of the page, up to `within`; the value the
    /// check last saw when it never did.
    pub async fn until<F, Fut>(&self, within: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "the page never showed {what} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
