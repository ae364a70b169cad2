//! The HTTP transport: `POST /discord/interactions`, the application's Interactions Endpoint
//! URL. The Ed25519 signature and the ±5-minute timestamp are checked on the raw body before
//! anything is parsed (401 and a metric otherwise — Discord itself sends bad signatures to
//! check this); the verified interaction goes to [`DiscordState::handle_interaction`] and its
//! initial response is the response body.

use super::DiscordState;
use super::verify::Verifier;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::sync::atomic::Ordering;

/// Interactions are small; a component interaction carries its message (≤ 2000 characters,
/// an embed, five rows of buttons).
const MAX_BODY: usize = 1 << 20;

/// The route, verifying with `verifier`.
pub fn router(state: DiscordState, verifier: Verifier) -> Router {
    Router::new().route("/discord/interactions", post(interactions)).layer(DefaultBodyLimit::max(MAX_BODY)).with_state((state, verifier))
}

async fn interactions(State((state, verifier)): State<(DiscordState, Verifier)>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Err(r) = verifier.verify(h("x-signature-ed25519"), h("x-signature-timestamp"), &body, chrono::Utc::now().timestamp()) {
        state.metrics.rejected.count(r);
        tracing::warn!(reason = r.as_str(), "Discord interaction refused: {r}");
        return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(payload) if payload.is_object() => Json(state.handle_interaction(&payload).await).into_response(),
        _ => {
            state.metrics.unreadable.fetch_add(1, Ordering::Relaxed);
            (StatusCode::BAD_REQUEST, "not an interaction").into_response()
        }
    }
}
