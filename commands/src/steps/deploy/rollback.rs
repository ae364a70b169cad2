//! `rollback-target`, `rollback-evidence` and `rollback-apply`. What each reads and runs is the
//! driver's ([`super::DeployDriver`]); the target resolved before the approval is the
//! execution's structured [`RollbackTarget`], which `rollback-apply` and `rollback-evidence` act on.

use super::rollout::perform;
use super::{DeployConnections, DeployTarget};
use crate::model::{Execution, RollbackTarget};
use crate::steps::{Prepared, StepContext, StepKind, StepOutcome};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TargetParams {
    target: DeployTarget,
    /// `--to`: a version, a revision number, or empty (the previous good one).
    to: String,
}

pub struct Target(pub(super) Arc<DeployConnections>);

#[async_trait]
impl StepKind for Target {
    fn kind(&self) -> &'static str {
        "rollback-target"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::NoParams = crate::steps::definition(params)?;
        let Some(t) = DeployTarget::of(&self.0.services, vars)? else {
            return Ok(Prepared { action: "identify the version to roll back to".into(), params: serde_json::Value::Null });
        };
        let to = vars.get("to").cloned().unwrap_or_default();
        let pick = if to.is_empty() { "the previous good one".to_string() } else { to.clone() };
        let action = t.driver()?.rollback_plan(&t, &pick, &to)?;
        super::prepared(action, TargetParams { target: t, to })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: TargetParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        match p.target.driver() {
            Ok(driver) => driver.rollback_target(&self.0, &p.target, &p.to, &ctx).await,
            Err(why) => StepOutcome::Failed(why),
        }
    }

    /// [Rollback] of a failed deploy still applies only while the release's current revision
    /// runs the version that deploy rolled out; once it moved on (rolled back already, or
    /// deployed again), a rollback would undo something else.
    async fn follow_up_applies(&self, params: &serde_json::Value, failed: &Execution) -> Option<Result<(), String>> {
        let failed_version = failed.vars.get("version").filter(|_| failed.runbook == "deploy")?;
        let p: TargetParams = serde_json::from_value(params.clone()).ok()?;
        p.target.driver().ok()?.still_on(&self.0, &p.target, failed_version, &failed.id.to_string()).await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApplyParams {
    target: DeployTarget,
}

pub struct Apply(pub(super) Arc<DeployConnections>);

#[async_trait]
impl StepKind for Apply {
    fn kind(&self) -> &'static str {
        "rollback-apply"
    }

    fn default_idempotent(&self) -> bool {
        false
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::NoParams = crate::steps::definition(params)?;
        let Some(t) = DeployTarget::of(&self.0.services, vars)? else {
            return Ok(Prepared { action: "roll back".into(), params: serde_json::Value::Null });
        };
        // The exact call, with the target the approvers will see under "Acts on".
        let action = t.driver()?.rollback_call(&t, None)?.describe();
        super::prepared(action, ApplyParams { target: t })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: ApplyParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let t = &p.target;
        let Some(rb) = &ctx.execution.rollback else {
            return StepOutcome::Failed("no rollback target was resolved before the approval".into());
        };
        let call = match t.driver().and_then(|d| d.rollback_call(t, Some(&rb.to))) {
            Ok(c) => c,
            Err(why) => return StepOutcome::Failed(why),
        };
        let _ = ctx.output.send(call.describe());
        perform(&self.0, &call, &ctx).await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EvidenceParams {
    target: DeployTarget,
    lines: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceDef {
    /// Log lines per container (current and previous). Default 500.
    lines: Option<u32>,
}

/// Keeps the logs of the failing version's pods as an artifact of the execution.
pub struct Evidence(pub(super) Arc<DeployConnections>);

#[async_trait]
impl StepKind for Evidence {
    fn kind(&self) -> &'static str {
        "rollback-evidence"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let def: EvidenceDef = crate::steps::definition(params)?;
        let lines = def.lines.unwrap_or(500).clamp(1, 10_000);
        let Some(t) = DeployTarget::of(&self.0.services, vars)? else {
            return Ok(Prepared { action: "keep the failing version's logs".into(), params: serde_json::Value::Null });
        };
        let action = t.driver()?.evidence_action(&t, lines)?;
        super::prepared(action, EvidenceParams { target: t, lines })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: EvidenceParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let t = &p.target;
        let rollback = ctx.execution.rollback.as_ref();
        let from = rollback.map(|r| r.from.version.as_str()).filter(|v| !v.is_empty()).unwrap_or("failed");
        let name = format!("logs-{}-{from}.txt", t.service);
        let found = match t.driver() {
            Ok(driver) => driver.evidence(&self.0, t, p.lines, rollback, &ctx).await,
            Err(why) => Err(why),
        };
        match found {
            Ok(Logs::Kept { content, what }) => keep(&ctx, name, content, &what),
            Ok(Logs::Nothing(why)) => StepOutcome::Succeeded(why),
            Err(why) => StepOutcome::Failed(why),
        }
    }
}

/// What `rollback-evidence` found to keep.
pub(crate) enum Logs {
    /// The text, and what it is (e.g. "4 logs of 2 pod(s)").
    Kept { content: String, what: String },
    /// Nothing to keep, and why.
    Nothing(String),
}

/// `rollback-evidence`'s action on a Kubernetes Deployment's pods.
pub(super) fn k8s_evidence_action(t: &DeployTarget, lines: u32) -> Result<String, String> {
    let (cluster, ns, _, sel) = t.k8s()?;
    Ok(format!(
        "keep the last {lines} log lines (current and previous container) of the pods {sel} in {ns} on cluster {cluster} not running the target version, as an artifact"
    ))
}

/// The logs (current and previous container) of the pods not running the rollback's target
/// (or running its `from` version), for the Kubernetes drivers.
pub(super) async fn k8s_evidence(c: &DeployConnections, t: &DeployTarget, lines: u32, rollback: Option<&RollbackTarget>) -> Result<Logs, String> {
    let from = rollback.map(|r| r.from.version.clone()).unwrap_or_default();
    let target = rollback.map(|r| r.to.version.clone()).unwrap_or_default();
    let (cluster, ns, _, sel) = t.connect(&c.clusters)?;
    let pods = cluster.pods(&ns, &sel).await.map_err(|e| format!("could not list pods {sel}: {e}"))?;
    let tag = |image: &str| image.split('@').next().and_then(|i| i.rsplit_once(':')).map(|(_, t)| t.to_string()).unwrap_or_default();
    let failing: Vec<_> =
        pods.iter().filter(|p| p.containers.iter().any(|c| if from.is_empty() { tag(&c.image) != target } else { tag(&c.image) == from })).collect();
    if failing.is_empty() {
        let which = if from.is_empty() { "the failing version" } else { &from };
        return Ok(Logs::Nothing(format!("no pod runs {which} any more: no logs to keep")));
    }
    let mut text = String::new();
    let mut count = 0;
    for pod in &failing {
        for c in &pod.containers {
            for previous in [false, true] {
                let which = if previous { "previous" } else { "current" };
                text.push_str(&format!("===== pod {} container {} ({}) · {which} container =====\n", pod.name, c.name, c.image));
                match cluster.logs(&ns, &pod.name, &c.name, previous, lines).await {
                    Ok(log) => {
                        count += 1;
                        text.push_str(&log);
                        if !log.ends_with('\n') {
                            text.push('\n');
                        }
                    }
                    Err(e) => text.push_str(&format!("(no {which} log: {e})\n")),
                }
            }
        }
    }
    Ok(Logs::Kept { content: text, what: format!("{count} logs of {} pod(s)", failing.len()) })
}

fn keep(ctx: &StepContext, name: String, content: String, what: &str) -> StepOutcome {
    let size = content.len();
    if ctx.artifacts.send((name.clone(), content)).is_err() {
        return StepOutcome::Failed("the artifact could not be handed to the store".into());
    }
    StepOutcome::Succeeded(format!("kept {what} as artifact {name} ({size} bytes)"))
}
