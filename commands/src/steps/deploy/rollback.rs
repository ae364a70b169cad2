//! `rollback-target`, `rollback-evidence` and `rollback-apply`.

use super::rollout::{Call, perform, secs, swarm_update};
use super::verify::swarm_inspect;
use super::{DeployConnections, DeployTarget, parse_to, resolved_to};
use crate::model::Execution;
use crate::ports::HelmRevision;
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

/// Where a rollback's history lives: Helm's release storage (drivers `helm`, and `pipeline`
/// when its `helm` section names the release the pipeline upgrades) or the Swarm service.
fn history_kind(t: &DeployTarget) -> Result<&'static str, String> {
    match t.driver.as_str() {
        "swarm" if t.swarm.is_some() => Ok("swarm"),
        "helm" | "pipeline" if t.helm.is_some() => Ok("helm"),
        "pipeline" => Err(format!(
            "{} deploys through a pipeline; to roll back, runbot needs the Helm release it upgrades: add services.{}.environments.{}.helm",
            t.where_(),
            t.service,
            t.env
        )),
        _ => Err(t.driver_missing()),
    }
}

pub struct Target(pub(super) Arc<DeployConnections>);

fn version_of(r: &HelmRevision, tag_key: &str) -> String {
    r.value(tag_key).unwrap_or_else(|| r.app_version.clone())
}

fn when(r: &HelmRevision) -> String {
    r.updated.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "time unknown".into())
}

/// The resolved line of one revision: `revision 4 · version v1.2.5 · superseded · <time>`.
fn line(r: &HelmRevision, tag_key: &str) -> String {
    format!("revision {} · version {} · {} · app {} · {}", r.revision, version_of(r, tag_key), r.status, r.app_version, when(r))
}

/// Picks the rollback target in a Helm history (oldest first): `to` as a revision number, a
/// version, or empty for the newest earlier revision that was deployed successfully
/// (`deployed` or `superseded`) with another version than the current one.
pub(crate) fn pick<'a>(history: &'a [HelmRevision], tag_key: &str, to: &str) -> Result<(&'a HelmRevision, &'a HelmRevision), String> {
    let current = history.last().ok_or("the release has no history")?;
    let mut earlier = history.iter().rev().filter(|r| r.revision < current.revision);
    let target = if to.is_empty() {
        let cur = version_of(current, tag_key);
        earlier
            .find(|r| matches!(r.status.as_str(), "superseded" | "deployed") && version_of(r, tag_key) != cur)
            .ok_or_else(|| format!("no earlier revision was deployed successfully with another version than {cur}"))?
    } else if let Ok(n) = to.parse::<u32>() {
        if n == current.revision {
            return Err(format!("revision {n} is the current one"));
        }
        history.iter().find(|r| r.revision == n).ok_or_else(|| {
            let kept: Vec<String> = history.iter().map(|r| r.revision.to_string()).collect();
            format!("the release has no revision {n} (kept: {})", kept.join(", "))
        })?
    } else {
        let mut e = earlier.peekable();
        if e.peek().is_none() {
            return Err("the release has no earlier revision".into());
        }
        e.find(|r| version_of(r, tag_key) == to).ok_or_else(|| format!("no earlier revision of the release ran {to}"))?
    };
    Ok((current, target))
}

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
        let action = match history_kind(&t)? {
            "helm" => {
                let h = t.helm.as_ref().ok_or_else(|| t.driver_missing())?;
                let (cluster, ns, _, _) = t.k8s()?;
                format!("read the history of Helm release {} in {ns} on cluster {cluster} and pick {pick}", h.release)
            }
            _ => {
                let s = t.swarm.as_ref().ok_or_else(|| t.driver_missing())?;
                if !to.is_empty() && to.parse::<u32>().is_ok() {
                    return Err(format!("Swarm services have no revisions; give a version with --to (e.g. --to v1.2.4), not {to}"));
                }
                format!("read the current and previous image of Swarm service {} and pick {pick}", s.service)
            }
        };
        super::prepared(action, TargetParams { target: t, to })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: TargetParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let t = &p.target;
        match history_kind(t) {
            Ok("helm") => {}
            Ok(_) => return swarm_target(&self.0, t, &p.to, &ctx).await,
            Err(why) => return StepOutcome::Failed(why),
        }
        let Some(h) = &t.helm else { return StepOutcome::Failed(t.driver_missing()) };
        let (cluster, ns, _, _) = match t.connect(&self.0.clusters) {
            Ok(k) => k,
            Err(why) => return StepOutcome::Failed(why),
        };
        let history = match cluster.helm_history(&ns, &h.release).await {
            Ok(h) => h,
            Err(e) => return StepOutcome::Failed(format!("could not read the history of {}: {e}", h.release)),
        };
        if history.is_empty() {
            return StepOutcome::Failed(format!("there is no Helm release {} in {ns}", h.release));
        }
        let _ = ctx.output.send("REVISION  STATUS       VERSION    APP VERSION  UPDATED                DESCRIPTION".into());
        for r in &history {
            let _ = ctx.output.send(format!(
                "{:<9} {:<12} {:<10} {:<12} {:<22} {}",
                r.revision,
                r.status,
                version_of(r, &h.tag_key),
                r.app_version,
                when(r),
                r.description
            ));
        }
        match pick(&history, &h.tag_key, &p.to) {
            Ok((current, target)) => StepOutcome::Resolved {
                summary: format!(
                    "{}: revision {} ({}, {}) → revision {} ({}, {})",
                    h.release,
                    current.revision,
                    version_of(current, &h.tag_key),
                    current.status,
                    target.revision,
                    version_of(target, &h.tag_key),
                    when(target)
                ),
                targets: vec![format!("from {}", line(current, &h.tag_key)), format!("to {}", line(target, &h.tag_key))],
            },
            Err(why) => StepOutcome::Failed(format!("cannot roll back {}: {why}", h.release)),
        }
    }

    /// [Rollback] of a failed deploy still applies only while the release's current revision
    /// runs the version that deploy rolled out; once it moved on (rolled back already, or
    /// deployed again), a rollback would undo something else.
    async fn follow_up_applies(&self, params: &serde_json::Value, failed: &Execution) -> Option<Result<(), String>> {
        let failed_version = failed.vars.get("version").filter(|_| failed.runbook == "deploy")?;
        let p: TargetParams = serde_json::from_value(params.clone()).ok()?;
        let t = &p.target;
        if history_kind(t).ok()? != "helm" {
            return None;
        }
        let h = t.helm.as_ref()?;
        let (cluster, ns, _, _) = match t.connect(&self.0.clusters) {
            Ok(k) => k,
            Err(why) => return Some(Err(why)),
        };
        let history = match cluster.helm_history(&ns, &h.release).await {
            Ok(h) => h,
            Err(e) => return Some(Err(format!("could not read the history of {}: {e}", h.release))),
        };
        let current = history.last()?;
        let running = version_of(current, &h.tag_key);
        Some(if &running == failed_version {
            Ok(())
        } else {
            Err(format!(
                "release {} is no longer on {failed_version} ({} deployed it): its current revision {} runs {running} ({})",
                h.release, failed.id, current.revision, current.status
            ))
        })
    }
}

