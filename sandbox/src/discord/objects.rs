//! Discord's objects as the API sends them (users, members, channels, threads, messages,
//! commands and interactions), with every field serenity 0.12.5 requires — including
//! `attachment_size_limit` on interactions, without which its `Interaction` refuses to parse.

use serde_json::{Value, json};

/// When the fake's objects say they were created.
pub const EPOCH: &str = "2026-01-05T09:00:00.000000+00:00";

pub fn now_iso() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// A user object. `bot` marks the application's own user.
pub fn user(id: &str, username: &str, bot: bool) -> Value {
    let mut u = json!({
        "id": id,
        "username": username,
        "discriminator": "0",
        "global_name": if bot { Value::Null } else { json!(username) },
        "avatar": null,
        "public_flags": 0,
        "flags": 0,
        "banner": null,
        "accent_color": null,
        "avatar_decoration_data": null,
    });
    if bot {
        u["bot"] = json!(true);
    }
    u
}

/// A guild member as carried by interactions (with `permissions`).
pub fn member(user: Value, roles: &[String]) -> Value {
    json!({
        "user": user,
        "roles": roles,
        "nick": null,
        "avatar": null,
        "banner": null,
        "joined_at": EPOCH,
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "permissions": "2248473465835073",
        "communication_disabled_until": null,
        "unusual_dm_activity_until": null,
    })
}

/// A guild text channel (`type` 0) or category (`type` 4).
pub fn channel(id: &str, guild: &str, name: &str, kind: u8, parent: Option<&str>, position: u64) -> Value {
    json!({
        "id": id,
        "type": kind,
        "guild_id": guild,
        "name": name,
        "parent_id": parent,
        "position": position,
        "permission_overwrites": [],
        "nsfw": false,
        "topic": null,
        "last_message_id": null,
        "rate_limit_per_user": 0,
        "flags": 0,
    })
}

/// A public thread (`type` 11) started from a message (its id is the message's id).
pub fn thread(id: &str, guild: &str, parent: &str, name: &str, owner: &str, archive_minutes: u64) -> Value {
    json!({
        "id": id,
        "type": 11,
        "guild_id": guild,
        "parent_id": parent,
        "owner_id": owner,
        "name": name,
        "last_message_id": null,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "total_message_sent": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": false,
            "archive_timestamp": now_iso(),
            "auto_archive_duration": archive_minutes,
            "locked": false,
            "create_timestamp": now_iso(),
        },
        "member": {"id": id, "user_id": owner, "join_timestamp": now_iso(), "flags": 1},
    })
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// The bot, through the REST API.
    Bot,
    /// An interaction response or follow-up (a webhook message of the application).
    Interaction,
}

/// A message object as Discord returns it, from the stored content fields.
#[allow(clippy::too_many_arguments)]
pub fn message(
    id: &str,
    channel: &str,
    guild: Option<&str>,
    app: &str,
    bot_user: &Value,
    author: &Author,
    content: &Value,
    flags: u64,
    edited: Option<&str>,
    created: &str,
) -> Value {
    let mut m = json!({
        "id": id,
        "channel_id": channel,
        "author": bot_user,
        "content": content["content"].as_str().unwrap_or(""),
        "timestamp": created,
        "edited_timestamp": edited,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": content["embeds"].as_array().cloned().unwrap_or_default(),
        "components": content["components"].as_array().cloned().unwrap_or_default(),
        "pinned": false,
        "type": 0,
        "flags": flags,
    });
    if let Some(g) = guild {
        m["guild_id"] = json!(g);
    }
    if *author == Author::Interaction {
        m["webhook_id"] = json!(app);
        m["application_id"] = json!(app);
        m["type"] = json!(20);
    }
    m
}

/// A stored application command as the bulk overwrite answers it.
pub fn command(id: &str, app: &str, guild: Option<&str>, c: &Value) -> Value {
    let mut o = c.clone();
    o["id"] = json!(id);
    o["application_id"] = json!(app);
    o["version"] = json!(id);
    if o["type"].is_null() {
        o["type"] = json!(1);
    }
    if o["default_member_permissions"].is_null() {
        o["default_member_permissions"] = Value::Null;
    }
    if o["nsfw"].is_null() {
        o["nsfw"] = json!(false);
    }
    if o["options"].is_null() && o["type"] == 1 {
        o["options"] = json!([]);
    }
    match guild {
        Some(g) => o["guild_id"] = json!(g),
        None => {
            o["integration_types"] = o.get("integration_types").cloned().filter(|v| !v.is_null()).unwrap_or(json!([0]));
            o["contexts"] = o.get("contexts").cloned().filter(|v| !v.is_null()).unwrap_or(json!([0]));
        }
    }
    o
}

/// The fields every interaction from a guild carries.
#[allow(clippy::too_many_arguments)]
pub fn interaction(kind: u8, id: &str, app: &str, token: &str, guild: &str, channel: &Value, member: Value, data: Value) -> Value {
    json!({
        "id": id,
        "application_id": app,
        "type": kind,
        "data": data,
        "guild": {"id": guild, "locale": "en-US", "features": []},
        "guild_id": guild,
        "channel": channel,
        "channel_id": channel["id"],
        "member": member,
        "token": token,
        "version": 1,
        "app_permissions": "2248473465835073",
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": guild},
        "context": 0,
        "attachment_size_limit": 8388608,
    })
}
