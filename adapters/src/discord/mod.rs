//! The Discord adapter: `POST /discord/interactions` (signature-verified before anything is
//! parsed) feeding [`DiscordState::handle_interaction`] — the entry point the gateway transport
//! shares — and [`DiscordChat`]: REST v10 through serenity's `Http` against a configurable base
//! URL, with runbot's own per-route rate limiter, the neutral message model rendered within
//! Discord's limits.
//!
//! Files by role: `verify.rs` (Ed25519 via serenity's `Verifier` plus a ±5-minute window,
//! before any parsing), `inbound.rs` (PING, commands, clicks, autocomplete — shared by both
//! transports), `http.rs` (the axum route), `commands.rs` (`/ops` as an application command,
//! generated from the grammar's table, and options → text), `render.rs` (content / embed /
//! buttons within Discord's limits, overflow into follow-up parts), `ratelimit.rs`
//! (`X-RateLimit-*` buckets, 429s, global limits), `chat.rs` (the REST API as a `Chat`;
//! message ids are `CHANNEL/MESSAGE`), `gateway.rs` (mode `gateway`: a Gateway v10 client
//! feeding the same entry point, answering over REST).

mod chat;
pub mod commands;
pub mod gateway;
mod http;
mod inbound;
pub mod ratelimit;
pub mod render;
pub mod verify;

pub use chat::{CREATE_CHANNEL, DEFAULT_API_URL, DiscordChat, DiscordChatOptions, discord_user};
pub use gateway::{Gateway, GatewayOptions, GatewayState, InteractionHandler};
pub use render::{Rendered, render as render_message};
pub use verify::{Rejection, Verifier};

use crate::inbound::{ChatAdapter, Pipeline};
use async_trait::async_trait;
use runbot_commands::config::{DiscordConfig, DiscordMode, SecretRef};
use runbot_commands::engine::Engine;
use runbot_commands::metrics::{self, Collector, DescriptorEncoder, Registry};
use runbot_commands::setup::{Doing, SetupError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters, described to the metrics registry as a [`Collector`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests refused with 401 (signature checks), by reason.
    pub rejected: crate::signature::Rejections,
    pub unreadable: AtomicU64,
    pub pings: AtomicU64,
    pub commands: AtomicU64,
    pub clicks: AtomicU64,
    pub autocompletes: AtomicU64,
    pub duplicates: AtomicU64,
    /// Commands whose work is in flight (bounded; see [`crate::backlog`]).
    pub backlog: crate::backlog::Backlog,
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.rejected.encode(&mut enc, "runbot_discord_rejected", "Discord interactions refused with 401, by reason.")?;
        let received = [
            ("ping", g(&self.pings)),
            ("command", g(&self.commands)),
            ("click", g(&self.clicks)),
            ("autocomplete", g(&self.autocompletes)),
            ("duplicate", g(&self.duplicates)),
            ("unreadable", g(&self.unreadable)),
        ];
        metrics::counters(&mut enc, "runbot_discord_received", "Discord interactions received, by kind.", "kind", &received)?;
        self.backlog.encode(&mut enc, "runbot_discord", "Discord commands")
    }
}

impl Metrics {
    /// These counters alone, encoded (tests).
    pub fn render(self: &Arc<Self>) -> String {
        metrics::encode_collector(self.clone())
    }
}

/// What the interaction handlers share. Cheap to clone.
#[derive(Clone)]
pub struct DiscordState {
    pub pipeline: Arc<Pipeline>,
    pub chat: Arc<DiscordChat>,
    pub metrics: Arc<Metrics>,
}

/// The Discord adapter built from `[discord]`: its chat (to hand to the engine), its metrics,
/// and the key interactions are verified with.
pub struct Discord {
    pub chat: Arc<DiscordChat>,
    pub metrics: Arc<Metrics>,
    pub mode: DiscordMode,
    verifier: Option<Verifier>,
}

/// `https://discord.com/api/v10` (the documented form of `[discord] api_url`) →
/// `https://discord.com` (what serenity's routes are relative to).
pub fn api_base(api_url: &str) -> String {
    let u = api_url.trim().trim_end_matches('/');
    u.strip_suffix("/api/v10").or_else(|| u.strip_suffix("/api")).unwrap_or(u).to_string()
}

impl Discord {
    /// Resolves the secrets and builds the REST client. Errors name the key, never a value.
    pub fn from_config(cfg: &DiscordConfig) -> Result<Discord, SetupError> {
        let resolve = |key: &str, r: &SecretRef| r.resolve().doing(format_args!("discord.{key}"));
        let bot_token = resolve("bot_token", &cfg.bot_token)?;
        let verifier = match &cfg.public_key {
            Some(r) => Some(Verifier::new(resolve("public_key", r)?.expose()).doing("discord.public_key")?),
            None => None,
        };
        if cfg.mode == DiscordMode::Http && verifier.is_none() {
            return Err(SetupError("discord.public_key: required with mode = \"http\"".into()));
        }
        let chat = DiscordChat::new(DiscordChatOptions {
            api_url: api_base(&cfg.api_url),
            bot_token,
            application_id: cfg.application_id.clone(),
            guild_id: cfg.guild_id.clone(),
            incident_category: cfg.incident_category.clone(),
            mention: cfg.mention.clone(),
            timeout: Duration::from_secs(10),
        })
        .map_err(SetupError)?;
        Ok(Discord { chat: Arc::new(chat), metrics: Arc::new(Metrics::default()), mode: cfg.mode, verifier })
    }

