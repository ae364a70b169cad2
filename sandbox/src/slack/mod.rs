//! A fake Slack on 127.0.0.1 speaking the real wire format: the Web API methods runbot uses
//! (`POST /api/<method>`, bearer token, JSON), response_urls (`POST /hooks/<n>`), and Socket
//! Mode (`apps.connections.open` hands out a `ws://` URL served here). It records every call,
//! checks content against Block Kit's limits (refusing with `invalid_blocks` like Slack), and
//! answers 429 + `Retry-After` when a method's rate limit is exceeded or a storm is scripted.
//!
//! Tests drive runbot through it: [`sign`] requests like Slack, [`FakeSlack::command_form`] /
//! [`FakeSlack::block_actions_form`] build payloads with real response_urls, and
//! [`FakeSlack::socket_send`] pushes envelopes over the Socket Mode connection.

use runbot_commands::setup::SetupResult;
mod api;
mod files;
pub use files::SlackFile;
mod limits;
mod socket;

pub use limits::violations;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// `v0=<hex>`: Slack's request signature over `v0:{ts}:{body}` (written independently of
/// runbot's verifier, so a test catches a bug in either).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    m.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(m.finalize().into_bytes()))
}

/// One Web API call as received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// 200 (ok or an API error in the body) or 429.
    pub status: u16,
    /// `error` of the answer, if any (`invalid_blocks`, `ratelimited`, `invalid_auth`, …).
    pub error: Option<String>,
}

/// A message in a channel, with every version it had.
#[derive(Debug, Clone)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    /// The current content (`text` + `blocks`).
    pub content: Value,
    /// Every content it had, first to last.
    pub versions: Vec<Value>,
}

impl Posted {
    /// All text of the current content (header, sections, fields, buttons, context).
    pub fn text(&self) -> String {
        content_text(&self.content)
    }
    /// `(action_id, value)` of every button.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for b in self.content["blocks"].as_array().into_iter().flatten() {
            for e in b["elements"].as_array().into_iter().flatten() {
                if e["type"] == "button" {
                    out.push((e["action_id"].as_str().unwrap_or("").to_string(), e["value"].as_str().unwrap_or("").to_string()));
                }
            }
        }
        out
    }
}

