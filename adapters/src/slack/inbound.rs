//! What Slack sends, handled the same way whether it came over HTTP or Socket Mode: a slash
//! command, a block_actions click, an Events API event. Each handler checks what it received,
//! reads it into a [`Received`] and hands it to the shared inbound pipeline
//! ([`crate::inbound::Pipeline::receive`]: de-duplicated, recorded durably, then acted on);
//! the caller acknowledges at once with the returned [`Ack`]. Answers go back through
//! [`SlackState`]'s [`Replies`]: the response_url, else `chat.postEphemeral`, or the channel.
//!
//! De-duplication keys: a command's and a click's `trigger_id` (unique per invocation), else
//! the transport's own delivery key (the signed body's hash over HTTP, the Socket Mode
//! envelope id); an event's `event_id`.

use super::SlackState;
use super::chat::slack_user;
use crate::inbound::{Outcome, Received, Replies, Work};
use async_trait::async_trait;
use axum::body::Bytes;
use runbot_commands::engine::{Click, Reply, Request};
use runbot_commands::message::Message;
use runbot_commands::model::{Identity, Origin};
use runbot_commands::ports::Chat;
use serde::Deserialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// The acknowledgement to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// An empty 200: "got it".
    Empty,
    /// A 200 carrying an ephemeral message for the person (bad input, store down).
    Message(String),
    /// A 200 carrying the engine's answer, rendered as Block Kit (an ephemeral message, JSON): the
    /// answer was ready before the ack (help, whoami, a typo), so it rides on it.
    Reply(Bytes),
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

impl CommandPayload {
    /// Reads a slash command's form body as `serde_urlencoded` would into this struct (unknown
    /// fields ignored, a repeated known field refused, invalid UTF-8 replaced), decoding only
    /// the fields it keeps: it is on every ack's path. `None`: unreadable.
    pub fn from_form(body: &[u8]) -> Option<CommandPayload> {
        let mut p = CommandPayload {
            team_id: String::new(),
            channel_id: String::new(),
            user_id: String::new(),
            command: String::new(),
            text: String::new(),
            response_url: None,
            trigger_id: None,
            ssl_check: None,
        };
        let mut seen = 0u8;
        for pair in body.split(|b| *b == b'&').filter(|pair| !pair.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            // A name is decoded only when it is encoded (Slack's never are); a value only when
            // its field is kept.
            let name: Cow<'_, [u8]> =
                if name.iter().any(|b| matches!(b, b'%' | b'+')) { Cow::Owned(form_decode(name).into_bytes()) } else { Cow::Borrowed(name) };
            let (bit, slot): (u8, &mut String) = match &*name {
                b"team_id" => (1, &mut p.team_id),
                b"channel_id" => (2, &mut p.channel_id),
                b"user_id" => (4, &mut p.user_id),
                b"command" => (8, &mut p.command),
                b"text" => (16, &mut p.text),
                b"response_url" => (32, p.response_url.insert(String::new())),
                b"trigger_id" => (64, p.trigger_id.insert(String::new())),
                b"ssl_check" => (128, p.ssl_check.insert(String::new())),
                _ => continue,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            *slot = form_decode(value);
        }
        Some(p)
    }
}

/// One `application/x-www-form-urlencoded` name or value, as `form_urlencoded` decodes it:
/// `+` is a space, `%XX` a byte (a `%` without two hex digits stays), invalid UTF-8 replaced.
fn form_decode(s: &[u8]) -> String {
    if !s.iter().any(|b| matches!(b, b'%' | b'+')) {
        return String::from_utf8_lossy(s).into_owned();
    }
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let (byte, used) = match s[i] {
            b'+' => (b' ', 1),
            b'%' => match (s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex)) {
                (Some(hi), Some(lo)) => (hi << 4 | lo, 3),
                _ => (b'%', 1),
            },
            b => (b, 1),
        };
        out.push(byte);
        i += used;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Slack ids (users, channels, teams) are short upper-case alphanumerics.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(super) fn valid_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

const UNREADABLE: &str = "runbot could not read this request from Slack, so it did nothing.";
const NOT_RECORDED: &str = "runbot could not record your command (its state store is unreachable), so it did nothing. Try again in a moment.";

/// Where a reply goes: the actor, and how to reach them privately (kept with the inbox entry).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct ReplyTo {
    user: String,
    channel: String,
    #[serde(default)]
    thread: Option<String>,
    #[serde(default)]
    response_url: Option<String>,
}

/// The inbox key of a command or click: its trigger, else the transport's delivery key, else
/// (nothing stable to go by) a key of its own.
fn delivery_key(kind: &str, trigger: Option<&str>, fallback: Option<&str>) -> String {
    match (trigger.filter(|t| valid_key(t)), fallback.filter(|f| valid_key(f))) {
        (Some(t), _) => format!("slack:{kind}:{t}"),
        (None, Some(f)) => format!("slack:{kind}:d:{f}"),
        (None, None) => {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let at = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            format!("slack:{kind}:u:{at}-{}", N.fetch_add(1, Ordering::Relaxed))
        }
    }
}

