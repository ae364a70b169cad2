//! Live updates: one status message per execution and channel, edited in place. Edits are
//! coalesced (at most one per message per interval; the state is read after the platform's
//! turn, so only the newest is sent; a final state takes its turn first), monotonic across
//! replicas (each carries the document's version, claimed in the store before it is sent),
//! 429s are waited out, and the final state is always delivered — and recorded as delivered,
//! so a restart re-sends it if the process died first. Step output goes to the message's detail thread in
//! batches, split to the platform's size, never cut.

use super::Engine;
use crate::message::{Message, split_text};
use crate::model::{Execution, ExecutionId, MessageRef};
use crate::ports::ChatError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// A kick for a message's updater: the newest state is read from the store when it sends.
type Slot = watch::Sender<u64>;

pub struct Publisher {
    interval: Duration,
    /// One updater task per (execution, message index), kicked through a watch channel.
    slots: Mutex<HashMap<(ExecutionId, usize), Slot>>,
}

impl Publisher {
    pub fn new(interval: Duration) -> Self {
        Publisher { interval, slots: Mutex::new(HashMap::new()) }
    }

    /// Asks for every status message of `exec` to show the newest stored state.
    pub(super) fn publish(&self, engine: &Engine, exec: &Execution) {
        let Ok(mut slots) = self.slots.lock() else { return };
        for (i, r) in exec.messages.iter().enumerate() {
            if r.final_sent {
                continue;
            }
            let key = (exec.id, i);
            let alive = slots.get(&key).is_some_and(|s| !s.is_closed());
            if !alive {
                let (tx, rx) = watch::channel(0);
                let engine = engine.clone();
                let interval = self.interval;
                tokio::spawn(async move { updater(engine, key, rx, interval).await }.in_current_span());
                slots.insert(key, tx);
            }
            if let Some(tx) = slots.get(&key) {
                tx.send_modify(|n| *n += 1);
            }
        }
    }

    fn forget(&self, key: (ExecutionId, usize)) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(&key);
        }
    }
}

/// What one look at the store told an updater.
enum Edit {
    /// Nothing to send: the message was delivered final, or this state (or a newer one) was
    /// or is being sent by some process.
    Nothing { fin: bool },
    /// Send this content of this version.
    Send { r: MessageRef, msg: Box<Message>, version: i64, fin: bool },
}

