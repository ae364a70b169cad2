//! The Slack adapter: `POST /slack/commands`, `/slack/interactions` and `/slack/events`
//! (signature-verified before anything is parsed), Socket Mode as an alternative transport
//! feeding the same handlers, and [`SlackChat`] — the Web API (via slack-morphism) rendering
//! the neutral message model as Block Kit.
//!
//! Files by role: `verify.rs` (v0 signatures), `inbound.rs` (commands, clicks, events read
//! into the shared inbound pipeline — both transports — and the replies), `http.rs` (the axum
//! routes), `socket.rs` (the Socket Mode client), `render.rs` (Block Kit within Slack's
//! limits), `chat.rs` (the Web API as a `Chat`). [`SlackAdapter`] is the platform as
//! `runbot serve` wires it ([`crate::inbound::ChatAdapter`]).

mod budget;
mod chat;
mod http;
mod inbound;
mod render;
mod socket;
mod upload;
pub mod verify;

pub use chat::{CREATE_CHANNEL, SlackChat, SlackChatOptions};
pub use http::router;
pub use inbound::{Ack, CommandPayload};
pub use render::{Rendered, render as render_message};
pub use socket::SocketMode;

use crate::inbound::{ChatAdapter, Pipeline};
use async_trait::async_trait;
use runbot_commands::config::{Secret, Settings, SlackConfig};
use runbot_commands::engine::Engine;
use runbot_commands::metrics::{self, Collector, DescriptorEncoder, Registry};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters, described to the metrics registry as a [`Collector`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests refused with 401 (signature checks), by reason.
    pub rejected: crate::signature::Rejections,
    pub unreadable: AtomicU64,
    pub commands: AtomicU64,
    pub clicks: AtomicU64,
    pub events: AtomicU64,
    pub duplicate_events: AtomicU64,
    pub socket_connections: AtomicU64,
    /// Socket Mode connections given up as dead: nothing received for twice the ping interval.
    pub socket_dead: AtomicU64,
    /// Commands and mentions whose work is in flight (bounded; see [`crate::backlog`]).
    pub backlog: crate::backlog::Backlog,
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.rejected.encode(&mut enc, "runbot_slack_rejected", "Slack requests refused with 401, by reason.")?;
        let received = [
            ("command", g(&self.commands)),
            ("click", g(&self.clicks)),
            ("event", g(&self.events)),
            ("duplicate_event", g(&self.duplicate_events)),
            ("unreadable", g(&self.unreadable)),
        ];
        metrics::counters(&mut enc, "runbot_slack_received", "Slack requests received, by kind.", "kind", &received)?;
        self.backlog.encode(&mut enc, "runbot_slack", "Slack commands and mentions")?;
        metrics::counter(&mut enc, "runbot_slack_socket_connections", "Socket Mode connections opened.", g(&self.socket_connections))?;
        metrics::counter(&mut enc, "runbot_slack_socket_dead", "Socket Mode connections given up as silent.", g(&self.socket_dead))
    }
}

