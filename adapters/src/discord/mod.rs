//! The Discord adapter (first slice): [`DiscordChat`] — REST v10 through serenity's `Http`
//! against a configurable base URL, with runbot's own per-route rate limiter — the neutral
//! message model rendered within Discord's limits, and interaction signature verification.
//!
//! Files by role: `verify.rs` (Ed25519 via serenity's `Verifier` plus a ±5-minute window,
//! before any parsing), `render.rs` (content / embed / buttons within Discord's limits,
//! overflow into follow-up parts), `ratelimit.rs` (`X-RateLimit-*` buckets, 429s, global
//! limits), `chat.rs` (the REST API as a `Chat`; message ids are `CHANNEL/MESSAGE`).

mod chat;
pub mod ratelimit;
pub mod render;
pub mod verify;

pub use chat::{discord_user, DiscordChat, DiscordChatOptions, CREATE_CHANNEL, DEFAULT_API_URL};
pub use render::{render as render_message, Rendered};
pub use verify::{Rejection, Verifier};
