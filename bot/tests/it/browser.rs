//! The console page in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! W3C protocol, spoken by the small client below) against the real `runbot demo`. alice
//! requests a cache flush, her own Approve is refused, bob approves, and the status message
//! is edited in place to Succeeded without a reload; a hostile argument is shown as text.
//! Under `runbot serve` the page shows the identity the server gives and no picker.
//!
//! Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them). Without them the
//! test fails, unless `RUNBOT_TEST_NO_BROWSER=1` says to skip it.

use crate::common::Runbot;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver in its own process group, with one browser session. Dropping it kills the
/// whole group — chromedriver and the Chromium processes it started — so a failed assertion
/// leaves no browser behind.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session; `None`
    /// when `RUNBOT_TEST_NO_BROWSER=1`.
    async fn start() -> Option<Browser> {
        if std::env::var("RUNBOT_TEST_NO_BROWSER").is_ok_and(|v| v == "1") {
            eprintln!("RUNBOT_TEST_NO_BROWSER=1: the browser test is skipped");
            return None;
        }
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: scripts/test.sh installs Debian's chromium and chromium-driver \
                 (or set RUNBOT_TEST_NO_BROWSER=1 to skip the browser test explicitly)"
            );
        }
        let port = crate::common::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("browser profile dir");
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"),
            _profile: profile,
        };
        let t = Instant::now();
        loop {
            let ready = b.http.get(format!("{}/status", b.base)).send().await.ok().map(|r| r.json::<Value>());
            if let Some(r) = ready
                && r.await.is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            if let Ok(Some(status)) = b.driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(t.elapsed() < Duration::from_secs(20), "chromedriver did not come up on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
            .map(String::from)
            .into_iter()
            .chain([format!("--user-data-dir={}", b._profile.path().display())])
            .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let v = b.call(reqwest::Method::POST, "/session", Some(caps)).await;
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session id: {v}")).to_string();
        Some(b)
    }

    /// One WebDriver command; panics with the driver's error.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("WebDriver {path}: not JSON: {e}"));
        assert!(status.is_success(), "WebDriver {path} {body:?}: {status} {v}");
        v["value"].clone()
    }

    async fn session(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), Some(body)).await
    }

    async fn goto(&self, url: &str) {
        self.session(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn js(&self, script: &str) -> Value {
        self.session(reqwest::Method::POST, "/execute/sync", json!({"script": script, "args": []})).await
    }

    /// The element `css` selects, waiting up to `secs` for it to exist.
    async fn find(&self, css: &str, secs: u64) -> String {
        let t = Instant::now();
        loop {
            let probe = format!("return document.querySelector({}) !== null;", json!(css));
            if self.js(&probe).await == json!(true) {
                let v = self.session(reqwest::Method::POST, "/element", json!({"using": "css selector", "value": css})).await;
                return v[ELEMENT].as_str().unwrap_or_else(|| panic!("element reference: {v}")).to_string();
            }
            assert!(t.elapsed() < Duration::from_secs(secs), "no element {css} within {secs} s; page text:\n{}", self.text().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks like a user (the browser's own pointer events). The page re-renders lists as
    /// events arrive, so an element found a moment ago may be replaced before the click: then
    /// it is found again (WebDriver's "stale element reference"), a few times at most.
    async fn click(&self, css: &str) {
        for _ in 0..5 {
            let id = self.find(css, 20).await;
            let url = format!("{}/session/{}/element/{id}/click", self.base, self.session);
            let r = self.http.post(&url).json(&json!({})).send().await.unwrap_or_else(|e| panic!("WebDriver click {css}: {e}"));
            let status = r.status();
            let v: Value = r.json().await.unwrap_or_else(|e| panic!("WebDriver click {css}: not JSON: {e}"));
            if status.is_success() {
                return;
            }
            assert_eq!(v["value"]["error"], "stale element reference", "WebDriver click {css}: {status} {v}");
        }
        panic!("{css} kept being replaced before it could be clicked");
    }

    /// Types `text` into the element, key by key, then Enter.
    async fn type_line(&self, css: &str, text: &str) {
        let id = self.find(css, 20).await;
        self.session(reqwest::Method::POST, &format!("/element/{id}/value"), json!({ "text": format!("{text}\u{E007}") })).await;
    }

    /// Waits up to `secs` for `script` (a function body) to return true.
    async fn until(&self, what: &str, secs: u64, script: &str) {
        let t = Instant::now();
        while self.js(script).await != json!(true) {
            assert!(t.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s; page text:\n{}", self.text().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self) -> String {
        self.js("return document.body.innerText;").await.as_str().unwrap_or_default().to_string()
    }

    async fn close(&self) {
        self.call(reqwest::Method::DELETE, &format!("/session/{}", self.session), None).await;
    }
}

/// A JS expression: the text of R-1's status message as the page shows it, or "".
const R1_TEXT: &str = "(() => { const m = [...document.querySelectorAll('[data-testid=message]')]
    .find((e) => (e.querySelector('.title') || {}).textContent?.startsWith('R-1 '));
  return m ? m.innerText : ''; })()";

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium_refuses_self_approval_updates_live_and_shows_hostile_text_as_text() {
    let Some(browser) = Browser::start().await else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let bot = Runbot::demo(&root.path().join("state"), &root.path().join("runbot.log")).await;

    browser.goto(&bot.url("/console")).await;
    browser.until("the event stream connects", 20, "return document.getElementById('conn').textContent === 'connected';").await;
    // A marker that a reload would erase.
    browser.js("window.__noReload = 'still here'; return null;").await;

    // alice asks for the cache flush.
    browser.click("#identity option[value='console:alice']").await;
    browser.until("alice is selected", 5, "return document.getElementById('identity').value === 'console:alice';").await;
    browser.type_line("[data-testid=command-input]", "/ops run cache-flush promotions").await;
    browser.until("R-1 is created", 20, "return document.getElementById('messages').innerText.includes('R-1 created');").await;

    // The status message waits for approval in prod's incident channel.
    browser.click("[data-testid=channel][data-channel='inc-prod']").await;
    browser.find("[data-testid=message] [data-testid=action-button][data-action-id=approve]", 20).await;
    let waiting = browser.js(&format!("return {R1_TEXT};")).await.as_str().unwrap_or_default().to_string();
    assert!(!waiting.contains("Succeeded"), "{waiting}");

    // alice's own Approve is refused, in a reply to her; the run still waits.
    browser.click("[data-testid=message] [data-testid=action-button][data-action-id=approve]").await;
    browser
        .until(
            "alice's refusal is shown",
            20,
            "return [...document.querySelectorAll('[data-testid=ephemeral-message]')]
               .some((e) => e.innerText.includes('console:alice') && /approve/i.test(e.innerText));",
        )
        .await;
    let refusal = browser.text().await;
    assert!(refusal.to_lowercase().contains("self-approval"), "the refusal says why:\n{refusal}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let still = browser.js(&format!("return {R1_TEXT};")).await.as_str().unwrap_or_default().to_string();
    assert!(!still.contains("Succeeded") && still.contains("Approve"), "R-1 still waits after alice's click:\n{still}");

    // bob approves; the same status message turns to Succeeded in place, with no reload.
    browser.click("#identity option[value='console:bob']").await;
    browser.until("bob is selected", 5, "return document.getElementById('identity').value === 'console:bob';").await;
    browser.click("[data-testid=message] [data-testid=action-button][data-action-id=approve]").await;
    browser.until("R-1 succeeds on the page", 30, &format!("return {R1_TEXT}.includes('Succeeded');")).await;
    assert_eq!(browser.js("return window.__noReload;").await, json!("still here"), "the page was not reloaded");
    let n = browser.js("return document.querySelectorAll('[data-testid=message] .title').length;").await;
    let titles = browser
        .js("return [...document.querySelectorAll('[data-testid=message] .title')].filter((t) => t.textContent.startsWith('R-1 ')).length;")
        .await;
    assert_eq!(titles, json!(1), "one status message for R-1, edited in place ({n} messages)");
    assert!(bot.status("inc-prod", "R-1").await.is_some_and(|m| m["edits"].as_u64().unwrap_or(0) > 0), "the server edited the message");

    // A hostile argument is text: shown verbatim, never markup or script.
    let hostile = "<img src=x onerror=window.__xss=1>";
    browser.click("[data-testid=channel][data-channel='ops']").await;
    browser.type_line("[data-testid=command-input]", &format!("/ops run cache-flush {hostile}")).await;
    let shown = format!("return document.getElementById('messages').textContent.includes({});", json!(hostile));
    browser.until("the hostile argument is shown as text", 20, &shown).await;
    browser.until("runbot answered it", 20, "return document.querySelectorAll('[data-testid=ephemeral-message]').length > 0;").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.js("return typeof window.__xss;").await, json!("undefined"), "the onerror handler ran");
    assert_eq!(browser.js("return document.querySelectorAll('img').length;").await, json!(0), "an <img> element was inserted");
    assert_eq!(browser.js("return window.__noReload;").await, json!("still here"));

    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn under_serve_the_page_shows_who_the_server_says_and_offers_no_picker() {
    let Some(browser) = Browser::start().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::common::free_port();
    let config = dir.path().join("runbot.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}/state.db\"\n[console]\nlocal_identity = \"console:alice\"\n",
        dir.path().display()
    );
    std::fs::write(&config, text).expect("write config");
    let bot = Runbot::serve(&config, port, &dir.path().join("runbot.log")).await;

    browser.goto(&bot.url("/console")).await;
    browser.until("the event stream connects", 20, "return document.getElementById('conn').textContent === 'connected';").await;
    browser.until("the server's identity is shown", 10, "return document.getElementById('identity').value === 'console:alice';").await;
    let picker = browser.js("const s = document.getElementById('identity'); return [s.disabled, s.options.length];").await;
    assert_eq!(picker, json!([true, 1]), "one identity, not selectable");
    browser.type_line("[data-testid=command-input]", "/ops whoami").await;
    browser
        .until(
            "whoami answers alice",
            20,
            "return [...document.querySelectorAll('[data-testid=ephemeral-message] .text')].some((e) => e.innerText.includes('console:alice'));",
        )
        .await;
    browser.close().await;
}
