//! A fake Discord on 127.0.0.1 speaking REST API v10 as runbot uses it: create, edit and
//! thread messages, create guild text channels (incident channels in a category), interaction
//! callbacks and webhook follow-ups, and bulk overwrite of application commands.
//!
//! # Faithful
//! - Paths `/api/v10/...`; `Authorization: Bot <token>` on bot routes (401
//!   `{"message":"401: Unauthorized","code":0}` otherwise); interaction routes are authorised by
//!   the token in the path, valid for 15 minutes, the first callback within 3 s (`10062 Unknown
//!   interaction` after that, `40060` when acknowledged twice, `10015 Unknown Webhook` for a
//!   follow-up before the callback, `50027 Invalid Webhook Token` once expired).
//! - Discord's limits on every message and command body ([`limits`]), refused with
//!   `{"code":50035,"errors":{…},"message":"Invalid Form Body"}` (nested `_errors` by path), and
//!   `50006 Cannot send an empty message`.
//! - Every answer carries `X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket` for its route
//!   bucket (per major parameter: channel, guild, interaction, webhook); exceeding a bucket or
//!   the global 50/s of bot routes answers 429 with `{"message":"You are being rate
//!   limited.","retry_after":…,"global":…}`, `Retry-After` and `X-RateLimit-Scope`; 429s can be
//!   scripted per route or globally ([`FakeDiscord::script_429`]).
//! - A thread started from a message has the message's id and is a channel: posting into it is
//!   creating a message in that id; a second thread on the same message is `160004`.
//! - Objects (messages, channels, threads, commands, interactions) with the fields serenity
//!   0.12.5 needs to parse them ([`objects`]).
//!
//! # Simplified
//! - One guild; fixed-window buckets (Discord's are similar, not identical); no permissions, no
//!   attachments; the callback answers 204 even with `with_response`.
//!
//! The Gateway (`GET /gateway/bot` → a `ws://127.0.0.1` URL: HELLO, heartbeats, IDENTIFY,
//! READY, RESUME, interactions dispatched by the test) is in [`gateway`].

use runbot_commands::setup::SetupResult;
mod gateway;
pub mod limits;
mod multipart;
pub mod objects;
mod rest;

pub use gateway::GatewayStats;

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The fixed test key pair: the Ed25519 seed (32 bytes of 7) and its public key, as in
/// PLATFORM-NOTES §4.1.
pub const TEST_SEED: [u8; 32] = [7u8; 32];
pub const TEST_PUBLIC_KEY: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";

/// The hex public key of an Ed25519 seed.
pub fn public_key_hex(seed: &[u8; 32]) -> String {
    hex::encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

/// `X-Signature-Ed25519` for a body, as Discord signs it: Ed25519 over `timestamp + body` with
/// the test key (written independently of runbot's verifier).
pub fn sign(timestamp: &str, body: &[u8]) -> String {
    sign_with(&TEST_SEED, timestamp, body)
}

pub fn sign_with(seed: &[u8; 32], timestamp: &str, body: &[u8]) -> String {
    let key = SigningKey::from_bytes(seed);
    let mut msg = timestamp.as_bytes().to_vec();
    msg.extend_from_slice(body);
    hex::encode(key.sign(&msg).to_bytes())
}

/// The REST routes the fake serves, each its own rate-limit bucket (per major parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /channels/{channel}/messages`
    CreateMessage,
    /// `PATCH /channels/{channel}/messages/{message}`
    EditMessage,
    /// `POST /channels/{channel}/messages/{message}/threads`
    CreateThread,
    /// `POST /guilds/{guild}/channels`
    CreateChannel,
    /// `POST /interactions/{id}/{token}/callback`
    InteractionCallback,
    /// `POST /webhooks/{application}/{token}`
    CreateFollowup,
    /// `PATCH /webhooks/{application}/{token}/messages/{@original|message}`
    EditWebhookMessage,
    /// `PUT /applications/{application}[/guilds/{guild}]/commands`
    BulkCommands,
    /// `GET /gateway/bot`
    GatewayBot,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::CreateMessage => "POST /channels/{channel}/messages",
            Route::EditMessage => "PATCH /channels/{channel}/messages/{message}",
            Route::CreateThread => "POST /channels/{channel}/messages/{message}/threads",
            Route::CreateChannel => "POST /guilds/{guild}/channels",
            Route::InteractionCallback => "POST /interactions/{id}/{token}/callback",
            Route::CreateFollowup => "POST /webhooks/{application}/{token}",
            Route::EditWebhookMessage => "PATCH /webhooks/{application}/{token}/messages/{message}",
            Route::BulkCommands => "PUT /applications/{application}/commands",
            Route::GatewayBot => "GET /gateway/bot",
        }
    }
    /// Interaction and webhook routes are authorised by their token, not the bot's, and are
    /// not bound to the global limit.
    pub fn uses_bot_token(self) -> bool {
        !matches!(self, Route::InteractionCallback | Route::CreateFollowup | Route::EditWebhookMessage)
    }
    /// The bucket hash Discord would send for this route (stable, opaque).
    pub fn bucket_hash(self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(self.as_str().as_bytes())[..8])
    }
}

