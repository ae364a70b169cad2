//! Discord as a [`Chat`]: REST v10 through serenity's `Http` (its routes, request building
//! and token handling), pointed at a configurable base URL (`[discord] api_url`, default
//! `https://discord.com`). serenity's own rate limiter is off — it ignores the base URL — and
//! runbot's ([`Limiter`]) honours `X-RateLimit-Remaining/Reset-After` per route bucket and
//! 429 `retry_after` (global or not); replicas on one store spend each bucket, and the bot's
//! global limit, together ([`DiscordChat::share_limits`]).
//!
//! - `post`: create message; message ids handed to the engine are `CHANNEL/MESSAGE`. With a
//!   `thread` (the status message's id), the reply goes into the thread started from that
//!   message — created on the first reply, named after the message's title; a thread started
//!   from a message has the message's id, so it is found again after a restart.
//!   Parts that do not fit ([`render`]) follow in the thread.
//! - `update`: edit message. Like Slack: a 429 on an edit is returned as
//!   `ChatError::RateLimited(retry_after)` and the engine's publisher waits; a post waits
//!   out up to five 429s itself (the engine does not retry a status message's first post).
//! - `ephemeral`: Discord has private messages only as interaction responses. The interactions
//!   endpoint hands each interaction's token to [`DiscordChat::remember_interaction`]; for 14
//!   of the token's 15 minutes, a private answer to that person in that channel is a follow-up
//!   with the EPHEMERAL flag (64). Without one (or when Discord refuses it), the answer is
//!   posted in the channel mentioning the person — visible to the channel, so it only ever
//!   carries what runbot says privately anyway (already redacted, never a secret).
//! - The configured channel `create` makes one text channel per execution in the configured
//!   guild and category, and mentions the requester and the configured people there.

use super::ratelimit::{Limiter, Observed, secs};
use super::render::{MAX_CONTENT, Rendered, render};
use async_trait::async_trait;
use runbot_commands::config::Secret;
use runbot_commands::message::Message;
use runbot_commands::model::Identity;
use runbot_commands::ports::{Chat, ChatError};
use serde_json::{Value, json};
use serenity::http::{Http, HttpBuilder, LightMethod, Request, Route};
use serenity::model::id::{ApplicationId, ChannelId, GuildId, MessageId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The configured "channel" that means: create one channel per execution.
pub const CREATE_CHANNEL: &str = "create";
/// Discord's API when nothing else is configured.
pub const DEFAULT_API_URL: &str = "https://discord.com";

/// Discord's global limit, 50 requests a second per bot, as the time between two.
const GLOBAL_SPACING: Duration = Duration::from_millis(20);
/// How many 429s a post waits out itself before giving up with `RateLimited`.
const POST_RETRIES: u32 = 5;
/// The longest wait (a 429's retry_after, or an empty bucket) taken inside a call.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(60);
/// Interaction tokens live 15 minutes; use them for 14.
const TOKEN_USE: Duration = Duration::from_secs(14 * 60);

/// Everything [`DiscordChat`] needs; secrets already resolved. Maps to `[discord]`.
#[derive(Clone)]
pub struct DiscordChatOptions {
    /// `https://discord.com` in production; the fake's `http://127.0.0.1:PORT` in tests.
    /// Routes are `{api_url}/api/v10/...`.
    pub api_url: String,
    pub bot_token: Secret,
    /// The application (client) id: interaction follow-ups are `/webhooks/{application}/...`.
    pub application_id: String,
    /// The guild incident channels are created in (needed for `incident_channel = "create"`).
    pub guild_id: Option<String>,
    /// The category (`parent_id`) of created incident channels.
    pub incident_category: Option<String>,
    /// Discord user ids mentioned in every created incident channel (besides the requester).
    pub mention: Vec<String>,
    /// Bound on each HTTP request.
    pub timeout: Duration,
}

/// Why a call failed, before it becomes a [`ChatError`].
#[derive(Debug)]
enum CallError {
    RateLimited(Duration),
    /// Discord answered with an error: status, its JSON `code`, a readable summary.
    Api {
        status: u16,
        code: i64,
        summary: String,
    },
    Other(String),
}

impl From<CallError> for ChatError {
    fn from(e: CallError) -> ChatError {
        match e {
            CallError::RateLimited(d) => ChatError::RateLimited(d),
            CallError::Api { summary, .. } => ChatError::Other(summary),
            CallError::Other(s) => ChatError::Other(s),
        }
    }
}

/// How a call treats a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On429 {
    /// Wait it out (up to [`POST_RETRIES`] times).
    Wait,
    /// Hand it back as `RateLimited` (the caller waits).
    Return,
}