    /// Bounds the commands in flight differently from [`crate::backlog::DEFAULT_LIMIT`] (tests).
    pub fn with_backlog(mut self, backlog: crate::backlog::Backlog) -> Discord {
        self.metrics = Arc::new(Metrics { backlog, ..Metrics::default() });
        self
    }

    /// The handlers' state; registers Discord's replies with `pipeline`.
    pub fn state(&self, pipeline: &Arc<Pipeline>) -> DiscordState {
        let state = DiscordState { pipeline: pipeline.clone(), chat: self.chat.clone(), metrics: self.metrics.clone() };
        pipeline.register("discord", Arc::new(state.clone()));
        state
    }

    /// Starts the configured transport on `pipeline` (the endpoint, or the gateway): the
    /// platform as `runbot serve` wires it.
    pub fn start(self, cfg: &DiscordConfig, pipeline: &Arc<Pipeline>) -> Result<DiscordAdapter, runbot_commands::setup::SetupError> {
        let routes = self.router(pipeline);
        let gateway = self.gateway(cfg, pipeline)?;
        Ok(DiscordAdapter { metrics: self.metrics, routes, state: gateway.as_ref().map(|g| g.state()), gateway: tokio::sync::Mutex::new(gateway) })
    }

    /// Bulk-overwrites the application's commands with `/ops` as generated from the grammar
    /// ([`commands::definitions`]): in `guild` (instant), or globally when `None`. Returns the
    /// names of the sub-commands Discord stored.
    pub async fn register_commands(&self, guild: Option<&str>) -> Result<Vec<String>, SetupError> {
        let stored = self.chat.register_commands(guild, &commands::definitions()).await.map_err(|e| SetupError(e.to_string()))?;
        let ops = stored
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == commands::COMMAND))
            .ok_or_else(|| SetupError(format!("Discord's answer does not list /{}", commands::COMMAND)))?;
        Ok(ops["options"].as_array().into_iter().flatten().filter_map(|o| o["name"].as_str().map(str::to_string)).collect())
    }

    /// `POST /discord/interactions`, in mode `http`.
    pub fn router(&self, pipeline: &Arc<Pipeline>) -> Option<axum::Router> {
        match (&self.verifier, self.mode) {
            (Some(v), DiscordMode::Http) => Some(http::router(self.state(pipeline), v.clone())),
            _ => None,
        }
    }
}

impl DiscordState {
    pub fn engine(&self) -> &Engine {
        self.pipeline.engine()
    }
}

/// Discord with its transport started.
pub struct DiscordAdapter {
    metrics: Arc<Metrics>,
    routes: Option<axum::Router>,
    /// The gateway client's state, in mode `gateway`.
    state: Option<tokio::sync::watch::Receiver<GatewayState>>,
    gateway: tokio::sync::Mutex<Option<Gateway>>,
}

#[async_trait]
impl ChatAdapter for DiscordAdapter {
    fn transports(&self) -> Vec<&'static str> {
        crate::inbound::transports_on(&[(self.routes.is_some(), "discord (HTTP)"), (self.state.is_some(), "discord (gateway)")])
    }

    fn routes(&self) -> Option<axum::Router> {
        self.routes.clone()
    }

    fn not_ready(&self) -> Option<String> {
        match self.state.as_ref().map(|g| g.borrow().clone()) {
            None | Some(GatewayState::Connected { .. }) => None,
            Some(GatewayState::Failed(why)) => Some(format!("the Discord gateway stopped: {why}")),
            Some(_) => Some("the Discord gateway is not connected".into()),
        }
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.metrics.clone()));
    }

    async fn shutdown(&self) {
        if let Some(gw) = self.gateway.lock().await.take() {
            gw.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_api_url_maps_to_serenitys_base() {
        assert_eq!(api_base("https://discord.com/api/v10"), "https://discord.com");
        assert_eq!(api_base("https://discord.com/api/v10/"), "https://discord.com");
        assert_eq!(api_base("http://127.0.0.1:4000"), "http://127.0.0.1:4000");
        assert_eq!(api_base(" http://127.0.0.1:4000/api "), "http://127.0.0.1:4000");
    }

    #[test]
    fn metrics_render_every_reason_and_kind() {
        let m = Arc::new(Metrics::default());
        m.rejected.get(Rejection::Stale).fetch_add(2, Ordering::Relaxed);
        m.commands.fetch_add(1, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("runbot_discord_rejected_total{reason=\"stale\"} 2"), "{text}");
        assert!(text.contains("runbot_discord_rejected_total{reason=\"missing\"} 0"), "{text}");
        assert!(text.contains("runbot_discord_received_total{kind=\"command\"} 1"), "{text}");
        assert_eq!(m.rejected.total(), 2);
    }
}
