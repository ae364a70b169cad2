//! The Socket Mode transport: `apps.connections.open` with the app-level token (through the
//! same Web API client and base URL), a WebSocket to the URL it returns, and for every
//! envelope the same handler as the HTTP routes, then `{"envelope_id": …}` as the ack.
//! Reconnects with backoff when Slack says `disconnect` or the connection drops.

use super::inbound::{Ack, CommandPayload};
use super::SlackState;
use futures::{SinkExt, StreamExt};
use runbot_commands::config::Secret;
use serde_json::{json, Value};
use slack_morphism::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as Ws;

/// A running Socket Mode client; [`SocketMode::shutdown`] closes it.
pub struct SocketMode {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    connected: Arc<AtomicBool>,
}

enum End {
    Stop,
    Reconnect,
}

impl SocketMode {
    pub fn spawn(state: SlackState, app_token: Secret) -> SocketMode {
        let (stop, rx) = watch::channel(false);
        let connected = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(state, app_token, rx, connected.clone()));
        SocketMode { stop, task, connected }
    }

    /// Whether the WebSocket to Slack is open right now (for `/readyz`).
    pub fn connected(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run(state: SlackState, app_token: Secret, mut stop: watch::Receiver<bool>, connected: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let ended = connect_once(&state, &app_token, &mut stop, &connected).await;
        connected.store(false, Ordering::Relaxed);
        match ended {
            Ok(End::Stop) => return,
            Ok(End::Reconnect) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Slack Socket Mode connection failed");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

async fn connect_once(state: &SlackState, app_token: &Secret, stop: &mut watch::Receiver<bool>, connected: &AtomicBool) -> Result<End, String> {
    let token = SlackApiToken::new(app_token.expose().to_string().into());
    let open = state
        .chat
        .client()
        .open_session(&token)
        .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
        .await
        .map_err(|e| format!("apps.connections.open: {}", super::chat::chat_error(e)))?;
    let url = open.url.0.to_string();
    // The URL carries a ticket: log only its host.
    let host = open.url.0.host_str().unwrap_or("").to_string();
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| format!("connecting to {host}: {e}"))?;
    state.metrics.socket_connections.fetch_add(1, Ordering::Relaxed);
    connected.store(true, Ordering::Relaxed);
    tracing::info!(host, "Slack Socket Mode connected");
    let (mut tx, mut rx) = ws.split();
    loop {
        let frame = tokio::select! {
            f = rx.next() => f,
            _ = stop.changed() => {
                let _ = tx.send(Ws::Close(None)).await;
                return Ok(End::Stop);
            }
        };
        let text = match frame {
            Some(Ok(Ws::Text(t))) => t.to_string(),
            Some(Ok(Ws::Ping(p))) => {
                tx.send(Ws::Pong(p)).await.map_err(|e| e.to_string())?;
                continue;
            }
            Some(Ok(Ws::Close(_))) | None => return Ok(End::Reconnect),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("socket: {e}")),
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            tracing::warn!("unreadable Socket Mode frame ignored");
            continue;
        };
        match v["type"].as_str().unwrap_or("") {
            "hello" => tracing::debug!("Socket Mode hello"),
            "disconnect" => {
                tracing::info!(reason = %v["reason"], "Slack asked to reconnect");
                return Ok(End::Reconnect);
            }
            kind @ ("slash_commands" | "interactive" | "events_api") => {
                let Some(envelope_id) = v["envelope_id"].as_str().map(str::to_string) else { continue };
                let payload = v["payload"].clone();
                let accepts = v["accepts_response_payload"].as_bool().unwrap_or(false);
                let ack = match kind {
                    "slash_commands" => match serde_json::from_value::<CommandPayload>(payload) {
                        Ok(p) => state.on_command(p, accepts).await,
                        Err(_) => Ack::Message("runbot could not read this request from Slack, so it did nothing.".into()),
                    },
                    "interactive" => state.on_interaction(payload).await,
                    _ => state.on_event(payload).await,
                };
                let mut out = json!({"envelope_id": envelope_id});
                match ack {
                    Ack::Message(t) if accepts => out["payload"] = json!({"response_type": "ephemeral", "text": t}),
                    Ack::Reply(body) => out["payload"] = body,
                    _ => {}
                }
                tx.send(Ws::Text(out.to_string().into())).await.map_err(|e| e.to_string())?;
            }
            other => tracing::debug!(kind = other, "Socket Mode frame type not handled"),
        }
    }
}