/// When kicked, edits the message with the newest stored state, then waits `interval` before
/// the next edit. Every edit carries the document's version and is claimed in the store first
/// ([`crate::ports::Store::claim_edit`]): an older state than one already sent is never sent,
/// an unchanged one not again. After an edit, [`crate::ports::Store::confirm_edit`] says
/// whether a newer one was claimed meanwhile (by another replica, whose edit may have landed
/// before this slower one): then the newest state is sent again, so the message always ends
/// on the newest state whatever the replicas' timing.
async fn updater(engine: Engine, key: (ExecutionId, usize), mut rx: watch::Receiver<u64>, interval: Duration) {
    let (id, idx) = key;
    loop {
        if rx.changed().await.is_err() {
            break;
        }
        rx.borrow_and_update();
        let mut attempt = 0u32;
        // After an edit that a newer claim overtook, the newest state is sent even if already
        // "delivered": this edit may have overwritten it.
        let mut force = false;
        // Whether this edit's turn under the platform's limits was taken (see below).
        let mut turned = false;
        let fin = loop {
            let edit = match next_edit(&engine, id, idx, force).await {
                Ok(e) => e,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(execution = %id, error = %e, attempt, "status update: cannot read the execution; retrying");
                    tokio::time::sleep(interval * attempt.min(30)).await;
                    continue;
                }
            };
            let (r, msg, version, fin) = match edit {
                Edit::Nothing { fin } => break fin,
                Edit::Send { r, msg, version, fin } => (r, msg, version, fin),
            };
            let Some(chat) = engine.chats().get(&r.platform).cloned() else {
                tracing::error!(execution = %id, platform = %r.platform, "no adapter for a status message");
                break false;
            };
            if !turned {
                // Wait for the platform's turn first (a final state ahead of others), then read,
                // claim and render again: a queued edit sends the newest state, never the one
                // current when it queued.
                chat.edit_turn(&r.channel, fin).await;
                turned = true;
                continue;
            }
            turned = false;
            let res = chat.update(&r.channel, &r.id, &msg).await;
            count_call(&engine, chat.platform(), &res);
            match res {
                Ok(()) => match engine.store().confirm_edit(id, idx, version).await {
                    Ok(true) => break fin,
                    Ok(false) => {
                        tracing::debug!(execution = %id, version, "a newer status was claimed meanwhile; sending the newest again");
                        force = true;
                    }
                    Err(e) => {
                        tracing::warn!(execution = %id, error = %e, "status update sent but not confirmed; sending again");
                        tokio::time::sleep(interval).await;
                        force = true;
                    }
                },
                Err(ChatError::RateLimited(wait)) => {
                    tracing::warn!(execution = %id, wait_ms = wait.as_millis() as u64, "chat rate limited; waiting");
                    tokio::time::sleep(wait).await;
                }
                Err(ChatError::Other(e)) => {
                    attempt += 1;
                    tracing::warn!(execution = %id, error = %e, attempt, "status update failed; retrying");
                    tokio::time::sleep(interval * attempt.min(30)).await;
                }
            }
        };
        if fin {
            let _ = engine
                .update(id, |ex| {
                    if let Some(m) = ex.messages.get_mut(idx) {
                        m.final_sent = true;
                    }
                    Ok(())
                })
                .await;
            engine.inner.publisher.forget(key);
            break;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Reads the newest state and decides whether to send it (see [`updater`]).
async fn next_edit(engine: &Engine, id: ExecutionId, idx: usize, force: bool) -> Result<Edit, crate::ports::StoreError> {
    let Some(v) = engine.store().load(id).await? else { return Ok(Edit::Nothing { fin: false }) };
    let exec = v.value;
    let Some(r) = exec.messages.get(idx).cloned() else { return Ok(Edit::Nothing { fin: false }) };
    let fin = exec.state.is_terminal();
    // Delivered final — unless this process's own edit may just have overwritten it.
    if r.final_sent && !force {
        return Ok(Edit::Nothing { fin: false });
    }
    let claimed = engine.store().claim_edit(id, idx, v.version).await?;
    if !claimed && !force {
        return Ok(Edit::Nothing { fin });
    }
    let settings = engine.settings();
    let msg = super::render(&exec, engine.now()).map_text(|t| settings.redactor.redact(t));
    Ok(Edit::Send { r, msg: Box::new(msg), version: v.version, fin })
}

impl Engine {
    /// Collects a step's output: every line into the execution log, and batches into the
    /// detail thread of each status message.
    pub(super) fn spawn_output(&self, exec: &Execution, step: usize, mut rx: mpsc::UnboundedReceiver<String>) -> JoinHandle<()> {
        let engine = self.clone();
        let id = exec.id;
        let refs = exec.messages.clone();
        let name = exec.steps[step].name.clone();
        let interval = self.inner.publisher.interval;
        tokio::spawn(
            async move {
                let redactor = engine.settings().redactor.clone();
                let mut buf = String::new();
                let mut open = true;
                let mut first = true;
                while open {
                    let deadline = tokio::time::sleep(interval);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            line = rx.recv() => match line {
                                Some(l) => { buf.push_str(&redactor.redact(&l)); buf.push('\n'); }
                                None => { open = false; break; }
                            },
                            _ = &mut deadline => break,
                        }
                    }
                    if buf.is_empty() {
                        continue;
                    }
                    let chunk = std::mem::take(&mut buf);
                    if let Err(e) = engine.store().append_output(id, step, &chunk).await {
                        tracing::error!(execution = %id, error = %e, "could not store step output");
                    }
                    for r in &refs {
                        let Some(chat) = engine.chats().get(&r.platform).cloned() else { continue };
                        let header = if first { format!("Output of step {} ({name}):\n", step + 1) } else { String::new() };
                        for part in split_text(&chunk, chat.max_text().saturating_sub(100).max(100)) {
                            let mut m = Message::code(part);
                            if !header.is_empty() {
                                m.text = header.clone();
                            }
                            post_retrying(&engine, chat.as_ref(), &r.channel, &r.id, &m).await;
                        }
                    }
                    first = false;
                }
            }
            .in_current_span(),
        )
    }
}