/// One REST call as received (interaction tokens in the path replaced by `{token}`).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub route: Option<Route>,
    pub body: Value,
    pub status: u16,
    /// Discord's JSON error `code` of a refusal (0 for 401/429), if any.
    pub code: Option<i64>,
    /// When it arrived.
    pub at: Instant,
}

/// A message in a channel (or thread, or an interaction's response), with every version.
#[derive(Debug, Clone)]
pub struct Posted {
    pub id: String,
    pub channel_id: String,
    /// Posted by the bot or as an interaction response / follow-up.
    pub author: objects::Author,
    /// `64` for ephemeral interaction messages.
    pub flags: u64,
    /// The interaction it answers, if any.
    pub interaction: Option<String>,
    /// The current `content`/`embeds`/`components`.
    pub content: Value,
    /// Every `content`/`embeds`/`components` it had, first to last.
    pub versions: Vec<Value>,
    pub created: String,
    pub edited: Option<String>,
}

impl Posted {
    /// Every piece of text: content, embed titles, descriptions, fields, footers, button labels.
    pub fn text(&self) -> String {
        content_text(&self.content)
    }
    /// `(custom_id, label)` of every button, row by row.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for row in self.content["components"].as_array().into_iter().flatten() {
            for b in row["components"].as_array().into_iter().flatten() {
                out.push((b["custom_id"].as_str().unwrap_or("").to_string(), b["label"].as_str().unwrap_or("").to_string()));
            }
        }
        out
    }
    pub fn ephemeral(&self) -> bool {
        self.flags & 64 != 0
    }
}

/// Every text of a message's `content`/`embeds`/`components`, in order.
pub fn content_text(v: &Value) -> String {
    let mut s = String::new();
    let mut push = |x: &Value| {
        if let Some(t) = x.as_str().filter(|t| !t.is_empty()) {
            s.push_str(t);
            s.push('\n');
        }
    };
    push(&v["content"]);
    for e in v["embeds"].as_array().into_iter().flatten() {
        push(&e["author"]["name"]);
        push(&e["title"]);
        push(&e["description"]);
        for f in e["fields"].as_array().into_iter().flatten() {
            push(&f["name"]);
            push(&f["value"]);
        }
        push(&e["footer"]["text"]);
    }
    for row in v["components"].as_array().into_iter().flatten() {
        for b in row["components"].as_array().into_iter().flatten() {
            push(&b["label"]);
        }
    }
    s
}

/// An interaction built by the fake: its id, token and the exact body to sign and POST.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub id: String,
    pub token: String,
    pub body: String,
}

impl Interaction {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// `(X-Signature-Ed25519, X-Signature-Timestamp)` with the test key, `age` seconds ago.
    pub fn signature(&self, age: i64) -> (String, String) {
        let ts = (chrono::Utc::now().timestamp() - age).to_string();
        (sign(&ts, self.body.as_bytes()), ts)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Chan {
    pub id: String,
    pub kind: u8,
    pub name: String,
    pub parent: Option<String>,
    pub object: Value,
}

#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub token: String,
    pub channel: String,
    pub at: Instant,
    pub expired: bool,
    /// The callback type, once acknowledged.
    pub acked: Option<u64>,
    /// The message a component interaction came from.
    pub message: Option<String>,
    /// The id of the original response message, once there is one.
    pub original: Option<String>,
}

/// A file received as a message's attachment (`multipart/form-data`, `files[n]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub channel_id: String,
    pub message_id: String,
    pub filename: String,
    pub title: Option<String>,
    pub content: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub start: Instant,
    pub used: u32,
}

