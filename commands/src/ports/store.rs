//! The state store port: executions (one JSON document each, optimistic concurrency), target
//! locks, leases, the hash-chained audit log, delivery de-duplication and step output.

use crate::audit::{AuditEntry, AuditRecord};
use crate::model::{Execution, ExecutionId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Another execution holds the target's lock.
    #[error("target {key} is locked by {holder}")]
    Locked { key: String, holder: ExecutionId },
    /// The document changed since it was read (optimistic concurrency).
    #[error("execution {0} was changed concurrently")]
    Conflict(ExecutionId),
    #[error("execution {0} not found")]
    NotFound(ExecutionId),
    /// The inbox entry a new execution would consume was processed already (by another
    /// process that recovered it, or before a restart): nothing was created.
    #[error("the received command {0} was already acted on")]
    AlreadyProcessed(String),
    #[error("store: {0}")]
    Backend(String),
}

/// An execution with the version its row had when read.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub version: i64,
}

/// A command or click received from a chat platform, recorded durably before it is
/// acknowledged (the inbox): processed exactly once — by the process that acknowledged it, or,
/// when that process died first, by whichever recovers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The platform's de-duplication key (a Slack trigger or event id, a Discord interaction
    /// id): a second delivery with the same key is not recorded again.
    pub key: String,
    pub platform: String,
    pub received_at: DateTime<Utc>,
    /// The process working on it (`Settings::instance`) ...
    pub owner: String,
    /// ... until then; past it, another process may take it over.
    pub lease_until: DateTime<Utc>,
    /// What processing needs: the work and where to answer (the chat pipeline's encoding).
    pub payload: serde_json::Value,
}

/// Which unprocessed inbox entries [`Store::claim_inbound`] takes over, and for how long.
#[derive(Debug, Clone)]
pub struct InboxClaim {
    /// The process taking them (`Settings::instance`).
    pub owner: String,
    /// Also those `owner` holds already: a previous run of this process (at start-up only).
    pub own: bool,
    /// Their new lease.
    pub until: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// Done entries received before this are forgotten on the way.
    pub forget_before: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only executions that are not in a terminal state.
    pub active_only: bool,
    /// Only executions whose target name is this.
    pub target: Option<String>,
    /// Newest first, at most this many (0 = no limit).
    pub limit: u32,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Allocates the next execution number (`R-<n>`); numbers are never reused.
    async fn next_id(&self) -> Result<ExecutionId, StoreError>;

    /// Stores a new execution and, when `lock_key` is given, takes that lock in the same
    /// transaction. Fails with [`StoreError::Locked`] naming the holder.
    async fn create(&self, exec: &Execution, lock_key: Option<&str>) -> Result<(), StoreError>;

    /// [`Store::create`] and [`Store::append_audit`] of each entry, in one transaction where
    /// the backend has them (the SQL store): a new execution and its audit records commit
    /// together, or neither does. When `exec.inbox` names a received item, that item is marked
    /// processed in the same transaction, and the call fails with
    /// [`StoreError::AlreadyProcessed`] (nothing written) when it was processed already.
    async fn create_audited(&self, exec: &Execution, lock_key: Option<&str>, entries: &[AuditEntry]) -> Result<(), StoreError>;

    async fn load(&self, id: ExecutionId) -> Result<Option<Versioned<Execution>>, StoreError>;

    /// Replaces the document if its version is still `expected`; returns the new version. When
    /// the execution is terminal, its lock is released in the same transaction.
    async fn save(&self, exec: &Execution, expected: i64) -> Result<i64, StoreError>;

    /// [`Store::save`] and [`Store::append_audit`] of each entry, in one transaction where the
    /// backend has them (the SQL store): the change and its audit records commit together.
    async fn save_audited(&self, exec: &Execution, expected: i64, entries: &[AuditEntry]) -> Result<i64, StoreError> {
        let version = self.save(exec, expected).await?;
        for e in entries {
            self.append_audit(e).await?;
        }
        Ok(version)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Execution>, StoreError>;

    /// Takes or renews the lease on an execution for `owner` until `until`; succeeds when the
    /// lease is free, expired at `now`, or already `owner`'s.
    async fn claim(&self, id: ExecutionId, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Non-terminal executions whose lease is free, expired at `now`, or held by `owner` — the
    /// work a (re)started process should pick up — plus terminal ones whose final message was
    /// not yet delivered.
    async fn orphans(&self, owner: &str, now: DateTime<Utc>) -> Result<Vec<ExecutionId>, StoreError>;

    /// Appends to the hash-chained audit log atomically (reads the head, links, writes).
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError>;

    /// The whole audit log in sequence order, and the stored head `(seq, hash)`.
    async fn audit_log(&self) -> Result<(Vec<AuditRecord>, Option<(u64, String)>), StoreError>;

    /// Records a received command (`item`) and its audit record in one transaction, unless an
    /// item with the same key was recorded before: then nothing is written and the answer is
    /// `false`. Under load, records share group commits with other audit appends.
    async fn record_inbound(&self, item: &Inbound, audit: &AuditEntry) -> Result<bool, StoreError>;

    /// Marks received items processed (idempotent; unknown keys are ignored). An execution
    /// created from one (`Execution::inbox`) marks it in its own transaction instead.
    async fn inbound_done(&self, keys: &[String]) -> Result<(), StoreError>;

    /// Takes over unprocessed items for `c.owner` until `c.until`, oldest first: those whose
    /// lease expired at `c.now` and, with `c.own`, those already `c.owner`'s. Done items
    /// received before `c.forget_before` are deleted on the way.
    async fn claim_inbound(&self, c: &InboxClaim) -> Result<Vec<Inbound>, StoreError>;

    /// Records a delivery key (Slack `event_id`, a click's id); false if it was seen before.
    async fn first_delivery(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Appends a chunk of a step's output to the execution log.
    async fn append_output(&self, id: ExecutionId, step: usize, text: &str) -> Result<(), StoreError>;

    /// A step's whole output.
    async fn output(&self, id: ExecutionId, step: usize) -> Result<String, StoreError>;

    /// Keeps an artifact of an execution (an artifact of the same name is replaced).
    async fn put_artifact(&self, id: ExecutionId, name: &str, content: &str) -> Result<(), StoreError>;

    /// An execution's artifacts, `(name, content)`, in the order they were kept.
    async fn artifacts(&self, id: ExecutionId) -> Result<Vec<(String, String)>, StoreError>;

    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