impl SlackState {
    fn ack(&self, outcome: Outcome) -> Ack {
        match outcome {
            Outcome::Accepted | Outcome::Duplicate => Ack::Empty,
            Outcome::Answered(body) => Ack::Reply(body),
            Outcome::NotRecorded => Ack::Message(NOT_RECORDED.into()),
        }
    }

    /// A slash command. `inline`: the transport can carry an answer in the ack (HTTP; Socket
    /// Mode when the envelope accepts a payload). `fallback`: the transport's delivery key.
    pub async fn on_command(&self, p: CommandPayload, inline: bool, fallback: Option<&str>) -> Ack {
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
        let req = Request {
            identity: Identity::new(format!("slack:{}", p.user_id)),
            origin: Origin { platform: "slack".into(), channel: p.channel_id.clone(), thread: None },
            text: format!("/ops {}", p.text.trim()),
            roles: Vec::new(),
        };
        // One durable record per command: the engine's command record, with what Slack sent.
        let mut detail = self.engine().command_detail(&req);
        detail["team"] = json!(p.team_id);
        detail["command"] = json!(p.command);
        detail["trigger_id"] = json!(p.trigger_id);
        let to = ReplyTo { user: p.user_id, channel: p.channel_id, thread: None, response_url: p.response_url };
        let received = Received {
            platform: "slack",
            key: delivery_key("command", p.trigger_id.as_deref(), fallback),
            work: Work::Command(req),
            reply_to: json!(to),
            audit_kind: "slack.command",
            audit_detail: detail,
        };
        let outcome = self.pipeline.receive(received, Some(place), inline).await;
        self.ack(outcome)
    }

    /// An interaction: block_actions clicks go to the engine, which re-reads everything.
    pub async fn on_interaction(&self, payload: Value, fallback: Option<&str>) -> Ack {
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
        let clicks = actions
            .iter()
            .map(|a| Click {
                identity: identity.clone(),
                origin: Origin { platform: "slack".into(), channel: channel.to_string(), thread: message_ts.clone() },
                value: a["value"].as_str().unwrap_or("").to_string(),
                // The inbox de-duplicates the delivery.
                delivery: None,
                roles: Vec::new(),
            })
            .collect();
        let to = ReplyTo {
            user: user.to_string(),
            channel: channel.to_string(),
            thread: None,
            response_url: payload["response_url"].as_str().map(str::to_string),
        };
        let received = Received {
            platform: "slack",
            key: delivery_key("click", Some(&trigger), fallback),
            work: Work::Clicks { clicks },
            reply_to: json!(to),
            audit_kind: "slack.click",
            audit_detail: json!({"channel": channel, "actions": actions.iter().map(|a| a["action_id"].clone()).collect::<Vec<_>>(), "trigger_id": trigger}),
        };
        let outcome = self.pipeline.receive(received, None, false).await;
        self.ack(outcome)
    }

    /// An Events API envelope. `url_verification` is answered; an `app_mention` is a command,
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
        // Too much in flight: not recorded, so Slack's retry is handled later.
        let Some(place) = self.metrics.backlog.admit().await else {
            return Ack::Unavailable;
        };
        // "@runbot restart promotions-api" is "/ops restart promotions-api".
        let rest = strip_mentions(ev["text"].as_str().unwrap_or(""));
        let thread = ev["thread_ts"].as_str().map(str::to_string);
        let req = Request {
            identity: Identity::new(format!("slack:{user}")),
            origin: Origin { platform: "slack".into(), channel: channel.to_string(), thread: thread.clone() },
            text: format!("/ops {rest}"),
            roles: Vec::new(),
        };
        let mut detail = self.engine().command_detail(&req);
        detail["event_id"] = json!(event_id);
        let to = ReplyTo { user: user.to_string(), channel: channel.to_string(), thread, response_url: None };
        let received = Received {
            platform: "slack",
            key: format!("slack:event:{event_id}"),
            work: Work::Command(req),
            reply_to: json!(to),
            audit_kind: "slack.mention",
            audit_detail: detail,
        };
        match self.pipeline.receive(received, Some(place), false).await {
            Outcome::Duplicate => {
                self.metrics.duplicate_events.fetch_add(1, Ordering::Relaxed);
                Ack::Empty
            }
            // Not recorded: Slack retries the event.
            Outcome::NotRecorded => Ack::Unavailable,
            Outcome::Accepted | Outcome::Answered(_) => Ack::Empty,
        }
    }

    /// "R-7 created — follow it in #create": names the channel that was created for it.
    fn name_created_channel(&self, mut msg: Message) -> Message {
        crate::inbound::name_created_channel(&mut msg, super::chat::CREATE_CHANNEL, |id| self.chat.created_channel(id));
        msg
    }
}

