//! What Discord sends, handled the same way whichever transport brought it: the HTTP
//! interactions endpoint (`http.rs`, after the signature check) or the gateway. The single
//! entry point is [`DiscordState::handle_interaction`]: it does what must happen before the
//! initial response (validation, de-duplication, the durable record), spawns the work, and
//! returns the initial response — within Discord's 3 seconds.
//!
//! - PING (1) → PONG (1).
//! - APPLICATION_COMMAND (2): the `/ops` sub-command and its typed options become the `/ops …`
//!   text ([`super::commands::text_of`]); handed to the shared inbound pipeline
//!   ([`crate::inbound`]: de-duplicated by interaction id, recorded durably as
//!   `discord.command`, carrying `Engine::command_detail`, the command's only audit record);
//!   answered with 5 (deferred, EPHEMERAL); the engine's reply then replaces the "thinking"
//!   response (`@original`).
//! - MESSAGE_COMPONENT (3): a button; through the same pipeline (`discord.click`); answered
//!   with 6 (deferred update: the status message stays as the engine keeps it);
//!   `Engine::handle_click` as `discord:<user id>`, with the member's roles (a repeated
//!   delivery, same interaction id, changes nothing); its reply is an ephemeral follow-up.
//! - APPLICATION_COMMAND_AUTOCOMPLETE (4): 8 with up to 25 choices starting with what was
//!   typed: configured services, databases, environments, runbooks, open executions.
//! - Anything else: an ephemeral message saying runbot does not handle it.

use super::DiscordState;
use super::commands;
use crate::inbound::{Outcome, Received, Replies, Work};
use async_trait::async_trait;
use runbot_commands::engine::{Click, Reply, Request};
use runbot_commands::grammar::spec::{ArgKind, COMMANDS};
use runbot_commands::model::{Identity, Origin};
use runbot_commands::ports::{Chat, ListFilter};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

const UNREADABLE: &str = "runbot could not read this interaction from Discord, so it did nothing.";
const NOT_RECORDED: &str = "runbot could not record your command (its state store is unreachable), so it did nothing. Try again in a moment.";
/// Discord's limit on autocomplete choices.
const MAX_CHOICES: usize = 25;

/// Response type 4 with the EPHEMERAL flag: a private message to the person who acted.
pub fn private(text: &str) -> Value {
    json!({"type": 4, "data": {"content": text, "flags": 64, "allowed_mentions": {"parse": []}}})
}

fn snowflake(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok_and(|n| n > 0)
}

/// Interaction tokens go into URL paths: only the characters Discord's tokens are made of.
fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1000 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Who acted and where, as the (verified) interaction says.
struct Actor {
    interaction: String,
    token: String,
    user: String,
    channel: String,
    guild: Option<String>,
    /// The member's roles, as group members are written: `discord-role:<id>`.
    roles: Vec<String>,
}

impl Actor {
    fn read(p: &Value) -> Option<Actor> {
        let id = p["id"].as_str()?;
        let token = p["token"].as_str()?;
        // In a guild the user is under `member`; in a DM it is `user`.
        let user = p["member"]["user"]["id"].as_str().or_else(|| p["user"]["id"].as_str())?;
        let channel = p["channel_id"].as_str().or_else(|| p["channel"]["id"].as_str())?;
        if !snowflake(id) || !valid_token(token) || !snowflake(user) || !snowflake(channel) {
            return None;
        }
        let roles = p["member"]["roles"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if roles.len() > 250 {
            return None;
        }
        let roles = roles
            .iter()
            .filter_map(|r| r.as_str())
            .filter(|r| snowflake(r))
            .map(|r| format!("{}{r}", runbot_commands::config::DISCORD_ROLE))
            .collect();
        let guild = p["guild_id"].as_str().filter(|g| snowflake(g)).map(str::to_string);
        Some(Actor { interaction: id.to_string(), token: token.to_string(), user: user.to_string(), channel: channel.to_string(), guild, roles })
    }

    fn identity(&self) -> Identity {
        Identity::new(format!("discord:{}", self.user))
    }

    fn origin(&self) -> Origin {
        Origin { platform: "discord".into(), channel: self.channel.clone(), thread: None }
    }
}

impl DiscordState {
    /// **The entry point of both transports.** `payload` is one interaction as Discord sends
    /// it (the HTTP endpoint's body, or the gateway's `INTERACTION_CREATE` `d`) — from a
    /// trusted source: the HTTP endpoint verified its signature, the gateway its session.
    /// Returns the initial interaction response (`{"type": …, "data": …}`) to send back: the
    /// HTTP transport answers with it as the response body; the gateway transport POSTs it to
    /// `/interactions/{id}/{token}/callback` at once. Either way within Discord's 3 seconds:
    /// this returns after at most one or two store writes (the durable record), never after
    /// the engine's work, which runs in a spawned task and answers through the interaction's
    /// token (it waits, up to a few seconds, for the initial response to have arrived).
    pub async fn handle_interaction(&self, payload: &Value) -> Value {
        match payload["type"].as_u64() {
            Some(1) => {
                self.metrics.pings.fetch_add(1, Ordering::Relaxed);
                json!({"type": 1})
            }
            Some(2) => self.on_command(payload).await,
            Some(3) => self.on_click(payload).await,
            Some(4) => self.on_autocomplete(payload).await,
            other => {
                self.metrics.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(kind = ?other, "Discord interaction type not handled");
                private("runbot does not handle this kind of interaction.")
            }
        }
    }

