//! The HTTP transport: three POST routes. Each verifies the v0 signature over the raw body
//! (401 and a metric otherwise) before parsing anything, then acknowledges at once with what
//! the shared handler returns.

use super::SlackState;
use super::inbound::{Ack, CommandPayload};
use super::verify::Rejection;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;

/// Slack payloads are small; a block_actions payload carries the whole message (≤ 50 blocks).
const MAX_BODY: usize = 1 << 20;

pub fn router(state: SlackState) -> Router {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactions", post(interactions))
        .route("/slack/events", post(events))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn check(state: &SlackState, headers: &HeaderMap, body: &[u8]) -> Result<(), Box<Response>> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let res = match &state.signing {
        Some(key) => key.verify(h("x-slack-signature"), h("x-slack-request-timestamp"), body, chrono::Utc::now().timestamp()),
        None => Err(Rejection::Missing),
    };
    res.map_err(|r| {
        state.metrics.rejected.count(r);
        tracing::warn!(reason = r.as_str(), "Slack request refused: signature check failed");
        Box::new((StatusCode::UNAUTHORIZED, "invalid or missing Slack request signature").into_response())
    })
}

fn reply(ack: Ack) -> Response {
    match ack {
        Ack::Empty => StatusCode::OK.into_response(),
        Ack::Message(t) => Json(json!({"response_type": "ephemeral", "text": t})).into_response(),
        Ack::Reply(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ack::Challenge(c) => ([(header::CONTENT_TYPE, "text/plain")], c).into_response(),
        Ack::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response(),
    }
}

fn unreadable(state: &SlackState) -> Response {
    state.metrics.unreadable.fetch_add(1, Ordering::Relaxed);
    // Slack shows a 200's text to the person; an error status would only say "failed".
    reply(Ack::Message("runbot could not read this request from Slack, so it did nothing.".into()))
}

/// The delivery's own key, for a command or click without a trigger: the hash of the signed
/// timestamp and body (a replay of the same signed request has the same one).
fn body_key(headers: &HeaderMap, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let ts = headers.get("x-slack-request-timestamp").map(|v| v.as_bytes()).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(ts);
    h.update(b":");
    h.update(body);
    hex::encode(&h.finalize()[..16])
}

/// A request's headers and body: the headers moved out, where axum's `HeaderMap` extractor
/// copies them (this is every ack's path); the body read by axum's `Bytes` extractor, within
/// the routes' limit.
async fn headers_and_body(req: Request) -> Result<(HeaderMap, Bytes), Response> {
    let (mut parts, body) = req.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let body = Bytes::from_request(Request::from_parts(parts, body), &()).await.map_err(IntoResponse::into_response)?;
    Ok((headers, body))
}

async fn commands(State(state): State<SlackState>, req: Request) -> Response {
    let (headers, body) = match headers_and_body(req).await {
        Ok(hb) => hb,
        Err(r) => return r,
    };
    if let Err(r) = check(&state, &headers, &body) {
        return *r;
    }
    match CommandPayload::from_form(&body) {
        Some(p) => {
            // The body's hash only when there is no trigger to go by (it is the key then).
            let fallback = (!p.trigger_id.as_deref().is_some_and(super::inbound::valid_key)).then(|| body_key(&headers, &body));
            reply(state.on_command(p, true, fallback.as_deref()).await)
        }
        None => unreadable(&state),
    }
}

#[derive(Deserialize)]
struct InteractionForm {
    payload: String,
}

async fn interactions(State(state): State<SlackState>, req: Request) -> Response {
    let (headers, body) = match headers_and_body(req).await {
        Ok(hb) => hb,
        Err(r) => return r,
    };
    if let Err(r) = check(&state, &headers, &body) {
        return *r;
    }
    let payload = serde_urlencoded::from_bytes::<InteractionForm>(&body).ok().and_then(|f| serde_json::from_str(&f.payload).ok());
    match payload {
        Some(p) => reply(state.on_interaction(p, Some(&body_key(&headers, &body))).await),
        None => unreadable(&state),
    }
}

async fn events(State(state): State<SlackState>, req: Request) -> Response {
    let (headers, body) = match headers_and_body(req).await {
        Ok(hb) => hb,
        Err(r) => return r,
    };
    if let Err(r) = check(&state, &headers, &body) {
        return *r;
    }
    match serde_json::from_slice(&body) {
        Ok(v) => reply(state.on_event(v).await),
        Err(_) => unreadable(&state),
    }
}
