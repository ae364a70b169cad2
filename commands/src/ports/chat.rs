//! The chat port: post, edit, reply in thread, answer one person privately. Each adapter
//! renders the neutral [`Message`] within its platform's limits.

use crate::message::Message;
use crate::model::Identity;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChatError {
    /// The platform asked us to slow down.
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    #[error("{0}")]
    Other(String),
}

#[async_trait]
pub trait Chat: Send + Sync + 'static {
    /// `slack`, `discord`, `console`.
    fn platform(&self) -> &'static str;

    /// Posts a message (in a thread when `thread` is given); returns its id.
    async fn post(&self, channel: &str, thread: Option<&str>, msg: &Message) -> Result<String, ChatError>;

    /// Edits a message in place.
    async fn update(&self, channel: &str, id: &str, msg: &Message) -> Result<(), ChatError>;

    /// Waits until an edit in `channel` may go out under the platform's limits, `urgent` (a
    /// final state) ahead of others; the next [`Chat::update`] in `channel` then goes out
    /// without waiting again. Lets the caller render the newest state after the wait, so a
    /// queued edit never sends content older than the store's. Default: no wait.
    async fn edit_turn(&self, channel: &str, urgent: bool) {
        let _ = (channel, urgent);
    }

    /// A message only `to` can see.
    async fn ephemeral(&self, channel: &str, to: &Identity, msg: &Message) -> Result<(), ChatError>;

    /// Uploads a file into `channel` (in `thread` when given, the id of the message whose
    /// thread it is), with `comment` as its message; returns the file's id. Platforms that
    /// take no files say so.
    async fn upload(&self, channel: &str, thread: Option<&str>, file: &Upload, comment: &str) -> Result<String, ChatError> {
        let _ = (channel, thread, file, comment);
        Err(ChatError::Other(format!("{} takes no files", self.platform())))
    }

    /// How many characters of text fit in one message; longer output is split by the engine
    /// into several thread replies.
    fn max_text(&self) -> usize {
        3000
    }
}

/// A file to upload (e.g. a postmortem timeline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The file name, e.g. `timeline-R-5.md`.
    pub filename: String,
    /// Shown above the file.
    pub title: String,
    pub content: Vec<u8>,
}

/// The adapters this process runs, by platform.
#[derive(Clone, Default)]
pub struct Chats {
    by_platform: BTreeMap<String, Arc<dyn Chat>>,
}

impl Chats {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with(mut self, chat: Arc<dyn Chat>) -> Self {
        self.by_platform.insert(chat.platform().to_string(), chat);
        self
    }
    pub fn get(&self, platform: &str) -> Option<&Arc<dyn Chat>> {
        self.by_platform.get(platform)
    }
    pub fn platforms(&self) -> impl Iterator<Item = &str> {
        self.by_platform.keys().map(|s| s.as_str())
    }
}
