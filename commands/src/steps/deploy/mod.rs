//! The step kinds of the deploy and rollback runbooks. What they act on comes from the
//! service's environment in the config (`driver`, `helm`, `pipeline`, `swarm`, `smoke`,
//! `image`, `secrets`, and the service's `ci`), resolved at plan time into each step's stored
//! parameters, so the plan shows — and approvals bind — the exact action.
//!
//! - `deploy-preflight` (read-only): the driver's tool is installed, runbot may do what the
//!   runbook needs in the namespace (SelfSubjectAccessReview per verb), the image tag exists in
//!   the registry, the service's Secrets exist. Any miss refuses before approval.
//! - `ci-gate` (read-only): the latest run of the CI workflow on its branch succeeded and, when
//!   the version is a git tag, ran on the tag's commit.
//! - `deploy-rollout`: `helm upgrade --install … --wait`, the deploy workflow dispatched and
//!   followed (`pipeline`), or `docker stack deploy` / `docker service update --image` (`swarm`).
//! - `deploy-verify` (read-only): `kubectl rollout status` semantics and every pod Ready on the
//!   new image (Swarm: every task running it); on timeout, which pods and why.
//! - `smoke-test` (read-only): expected status and body text, retries with backoff, latency.
//! - `rollback-target` (read-only): current → target from Helm's release history or the Swarm
//!   service's previous image, as resolved targets the approvers see.
//! - `rollback-evidence` (read-only): the failing version's pod logs (current and previous
//!   container) kept as an artifact, before the rollback replaces those pods.
//! - `rollback-apply`: `helm rollback <release> <revision> --wait` or
//!   `docker service update --image <image>:<tag>`.

pub mod gate;
pub mod rollback;
pub mod rollout;
pub mod verify;

use crate::config::{CiConfig, HelmConfig, PipelineConfig, ServiceConfig, SmokeConfig, SwarmConfig, ToolsConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The command-line tools the drivers run, located once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub helm: Option<PathBuf>,
    pub docker: Option<PathBuf>,
}

impl Tools {
    /// Configured paths, else `helm` / `docker` on PATH. A configured path that is not an
    /// executable file is reported, not silently replaced.
    pub fn locate(cfg: &ToolsConfig) -> Result<Tools, String> {
        let find = |configured: &Option<String>, name: &str| -> Result<Option<PathBuf>, String> {
            match configured {
                Some(p) if executable(Path::new(p)) => Ok(Some(PathBuf::from(p))),
                Some(p) => Err(format!("[tools] {name} = \"{p}\" is not an executable file")),
                None => Ok(on_path(name)),
            }
        };
        Ok(Tools { helm: find(&cfg.helm, "helm")?, docker: find(&cfg.docker, "docker")? })
    }

    pub(crate) fn get(&self, name: &str) -> Result<String, String> {
        let p = match name {
            "helm" => &self.helm,
            _ => &self.docker,
        };
        p.as_ref()
            .map(|p| p.display().to_string())
            .ok_or_else(|| format!("`{name}` is not installed where runbot runs (not on PATH; or set [tools] {name} = \"/path/to/{name}\")"))
    }
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| executable(p)))
}

/// What the deploy kinds need, shared by all of them.
#[derive(Clone, Default)]
pub struct DeployConnections {
    pub clusters: crate::ports::Clusters,
    pub ci: Option<Arc<dyn crate::ports::Ci>>,
    pub registry: Option<Arc<dyn crate::ports::Registry>>,
    pub http: Option<Arc<dyn crate::ports::HttpCheck>>,
    pub tools: Tools,
    /// `[services]` from the config.
    pub services: BTreeMap<String, ServiceConfig>,
    /// `[databases]` from the config (a restore's smoke test and restore command).
    pub databases: BTreeMap<String, crate::config::DatabaseConfig>,
}

/// A service environment as the deploy kinds act on it; stored in each step's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployTarget {
    pub service: String,
    pub env: String,
    /// `helm`, `pipeline`, `swarm`, or empty when none is configured.
    pub driver: String,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub deployment: Option<String>,
    pub selector: Option<String>,
    /// Image repository without tag.
    pub image: Option<String>,
    pub secrets: Vec<String>,
    pub ci: Option<CiConfig>,
    pub helm: Option<HelmConfig>,
    pub pipeline: Option<PipelineConfig>,
    pub swarm: Option<SwarmConfig>,
    pub smoke: Option<SmokeConfig>,
}