/// Every string in a content value, in order.
pub fn content_text(v: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => {
                for (k, x) in o {
                    if k != "type" && k != "style" && k != "block_id" && k != "emoji" {
                        walk(x, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut s = String::new();
    walk(&v["blocks"], &mut s);
    if s.is_empty() {
        walk(&v["text"], &mut s);
    }
    s
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    messages: Vec<Posted>,
    ephemerals: Vec<Value>,
    /// Posts to response_urls: (hook number, body).
    responses: Vec<(u64, Value)>,
    next_hook: u64,
    /// Created channels: (id, name).
    channels: Vec<(String, String)>,
    invites: Vec<(String, Vec<String>)>,
    violations: Vec<String>,
    /// Per method: at most `n` calls per `window`.
    limits: HashMap<String, (usize, Duration)>,
    recent: HashMap<String, VecDeque<Instant>>,
    /// Per method: answer the next `n` calls with 429 regardless.
    storms: HashMap<String, u32>,
    retry_after_secs: u64,
    next_ts: u64,
    next_channel: u64,
    socket: Option<mpsc::UnboundedSender<String>>,
    socket_connections: u64,
    /// Socket Mode connections neither read nor written (see [`FakeSlack::socket_silence`]).
    socket_silent: bool,
    next_envelope: u64,
    acks: HashMap<String, Value>,
    /// External uploads (`files.getUploadURLExternal` on).
    files: Vec<files::SlackFile>,
    next_file: u64,
}

pub(crate) struct Inner {
    st: Mutex<State>,
    changed: Notify,
    bot_token: String,
    app_token: String,
    base: String,
    ws_base: String,
}

impl Inner {
    /// Changes the state without waking waiters (a Web API call wakes them once it is
    /// recorded, so a test never sees a change before the call that made it).
    fn quiet<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.st.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.st.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut g);
        drop(g);
        self.changed.notify_waiters();
        out
    }
}

/// The fake Slack. Stops when dropped or with [`FakeSlack::shutdown`].
pub struct FakeSlack {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeSlack {
    /// Starts the Web API and the Socket Mode listener on free loopback ports. Requests must
    /// carry `bot_token` (Web API) or `app_token` (apps.connections.open).
    pub async fn start(bot_token: &str, app_token: &str) -> SetupResult<FakeSlack> {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (ha, wa): (SocketAddr, SocketAddr) = (http.local_addr()?, ws.local_addr()?);
        let inner = Arc::new(Inner {
            st: Mutex::new(State { retry_after_secs: 1, next_ts: 1, next_channel: 1, ..State::default() }),
            changed: Notify::new(),
            bot_token: bot_token.to_string(),
            app_token: app_token.to_string(),
            base: format!("http://{ha}"),
            ws_base: format!("ws://{wa}"),
        });
        let app = api::router(inner.clone());
        let t1 = tokio::spawn(async move {
            let _ = axum::serve(http, app).await;
        });
        let t2 = tokio::spawn(socket::serve(ws, inner.clone()));
        Ok(FakeSlack { inner, tasks: vec![t1, t2] })
    }

    /// The Web API base URL for `[slack] api_url`.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.inner.base)
    }

    pub async fn shutdown(self) {}

    /// Limits `method` to `n` calls per `window`; more get 429 + Retry-After.
    pub fn limit(&self, method: &str, n: usize, window: Duration) {
        self.inner.with(|s| {
            s.limits.insert(method.to_string(), (n, window));
        });
    }

    /// Answers the next `n` calls of `method` with 429.
    pub fn storm(&self, method: &str, n: u32) {
        self.inner.with(|s| {
            s.storms.insert(method.to_string(), n);
        });
    }

    /// The Retry-After (seconds) sent with a 429. Default 1.
    pub fn set_retry_after(&self, secs: u64) {
        self.inner.with(|s| s.retry_after_secs = secs);
    }

    /// A fresh response_url served by this fake.
    pub fn response_url(&self) -> String {
        let n = self.inner.with(|s| {
            s.next_hook += 1;
            s.next_hook
        });
        format!("{}/hooks/{n}", self.inner.base)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.with(|s| s.calls.clone())
    }
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method).collect()
    }
    /// Top-level messages and thread replies, in posting order.
    pub fn messages(&self) -> Vec<Posted> {
        self.inner.with(|s| s.messages.clone())
    }
    /// Messages of a channel that are not thread replies.
    pub fn top_level(&self, channel: &str) -> Vec<Posted> {
        self.messages().into_iter().filter(|m| m.channel == channel && m.thread_ts.is_none()).collect()
    }
    pub fn thread(&self, channel: &str, ts: &str) -> Vec<Posted> {
        self.messages().into_iter().filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(ts)).collect()
    }
    /// chat.postEphemeral bodies.
    pub fn ephemerals(&self) -> Vec<Value> {
        self.inner.with(|s| s.ephemerals.clone())
    }
    /// Bodies posted to `url` (a response_url handed out by [`FakeSlack::response_url`]).
    pub fn responses_to(&self, url: &str) -> Vec<Value> {
        let n: u64 = url.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        self.inner.with(|s| s.responses.iter().filter(|(h, _)| *h == n).map(|(_, b)| b.clone()).collect())
    }
    pub fn channels_created(&self) -> Vec<(String, String)> {
        self.inner.with(|s| s.channels.clone())
    }
    pub fn invites(&self) -> Vec<(String, Vec<String>)> {
        self.inner.with(|s| s.invites.clone())
    }
    /// Content that broke Block Kit's limits (and was refused).
    pub fn violations(&self) -> Vec<String> {
        self.inner.with(|s| s.violations.clone())
    }
    pub fn socket_connections(&self) -> u64 {
        self.inner.with(|s| s.socket_connections)
    }

    /// Waits until `f` holds (re-checked on every change; gives up after 30 s with a panic
    /// naming `what`, so a broken feature fails instead of hanging).
    pub async fn wait<T>(&self, what: &str, mut f: impl FnMut(&FakeSlack) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.inner.changed.notified();
            if let Some(v) = f(self) {
                return v;
            }
            // `f` reading the fake notifies too, so the deadline is checked on every round.
            if tokio::time::Instant::now() >= deadline || tokio::time::timeout_at(deadline, notified).await.is_err() {
                if let Some(v) = f(self) {
                    return v;
                }
                panic!("fake Slack: timed out waiting for {what}");
            }
        }
    }

    /// A slash command's form body, with a response_url of this fake.
    pub fn command_form(&self, user: &str, channel: &str, command: &str, text: &str) -> (String, String) {
        let url = self.response_url();
        let trigger = format!("{}.{}.{}", 13345224609u64, self.inner.with(|s| s.next_hook), "8088930838d88f008e0");
        let body = serde_urlencoded::to_string([
            ("token", "deprecated-verification-token"),
            ("team_id", "T0001"),
            ("team_domain", "example"),
            ("channel_id", channel),
            ("channel_name", "ops"),
            ("user_id", user),
            ("user_name", "someone"),
            ("command", command),
            ("text", text),
            ("api_app_id", "A0RUNBOT"),
            ("response_url", url.as_str()),
            ("trigger_id", trigger.as_str()),
        ])
        .unwrap_or_default();
        (body, url)
    }

    /// A block_actions payload for pressing the button `(action_id, value)` of `message`.
    pub fn block_actions(&self, user: &str, message: &Posted, action_id: &str, value: &str) -> (Value, String) {
        let url = self.response_url();
        let n = self.inner.with(|s| s.next_hook);
        let payload = json!({
            "type": "block_actions",
            "team": {"id": "T0001", "domain": "example"},
            "user": {"id": user, "username": "someone", "team_id": "T0001"},
            "api_app_id": "A0RUNBOT",
            "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel, "is_ephemeral": false},
            "trigger_id": format!("{n}.1.trigger{n}"),
            "channel": {"id": message.channel, "name": "incident"},
            "message": {"type": "message", "ts": message.ts, "text": message.content["text"], "blocks": message.content["blocks"]},
            "response_url": url,
            "actions": [{
                "type": "button", "action_id": action_id, "block_id": "runbot-actions-0",
                "text": {"type": "plain_text", "text": action_id}, "value": value,
                "action_ts": format!("{}.{n:06}", 1_700_000_000 + n),
            }],
        });
        (payload, url)
    }

    /// Sends an envelope (`slash_commands`, `interactive`, `events_api`) over the Socket Mode
    /// connection; returns its envelope id. Waits for a connection first.
    pub async fn socket_send(&self, kind: &str, payload: Value) -> String {
        self.socket_frame(kind, payload, kind != "events_api").await
    }

    /// [`FakeSlack::socket_send`] with `accepts_response_payload: false` (the ack can carry no
    /// answer).
    pub async fn socket_send_without_payload(&self, kind: &str, payload: Value) -> String {
        self.socket_frame(kind, payload, false).await
    }

    async fn socket_frame(&self, kind: &str, payload: Value, accepts: bool) -> String {
        let tx = self.wait("a Socket Mode connection", |f| f.inner.with(|s| s.socket.clone())).await;
        let id = self.inner.with(|s| {
            s.next_envelope += 1;
            format!("env-{}", s.next_envelope)
        });
        let frame =
            json!({"envelope_id": id, "type": kind, "payload": payload, "accepts_response_payload": accepts, "retry_attempt": 0, "retry_reason": ""});
        let _ = tx.send(frame.to_string());
        id
    }

    /// The ack runbot sent for an envelope.
    pub async fn socket_ack(&self, envelope_id: &str) -> Value {
        self.wait("a Socket Mode ack", |f| f.inner.with(|s| s.acks.get(envelope_id).cloned())).await
    }

    /// Makes Socket Mode go silent (`true`): the open connection and every new one stay open
    /// but get no hello, no frame and no pong — a dead peer behind a half-open connection.
    /// `false`: new connections are served again.
    pub fn socket_silence(&self, on: bool) {
        self.inner.with(|s| {
            s.socket_silent = on;
            if on && let Some(tx) = s.socket.take() {
                let _ = tx.send(socket::SILENT.to_string());
            }
        });
    }

    /// Tells the connected client to reconnect (Slack's `disconnect` frame).
    pub fn socket_disconnect(&self) {
        self.inner.with(|s| {
            if let Some(tx) = s.socket.take() {
                let _ = tx.send(json!({"type": "disconnect", "reason": "refresh_requested"}).to_string());
            }
        });
    }
}