impl Engine {
    /// Posts a new execution's status message `msg` into the incident channel of each platform
    /// its environment mirrors to (`[environments.ENV] mirror`), concurrently. Returns the
    /// posted messages and, for each platform that failed, why (rate limits are waited out
    /// a few times first).
    pub(super) async fn post_mirrors(&self, exec: &Execution, msg: &Message) -> (Vec<MessageRef>, Vec<(String, String)>) {
        let settings = self.settings();
        let posts = settings.mirrors(&exec.target.env, &exec.origin.platform).into_iter().map(|(platform, channel)| {
            let platform = platform.to_string();
            let channel = channel.map(str::to_string);
            async move {
                let Some(channel) = channel else {
                    let env = &exec.target.env;
                    return Err((platform, format!("no incident channel is configured under environments.{env}.incident_channel")));
                };
                let Some(chat) = self.chats().get(&platform).cloned() else {
                    return Err((platform.clone(), format!("no {platform} adapter is running")));
                };
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    let res = chat.post(&channel, None, msg).await;
                    count_call(self, chat.platform(), &res);
                    match res {
                        Ok(id) => return Ok(MessageRef { platform, channel, id, final_sent: false }),
                        Err(ChatError::RateLimited(wait)) if attempt < 4 => tokio::time::sleep(wait).await,
                        Err(e) => {
                            tracing::warn!(execution = %exec.id, platform, error = %e, "mirror status message not posted");
                            return Err((platform, e.to_string()));
                        }
                    }
                }
            }
        });
        let mut posted = Vec::new();
        let mut failed = Vec::new();
        for r in futures::future::join_all(posts).await {
            match r {
                Ok(m) => posted.push(m),
                Err(f) => failed.push(f),
            }
        }
        (posted, failed)
    }

    /// Posts `text` (split, never cut) under a header into the detail thread of each of the
    /// execution's status messages.
    pub(super) async fn post_to_threads(&self, exec: &Execution, header: &str, text: &str) {
        let text = self.settings().redactor.redact(text);
        for r in &exec.messages {
            let Some(chat) = self.chats().get(&r.platform).cloned() else { continue };
            for (i, part) in split_text(&text, chat.max_text().saturating_sub(100).max(100)).into_iter().enumerate() {
                let mut m = Message::code(part);
                if i == 0 {
                    m.text = header.to_string();
                }
                post_retrying(self, chat.as_ref(), &r.channel, &r.id, &m).await;
            }
        }
    }
}

/// Counts one chat API call for `runbot_chat_calls_total`.
fn count_call<T>(engine: &Engine, platform: &str, res: &Result<T, ChatError>) {
    let result = match res {
        Ok(_) => "ok",
        Err(ChatError::RateLimited(_)) => "rate_limited",
        Err(ChatError::Other(_)) => "error",
    };
    engine.inner.metrics.chat_call(platform, result);
}

/// Posts a thread reply, waiting out rate limits; gives up only on repeated hard errors.
async fn post_retrying(engine: &Engine, chat: &dyn crate::ports::Chat, channel: &str, thread: &str, m: &Message) {
    for attempt in 1..=5u32 {
        let res = chat.post(channel, Some(thread), m).await;
        count_call(engine, chat.platform(), &res);
        match res {
            Ok(_) => return,
            Err(ChatError::RateLimited(wait)) => tokio::time::sleep(wait).await,
            Err(ChatError::Other(e)) => {
                tracing::warn!(error = %e, attempt, "thread reply failed");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    tracing::error!(channel, thread, "thread reply dropped after retries; the full output is in the execution log");
}
