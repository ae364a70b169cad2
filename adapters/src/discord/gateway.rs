//! Gateway mode (`[discord] mode = "gateway"`): a minimal Discord Gateway v10 client for
//! receiving interactions without a public HTTPS endpoint. Interactions go to the same
//! handler as `POST /discord/interactions`; their initial response is sent over REST
//! (`POST /interactions/{id}/{token}/callback`) — the gateway does not carry answers.
//!
//! The protocol, as runbot uses it:
//! - `GET /gateway/bot` (bot token, through [`DiscordChat`]'s rate-limited REST client) for
//!   the WebSocket URL; connect to `URL/?v=10&encoding=json`.
//! - HELLO (op 10) gives `heartbeat_interval`: the first heartbeat (op 1, the last sequence
//!   number) after `interval × jitter`, then every interval; each must be acknowledged (op 11)
//!   before the next is due, else the connection is a zombie: close it and resume.
//! - IDENTIFY (op 2, intents 0 — interactions need none) → READY (`session_id`,
//!   `resume_gateway_url`); later connections RESUME (op 6: token, session, last sequence) at
//!   `resume_gateway_url` and Discord replays what was missed, then RESUMED.
//! - Dispatches (op 0) carry the sequence number `s`, tracked for heartbeats and resumes;
//!   INTERACTION_CREATE goes to the handler.
//! - RECONNECT (op 7): resume on a new connection. INVALID_SESSION (op 9): `d = true` →
//!   resume, else identify again after a random 1–5 s. A heartbeat request (op 1) is answered
//!   at once.
//! - Close codes: 4004 (authentication failed) and 4010–4014 (shard, version, intents) are
//!   fatal — the client stops with an error naming the cause, it does not retry in a loop;
//!   4007 (invalid seq) and 4009 (session timed out) identify anew; anything else resumes.
//!   A 401 on `GET /gateway/bot` is fatal too (the token is wrong).
//!
//! The token is sent only in IDENTIFY/RESUME and the REST `Authorization` header; it is never
//! logged. Interaction tokens are not logged either.

use super::chat::{DiscordChat, GatewayUrlError};
use super::{Discord, DiscordState};
use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use runbot_commands::config::{DiscordConfig, DiscordMode, Secret};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What receives interactions: the interactions endpoint's handler, shared by both modes.
#[async_trait]
pub trait InteractionHandler: Send + Sync + 'static {
    /// One interaction as Discord sent it (INTERACTION_CREATE's `d`, the same JSON the
    /// endpoint receives) → the body of its initial response (`{"type": 5, …}`), or `None`
    /// when there is nothing to send.
    async fn handle(&self, interaction: Value) -> Option<Value>;
}

/// How the client behaves; [`GatewayOptions::new`] has Discord's values.
#[derive(Clone)]
pub struct GatewayOptions {
    pub token: Secret,
    /// Gateway intents. 0: interactions arrive without any.
    pub intents: u64,
    /// The random wait before identifying again after an INVALID_SESSION that cannot be
    /// resumed (Discord: 1–5 s).
    pub reidentify_wait: (Duration, Duration),
    /// How long to wait for HELLO after connecting.
    pub hello_timeout: Duration,
}

impl GatewayOptions {
    pub fn new(token: Secret) -> Self {
        GatewayOptions {
            token,
            intents: 0,
            reidentify_wait: (Duration::from_secs(1), Duration::from_secs(5)),
            hello_timeout: Duration::from_secs(20),
        }
    }
}

/// Where the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayState {
    /// Connecting, identifying or resuming.
    Connecting,
    /// READY or RESUMED received: interactions arrive.
    Connected { session: String, resumed: bool },
    /// Stopped for good, with the reason (a refused token, disallowed intents, …).
    Failed(String),
    /// Shut down.
    Stopped,
}

/// A running gateway client; [`Gateway::shutdown`] closes it.
pub struct Gateway {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    connected: Arc<AtomicBool>,
    state: watch::Receiver<GatewayState>,
}

impl Gateway {
    /// Starts the client: it connects, and reconnects (resuming when it can) until shut down
    /// or stopped by a fatal error.
    pub fn spawn(chat: Arc<DiscordChat>, opts: GatewayOptions, handler: Arc<dyn InteractionHandler>) -> Gateway {
        let (stop, stop_rx) = watch::channel(false);
        let (state_tx, state) = watch::channel(GatewayState::Connecting);
        let connected = Arc::new(AtomicBool::new(false));
        let client = Client { chat, opts, handler, connected: connected.clone(), state: state_tx, resume: None, seq: None };
        let task = tokio::spawn(client.run(stop_rx));
        Gateway { stop, task, connected, state }
    }

