//! What Slack sends, handled the same way whether it came over HTTP or Socket Mode: a slash
//! command, a block_actions click, an Events API event. Each handler does only what must
//! happen before the acknowledgement (checks, the durable record, event de-duplication) and
//! spawns the work; the caller acknowledges at once with the returned [`Ack`].

use super::SlackState;
use super::chat::slack_user;
use runbot_commands::audit::AuditEntry;
use runbot_commands::engine::{Click, Reply, Request};
use runbot_commands::message::Message;
use runbot_commands::model::{Identity, Origin};
use runbot_commands::ports::Chat;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::task::Poll;

/// The acknowledgement to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// An empty 200: "got it".
    Empty,
    /// A 200 carrying an ephemeral message for the person (bad input, store down).
    Message(String),
    /// A 200 carrying the engine's answer, rendered as Block Kit (an ephemeral message): the
    /// answer was ready before the ack (help, whoami, a typo), so it rides on it.
    Reply(Value),
    /// The url_verification challenge, echoed.
    Challenge(String),
    /// The request could not be recorded; Slack should retry (Events API only).
    Unavailable,
}

/// A slash command, as Slack sends it (form fields over HTTP, JSON over Socket Mode).
#[derive(Debug, Clone, Deserialize)]
pub struct CommandPayload {
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub channel_id: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub response_url: Option<String>,
    #[serde(default)]
    pub trigger_id: Option<String>,
    /// Slack's periodic certificate check of a distributed app's command URL.
    #[serde(default)]
    pub ssl_check: Option<String>,
}

/// Slack ids (users, channels, teams) are short upper-case alphanumerics.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

const UNREADABLE: &str = "runbot could not read this request from Slack, so it did nothing.";
const NOT_RECORDED: &str = "runbot could not record your command (its state store is unreachable), so it did nothing. Try again in a moment.";

/// Where a reply goes: the actor, and how to reach them privately.
#[derive(Debug, Clone)]
struct ReplyTo {
    identity: Identity,
    channel: String,
    thread: Option<String>,
    response_url: Option<String>,
}

