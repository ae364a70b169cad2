//! The Socket Mode side of the fake: a WebSocket listener for the URLs apps.connections.open
//! hands out. It greets with `hello`, forwards envelopes queued by the test, and records the
//! acks (`{"envelope_id": …}`) the client sends back.

use super::Inner;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Ws;

pub(super) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    while let Ok((stream, _)) = listener.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
            let (mut tx, mut rx) = ws.split();
            let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
            let hello = json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0RUNBOT"}, "debug_info": {"host": "fake-slack"}});
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