#[async_trait]
impl Replies for SlackState {
    /// Shows the engine's reply to the person who acted: privately through the response_url
    /// (or chat.postEphemeral), or in the channel when the reply is public.
    async fn deliver(&self, reply: Reply, to: &Value) {
        let Ok(to) = serde_json::from_value::<ReplyTo>(to.clone()) else {
            tracing::error!("a Slack reply address is unreadable; the reply was not delivered");
            return;
        };
        let identity = Identity::new(format!("slack:{}", to.user));
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
            if via_url { Ok(()) } else { self.chat.ephemeral(&to.channel, &identity, &msg).await }
        } else {
            self.chat.post(&to.channel, to.thread.as_deref(), &msg).await.map(|_| ())
        };
        if let Err(e) = res {
            tracing::error!(error = %e, user = slack_user(&identity).unwrap_or(""), "could not deliver a reply in Slack");
        }
    }

    /// An answer ready before the ack, as the ack's body: a private message that renders
    /// within one message (no overflow replies).
    fn inline_answer(&self, reply: &mut Reply) -> Option<Bytes> {
        if !reply.ephemeral {
            return None;
        }
        reply.message = self.name_created_channel(std::mem::take(&mut reply.message));
        self.acks.body(&reply.message)
    }
}

/// The ack bodies of the last few answers given in acks. The same few answers (help, whoami,
/// a typo's) repeat for each person, and rendering Block Kit was a good part of an ack's cost:
/// an answer equal to one rendered lately reuses its body.
#[derive(Default)]
pub(crate) struct AckBodies(Mutex<VecDeque<(Message, Option<Bytes>)>>);

/// How many rendered answers [`AckBodies`] keeps.
const ACK_BODIES: usize = 16;

impl AckBodies {
    /// `msg` as an ephemeral ack body; `None` when it does not fit in one message.
    fn body(&self, msg: &Message) -> Option<Bytes> {
        if let Some((_, body)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(m, _)| m == msg) {
            return body.clone();
        }
        let rendered = super::render::render(msg);
        let body = rendered.overflow.is_empty().then(|| {
            let mut body = rendered.main;
            if let Value::Object(m) = &mut body {
                m.insert("response_type".into(), Value::String("ephemeral".into()));
            }
            Bytes::from(body.to_string())
        });
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() == ACK_BODIES {
            cache.pop_back();
        }
        cache.push_front((msg.clone(), body.clone()));
        body
    }
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
    fn slash_command_forms_read_as_serde_urlencoded_reads_them() {
        let key = |p: &CommandPayload| (p.team_id.clone(), p.channel_id.clone(), p.user_id.clone(), p.command.clone(), p.text.clone());
        let rest = |p: &CommandPayload| (p.response_url.clone(), p.trigger_id.clone(), p.ssl_check.clone());
        for body in [
            &b"token=x&team_id=T1&channel_id=C1&user_id=U1&command=%2Fops&text=restart+promotions-api&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&trigger_id=1.2.3"[..],
            b"",
            b"user_id=U1",
            b"text=%E2%9C%85+caf%C3%A9+%3Cb%3E&unknown=1&unknown=2",
            b"text=%FF%FE&ssl_check=1",
            b"text=a=b&&=&response_url=&trigger_id=",
            b"user_id=U1&user_id=U2",
            b"text=a&text=b",
            b"trigger_id=1&trigger_id=1",
            b"user%5Fid=U1&te%78t=a+b%2Bc&channel_id",
            b"user+id=U1&text+=x&=y&text=%E2%9C",
            b"text=100%25+%zz+%4+%+%C3%A9%e2%9c%85&command=%2fops%",
        ] {
            let ours = CommandPayload::from_form(body);
            let theirs = serde_urlencoded::from_bytes::<CommandPayload>(body).ok();
            assert_eq!(ours.as_ref().map(|p| (key(p), rest(p))), theirs.as_ref().map(|p| (key(p), rest(p))), "{}", String::from_utf8_lossy(body));
        }
        assert!(CommandPayload::from_form(b"user_id=U1&user_id=U2").is_none(), "a repeated field is refused");
    }

    #[test]
    fn mentions_are_stripped_and_ids_checked() {
        assert_eq!(strip_mentions("<@U0BOT> restart promotions-api"), "restart promotions-api");
        assert_eq!(strip_mentions("  <@U0BOT>  <@U1> help"), "help");
        assert_eq!(strip_mentions("<@U0BOT"), "<@U0BOT");
        assert!(valid_id("U2CERLKJA") && !valid_id("") && !valid_id("U1;drop") && !valid_id(&"U".repeat(33)));
    }
}