pub(crate) struct State {
    pub calls: Vec<Call>,
    pub messages: Vec<Posted>,
    pub channels: Vec<Chan>,
    /// Channel ids created through the API, in order.
    pub created: Vec<String>,
    pub members: HashMap<String, (String, Vec<String>)>,
    pub interactions: HashMap<String, Issued>,
    pub callbacks: Vec<(String, Value)>,
    pub commands: HashMap<Option<String>, Vec<Value>>,
    pub problems: Vec<String>,
    /// Files received as message attachments.
    pub attachments: Vec<Attachment>,
    pub next_id: u64,
    pub limits: HashMap<Route, (u32, Duration)>,
    pub windows: HashMap<(Route, String), Window>,
    pub global_limit: (u32, Duration),
    pub global_window: Window,
    pub scripted: HashMap<Route, VecDeque<Duration>>,
    pub scripted_global: VecDeque<Duration>,
    pub callback_deadline: Duration,
    pub gateway: gateway::Gateway,
}

impl State {
    pub fn snowflake(&mut self) -> String {
        self.next_id += 1;
        // Discord ids are 64-bit snowflakes: time in the high bits, a counter below.
        (1_300_000_000_000_000_000u64 + (self.next_id << 12)).to_string()
    }
    pub fn chan(&self, id: &str) -> Option<&Chan> {
        self.channels.iter().find(|c| c.id == id)
    }
}

pub(crate) struct Inner {
    pub st: Mutex<State>,
    pub changed: Notify,
    pub bot_token: String,
    pub app_id: String,
    pub guild_id: String,
    pub bot_user: Value,
}

impl Inner {
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.st.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut g);
        drop(g);
        self.changed.notify_waiters();
        out
    }
}

/// The fake Discord. Stops when dropped.
pub struct FakeDiscord {
    inner: Arc<Inner>,
    base: String,
    task: JoinHandle<()>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The bot user's id in the fake.
pub const BOT_USER_ID: &str = "1290000000000000001";
pub const GUILD_ID: &str = "1280000000000000001";

impl FakeDiscord {
    /// Starts the REST API on a free loopback port; bot routes require `Bot <bot_token>`.
    pub async fn start(bot_token: &str, application_id: &str) -> SetupResult<FakeDiscord> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let mut limits = HashMap::new();
        for r in [
            Route::CreateMessage,
            Route::EditMessage,
            Route::CreateThread,
            Route::CreateChannel,
            Route::InteractionCallback,
            Route::CreateFollowup,
            Route::EditWebhookMessage,
            Route::BulkCommands,
            Route::GatewayBot,
        ] {
            limits.insert(r, (5, Duration::from_secs(1)));
        }
        let now = Instant::now();
        let st = State {
            calls: Vec::new(),
            messages: Vec::new(),
            channels: Vec::new(),
            created: Vec::new(),
            members: HashMap::new(),
            interactions: HashMap::new(),
            callbacks: Vec::new(),
            commands: HashMap::new(),
            problems: Vec::new(),
            attachments: Vec::new(),
            next_id: 0,
            limits,
            windows: HashMap::new(),
            global_limit: (50, Duration::from_secs(1)),
            global_window: Window { start: now, used: 0 },
            scripted: HashMap::new(),
            scripted_global: VecDeque::new(),
            callback_deadline: Duration::from_secs(3),
            gateway: gateway::Gateway::new(),
        };
        let inner = Arc::new(Inner {
            st: Mutex::new(st),
            changed: Notify::new(),
            bot_token: bot_token.to_string(),
            app_id: application_id.to_string(),
            guild_id: GUILD_ID.to_string(),
            bot_user: objects::user(BOT_USER_ID, "runbot", true),
        });
        let app = rest::router(inner.clone());
        let gw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let gw_addr = gw_listener.local_addr()?;
        inner.with(|s| s.gateway.url = format!("ws://{gw_addr}"));
        let gw_inner = inner.clone();
        let task = tokio::spawn(async move {
            let _ = tokio::join!(axum::serve(listener, app), gateway::serve(gw_listener, gw_inner));
        });
        Ok(FakeDiscord { inner, base: format!("http://{addr}"), task })
    }

