//! Slack as a [`Chat`]: the Web API through slack-morphism (chat.postMessage, chat.update,
//! chat.postEphemeral, conversations.create/invite, response_url replies) against a
//! configurable base URL. Posts into one channel are paced (at most one per interval, 1 s by
//! default: chat.postMessage's per-channel limit); edits draw on a budget of chat.update calls
//! for the whole workspace (its Tier 3 limit is per method, not per channel), final states
//! first. A 429's Retry-After is honoured, and incident channels can be created per execution
//! (`incident_channel = { slack = "create" }`).
//!
//! Message ids handed to the engine are `CHANNEL/TS`, so a message posted into a channel
//! created here is found again when the engine edits it under the configured name.

use super::render::{Rendered, render};
use crate::tls::LazyHttpsConnector;
use async_trait::async_trait;
use runbot_commands::message::Message;
use runbot_commands::model::Identity;
use runbot_commands::ports::{Chat, ChatError};
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The configured "channel" that means: create one channel per execution.
pub const CREATE_CHANNEL: &str = "create";

/// How many times a post waits out a 429 itself before giving up with `RateLimited`.
const POST_RETRIES: u32 = 5;
/// The longest Retry-After waited out inside a post.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(60);
/// How long an edit turn taken ahead ([`Chat::edit_turn`]) stays usable: the edit is rendered
/// and sent right after it; an unused turn must not let a later edit skip the budget.
const EDIT_TURN_TTL: Duration = Duration::from_millis(500);

pub type SlackHttpClient = SlackClient<SlackClientHyperConnector<LazyHttpsConnector>>;

/// The client for response_url replies: plain hyper on the same kind of connector. A reply is
/// one JSON POST whose answer is only a status, so it skips slack-morphism's typed round trip
/// (content decoded from the rendered JSON and encoded again, the answer decoded twice).
type HookClient = hyper_util::client::legacy::Client<LazyHttpsConnector, String>;

/// Everything [`SlackChat`] needs; secrets already resolved.
#[derive(Clone)]
pub struct SlackChatOptions {
    /// `https://slack.com/api` in production; the fake's `http://127.0.0.1:PORT/api` in tests.
    pub api_url: String,
    pub bot_token: runbot_commands::config::Secret,
    /// Minimum time between two posts into one channel.
    pub post_interval: Duration,
    /// chat.update calls a minute for the whole workspace; 0 = not paced.
    pub edits_per_minute: u32,
    /// Slack user ids invited into every created incident channel (besides the requester).
    pub invite: Vec<String>,
}

pub struct SlackChat {
    client: Arc<SlackHttpClient>,
    /// The Web API's base, for the calls made with plain HTTP (file uploads).
    api_url: String,
    hooks: HookClient,
    token: SlackApiToken,
    interval: Duration,
    invite: Vec<String>,
    /// Per channel: when the next post may go out.
    next_slot: Mutex<HashMap<String, Instant>>,
    /// The workspace's chat.update budget.
    edits: super::budget::MethodBudget,
    /// Per channel: edit turns taken ahead by [`Chat::edit_turn`], not yet used by an edit.
    edit_turns: Mutex<HashMap<String, Vec<Instant>>>,
    /// A store shared with other replicas, which then pace each channel together.
    shared_pacing: std::sync::OnceLock<Arc<dyn runbot_commands::ports::Store>>,
    /// Incident channels created here, by execution id (`R-42`).
    created: Mutex<HashMap<String, String>>,
    /// The overflow last posted under a message, so an edit re-posts it only when it changed.
    overflow_sent: crate::overflow::OverflowMemo,
}

/// The Web API client (slack-morphism) on the lazily-TLS'd connector.
fn web_api(https: LazyHttpsConnector, api_url: &str) -> Arc<SlackHttpClient> {
    let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(api_url.trim_end_matches('/'));
    Arc::new(SlackClient::new(connector))
}

