//! What makes several processes (replicas) on one store behave as one: the status message
//! before any step (a new execution is held by its creator while its message is posted, and
//! one found without a message is announced by whoever recovers it), wake-ups that hand a
//! click on one replica to the execution's owner at once, and roles that keep periodic work
//! on one replica at a time.

use super::Engine;
use super::runner::Driving;
use crate::model::{ExecState, ExecutionId, MessageRef};
use crate::ports::{ChatError, Fence};
use chrono::Duration as ChronoDuration;
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

/// How long an execution that nobody ever held may go without a status message before a
/// recovering process posts it: its creator takes the lease within one store round trip of
/// creating it, so only a creator that died at once leaves one this old.
const UNCLAIMED_GRACE_SECS: i64 = 10;

/// A new execution held by its creator while its status message is posted: it counts as
/// driven here (the sweep leaves it alone), and its lease is taken and renewed, so no other
/// replica starts its steps meanwhile. [`AnnounceHold::kick`] lets go and starts driving.
pub(super) struct AnnounceHold {
    engine: Engine,
    id: ExecutionId,
    renew: Option<tokio::task::JoinHandle<()>>,
    /// Let go already (the entry in `running` is no longer the hold's).
    done: bool,
}

impl AnnounceHold {
    /// Stops holding and starts driving (the lease is still this process's, so at once).
    pub(super) fn kick(mut self) {
        self.let_go();
        self.engine.kick(self.id);
    }

    fn let_go(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        if let Ok(mut running) = self.engine.inner.running.lock() {
            running.remove(&self.id);
        }
    }
}

impl Drop for AnnounceHold {
    fn drop(&mut self) {
        self.let_go();
    }
}

impl Engine {
    /// Holds a just-created execution while its status message is posted (see [`AnnounceHold`]).
    pub(super) async fn hold_for_announcement(&self, id: ExecutionId) -> AnnounceHold {
        let (tx, _) = watch::channel(false);
        if let Ok(mut running) = self.inner.running.lock() {
            running.entry(id).or_insert(Driving::new(tx));
        }
        let renew = self.claim_now(id).await.map(|_| self.spawn_renewal(id));
        AnnounceHold { engine: self.clone(), id, renew, done: false }
    }

