//! `RecordingChat`: a fake chat (`console` unless told another platform) that records every post, edit and private reply,
//! remembers the latest content of each message, and can be told to answer 429s.

use async_trait::async_trait;
use runbot_commands::message::Message;
use runbot_commands::model::Identity;
use runbot_commands::ports::{Chat, ChatError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// A message posted (in a thread when `thread` is set).
#[derive(Debug, Clone)]
pub struct Posted {
    pub channel: String,
    pub thread: Option<String>,
    pub id: String,
    pub message: Message,
}

/// A successful edit of a message, with the (tokio) time it happened.
#[derive(Debug, Clone)]
pub struct Updated {
    pub channel: String,
    pub id: String,
    pub message: Message,
    pub at: Instant,
}

/// A reply only `to` can see.
#[derive(Debug, Clone)]
pub struct Private {
    pub channel: String,
    pub to: Identity,
    pub message: Message,
}

/// What the platform knows: message ids and their latest content. Shared between a chat fake
/// and the one that replaces it after a restart, as the real platform would be.
#[derive(Debug, Default)]
struct Platform {
    next_id: u64,
    /// id → (channel, latest content).
    known: HashMap<String, (String, Message)>,
}

#[derive(Debug, Default)]
struct Log {
    posts: Vec<Posted>,
    updates: Vec<Updated>,
    privates: Vec<Private>,
    /// Updates still to refuse with 429, and the Retry-After to give.
    limit_next: u32,
    limit_wait: Duration,
    refused: Vec<Instant>,
    /// Posts still to fail with a hard error.
    fail_posts: u32,
    /// Channel pacing of new messages (not thread replies): one per this long, in turn.
    pace: Option<Duration>,
    /// When the next paced post may go out.
    next_post: Option<Instant>,
    /// Each edit takes this long before it is applied (a slow connection to the platform).
    update_delay: Option<Duration>,
    /// An edit budget like Slack's `chat.update`: one edit per this long, in turn.
    edit_pace: Option<Duration>,
    /// When the next edit's turn comes.
    next_edit: Option<Instant>,
    /// Turns taken ahead ([`Chat::edit_turn`]) not yet used by an edit.
    edit_turns: u32,
}

/// The fake chat for platform `console` (or the one given to [`RecordingChat::on`]).
pub struct RecordingChat {
    name: &'static str,
    platform: Arc<Mutex<Platform>>,
    log: Mutex<Log>,
    max_text: usize,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RecordingChat {
    pub fn new(max_text: usize) -> Self {
        Self::on("console", max_text)
    }

    /// A fake of platform `name` (`slack`, `discord`).
    pub fn on(name: &'static str, max_text: usize) -> Self {
        RecordingChat { name, platform: Arc::default(), log: Mutex::default(), max_text }
    }

    /// A fresh fake (empty logs) on the same platform: it still knows every message id.
    pub fn continuing(&self) -> Self {
        RecordingChat { name: self.name, platform: self.platform.clone(), log: Mutex::default(), max_text: self.max_text }
    }

    /// The next `n` updates fail with `RateLimited(wait)`.
    pub fn rate_limit_next_updates(&self, n: u32, wait: Duration) {
        let mut log = guard(&self.log);
        log.limit_next = n;
        log.limit_wait = wait;
    }

    /// The next `n` posts fail with a hard error (the platform is down).
    pub fn fail_next_posts(&self, n: u32) {
        guard(&self.log).fail_posts = n;
    }

    /// New messages (not thread replies) go out one per `every`, in turn, as a paced channel.
    pub fn pace_posts(&self, every: Duration) {
        guard(&self.log).pace = Some(every);
    }

    /// Edits wait for a turn of a budget, one per `every` (like Slack's `chat.update`), the
    /// budget just spent; a turn taken with [`Chat::edit_turn`] is used by the next edit.
    pub fn pace_edits(&self, every: Duration) {
        let mut log = guard(&self.log);
        log.edit_pace = Some(every);
        // The budget was just spent: the next turn comes `every` from now.
        log.next_edit = Some(Instant::now() + every);
    }

    /// Waits for the next edit turn when edits are paced ([`RecordingChat::pace_edits`]).
    async fn edit_slot(&self) {
        let slot = {
            let mut log = guard(&self.log);
            let Some(every) = log.edit_pace else { return };
            let slot = log.next_edit.map_or(Instant::now(), |n| n.max(Instant::now()));
            log.next_edit = Some(slot + every);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Every edit is applied only `delay` after it was sent (a slow publisher).
    pub fn delay_updates(&self, delay: Duration) {
        guard(&self.log).update_delay = Some(delay);
    }

    /// When each refused (429) update was attempted.
    pub fn refused_updates(&self) -> Vec<Instant> {
        guard(&self.log).refused.clone()
    }

    pub fn posts(&self) -> Vec<Posted> {
        guard(&self.log).posts.clone()
    }

    pub fn updates(&self) -> Vec<Updated> {
        guard(&self.log).updates.clone()
    }

    /// Successful edits of one message.
    pub fn updates_of(&self, id: &str) -> Vec<Updated> {
        guard(&self.log).updates.iter().filter(|u| u.id == id).cloned().collect()
    }

    /// Replies posted in the thread of message `id`.
    pub fn thread(&self, id: &str) -> Vec<Posted> {
        guard(&self.log).posts.iter().filter(|p| p.thread.as_deref() == Some(id)).cloned().collect()
    }

    pub fn privates(&self) -> Vec<Private> {
        guard(&self.log).privates.clone()
    }

    /// The latest content of a message, as people in the channel see it now.
    pub fn latest(&self, id: &str) -> Option<Message> {
        guard(&self.platform).known.get(id).map(|(_, m)| m.clone())
    }
}

#[async_trait]
impl Chat for RecordingChat {
    fn platform(&self) -> &'static str {
        self.name
    }

    async fn post(&self, channel: &str, thread: Option<&str>, msg: &Message) -> Result<String, ChatError> {
        let slot = {
            let mut log = guard(&self.log);
            match log.pace.filter(|_| thread.is_none()) {
                Some(every) => {
                    let slot = log.next_post.map_or(Instant::now(), |n| n.max(Instant::now()));
                    log.next_post = Some(slot + every);
                    Some(slot)
                }
                None => None,
            }
        };
        if let Some(slot) = slot {
            tokio::time::sleep_until(slot).await;
        }
        {
            let mut log = guard(&self.log);
            if log.fail_posts > 0 {
                log.fail_posts -= 1;
                return Err(ChatError::Other("service_unavailable".into()));
            }
        }
        let id = {
            let mut p = guard(&self.platform);
            if let Some(t) = thread.filter(|t| !p.known.contains_key(*t)) {
                return Err(ChatError::Other(format!("thread_not_found: {t}")));
            }
            p.next_id += 1;
            let id = format!("m{}", p.next_id);
            p.known.insert(id.clone(), (channel.to_string(), msg.clone()));
            id
        };
        guard(&self.log).posts.push(Posted {
            channel: channel.to_string(),
            thread: thread.map(str::to_string),
            id: id.clone(),
            message: msg.clone(),
        });
        Ok(id)
    }

    async fn edit_turn(&self, _channel: &str, _urgent: bool) {
        if guard(&self.log).edit_pace.is_some() {
            self.edit_slot().await;
            guard(&self.log).edit_turns += 1;
        }
    }

    async fn update(&self, channel: &str, id: &str, msg: &Message) -> Result<(), ChatError> {
        let turned = {
            let mut log = guard(&self.log);
            let t = log.edit_turns > 0;
            log.edit_turns = log.edit_turns.saturating_sub(1);
            t
        };
        if !turned {
            self.edit_slot().await;
        }
        let delay = guard(&self.log).update_delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        {
            let mut log = guard(&self.log);
            if log.limit_next > 0 {
                log.limit_next -= 1;
                log.refused.push(Instant::now());
                return Err(ChatError::RateLimited(log.limit_wait));
            }
        }
        {
            let mut p = guard(&self.platform);
            match p.known.get_mut(id) {
                Some((ch, m)) if ch == channel => *m = msg.clone(),
                _ => return Err(ChatError::Other(format!("message_not_found: {channel}/{id}"))),
            }
        }
        guard(&self.log).updates.push(Updated { channel: channel.to_string(), id: id.to_string(), message: msg.clone(), at: Instant::now() });
        Ok(())
    }

    async fn ephemeral(&self, channel: &str, to: &Identity, msg: &Message) -> Result<(), ChatError> {
        guard(&self.log).privates.push(Private { channel: channel.to_string(), to: to.clone(), message: msg.clone() });
        Ok(())
    }

    fn max_text(&self) -> usize {
        self.max_text
    }
}
