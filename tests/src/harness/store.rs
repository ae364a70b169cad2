//! `KillableStore`: the engine's view of the shared store, which can be cut off to simulate
//! the process dying (or being cut off) — after `kill`, that engine can no longer read or write anything, while a
//! new engine on the same `MemoryStore` carries on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use runbot_commands::audit::{AuditEntry, AuditRecord};
use runbot_commands::model::{Execution, ExecutionId};
use runbot_commands::ports::{Fence, Inbound, InboxClaim, ListFilter, PostedAlert, Store, StoreError, Versioned};
use runbot_commands::store_memory::MemoryStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

pub struct KillableStore {
    inner: Arc<MemoryStore>,
    dead: AtomicBool,
    /// Writes left before one fails (`< 0`: none is made to fail).
    fail_in: AtomicI64,
}

impl KillableStore {
    pub fn new(inner: Arc<MemoryStore>) -> Self {
        KillableStore { inner, dead: AtomicBool::new(false), fail_in: AtomicI64::new(-1) }
    }

    /// The write `n` writes from now (0: the next one) fails, without changing anything, as a
    /// store that lost its disk or its connection at that moment; the writes after it work.
    pub fn fail_write(&self, n: i64) {
        self.fail_in.store(n, Ordering::SeqCst);
    }

    /// A write: fails when it is the one [`KillableStore::fail_write`] chose.
    fn writable(&self) -> Result<&MemoryStore, StoreError> {
        let inner = self.alive()?;
        if self.fail_in.fetch_sub(1, Ordering::SeqCst) == 0 {
            return Err(StoreError::Backend("injected failure: the write did not happen".into()));
        }
        Ok(inner)
    }

    /// From now on every call fails, as if the process had stopped.
    pub fn kill(&self) {
        self.set_down(true);
    }

    /// Cuts the process off from the store (`true`) or reconnects it (`false`), e.g. to stand
    /// for a network partition or a long pause.
    pub fn set_down(&self, down: bool) {
        self.dead.store(down, Ordering::SeqCst);
    }

    fn alive(&self) -> Result<&MemoryStore, StoreError> {
        if self.dead.load(Ordering::SeqCst) { Err(StoreError::Backend("this process has stopped".into())) } else { Ok(&self.inner) }
    }
}

#[async_trait]
impl Store for KillableStore {
    async fn next_id(&self) -> Result<ExecutionId, StoreError> {
        self.writable()?.next_id().await
    }
    async fn create(&self, exec: &Execution, lock_key: Option<&str>) -> Result<(), StoreError> {
        self.writable()?.create(exec, lock_key).await
    }
    async fn create_audited(&self, exec: &Execution, lock_key: Option<&str>, entries: &[AuditEntry]) -> Result<(), StoreError> {
        self.writable()?.create_audited(exec, lock_key, entries).await
    }
    async fn load(&self, id: ExecutionId) -> Result<Option<Versioned<Execution>>, StoreError> {
        self.alive()?.load(id).await
    }
    async fn save(&self, exec: &Execution, expected: i64) -> Result<i64, StoreError> {
        self.writable()?.save(exec, expected).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Execution>, StoreError> {
        self.alive()?.list(filter).await
    }
    async fn save_fenced(&self, exec: &Execution, expected: i64, entries: &[AuditEntry], fence: &Fence) -> Result<i64, StoreError> {
        self.writable()?.save_fenced(exec, expected, entries, fence).await
    }
    async fn claim(&self, id: ExecutionId, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        self.writable()?.claim(id, owner, until, now).await
    }
    async fn release(&self, id: ExecutionId, owner: &str) -> Result<(), StoreError> {
        self.writable()?.release(id, owner).await
    }
    async fn claim_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
        self.writable()?.claim_edit(id, message, version).await
    }
    async fn confirm_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
        self.writable()?.confirm_edit(id, message, version).await
    }
    async fn lead(&self, role: &str, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.writable()?.lead(role, owner, until, now).await
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    async fn take_quota(&self, key: &str, per_minute: u32, now: DateTime<Utc>) -> Result<Option<std::time::Duration>, StoreError> {
        self.writable()?.take_quota(key, per_minute, now).await
    }
    async fn take_slot(&self, key: &str, interval: std::time::Duration, now: DateTime<Utc>) -> Result<std::time::Duration, StoreError> {
        self.writable()?.take_slot(key, interval, now).await
    }
    async fn wake(&self, id: ExecutionId) -> Result<(), StoreError> {
        self.writable()?.wake(id).await
    }
    fn wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExecutionId>> {
        self.alive().ok()?.wakes()
    }
    async fn orphans(&self, owner: &str, now: DateTime<Utc>) -> Result<Vec<ExecutionId>, StoreError> {
        self.alive()?.orphans(owner, now).await
    }
    async fn put_artifact(&self, id: ExecutionId, name: &str, content: &str) -> Result<(), StoreError> {
        self.writable()?.put_artifact(id, name, content).await
    }
    async fn artifacts(&self, id: ExecutionId) -> Result<Vec<(String, String)>, StoreError> {
        self.alive()?.artifacts(id).await
    }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        self.writable()?.append_audit(entry).await
    }
    async fn audit_log(&self) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError> {
        self.alive()?.audit_log().await
    }
    async fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.writable()?.first_delivery(key, now).await
    }
    async fn alert(&self, fingerprint: &str) -> Result<Option<PostedAlert>, StoreError> {
        self.alive()?.alert(fingerprint).await
    }
    async fn insert_alert(&self, alert: &PostedAlert) -> Result<bool, StoreError> {
        self.writable()?.insert_alert(alert).await
    }
    async fn save_alert(&self, alert: &PostedAlert) -> Result<(), StoreError> {
        self.writable()?.save_alert(alert).await
    }
    async fn forget_alert(&self, fingerprint: &str, resolved_before: DateTime<Utc>) -> Result<(), StoreError> {
        self.writable()?.forget_alert(fingerprint, resolved_before).await
    }
    async fn record_inbound(&self, item: Inbound, audit: AuditEntry) -> Result<bool, StoreError> {
        self.writable()?.record_inbound(item, audit).await
    }
    async fn inbound_done(&self, keys: &[String]) -> Result<(), StoreError> {
        self.writable()?.inbound_done(keys).await
    }
    async fn claim_inbound(&self, c: &InboxClaim) -> Result<Vec<Inbound>, StoreError> {
        self.writable()?.claim_inbound(c).await
    }
    async fn append_output(&self, id: ExecutionId, step: usize, text: &str) -> Result<(), StoreError> {
        self.writable()?.append_output(id, step, text).await
    }
    async fn output(&self, id: ExecutionId, step: usize) -> Result<String, StoreError> {
        self.alive()?.output(id, step).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.alive()?.ping().await
    }
}
