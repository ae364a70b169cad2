//! Shared helpers for the end-to-end tests: start the real `runbot` binary on a free loopback
//! port, talk to its console API, read its SSE stream, and never leave a process behind.

#![allow(dead_code)] // each test binary uses a different part of this module

use serde_json::{Value, json};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_runbot");

/// How long one ordinary HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The user header of `[console] auth = "proxy"` (its default).
pub const PROXY_USER_HEADER: &str = "X-Forwarded-User";

/// An HTTP client that, like an authenticating proxy, names a user on every request
/// (`console:observer` for reads; the command and click helpers name their own). The demo's
/// console ignores the header.
pub fn proxy_client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(PROXY_USER_HEADER, reqwest::header::HeaderValue::from_static("observer"));
    reqwest::Client::builder().default_headers(h).build().expect("HTTP client")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running `runbot`. Dropping it kills the process (a failed assertion must not leave one
/// running) and, when the test is failing, prints the end of its log.
pub struct Runbot {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    log: PathBuf,
}

impl Runbot {
    /// `runbot demo --listen 127.0.0.1:<free port> --state-dir <state_dir>`; logs go to `log`.
    pub async fn demo(state_dir: &Path, log: &Path) -> Runbot {
        let port = free_port();
        let args: Vec<OsString> = vec!["demo".into(), "--listen".into(), format!("127.0.0.1:{port}").into(), "--state-dir".into(), state_dir.into()];
        Self::spawn(args, port, log).await
    }

    /// `runbot serve --config <config>`, which must listen on `port`; logs go to `log`.
    pub async fn serve(config: &Path, port: u16, log: &Path) -> Runbot {
        Self::spawn(vec!["serve".into(), "--config".into(), config.into()], port, log).await
    }

    async fn spawn(args: Vec<OsString>, port: u16, log: &Path) -> Runbot {
        Self::spawn_with(args, &[], port, log).await
    }

    /// Runs `runbot <args>` with extra environment `env` (e.g. secrets), which must listen on
    /// `port`; logs go to `log`.
    pub async fn spawn_with(args: Vec<OsString>, env: &[(&str, &str)], port: u16, log: &Path) -> Runbot {
        let log_file = std::fs::File::create(log).expect("create log file");
        let child = Command::new(BIN)
            .args(&args)
            .env("RUNBOT_LOG", "info,sqlx=warn")
            .env_remove("RUNBOT_LOG_JSON")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start runbot");
        let mut bot = Runbot { child, base: format!("http://127.0.0.1:{port}"), http: proxy_client(), log: log.to_path_buf() };
        let t = Instant::now();
        loop {
            if let Ok(r) = bot.http.get(bot.url("/healthz")).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = bot.child.try_wait() {
                panic!("runbot {args:?} exited before serving ({status}):\n{}", bot.log_text());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "runbot did not come up on port {port}:\n{}", bot.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bot
    }

    /// Waits for the process to exit (after a signal), at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) {
        let t = Instant::now();
        while self.child.try_wait().expect("wait").is_none() {
            assert!(t.elapsed() < within, "runbot did not exit within {within:?}:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).timeout(REQUEST_TIMEOUT).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POSTs JSON to `/console/api/<api>` and returns the raw response.
    pub async fn post_raw(&self, api: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/console/api/{api}")))
            .json(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {api}: {e}"))
    }

    /// POSTs as the body's `identity`: under `[console] auth = "proxy"` (with the test as the
    /// trusted proxy) through the proxy's user header; the demo's picker reads the body.
    async fn post_ok(&self, api: &str, body: Value) -> Value {
        let user = body["identity"].as_str().and_then(|i| i.strip_prefix("console:")).unwrap_or_default().to_string();
        let r = self
            .http
            .post(self.url(&format!("/console/api/{api}")))
            .header(PROXY_USER_HEADER, user)
            .json(&body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {api}: {e}"));
        let status = r.status();
        let text = r.text().await.expect("response body");
        assert!(status.is_success(), "POST {api} {body}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {api}: not JSON ({e}): {text}"))
    }

    /// Sends a command as `who` in `channel`; returns the reply message.
    pub async fn command(&self, who: &str, channel: &str, text: &str) -> Value {
        let r = self.post_ok("command", json!({"identity": who, "channel": channel, "text": text})).await;
        r["reply"].clone()
    }

    /// Clicks `button` (as found in a message's `buttons`) on console message `message`.
    pub async fn click(&self, who: &str, message: &Value, button: &Value) -> Value {
        let body = json!({
            "identity": who,
            "channel": message["channel"],
            "message_id": message["id"],
            "action_id": button["action_id"],
            "value": button["value"],
        });
        self.post_ok("action", body).await["reply"].clone()
    }

    /// Messages of a console channel, oldest first.
    pub async fn messages(&self, channel: &str) -> Vec<Value> {
        let v: Value = self.get(&format!("/console/api/messages?channel={channel}")).await.json().await.expect("messages JSON");
        v["messages"].as_array().cloned().unwrap_or_default()
    }

    /// The status message of an execution in `channel` (top level, title starting with its id).
    pub async fn status(&self, channel: &str, exec: &str) -> Option<Value> {
        let prefix = format!("{exec} ");
        self.messages(channel)
            .await
            .into_iter()
            .find(|m| m["thread"].is_null() && m["message"]["title"].as_str().is_some_and(|t| t.starts_with(&prefix)))
    }

    /// Stops runbot with SIGTERM (a clean shutdown) and returns its exit status; kills it if it
    /// has not stopped within 10 s.
    pub fn terminate(self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(10))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Like [`Runbot::terminate`], with `bound` instead of 10 s.
    pub fn terminate_within(mut self, bound: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for runbot") {
                return status;
            }
            assert!(t.elapsed() < bound, "runbot did not stop within {bound:?} of SIGTERM:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Runbot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!("--- runbot log (last {} lines) ---\n{}", tail.len(), tail.join("\n"));
        }
    }
}

/// The console's SSE stream (`GET /console/events`), read as raw bytes and parsed by hand.
pub struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
    event: String,
    data: String,
}

impl Events {
    /// Connects; once this returns, the server has subscribed this client to every post and edit.
    pub async fn connect(bot: &Runbot) -> Events {
        let resp = bot.http.get(bot.url("/console/events")).send().await.expect("connect to /console/events");
        assert_eq!(resp.status(), 200, "GET /console/events");
        let ct = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(ct.starts_with("text/event-stream"), "SSE content type: {ct}");
        Events { resp, buf: Vec::new(), event: String::new(), data: String::new() }
    }

    /// The next `event: message` as JSON, or `None` if none arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8(raw).expect("SSE line is UTF-8");
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    // End of an event.
                    let event = std::mem::take(&mut self.event);
                    let data = std::mem::take(&mut self.data);
                    if !data.is_empty() && (event.is_empty() || event == "message") {
                        return Some(serde_json::from_str(&data).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data}")));
                    }
                } else if line.starts_with(':') {
                    // A comment (keep-alive).
                } else {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => self.event = value.to_string(),
                        "data" => {
                            if !self.data.is_empty() {
                                self.data.push('\n');
                            }
                            self.data.push_str(value);
                        }
                        _ => {}
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(Ok(None)) => panic!("the SSE stream ended"),
                Ok(Err(e)) => panic!("reading the SSE stream: {e}"),
                Err(_) => return None,
            }
        }
    }
}

/// Polls `f` every 100 ms until it holds; fails the test after `secs` seconds.
pub async fn until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The button with `action_id` on a console message, if it has one.
pub fn button(message: &Value, action_id: &str) -> Option<Value> {
    message["message"]["buttons"].as_array()?.iter().find(|b| b["action_id"] == action_id).cloned()
}

/// The text of a reply or message body (`{"text": ..}`).
pub fn text(message: &Value) -> &str {
    message["text"].as_str().unwrap_or("")
}

/// Writes a `runbot serve` config to `dir/runbot.toml` and returns its path: listening on
/// `port`, the SQLite store in `dir`, runbooks from `dir/runbooks.toml`, `sre` (alice, bob)
/// approving everything, the console behind this test as its trusted proxy (history in
/// `console.jsonl`). `engine` adds keys to `[engine]`; `rest` adds sections.
pub fn serve_config(dir: &Path, port: u16, instance: &str, engine: &str, rest: &str) -> PathBuf {
    let d = dir.display();
    let path = dir.join("runbot.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{d}/state.db"
[engine]
instance = "{instance}"
runbooks = "runbooks.toml"
update_interval_ms = 100
{engine}
[groups]
sre = ["console:alice", "console:bob"]
[[approvals]]
approvers = ["sre"]
[console]
auth = "proxy"
trusted_proxies = ["127.0.0.1"]
history = "console.jsonl"
{rest}
"#
    );
    std::fs::write(&path, text).expect("write config");
    path
}
