//! The Socket Mode side of the fake: a WebSocket listener for the URLs apps.connections.open
//! hands out. It greets with `hello`, forwards envelopes queued by the test, and records the
//! acks (`{"envelope_id": …}`) the client sends back. Made silent ([`super::FakeSlack::socket_silence`])
//! it keeps its connections open but neither reads nor writes — no hello, no pong — like a
//! half-open connection to a Slack that went away.

use super::Inner;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Ws;

pub(super) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    while let Ok((stream, _)) = listener.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
            if inner.with(|s| s.socket_silent) {
                return hold(ws).await;
            }
            let (mut tx, mut rx) = ws.split();
            let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
            let hello =
                json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0RUNBOT"}, "debug_info": {"host": "fake-slack"}});
            if tx.send(Ws::Text(hello.to_string().into())).await.is_err() {
                return;
            }
            inner.with(|s| {
                s.socket = Some(out_tx);
                s.socket_connections += 1;
            });
            loop {
                tokio::select! {
                    out = out_rx.recv() => match out {
                        Some(frame) if frame == SILENT => return hold(tx.reunite(rx).expect("the halves of one socket")).await,
                        Some(frame) => {
                            let disconnect = frame.contains("\"disconnect\"");
                            if tx.send(Ws::Text(frame.into())).await.is_err() || disconnect {
                                break;
                            }
                        }
                        None => break,
                    },
                    msg = rx.next() => match msg {
                        Some(Ok(Ws::Text(t))) => {
                            if let Ok(v) = serde_json::from_str::<Value>(&t)
                                && let Some(id) = v["envelope_id"].as_str()
                            {
                                let id = id.to_string();
                                inner.with(|s| {
                                    s.acks.insert(id, v.clone());
                                });
                            }
                        }
                        Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
    }
}

/// Sent on a connection's queue: from now on it says nothing.
pub(super) const SILENT: &str = "\u{0}silent";

/// Keeps the socket open without reading or writing it (not even a pong) for as long as the
/// fake runs.
async fn hold<S>(ws: S) {
    let _open = ws;
    std::future::pending::<()>().await
}
