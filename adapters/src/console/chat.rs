//! The console as a chat platform: channels of messages kept in memory (and optionally in a
//! JSON-lines file so message ids survive a restart), with every post and edit broadcast to
//! the browsers listening on the SSE stream.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use runbot_commands::message::Message;
use runbot_commands::model::Identity;
use runbot_commands::ports::{Chat, ChatError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// One message as the console page sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsoleMessage {
    pub id: String,
    pub channel: String,
    pub thread: Option<String>,
    pub message: Message,
    pub updated_at: DateTime<Utc>,
    pub edits: u32,
}

struct State {
    next_id: u64,
    /// By numeric id, so listing is chronological.
    messages: BTreeMap<u64, ConsoleMessage>,
}

pub struct ConsoleChat {
    state: Mutex<State>,
    events: broadcast::Sender<ConsoleMessage>,
    history: Option<PathBuf>,
}

impl ConsoleChat {
    /// A console whose messages live in memory only.
    pub fn in_memory() -> Self {
        ConsoleChat { state: Mutex::new(State { next_id: 1, messages: BTreeMap::new() }), events: broadcast::channel(1024).0, history: None }
    }

    /// A console that keeps its messages in `path` (JSON lines; the last line for an id wins).
    /// Unreadable lines are skipped with a warning, never fatal.
    pub fn with_history(path: PathBuf) -> Result<Self, runbot_commands::setup::SetupError> {
        use runbot_commands::setup::{Doing, SetupError};
        let chat = ConsoleChat { history: Some(path.clone()), ..Self::in_memory() };
        if path.exists() {
            let text = std::fs::read_to_string(&path).doing(format_args!("reading the console history {}", path.display()))?;
            let mut st = chat.state.lock().map_err(|_| SetupError("console state poisoned".into()))?;
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                match serde_json::from_str::<ConsoleMessage>(line) {
                    Ok(m) => {
                        if let Ok(id) = m.id.parse::<u64>() {
                            st.next_id = st.next_id.max(id + 1);
                            st.messages.insert(id, m);
                        }
                    }
                    Err(e) => tracing::warn!(line = n + 1, error = %e, "skipping unreadable console history line"),
                }
            }
        }
        Ok(chat)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ConsoleMessage> {
        self.events.subscribe()
    }

    /// Messages of a channel in chronological order.
    pub fn messages(&self, channel: &str) -> Vec<ConsoleMessage> {
        self.state.lock().map(|st| st.messages.values().filter(|m| m.channel == channel).cloned().collect()).unwrap_or_default()
    }

    /// One message by id.
    pub fn get(&self, id: &str) -> Option<ConsoleMessage> {
        let n: u64 = id.parse().ok()?;
        self.state.lock().ok()?.messages.get(&n).cloned()
    }

    /// Channels that have messages.
    pub fn channels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state.lock().map(|st| st.messages.values().map(|m| m.channel.clone()).collect()).unwrap_or_default();
        v.sort();
        v.dedup();
        v
    }

    fn persist(&self, m: &ConsoleMessage) -> Result<(), ChatError> {
        let Some(path) = &self.history else { return Ok(()) };
        let line = serde_json::to_string(m).map_err(|e| ChatError::Other(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ChatError::Other(format!("console history {}: {e}", path.display())))?;
        writeln!(f, "{line}").map_err(|e| ChatError::Other(e.to_string()))
    }

    fn store(&self, m: ConsoleMessage) -> Result<(), ChatError> {
        self.persist(&m)?;
        let _ = self.events.send(m);
        Ok(())
    }
}

#[async_trait]
impl Chat for ConsoleChat {
    fn platform(&self) -> &'static str {
        "console"
    }

    async fn post(&self, channel: &str, thread: Option<&str>, msg: &Message) -> Result<String, ChatError> {
        let m = {
            let mut st = self.state.lock().map_err(|_| ChatError::Other("console state poisoned".into()))?;
            let id = st.next_id;
            st.next_id += 1;
            let m = ConsoleMessage {
                id: id.to_string(),
                channel: channel.to_string(),
                thread: thread.map(str::to_string),
                message: msg.clone(),
                updated_at: Utc::now(),
                edits: 0,
            };
            st.messages.insert(id, m.clone());
            m
        };
        let id = m.id.clone();
        self.store(m)?;
        Ok(id)
    }

    async fn update(&self, channel: &str, id: &str, msg: &Message) -> Result<(), ChatError> {
        let n: u64 = id.parse().map_err(|_| ChatError::Other(format!("no console message {id}")))?;
        let m = {
            let mut st = self.state.lock().map_err(|_| ChatError::Other("console state poisoned".into()))?;
            let Some(m) = st.messages.get_mut(&n) else {
                return Err(ChatError::Other(format!("no console message {id} in {channel}")));
            };
            m.message = msg.clone();
            m.edits += 1;
            m.updated_at = Utc::now();
            m.clone()
        };
        self.store(m)
    }

    async fn ephemeral(&self, channel: &str, to: &Identity, msg: &Message) -> Result<(), ChatError> {
        // The console is one screen shared by its users; a private note is shown in the channel
        // and marked with whom it is for.
        let mut m = msg.clone();
        m.footer = Some(format!("only for {to}"));
        self.post(channel, None, &m).await.map(|_| ())
    }

    /// The console shows a file as a message in the thread: its title, the comment, and the
    /// content as a code block.
    async fn upload(&self, channel: &str, thread: Option<&str>, file: &runbot_commands::ports::Upload, comment: &str) -> Result<String, ChatError> {
        let content = String::from_utf8_lossy(&file.content).into_owned();
        let msg = Message { code: Some(content), ..Message::text(format!("{comment} ({}, {} bytes)", file.filename, file.content.len())) }
            .with_title(file.title.clone());
        self.post(channel, thread, &msg).await
    }

    fn max_text(&self) -> usize {
        20_000
    }
}