    fn unreadable(&self) -> Value {
        self.metrics.unreadable.fetch_add(1, Ordering::Relaxed);
        private(UNREADABLE)
    }

    /// Where the answer to `actor` goes, kept with the inbox entry.
    fn reply_to(actor: &Actor, original: bool) -> Value {
        json!({"user": actor.user, "channel": actor.channel, "token": actor.token, "original": original})
    }

    /// A slash command: rebuilt, handed to the inbound pipeline, deferred.
    async fn on_command(&self, p: &Value) -> Value {
        let Some(actor) = Actor::read(p) else { return self.unreadable() };
        let text = match commands::text_of(&p["data"]) {
            Ok(t) => t,
            Err(why) => {
                self.metrics.unreadable.fetch_add(1, Ordering::Relaxed);
                return private(&why);
            }
        };
        // A place among the commands in flight first (see crate::backlog): when the engine is
        // behind, the answer waits briefly or the command is refused before anything is
        // recorded or run.
        let Some(place) = self.metrics.backlog.admit().await else {
            return private(crate::backlog::BUSY);
        };
        self.metrics.commands.fetch_add(1, Ordering::Relaxed);
        let req = Request { identity: actor.identity(), origin: actor.origin(), text, roles: actor.roles.clone() };
        // One durable record per command: the engine's command record, with what Discord sent.
        let mut detail = self.engine().command_detail(&req);
        detail["interaction"] = json!(actor.interaction);
        detail["guild"] = json!(actor.guild);
        detail["roles"] = json!(actor.roles);
        self.chat.remember_interaction(&actor.user, &actor.channel, &actor.token);
        let received = Received {
            platform: "discord",
            // A signed command replayed within the signature window is still one command.
            key: format!("discord:{}", actor.interaction),
            work: Work::Command(req),
            reply_to: Self::reply_to(&actor, true),
            audit_kind: "discord.command",
            audit_detail: detail,
        };
        match self.pipeline.receive(received, Some(place), false).await {
            Outcome::Accepted | Outcome::Answered(_) => json!({"type": 5, "data": {"flags": 64}}),
            Outcome::Duplicate => {
                self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                private("runbot already received this command; it was not run again.")
            }
            Outcome::NotRecorded => private(NOT_RECORDED),
        }
    }

    /// A button: handed to the inbound pipeline, acknowledged without changing the message.
    async fn on_click(&self, p: &Value) -> Value {
        let Some(actor) = Actor::read(p) else { return self.unreadable() };
        let custom_id = p["data"]["custom_id"].as_str().unwrap_or("");
        if custom_id.is_empty() || custom_id.chars().count() > super::render::MAX_CUSTOM_ID || p["data"]["component_type"].as_u64() != Some(2) {
            return self.unreadable();
        }
        self.metrics.clicks.fetch_add(1, Ordering::Relaxed);
        let message = p["message"]["id"].as_str().filter(|m| snowflake(m)).map(str::to_string);
        let detail =
            json!({"channel": actor.channel, "message": message, "custom_id": custom_id, "interaction": actor.interaction, "roles": actor.roles});
        self.chat.remember_interaction(&actor.user, &actor.channel, &actor.token);
        let click = Click {
            identity: actor.identity(),
            origin: actor.origin(),
            value: super::render::button_value(custom_id),
            // The inbox de-duplicates the delivery by interaction id.
            delivery: None,
            roles: actor.roles.clone(),
        };
        let received = Received {
            platform: "discord",
            key: format!("discord:{}", actor.interaction),
            work: Work::Clicks { clicks: vec![click] },
            reply_to: Self::reply_to(&actor, false),
            audit_kind: "discord.click",
            audit_detail: detail,
        };
        match self.pipeline.receive(received, None, false).await {
            Outcome::Accepted | Outcome::Answered(_) => json!({"type": 6}),
            Outcome::Duplicate => {
                self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                json!({"type": 6})
            }
            Outcome::NotRecorded => private(NOT_RECORDED),
        }
    }