impl Metrics {
    /// These counters alone, encoded (tests).
    pub fn render(self: &Arc<Self>) -> String {
        metrics::encode_collector(self.clone())
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct SlackState {
    pub pipeline: Arc<Pipeline>,
    pub chat: Arc<SlackChat>,
    pub metrics: Arc<Metrics>,
    /// Verifies HTTP requests; `None` when only Socket Mode is configured.
    pub signing: Option<Arc<verify::SigningKey>>,
    /// The acknowledgement bodies of the answers given in acks lately (help, whoami).
    pub(crate) acks: Arc<inbound::AckBodies>,
}

/// The Slack adapter built from `[slack]`: its chat (to hand to the engine) and its secrets.
pub struct Slack {
    pub chat: Arc<SlackChat>,
    pub metrics: Arc<Metrics>,
    signing_secret: Option<Secret>,
    app_token: Option<Secret>,
    /// Socket Mode's ping interval (`socket_ping_secs`).
    socket_ping: Duration,
}

impl Slack {
    /// Resolves the secrets and builds the Web API client. Errors name the key, never a value.
    pub fn from_config(cfg: &SlackConfig, settings: &Settings) -> Result<Slack, runbot_commands::setup::SetupError> {
        use runbot_commands::setup::Doing;
        let resolve = |key: &str, r: &runbot_commands::config::SecretRef| r.resolve().doing(format_args!("slack.{key}"));
        let bot_token = resolve("bot_token", &cfg.bot_token)?;
        let signing_secret = cfg.signing_secret.as_ref().map(|r| resolve("signing_secret", r)).transpose()?;
        let app_token = cfg.app_token.as_ref().map(|r| resolve("app_token", r)).transpose()?;
        // Created incident channels get the Slack members of every approver group.
        let mut invite: Vec<String> = settings
            .config
            .approvals
            .iter()
            .flat_map(|p| p.approvers.iter())
            .filter_map(|g| settings.groups.get(g))
            .flatten()
            .filter_map(|m| m.strip_prefix("slack:").map(str::to_string))
            .collect();
        invite.sort();
        invite.dedup();
        let chat = SlackChat::new(SlackChatOptions {
            api_url: cfg.api_url.clone(),
            bot_token,
            post_interval: Duration::from_millis(cfg.post_interval_ms),
            edits_per_minute: cfg.edits_per_minute,
            invite,
        })
        .doing("slack")?;
        Ok(Slack {
            chat: Arc::new(chat),
            metrics: Arc::new(Metrics::default()),
            signing_secret,
            app_token,
            socket_ping: Duration::from_secs(cfg.socket_ping_secs.max(1)),
        })
    }

    /// Bounds the commands in flight differently from [`crate::backlog::DEFAULT_LIMIT`] (tests).
    pub fn with_backlog(mut self, backlog: crate::backlog::Backlog) -> Slack {
        self.metrics = Arc::new(Metrics { backlog, ..Metrics::default() });
        self
    }

    /// The handlers' state; registers Slack's replies with `pipeline`.
    pub fn state(&self, pipeline: &Arc<Pipeline>) -> SlackState {
        let state = SlackState {
            pipeline: pipeline.clone(),
            chat: self.chat.clone(),
            metrics: self.metrics.clone(),
            signing: self.signing_secret.as_ref().map(|s| Arc::new(verify::SigningKey::new(s.expose().as_bytes()))),
            acks: Arc::default(),
        };
        pipeline.register("slack", Arc::new(state.clone()));
        state
    }

    /// The HTTP routes, when a signing secret is configured.
    pub fn router(&self, pipeline: &Arc<Pipeline>) -> Option<axum::Router> {
        self.signing_secret.is_some().then(|| router(self.state(pipeline)))
    }

    /// Starts the Socket Mode client, when an app token is configured.
    pub fn socket_mode(&self, pipeline: &Arc<Pipeline>) -> Option<SocketMode> {
        self.app_token.clone().map(|t| SocketMode::spawn(self.state(pipeline), t, self.socket_ping))
    }

    /// Starts the configured transports on `pipeline`: the platform as `runbot serve` wires it.
    pub fn start(self, pipeline: &Arc<Pipeline>) -> SlackAdapter {
        let routes = self.router(pipeline);
        let socket = self.socket_mode(pipeline);
        SlackAdapter { metrics: self.metrics, routes, connected: socket.as_ref().map(|s| s.connected()), socket: tokio::sync::Mutex::new(socket) }
    }
}

impl SlackState {
    pub fn engine(&self) -> &Engine {
        self.pipeline.engine()
    }
}

/// Slack with its transports started.
pub struct SlackAdapter {
    metrics: Arc<Metrics>,
    routes: Option<axum::Router>,
    /// Socket Mode's connection state, when it is configured.
    connected: Option<Arc<std::sync::atomic::AtomicBool>>,
    socket: tokio::sync::Mutex<Option<SocketMode>>,
}

#[async_trait]
impl ChatAdapter for SlackAdapter {
    fn transports(&self) -> Vec<&'static str> {
        crate::inbound::transports_on(&[(self.routes.is_some(), "slack (HTTP)"), (self.connected.is_some(), "slack (Socket Mode)")])
    }

    fn routes(&self) -> Option<axum::Router> {
        self.routes.clone()
    }

    fn not_ready(&self) -> Option<String> {
        let connected = self.connected.as_ref().map(|c| c.load(Ordering::Relaxed));
        (connected == Some(false)).then(|| "Slack Socket Mode is not connected".to_string())
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.metrics.clone()));
    }

    async fn shutdown(&self) {
        if let Some(sm) = self.socket.lock().await.take() {
            sm.shutdown().await;
        }
    }
}