    /// The message first: true when the execution has its status message (or is finished) and
    /// its steps may be driven. One found without a message while this process holds its
    /// lease lost its creator (it died while posting): the message is posted here first, or,
    /// when that fails, the execution is cancelled with the reason — no step runs unannounced.
    pub(super) async fn announced(&self, id: ExecutionId, fence: &Fence) -> bool {
        let v = match self.store().load(id).await {
            Ok(Some(v)) => v,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(execution = %id, error = %e, "cannot read an execution to drive");
                return false;
            }
        };
        let exec = v.value;
        if !exec.messages.is_empty() || exec.state.is_terminal() {
            return true;
        }
        // Epoch 1: nobody held it before this process, so its creator may still be about to.
        if fence.epoch <= 1 && self.now() - exec.created_at < ChronoDuration::seconds(UNCLAIMED_GRACE_SECS) {
            tracing::debug!(execution = %id, "its creator is still posting the status message; not driving");
            return false;
        }
        tracing::info!(execution = %id, "recovered an execution whose status message was never posted; posting it first");
        let settings = self.settings();
        let msg = super::render(&exec, self.now()).map_text(|t| settings.redactor.redact(t));
        let platform = exec.origin.platform.clone();
        let posted = match self.chats().get(&platform) {
            Some(chat) => post_paced(chat.as_ref(), &exec.incident_channel, &msg).await,
            None => Err(format!("no {platform} adapter is running")),
        };
        let (refs, notes, failed) = match posted {
            Ok(msg_id) => {
                let mut refs = vec![MessageRef { platform, channel: exec.incident_channel.clone(), id: msg_id, final_sent: false }];
                let (mirrored, failed) = self.post_mirrors(&exec, &msg).await;
                refs.extend(mirrored);
                let notes: Vec<String> =
                    failed.iter().map(|(p, why)| format!("Could not mirror this message to {p} ({why}); it is only here.")).collect();
                (refs, notes, None)
            }
            Err(why) => (Vec::new(), vec![format!("Could not post the status message ({why}); nothing was run.")], Some(why)),
        };
        let res = self
            .update_as(
                id,
                None,
                Some(fence),
                |ex| {
                    if !ex.messages.is_empty() {
                        return Err("announced meanwhile".to_string());
                    }
                    ex.messages.extend(refs.iter().cloned());
                    ex.notes.extend(notes.iter().cloned());
                    if failed.is_some() {
                        ex.state = ExecState::Cancelled;
                        ex.finished_at = Some(ex.updated_at);
                    }
                    Ok(())
                },
                |_, _| Vec::new(),
            )
            .await;
        match res {
            Ok((saved, ())) => {
                if let Some(why) = failed {
                    self.audit("error", None, Some(id), json!({"error": why})).await;
                    return false;
                }
                if !notes.is_empty() {
                    self.publish(&saved.value);
                }
                true
            }
            Err(e) => {
                tracing::error!(execution = %id, error = ?e, "could not record the status message of a recovered execution");
                false
            }
        }
    }

    /// Drives `id` here if this process can take it, and asks its owner to look at it now
    /// if another live process holds it (a click on a replica that is not the owner).
    pub(super) fn kick_and_wake(&self, id: ExecutionId) {
        self.kick(id);
        let store = self.store().clone();
        tokio::spawn(async move {
            if let Err(e) = store.wake(id).await {
                tracing::warn!(execution = %id, error = %e, "could not wake the owner; its sweep finds the change");
            }
        });
    }

    /// Kicks every execution another process asks to be looked at ([`crate::ports::Store::wake`]),
    /// when the store carries wake-ups.
    pub fn spawn_wake_listener(&self) -> Option<tokio::task::JoinHandle<()>> {
        let mut rx = self.store().wakes()?;
        let engine = self.clone();
        Some(tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                // A cancel typed on another replica: the step running here must stop.
                if engine.running_here().contains(&id)
                    && let Ok(Some(v)) = engine.store().load(id).await
                    && v.value.cancel_requested.is_some()
                {
                    engine.signal_cancel(id);
                }
                engine.kick(id);
            }
        }))
    }

    /// The command quotas: this process's own count, and — when several processes share the
    /// store — the count in the store, which all of them draw on. `Err((who, wait))` when
    /// over. A store that does not answer does not block commands (logged).
    pub(super) async fn check_quota(&self, identity: &str, channel: &str) -> Result<(), (&'static str, Duration)> {
        self.inner.limits.check(identity, channel)?;
        if !self.store().shared() {
            return Ok(());
        }
        let limits = &self.settings().config.limits;
        let now = self.now();
        for (who, key, per_minute) in [
            ("you are", format!("identity:{identity}"), limits.per_identity_per_minute),
            ("this channel is", format!("channel:{channel}"), limits.per_channel_per_minute),
        ] {
            match self.store().take_quota(&key, per_minute, now).await {
                Ok(None) => {}
                Ok(Some(wait)) => return Err((who, wait)),
                Err(e) => tracing::warn!(error = %e, "shared quota not counted; this process's own count applies"),
            }
        }
        Ok(())
    }

    /// Whether this process does the periodic work `role` now (one replica at a time; it
    /// moves to another when this one stops renewing it for `hold`).
    pub(super) async fn leads(&self, role: &str, hold: Duration) -> bool {
        let now = self.now();
        let until = now + ChronoDuration::from_std(hold).unwrap_or(ChronoDuration::seconds(30));
        match self.store().lead(role, &self.settings().instance, until, now).await {
            Ok(lead) => lead,
            Err(e) => {
                tracing::warn!(role, error = %e, "cannot tell who does this periodic work; skipping it this time");
                false
            }
        }
    }
}

/// Posts a status message, waiting out a few rate limits (the channel's pacing).
async fn post_paced(chat: &dyn crate::ports::Chat, channel: &str, msg: &crate::message::Message) -> Result<String, String> {
    for _ in 0..5 {
        match chat.post(channel, None, msg).await {
            Ok(id) => return Ok(id),
            Err(ChatError::RateLimited(wait)) => tokio::time::sleep(wait).await,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("rate limited five times in a row".into())
}
