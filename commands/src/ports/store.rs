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
    /// A lease holder's write carried a fencing token that is no longer current: the lease
    /// changed hands (or was released) since this holder took it.
    #[error("execution {0}: this process no longer holds its lease")]
    Fenced(ExecutionId),
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
    /// Processed already when recorded: its answer needed nothing but the command itself and
    /// rides on the acknowledgement (help, whoami, a typo), so it is recorded as done — one
    /// write — and never taken over.
    pub done: bool,
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

/// An alert runbot posted, as every process sharing the store sees it (see
/// `engine::alerts`): a repeat or a `resolved` delivered to any replica, or after a restart,
/// edits the same message.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedAlert {
    /// The sender's fingerprint of the alert.
    pub fingerprint: String,
    /// The chat message's id; empty while the process that claimed the alert has not posted it.
    pub message: String,
    pub firing: bool,
    /// The alert, its proposal, diagnosis and execution (the engine's encoding).
    pub doc: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// A fencing token: the lease holder and the epoch its claim was given. A lease holder's
/// writes carry it ([`Store::save_fenced`]); they fail once the lease changed hands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub owner: String,
    pub epoch: i64,
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

    /// [`Store::save_audited`] by a lease holder: also refused, with [`StoreError::Fenced`],
    /// unless the lease is still `fence.owner`'s with the epoch of `fence` (checked in the
    /// same transaction as the write), so a holder that was paused or cut off while another
    /// process took the execution over cannot overwrite what the new holder decided.
    async fn save_fenced(&self, exec: &Execution, expected: i64, entries: &[AuditEntry], fence: &Fence) -> Result<i64, StoreError>;

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Execution>, StoreError>;

    /// Takes or renews the lease on an execution for `owner` until `until`; succeeds when the
    /// lease is free, expired at `now`, held by an owner known to be gone (see
    /// [`Store::owner_alive`]), or already `owner`'s. Returns the lease's fencing epoch: the
    /// same while `owner` renews a lease it holds, a new (higher) one whenever it is taken
    /// anew; `None` when another owner holds it.
    async fn claim(&self, id: ExecutionId, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<i64>, StoreError>;

    /// Gives up `owner`'s lease on an execution (nothing happens if another owner holds it):
    /// the next claim by anyone succeeds at once, with a new epoch.
    async fn release(&self, id: ExecutionId, owner: &str) -> Result<(), StoreError>;

    /// Whether `owner`'s process is known to be alive: `Some(false)` when it holds a liveness
    /// lock no more (PostgreSQL: its session advisory lock went with its connection), `None`
    /// when the store cannot tell (then only the stored lease's expiry counts).
    async fn owner_alive(&self, owner: &str) -> Result<Option<bool>, StoreError> {
        let _ = owner;
        Ok(None)
    }

    /// Before editing status message `message` of an execution with the content of the
    /// document's `version`: true when that content may be sent — `version` is newer than any
    /// edit claimed so far, or it is the newest claimed and not yet confirmed delivered (its
    /// sender may have died). Records `version` as claimed. False means a newer state was or
    /// is being sent, or this one was already delivered: nothing to send.
    async fn claim_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError>;

    /// After an edit with `version`'s content was applied: records it as delivered, and says
    /// whether it is still the newest claimed. False means a newer edit was claimed meanwhile
    /// and may have been applied before this one: the sender must send the newest state again.
    async fn confirm_edit(&self, id: ExecutionId, message: usize, version: i64) -> Result<bool, StoreError>;

    /// Takes or keeps the role `role` (periodic work one replica does at a time) for `owner`
    /// until `until`: true while this owner holds it; it moves to another owner when it
    /// expires at `now`, or at once when the store knows the holder is gone.
    async fn lead(&self, role: &str, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Whether several processes share this store (then quotas are also counted in it with
    /// [`Store::take_quota`], so N replicas do not multiply them).
    fn shared(&self) -> bool {
        false
    }

    /// Counts one command against quota `key` (`per_minute`, the same as burst; GCRA with
    /// microsecond times): `None` when within it, else how long until the next is allowed.
    /// Counted in the store, so every process sharing it draws on the same quota.
    async fn take_quota(&self, key: &str, per_minute: u32, now: DateTime<Utc>) -> Result<Option<std::time::Duration>, StoreError>;

    /// Reserves the next write slot of `key` (a chat channel) for processes sharing this store:
    /// slots are `interval` apart; returns how long to wait from `now` for the one reserved.
    async fn take_slot(&self, key: &str, interval: std::time::Duration, now: DateTime<Utc>) -> Result<std::time::Duration, StoreError>;

    /// Asks whichever process drives execution `id` to look at it now (a click on another
    /// replica changed it). Best effort: the sweep finds it anyway.
    async fn wake(&self, id: ExecutionId) -> Result<(), StoreError> {
        let _ = id;
        Ok(())
    }

    /// The wake-ups ([`Store::wake`]) sent by any process, when the store carries them.
    fn wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExecutionId>> {
        None
    }

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
    async fn record_inbound(&self, item: Inbound, audit: AuditEntry) -> Result<bool, StoreError>;

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

    /// The alert posted for `fingerprint`, if any.
    async fn alert(&self, fingerprint: &str) -> Result<Option<PostedAlert>, StoreError>;

    /// Stores `alert` unless one with its fingerprint is stored: true when it was stored (the
    /// caller posts it), false when another process (or an earlier run) has it already.
    async fn insert_alert(&self, alert: &PostedAlert) -> Result<bool, StoreError>;

    /// Replaces the stored alert with `alert` (stores it when absent).
    async fn save_alert(&self, alert: &PostedAlert) -> Result<(), StoreError>;

    /// Forgets the alert (e.g. its message could not be posted: the sender's retry claims it
    /// anew). Resolved alerts updated before `resolved_before` are forgotten on the way.
    async fn forget_alert(&self, fingerprint: &str, resolved_before: DateTime<Utc>) -> Result<(), StoreError>;

    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