    /// Whether the gateway session is up right now (for `/readyz`).
    pub fn connected(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// The client's state, to watch.
    pub fn state(&self) -> watch::Receiver<GatewayState> {
        self.state.clone()
    }

    /// Waits until the client stopped by itself, and says why (it never does while it can
    /// reconnect).
    pub async fn failed(&self) -> String {
        let mut rx = self.state.clone();
        loop {
            if let GatewayState::Failed(why) = &*rx.borrow_and_update() {
                return why.clone();
            }
            if rx.changed().await.is_err() {
                return "the Discord gateway client ended".into();
            }
        }
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A session that can be resumed.
#[derive(Debug, Clone)]
struct Resume {
    session: String,
    url: String,
}

/// How one connection ended.
#[derive(Debug)]
enum End {
    Stop,
    /// Connect again and RESUME (when there is a session).
    Resume,
    /// Forget the session; IDENTIFY again after the wait.
    Reidentify(Duration),
    Fatal(String),
}

struct Client {
    chat: Arc<DiscordChat>,
    opts: GatewayOptions,
    handler: Arc<dyn InteractionHandler>,
    connected: Arc<AtomicBool>,
    state: watch::Sender<GatewayState>,
    resume: Option<Resume>,
    /// The last sequence number received (for heartbeats and RESUME).
    seq: Option<u64>,
}

/// A fraction in [0, 1) for jitter; no cryptographic quality needed.
fn jitter() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mixed = (u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    (mixed % 10_000) as f64 / 10_000.0
}

fn between((lo, hi): (Duration, Duration)) -> Duration {
    lo + hi.saturating_sub(lo).mul_f64(jitter())
}

/// The URL to connect to: Discord's, with the version and encoding.
fn ws_url(base: &str) -> String {
    format!("{}/?v=10&encoding=json", base.trim_end_matches('/'))
}

/// What a close code means for the client.
fn on_close(code: u16, reason: &str) -> End {
    let fatal = |what: &str| {
        End::Fatal(format!(
            "Discord closed the gateway with {code} ({what}){}",
            if reason.is_empty() { String::new() } else { format!(": {reason}") }
        ))
    };
    match code {
        4004 => fatal("authentication failed — check [discord] bot_token"),
        4010 => fatal("invalid shard"),
        4011 => fatal("sharding required"),
        4012 => fatal("invalid API version"),
        4013 => fatal("invalid intents"),
        4014 => fatal("disallowed intents — enable them for the application in the Developer Portal"),
        4007 | 4009 => End::Reidentify(Duration::ZERO),
        _ => End::Resume,
    }
}

impl Client {
    fn set(&self, s: GatewayState) {
        let _ = self.state.send(s);
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = crate::backoff::Reconnect::new(Duration::from_secs(60));
        loop {
            let ended = self.connect_once(&mut stop).await;
            // A session that came up earns an immediate reconnect; a connection that never got
            // READY/RESUMED waits like a failure, so a server closing at once is no busy loop.
            let was_up = self.connected.swap(false, Ordering::Relaxed);
            let wait = match ended {
                Ok(End::Stop) => break,
                Ok(End::Resume) if was_up => {
                    backoff.reset();
                    Duration::ZERO
                }
                Ok(End::Resume) => backoff.next_wait(),
                Ok(End::Reidentify(wait)) => {
                    self.resume = None;
                    self.seq = None;
                    wait
                }
                Ok(End::Fatal(why)) => {
                    self.connected.store(false, Ordering::Relaxed);
                    tracing::error!(error = %why, "Discord gateway stopped; interactions will not arrive until runbot is restarted with a fixed configuration");
                    self.set(GatewayState::Failed(why));
                    return;
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "Discord gateway connection failed");
                    wait
                }
            };
            self.connected.store(false, Ordering::Relaxed);
            self.set(GatewayState::Connecting);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        self.connected.store(false, Ordering::Relaxed);
        self.set(GatewayState::Stopped);
    }

    async fn connect_once(&mut self, stop: &mut watch::Receiver<bool>) -> Result<End, String> {
        let base = match &self.resume {
            Some(r) => r.url.clone(),
            None => match self.chat.gateway_url().await {
                Ok(u) => u,
                Err(GatewayUrlError::Unauthorized(why)) => return Ok(End::Fatal(why)),
                Err(GatewayUrlError::Other(why)) => return Err(why),
            },
        };
        let url = ws_url(&base);
        let host = url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| format!("connecting to {host}: {e}"))?;
        let (mut tx, mut rx) = ws.split();

        // HELLO first.
        let hello = tokio::select! {
            h = tokio::time::timeout(self.opts.hello_timeout, rx.next()) => h.map_err(|_| format!("no HELLO from {host} within {:?}", self.opts.hello_timeout))?,
            _ = stop.changed() => return Ok(End::Stop),
        };
        let interval = match hello {
            Some(Ok(Ws::Text(t))) => {
                let v: Value = serde_json::from_str(&t).map_err(|_| "the gateway's first frame is not JSON".to_string())?;
                match (v["op"].as_u64(), v["d"]["heartbeat_interval"].as_u64()) {
                    (Some(10), Some(ms)) if ms > 0 => Duration::from_millis(ms),
                    _ => return Err(format!("the gateway's first frame is not HELLO (op {})", v["op"])),
                }
            }
            Some(Ok(Ws::Close(f))) => return Ok(f.map(|f| on_close(f.code.into(), f.reason.as_str())).unwrap_or(End::Resume)),
            Some(Ok(other)) => return Err(format!("unexpected first gateway frame: {}", kind_of(&other))),
            Some(Err(e)) => return Err(format!("gateway: {e}")),
            None => return Err("the gateway closed before HELLO".into()),
        };

        let token = self.opts.token.expose().trim_start_matches("Bot ").to_string();
        let first = match (&self.resume, self.seq) {
            (Some(r), Some(seq)) => {
                tracing::info!(host, "Discord gateway: resuming");
                json!({"op": 6, "d": {"token": token, "session_id": r.session, "seq": seq}})
            }
            _ => {
                self.resume = None;
                json!({"op": 2, "d": {"token": token, "intents": self.opts.intents, "properties": {"os": std::env::consts::OS, "browser": "runbot", "device": "runbot"}}})
            }
        };
        tx.send(Ws::Text(first.to_string().into())).await.map_err(|e| format!("gateway: {e}"))?;

        let mut acked = true;
        let mut next_beat = Instant::now() + interval.mul_f64(jitter());
        loop {
            let frame = tokio::select! {
                _ = tokio::time::sleep_until(next_beat) => {
                    if !acked {
                        tracing::warn!(interval_ms = interval.as_millis() as u64, "Discord gateway: heartbeat not acknowledged; reconnecting to resume");
                        close(&mut tx, 4000, "heartbeat not acknowledged").await;
                        return Ok(End::Resume);
                    }
                    tx.send(Ws::Text(json!({"op": 1, "d": self.seq}).to_string().into())).await.map_err(|e| format!("gateway: {e}"))?;
                    acked = false;
                    next_beat += interval;
                    continue;
                }
                _ = stop.changed() => {
                    // 1000 ends the session (Discord shows the bot offline at once).
                    close(&mut tx, 1000, "runbot is shutting down").await;
                    return Ok(End::Stop);
                }
                f = rx.next() => f,
            };
            let text = match frame {
                Some(Ok(Ws::Text(t))) => t,
                Some(Ok(Ws::Ping(p))) => {
                    tx.send(Ws::Pong(p)).await.map_err(|e| format!("gateway: {e}"))?;
                    continue;
                }
                Some(Ok(Ws::Close(f))) => {
                    let (code, reason) = f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                    tracing::info!(code, reason, "Discord gateway closed the connection");
                    return Ok(on_close(code, &reason));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("gateway: {e}")),
                None => return Ok(End::Resume),
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                tracing::warn!("unreadable Discord gateway frame ignored");
                continue;
            };
            match v["op"].as_u64() {
                Some(0) => {
                    if let Some(s) = v["s"].as_u64() {
                        self.seq = Some(self.seq.map_or(s, |old| old.max(s)));
                    }
                    self.dispatch(v["t"].as_str().unwrap_or(""), &v["d"], &base);
                }
                Some(1) => {
                    tx.send(Ws::Text(json!({"op": 1, "d": self.seq}).to_string().into())).await.map_err(|e| format!("gateway: {e}"))?;
                }
                Some(7) => {
                    tracing::info!("Discord asked to reconnect");
                    close(&mut tx, 4000, "reconnect requested").await;
                    return Ok(End::Resume);
                }
                Some(9) => {
                    let resumable = v["d"].as_bool() == Some(true) && self.resume.is_some();
                    tracing::info!(resumable, "Discord gateway: invalid session");
                    close(&mut tx, 4000, "invalid session").await;
                    return Ok(if resumable { End::Resume } else { End::Reidentify(between(self.opts.reidentify_wait)) });
                }
                Some(11) => acked = true,
                Some(10) => {}
                other => tracing::debug!(op = ?other, "Discord gateway opcode not handled"),
            }
        }
    }

    fn dispatch(&mut self, t: &str, d: &Value, base: &str) {
        match t {
            "READY" => {
                let session = d["session_id"].as_str().unwrap_or("").to_string();
                let url = d["resume_gateway_url"].as_str().filter(|u| !u.is_empty()).unwrap_or(base).to_string();
                tracing::info!(user = %d["user"]["username"], "Discord gateway ready");
                self.resume = (!session.is_empty()).then(|| Resume { session: session.clone(), url });
                self.connected.store(true, Ordering::Relaxed);
                self.set(GatewayState::Connected { session, resumed: false });
            }
            "RESUMED" => {
                tracing::info!("Discord gateway resumed");
                self.connected.store(true, Ordering::Relaxed);
                let session = self.resume.as_ref().map(|r| r.session.clone()).unwrap_or_default();
                self.set(GatewayState::Connected { session, resumed: true });
            }
            "INTERACTION_CREATE" => {
                let (Some(id), Some(token)) = (d["id"].as_str().map(str::to_string), d["token"].as_str().map(str::to_string)) else {
                    tracing::warn!("INTERACTION_CREATE without id or token ignored");
                    return;
                };
                let chat = self.chat.clone();
                let handler = self.handler.clone();
                let interaction = d.clone();
                // Answered concurrently: the heartbeat must not wait for the engine.
                tokio::spawn(async move {
                    let Some(response) = handler.handle(interaction).await else { return };
                    if let Err(e) = chat.interaction_callback(&id, &token, &response).await {
                        tracing::warn!(interaction = %id, error = %e, "answering a gateway interaction failed");
                    }
                });
            }
            _ => {}
        }
    }
}

async fn close<S>(tx: &mut S, code: u16, reason: &str)
where
    S: futures::Sink<Ws> + Unpin,
{
    let _ = tx.send(Ws::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.to_string().into() }))).await;
    let _ = tx.close().await;
}

