//! The Socket Mode transport: `apps.connections.open` with the app-level token (through the
//! same Web API client and base URL), a WebSocket to the URL it returns, and for every
//! envelope the same handler as the HTTP routes, then `{"envelope_id": …}` as the ack.
//! Reconnects with backoff when Slack says `disconnect` or the connection drops, and when it
//! goes silent: runbot pings every `socket_ping_secs`, and a connection that sent nothing (no
//! pong, no frame) for twice that long is taken as dead, so a half-open TCP connection is
//! noticed and `/readyz` says "not connected" until the new one is up.

use super::SlackState;
use super::inbound::{Ack, CommandPayload};
use futures::{SinkExt, StreamExt};
use runbot_commands::config::Secret;
use serde_json::{Value, json};
use slack_morphism::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    pub fn spawn(state: SlackState, app_token: Secret, ping: Duration) -> SocketMode {
        let (stop, rx) = watch::channel(false);
        let connected = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(state, app_token, ping, rx, connected.clone()));
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

async fn run(state: SlackState, app_token: Secret, ping: Duration, mut stop: watch::Receiver<bool>, connected: Arc<AtomicBool>) {
    let mut backoff = crate::backoff::Reconnect::new(Duration::from_secs(30));
    loop {
        let ended = connect_once(&state, &app_token, ping, &mut stop, &connected).await;
        connected.store(false, Ordering::Relaxed);
        let wait = match ended {
            Ok(End::Stop) => return,
            Ok(End::Reconnect) => {
                backoff.reset();
                backoff.next_wait()
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "Slack Socket Mode connection failed");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

async fn connect_once(
    state: &SlackState,
    app_token: &Secret,
    ping: Duration,
    stop: &mut watch::Receiver<bool>,
    connected: &AtomicBool,
) -> Result<End, String> {
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
    tracing::info!(host, "Slack Socket Mode WebSocket open; waiting for hello");
    let (mut tx, mut rx) = ws.split();
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    loop {
        let frame = tokio::select! {
            f = rx.next() => f,
            _ = pings.tick() => {
                let silent = heard.elapsed();
                if silent >= ping * 2 {
                    state.metrics.socket_dead.fetch_add(1, Ordering::Relaxed);
                    return Err(format!("nothing from {host} for {} s (no pong to runbot's pings): the connection is dead", silent.as_secs()));
                }
                // Bounded: a send stuck on a full socket is silence too.
                match tokio::time::timeout(ping, tx.send(Ws::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("socket: {e}")),
                    Err(_) => {
                        state.metrics.socket_dead.fetch_add(1, Ordering::Relaxed);
                        return Err(format!("a ping to {host} could not be sent within {} s: the connection is dead", ping.as_secs()));
                    }
                }
                continue;
            }
            _ = stop.changed() => {
                let _ = tx.send(Ws::Close(None)).await;
                return Ok(End::Stop);
            }
        };
        heard = tokio::time::Instant::now();
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
            // Connected (for `/readyz`) once Slack has said hello on it.
            "hello" => {
                connected.store(true, Ordering::Relaxed);
                tracing::info!(host, "Slack Socket Mode connected");
            }
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
                        Ok(p) => state.on_command(p, accepts, Some(&envelope_id)).await,
                        Err(_) => Ack::Message("runbot could not read this request from Slack, so it did nothing.".into()),
                    },
                    "interactive" => state.on_interaction(payload, Some(&envelope_id)).await,
                    _ => state.on_event(payload).await,
                };
                let mut out = json!({"envelope_id": envelope_id});
                match ack {
                    Ack::Message(t) if accepts => out["payload"] = json!({"response_type": "ephemeral", "text": t}),
                    Ack::Reply(body) => out["payload"] = serde_json::from_slice(&body).unwrap_or_default(),
                    _ => {}
                }
                tx.send(Ws::Text(out.to_string().into())).await.map_err(|e| e.to_string())?;
            }
            other => tracing::debug!(kind = other, "Socket Mode frame type not handled"),
        }
    }
}