impl SlackState {
    async fn record(&self, kind: &str, actor: &Identity, detail: Value) -> bool {
        let entry = AuditEntry { at: self.engine.now(), kind: kind.to_string(), actor: Some(actor.0.clone()), execution: None, detail };
        match self.engine.store().append_audit(&entry).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, kind, "could not record a Slack request");
                false
            }
        }
    }

    /// A slash command: recorded durably, acknowledged, then run. `inline`: the transport can
    /// carry an answer in the ack (HTTP; Socket Mode when the envelope accepts a payload).
    pub async fn on_command(&self, p: CommandPayload, inline: bool) -> Ack {
        if p.ssl_check.is_some() && p.user_id.is_empty() {
            return Ack::Empty;
        }
        if !valid_id(&p.user_id) || !valid_id(&p.channel_id) || p.text.chars().count() > 4000 {
            self.metrics.unreadable.fetch_add(1, Ordering::Relaxed);
            return Ack::Message(UNREADABLE.into());
        }
        self.metrics.commands.fetch_add(1, Ordering::Relaxed);
        // A place among the commands in flight first: when the engine is behind, the ack
        // waits (briefly) or the command is refused before anything is recorded or run.
        let Some(place) = self.metrics.backlog.admit().await else {
            return Ack::Message(crate::backlog::BUSY.into());
        };
        let identity = Identity::new(format!("slack:{}", p.user_id));
        let text = format!("/ops {}", p.text.trim());
        let req = Request {
            identity: identity.clone(),
            origin: Origin { platform: "slack".into(), channel: p.channel_id.clone(), thread: None },
            text,
            roles: Vec::new(),
        };
        // One durable record per command: the engine's command record, with what Slack sent.
        let mut detail = self.engine.command_detail(&req);
        detail["team"] = json!(p.team_id);
        detail["command"] = json!(p.command);
        detail["trigger_id"] = json!(p.trigger_id);
        if !self.record("slack.command", &identity, detail).await {
            return Ack::Message(NOT_RECORDED.into());
        }
        let to = ReplyTo { identity, channel: p.channel_id, thread: None, response_url: p.response_url };
        // Boxed: the engine's future (every command's path) is large, and a spawned task is
        // moved whole; this keeps the task small to spawn.
        let engine = self.engine.clone();
        let mut work = Box::pin(async move { engine.handle_recorded_command(req).await });
        // Polled once here: help, whoami and bad input are answered from memory, so the answer
        // is ready at once and goes back in the ack itself (Slack's "immediate response") — no
        // second request, nothing to wait for. Anything that waits (the store, a cluster, a
        // chat call) goes on after the ack, in its own task, and answers via the response_url.
        // (A future may move to another task between polls; the next poll brings its waker.)
        if inline && let Poll::Ready(mut reply) = futures::poll!(work.as_mut()) {
            let state = self.clone();
            return match state.inline_answer(&mut reply) {
                Some(body) => Ack::Reply(body),
                None => {
                    tokio::spawn(async move {
                        state.deliver(reply, &to).await;
                        drop(place);
                    });
                    Ack::Empty
                }
            };
        }
        let state = self.clone();
        tokio::spawn(async move {
            after_acks().await;
            let reply = work.await;
            state.deliver(reply, &to).await;
            drop(place);
        });
        Ack::Empty
    }

    /// "R-7 created — follow it in #create": names the channel that was created for it.
    fn name_created_channel(&self, mut msg: Message) -> Message {
        let placeholder = format!("#{}", super::chat::CREATE_CHANNEL);
        if msg.text.contains(&placeholder)
            && let Some(id) = msg.text.split_whitespace().next().filter(|w| w.starts_with("R-"))
            && let Some(c) = self.chat.created_channel(id)
        {
            msg.text = msg.text.replace(&placeholder, &format!("#{c}"));
        }
        msg
    }

    /// An answer ready before the ack, as the ack's body: a private message that renders
    /// within one message (no overflow replies). `None`: deliver `reply` as usual.
    fn inline_answer(&self, reply: &mut Reply) -> Option<Value> {
        if !reply.ephemeral {
            return None;
        }
        reply.message = self.name_created_channel(std::mem::take(&mut reply.message));
        let rendered = super::render::render(&reply.message);
        if !rendered.overflow.is_empty() {
            return None;
        }
        let mut body = rendered.main;
        let Value::Object(m) = &mut body else { return None };
        m.insert("response_type".into(), Value::String("ephemeral".into()));
        Some(body)
    }

    /// An interaction: block_actions clicks go to the engine, which re-reads everything.
    pub async fn on_interaction(&self, payload: Value) -> Ack {
        if payload["type"] != "block_actions" {
            tracing::debug!(kind = %payload["type"], "interaction type not handled");
            return Ack::Empty;
        }
        let user = payload["user"]["id"].as_str().unwrap_or("");
        let channel = payload["channel"]["id"].as_str().or_else(|| payload["container"]["channel_id"].as_str()).unwrap_or("");
        let actions = payload["actions"].as_array().cloned().unwrap_or_default();
        let trigger = payload["trigger_id"].as_str().unwrap_or("").to_string();
        let readable = valid_id(user)
            && valid_id(channel)
            && !actions.is_empty()
            && actions.len() <= 5
            && (trigger.is_empty() || valid_key(&trigger))
            && actions.iter().all(|a| {
                a["action_id"].as_str().is_some_and(|s| !s.is_empty() && s.len() <= 255) && a["value"].as_str().is_some_and(|v| v.len() <= 2000)
            });
        if !readable {
            self.metrics.unreadable.fetch_add(1, Ordering::Relaxed);
            return Ack::Message(UNREADABLE.into());
        }
        self.metrics.clicks.fetch_add(1, Ordering::Relaxed);
        let identity = Identity::new(format!("slack:{user}"));
        let message_ts = payload["container"]["message_ts"].as_str().or_else(|| payload["message"]["ts"].as_str()).map(str::to_string);
        let recorded = self
            .record(
                "slack.click",
                &identity,
                json!({"channel": channel, "actions": actions.iter().map(|a| a["action_id"].clone()).collect::<Vec<_>>(), "trigger_id": trigger}),
            )
            .await;
        if !recorded {
            return Ack::Message(NOT_RECORDED.into());
        }
        let to = ReplyTo {
            identity: identity.clone(),
            channel: channel.to_string(),
            thread: None,
            response_url: payload["response_url"].as_str().map(str::to_string),
        };
        let state = self.clone();
        let channel = channel.to_string();
        tokio::spawn(async move {
            after_acks().await;
            for a in actions {
                let action_id = a["action_id"].as_str().unwrap_or("").to_string();
                let action_ts = a["action_ts"].as_str().unwrap_or("").to_string();
                // A delivery key: the trigger (unique per delivery) and the button.
                let delivery = if !trigger.is_empty() {
                    Some(format!("slack:{trigger}:{action_id}"))
                } else if valid_key(&action_ts) {
                    Some(format!("slack:{user_key}:{action_ts}:{action_id}", user_key = identity.0))
                } else {
                    None
                };
                let click = Click {
                    identity: identity.clone(),
                    origin: Origin { platform: "slack".into(), channel: channel.clone(), thread: message_ts.clone() },
                    value: a["value"].as_str().unwrap_or("").to_string(),
                    delivery,
                    roles: Vec::new(),
                };
                let reply = state.engine.handle_click(click).await;
                state.deliver(reply, &to).await;
            }
        });
        Ack::Empty
    }

    /// An Events API envelope. `url_verification` is answered; every `event_callback` is
    /// handled once per `event_id`, however often Slack retries it.
    pub async fn on_event(&self, envelope: Value) -> Ack {
        match envelope["type"].as_str() {
            Some("url_verification") => {
                let c = envelope["challenge"].as_str().unwrap_or("");
                return if c.is_empty() || c.len() > 1000 { Ack::Message(UNREADABLE.into()) } else { Ack::Challenge(c.to_string()) };
            }
            Some("event_callback") => {}
            other => {
                tracing::debug!(kind = ?other, "event envelope type not handled");
                return Ack::Empty;
            }
        }
        let Some(event_id) = envelope["event_id"].as_str().filter(|e| valid_key(e)) else {
            self.metrics.unreadable.fetch_add(1, Ordering::Relaxed);
            return Ack::Empty;
        };
        // Too much in flight: not recorded as delivered, so Slack's retry is handled later.
        let Some(place) = self.metrics.backlog.admit().await else {
            return Ack::Unavailable;
        };
        match self.engine.store().first_delivery(&format!("slack-event:{event_id}"), self.engine.now()).await {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.duplicate_events.fetch_add(1, Ordering::Relaxed);
                tracing::info!(event_id, "repeated Slack event ignored");
                return Ack::Empty;
            }
            Err(e) => {
                tracing::error!(error = %e, event_id, "could not record a Slack event; asking Slack to retry");
                return Ack::Unavailable;
            }
        }
        self.metrics.events.fetch_add(1, Ordering::Relaxed);
        let ev = &envelope["event"];
        if ev["type"] != "app_mention" || ev.get("bot_id").is_some_and(|b| !b.is_null()) {
            return Ack::Empty;
        }
        let user = ev["user"].as_str().unwrap_or("");
        let channel = ev["channel"].as_str().unwrap_or("");
        if !valid_id(user) || !valid_id(channel) {
            return Ack::Empty;
        }
        // "@runbot restart promotions-api" is "/ops restart promotions-api".
        let raw = ev["text"].as_str().unwrap_or("");
        let rest = strip_mentions(raw);
        let identity = Identity::new(format!("slack:{user}"));
        let text = format!("/ops {rest}");
        let thread = ev["thread_ts"].as_str().map(str::to_string);
        let req = Request {
            identity: identity.clone(),
            origin: Origin { platform: "slack".into(), channel: channel.to_string(), thread: thread.clone() },
            text,
            roles: Vec::new(),
        };
        let mut detail = self.engine.command_detail(&req);
        detail["event_id"] = json!(event_id);
        if !self.record("slack.mention", &identity, detail).await {
            return Ack::Unavailable;
        }
        let to = ReplyTo { identity, channel: channel.to_string(), thread, response_url: None };
        let state = self.clone();
        tokio::spawn(async move {
            after_acks().await;
            let reply = state.engine.handle_recorded_command(req).await;
            state.deliver(reply, &to).await;
            drop(place);
        });
        Ack::Empty
    }

    /// Shows the engine's reply to the person who acted: privately through the response_url
    /// (or chat.postEphemeral), or in the channel when the reply is public.
    async fn deliver(&self, reply: Reply, to: &ReplyTo) {
        let msg = self.name_created_channel(reply.message);
        let res = if reply.ephemeral {
            let via_url = match &to.response_url {
                Some(u) => self
                    .chat
                    .respond(u, &msg)
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "response_url reply failed; trying chat.postEphemeral"))
                    .is_ok(),
                None => false,
            };
            if via_url { Ok(()) } else { self.chat.ephemeral(&to.channel, &to.identity, &msg).await }
        } else {
            self.chat.post(&to.channel, to.thread.as_deref(), &msg).await.map(|_| ())
        };
        if let Err(e) = res {
            tracing::error!(error = %e, user = slack_user(&to.identity).unwrap_or(""), "could not deliver a reply in Slack");
        }
    }
}

/// Lets the acknowledgements that are ready go out before the work they started: a task
/// spawned by a handler would otherwise run next on its thread, ahead of the other requests
/// already waiting for their ack.
async fn after_acks() {
    tokio::task::yield_now().await;
}

/// Removes leading `<@U…>` mentions.
pub fn strip_mentions(text: &str) -> String {
    let mut t = text.trim();
    while let Some(rest) = t.strip_prefix("<@") {
        match rest.find('>') {
            Some(i) => t = rest[i + 1..].trim_start(),
            None => break,
        }
    }
    t.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_stripped_and_ids_checked() {
        assert_eq!(strip_mentions("<@U0BOT> restart promotions-api"), "restart promotions-api");
        assert_eq!(strip_mentions("  <@U0BOT>  <@U1> help"), "help");
        assert_eq!(strip_mentions("<@U0BOT"), "<@U0BOT");
        assert!(valid_id("U2CERLKJA") && !valid_id("") && !valid_id("U1;drop") && !valid_id(&"U".repeat(33)));
    }
}