fn kind_of(m: &Ws) -> &'static str {
    match m {
        Ws::Text(_) => "text",
        Ws::Binary(_) => "binary",
        Ws::Ping(_) => "ping",
        Ws::Pong(_) => "pong",
        Ws::Close(_) => "close",
        Ws::Frame(_) => "frame",
    }
}

/// The interactions endpoint's handler serves the gateway too.
#[async_trait]
impl InteractionHandler for DiscordState {
    async fn handle(&self, interaction: Value) -> Option<Value> {
        Some(self.handle_interaction(&interaction).await)
    }
}

impl Discord {
    /// In mode `gateway`, starts the gateway client feeding [`DiscordState::handle_interaction`];
    /// `None` in mode `http`. The bot token is resolved again from `cfg` (never kept in the
    /// adapter outside the REST client).
    pub fn gateway(
        &self,
        cfg: &DiscordConfig,
        pipeline: &Arc<crate::inbound::Pipeline>,
    ) -> Result<Option<Gateway>, runbot_commands::setup::SetupError> {
        if self.mode != DiscordMode::Gateway {
            return Ok(None);
        }
        let token = runbot_commands::setup::Doing::doing(cfg.bot_token.resolve(), "discord.bot_token")?;
        let handler: Arc<dyn InteractionHandler> = Arc::new(self.state(pipeline));
        Ok(Some(Gateway::spawn(self.chat.clone(), GatewayOptions::new(token), handler)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_classified() {
        assert!(matches!(on_close(4004, "Authentication failed."), End::Fatal(m) if m.contains("4004") && m.contains("bot_token")));
        for c in 4010..=4014 {
            assert!(matches!(on_close(c, ""), End::Fatal(_)), "{c}");
        }
        assert!(matches!(on_close(4007, ""), End::Reidentify(_)));
        assert!(matches!(on_close(4009, ""), End::Reidentify(_)));
        for c in [1000, 1001, 1006, 4000, 4001, 4002, 4003, 4005, 4008] {
            assert!(matches!(on_close(c, ""), End::Resume), "{c}");
        }
    }

    #[test]
    fn urls_and_jitter() {
        assert_eq!(ws_url("wss://gateway.discord.gg"), "wss://gateway.discord.gg/?v=10&encoding=json");
        assert_eq!(ws_url("ws://127.0.0.1:9/"), "ws://127.0.0.1:9/?v=10&encoding=json");
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
            let d = between((Duration::from_secs(1), Duration::from_secs(5)));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(5));
        }
    }
}