    /// Autocomplete: what the option being typed may be, starting with what was typed.
    async fn on_autocomplete(&self, p: &Value) -> Value {
        self.metrics.autocompletes.fetch_add(1, Ordering::Relaxed);
        let choices = match commands::focused(&p["data"]) {
            Some((kind, typed)) => self.choices(kind, &typed).await,
            None => Vec::new(),
        };
        let choices: Vec<Value> = choices.into_iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
        json!({"type": 8, "data": {"choices": choices}})
    }

    /// `(label, value)` pairs for a kind of value, filtered by the typed prefix (ignoring
    /// case), at most 25. Open executions are read with a 2-second bound (the answer cannot be
    /// deferred).
    async fn choices(&self, kind: ArgKind, typed: &str) -> Vec<(String, String)> {
        let settings = self.engine().settings();
        let names = |it: &mut dyn Iterator<Item = &String>| -> Vec<(String, String)> { it.map(|n| (n.clone(), n.clone())).collect() };
        let mut all: Vec<(String, String)> = match kind {
            ArgKind::Service | ArgKind::ServiceOrPod => names(&mut settings.config.services.keys()),
            ArgKind::Database => names(&mut settings.config.databases.keys()),
            ArgKind::Target => names(&mut settings.config.services.keys().chain(settings.config.databases.keys())),
            ArgKind::Env => names(&mut settings.config.environments.keys()),
            ArgKind::Runbook => names(&mut settings.runbooks.keys()),
            ArgKind::Topic => {
                let cmds: Vec<String> = COMMANDS.iter().map(|c| c.name.to_string()).collect();
                let mut v = names(&mut cmds.iter().chain(settings.runbooks.keys()));
                v.dedup();
                v
            }
            ArgKind::ExecutionId => {
                let filter = ListFilter { active_only: true, target: None, limit: 100 };
                match tokio::time::timeout(Duration::from_secs(2), self.engine().store().list(&filter)).await {
                    Ok(Ok(execs)) => execs
                        .iter()
                        .map(|e| {
                            let label: String = format!("{} · {} {} ({}) · {}", e.id, e.runbook, e.target.name, e.target.env, e.state.as_str())
                                .chars()
                                .take(100)
                                .collect();
                            (label, e.id.to_string())
                        })
                        .collect(),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "autocomplete: could not list executions");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        let t = typed.trim().to_lowercase();
        all.retain(|(_, v)| v.chars().count() <= 100 && v.to_lowercase().starts_with(&t));
        all.truncate(MAX_CHOICES);
        all
    }
}

/// Where an answer goes, as kept with the inbox entry.
#[derive(serde::Deserialize)]
struct ReplyTo {
    user: String,
    channel: String,
    token: String,
    /// A command's answer replaces its deferred response; a click's is a follow-up.
    original: bool,
}

#[async_trait]
impl Replies for DiscordState {
    /// Shows the engine's reply to the person who acted: a command's replaces its deferred
    /// ("thinking") response, a click's is an ephemeral follow-up. A public reply goes into
    /// the channel. When the token is unusable (expired after 15 minutes, e.g. a command
    /// answered after a restart), [`Chat::ephemeral`] mentions them instead.
    async fn deliver(&self, reply: Reply, to: &Value) {
        let Ok(to) = serde_json::from_value::<ReplyTo>(to.clone()) else {
            tracing::error!("a Discord reply address is unreadable; the reply was not delivered");
            return;
        };
        let identity = Identity::new(format!("discord:{}", to.user));
        let mut msg = reply.message;
        crate::inbound::name_created_channel(&mut msg, super::CREATE_CHANNEL, |id| self.chat.created_channel(id));
        let res = if !reply.ephemeral {
            match self.chat.post(&to.channel, None, &msg).await {
                Ok(_) if to.original => self.chat.respond(&to.token, &runbot_commands::message::Message::text("Posted in the channel.")).await,
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        } else if to.original {
            self.chat.respond(&to.token, &msg).await
        } else {
            self.chat.tell(&to.token, &msg).await
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "answering the Discord interaction failed; answering in the channel");
            if let Err(e) = self.chat.ephemeral(&to.channel, &identity, &msg).await {
                tracing::error!(error = %e, "could not deliver a reply in Discord");
            }
        }
    }
}
