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
mod helm;
mod pipeline;
pub mod rollback;
pub mod rollout;
mod swarm;
pub mod verify;

use crate::config::{CiConfig, Driver, HelmConfig, PipelineConfig, ServiceConfig, SmokeConfig, SwarmConfig, ToolsConfig};
use crate::model::{Deployed, RollbackTarget};
use crate::steps::{StepContext, StepOutcome};
use async_trait::async_trait;
use rollout::Call;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What differs between the deploy drivers: one implementation per driver module (`helm`,
/// `pipeline`, `swarm`). The step kinds ask the target's driver, never compare its name.
#[async_trait]
pub(crate) trait DeployDriver: Send + Sync {
    /// `deploy-rollout`: the exact call that rolls out `version`.
    fn deploy_call(&self, t: &DeployTarget, version: &str, vars: &BTreeMap<String, String>) -> Result<Call, String>;

    /// `deploy-preflight` at plan time: the check of the driver's own prerequisite (shown), and
    /// the (verb, resource) pairs runbot must be allowed in the namespace.
    fn preflight(&self, t: &DeployTarget) -> (String, Vec<(String, String)>);

    /// `deploy-preflight` at run time: the driver's tool or connection is there (`Ok`: what
    /// was found, worth naming).
    fn preflight_run(&self, c: &DeployConnections) -> Result<Option<String>, String>;

    /// `deploy-verify`'s timeout when the runbook sets none.
    fn verify_timeout(&self, t: &DeployTarget) -> Option<String>;

    /// `deploy-verify`'s action, as the plan shows it. Default: the Kubernetes Deployment's rollout.
    fn verify_action(&self, t: &DeployTarget, shown: &str, timeout_secs: u64) -> Result<String, String> {
        verify::k8s_verify_action(t, shown, timeout_secs)
    }

    /// `deploy-verify`: waits until `version` is what serves, or says what does not. Default:
    /// `kubectl rollout status` semantics and every pod Ready on the version.
    async fn verify(&self, c: &DeployConnections, t: &DeployTarget, version: &str, limit: Duration, _ctx: &StepContext) -> Result<String, String> {
        verify::k8s_rolled_out(c, t, version, limit).await
    }

    /// `rollback-target` at plan time: what it will read and pick (`pick` shown, `to` as typed).
    fn rollback_plan(&self, t: &DeployTarget, pick: &str, to: &str) -> Result<String, String>;

    /// `rollback-target`: current → target from the driver's history, as resolved targets.
    async fn rollback_target(&self, c: &DeployConnections, t: &DeployTarget, to: &str, ctx: &StepContext) -> StepOutcome;

    /// Whether a [Rollback] offered by the failed deploy of `version` still applies (`None`:
    /// the driver cannot tell, and the button is offered).
    async fn still_on(&self, _c: &DeployConnections, _t: &DeployTarget, _version: &str, _deployed_by: &str) -> Option<Result<(), String>> {
        None
    }

    /// `rollback-apply`: the exact call that goes back to `to` (None: the plan's placeholder).
    fn rollback_call(&self, t: &DeployTarget, to: Option<&Deployed>) -> Result<Call, String>;

    /// `rollback-evidence`'s action, as the plan shows it. Default: the Deployment's pods' logs.
    fn evidence_action(&self, t: &DeployTarget, lines: u32) -> Result<String, String> {
        rollback::k8s_evidence_action(t, lines)
    }

    /// `rollback-evidence`: the failing version's logs (or task list). Default: the logs of
    /// the Deployment's pods not on the rollback's target.
    async fn evidence(
        &self,
        c: &DeployConnections,
        t: &DeployTarget,
        lines: u32,
        rollback: Option<&RollbackTarget>,
        _ctx: &StepContext,
    ) -> Result<rollback::Logs, String> {
        rollback::k8s_evidence(c, t, lines, rollback).await
    }
}

/// The implementation of a driver.
fn implementation(d: Driver) -> &'static dyn DeployDriver {
    match d {
        Driver::Helm => &helm::Helm,
        Driver::Pipeline => &pipeline::Pipeline,
        Driver::Swarm => &swarm::Swarm,
    }
}

/// A tool the drivers run. Stored (lower-case) in a prepared call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Tool {
    Helm,
    Docker,
}