    /// The base URL for `[discord] api_url` (routes are `{api_url}/api/v10/...`).
    pub fn api_url(&self) -> String {
        self.base.clone()
    }
    pub fn application_id(&self) -> &str {
        &self.inner.app_id
    }
    pub fn guild_id(&self) -> &str {
        &self.inner.guild_id
    }

    fn add_channel(&self, name: &str, kind: u8, parent: Option<&str>) -> String {
        let guild = self.inner.guild_id.clone();
        self.inner.with(|s| {
            let id = s.snowflake();
            let pos = s.channels.len() as u64;
            let object = objects::channel(&id, &guild, name, kind, parent, pos);
            s.channels.push(Chan { id: id.clone(), kind, name: name.to_string(), parent: parent.map(str::to_string), object });
            id
        })
    }
    /// A text channel of the guild; returns its id.
    pub fn add_text_channel(&self, name: &str) -> String {
        self.add_channel(name, 0, None)
    }
    /// A category (where incident channels go); returns its id.
    pub fn add_category(&self, name: &str) -> String {
        self.add_channel(name, 4, None)
    }
    /// A guild member with role ids (carried by the interactions built for them).
    pub fn add_member(&self, user_id: &str, username: &str, roles: &[&str]) {
        self.inner.with(|s| {
            s.members.insert(user_id.to_string(), (username.to_string(), roles.iter().map(|r| r.to_string()).collect()));
        });
    }