impl DeployTarget {
    /// The target of this execution; `Ok(None)` while the config is being checked (blank
    /// variables), when there is nothing to look up.
    pub(crate) fn of(services: &BTreeMap<String, ServiceConfig>, vars: &BTreeMap<String, String>) -> Result<Option<DeployTarget>, String> {
        let service = vars.get("service").cloned().unwrap_or_default();
        let env = vars.get("env").cloned().unwrap_or_default();
        if service.is_empty() {
            return Ok(None);
        }
        let svc = services.get(&service).ok_or_else(|| format!("'{service}' is not a configured service"))?;
        let e = svc.environments.get(&env).ok_or_else(|| format!("{service} has no environment '{env}'"))?;
        let var = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(Some(DeployTarget {
            driver: e.driver.clone().unwrap_or_default(),
            cluster: var("cluster"),
            namespace: var("namespace"),
            deployment: var("deployment"),
            selector: var("selector"),
            image: e.image.clone().or_else(|| e.swarm.as_ref().map(|s| s.image.clone())),
            secrets: e.secrets.clone(),
            ci: svc.ci.clone(),
            helm: e.helm.clone(),
            pipeline: e.pipeline.clone(),
            swarm: e.swarm.clone(),
            smoke: e.smoke.clone(),
            service,
            env,
        }))
    }

    pub(crate) fn where_(&self) -> String {
        format!("{} ({})", self.service, self.env)
    }

    /// A message for a driver that is missing or lacks its section.
    pub(crate) fn driver_missing(&self) -> String {
        match self.driver.as_str() {
            "" => format!(
                "{} has no deploy driver: set `driver = \"helm\" | \"pipeline\" | \"swarm\"` with its section under services.{}.environments.{}",
                self.where_(),
                self.service,
                self.env
            ),
            d => format!("{} uses driver \"{d}\" but services.{}.environments.{}.{d} is not configured", self.where_(), self.service, self.env),
        }
    }

    pub(crate) fn k8s(&self) -> Result<(String, String, String, String), String> {
        let need = |v: &Option<String>, k: &str| {
            v.clone().ok_or_else(|| format!("{} has no `{k}`: set it under services.{}.environments.{}", self.where_(), self.service, self.env))
        };
        Ok((
            need(&self.cluster, "cluster")?,
            need(&self.namespace, "namespace")?,
            need(&self.deployment, "deployment")?,
            need(&self.selector, "selector")?,
        ))
    }

    /// The connected cluster the service runs on, its namespace, Deployment and selector.
    pub(crate) fn connect(&self, clusters: &crate::ports::Clusters) -> Result<(Arc<dyn crate::ports::Cluster>, String, String, String), String> {
        let (cluster, ns, dep, sel) = self.k8s()?;
        Ok((clusters.get(&cluster)?.clone(), ns, dep, sel))
    }

    /// The pipeline's repository: its own, else the service's CI repository.
    pub(crate) fn pipeline_repo(&self) -> Option<String> {
        self.pipeline.as_ref().and_then(|p| p.repo.clone()).or_else(|| self.ci.as_ref().map(|c| c.repo.clone()))
    }
}

/// All deploy step kinds over these connections.
pub fn kinds(c: &DeployConnections) -> Vec<Arc<dyn super::StepKind>> {
    let c = Arc::new(c.clone());
    vec![
        Arc::new(gate::Preflight(c.clone())),
        Arc::new(gate::CiGate(c.clone())),
        Arc::new(rollout::Rollout(c.clone())),
        Arc::new(verify::Verify(c.clone())),
        Arc::new(verify::Smoke(c.clone())),
        Arc::new(rollback::Target(c.clone())),
        Arc::new(rollback::Evidence(c.clone())),
        Arc::new(rollback::Apply(c)),
    ]
}

/// The runbook parameters of a kind that takes none (it acts on the service's config).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}

/// A prepared step: the exact action shown, and what `run` reads back.
pub(crate) fn prepared(action: String, params: impl Serialize) -> Result<super::Prepared, String> {
    Ok(super::Prepared { action, params: serde_json::to_value(params).map_err(|e| e.to_string())? })
}

/// Resolved-target lines of a rollback: `from …` (what runs now) and `to …` (what it goes back
/// to). `to` lines carry the version after `version `, the revision after `revision `.
pub(crate) fn resolved_to(resolved: &[String]) -> Option<&str> {
    resolved.iter().find_map(|r| r.strip_prefix("to "))
}

/// `revision 4 · version v1.2.5 · …` → (Some(4), Some("v1.2.5")).
pub(crate) fn parse_to(line: &str) -> (Option<u32>, Option<String>) {
    let mut rev = None;
    let mut ver = None;
    for part in line.split(" · ") {
        if let Some(r) = part.strip_prefix("revision ") {
            rev = r.trim().parse().ok();
        }
        if let Some(v) = part.strip_prefix("version ") {
            ver = Some(v.trim().to_string());
        }
    }
    (rev, ver)
}
