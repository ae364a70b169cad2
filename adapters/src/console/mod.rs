//! The local web console, runbot's embedded default adapter: `/console` serves one HTML page
//! (built into the binary), a small JSON API for commands and clicks, and an SSE stream of
//! message posts and edits.
//!
//! Who a request acts as is decided by [`ConsoleAuth`] from the connection, never from the
//! request body alone: `runbot demo` offers an identity picker to loopback peers; `runbot
//! serve` acts as `[console] local_identity` for loopback peers, or as the user an
//! authenticating proxy (at a configured address) names in a header.

mod chat;
mod timeline;

pub use chat::{ConsoleChat, ConsoleMessage};

use axum::extract::{ConnectInfo, Extension, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::Stream;
use runbot_commands::config::{ConsoleAuthMode, ConsoleConfig, IpNet, is_loopback_peer};
use runbot_commands::engine::{Click, Engine, Request};
use runbot_commands::model::{Identity, Origin};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

const PAGE: &str = include_str!("page.html");

#[derive(Clone)]
pub struct ConsoleState {
    pub chat: Arc<ConsoleChat>,
    pub engine: Engine,
    pub auth: Arc<ConsoleAuth>,
}

/// Where a console request's identity comes from.
#[derive(Debug, Clone)]
pub enum ConsoleAuth {
    /// `runbot demo`: loopback peers pick any offered identity (`[console] identities` and the
    /// console members of `[groups]`). Never used by `runbot serve`.
    Picker,
    /// `[console] auth = "loopback"`: loopback peers act as this identity; without one the
    /// console only shows messages.
    Loopback(Option<Identity>),
    /// `[console] auth = "proxy"`: peers in `trusted` act as `console:<value of header>`.
    Proxy { trusted: Vec<IpNet>, header: HeaderName },
}

impl ConsoleAuth {
    /// `runbot serve`'s console authentication, from validated settings.
    pub fn from_config(c: &ConsoleConfig) -> Result<ConsoleAuth, runbot_commands::setup::SetupError> {
        use runbot_commands::setup::{Doing, SetupError};
        Ok(match c.auth {
            ConsoleAuthMode::Loopback => ConsoleAuth::Loopback(c.local_identity.clone().map(Identity::new)),
            ConsoleAuthMode::Proxy => ConsoleAuth::Proxy {
                trusted: c.trusted_proxies.iter().map(|t| IpNet::parse(t).map_err(SetupError)).collect::<Result<_, _>>()?,
                header: HeaderName::try_from(c.user_header.as_str()).doing("console.user_header")?,
            },
        })
    }

    /// Whether the server may listen on `addr` with this authentication: only the proxy mode
    /// may be reachable from other machines.
    pub fn allows_listen(&self, addr: SocketAddr) -> bool {
        matches!(self, ConsoleAuth::Proxy { .. }) || is_loopback_peer(addr.ip())
    }
}

/// Who the request is from, as established by [`authenticate`].
#[derive(Debug, Clone, PartialEq)]
enum Who {
    /// Any offered identity, named in the body (the demo's picker).
    Picks,
    /// This identity; a body naming another one is refused.
    Is(Identity),
    /// Nobody: messages can be read, nothing can be done.
    Anonymous,
}

/// The console routes, to be merged into runbot's HTTP server, which must be served with
/// `into_make_service_with_connect_info::<SocketAddr>()` (the peer address decides who may
/// use the console; without it every request is refused).
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/api/state", get(api_state))
        .route("/console/api/messages", get(api_messages))
        .route("/console/api/command", post(api_command))
        .route("/console/api/action", post(api_action))
        .route("/console/events", get(events))
        .route("/console/executions/{id}/timeline", get(timeline::timeline_page))
        .route("/console/executions/{id}/steps/{n}/output", get(timeline::step_output))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Runs before any other extractor, so a request from a peer that may not use the console is
/// refused before its body is even parsed.
async fn authenticate(State(state): State<ConsoleState>, mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return bad(StatusCode::INTERNAL_SERVER_ERROR, "the console cannot see the connection's peer address");
    };
    match who(&state.auth, peer, req.headers()) {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err((status, msg)) => {
            tracing::warn!(%peer, status = status.as_u16(), "console request refused: {msg}");
            bad(status, &msg)
        }
    }
}

