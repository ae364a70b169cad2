//! An in-memory [`Store`]: the same semantics as the SQL store (versions, locks, leases, the
//! audit chain, delivery de-duplication, step output), for tests and `--store memory` runs.

use crate::audit::{self, AuditEntry, AuditRecord};
use crate::model::{Execution, ExecutionId};
use crate::ports::store::{Fence, Inbound, InboxClaim, ListFilter, PostedAlert, Store, StoreError, Versioned};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// One stored execution with its row metadata.
#[derive(Debug, Clone)]
struct Row {
    exec: Execution,
    version: i64,
    lease_owner: Option<String>,
    lease_until: Option<DateTime<Utc>>,
    /// The fencing epoch of the lease, raised each time it is taken anew.
    lease_epoch: i64,
}

impl Row {
    /// Terminal, with at least one message still waiting for its final update.
    fn final_pending(&self) -> bool {
        self.exec.state.is_terminal() && self.exec.messages.iter().any(|m| !m.final_sent)
    }

    /// The lease can be taken by `owner` at `now`.
    fn lease_available(&self, owner: &str, now: DateTime<Utc>) -> bool {
        match (&self.lease_owner, self.lease_until) {
            (None, _) => true,
            (Some(o), _) if o == owner => true,
            (Some(_), Some(until)) => until < now,
            (Some(_), None) => true,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    last_id: u64,
    executions: BTreeMap<ExecutionId, Row>,
    /// lock key → holder.
    locks: HashMap<String, ExecutionId>,
    audit: Vec<AuditRecord>,
    deliveries: HashSet<String>,
    /// Received chat commands by key, and whether each was processed.
    inbox: BTreeMap<String, (Inbound, bool)>,
    /// (execution, step) → the output so far.
    output: HashMap<(ExecutionId, usize), String>,
    /// execution → its artifacts in the order kept.
    artifacts: HashMap<ExecutionId, Vec<(String, String)>>,
    /// (execution, message) → (newest edit claimed, newest edit delivered).
    published: HashMap<(ExecutionId, usize), (i64, i64)>,
    /// role → (holder, until).
    roles: HashMap<String, (String, DateTime<Utc>)>,
    /// quota key → theoretical arrival time of the next command (µs since the epoch).
    quotas: HashMap<String, i64>,
    /// pacing key → the next free write slot (µs since the epoch).
    slots: HashMap<String, i64>,
    /// The alerts posted, by fingerprint.
    alerts: HashMap<String, PostedAlert>,
    /// Everyone listening for wake-ups.
    wakes: Vec<tokio::sync::mpsc::UnboundedSender<ExecutionId>>,
    /// The key audit records are keyed with (`[audit] key`); `None`: unkeyed.
    audit_key: Option<audit::AuditKey>,
}

impl Inner {
    /// Links `entry` after the head and appends it.
    fn append(&mut self, entry: &AuditEntry) -> AuditRecord {
        let mut entry = entry.clone();
        entry.at = micros(entry.at);
        let prev = self.audit.last().map(|r| (r.seq, r.hash.as_str()));
        let record = audit::link_with(self.audit_key.as_ref(), prev, entry);
        self.audit.push(record.clone());
        record
    }
}

/// Everything in one mutex; every operation is a single critical section, so each is atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys the audit records appended from now on with `key` (like the SQL store's).
    pub fn with_audit_key(self, key: audit::AuditKey) -> Self {
        if let Ok(mut inner) = self.inner.lock() {
            inner.audit_key = Some(key);
        }
        self
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Backend("memory store: a previous operation panicked".into()))
    }
}

/// Times are kept at microsecond precision, like the SQL store's text columns.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

#[async_trait]
impl Store for MemoryStore {
    async fn next_id(&self) -> Result<ExecutionId, StoreError> {
        let mut inner = self.lock()?;
        inner.last_id += 1;
        Ok(ExecutionId(inner.last_id))
    }

    async fn create(&self, exec: &Execution, lock_key: Option<&str>) -> Result<(), StoreError> {
        self.create_audited(exec, lock_key, &[]).await
    }

