//! The Gateway side of the fake Discord: a WebSocket listener on loopback for the URL that
//! `GET /gateway/bot` hands out (`ws://127.0.0.1:PORT`), speaking Gateway v10 JSON as far as a
//! bot receiving interactions needs it.
//!
//! # Faithful
//! - HELLO (op 10, `heartbeat_interval`) on connect; heartbeats (op 1) acknowledged with op 11
//!   (unless told not to, [`FakeDiscord::gateway_ack_heartbeats`]); a heartbeat request is not
//!   sent.
//! - IDENTIFY (op 2) with the bot token (no `Bot ` prefix) → READY (op 0, `s` 1, `session_id`,
//!   `resume_gateway_url`, the bot user, the application); a wrong token closes with 4004
//!   `Authentication failed.`; a second IDENTIFY on one connection closes with 4005; a payload
//!   before IDENTIFY closes with 4003 `Not authenticated.`.
//! - RESUME (op 6) of a known session → the dispatches after the given `seq` replayed, then
//!   RESUMED; an unknown session or a wrong token → INVALID_SESSION (op 9, `d: false`).
//! - Dispatches carry increasing `s` per session; INTERACTION_CREATE's `d` is the interaction
//!   object, exactly the body the HTTP endpoint would receive.
//! - RECONNECT (op 7) and INVALID_SESSION (op 9) on demand; any close code on demand (e.g.
//!   4014 disallowed intents).
//!
//! # Simplified
//! - No zlib/etf, no sharding, no presence, no rate limit on gateway sends, no identify
//!   concurrency limit; a client that stops heartbeating is not disconnected.

use super::{FakeDiscord, Inner, Interaction};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the server sends on a connection.
enum Out {
    Text(String),
    Close(u16, String),
}

struct Session {
    /// The last sequence number used.
    seq: u64,
    /// Every dispatch sent, for RESUME.
    sent: Vec<(u64, Value)>,
    /// The connection it lives on now.
    conn: Option<u64>,
}

struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    session: Option<String>,
}

/// The gateway's state (inside [`Inner`]).
pub(crate) struct Gateway {
    pub url: String,
    heartbeat_ms: u64,
    ack: bool,
    next_conn: u64,
    next_session: u64,
    sessions: HashMap<String, Session>,
    conns: HashMap<u64, Conn>,
    stats: GatewayStats,
}

/// What happened on the gateway, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub connections: u32,
    pub identifies: u32,
    pub resumes: u32,
    /// RESUMEs answered with RESUMED (the others got INVALID_SESSION).
    pub resumed: u32,
    pub heartbeats: u32,
    /// Identify attempts refused with 4004.
    pub auth_failures: u32,
    /// Close codes the clients sent.
    pub client_closes: Vec<u16>,
    /// The `seq` of each heartbeat received (`None` for null).
    pub heartbeat_seqs: Vec<Option<u64>>,
}

impl Gateway {
    pub(crate) fn new() -> Gateway {
        Gateway {
            url: String::new(),
            heartbeat_ms: 41_250,
            ack: true,
            next_conn: 0,
            next_session: 0,
            sessions: HashMap::new(),
            conns: HashMap::new(),
            stats: GatewayStats::default(),
        }
    }

    /// Sends a dispatch on a session (live or not: a resumed client gets it replayed).
    fn dispatch(&mut self, session: &str, t: &str, d: Value) {
        let Some(s) = self.sessions.get_mut(session) else { return };
        s.seq += 1;
        let frame = json!({"op": 0, "t": t, "s": s.seq, "d": d});
        s.sent.push((s.seq, frame.clone()));
        if let Some(c) = s.conn.and_then(|c| self.conns.get(&c)) {
            let _ = c.tx.send(Out::Text(frame.to_string()));
        }
    }

    fn live(&self) -> Vec<&Conn> {
        self.conns.values().filter(|c| c.session.is_some()).collect()
    }
}

/// The `GET /gateway/bot` answer.
pub(super) fn bot_answer(inner: &Inner) -> Value {
    let url = inner.with(|s| s.gateway.url.clone());
    json!({"url": url, "shards": 1, "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}})
}

pub(super) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    while let Ok((stream, _)) = listener.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
            connection(ws, inner).await;
        });
    }
}