/// The console's access rule: the peer address is the socket's, never a header. Loopback modes
/// also require a loopback `Host` (a page on another site cannot reach the console through DNS
/// rebinding); behind a proxy the `Host` is the public name, and the trusted proxy's header
/// names the user.
fn who(auth: &ConsoleAuth, peer: SocketAddr, headers: &HeaderMap) -> Result<Who, (StatusCode, String)> {
    let local = || -> Result<(), (StatusCode, String)> {
        if !is_loopback_peer(peer.ip()) {
            return Err((StatusCode::FORBIDDEN, "the console answers only connections from this machine".into()));
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        if !matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
            return Err((StatusCode::FORBIDDEN, "the console answers only requests addressed to a loopback host".into()));
        }
        Ok(())
    };
    match auth {
        ConsoleAuth::Picker => local().map(|()| Who::Picks),
        ConsoleAuth::Loopback(id) => local().map(|()| id.clone().map(Who::Is).unwrap_or(Who::Anonymous)),
        ConsoleAuth::Proxy { trusted, header } => {
            if !trusted.iter().any(|n| n.contains(peer.ip())) {
                return Err((StatusCode::FORBIDDEN, "the console answers only its authenticating proxy ([console] trusted_proxies)".into()));
            }
            // A proxy that appends instead of replacing would pass a client's own header first.
            let mut values = headers.get_all(header).iter();
            let (Some(value), None) = (values.next(), values.next()) else {
                if headers.contains_key(header) {
                    return Err((StatusCode::FORBIDDEN, format!("several {header} headers: the proxy must replace a client's, not add its own")));
                }
                return Err((StatusCode::UNAUTHORIZED, format!("the proxy sent no {header} header: sign in through the proxy")));
            };
            let id = value.to_str().ok().map(|v| format!("console:{}", v.trim()));
            match id.filter(|id| Identity::is_well_formed(id)) {
                Some(id) => Ok(Who::Is(Identity::new(id))),
                None => Err((
                    StatusCode::FORBIDDEN,
                    format!("the proxy's {header} is not a user name runbot accepts (1-64 letters, digits, '-', '_', '.')"),
                )),
            }
        }
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

async fn api_state(State(state): State<ConsoleState>, Extension(who): Extension<Who>) -> impl IntoResponse {
    let settings = state.engine.settings();
    let mut channels = settings.config.console.channels.clone();
    for c in state.chat.channels() {
        if !channels.contains(&c) {
            channels.push(c);
        }
    }
    let default_channel = channels.first().cloned().unwrap_or_else(|| "ops".into());
    // The page offers the picker only when it may be used, and otherwise shows who it acts as.
    let (pick, identity, identities) = match &who {
        Who::Picks => (true, None, identities(&state)),
        Who::Is(id) => (false, Some(id.to_string()), vec![id.to_string()]),
        Who::Anonymous => (false, None, Vec::new()),
    };
    Json(serde_json::json!({
        "pick": pick, "identity": identity, "identities": identities, "channels": channels, "default_channel": default_channel,
    }))
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
    /// Who to act as: required with the picker; elsewhere optional and must be who you are.
    #[serde(default)]
    identity: Option<String>,
    channel: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    identity: Option<String>,
    channel: String,
    #[serde(default)]
    message_id: String,
    action_id: String,
    value: String,
}

fn bad(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The identity a command or click acts as, and its channel, or the refusal.
// The refusal is the handler's own response, returned as it is: boxing it would buy nothing.
#[allow(clippy::result_large_err)]
fn check(state: &ConsoleState, who: &Who, asked: Option<&str>, channel: &str) -> Result<Identity, Response> {
    let identity = match (who, asked) {
        (Who::Picks, Some(a)) if identities(state).iter().any(|i| i == a) => Identity::new(a),
        (Who::Picks, Some(a)) => return Err(bad(StatusCode::FORBIDDEN, &format!("'{a}' is not one of the console identities"))),
        (Who::Picks, None) => return Err(bad(StatusCode::BAD_REQUEST, "say which identity to act as")),
        (Who::Is(me), None) => me.clone(),
        (Who::Is(me), Some(a)) if a == me.0 => me.clone(),
        (Who::Is(me), Some(a)) => return Err(bad(StatusCode::FORBIDDEN, &format!("you are {me}; the console does not act as '{a}'"))),
        (Who::Anonymous, _) => {
            let why = "this console has no identity to act as: set [console] local_identity, or auth = \"proxy\" behind an authenticating proxy";
            return Err(bad(StatusCode::FORBIDDEN, why));
        }
    };
    let ok = !channel.is_empty() && channel.len() <= 80 && channel.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(bad(StatusCode::BAD_REQUEST, "channel names are letters, digits, '-', '_' or '.'"));
    }
    Ok(identity)
}

async fn api_command(State(state): State<ConsoleState>, Extension(who): Extension<Who>, Json(body): Json<CommandBody>) -> Response {
    let identity = match check(&state, &who, body.identity.as_deref(), &body.channel) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let req =
        Request { identity, origin: Origin { platform: "console".into(), channel: body.channel, thread: None }, text: body.text, roles: Vec::new() };
    let reply = state.engine.handle_command(req).await;
    Json(serde_json::json!({ "reply": reply.message, "ephemeral": reply.ephemeral })).into_response()
}

async fn api_action(State(state): State<ConsoleState>, Extension(who): Extension<Who>, Json(body): Json<ActionBody>) -> Response {
    let identity = match check(&state, &who, body.identity.as_deref(), &body.channel) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if body.value.len() > 200 || body.action_id.len() > 40 {
        return bad(StatusCode::BAD_REQUEST, "button value too long");
    }
    let click = Click {
        identity,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::try_from(*k).expect("name"), v.parse().expect("value"));
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().expect("peer")
    }

    fn proxy(nets: &[&str]) -> ConsoleAuth {
        ConsoleAuth::Proxy {
            trusted: nets.iter().map(|n| IpNet::parse(n).expect("net")).collect(),
            header: HeaderName::from_static("x-forwarded-user"),
        }
    }

    #[test]
    fn a_foreign_peer_is_refused_by_the_loopback_modes_whatever_its_host_header_says() {
        let forged = headers(&[("host", "127.0.0.1:8080"), ("x-forwarded-user", "bob")]);
        for auth in [ConsoleAuth::Picker, ConsoleAuth::Loopback(Some(Identity::new("console:ops")))] {
            for p in ["192.0.2.7:40000", "[2001:db8::7]:40000", "[::ffff:192.0.2.7]:40000"] {
                let e = who(&auth, peer(p), &forged).expect_err(p);
                assert_eq!(e.0, StatusCode::FORBIDDEN, "{auth:?} {p}");
                assert!(e.1.contains("only connections from this machine"), "{}", e.1);
            }
        }
        let local = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(who(&ConsoleAuth::Picker, peer("127.0.0.1:5000"), &local), Ok(Who::Picks));
        assert_eq!(who(&ConsoleAuth::Picker, peer("[::ffff:127.0.0.1]:5000"), &local), Ok(Who::Picks));
        assert_eq!(who(&ConsoleAuth::Loopback(None), peer("127.0.0.1:5000"), &local), Ok(Who::Anonymous));
        let rebound = headers(&[("host", "attacker.example:8080")]);
        assert_eq!(who(&ConsoleAuth::Picker, peer("127.0.0.1:5000"), &rebound).expect_err("DNS rebinding").0, StatusCode::FORBIDDEN);
    }

    #[test]
    fn behind_a_proxy_only_the_trusted_peer_header_names_the_user() {
        let auth = proxy(&["10.0.0.5", "fd00::/8"]);
        let h = headers(&[("host", "runbot.example.com"), ("x-forwarded-user", "bob")]);
        assert_eq!(who(&auth, peer("10.0.0.5:3000"), &h), Ok(Who::Is(Identity::new("console:bob"))));
        assert_eq!(who(&auth, peer("[::ffff:10.0.0.5]:3000"), &h), Ok(Who::Is(Identity::new("console:bob"))));
        assert_eq!(who(&auth, peer("[fd00::9]:3000"), &h), Ok(Who::Is(Identity::new("console:bob"))));
        // Anyone else, loopback included, is refused even with the header.
        for p in ["10.0.0.6:3000", "127.0.0.1:3000", "[fe80::1]:3000"] {
            assert_eq!(who(&auth, peer(p), &h).expect_err(p).0, StatusCode::FORBIDDEN, "{p}");
        }
        let mut twice = headers(&[("x-forwarded-user", "mallory")]);
        twice.append("x-forwarded-user", "bob".parse().expect("value"));
        assert_eq!(who(&auth, peer("10.0.0.5:3000"), &twice).expect_err("two user headers").0, StatusCode::FORBIDDEN);
        let none = headers(&[("host", "runbot.example.com")]);
        assert_eq!(who(&auth, peer("10.0.0.5:3000"), &none).expect_err("no header").0, StatusCode::UNAUTHORIZED);
        for v in ["bob@example.com", "", "a b", "x".repeat(65).as_str(), "slack:U1"] {
            let h = headers(&[("x-forwarded-user", v)]);
            assert_eq!(who(&auth, peer("10.0.0.5:3000"), &h).expect_err(v).0, StatusCode::FORBIDDEN, "{v:?}");
        }
    }

    #[test]
    fn only_the_proxy_mode_may_listen_beyond_loopback() {
        assert!(!ConsoleAuth::Picker.allows_listen(peer("0.0.0.0:8080")));
        assert!(!ConsoleAuth::Loopback(None).allows_listen(peer("[::]:8080")));
        assert!(ConsoleAuth::Loopback(None).allows_listen(peer("127.0.0.1:8080")));
        assert!(proxy(&["10.0.0.5"]).allows_listen(peer("0.0.0.0:8080")));
    }
}