    async fn create_audited(&self, exec: &Execution, lock_key: Option<&str>, entries: &[AuditEntry]) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.executions.contains_key(&exec.id) {
            return Err(StoreError::Backend(format!("execution {} already exists", exec.id)));
        }
        if let Some(key) = &exec.inbox
            && inner.inbox.get(key).is_some_and(|(_, done)| *done)
        {
            return Err(StoreError::AlreadyProcessed(key.clone()));
        }
        if let Some(key) = lock_key {
            if let Some(holder) = inner.locks.get(key) {
                return Err(StoreError::Locked { key: key.to_string(), holder: *holder });
            }
            inner.locks.insert(key.to_string(), exec.id);
        }
        let row = Row { exec: exec.clone(), version: 1, lease_owner: None, lease_until: None, lease_epoch: 0 };
        inner.executions.insert(exec.id, row);
        if let Some((_, done)) = exec.inbox.as_ref().and_then(|k| inner.inbox.get_mut(k)) {
            *done = true;
        }
        for e in entries {
            inner.append(e);
        }
        Ok(())
    }

    async fn load(&self, id: ExecutionId) -> Result<Option<Versioned<Execution>>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.executions.get(&id).map(|r| Versioned { value: r.exec.clone(), version: r.version }))
    }

    async fn save(&self, exec: &Execution, expected: i64) -> Result<i64, StoreError> {
        let mut inner = self.lock()?;
        let row = inner.executions.get_mut(&exec.id).ok_or(StoreError::NotFound(exec.id))?;
        if row.version != expected {
            return Err(StoreError::Conflict(exec.id));
        }
        row.version += 1;
        row.exec = exec.clone();
        let version = row.version;
        if exec.state.is_terminal() {
            inner.locks.retain(|_, holder| *holder != exec.id);
        }
        Ok(version)
    }

    async fn save_fenced(&self, exec: &Execution, expected: i64, entries: &[AuditEntry], fence: &Fence) -> Result<i64, StoreError> {
        let mut inner = self.lock()?;
        let row = inner.executions.get_mut(&exec.id).ok_or(StoreError::NotFound(exec.id))?;
        if row.lease_owner.as_deref() != Some(fence.owner.as_str()) || row.lease_epoch != fence.epoch {
            return Err(StoreError::Fenced(exec.id));
        }
        if row.version != expected {
            return Err(StoreError::Conflict(exec.id));
        }
        row.version += 1;
        row.exec = exec.clone();
        let version = row.version;
        if exec.state.is_terminal() {
            inner.locks.retain(|_, holder| *holder != exec.id);
        }
        for e in entries {
            inner.append(e);
        }
        Ok(version)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Execution>, StoreError> {
        let inner = self.lock()?;
        let matching = inner
            .executions
            .values()
            .rev()
            .filter(|r| !filter.active_only || !r.exec.state.is_terminal())
            .filter(|r| filter.target.as_deref().is_none_or(|t| r.exec.target.name == t))
            .map(|r| r.exec.clone());
        Ok(if filter.limit == 0 { matching.collect() } else { matching.take(filter.limit as usize).collect() })
    }

    async fn claim(&self, id: ExecutionId, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        let mut inner = self.lock()?;
        let row = inner.executions.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        let now = micros(now);
        if !row.lease_available(owner, now) {
            return Ok(None);
        }
        // The epoch rises when the lease changes hands (a release leaves it without owner).
        if row.lease_owner.as_deref() != Some(owner) {
            row.lease_epoch += 1;
        }
        row.lease_owner = Some(owner.to_string());
        row.lease_until = Some(micros(until));
        Ok(Some(row.lease_epoch))
    }

    async fn release(&self, id: ExecutionId, owner: &str) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let row = inner.executions.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        if row.lease_owner.as_deref() == Some(owner) {
            row.lease_owner = None;
            row.lease_until = None;
        }
        Ok(())
    }

    async fn claim_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let (claimed, delivered) = inner.published.entry((id, message)).or_insert((0, 0));
        let ok = version > *claimed || (version == *claimed && *delivered < version);
        *claimed = (*claimed).max(version);
        Ok(ok)
    }

    async fn confirm_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let (claimed, delivered) = inner.published.entry((id, message)).or_insert((0, 0));
        *delivered = (*delivered).max(version);
        *claimed = (*claimed).max(version);
        Ok(*claimed == version)
    }

    async fn lead(&self, role: &str, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let (now, until) = (micros(now), micros(until));
        match inner.roles.get(role) {
            Some((holder, held_until)) if holder != owner && *held_until >= now => Ok(false),
            _ => {
                inner.roles.insert(role.to_string(), (owner.to_string(), until));
                Ok(true)
            }
        }
    }

    fn shared(&self) -> bool {
        // Tests run several engines (replicas) on one memory store.
        true
    }

    async fn take_quota(&self, key: &str, per_minute: u32, now: DateTime<Utc>) -> Result<Option<std::time::Duration>, StoreError> {
        let mut inner = self.lock()?;
        let (interval, tolerance) = crate::limits::gcra(per_minute);
        let now = now.timestamp_micros();
        let tat = inner.quotas.get(key).copied().unwrap_or(now).max(now);
        if tat - now > tolerance {
            return Ok(Some(crate::limits::wait_micros(tat - tolerance - now)));
        }
        inner.quotas.insert(key.to_string(), tat + interval);
        Ok(None)
    }

    async fn take_slot(&self, key: &str, interval: std::time::Duration, now: DateTime<Utc>) -> Result<std::time::Duration, StoreError> {
        let mut inner = self.lock()?;
        let now = now.timestamp_micros();
        let step = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX / 2);
        let slot = inner.slots.get(key).copied().unwrap_or(now).max(now);
        inner.slots.insert(key.to_string(), slot + step);
        Ok(crate::limits::wait_micros(slot - now))
    }

    async fn wake(&self, id: ExecutionId) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.wakes.retain(|tx| tx.send(id).is_ok());
        Ok(())
    }

    fn wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExecutionId>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.lock().ok()?.wakes.push(tx);
        Some(rx)
    }

    async fn orphans(&self, owner: &str, now: DateTime<Utc>) -> Result<Vec<ExecutionId>, StoreError> {
        let inner = self.lock()?;
        let now = micros(now);
        Ok(inner
            .executions
            .values()
            .filter(|r| (!r.exec.state.is_terminal() && r.lease_available(owner, now)) || r.final_pending())
            .map(|r| r.exec.id)
            .collect())
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        Ok(self.lock()?.append(entry))
    }

    async fn audit_log(&self) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError> {
        let inner = self.lock()?;
        let head = inner.audit.last().map(|r| (r.seq, r.hash.clone()));
        Ok((inner.audit.clone(), head))
    }

    async fn record_inbound(&self, mut item: Inbound, audit: AuditEntry) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if inner.inbox.contains_key(&item.key) {
            return Ok(false);
        }
        item.received_at = micros(item.received_at);
        item.lease_until = micros(item.lease_until);
        let done = item.done;
        inner.inbox.insert(item.key.clone(), (item, done));
        inner.append(&audit);
        Ok(true)
    }

    async fn inbound_done(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        for k in keys {
            if let Some((_, done)) = inner.inbox.get_mut(k) {
                *done = true;
            }
        }
        Ok(())
    }

    async fn claim_inbound(&self, c: &InboxClaim) -> Result<Vec<Inbound>, StoreError> {
        let mut inner = self.lock()?;
        let (owner, own, until) = (c.owner.as_str(), c.own, c.until);
        let (now, forget_before) = (micros(c.now), micros(c.forget_before));
        inner.inbox.retain(|_, (item, done)| !(*done && item.received_at < forget_before));
        let mut taken = Vec::new();
        for (item, done) in inner.inbox.values_mut() {
            if !*done && (item.lease_until < now || (own && item.owner == owner)) {
                item.owner = owner.to_string();
                item.lease_until = micros(until);
                taken.push(item.clone());
            }
        }
        taken.sort_by(|a, b| a.received_at.cmp(&b.received_at).then_with(|| a.key.cmp(&b.key)));
        Ok(taken)
    }

    async fn alert(&self, fingerprint: &str) -> Result<Option<PostedAlert>, StoreError> {
        Ok(self.lock()?.alerts.get(fingerprint).cloned())
    }

    async fn insert_alert(&self, alert: &PostedAlert) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if inner.alerts.contains_key(&alert.fingerprint) {
            return Ok(false);
        }
        inner.alerts.insert(alert.fingerprint.clone(), PostedAlert { updated_at: micros(alert.updated_at), ..alert.clone() });
        Ok(true)
    }

    async fn save_alert(&self, alert: &PostedAlert) -> Result<(), StoreError> {
        self.lock()?.alerts.insert(alert.fingerprint.clone(), PostedAlert { updated_at: micros(alert.updated_at), ..alert.clone() });
        Ok(())
    }

    async fn forget_alert(&self, fingerprint: &str, resolved_before: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.alerts.remove(fingerprint);
        inner.alerts.retain(|_, a| a.firing || a.updated_at >= resolved_before);
        Ok(())
    }

    async fn first_delivery(&self, key: &str, _now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        Ok(inner.deliveries.insert(key.to_string()))
    }

    async fn append_output(&self, id: ExecutionId, step: usize, text: &str) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.output.entry((id, step)).or_default().push_str(text);
        Ok(())
    }

    async fn put_artifact(&self, id: ExecutionId, name: &str, content: &str) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let list = inner.artifacts.entry(id).or_default();
        list.retain(|(n, _)| n != name);
        list.push((name.to_string(), content.to_string()));
        Ok(())
    }

    async fn artifacts(&self, id: ExecutionId) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.lock()?.artifacts.get(&id).cloned().unwrap_or_default())
    }

    async fn output(&self, id: ExecutionId, step: usize) -> Result<String, StoreError> {
        let inner = self.lock()?;
        Ok(inner.output.get(&(id, step)).cloned().unwrap_or_default())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[tokio::test]
    async fn a_keyed_memory_store_keys_its_audit_records_like_the_sql_store() {
        let key = audit::AuditKey::new("k1", &Secret::for_test("memory-store-audit-key-0123456789abcdef"));
        let store = MemoryStore::new().with_audit_key(key.clone());
        let entry = AuditEntry { at: Utc::now(), kind: "command".into(), actor: None, execution: None, detail: serde_json::json!({}) };
        let r = store.append_audit(&entry).await.expect("append");
        assert_eq!(r.key_id, "k1");
        let (records, head) = store.audit_log().await.expect("log");
        let ring = audit::Keyring { current: Some(key), previous: Vec::new() };
        assert_eq!(audit::verify_with(&records, head.as_ref().map(|(s, h)| (*s, h.as_str())), &ring).map(|v| v.unkeyed), Ok(0));
        assert!(audit::verify(&records, head.as_ref().map(|(s, h)| (*s, h.as_str()))).is_err(), "not verifiable without the key");
    }
}