async fn swarm_target(c: &DeployConnections, t: &DeployTarget, to: &str, ctx: &StepContext) -> StepOutcome {
    let Some(s) = &t.swarm else { return StepOutcome::Failed(t.driver_missing()) };
    let inspect = match swarm_inspect(c, s, ctx).await {
        Ok(v) => v,
        Err(why) => return StepOutcome::Failed(why),
    };
    let image = |p: &str| inspect.pointer(p).and_then(|v| v.as_str()).map(|i| i.split('@').next().unwrap_or(i).to_string());
    let Some(current) = image("/Spec/TaskTemplate/ContainerSpec/Image") else {
        return StepOutcome::Failed(format!("`docker service inspect {}` shows no image", s.service));
    };
    let previous = image("/PreviousSpec/TaskTemplate/ContainerSpec/Image");
    let tag = |i: &str| i.rsplit_once(':').map(|(_, t)| t.to_string()).unwrap_or_default();
    let _ = ctx.output.send(format!("current image: {current}; previous: {}", previous.as_deref().unwrap_or("none")));
    let version = if to.is_empty() {
        match previous {
            Some(p) if p != current => tag(&p),
            _ => return StepOutcome::Failed(format!("Swarm service {} has no previous image to go back to; name a version with --to", s.service)),
        }
    } else {
        to.to_string()
    };
    if version == tag(&current) {
        return StepOutcome::Failed(format!("Swarm service {} already runs {version}", s.service));
    }
    StepOutcome::Resolved {
        summary: format!("{}: {current} → {}:{version}", s.service, s.image),
        targets: vec![format!("from image {current} · version {}", tag(&current)), format!("to image {}:{version} · version {version}", s.image)],
    }
}