async fn connection(ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, inner: Arc<Inner>) {
    let (mut tx, mut rx) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let (id, interval) = inner.with(|s| {
        let g = &mut s.gateway;
        g.next_conn += 1;
        g.stats.connections += 1;
        g.conns.insert(g.next_conn, Conn { tx: out_tx.clone(), session: None });
        (g.next_conn, g.heartbeat_ms)
    });
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": interval}});
    if tx.send(Ws::Text(hello.to_string().into())).await.is_ok() {
        loop {
            tokio::select! {
                out = out_rx.recv() => match out {
                    Some(Out::Text(t)) => if tx.send(Ws::Text(t.into())).await.is_err() { break },
                    Some(Out::Close(code, reason)) => {
                        let _ = tx.send(Ws::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))).await;
                        break;
                    }
                    None => break,
                },
                msg = rx.next() => match msg {
                    Some(Ok(Ws::Text(t))) => on_payload(&inner, id, &t),
                    Some(Ok(Ws::Close(f))) => {
                        let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                        inner.with(|s| s.gateway.stats.client_closes.push(code));
                        break;
                    }
                    None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    inner.with(|s| {
        let g = &mut s.gateway;
        if let Some(c) = g.conns.remove(&id)
            && let Some(sess) = c.session.and_then(|sid| g.sessions.get_mut(&sid))
            && sess.conn == Some(id)
        {
            sess.conn = None;
        }
    });
}

fn on_payload(inner: &Arc<Inner>, conn: u64, text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let token_ok = |d: &Value| d["token"].as_str() == Some(inner.bot_token.as_str());
    let bot_user = inner.bot_user.clone();
    let app = inner.app_id.clone();
    inner.with(|s| {
        let g = &mut s.gateway;
        let Some(c) = g.conns.get(&conn) else { return };
        let tx = c.tx.clone();
        let identified = c.session.is_some();
        match v["op"].as_u64() {
            Some(1) => {
                g.stats.heartbeats += 1;
                g.stats.heartbeat_seqs.push(v["d"].as_u64());
                if g.ack {
                    let _ = tx.send(Out::Text(json!({"op": 11}).to_string()));
                }
            }
            Some(2) => {
                g.stats.identifies += 1;
                if identified {
                    let _ = tx.send(Out::Close(4005, "Already authenticated.".into()));
                    return;
                }
                if !token_ok(&v["d"]) {
                    g.stats.auth_failures += 1;
                    let _ = tx.send(Out::Close(4004, "Authentication failed.".into()));
                    return;
                }
                g.next_session += 1;
                let sid = format!("fake-session-{:04}", g.next_session);
                g.sessions.insert(sid.clone(), Session { seq: 0, sent: Vec::new(), conn: Some(conn) });
                if let Some(c) = g.conns.get_mut(&conn) {
                    c.session = Some(sid.clone());
                }
                let ready = json!({
                    "v": 10, "user": bot_user, "guilds": [], "session_id": sid, "resume_gateway_url": g.url,
                    "shard": [0, 1], "application": {"id": app, "flags": 0}
                });
                g.dispatch(&sid, "READY", ready);
            }
            Some(6) => {
                g.stats.resumes += 1;
                let d = &v["d"];
                let sid = d["session_id"].as_str().unwrap_or("").to_string();
                let after = d["seq"].as_u64().unwrap_or(0);
                if !token_ok(d) || !g.sessions.contains_key(&sid) {
                    let _ = tx.send(Out::Text(json!({"op": 9, "d": false}).to_string()));
                    return;
                }
                g.stats.resumed += 1;
                if let Some(c) = g.conns.get_mut(&conn) {
                    c.session = Some(sid.clone());
                }
                let Some(sess) = g.sessions.get_mut(&sid) else { return };
                sess.conn = Some(conn);
                for (_, f) in sess.sent.iter().filter(|(n, _)| *n > after) {
                    let _ = tx.send(Out::Text(f.to_string()));
                }
                g.dispatch(&sid, "RESUMED", Value::Null);
            }
            _ if !identified => {
                let _ = tx.send(Out::Close(4003, "Not authenticated.".into()));
            }
            _ => {
                let _ = tx.send(Out::Close(4002, "Error while decoding payload.".into()));
            }
        }
    });
}

/// Driving the gateway from tests.
impl FakeDiscord {
    /// The gateway's WebSocket URL (`ws://127.0.0.1:PORT`), as `GET /gateway/bot` gives it.
    pub fn gateway_url(&self) -> String {
        self.inner.with(|s| s.gateway.url.clone())
    }
    /// The `heartbeat_interval` HELLO announces to new connections (Discord: 41250 ms).
    pub fn set_heartbeat_interval(&self, ms: u64) {
        self.inner.with(|s| s.gateway.heartbeat_ms = ms.max(1));
    }
    /// Whether heartbeats are acknowledged (op 11); `false` makes the connection a zombie.
    pub fn gateway_ack_heartbeats(&self, ack: bool) {
        self.inner.with(|s| s.gateway.ack = ack);
    }
    pub fn gateway_stats(&self) -> GatewayStats {
        self.inner.with(|s| s.gateway.stats.clone())
    }
    /// Identified connections open now.
    pub fn gateway_sessions_live(&self) -> usize {
        self.inner.with(|s| s.gateway.live().len())
    }
    /// Sends `interaction` as INTERACTION_CREATE on every session (delivered now when
    /// connected, on RESUME otherwise); returns how many sessions it went to.
    pub fn gateway_dispatch(&self, interaction: &Interaction) -> usize {
        let d = interaction.json();
        self.inner.with(|s| {
            let g = &mut s.gateway;
            let ids: Vec<String> = g.sessions.keys().cloned().collect();
            for sid in &ids {
                g.dispatch(sid, "INTERACTION_CREATE", d.clone());
            }
            ids.len()
        })
    }
    /// RECONNECT (op 7) to every connected client.
    pub fn gateway_reconnect(&self) {
        self.send_all(|| Out::Text(json!({"op": 7, "d": null}).to_string()));
    }
    /// INVALID_SESSION (op 9) to every connected client; not `resumable` also forgets the
    /// sessions (a RESUME then fails).
    pub fn gateway_invalid_session(&self, resumable: bool) {
        self.send_all(|| Out::Text(json!({"op": 9, "d": resumable}).to_string()));
        if !resumable {
            self.inner.with(|s| s.gateway.sessions.clear());
        }
    }
    /// Closes every connection with `code` (e.g. 4014 Disallowed intent(s)).
    pub fn gateway_close(&self, code: u16, reason: &str) {
        let reason = reason.to_string();
        self.send_all(move || Out::Close(code, reason.clone()));
    }
    fn send_all(&self, f: impl Fn() -> Out) {
        self.inner.with(|s| {
            for c in s.gateway.conns.values() {
                let _ = c.tx.send(f());
            }
        });
    }
}