pub struct DiscordChat {
    http: Arc<Http>,
    client: reqwest::Client,
    app: ApplicationId,
    guild: Option<GuildId>,
    category: Option<String>,
    mention: Vec<String>,
    timeout: Duration,
    limiter: Limiter,
    /// A store shared with other replicas, which then spend each bucket together.
    shared: std::sync::OnceLock<Arc<dyn runbot_commands::ports::Store>>,
    /// Taken while reserving a shared slot and waiting for it.
    shared_turn: tokio::sync::Mutex<()>,
    /// Thread channel started from a message, by message id.
    threads: Mutex<HashMap<String, String>>,
    /// Titles of posted messages (names of their threads), by message id.
    titles: Mutex<HashMap<String, String>>,
    /// Incident channels created here, by execution id (`R-42`).
    created: Mutex<HashMap<String, String>>,
    /// The overflow last posted under a message, so an edit re-posts it only when it changed.
    overflow_sent: crate::overflow::OverflowMemo,
    /// The latest interaction token per (user, channel), and when it was issued.
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

fn snowflake(s: &str) -> Option<u64> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten().filter(|n| *n > 0)
}

fn channel_id(s: &str) -> Result<ChannelId, CallError> {
    snowflake(s)
        .map(ChannelId::new)
        .ok_or_else(|| CallError::Other(format!("'{}' is not a Discord channel id", s.chars().take(40).collect::<String>())))
}

fn message_id(s: &str) -> Result<MessageId, CallError> {
    snowflake(s)
        .map(MessageId::new)
        .ok_or_else(|| CallError::Other(format!("'{}' is not a Discord message id", s.chars().take(40).collect::<String>())))
}

/// `CHANNEL/MESSAGE` → (channel, message); a bare message id belongs to `channel`.
fn split_id<'a>(channel: &'a str, id: &'a str) -> (&'a str, &'a str) {
    id.split_once('/').unwrap_or((channel, id))
}

/// The Discord user id of a `discord:<id>` identity.
pub fn discord_user(id: &Identity) -> Option<&str> {
    id.0.strip_prefix("discord:").filter(|u| snowflake(u).is_some())
}

/// A readable, secret-free summary of an error answer: Discord's message and code, and the
/// first problems of a 50035 (`content: Must be 2000 or fewer in length.`).
fn summarize(route: &str, status: u16, body: &Value) -> (i64, String) {
    let code = body["code"].as_i64().unwrap_or(0);
    let message = body["message"].as_str().unwrap_or("").chars().take(200).collect::<String>();
    let mut problems = Vec::new();
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<String>) {
        let Some(o) = v.as_object() else { return };
        for (k, x) in o {
            if k == "_errors" {
                for e in x.as_array().into_iter().flatten() {
                    out.push(format!("{}: {}", path.join("."), e["message"].as_str().unwrap_or("")));
                }
            } else {
                path.push(k.clone());
                walk(x, path, out);
                path.pop();
            }
        }
    }
    walk(&body["errors"], &mut Vec::new(), &mut problems);
    problems.truncate(5);
    let hint = if status == 401 { " — check [discord] bot_token" } else { "" };
    let detail = if problems.is_empty() { String::new() } else { format!(": {}", problems.join("; ")) };
    (code, format!("Discord refused {route}: HTTP {status} {message} (code {code}){detail}{hint}"))
}

