//! Background work: picks up executions nobody is driving (after a restart or a lost lease),
//! re-sends final states that were not delivered, and expires approvals that ran out of time.

use super::Engine;
use super::runner::finish;
use crate::model::ExecState;
use crate::ports::ListFilter;
use serde_json::json;
use std::time::Duration;

impl Engine {
    /// One sweep: recover orphans and expire overdue approvals. Called at start-up and then
    /// periodically by [`Engine::spawn_sweeper`].
    pub async fn sweep(&self) {
        // Expiry is periodic work for one replica at a time.
        if self.leads("sweeper", self.lease()).await {
            self.expire_due().await;
        }
        let owner = self.settings().instance.clone();
        let ids = match self.store().orphans(&owner, self.now()).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list orphaned executions");
                return;
            }
        };
        let here = self.running_here();
        for id in ids.into_iter().filter(|id| !here.contains(id)) {
            let Ok(Some(v)) = self.store().load(id).await else { continue };
            if v.value.state.is_terminal() {
                // The final state may not have reached the chat before the process stopped.
                self.publish(&v.value);
            } else if v.value.state == ExecState::AwaitingApproval {
                // Waiting needs no driver, but its message must still show the current state
                // (edited only if that state was not delivered yet: see `publish.rs`).
                self.publish(&v.value);
            } else {
                tracing::info!(execution = %id, "recovering execution");
                self.kick(id);
            }
        }
    }

    /// Marks executions whose approval window closed as expired.
    pub async fn expire_due(&self) {
        let filter = ListFilter { active_only: true, target: None, limit: 0 };
        let Ok(list) = self.store().list(&filter).await else { return };
        let now = self.now();
        for e in list.into_iter().filter(|e| e.state == ExecState::AwaitingApproval && e.expires_at.is_some_and(|x| now >= x)) {
            let res = self
                .update(e.id, |exec| {
                    if exec.state != ExecState::AwaitingApproval || exec.expires_at.is_none_or(|x| now < x) {
                        return Err(String::new());
                    }
                    let i = exec.current;
                    exec.steps[i].status = crate::model::StepStatus::Failed;
                    exec.steps[i].summary = Some("expired without enough approvals".into());
                    exec.notes.push("Nobody approved in time; the request expired. Ask again if it is still needed.".into());
                    finish(exec, ExecState::Expired);
                    Ok(())
                })
                .await;
            if let Ok((exec, ())) = res {
                self.audit("state", None, Some(exec.id), json!({"state": "expired"})).await;
                self.count_finished(&exec);
                self.publish(&exec);
            }
        }
    }

    /// Runs [`Engine::sweep`] now and every `every` after, and listens for wake-ups from
    /// other replicas ([`Engine::spawn_wake_listener`]) for as long as the sweeper runs.
    pub fn spawn_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let _wakes = engine.spawn_wake_listener().map(AbortOnDrop);
            loop {
                engine.sweep().await;
                tokio::time::sleep(every).await;
            }
        })
    }
}

/// Ends a task when dropped (the wake listener ends with the sweeper).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
