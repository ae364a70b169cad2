//! The runbook engine: turns commands into durable executions, runs their steps, collects
//! approvals, keeps one live status message per execution and channel, and writes the audit
//! trail. Adapters call [`Engine::handle_command`] and [`Engine::handle_click`] and show the
//! returned [`Reply`] to the person who acted.

mod alerts;
mod approve;
mod backup;
mod commands;
mod plan;
mod publish;
mod render;
mod replicas;
mod runner;
mod sweep;
mod timeline;

pub use alerts::AlertOutcome;
pub use plan::fingerprint;
pub use publish::Publisher;
pub use render::render;

use crate::audit::AuditEntry;
use crate::config::Settings;
use crate::limits::Limits;
use crate::message::Message;
use crate::model::{Execution, ExecutionId, Identity, Origin};
use crate::ports::{Catalogs, Chats, Clock, Fence, Store, StoreError, Versioned};
use crate::steps::StepKinds;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A command typed by someone.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub identity: Identity,
    pub origin: Origin,
    pub text: String,
    /// Memberships the platform vouches for in this (signed) request, e.g. the Discord
    /// member's roles as `discord-role:<id>`; matched against group members. Empty elsewhere.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A button pressed by someone. Nothing in it is trusted beyond "this person pressed this".
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Click {
    pub identity: Identity,
    pub origin: Origin,
    /// The button's value as delivered (`R-42|approve|<fingerprint>`).
    pub value: String,
    /// A platform delivery id; a repeated delivery changes nothing.
    #[serde(default)]
    pub delivery: Option<String>,
    /// Memberships the platform vouches for in this click (see [`Request::roles`]).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// What to show the person who acted (usually privately).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub message: Message,
    /// Only the actor sees it.
    pub ephemeral: bool,
}

impl Reply {
    pub fn private(text: impl Into<String>) -> Self {
        Reply { message: Message::text(text), ephemeral: true }
    }
}

/// The engine. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RwLock<Arc<Settings>>,
    store: Arc<dyn Store>,
    chats: Chats,
    clock: Arc<dyn Clock>,
    kinds: StepKinds,
    limits: Limits,
    /// Executions this process is driving.
    running: Mutex<HashMap<ExecutionId, runner::Driving>>,
    /// When this process last took or renewed each lease (monotonic, follows tokio's clock),
    /// and the lease's fencing epoch.
    claims: Mutex<HashMap<ExecutionId, (tokio::time::Instant, i64)>>,
    /// The databases' backup catalogs.
    catalogs: RwLock<Catalogs>,
    publisher: Publisher,
    metrics: Arc<crate::metrics::Metrics>,
    /// The alerts this process posted (`alerts.rs`).
    alerts: alerts::Alerts,
}

impl Engine {
    pub fn new(settings: Settings, store: Arc<dyn Store>, chats: Chats, clock: Arc<dyn Clock>, kinds: StepKinds) -> Self {
        let interval = Duration::from_millis(settings.config.engine.update_interval_ms);
        let limits = Limits::new(&settings.config.limits);
        Engine {
            inner: Arc::new(Inner {
                settings: RwLock::new(Arc::new(settings)),
                store,
                chats,
                clock,
                kinds,
                limits,
                running: Mutex::new(HashMap::new()),
                claims: Mutex::new(HashMap::new()),
                catalogs: RwLock::new(Catalogs::new()),
                publisher: Publisher::new(interval),
                metrics: Arc::new(crate::metrics::Metrics::new()),
                alerts: Default::default(),
            }),
        }
    }

    /// Connects the databases' backup catalogs (`/ops backup status`, the restore runbook).
    pub fn set_catalogs(&self, catalogs: Catalogs) {
        match self.inner.catalogs.write() {
            Ok(mut c) => *c = catalogs,
            Err(p) => *p.into_inner() = catalogs,
        }
    }