/// `helm rollback RELEASE REVISION --wait` or `docker service update --image IMAGE:VERSION`.
fn rollback_call(t: &DeployTarget, revision: &str, version: &str) -> Result<Call, String> {
    match history_kind(t)? {
        "helm" => {
            let h = t.helm.as_ref().ok_or_else(|| t.driver_missing())?;
            if revision.is_empty() {
                return Err("the resolved rollback target names no revision".into());
            }
            let ns = t.namespace.clone().unwrap_or_default();
            let timeout = secs(&h.timeout)?;
            let mut args: Vec<String> =
                ["rollback", &h.release, revision, "--namespace", &ns, "--wait", "--timeout", &format!("{timeout}s")].map(String::from).to_vec();
            args.extend(h.args.iter().cloned());
            Ok(Call::Cli { tool: "helm".into(), args, env: Vec::new(), timeout_secs: timeout + 30 })
        }
        _ => {
            let s = t.swarm.as_ref().ok_or_else(|| t.driver_missing())?;
            if version.is_empty() {
                return Err("the resolved rollback target names no version".into());
            }
            Ok(swarm_update(s, version, secs(&s.timeout)?))
        }
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
        let action = rollback_call(&t, "<the target revision>", "<the target version>")?.describe();
        super::prepared(action, ApplyParams { target: t })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: ApplyParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let t = &p.target;
        let Some(to) = resolved_to(&ctx.execution.resolved) else {
            return StepOutcome::Failed("no rollback target was resolved before the approval".into());
        };
        let (revision, version) = parse_to(to);
        let call = match rollback_call(t, &revision.map(|r| r.to_string()).unwrap_or_default(), &version.unwrap_or_default()) {
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
        let action = match t.driver.as_str() {
            "swarm" => {
                let s = t.swarm.as_ref().ok_or_else(|| t.driver_missing())?;
                format!("keep `docker service ps --no-trunc {}` (the tasks and their errors) as an artifact", s.service)
            }
            _ => {
                let (cluster, ns, _, sel) = t.k8s()?;
                format!(
                    "keep the last {lines} log lines (current and previous container) of the pods {sel} in {ns} on cluster {cluster} not running the target version, as an artifact"
                )
            }
        };
        super::prepared(action, EvidenceParams { target: t, lines })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: EvidenceParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        let t = &p.target;
        let from = ctx.execution.resolved.iter().find_map(|r| r.strip_prefix("from ")).map(parse_to).and_then(|(_, v)| v).unwrap_or_default();
        let target = resolved_to(&ctx.execution.resolved).and_then(|l| parse_to(l).1).unwrap_or_default();
        let name = format!("logs-{}-{}.txt", t.service, if from.is_empty() { "failed" } else { from.as_str() });
        if t.driver == "swarm" {
            let Some(s) = &t.swarm else { return StepOutcome::Failed(t.driver_missing()) };
            return match super::verify::docker_capture(&self.0, s, &["service", "ps", "--no-trunc", &s.service], &ctx).await {
                Ok(out) => keep(&ctx, name, out, "task list"),
                Err(why) => StepOutcome::Failed(why),
            };
        }
        let (cluster, ns, _, sel) = match t.connect(&self.0.clusters) {
            Ok(k) => k,
            Err(why) => return StepOutcome::Failed(why),
        };
        let pods = match cluster.pods(&ns, &sel).await {
            Ok(p) => p,
            Err(e) => return StepOutcome::Failed(format!("could not list pods {sel}: {e}")),
        };
        let tag = |image: &str| image.split('@').next().and_then(|i| i.rsplit_once(':')).map(|(_, t)| t.to_string()).unwrap_or_default();
        let failing: Vec<_> = pods
            .iter()
            .filter(|p| p.containers.iter().any(|c| if from.is_empty() { tag(&c.image) != target } else { tag(&c.image) == from }))
            .collect();
        if failing.is_empty() {
            return StepOutcome::Succeeded(format!(
                "no pod runs {} any more: no logs to keep",
                if from.is_empty() { "the failing version" } else { &from }
            ));
        }
        let mut text = String::new();
        let mut count = 0;
        for pod in &failing {
            for c in &pod.containers {
                for previous in [false, true] {
                    let which = if previous { "previous" } else { "current" };
                    text.push_str(&format!("===== pod {} container {} ({}) · {which} container =====\n", pod.name, c.name, c.image));
                    match cluster.logs(&ns, &pod.name, &c.name, previous, p.lines).await {
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
        keep(&ctx, name, text, &format!("{count} logs of {} pod(s)", failing.len()))
    }
}

fn keep(ctx: &StepContext, name: String, content: String, what: &str) -> StepOutcome {
    let size = content.len();
    if ctx.artifacts.send((name.clone(), content)).is_err() {
        return StepOutcome::Failed("the artifact could not be handed to the store".into());
    }
    StepOutcome::Succeeded(format!("kept {what} as artifact {name} ({size} bytes)"))
}