impl Tool {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tool::Helm => "helm",
            Tool::Docker => "docker",
        }
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

    pub(crate) fn get(&self, tool: Tool) -> Result<String, String> {
        let name = tool.as_str();
        let p = match tool {
            Tool::Helm => &self.helm,
            Tool::Docker => &self.docker,
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
    /// Stored as `helm`, `pipeline`, `swarm`, or empty when none is configured.
    #[serde(with = "driver_or_empty")]
    pub driver: Option<Driver>,
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
            driver: e.driver,
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

    /// The driver's implementation, or why there is none.
    pub(crate) fn driver(&self) -> Result<&'static dyn DeployDriver, String> {
        self.driver.map(implementation).ok_or_else(|| self.driver_missing())
    }

    /// A message for a driver that is missing or lacks its section.
    pub(crate) fn driver_missing(&self) -> String {
        match self.driver {
            None => format!(
                "{} has no deploy driver: set `driver = \"helm\" | \"pipeline\" | \"swarm\"` with its section under services.{}.environments.{}",
                self.where_(),
                self.service,
                self.env
            ),
            Some(d) => format!("{} uses driver \"{d}\" but services.{}.environments.{}.{d} is not configured", self.where_(), self.service, self.env),
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
        Ok((clusters.get(&cluster).map_err(|e| e.to_string())?.clone(), ns, dep, sel))
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

/// `driver` in stored step parameters: the driver's name, or "" when none is configured (so
/// the stored form is the same as when the driver was a string).
mod driver_or_empty {
    use crate::config::Driver;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Driver>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.map_or("", Driver::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Driver>, D::Error> {
        let name = String::deserialize(d)?;
        if name.is_empty() { Ok(None) } else { Driver::try_from(name).map(Some).map_err(serde::de::Error::custom) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deploy target of service `svc` in `prod` with this environment section (TOML body).
    fn target(env: &str) -> DeployTarget {
        let svc: ServiceConfig = toml::from_str(&format!("[environments.prod]\n{env}")).expect("service config");
        let services = BTreeMap::from([("svc".to_string(), svc)]);
        let vars = BTreeMap::from([
            ("service".to_string(), "svc".to_string()),
            ("env".to_string(), "prod".to_string()),
            ("cluster".to_string(), "main".to_string()),
            ("namespace".to_string(), "shop".to_string()),
            ("deployment".to_string(), "api".to_string()),
            ("selector".to_string(), "app=api".to_string()),
        ]);
        DeployTarget::of(&services, &vars).expect("target").expect("a service")
    }

    const HELM: &str = "driver = \"helm\"\nnamespace = \"shop\"\n[environments.prod.helm]\nrelease = \"api\"\nchart = \"charts/api\"\n";
    const SWARM: &str = "driver = \"swarm\"\n[environments.prod.swarm]\nstack = \"shop\"\nservice = \"shop_api\"\nimage = \"registry.local/api\"\n";

    /// Executions stored before the driver was typed hold it as a string ("" for none); they
    /// read back as the same driver, and are written the same way.
    #[test]
    fn a_stored_driver_keeps_its_string_form() {
        let t = target(HELM);
        assert_eq!(t.driver, Some(Driver::Helm));
        let stored = serde_json::to_value(&t).expect("serialize");
        assert_eq!(stored["driver"], "helm");
        let mut none = stored.clone();
        none["driver"] = "".into();
        assert_eq!(serde_json::from_value::<DeployTarget>(none).expect("no driver").driver, None);
        let mut swarm = stored.clone();
        swarm["driver"] = "swarm".into();
        assert_eq!(serde_json::from_value::<DeployTarget>(swarm).expect("swarm").driver, Some(Driver::Swarm));
        let mut bad = stored;
        bad["driver"] = "kubectl".into();
        let e = serde_json::from_value::<DeployTarget>(bad).expect_err("unknown driver");
        assert!(e.to_string().contains("unknown driver 'kubectl'"), "{e}");
    }

    /// A stored call names its tool as before (`"tool": "helm"`).
    #[test]
    fn a_stored_call_names_its_tool_in_lower_case() {
        let call = target(HELM).driver().expect("driver").deploy_call(&target(HELM), "v1.2.3", &BTreeMap::new()).expect("call");
        let stored = serde_json::to_value(&call).expect("serialize");
        assert_eq!((stored["driver"].as_str(), stored["tool"].as_str()), (Some("cli"), Some("helm")), "{stored}");
        assert!(
            call.describe().starts_with("run helm upgrade --install api charts/api --namespace shop --set image.tag=v1.2.3"),
            "{}",
            call.describe()
        );
    }

    /// `rollback-apply` acts on the structured target: Helm on its revision, Swarm on its
    /// version; one without what its driver needs is refused, not guessed.
    #[test]
    fn a_rollback_call_is_built_from_the_structured_target() {
        let to = Deployed { revision: Some(4), version: "v1.2.4".into() };
        let helm = target(HELM);
        let call = helm.driver().expect("helm").rollback_call(&helm, Some(&to)).expect("call").describe();
        assert!(call.starts_with("run helm rollback api 4 --namespace shop --wait"), "{call}");
        let placeholder = helm.driver().expect("helm").rollback_call(&helm, None).expect("plan").describe();
        assert!(placeholder.contains("rollback api <the target revision>"), "{placeholder}");
        let no_revision = Deployed { revision: None, ..to.clone() };
        assert_eq!(
            helm.driver().expect("helm").rollback_call(&helm, Some(&no_revision)).err().as_deref(),
            Some("the resolved rollback target names no revision")
        );

        let swarm = target(SWARM);
        let call = swarm.driver().expect("swarm").rollback_call(&swarm, Some(&to)).expect("call").describe();
        assert!(call.starts_with("run docker service update --detach --image registry.local/api:v1.2.4 shop_api"), "{call}");
        let no_version = Deployed { revision: None, version: String::new() };
        assert!(swarm.driver().expect("swarm").rollback_call(&swarm, Some(&no_version)).is_err());
    }

    /// A pipeline rolls back through the Helm release it upgrades, or not at all.
    #[test]
    fn a_pipeline_rolls_back_only_through_its_helm_release() {
        let pipeline = "driver = \"pipeline\"\n[environments.prod.pipeline]\nworkflow = \"deploy.yml\"\nrepo = \"acme/api\"\n";
        let t = target(pipeline);
        let e = t.driver().expect("pipeline").rollback_plan(&t, "the previous good one", "").expect_err("no helm section");
        assert!(e.contains("add services.svc.environments.prod.helm"), "{e}");
        let with_helm = target(&format!("{pipeline}[environments.prod.helm]\nrelease = \"api\"\nchart = \"charts/api\"\n"));
        let plan = with_helm.driver().expect("pipeline").rollback_plan(&with_helm, "the previous good one", "").expect("helm history");
        assert!(plan.starts_with("read the history of Helm release api in shop"), "{plan}");
    }

    #[test]
    fn no_driver_is_refused_naming_where_to_set_one() {
        let t = target("namespace = \"shop\"\n");
        let e = t.driver().err().expect("no driver");
        assert!(e.contains("has no deploy driver") && e.contains("services.svc.environments.prod"), "{e}");
    }
}
