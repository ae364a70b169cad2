//! The local web console, runbot's embedded default adapter: `/console` serves one HTML page
//! (built into the binary), a small JSON API for commands and clicks, and an SSE stream of
//! message posts and edits.

mod chat;

pub use chat::{ConsoleChat, ConsoleMessage};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::Stream;
use runbot_commands::engine::{Click, Engine, Request};
use runbot_commands::model::{Identity, Origin};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

const PAGE: &str = include_str!("page.html");

#[derive(Clone)]
pub struct ConsoleState {
    pub chat: Arc<ConsoleChat>,
    pub engine: Engine,
}

/// The console routes, to be merged into runbot's HTTP server.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/api/state", get(api_state))
        .route("/console/api/messages", get(api_messages))
        .route("/console/api/command", post(api_command))
        .route("/console/api/action", post(api_action))
        .route("/console/events", get(events))
        .layer(axum::middleware::from_fn(loopback_only))
        .with_state(state)
}

/// Runs before any extractor, so a request addressed to a foreign host is refused before its
/// body is even parsed.
async fn loopback_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match local_only(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => r,
    }
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

fn identities(state: &ConsoleState) -> Vec<String> {
    let settings = state.engine.settings();
    let mut ids = settings.config.console.identities.clone();
    for members in settings.groups.values() {
        ids.extend(members.iter().filter(|m| m.starts_with("console:")).cloned());
    }
    ids.sort();
    ids.dedup();
    ids
}

async fn api_state(State(state): State<ConsoleState>) -> impl IntoResponse {
    let settings = state.engine.settings();
    let mut channels = settings.config.console.channels.clone();
    for c in state.chat.channels() {
        if !channels.contains(&c) {
            channels.push(c);
        }
    }
    let default_channel = channels.first().cloned().unwrap_or_else(|| "ops".into());
    Json(serde_json::json!({ "identities": identities(&state), "channels": channels, "default_channel": default_channel }))
}

#[derive(Deserialize)]
struct ChannelQuery {
    channel: String,
}

async fn api_messages(State(state): State<ConsoleState>, Query(q): Query<ChannelQuery>) -> impl IntoResponse {
    Json(serde_json::json!({ "messages": state.chat.messages(&q.channel) }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    identity: String,
    channel: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    identity: String,
    channel: String,
    #[serde(default)]
    message_id: String,
    action_id: String,
    value: String,
}

fn bad(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The console trusts the identity picker, so it only answers requests addressed to a
/// loopback host (a page on another site cannot reach it through DNS rebinding).
fn local_only(headers: &HeaderMap) -> Result<(), Response> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    if matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
        Ok(())
    } else {
        Err(bad(StatusCode::FORBIDDEN, "the console answers only on a loopback address"))
    }
}

fn check(state: &ConsoleState, identity: &str, channel: &str) -> Result<(), Response> {
    if !identities(state).iter().any(|i| i == identity) {
        return Err(bad(StatusCode::FORBIDDEN, &format!("'{identity}' is not one of the console identities")));
    }
    let ok = !channel.is_empty() && channel.len() <= 80 && channel.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(bad(StatusCode::BAD_REQUEST, "channel names are letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

async fn api_command(State(state): State<ConsoleState>, Json(body): Json<CommandBody>) -> Response {
    if let Err(r) = check(&state, &body.identity, &body.channel) {
        return r;
    }
    let req = Request {
        identity: Identity::new(body.identity),
        origin: Origin { platform: "console".into(), channel: body.channel, thread: None },
        text: body.text,
        roles: Vec::new(),
    };
    let reply = state.engine.handle_command(req).await;
    Json(serde_json::json!({ "reply": reply.message, "ephemeral": reply.ephemeral })).into_response()
}

async fn api_action(State(state): State<ConsoleState>, Json(body): Json<ActionBody>) -> Response {
    if let Err(r) = check(&state, &body.identity, &body.channel) {
        return r;
    }
    if body.value.len() > 200 || body.action_id.len() > 40 {
        return bad(StatusCode::BAD_REQUEST, "button value too long");
    }
    let click = Click {
        identity: Identity::new(body.identity),
        origin: Origin { platform: "console".into(), channel: body.channel, thread: (!body.message_id.is_empty()).then_some(body.message_id) },
        value: body.value,
        delivery: None,
        roles: Vec::new(),
    };
    let reply = state.engine.handle_click(click).await;
    Json(serde_json::json!({ "reply": reply.message })).into_response()
}

/// Every post and edit as `event: message`. A subscriber that falls behind is disconnected
/// (the page reconnects and re-fetches), rather than silently missing edits.
async fn events(State(state): State<ConsoleState>) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let stream = BroadcastStream::new(state.chat.subscribe())
        .take_while(|r| r.is_ok())
        .filter_map(|r| r.ok())
        .map(|m| Ok(Event::default().event("message").data(serde_json::to_string(&m).unwrap_or_default())));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