impl DiscordChat {
    /// Builds the REST client. Errors name the setting, never a secret.
    pub fn new(opts: DiscordChatOptions) -> Result<DiscordChat, String> {
        let app = snowflake(&opts.application_id).map(ApplicationId::new).ok_or("discord.application_id: not a Discord id (a number)")?;
        let guild = match &opts.guild_id {
            Some(g) => Some(snowflake(g).map(GuildId::new).ok_or("discord.guild_id: not a Discord id (a number)")?),
            None => None,
        };
        if let Some(c) = &opts.incident_category
            && snowflake(c).is_none()
        {
            return Err("discord.incident_category: not a Discord id (a number)".into());
        }
        let api_url = opts.api_url.trim().trim_end_matches('/').to_string();
        let url = url::Url::parse(&api_url).map_err(|_| "discord.api_url: not a URL".to_string())?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err("discord.api_url: must be an http(s) URL".into());
        }
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("discord: building the HTTP client: {e}"))?;
        // serenity's rate limiter ignores the proxy (the base URL): off, runbot limits itself.
        let http =
            HttpBuilder::new(opts.bot_token.expose()).client(client.clone()).proxy(api_url).ratelimiter_disabled(true).application_id(app).build();
        Ok(DiscordChat {
            http: Arc::new(http),
            client,
            app,
            guild,
            category: opts.incident_category,
            mention: opts.mention.into_iter().filter(|m| snowflake(m).is_some()).collect(),
            timeout: opts.timeout,
            limiter: Limiter::new(),
            shared: std::sync::OnceLock::new(),
            shared_turn: tokio::sync::Mutex::new(()),
            threads: Mutex::new(HashMap::new()),
            titles: Mutex::new(HashMap::new()),
            created: Mutex::new(HashMap::new()),
            overflow_sent: Default::default(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// serenity's `Http`, pointed at the configured base URL (for interaction responses and
    /// command registration with serenity's builders).
    pub fn http(&self) -> &Arc<Http> {
        &self.http
    }

    /// Spends this bucket (once its shape is known) and the bot's global limit together with
    /// the other replicas on `store` (when several processes share it): each request reserves
    /// a slot in the store, `window / limit` apart for its bucket, 1/50 s for the global limit
    /// of bot routes.
    pub fn share_limits(&self, store: Arc<dyn runbot_commands::ports::Store>) {
        if store.shared() {
            let _ = self.shared.set(store);
        }
    }

    /// Waits for this request's shared slots (see [`DiscordChat::share_limits`]).
    async fn wait_shared(&self, name: &'static str, major: &str) {
        let Some(store) = self.shared.get() else { return };
        let mut keys = Vec::new();
        if let Some((key, every)) = self.limiter.spacing(name, major) {
            keys.push((format!("discord:{key}"), every));
        }
        // Interaction and webhook routes are not bound to the global limit.
        if !name.starts_with("POST /interactions") && !name.contains("/webhooks/") {
            keys.push(("discord:global".to_string(), GLOBAL_SPACING));
        }
        // One reservation at a time per process: a slot is reserved just before it is used.
        let _turn = self.shared_turn.lock().await;
        let asked = Instant::now();
        let mut wait = Duration::ZERO;
        for (key, every) in keys {
            match store.take_slot(&key, every, chrono::Utc::now()).await {
                Ok(w) => wait = wait.max(w),
                Err(e) => tracing::warn!(route = name, error = %e, "shared Discord limits unavailable; this process's own only"),
            }
        }
        // The slot is counted from when it was asked for, not from the store's answer.
        tokio::time::sleep_until(asked + wait).await;
    }

    /// One REST call, rate limited: waits while its bucket is empty or a global 429 lasts,
    /// learns from the answer's headers, and treats a 429 as `on429` says. `name` is the route
    /// template (for the limiter and for messages: never the path, which may hold a token).
    async fn call(
        &self,
        method: LightMethod,
        route: Route<'_>,
        name: &'static str,
        major: &str,
        body: Option<&Value>,
        on429: On429,
    ) -> Result<Value, CallError> {
        self.call_parts(method, route, name, major, body, None, on429).await
    }

    /// [`DiscordChat::call`] with a multipart body (`payload_json` + `files[n]`) when `parts`
    /// is given.
    #[allow(clippy::too_many_arguments)]
    async fn call_parts(
        &self,
        method: LightMethod,
        route: Route<'_>,
        name: &'static str,
        major: &str,
        body: Option<&Value>,
        parts: Option<serenity::http::Multipart>,
        on429: On429,
    ) -> Result<Value, CallError> {
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| CallError::Other(format!("encoding a Discord request: {e}")))?),
            None => None,
        };
        let mut attempt = 0u32;
        loop {
            while let Some(wait) = self.limiter.acquire(name, major, Instant::now()) {
                if wait > MAX_INLINE_WAIT {
                    return Err(CallError::RateLimited(wait));
                }
                tracing::debug!(route = name, wait_ms = wait.as_millis() as u64, "Discord bucket empty; waiting");
                tokio::time::sleep(wait).await;
            }
            self.wait_shared(name, major).await;
            let req = Request::new(route, method).body(bytes.clone()).multipart(parts.clone());
            let built = req
                .build(&self.client, self.http.token(), self.http.proxy.as_deref())
                .map_err(|_| CallError::Other(format!("building the Discord request {name} failed")))?;
            let resp = built
                .timeout(self.timeout)
                .send()
                .await
                .map_err(|e| CallError::Other(format!("Discord request {name} failed: {}", e.without_url())))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            self.limiter.observe(name, major, &Observed::from_headers(&headers), Instant::now());
            let text = resp.text().await.map_err(|e| CallError::Other(format!("reading Discord's answer to {name}: {}", e.without_url())))?;
            let v: Value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
            if (200..300).contains(&status) {
                return Ok(v);
            }
            if status == 429 {
                let header = |k: &str| headers.get(k).and_then(|x| x.to_str().ok()).map(str::to_string);
                let wait = v["retry_after"]
                    .as_f64()
                    .and_then(|f| secs(&f.to_string()))
                    .or_else(|| header("retry-after").and_then(|h| secs(&h)))
                    .unwrap_or(Duration::from_secs(1));
                let global = v["global"].as_bool() == Some(true)
                    || header("x-ratelimit-scope").as_deref() == Some("global")
                    || header("x-ratelimit-global").is_some();
                self.limiter.limited(name, major, wait, global, Instant::now());
                attempt += 1;
                tracing::warn!(route = name, wait_ms = wait.as_millis() as u64, global, attempt, "Discord rate limited");
                if on429 == On429::Wait && attempt <= POST_RETRIES && wait <= MAX_INLINE_WAIT {
                    continue;
                }
                return Err(CallError::RateLimited(wait));
            }
            let (code, summary) = summarize(name, status, &v);
            return Err(CallError::Api { status, code, summary });
        }
    }

    async fn create_message(&self, channel: &str, body: &Value) -> Result<String, CallError> {
        let cid = channel_id(channel)?;
        let v = self
            .call(
                LightMethod::Post,
                Route::ChannelMessages { channel_id: cid },
                "POST /channels/{channel}/messages",
                channel,
                Some(body),
                On429::Wait,
            )
            .await?;
        v["id"].as_str().map(str::to_string).ok_or_else(|| CallError::Other("Discord's answer to create message has no id".into()))
    }

    /// The thread started from `message` in `channel`: known, or created now (named after
    /// the message's title). Discord gives such a thread the message's id, so a thread created
    /// before a restart (`160004`) is that id.
    async fn thread_for(&self, channel: &str, message: &str) -> Result<String, CallError> {
        if let Some(t) = self.threads.lock().ok().and_then(|m| m.get(message).cloned()) {
            return Ok(t);
        }
        let (cid, mid) = (channel_id(channel)?, message_id(message)?);
        let title = self.titles.lock().ok().and_then(|m| m.get(message).cloned()).unwrap_or_default();
        let name: String = if title.trim().is_empty() { "runbot details".to_string() } else { title.replace('\n', " ").chars().take(100).collect() };
        let body = json!({"name": name, "auto_archive_duration": 1440});
        let id = match self
            .call(
                LightMethod::Post,
                Route::ChannelMessageThreads { channel_id: cid, message_id: mid },
                "POST /channels/{channel}/messages/{message}/threads",
                channel,
                Some(&body),
                On429::Wait,
            )
            .await
        {
            Ok(v) => v["id"].as_str().map(str::to_string).unwrap_or_else(|| message.to_string()),
            Err(CallError::Api { code: 160004, .. }) => message.to_string(),
            Err(e) => return Err(e),
        };
        if let Ok(mut m) = self.threads.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(message.to_string(), id.clone());
        }
        Ok(id)
    }

    fn remember_title(&self, message: &str, title: &str) {
        if title.is_empty() {
            return;
        }
        if let Ok(mut m) = self.titles.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(message.to_string(), title.to_string());
        }
    }

    /// Posts the overflow parts of a message into `channel` (its thread, or the thread it is
    /// in), once per distinct overflow.
    async fn post_overflow(&self, key: &str, channel: &str, r: &Rendered) -> Result<(), CallError> {
        if r.overflow.is_empty() {
            return Ok(());
        }
        let hash = crate::overflow::OverflowMemo::fingerprint(&r.overflow);
        if self.overflow_sent.posted(key, hash) {
            return Ok(());
        }
        for part in &r.overflow {
            self.create_message(channel, part).await?;
        }
        self.overflow_sent.remember(key, hash);
        Ok(())
    }

    /// The channel for a status message configured as [`CREATE_CHANNEL`]: one per execution,
    /// `inc-<yyyymmdd>-<runbook>-<number>` in the configured category, the requester and the
    /// configured people mentioned in it.
    async fn incident_channel(&self, msg: &Message) -> Result<String, CallError> {
        let Some(guild) = self.guild else {
            return Err(CallError::Other("incident channels need [discord] guild_id".into()));
        };
        let (exec, runbook) = match msg.title.split_once(" · ") {
            Some((id, rest)) => (id.trim().to_string(), rest.split_whitespace().next().unwrap_or("runbook").to_string()),
            None => (String::new(), "runbook".to_string()),
        };
        if let Some(c) = self.created.lock().ok().and_then(|m| m.get(&exec).cloned()) {
            return Ok(c);
        }
        let clean = |s: &str| -> String {
            s.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect::<String>().trim_matches('-').to_string()
        };
        let num = exec.trim_start_matches(['R', 'r']).trim_start_matches('-').to_string();
        let name: String = format!("inc-{}-{}-{}", chrono::Utc::now().format("%Y%m%d"), clean(&runbook), clean(&num))
            .trim_end_matches('-')
            .chars()
            .take(100)
            .collect();
        let mut body = json!({"name": name, "type": 0, "topic": msg.title.chars().take(1024).collect::<String>()});
        if let Some(c) = &self.category {
            body["parent_id"] = json!(c);
        }
        let v = self
            .call(
                LightMethod::Post,
                Route::GuildChannels { guild_id: guild },
                "POST /guilds/{guild}/channels",
                &guild.to_string(),
                Some(&body),
                On429::Wait,
            )
            .await?;
        let Some(channel) = v["id"].as_str().map(str::to_string) else {
            return Err(CallError::Other("Discord's answer to create channel has no id".into()));
        };
        tracing::info!(channel, name, execution = %exec, "incident channel created");
        let requester =
            msg.fields.iter().find(|(k, _)| k == "Requested by").and_then(|(_, v)| v.strip_prefix("discord:")).filter(|u| snowflake(u).is_some());
        let mut users: Vec<String> = requester.into_iter().map(str::to_string).chain(self.mention.iter().cloned()).collect();
        users.sort();
        users.dedup();
        if !users.is_empty() {
            let mentions: Vec<String> = users.iter().map(|u| format!("<@{u}>")).collect();
            let label = if exec.is_empty() { "this incident".to_string() } else { exec.clone() };
            let body = json!({"content": format!("Incident channel for {label}: {}", mentions.join(" ")), "allowed_mentions": {"parse": [], "users": users}});
            if let Err(e) = self.create_message(&channel, &body).await {
                // The channel is usable without the mentions; say so in the logs.
                tracing::warn!(channel, error = %ChatError::from(e), "mentioning people in the incident channel failed");
            }
        }
        if let Ok(mut m) = self.created.lock() {
            m.insert(exec, channel.clone());
        }
        Ok(channel)
    }

    /// The channel created for an execution, if any.
    pub fn created_channel(&self, exec: &str) -> Option<String> {
        self.created.lock().ok()?.get(exec).cloned()
    }

    /// Keeps an interaction's token so private answers to `user` in `channel` can be
    /// ephemeral follow-ups (the endpoint calls this after acknowledging the interaction).
    pub fn remember_interaction(&self, user: &str, channel: &str, token: &str) {
        if let Ok(mut m) = self.tokens.lock() {
            let now = Instant::now();
            m.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_USE);
            m.insert((user.to_string(), channel.to_string()), (token.to_string(), now));
        }
    }

    fn fresh_token(&self, user: &str, channel: &str) -> Option<String> {
        let m = self.tokens.lock().ok()?;
        m.get(&(user.to_string(), channel.to_string())).filter(|(_, at)| at.elapsed() < TOKEN_USE).map(|(t, _)| t.clone())
    }

    fn forget_token(&self, user: &str, channel: &str) {
        if let Ok(mut m) = self.tokens.lock() {
            m.remove(&(user.to_string(), channel.to_string()));
        }
    }

    /// An ephemeral follow-up to an interaction: every part with the EPHEMERAL flag.
    async fn followup(&self, token: &str, r: &Rendered) -> Result<(), CallError> {
        let major = self.app.to_string();
        for part in std::iter::once(&r.main).chain(r.overflow.iter()) {
            let mut body = part.clone();
            body["flags"] = json!(64);
            self.call(
                LightMethod::Post,
                Route::WebhookFollowupMessages { application_id: self.app, token },
                "POST /webhooks/{application}/{token}",
                &major,
                Some(&body),
                On429::Wait,
            )
            .await?;
        }
        Ok(())
    }
}