/// A short, secret-free description of a client error; rate limits become `RateLimited`.
pub fn chat_error(e: SlackClientError) -> ChatError {
    match e {
        SlackClientError::RateLimitError(r) => ChatError::RateLimited(r.retry_after.unwrap_or(Duration::from_secs(1))),
        SlackClientError::ApiError(a) => ChatError::Other(format!("Slack API error: {}", a.code)),
        SlackClientError::HttpError(h) => ChatError::Other(format!("Slack HTTP status {}", h.status_code)),
        other => ChatError::Other(format!("Slack request failed: {}", first_line(&other.to_string()))),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

fn content(v: &Value) -> Result<SlackMessageContent, ChatError> {
    serde_json::from_value(v.clone()).map_err(|e| ChatError::Other(format!("rendering for Slack: {e}")))
}

fn url_scheme(u: &hyper::Uri) -> Option<&str> {
    u.scheme_str().filter(|_| u.host().is_some())
}

/// `CHANNEL/TS` → (channel, ts); a bare ts belongs to `channel`.
fn split_id<'a>(channel: &'a str, id: &'a str) -> (&'a str, &'a str) {
    id.split_once('/').unwrap_or((channel, id))
}

/// The Slack user id of a `slack:U…` identity.
pub fn slack_user(id: &Identity) -> Option<&str> {
    id.0.strip_prefix("slack:").filter(|u| !u.is_empty())
}

impl SlackChat {
    pub fn new(opts: SlackChatOptions) -> Result<Self, String> {
        // https (native roots, loaded on the first https:// call) or, for a local fake, http.
        let https = LazyHttpsConnector::default();
        let hooks = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https.clone());
        Ok(SlackChat {
            client: web_api(https, &opts.api_url),
            api_url: opts.api_url.clone(),
            hooks,
            token: SlackApiToken::new(opts.bot_token.expose().to_string().into()),
            interval: opts.post_interval,
            invite: opts.invite,
            next_slot: Mutex::new(HashMap::new()),
            edits: super::budget::MethodBudget::new("chat.update", opts.edits_per_minute),
            edit_turns: Mutex::new(HashMap::new()),
            shared_pacing: std::sync::OnceLock::new(),
            created: Mutex::new(HashMap::new()),
            overflow_sent: Default::default(),
        })
    }

    pub fn client(&self) -> &Arc<SlackHttpClient> {
        &self.client
    }

    /// Paces every channel, and spends the chat.update budget, together with the other
    /// replicas on `store` (when several processes share it): each write also reserves its
    /// slot in the store.
    pub fn share_pacing(&self, store: Arc<dyn runbot_commands::ports::Store>) {
        if store.shared() {
            self.edits.share(store.clone());
            let _ = self.shared_pacing.set(store);
        }
    }

    /// Uses an edit turn taken ahead for `channel` (fresh: at most [`EDIT_TURN_TTL`] old), if any.
    fn take_edit_turn(&self, channel: &str) -> bool {
        let Ok(mut m) = self.edit_turns.lock() else { return false };
        let now = Instant::now();
        let Some(turns) = m.get_mut(channel) else { return false };
        turns.retain(|t| now.duration_since(*t) <= EDIT_TURN_TTL);
        let took = turns.pop().is_some();
        if turns.is_empty() {
            m.remove(channel);
        }
        took
    }

    /// Waits for this channel's next write slot (at most one write per interval, counted by
    /// this process and, with [`SlackChat::share_pacing`], by all replicas together).
    async fn pace(&self, channel: &str) {
        if self.interval.is_zero() {
            return;
        }
        let shared = match self.shared_pacing.get() {
            Some(store) => match store.take_slot(&format!("slack:{channel}"), self.interval, chrono::Utc::now()).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(channel, error = %e, "shared pacing unavailable; pacing this process's writes only");
                    Duration::ZERO
                }
            },
            None => Duration::ZERO,
        };
        let wait = {
            let Ok(mut m) = self.next_slot.lock() else { return };
            let now = Instant::now();
            let slot = m.get(channel).copied().filter(|t| *t > now).unwrap_or(now);
            m.insert(channel.to_string(), slot + self.interval);
            if m.len() > 10_000 {
                m.retain(|_, t| *t > now);
            }
            slot - now
        };
        let wait = wait.max(shared);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Pushes the channel's next slot past a 429's Retry-After.
    fn back_off(&self, channel: &str, wait: Duration) {
        if let Ok(mut m) = self.next_slot.lock() {
            let until = Instant::now() + wait;
            let e = m.entry(channel.to_string()).or_insert(until);
            if *e < until {
                *e = until;
            }
        }
    }

    /// One chat.postMessage, waiting out rate limits a few times (the engine does not retry
    /// the first post of a status message).
    async fn post_content(&self, channel: &str, thread: Option<&str>, v: &Value) -> Result<String, ChatError> {
        let mut req = SlackApiChatPostMessageRequest::new(channel.to_string().into(), content(v)?);
        req.thread_ts = thread.map(|t| SlackTs::new(t.to_string()));
        let mut attempt = 0;
        loop {
            self.pace(channel).await;
            match self.client.open_session(&self.token).chat_post_message(&req).await {
                Ok(r) => return Ok(r.ts.to_string()),
                Err(e) => match chat_error(e) {
                    ChatError::RateLimited(wait) if attempt < POST_RETRIES && wait <= MAX_INLINE_WAIT => {
                        attempt += 1;
                        tracing::warn!(channel, wait_ms = wait.as_millis() as u64, attempt, "chat.postMessage rate limited; waiting");
                        self.back_off(channel, wait);
                    }
                    other => return Err(other),
                },
            }
        }
    }

    /// Posts the overflow parts of a message into its thread, once per distinct overflow.
    async fn post_overflow(&self, channel: &str, ts: &str, r: &Rendered) -> Result<(), ChatError> {
        if r.overflow.is_empty() {
            return Ok(());
        }
        let hash = crate::overflow::OverflowMemo::fingerprint(&r.overflow);
        let key = format!("{channel}/{ts}");
        if self.overflow_sent.posted(&key, hash) {
            return Ok(());
        }
        for part in &r.overflow {
            self.post_content(channel, Some(ts), part).await?;
        }
        self.overflow_sent.remember(&key, hash);
        Ok(())
    }

    /// The channel for a status message configured as [`CREATE_CHANNEL`]: one per execution,
    /// `inc-<yyyymmdd>-<runbook>-<number>`, with the requester and the configured people invited.
    async fn incident_channel(&self, msg: &Message) -> Result<String, ChatError> {
        // The status message's title is `R-42 · restart promotions-api (prod)`.
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
        let base = format!("inc-{}-{}-{}", chrono::Utc::now().format("%Y%m%d"), clean(&runbook), clean(&num));
        let base: String = base.chars().take(72).collect();
        let session = self.client.open_session(&self.token);
        let mut channel = None;
        for n in 0..5 {
            let name = if n == 0 { base.clone() } else { format!("{base}-{}", n + 1) };
            match session.conversations_create(&SlackApiConversationsCreateRequest::new(name.clone())).await {
                Ok(r) => {
                    tracing::info!(channel = %r.channel.id, name, execution = %exec, "incident channel created");
                    channel = Some(r.channel.id.to_string());
                    break;
                }
                Err(SlackClientError::ApiError(a)) if a.code == "name_taken" => continue,
                Err(e) => return Err(chat_error(e)),
            }
        }
        let Some(channel) = channel else {
            return Err(ChatError::Other(format!("could not create an incident channel named {base}: the names are taken")));
        };
        let requester = msg.fields.iter().find(|(k, _)| k == "Requested by").and_then(|(_, v)| v.strip_prefix("slack:"));
        let mut users: Vec<SlackUserId> =
            requester.into_iter().chain(self.invite.iter().map(|s| s.as_str())).map(|u| SlackUserId::new(u.to_string())).collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        users.dedup();
        if !users.is_empty()
            && let Err(e) = session.conversations_invite(&SlackApiConversationsInviteRequest::new(channel.clone().into(), users)).await
        {
            // The channel is usable without the invitations; say so in the logs.
            tracing::warn!(channel, error = %chat_error(e), "inviting people into the incident channel failed");
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

    /// An ephemeral reply through a response_url (commands and clicks carry one): the rendered
    /// message as JSON with `replace_original: false`. Slack answers 2xx when it took it, 429
    /// with Retry-After when asked to slow down, 404 once the URL expired (30 minutes, 5 uses).
    pub async fn respond(&self, response_url: &str, msg: &Message) -> Result<(), ChatError> {
        let uri: hyper::Uri = match response_url.parse() {
            Ok(u) if matches!(url_scheme(&u), Some("https" | "http")) => u,
            _ => return Err(ChatError::Other("unreadable response_url".into())),
        };
        let mut body = render(msg).main;
        if let Value::Object(m) = &mut body {
            m.insert("replace_original".into(), Value::Bool(false));
        }
        let body = serde_json::to_string(&body).map_err(|e| ChatError::Other(format!("rendering for Slack: {e}")))?;
        let req = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body)
            .map_err(|e| ChatError::Other(format!("building the response_url request: {e}")))?;
        let res = self.hooks.request(req).await.map_err(|e| ChatError::Other(format!("Slack request failed: {}", first_line(&e.to_string()))))?;
        let status = res.status();
        let retry_after = res.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.trim().parse().ok());
        // Read the answer to its end, so the connection goes back to the pool.
        let mut incoming = res.into_body();
        while let Some(frame) = std::future::poll_fn(|cx| hyper::body::Body::poll_frame(std::pin::Pin::new(&mut incoming), cx)).await {
            frame.map_err(|e| ChatError::Other(format!("reading Slack's answer: {}", first_line(&e.to_string()))))?;
        }
        match status.as_u16() {
            200..=299 => Ok(()),
            429 => Err(ChatError::RateLimited(Duration::from_secs(retry_after.unwrap_or(1)))),
            code => Err(ChatError::Other(format!("Slack HTTP status {code}"))),
        }
    }
}