    pub fn catalogs(&self) -> Catalogs {
        self.inner.catalogs.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.inner.settings.read().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Swaps in new settings (config reload). Running executions keep their plan; an execution
    /// waiting for approval whose plan differs under the new settings has its approvals voided
    /// at the next click.
    pub fn reload(&self, settings: Settings) {
        match self.inner.settings.write() {
            Ok(mut s) => *s = Arc::new(settings),
            Err(p) => *p.into_inner() = Arc::new(settings),
        }
    }

    /// The engine's counters, rendered at `GET /metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// Counts an execution that just reached a terminal state.
    fn count_finished(&self, exec: &Execution) {
        if exec.state.is_terminal() {
            self.inner.metrics.execution_finished(&exec.runbook, exec.state.as_str());
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn chats(&self) -> &Chats {
        &self.inner.chats
    }

    pub fn kinds(&self) -> &StepKinds {
        &self.inner.kinds
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }

    /// An audit record about `exec`, stamped now.
    fn audit_entry(&self, kind: &str, actor: Option<&Identity>, exec: Option<ExecutionId>, detail: serde_json::Value) -> AuditEntry {
        AuditEntry { at: self.now(), kind: kind.to_string(), actor: actor.map(|a| a.0.clone()), execution: exec.map(|e| e.to_string()), detail }
    }

    /// Appends to the audit log. A failure is logged, never swallowed silently.
    async fn audit(&self, kind: &str, actor: Option<&Identity>, exec: Option<ExecutionId>, detail: serde_json::Value) {
        let entry = self.audit_entry(kind, actor, exec, detail);
        if let Err(e) = self.inner.store.append_audit(&entry).await {
            tracing::error!(error = %e, kind, "audit append failed");
        }
    }

    /// Loads, changes and saves an execution, retrying when someone else saved in between.
    /// The closure returns `Err(reason)` to leave the execution unchanged.
    async fn update<T>(&self, id: ExecutionId, change: impl FnMut(&mut Execution) -> Result<T, String>) -> Result<(Execution, T), UpdateError> {
        self.update_with(id, None, change, |_, _| Vec::new()).await.map(|(v, out)| (v.value, out))
    }

    /// [`Engine::update`] starting from `hint` (the document as this process last saved it,
    /// which saves a read when nobody changed it since), with the audit records `audit`
    /// derives from the change committed in the same transaction.
    async fn update_with<T>(
        &self,
        id: ExecutionId,
        hint: Option<Versioned<Execution>>,
        change: impl FnMut(&mut Execution) -> Result<T, String>,
        audit: impl Fn(&Execution, &T) -> Vec<AuditEntry>,
    ) -> Result<(Versioned<Execution>, T), UpdateError> {
        self.update_as(id, hint, None, change, audit).await
    }

    /// [`Engine::update_with`]; with a `fence` (the lease holder's token), every save is
    /// refused once the lease changed hands ([`StoreError::Fenced`]).
    async fn update_as<T>(
        &self,
        id: ExecutionId,
        mut hint: Option<Versioned<Execution>>,
        fence: Option<&Fence>,
        mut change: impl FnMut(&mut Execution) -> Result<T, String>,
        audit: impl Fn(&Execution, &T) -> Vec<AuditEntry>,
    ) -> Result<(Versioned<Execution>, T), UpdateError> {
        for _ in 0..20 {
            let v = match hint.take() {
                Some(v) => v,
                None => match self.inner.store.load(id).await.map_err(UpdateError::Store)? {
                    Some(v) => v,
                    None => return Err(UpdateError::Refused(format!("There is no execution {id}."))),
                },
            };
            let mut exec = v.value;
            exec.updated_at = self.now();
            let out = change(&mut exec).map_err(UpdateError::Refused)?;
            let entries = audit(&exec, &out);
            let saved = if let Some(f) = fence {
                self.inner.store.save_fenced(&exec, v.version, &entries, f).await
            } else if entries.is_empty() {
                self.inner.store.save(&exec, v.version).await
            } else {
                self.inner.store.save_audited(&exec, v.version, &entries).await
            };
            match saved {
                Ok(version) => return Ok((Versioned { value: exec, version }, out)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(UpdateError::Store(e)),
            }
        }
        Err(UpdateError::Store(StoreError::Conflict(id)))
    }

    /// Queues an edit of every status message of an execution: its updater renders the
    /// newest stored state when it sends (see `publish.rs`).
    fn publish(&self, exec: &Execution) {
        self.inner.publisher.publish(self, exec);
    }
}

#[derive(Debug)]
enum UpdateError {
    /// The change was refused, with a message for the person who asked.
    Refused(String),
    Store(StoreError),
}

impl UpdateError {
    fn reply(self) -> Reply {
        match self {
            UpdateError::Refused(m) => Reply::private(m),
            UpdateError::Store(e) => {
                tracing::error!(error = %e, "store error");
                Reply::private("runbot could not reach its state store; nothing was changed. Try again in a moment.")
            }
        }
    }
}
