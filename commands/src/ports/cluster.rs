//! The Kubernetes port: just what the runbooks need — pods of a service and their diagnosis,
//! deleting a pod and waiting for its replacement, rollout status, scaling, Jobs from CronJobs.
//! The kube-rs driver in `adapters/` implements it; so can a test fake.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    /// 401/403: runbot's identity may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other API status (409, 422, 429, 5xx) with the API server's message.
    #[error("API error {code}: {message}")]
    Api { code: u16, message: String },
    #[error("timed out: {0}")]
    Timeout(String),
    /// Connection refused, DNS, TLS, unreadable response.
    #[error("cannot reach the cluster: {0}")]
    Transport(String),
    /// No cluster of that name is connected ([`Clusters::get`]); the message names those that are.
    #[error("{0}")]
    NotConnected(String),
}

/// How a container ended last time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    pub reason: String,
    pub exit_code: i32,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    pub image: String,
    pub ready: bool,
    pub restart_count: i32,
    /// `running`, `waiting: CrashLoopBackOff`, `terminated: Error`, ...
    pub state: String,
    pub last_termination: Option<Termination>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// Being deleted (`metadata.deletionTimestamp` set).
    pub terminating: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub containers: Vec<ContainerInfo>,
}

impl PodInfo {
    /// Unhealthy as the restart runbook means it: not Ready, or a container waiting in
    /// CrashLoopBackOff (or any waiting/terminated state) while the pod should run.
    pub fn unhealthy(&self) -> bool {
        !self.terminating && (!self.ready || self.containers.iter().any(|c| !c.ready || c.state.starts_with("waiting")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// `Normal` or `Warning`.
    pub kind: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last_seen: Option<DateTime<Utc>>,
}

/// What the restore runbook needs to know of a writer Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    pub replicas: i32,
    /// `matchLabels` as a label selector.
    pub selector: String,
}

/// `kubectl rollout status` semantics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rollout {
    /// The controller has not yet observed the latest spec.
    Pending(String),
    /// Progressing: the message says what it waits for.
    Progressing(String),
    Complete(String),
    /// ProgressDeadlineExceeded.
    Failed(String),
}

#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Pods matching a label selector (`app=promotions-api`).
    async fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<PodInfo>, ClusterError>;

    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodInfo>, ClusterError>;

    /// Recent events about one object, newest last.
    async fn events(&self, namespace: &str, pod: &str) -> Result<Vec<EventInfo>, ClusterError>;

    /// The last `tail` lines of a container's log; `previous` asks for the last terminated
    /// container's log.
    async fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool, tail: u32) -> Result<String, ClusterError>;

    /// Deletes a pod (its controller replaces it). Deleting a pod that is already gone is Ok.
    async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), ClusterError>;

    /// Waits (watching, not polling blindly) until `count` pods matching `selector` are Ready,
    /// none of them named in `exclude`; returns the Ready pods' names.
    async fn wait_ready(
        &self,
        namespace: &str,
        selector: &str,
        count: usize,
        exclude: &[String],
        timeout: Duration,
    ) -> Result<Vec<String>, ClusterError>;

    async fn rollout(&self, namespace: &str, deployment: &str) -> Result<Rollout, ClusterError>;

    /// A Deployment's desired replicas and its pods' label selector (`a=b,c=d`).
    async fn deployment(&self, namespace: &str, name: &str) -> Result<DeploymentInfo, ClusterError>;

    /// Waits (watching) until no pod matches `selector`, terminating ones included.
    async fn wait_no_pods(&self, namespace: &str, selector: &str, timeout: Duration) -> Result<(), ClusterError>;

    /// Sets a Deployment's replicas; returns the previous count.
    async fn scale(&self, namespace: &str, deployment: &str, replicas: i32) -> Result<i32, ClusterError>;

    /// Creates Job `job` from CronJob `cronjob` (as `kubectl create job --from=cronjob/...`),
    /// streams its pod's log lines to `output`, and waits for it to finish: Ok(true) when it
    /// succeeded, Ok(false) when it failed.
    async fn run_job_from_cronjob(
        &self,
        namespace: &str,
        cronjob: &str,
        job: &str,
        output: tokio::sync::mpsc::UnboundedSender<String>,
        timeout: Duration,
    ) -> Result<bool, ClusterError>;

    /// A Helm release's history, oldest first, read natively from Helm's release Secrets
    /// (`owner=helm,name=<release>` in `namespace`). Empty when there is no such release.
    async fn helm_history(&self, namespace: &str, release: &str) -> Result<Vec<super::deploy::HelmRevision>, ClusterError>;

    /// May runbot's identity do `verb` on `resource` (`pods`, `deployments.apps`,
    /// `pods/log`: `resource/subresource`, group after a dot) in `namespace`?
    /// A SelfSubjectAccessReview.
    async fn can_i(&self, namespace: &str, verb: &str, resource: &str) -> Result<bool, ClusterError>;

    /// Does Secret `name` exist in `namespace`? (Its data is never read.)
    async fn secret_exists(&self, namespace: &str, name: &str) -> Result<bool, ClusterError>;

    /// Points key `key` of Secret `name` at `value` and keeps the key's current value under
    /// `keep_as`, in one JSON patch (copy, then replace): the old value never passes through
    /// runbot. Fails, changing nothing, when the Secret or the key is missing.
    async fn switch_secret_key(&self, namespace: &str, name: &str, key: &str, value: &str, keep_as: &str) -> Result<(), ClusterError>;
}

/// The configured clusters by name (`[clusters.NAME]`), shared by the Kubernetes step kinds.
#[derive(Clone, Default)]
pub struct Clusters {
    by_name: std::collections::BTreeMap<String, std::sync::Arc<dyn Cluster>>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Clusters").field(&self.names()).finish()
    }
}

impl Clusters {
    pub fn new() -> Self {
        Clusters::default()
    }
    pub fn with(mut self, name: impl Into<String>, cluster: std::sync::Arc<dyn Cluster>) -> Self {
        self.by_name.insert(name.into(), cluster);
        self
    }
    /// The named cluster, or a message saying which ones exist.
    pub fn get(&self, name: &str) -> Result<&std::sync::Arc<dyn Cluster>, ClusterError> {
        self.by_name.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.by_name.keys().map(|s| s.as_str()).collect();
            ClusterError::NotConnected(format!(
                "no cluster named '{name}' is connected (configured: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })
    }
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(|s| s.as_str()).collect()
    }
}
