//! Step kinds: each kind checks its parameters and renders its exact action at plan time
//! ([`StepKind::prepare`]) and performs it at run time ([`StepKind::run`]). The engine knows
//! kinds only through this trait; tests register their own kinds, never shipped.

pub mod backup;
pub mod command;
pub mod deploy;
pub mod integrity;
pub mod job;
pub mod k8s;
pub(crate) mod pace;
pub(crate) mod process;
pub use process::{STOP_GRACE, SUPERVISOR_FLAG, supervise_main, use_supervisor};
pub mod restore;
pub mod writers;

use crate::model::{Execution, StepProcess};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// The kind name of the engine-native approval step.
pub const APPROVAL: &str = "approval";

/// A step made concrete for one execution: the exact action and what the kind needs to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Shown in the plan and the status message, e.g. `run ["find", "/var/cache/promotions", ...]`.
    pub action: String,
    /// Stored in the execution; `run` receives exactly this after a restart too.
    pub params: serde_json::Value,
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Done; a one-line summary for the status message.
    Succeeded(String),
    /// Done, and it resolved what the following steps act on (e.g. the pods to restart); the
    /// targets become part of the plan the approvers see. A rollback's target comes with its
    /// structured form, which the steps after it act on.
    Resolved { summary: String, targets: Vec<String>, rollback: Option<crate::model::RollbackTarget> },
    /// Done, and there is nothing left to do: the remaining steps are skipped and the
    /// execution succeeds with this summary (e.g. "no unhealthy pods").
    Finished(String),
    /// Failed; the reason, shown in the status message.
    Failed(String),
    /// Stopped because the execution was cancelled.
    Cancelled(String),
}

impl StepOutcome {
    /// The one-line text of any outcome.
    pub fn summary(&self) -> &str {
        match self {
            StepOutcome::Succeeded(s) | StepOutcome::Finished(s) | StepOutcome::Failed(s) | StepOutcome::Cancelled(s) => s,
            StepOutcome::Resolved { summary, .. } => summary,
        }
    }
}

/// What a running step may use.
pub struct StepContext {
    /// A snapshot of the execution at the start of the step.
    pub execution: Execution,
    pub step: usize,
    /// Output lines for the execution log and the detail thread.
    pub output: mpsc::UnboundedSender<String>,
    /// Becomes true when the execution is cancelled; long steps should stop.
    pub cancel: watch::Receiver<bool>,
    /// Resolved secrets available to this step, by name.
    pub secrets: BTreeMap<String, crate::config::Secret>,
    /// Artifacts to keep with the execution: (file name, content). Stored by the engine when
    /// the step ends, listed in the status message, viewable from chat, exportable.
    pub artifacts: mpsc::UnboundedSender<(String, String)>,
    /// Where a step saves each process it starts, before the process does anything.
    pub processes: ProcessLog,
}

/// Saves a step's process in the execution (the engine's side of [`StepContext::processes`]).
#[derive(Clone)]
pub struct ProcessLog(pub(crate) mpsc::UnboundedSender<(StepProcess, oneshot::Sender<Result<(), String>>)>);

impl ProcessLog {
    /// Returns once the process is saved, or why it could not be.
    pub async fn record(&self, p: StepProcess) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.0.send((p, tx)).map_err(|_| "the step has ended".to_string())?;
        rx.await.unwrap_or_else(|_| Err("the step has ended".into()))
    }
}

#[async_trait]
pub trait StepKind: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Whether a step of this kind may be run again after a crash, unless the runbook says.
    fn default_idempotent(&self) -> bool;

    /// Checks the step's parameters and renders them with the execution's variables. `vars`
    /// names every variable available; secrets appear as `{secret.NAME}` placeholders only.
    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String>;

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome;

    /// For a follow-up of `failed` (e.g. [Rollback] after a failed deploy) whose plan holds a
    /// step of this kind with `params`: whether what `failed` left behind is still there, read
    /// without changing anything. `None`: this kind cannot tell. `Some(Err(why))`: the
    /// follow-up no longer applies, and is not created.
    async fn follow_up_applies(&self, _params: &serde_json::Value, _failed: &Execution) -> Option<Result<(), String>> {
        None
    }
}

/// A step's parameters as written in the runbooks file, into the kind's definition type.
pub(crate) fn definition<T: serde::de::DeserializeOwned>(params: &toml::Table) -> Result<T, String> {
    toml::Value::Table(params.clone()).try_into().map_err(|e: toml::de::Error| e.message().to_string())
}