/// Answering an interaction, and registering commands (the interactions endpoint and
/// `runbot discord register-commands`).
impl DiscordChat {
    /// Waits until the initial response reached Discord: a follow-up sent while the endpoint's
    /// HTTP answer is still on its way finds no interaction yet (404 `10015 Unknown Webhook`,
    /// `10008 Unknown Message`). Discord takes the initial response within 3 s or never.
    async fn after_ack<T, F, Fut>(&self, mut f: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let start = Instant::now();
        loop {
            match f().await {
                Err(CallError::Api { status: 404, code: 10015 | 10008, .. }) if start.elapsed() < Duration::from_secs(4) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Replaces a deferred response ("runbot is thinking…") with `msg`: the first part edits
    /// `@original` (private when the response was deferred with the EPHEMERAL flag), the
    /// parts that did not fit follow as ephemeral follow-ups.
    pub async fn respond(&self, token: &str, msg: &Message) -> Result<(), ChatError> {
        let r = render(msg);
        let major = self.app.to_string();
        self.after_ack(|| {
            self.call(
                LightMethod::Patch,
                Route::WebhookOriginalInteractionResponse { application_id: self.app, token },
                "PATCH /webhooks/{application}/{token}/messages/@original",
                &major,
                Some(&r.main),
                On429::Wait,
            )
        })
        .await?;
        if !r.overflow.is_empty() {
            let rest = Rendered { main: r.overflow[0].clone(), overflow: r.overflow[1..].to_vec() };
            self.followup(token, &rest).await?;
        }
        Ok(())
    }

    /// Tells the person who acted, privately: ephemeral follow-up(s) to their interaction.
    pub async fn tell(&self, token: &str, msg: &Message) -> Result<(), ChatError> {
        let r = render(msg);
        self.after_ack(|| self.followup(token, &r)).await.map_err(ChatError::from)
    }

    /// Bulk-overwrites the application's commands: in `guild` (instant), or globally.
    /// Returns the commands as Discord stored them.
    pub async fn register_commands(&self, guild: Option<&str>, commands: &Value) -> Result<Value, ChatError> {
        let major = self.app.to_string();
        let res = match guild {
            Some(g) => {
                let guild_id = snowflake(g)
                    .map(GuildId::new)
                    .ok_or_else(|| ChatError::Other(format!("'{}' is not a Discord guild id", g.chars().take(40).collect::<String>())))?;
                self.call(
                    LightMethod::Put,
                    Route::GuildCommands { application_id: self.app, guild_id },
                    "PUT /applications/{application}/guilds/{guild}/commands",
                    &major,
                    Some(commands),
                    On429::Wait,
                )
                .await
            }
            None => {
                self.call(
                    LightMethod::Put,
                    Route::Commands { application_id: self.app },
                    "PUT /applications/{application}/commands",
                    &major,
                    Some(commands),
                    On429::Wait,
                )
                .await
            }
        };
        res.map_err(ChatError::from)
    }
}

#[async_trait]
impl Chat for DiscordChat {
    fn platform(&self) -> &'static str {
        "discord"
    }

    async fn post(&self, channel: &str, thread: Option<&str>, msg: &Message) -> Result<String, ChatError> {
        let r = render(msg);
        match thread {
            Some(t) => {
                let (c, m) = split_id(channel, t);
                let tid = self.thread_for(c, m).await?;
                let id = self.create_message(&tid, &r.main).await?;
                // Overflow of a reply follows it in the same thread.
                self.post_overflow(&format!("{tid}/{id}"), &tid, &r).await?;
                Ok(format!("{tid}/{id}"))
            }
            None => {
                let channel = if channel == CREATE_CHANNEL { self.incident_channel(msg).await? } else { channel.to_string() };
                let id = self.create_message(&channel, &r.main).await?;
                self.remember_title(&id, &msg.title);
                if !r.overflow.is_empty() {
                    let tid = self.thread_for(&channel, &id).await?;
                    self.post_overflow(&format!("{channel}/{id}"), &tid, &r).await?;
                }
                Ok(format!("{channel}/{id}"))
            }
        }
    }

    /// A message with the file as its attachment (`multipart/form-data`: `payload_json` with
    /// `attachments: [{id: 0, filename}]`, and the bytes as `files[0]`), in the thread of
    /// message `thread` (created if needed) or in `channel`.
    async fn upload(&self, channel: &str, thread: Option<&str>, file: &runbot_commands::ports::Upload, comment: &str) -> Result<String, ChatError> {
        let target = match thread {
            Some(t) => {
                let (c, m) = split_id(channel, t);
                self.thread_for(c, m).await?
            }
            None => channel.to_string(),
        };
        let cid = channel_id(&target)?;
        let payload = json!({
            "content": comment.chars().take(MAX_CONTENT).collect::<String>(),
            "attachments": [{"id": 0, "filename": file.filename, "title": file.title}],
            "allowed_mentions": {"parse": []},
        });
        let parts = serenity::http::Multipart {
            upload: serenity::http::MultipartUpload::Attachments(vec![serenity::builder::CreateAttachment::bytes(
                file.content.clone(),
                file.filename.clone(),
            )]),
            fields: Vec::new(),
            payload_json: Some(payload.to_string()),
        };
        let v = self
            .call_parts(
                LightMethod::Post,
                Route::ChannelMessages { channel_id: cid },
                "POST /channels/{channel}/messages",
                &target,
                None,
                Some(parts),
                On429::Wait,
            )
            .await?;
        let id = v["id"].as_str().ok_or_else(|| ChatError::Other("Discord's answer to the attachment has no id".into()))?;
        Ok(format!("{target}/{id}"))
    }

    async fn update(&self, channel: &str, id: &str, msg: &Message) -> Result<(), ChatError> {
        let (channel, mid) = split_id(channel, id);
        let (cid, m) = (channel_id(channel)?, message_id(mid)?);
        let r = render(msg);
        self.remember_title(mid, &msg.title);
        self.call(
            LightMethod::Patch,
            Route::ChannelMessage { channel_id: cid, message_id: m },
            "PATCH /channels/{channel}/messages/{message}",
            channel,
            Some(&r.main),
            On429::Return,
        )
        .await?;
        if !r.overflow.is_empty() {
            let tid = self.thread_for(channel, mid).await?;
            self.post_overflow(&format!("{channel}/{mid}"), &tid, &r).await?;
        }
        Ok(())
    }

    async fn ephemeral(&self, channel: &str, to: &Identity, msg: &Message) -> Result<(), ChatError> {
        let Some(user) = discord_user(to) else {
            return Err(ChatError::Other(format!("{to} is not a Discord identity")));
        };
        if channel == CREATE_CHANNEL {
            return Err(ChatError::Other("no channel to answer in".into()));
        }
        let r = render(msg);
        if let Some(token) = self.fresh_token(user, channel) {
            match self.followup(&token, &r).await {
                Ok(()) => return Ok(()),
                Err(CallError::Api { status: 401 | 404, summary, .. }) => {
                    // The token expired or was never acknowledged: answer in the channel.
                    tracing::info!(error = %summary, "interaction token unusable; answering in the channel");
                    self.forget_token(user, channel);
                }
                Err(e) => return Err(e.into()),
            }
        }
        // No usable token: in the channel, mentioning the person (and only them).
        let mention = format!("<@{user}>");
        let mut main = r.main.clone();
        let content = main["content"].as_str().unwrap_or("").to_string();
        let allowed = json!({"parse": [], "users": [user]});
        if content.chars().count() + mention.chars().count() < MAX_CONTENT {
            main["content"] = json!(if content.is_empty() { mention } else { format!("{mention} {content}") });
            main["allowed_mentions"] = allowed;
        } else {
            self.create_message(channel, &json!({"content": mention, "allowed_mentions": allowed})).await?;
        }
        let id = self.create_message(channel, &main).await?;
        if !r.overflow.is_empty() {
            let tid = self.thread_for(channel, &id).await?;
            self.post_overflow(&format!("{channel}/{id}"), &tid, &r).await?;
        }
        Ok(())
    }

    fn max_text(&self) -> usize {
        // Step output goes out as fenced content: 2000 less the header and the fences.
        1800
    }
}

/// What the gateway client (`gateway.rs`) needs of the REST API.
impl DiscordChat {
    /// `GET /gateway/bot`: the WebSocket URL to connect to. A refused token is
    /// [`GatewayUrlError::Unauthorized`] (connecting again will not help).
    pub(super) async fn gateway_url(&self) -> Result<String, GatewayUrlError> {
        match self.call(LightMethod::Get, Route::GatewayBot, "GET /gateway/bot", "", None, On429::Wait).await {
            Ok(v) => {
                v["url"].as_str().map(str::to_string).ok_or_else(|| GatewayUrlError::Other("Discord's answer to GET /gateway/bot has no url".into()))
            }
            Err(CallError::Api { status: 401, summary, .. }) => Err(GatewayUrlError::Unauthorized(summary)),
            Err(e) => Err(GatewayUrlError::Other(ChatError::from(e).to_string())),
        }
    }

    /// `POST /interactions/{id}/{token}/callback`: the initial response to an interaction
    /// received over the gateway (the HTTP endpoint answers in its response body instead).
    pub(super) async fn interaction_callback(&self, interaction: &str, token: &str, body: &Value) -> Result<(), ChatError> {
        let id = snowflake(interaction)
            .map(serenity::model::id::InteractionId::new)
            .ok_or_else(|| ChatError::Other("not a Discord interaction id".into()))?;
        self.call(
            LightMethod::Post,
            Route::InteractionResponse { interaction_id: id, token },
            "POST /interactions/{id}/{token}/callback",
            interaction,
            Some(body),
            On429::Wait,
        )
        .await
        .map(|_| ())
        .map_err(ChatError::from)
    }
}

/// Why `GET /gateway/bot` failed.
#[derive(Debug)]
pub(super) enum GatewayUrlError {
    /// 401: the bot token is wrong.
    Unauthorized(String),
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_never_panicking() {
        assert_eq!(snowflake("1300000000000004096"), Some(1_300_000_000_000_004_096));
        assert_eq!(snowflake("0"), None);
        assert_eq!(snowflake("C0OPS"), None);
        assert_eq!(snowflake("99999999999999999999999"), None);
        assert!(channel_id("").is_err());
        assert_eq!(split_id("1", "2/3"), ("2", "3"));
        assert_eq!(split_id("1", "3"), ("1", "3"));
        assert_eq!(discord_user(&Identity::new("discord:42")), Some("42"));
        assert_eq!(discord_user(&Identity::new("slack:U1")), None);
    }

    #[test]
    fn error_summaries_carry_discords_reasons() {
        let body = json!({"code": 50035, "message": "Invalid Form Body", "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}});
        let (code, s) = summarize("POST /channels/{channel}/messages", 400, &body);
        assert_eq!(code, 50035);
        assert!(s.contains("content: Must be 2000 or fewer in length."), "{s}");
        let (_, s) = summarize("POST /channels/{channel}/messages", 401, &json!({"message": "401: Unauthorized", "code": 0}));
        assert!(s.contains("HTTP 401") && s.contains("bot_token"), "{s}");
    }
}