    /// Sets a route's bucket: `limit` requests per `window` per major parameter.
    pub fn set_route_limit(&self, route: Route, limit: u32, window: Duration) {
        self.inner.with(|s| {
            s.limits.insert(route, (limit.max(1), window));
        });
    }
    /// The global limit of bot routes (Discord: 50 per second).
    pub fn set_global_limit(&self, limit: u32, window: Duration) {
        self.inner.with(|s| s.global_limit = (limit.max(1), window));
    }
    /// Answers the next `n` calls of `route` with a 429 (`user` scope) saying `retry_after`.
    pub fn script_429(&self, route: Route, n: usize, retry_after: Duration) {
        self.inner.with(|s| s.scripted.entry(route).or_default().extend(std::iter::repeat_n(retry_after, n)));
    }
    /// Answers the next `n` bot-route calls with a global 429.
    pub fn script_global_429(&self, n: usize, retry_after: Duration) {
        self.inner.with(|s| s.scripted_global.extend(std::iter::repeat_n(retry_after, n)));
    }
    /// How long after an interaction its first callback is accepted (Discord: 3 s).
    pub fn set_callback_deadline(&self, d: Duration) {
        self.inner.with(|s| s.callback_deadline = d);
    }
    /// Makes an interaction's token expire (as after 15 minutes).
    pub fn expire_interaction(&self, id: &str) {
        self.inner.with(|s| {
            if let Some(i) = s.interactions.get_mut(id) {
                i.expired = true;
            }
        });
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.with(|s| s.calls.clone())
    }
    pub fn calls_of(&self, route: Route) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.route == Some(route)).collect()
    }
    /// Every message, in posting order (thread messages have the thread's id as channel).
    pub fn messages(&self) -> Vec<Posted> {
        self.inner.with(|s| s.messages.clone())
    }
    pub fn in_channel(&self, channel: &str) -> Vec<Posted> {
        self.messages().into_iter().filter(|m| m.channel_id == channel).collect()
    }
    pub fn message(&self, id: &str) -> Option<Posted> {
        self.messages().into_iter().find(|m| m.id == id)
    }
    /// The full object of a message, as Discord would return it.
    pub fn message_object(&self, id: &str) -> Option<Value> {
        let p = self.message(id)?;
        Some(self.object_of(&p))
    }
    fn object_of(&self, p: &Posted) -> Value {
        objects::message(
            &p.id,
            &p.channel_id,
            Some(&self.inner.guild_id),
            &self.inner.app_id,
            &self.inner.bot_user,
            &p.author,
            &p.content,
            p.flags,
            p.edited.as_deref(),
            &p.created,
        )
    }
    /// The thread started from a message: `(id, name, parent)`.
    pub fn thread_of(&self, message: &str) -> Option<(String, String, String)> {
        self.inner.with(|s| s.chan(message).filter(|c| c.kind == 11).map(|c| (c.id.clone(), c.name.clone(), c.parent.clone().unwrap_or_default())))
    }
    /// Channels created through the API: `(id, name, parent_id)`.
    pub fn created_channels(&self) -> Vec<(String, String, Option<String>)> {
        self.inner.with(|s| {
            s.created.iter().filter_map(|id| s.chan(id)).filter(|c| c.kind != 11).map(|c| (c.id.clone(), c.name.clone(), c.parent.clone())).collect()
        })
    }
    /// Interaction callbacks: `(interaction id, body)`.
    pub fn callbacks(&self) -> Vec<(String, Value)> {
        self.inner.with(|s| s.callbacks.clone())
    }
    /// The registered commands, global (`None`) or of the guild.
    pub fn commands(&self, guild: Option<&str>) -> Vec<Value> {
        self.inner.with(|s| s.commands.get(&guild.map(str::to_string)).cloned().unwrap_or_default())
    }
    /// The files received as attachments, in order.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.inner.with(|s| s.attachments.clone())
    }
    /// Bodies refused for breaking a limit, as `route: path: message (code)` lines.
    pub fn problems(&self) -> Vec<String> {
        self.inner.with(|s| s.problems.clone())
    }

    /// Waits until `f` holds (re-checked on every change; panics naming `what` after 30 s).
    pub async fn wait<T>(&self, what: &str, mut f: impl FnMut(&FakeDiscord) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.inner.changed.notified();
            if let Some(v) = f(self) {
                return v;
            }
            // `f` reading the fake notifies too, so the deadline is checked on every round.
            if tokio::time::Instant::now() >= deadline || tokio::time::timeout_at(deadline, notified).await.is_err() {
                if let Some(v) = f(self) {
                    return v;
                }
                panic!("fake Discord: timed out waiting for {what}");
            }
        }
    }

    // ---- interaction payloads ----------------------------------------------------------

    fn member_json(&self, user_id: &str) -> Value {
        let (name, roles) = self
            .inner
            .with(|s| s.members.get(user_id).cloned())
            .unwrap_or_else(|| (format!("user{}", &user_id[user_id.len().saturating_sub(4)..]), Vec::new()));
        objects::member(objects::user(user_id, &name, false), &roles)
    }

    fn channel_json(&self, channel: &str) -> Value {
        let guild = self.inner.guild_id.clone();
        self.inner.with(|s| s.chan(channel).map(|c| c.object.clone())).unwrap_or_else(|| objects::channel(channel, &guild, "unknown", 0, None, 0))
    }

    /// Registers an interaction (its token becomes valid) and builds its body.
    fn issue(&self, kind: u8, user: &str, channel: &str, data: Value, message: Option<&Posted>) -> Interaction {
        let (id, token) = self.inner.with(|s| {
            let id = s.snowflake();
            // Interaction tokens are long opaque strings.
            let token = format!("aW50ZXJhY3Rpb246{id}OmZha2UtZGlzY29yZC10b2tlbi1mb3ItdGVzdHM");
            s.interactions.insert(
                id.clone(),
                Issued {
                    token: token.clone(),
                    channel: channel.to_string(),
                    at: Instant::now(),
                    expired: false,
                    acked: None,
                    message: message.map(|m| m.id.clone()),
                    original: None,
                },
            );
            (id, token)
        });
        let mut v = objects::interaction(
            kind,
            &id,
            &self.inner.app_id,
            &token,
            &self.inner.guild_id,
            &self.channel_json(channel),
            self.member_json(user),
            data,
        );
        if let Some(m) = message {
            v["message"] = self.object_of(m);
        }
        Interaction { id, token, body: v.to_string() }
    }

    /// `PING` (type 1), as sent when the endpoint URL is saved and in Discord's checks.
    pub fn ping(&self) -> Interaction {
        let (id, token) = self.inner.with(|s| {
            let id = s.snowflake();
            (id.clone(), format!("cGluZw{id}"))
        });
        let body = json!({"id": id, "application_id": self.inner.app_id, "type": 1, "token": token, "version": 1, "app_permissions": "0", "entitlements": [], "attachment_size_limit": 8388608});
        Interaction { id, token, body: body.to_string() }
    }

    fn command_data(&self, command: &str, path: &[&str], options: &[(&str, Value)], focused: Option<&str>) -> Value {
        let opt = |name: &str, value: &Value| {
            let kind = match value {
                Value::Bool(_) => 5,
                Value::Number(n) if n.is_i64() || n.is_u64() => 4,
                Value::Number(_) => 10,
                _ => 3,
            };
            let mut o = json!({"name": name, "type": kind, "value": value});
            if focused == Some(name) {
                o["focused"] = json!(true);
            }
            o
        };
        let mut opts: Vec<Value> = options.iter().map(|(n, v)| opt(n, v)).collect();
        for (depth, name) in path.iter().enumerate().rev() {
            let kind = if depth + 1 == path.len() { 1 } else { 2 };
            opts = vec![json!({"name": name, "type": kind, "options": opts})];
        }
        let guild = self.inner.guild_id.clone();
        let id = self
            .inner
            .with(|s| {
                [Some(guild.clone()), None].iter().find_map(|g| {
                    s.commands.get(g).and_then(|cs| cs.iter().find(|c| c["name"] == command)).and_then(|c| c["id"].as_str().map(str::to_string))
                })
            })
            .unwrap_or_else(|| "1270000000000000001".to_string());
        json!({"id": id, "name": command, "type": 1, "guild_id": guild, "options": opts})
    }

    /// A slash command (type 2): `/command path… name:value…` typed by `user` in `channel`.
    /// `path` holds the sub-command group and/or sub-command; option types follow the JSON
    /// values (string 3, integer 4, boolean 5, number 10).
    pub fn slash_command(&self, user: &str, channel: &str, command: &str, path: &[&str], options: &[(&str, Value)]) -> Interaction {
        let data = self.command_data(command, path, options, None);
        self.issue(2, user, channel, data, None)
    }

    /// Autocomplete (type 4): the partial values typed so far, `focused` being typed.
    pub fn autocomplete(&self, user: &str, channel: &str, command: &str, path: &[&str], options: &[(&str, Value)], focused: &str) -> Interaction {
        let data = self.command_data(command, path, options, Some(focused));
        self.issue(4, user, channel, data, None)
    }

    /// Delivers an interaction to an HTTP interactions endpoint as Discord does: signed with
    /// the test key now, POSTed as JSON. A 200 answer of an interaction other than PING is
    /// taken as its initial response (checked and applied like the callback route: within the
    /// deadline, once); a refused one is in [`FakeDiscord::problems`] and the returned status
    /// is Discord's. Returns the endpoint's status (or Discord's refusal) and its JSON answer.
    pub async fn deliver(&self, endpoint: &str, interaction: &Interaction) -> (u16, Value) {
        let (sig, ts) = interaction.signature(0);
        self.deliver_signed(endpoint, interaction, &sig, &ts).await
    }

    /// [`FakeDiscord::deliver`] with the given signature headers (forged, stale, …).
    pub async fn deliver_signed(&self, endpoint: &str, interaction: &Interaction, signature: &str, timestamp: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(endpoint)
            .header("content-type", "application/json")
            .header("x-signature-ed25519", signature)
            .header("x-signature-timestamp", timestamp)
            .body(interaction.body.clone())
            .send()
            .await;
        let Ok(resp) = resp else { return (0, Value::Null) };
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 && interaction.json()["type"] != 1 {
            let (s, err) = rest::inline_response(&self.inner, &interaction.id, &interaction.token, &answer);
            if s >= 300 {
                self.inner.with(|st| st.problems.push(format!("initial response refused: HTTP {s} {}", err.unwrap_or(Value::Null))));
                return (s, answer);
            }
        }
        (status, answer)
    }

    /// A button click (type 3) on `message` by `user`.
    pub fn click(&self, user: &str, message: &Posted, custom_id: &str) -> Interaction {
        let data = json!({"custom_id": custom_id, "component_type": 2});
        self.issue(3, user, &message.channel_id, data, Some(message))
    }
}
