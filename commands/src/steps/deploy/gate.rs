//! `deploy-preflight` and `ci-gate`: the checks that refuse a deploy before anyone is asked.

use super::{DeployConnections, DeployTarget};
use crate::ports::RunQuery;
use crate::steps::{Prepared, StepContext, StepKind, StepOutcome};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreflightParams {
    target: DeployTarget,
    version: String,
    /// (verb, resource) pairs runbot must be allowed in the namespace.
    permissions: Vec<(String, String)>,
}

/// What the runbooks do in the service's namespace: verify and evidence read pods, logs and
/// the Deployment; a Helm release (`helm_release`) also patches the Deployment and keeps its
/// release Secrets.
pub(super) fn permissions(helm_release: bool) -> Vec<(String, String)> {
    let mut v = vec![("list", "pods"), ("watch", "pods"), ("get", "pods/log"), ("get", "deployments.apps")];
    if helm_release {
        v.extend([("patch", "deployments.apps"), ("list", "secrets"), ("create", "secrets"), ("update", "secrets")]);
    }
    v.into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

pub struct Preflight(pub(super) Arc<DeployConnections>);

#[async_trait]
impl StepKind for Preflight {
    fn kind(&self) -> &'static str {
        "deploy-preflight"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::NoParams = crate::steps::definition(params)?;
        let Some(t) = DeployTarget::of(&self.0.services, vars)? else {
            return Ok(Prepared { action: "check the deploy's prerequisites".into(), params: serde_json::Value::Null });
        };
        let version = vars.get("version").cloned().unwrap_or_default();
        let (check, perms) = t.driver()?.preflight(&t);
        let mut checks = vec![check];
        if let (Some(ns), false) = (&t.namespace, perms.is_empty()) {
            let list: Vec<String> = perms.iter().map(|(v, r)| format!("{v} {r}")).collect();
            checks.push(format!("runbot may {} in {ns}", list.join(", ")));
        }
        if let Some(img) = &t.image {
            checks.push(format!("image {img}:{version} exists in its registry"));
        }
        if !t.secrets.is_empty() {
            checks.push(format!("Secrets {} exist in {}", t.secrets.join(", "), t.namespace.as_deref().unwrap_or("?")));
        }
        let action = format!("check: {}", checks.join("; "));
        let p = PreflightParams { target: t, version, permissions: perms };
        super::prepared(action, p)
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: PreflightParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let t = &p.target;
        let mut missing = Vec::new();
        let mut ok = Vec::new();
        match t.driver().and_then(|d| d.preflight_run(&self.0)) {
            Ok(found) => ok.extend(found),
            Err(why) => missing.push(why),
        }
        if let Some(ns) = t.namespace.as_deref().filter(|_| !p.permissions.is_empty()) {
            match t.cluster.as_deref().map(|c| self.0.clusters.get(c)) {
                Some(Ok(cluster)) => {
                    let mut denied = Vec::new();
                    for (verb, res) in &p.permissions {
                        match cluster.can_i(ns, verb, res).await {
                            Ok(true) => {}
                            Ok(false) => denied.push(format!("{verb} {res}")),
                            Err(e) => {
                                missing.push(format!("the cluster did not answer whether runbot may {verb} {res}: {e}"));
                                break;
                            }
                        }
                    }
                    if denied.is_empty() {
                        ok.push(format!("{} permissions in {ns}", p.permissions.len()));
                    } else {
                        missing.push(format!("runbot may not {} in {ns} (its Role lacks them)", denied.join(", ")));
                    }
                    for s in &t.secrets {
                        match cluster.secret_exists(ns, s).await {
                            Ok(true) => ok.push(format!("Secret {s}")),
                            Ok(false) => missing.push(format!("Secret {s} does not exist in {ns}")),
                            Err(e) => missing.push(format!("could not look for Secret {s} in {ns}: {e}")),
                        }
                    }
                }
                Some(Err(why)) => missing.push(why.to_string()),
                None => missing.push(format!("{} has no cluster configured", t.where_())),
            }
        }
        if let Some(img) = &t.image {
            match &self.0.registry {
                None => missing.push("no registry client is connected".into()),
                Some(r) => match r.tag_exists(img, &p.version).await {
                    Ok(true) => ok.push(format!("image {img}:{}", p.version)),
                    Ok(false) => missing.push(format!("image {img}:{} does not exist in the registry (was it built and pushed?)", p.version)),
                    Err(e) => missing.push(format!("could not ask the registry about {img}:{}: {e}", p.version)),
                },
            }
        }
        for line in ok.iter().map(|o| format!("✓ {o}")).chain(missing.iter().map(|m| format!("✗ {m}"))) {
            let _ = ctx.output.send(line);
        }
        if missing.is_empty() {
            StepOutcome::Succeeded(format!("prerequisites present: {}", ok.join(", ")))
        } else {
            StepOutcome::Failed(format!("Missing prerequisite: {}", missing.join("; ")))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CiParams {
    target: DeployTarget,
    version: String,
}

pub struct CiGate(pub(super) Arc<DeployConnections>);

#[async_trait]
impl StepKind for CiGate {
    fn kind(&self) -> &'static str {
        "ci-gate"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::NoParams = crate::steps::definition(params)?;
        let Some(t) = DeployTarget::of(&self.0.services, vars)? else {
            return Ok(Prepared { action: "check the latest CI run".into(), params: serde_json::Value::Null });
        };
        let Some(ci) = &t.ci else {
            return Err(format!("{} has no CI gate: set services.{}.ci (repo, workflow)", t.service, t.service));
        };
        let version = vars.get("version").cloned().unwrap_or_default();
        let action = format!(
            "the latest run of {} on {} in {} must have succeeded{}",
            ci.workflow,
            ci.branch,
            ci.repo,
            if version.is_empty() { String::new() } else { format!(", and ran on the commit of tag {version} if it is one") }
        );
        super::prepared(action, CiParams { target: t, version })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: CiParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let Some(ci) = &p.target.ci else { return StepOutcome::Failed("no CI gate configured".into()) };
        let Some(gh) = &self.0.ci else {
            return StepOutcome::Failed("GitHub is not connected: add a [github] section".into());
        };
        let q = RunQuery { branch: Some(ci.branch.clone()), event: None, per_page: 1 };
        let run = match gh.runs(&ci.repo, &ci.workflow, &q).await {
            Ok(runs) => match runs.into_iter().next() {
                Some(r) => r,
                None => {
                    return StepOutcome::Failed(format!(
                        "{} has never run on {} in {}: nothing proves the build is green",
                        ci.workflow, ci.branch, ci.repo
                    ));
                }
            },
            Err(e) => return StepOutcome::Failed(format!("could not read CI runs: {e}")),
        };
        let short = |s: &str| s.chars().take(7).collect::<String>();
        let _ = ctx.output.send(format!(
            "latest {} run on {}: #{} {} on {} — {}",
            run.name,
            ci.branch,
            run.run_number,
            run.state(),
            short(&run.head_sha),
            run.html_url
        ));
        if !run.succeeded() {
            return StepOutcome::Failed(format!(
                "CI is not green: the latest run of {} on {} (#{}) is {} — {}",
                run.name,
                ci.branch,
                run.run_number,
                run.state(),
                run.html_url
            ));
        }
        if !p.version.is_empty() {
            match gh.tag_commit(&ci.repo, &p.version).await {
                Ok(Some(sha)) if sha != run.head_sha => {
                    return StepOutcome::Failed(format!(
                        "tag {} points at {}, but the latest green run on {} ran on {}: that build did not test this version — {}",
                        p.version,
                        short(&sha),
                        ci.branch,
                        short(&run.head_sha),
                        run.html_url
                    ));
                }
                Ok(Some(_)) => {
                    return StepOutcome::Succeeded(format!(
                        "CI green on {} (#{}), on the commit of tag {} — {}",
                        ci.branch, run.run_number, p.version, run.html_url
                    ));
                }
                Ok(None) => {
                    let _ = ctx.output.send(format!("{} is not a git tag in {}: only the branch's run was checked", p.version, ci.repo));
                }
                Err(e) => return StepOutcome::Failed(format!("could not read tag {}: {e}", p.version)),
            }
        }
        StepOutcome::Succeeded(format!("CI green on {} (#{}) — {}", ci.branch, run.run_number, run.html_url))
    }
}