#[async_trait]
impl Chat for SlackChat {
    fn platform(&self) -> &'static str {
        "slack"
    }

    async fn post(&self, channel: &str, thread: Option<&str>, msg: &Message) -> Result<String, ChatError> {
        let (channel, thread) = match thread {
            Some(t) => {
                let (c, ts) = split_id(channel, t);
                (c.to_string(), Some(ts.to_string()))
            }
            None if channel == CREATE_CHANNEL => (self.incident_channel(msg).await?, None),
            None => (channel.to_string(), None),
        };
        let r = render(msg);
        let ts = self.post_content(&channel, thread.as_deref(), &r.main).await?;
        // Overflow of a top-level message goes into its own thread; of a reply, after it.
        let parent = thread.clone().unwrap_or_else(|| ts.clone());
        self.post_overflow(&channel, &parent, &r).await?;
        Ok(format!("{channel}/{ts}"))
    }

    async fn update(&self, channel: &str, id: &str, msg: &Message) -> Result<(), ChatError> {
        let (channel, ts) = split_id(channel, id);
        let r = render(msg);
        let req = SlackApiChatUpdateRequest::new(channel.to_string().into(), content(&r.main)?, SlackTs::new(ts.to_string()));
        if !self.take_edit_turn(channel) {
            self.edits.wait(false).await;
        }
        match self.client.open_session(&self.token).chat_update(&req).await {
            Ok(_) => {}
            Err(e) => {
                let e = chat_error(e);
                if let ChatError::RateLimited(wait) = &e {
                    self.edits.back_off(*wait);
                }
                return Err(e);
            }
        }
        self.post_overflow(channel, ts, &r).await
    }

    async fn edit_turn(&self, channel: &str, urgent: bool) {
        self.edits.wait(urgent).await;
        if let Ok(mut m) = self.edit_turns.lock() {
            m.entry(channel.to_string()).or_default().push(Instant::now());
        }
    }

    async fn ephemeral(&self, channel: &str, to: &Identity, msg: &Message) -> Result<(), ChatError> {
        let Some(user) = slack_user(to) else {
            return Err(ChatError::Other(format!("{to} is not a Slack identity")));
        };
        let channel = if channel == CREATE_CHANNEL { return Err(ChatError::Other("no channel to answer in".into())) } else { channel };
        let r = render(msg);
        let req = SlackApiChatPostEphemeralRequest::new(channel.to_string().into(), SlackUserId::new(user.to_string()), content(&r.main)?);
        self.client.open_session(&self.token).chat_post_ephemeral(&req).await.map(|_| ()).map_err(chat_error)
    }

    async fn upload(&self, channel: &str, thread: Option<&str>, file: &runbot_commands::ports::Upload, comment: &str) -> Result<String, ChatError> {
        let (channel, ts) = match thread {
            Some(t) => {
                let (c, ts) = split_id(channel, t);
                (c, Some(ts))
            }
            None => (channel, None),
        };
        self.pace(channel).await;
        super::upload::upload(&self.hooks, &self.api_url, &self.token.token_value.0, channel, ts, file, comment).await
    }

    fn max_text(&self) -> usize {
        super::render::MAX_SECTION
    }
}
