//! The ports of the deploy and rollback runbooks: GitHub Actions (the CI gate and the
//! `pipeline` driver), a container registry (does the image tag exist?), and plain HTTP GETs
//! (the smoke test). Helm's release history is read through the [`super::Cluster`] port; the
//! `helm` and `docker` CLIs are run as local processes by the step kinds themselves.
//! The octocrab / reqwest implementations live in `adapters/`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// One GitHub Actions workflow run, as runbot needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    pub id: u64,
    pub run_number: u64,
    /// The workflow's name, e.g. `CI`.
    pub name: String,
    pub head_branch: Option<String>,
    pub head_sha: String,
    /// `push`, `workflow_dispatch`, ...
    pub event: String,
    /// `queued`, `in_progress`, `completed`, ...
    pub status: String,
    /// When completed: `success`, `failure`, `cancelled`, `timed_out`, ...
    pub conclusion: Option<String>,
    pub html_url: String,
    pub created_at: DateTime<Utc>,
}

impl WorkflowRun {
    pub fn succeeded(&self) -> bool {
        self.status == "completed" && self.conclusion.as_deref() == Some("success")
    }
    /// `completed/failure`, `in_progress`, ...
    pub fn state(&self) -> String {
        match &self.conclusion {
            Some(c) if self.status == "completed" => format!("completed/{c}"),
            _ => self.status.clone(),
        }
    }
}

/// Which runs of a workflow to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub branch: Option<String>,
    pub event: Option<String>,
    /// At most this many, newest first (1..=100).
    pub per_page: u8,
}

/// Why GitHub Actions gave no usable answer. Each text is a sentence for a chat channel that
/// names the request (method and path) and never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CiError {
    /// Refused before anything was sent: not `owner/name`, not a workflow or tag name, no ref.
    #[error("{0}")]
    Invalid(String),
    /// GitHub answered with an error status (401, 404, 422, 5xx, ...).
    #[error("{message}")]
    Api { status: u16, message: String },
    /// No answer within the configured timeout.
    #[error("{0}")]
    Timeout(String),
    /// GitHub could not be reached, or its answer could not be read.
    #[error("{0}")]
    Transport(String),
    /// The answer does not hold what was asked for (e.g. a tag that names no commit).
    #[error("{0}")]
    Unexpected(String),
}

/// Why a registry could not say whether a tag exists. Each text names the registry host and
/// never a password or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Not an image name runbot accepts, or not a tag.
    #[error("{0}")]
    Invalid(String),
    /// The registry (or its token service) wants credentials runbot does not have, or refused
    /// the ones it has (HTTP 401/403).
    #[error("{0}")]
    Unauthorized(String),
    /// Any other answer that is not a verdict: an unexpected status, a challenge or token
    /// answer runbot cannot use.
    #[error("{0}")]
    Protocol(String),
    /// Unreachable: refused, timed out, TLS, DNS.
    #[error("{0}")]
    Transport(String),
}

/// Why an HTTP GET got no answer. Each text names the URL without credentials or query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpCheckError {
    /// Not an http(s) URL.
    #[error("{0}")]
    InvalidUrl(String),
    /// No (complete) answer within the timeout.
    #[error("{0}")]
    Timeout(String),
    /// Refused, reset, TLS, DNS, too many redirects.
    #[error("{0}")]
    Transport(String),
}

/// GitHub Actions for one configured API endpoint and token.
#[async_trait]
pub trait Ci: Send + Sync + 'static {
    /// Runs of `workflow` (its file name, e.g. `ci.yml`, or numeric id) in `repo`
    /// (`owner/name`), newest first.
    async fn runs(&self, repo: &str, workflow: &str, query: &RunQuery) -> Result<Vec<WorkflowRun>, CiError>;
    /// One run by id.
    async fn run(&self, repo: &str, id: u64) -> Result<WorkflowRun, CiError>;
    /// The commit a tag points at, annotated tags peeled; `None` when there is no such tag.
    async fn tag_commit(&self, repo: &str, tag: &str) -> Result<Option<String>, CiError>;
    /// Dispatches `workflow` on `git_ref` with `inputs` (a `workflow_dispatch` event).
    async fn dispatch(&self, repo: &str, workflow: &str, git_ref: &str, inputs: &BTreeMap<String, String>) -> Result<(), CiError>;
}

/// Container registries (HTTP API v2), by registry host.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Does `image` (`registry.example.com/team/app`) have `tag`? `Err` when the registry
    /// cannot be asked (unreachable, credentials refused), with the reason.
    async fn tag_exists(&self, image: &str, tag: &str) -> Result<bool, RegistryError>;
}

/// The answer to one HTTP GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// The body, at most the first 64 KiB, lossily decoded.
    pub body: String,
    pub elapsed: Duration,
}

/// Plain HTTP GETs (the smoke test).
#[async_trait]
pub trait HttpCheck: Send + Sync + 'static {
    /// `Err` when there is no HTTP answer at all (refused, timed out, TLS), with the reason.
    async fn get(&self, url: &str, timeout: Duration) -> Result<HttpAnswer, HttpCheckError>;
}

/// One revision of a Helm release, read from Helm's release storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelmRevision {
    pub revision: u32,
    /// `deployed`, `superseded`, `failed`, `pending-upgrade`, ...
    pub status: String,
    /// `name-version` as `helm history` prints it, e.g. `promotions-0.3.1`.
    pub chart: String,
    pub app_version: String,
    pub updated: Option<DateTime<Utc>>,
    pub description: String,
    /// The values it ran with: the chart's defaults overridden by those given at
    /// install/upgrade/rollback (`config`), as JSON.
    pub values: serde_json::Value,
}

impl HelmRevision {
    /// A value by dotted key (`image.tag`) from the revision's values.
    pub fn value(&self, dotted: &str) -> Option<String> {
        let mut v = &self.values;
        for part in dotted.split('.') {
            v = v.get(part)?;
        }
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}