/// The parameters a kind stored at plan time, read back when the step runs.
pub(crate) fn stored<T: serde::de::DeserializeOwned>(params: &serde_json::Value) -> Result<T, StepOutcome> {
    serde_json::from_value(params.clone()).map_err(|e| StepOutcome::Failed(format!("stored parameters are unreadable: {e}")))
}

/// A step's `timeout` (at least one second), or `default_secs` when not given.
pub(crate) fn timeout_secs(timeout: &Option<String>, default_secs: u64) -> Result<u64, String> {
    match timeout {
        Some(t) => Ok(crate::config::parse_duration(t)?.as_secs().max(1)),
        None => Ok(default_secs),
    }
}

/// Runs `fut` unless the execution is cancelled first (`None` then).
pub(crate) async fn unless_cancelled<T>(cancel: &watch::Receiver<bool>, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let mut cancel = cancel.clone();
    if *cancel.borrow_and_update() {
        return None;
    }
    tokio::select! {
        v = fut => Some(v),
        _ = async {
            loop {
                if cancel.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if *cancel.borrow() {
                    return;
                }
            }
        } => None,
    }
}

/// What the shipped step kinds act on.
#[derive(Clone, Default)]
pub struct Connections {
    pub clusters: crate::ports::Clusters,
    pub catalogs: crate::ports::Catalogs,
    /// Runs the `db-integrity` checks (the sqlx implementation in a real runbot).
    pub checker: Option<Arc<dyn crate::ports::integrity::DbChecker>>,
    /// The databases' checks, from `[databases.NAME.integrity]` (see [`integrity::specs`]).
    pub integrity: BTreeMap<String, integrity::IntegritySpec>,
    /// GitHub, the registry client, the HTTP client, the CLIs and `[services]`, for the deploy
    /// and rollback kinds (its `clusters` are set from the field above).
    pub deploy: deploy::DeployConnections,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("clusters", &self.clusters)
            .field("catalogs", &self.catalogs)
            .field("checker", &self.checker.is_some())
            .field("integrity", &self.integrity.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The registered step kinds.
#[derive(Clone, Default)]
pub struct StepKinds {
    kinds: BTreeMap<&'static str, Arc<dyn StepKind>>,
}

impl StepKinds {
    /// The kinds runbot ships, without a cluster connected (the Kubernetes kinds exist, and
    /// say so when a step needs a cluster).
    pub fn shipped() -> Self {
        Self::shipped_with(&crate::ports::Clusters::new())
    }
    /// The kinds runbot ships, acting on these clusters.
    pub fn shipped_with(clusters: &crate::ports::Clusters) -> Self {
        Self::shipped_for(&Connections { clusters: clusters.clone(), ..Connections::default() })
    }
    /// The kinds runbot ships, acting on these clusters and backup catalogs.
    pub fn shipped_for(c: &Connections) -> Self {
        let mut kinds = StepKinds::default()
            .with(Arc::new(command::CommandStep))
            .with(Arc::new(backup::RestorePointStep::new(c.catalogs.clone())))
            .with(Arc::new(integrity::IntegrityStep { checker: c.checker.clone(), specs: c.integrity.clone() }))
            .with(Arc::new(job::JobFromCronJob { clusters: c.clusters.clone() }))
            .with(Arc::new(restore::RestoreStep { databases: c.deploy.databases.clone() }))
            .with(Arc::new(restore::PreflightStep {
                databases: c.deploy.databases.clone(),
                clusters: c.clusters.clone(),
                checker: c.checker.clone(),
            }))
            .with(Arc::new(restore::RehearseStep { databases: c.deploy.databases.clone(), checker: c.checker.clone() }))
            .with(Arc::new(restore::CutoverStep { databases: c.deploy.databases.clone(), clusters: c.clusters.clone() }));
        for k in backup::PruneStep::both(&c.catalogs) {
            kinds = kinds.with(Arc::new(k));
        }
        let d = deploy::DeployConnections { clusters: c.clusters.clone(), ..c.deploy.clone() };
        for k in k8s::K8sStep::all(&c.clusters).into_iter().chain(writers::WritersStep::all(&c.clusters)).chain(deploy::kinds(&d)) {
            kinds = kinds.with(k);
        }
        kinds
    }
    pub fn with(mut self, kind: Arc<dyn StepKind>) -> Self {
        self.kinds.insert(kind.kind(), kind);
        self
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StepKind>> {
        self.kinds.get(name)
    }
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.kinds.keys().copied().collect();
        v.push(APPROVAL);
        v.sort();
        v
    }
}
