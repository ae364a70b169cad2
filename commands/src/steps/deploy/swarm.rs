//! Driver `swarm`: Docker Swarm through the `docker` CLI (`-H` the manager when set) —
//! `docker stack deploy` with a compose file, else `docker service update --image`; verified
//! by the service's tasks; rolled back to the service's previous (or a named) image.

use super::rollback::Logs;
use super::rollout::{Call, secs};
use super::verify::{POLL, runs_version};
use super::{DeployConnections, DeployDriver, DeployTarget, Tool};
use crate::config::SwarmConfig;
use crate::model::{Deployed, RollbackTarget};
use crate::steps::pace::Pace;
use crate::steps::process::{self, Proc};
use crate::steps::{StepContext, StepOutcome};
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) struct Swarm;

impl Swarm {
    fn section(t: &DeployTarget) -> Result<&SwarmConfig, String> {
        t.swarm.as_ref().ok_or_else(|| t.driver_missing())
    }
}

#[async_trait]
impl DeployDriver for Swarm {
    fn deploy_call(&self, t: &DeployTarget, version: &str, _vars: &BTreeMap<String, String>) -> Result<Call, String> {
        let s = Swarm::section(t)?;
        let timeout = secs(&s.timeout)?;
        Ok(match &s.compose {
            Some(compose) => Call::Cli {
                tool: Tool::Docker,
                args: docker_args(s, &["stack", "deploy", "-c", compose, &s.stack]),
                env: vec![(s.version_env.clone(), version.to_string())],
                timeout_secs: timeout,
            },
            None => swarm_update(s, version, timeout),
        })
    }

    fn preflight(&self, _t: &DeployTarget) -> (String, Vec<(String, String)>) {
        ("docker is installed".into(), Vec::new())
    }

    fn preflight_run(&self, c: &DeployConnections) -> Result<Option<String>, String> {
        c.tools.get(Tool::Docker).map(|path| Some(format!("docker at {path}")))
    }

    fn verify_timeout(&self, t: &DeployTarget) -> Option<String> {
        t.swarm.as_ref().map(|s| s.timeout.clone())
    }

    fn verify_action(&self, t: &DeployTarget, shown: &str, timeout_secs: u64) -> Result<String, String> {
        let s = Swarm::section(t)?;
        Ok(format!("wait until every task of Swarm service {} runs {}:{shown} (timeout {timeout_secs}s)", s.service, s.image))
    }

    async fn verify(&self, c: &DeployConnections, t: &DeployTarget, version: &str, limit: Duration, ctx: &StepContext) -> Result<String, String> {
        converged(c, Swarm::section(t)?, version, limit, ctx).await
    }

    fn rollback_plan(&self, t: &DeployTarget, pick: &str, to: &str) -> Result<String, String> {
        let s = Swarm::section(t)?;
        if !to.is_empty() && to.parse::<u32>().is_ok() {
            return Err(format!("Swarm services have no revisions; give a version with --to (e.g. --to v1.2.4), not {to}"));
        }
        Ok(format!("read the current and previous image of Swarm service {} and pick {pick}", s.service))
    }

    async fn rollback_target(&self, c: &DeployConnections, t: &DeployTarget, to: &str, ctx: &StepContext) -> StepOutcome {
        let s = match Swarm::section(t) {
            Ok(s) => s,
            Err(why) => return StepOutcome::Failed(why),
        };
        let spec = match inspect(c, s, ctx).await {
            Ok(v) => v,
            Err(why) => return StepOutcome::Failed(why),
        };
        let image = |p: &str| spec.pointer(p).and_then(|v| v.as_str()).map(|i| i.split('@').next().unwrap_or(i).to_string());
        let Some(current) = image("/Spec/TaskTemplate/ContainerSpec/Image") else {
            return StepOutcome::Failed(format!("`docker service inspect {}` shows no image", s.service));
        };
        let previous = image("/PreviousSpec/TaskTemplate/ContainerSpec/Image");
        let tag = |i: &str| i.rsplit_once(':').map(|(_, t)| t.to_string()).unwrap_or_default();
        let _ = ctx.output.send(format!("current image: {current}; previous: {}", previous.as_deref().unwrap_or("none")));
        let version = if to.is_empty() {
            match previous {
                Some(p) if p != current => tag(&p),
                _ => {
                    return StepOutcome::Failed(format!("Swarm service {} has no previous image to go back to; name a version with --to", s.service));
                }
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
            rollback: Some(RollbackTarget {
                from: Deployed { revision: None, version: tag(&current) },
                to: Deployed { revision: None, version: version.clone() },
            }),
        }
    }

    fn rollback_call(&self, t: &DeployTarget, to: Option<&Deployed>) -> Result<Call, String> {
        let s = Swarm::section(t)?;
        let version = match to {
            None => "<the target version>",
            Some(d) if d.version.is_empty() => return Err("the resolved rollback target names no version".into()),
            Some(d) => d.version.as_str(),
        };
        Ok(swarm_update(s, version, secs(&s.timeout)?))
    }

    fn evidence_action(&self, t: &DeployTarget, _lines: u32) -> Result<String, String> {
        let s = Swarm::section(t)?;
        Ok(format!("keep `docker service ps --no-trunc {}` (the tasks and their errors) as an artifact", s.service))
    }

    async fn evidence(
        &self,
        c: &DeployConnections,
        t: &DeployTarget,
        _lines: u32,
        _rollback: Option<&RollbackTarget>,
        ctx: &StepContext,
    ) -> Result<Logs, String> {
        let s = Swarm::section(t)?;
        let content = docker_capture(c, s, &["service", "ps", "--no-trunc", &s.service], ctx).await?;
        Ok(Logs::Kept { content, what: "task list".into() })
    }
}

/// `docker [-H HOST] ARGS…`: the Swarm manager's daemon when the driver names one.
fn docker_args(s: &SwarmConfig, rest: &[&str]) -> Vec<String> {
    let host = s.host.iter().flat_map(|h| ["-H".to_string(), h.clone()]);
    host.chain(rest.iter().map(|a| a.to_string())).collect()
}

/// `docker service update --detach --image IMAGE:VERSION SERVICE`: a Swarm deploy without a
/// compose file, and every Swarm rollback.
fn swarm_update(s: &SwarmConfig, version: &str, timeout_secs: u64) -> Call {
    let image = format!("{}:{version}", s.image);
    Call::Cli {
        tool: Tool::Docker,
        args: docker_args(s, &["service", "update", "--detach", "--image", &image, &s.service]),
        env: Vec::new(),
        timeout_secs,
    }
}

/// One line of `docker service ps --format '{{json .}}'`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SwarmTask {
    name: String,
    image: String,
    desired_state: String,
    current_state: String,
    #[serde(default)]
    error: String,
}

/// Runs `docker` with captured stdout (not streamed: it is parsed, and summarized instead).
async fn docker_capture(c: &DeployConnections, s: &SwarmConfig, args: &[&str], ctx: &StepContext) -> Result<String, String> {
    let program = c.tools.get(Tool::Docker)?;
    let argv: Vec<String> = std::iter::once(program).chain(docker_args(s, args)).collect();
    let proc = Proc { argv: &argv, env: Vec::new(), cwd: None, timeout: Duration::from_secs(60), stream_stdout: false, capture_stdout: true };
    let done = process::run(proc, ctx).await;
    match done.outcome(Some("docker")) {
        StepOutcome::Succeeded(_) => Ok(done.stdout),
        other => Err(format!("`docker {}` failed: {}", args.join(" "), other.summary())),
    }
}

/// The replicas and image of a Swarm service (`docker service inspect`).
async fn inspect(c: &DeployConnections, s: &SwarmConfig, ctx: &StepContext) -> Result<serde_json::Value, String> {
    let out = docker_capture(c, s, &["service", "inspect", &s.service, "--format", "{{json .}}"], ctx).await?;
    serde_json::from_str(out.lines().next().unwrap_or("")).map_err(|e| format!("unreadable `docker service inspect` output: {e}"))
}

/// Waits until every running task of the service runs `image:version`, or says which do not.
async fn converged(c: &DeployConnections, s: &SwarmConfig, version: &str, limit: Duration, ctx: &StepContext) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut pace = Pace::every(POLL);
    loop {
        let spec = inspect(c, s, ctx).await?;
        let want = spec.pointer("/Spec/Mode/Replicated/Replicas").and_then(|v| v.as_u64()).unwrap_or(1) as usize;
        let out = docker_capture(c, s, &["service", "ps", &s.service, "--no-trunc", "--format", "{{json .}}"], ctx).await?;
        let tasks: Vec<SwarmTask> = out.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok()).collect();
        let running: Vec<&SwarmTask> = tasks.iter().filter(|t| t.desired_state == "Running").collect();
        let good = running.iter().filter(|t| t.current_state.starts_with("Running") && runs_version(&t.image, Some(&s.image), version)).count();
        if good >= want && running.len() == good {
            return Ok(format!("Swarm service {} converged: {good}/{want} tasks running {}:{version}", s.service, s.image));
        }
        if tokio::time::Instant::now() >= deadline {
            let mut bad: Vec<String> = tasks
                .iter()
                .filter(|t| !(t.current_state.starts_with("Running") && runs_version(&t.image, Some(&s.image), version)))
                .take(8)
                .map(|t| {
                    let err = if t.error.is_empty() { String::new() } else { format!(" — {}", t.error) };
                    format!("{} ({}): {}{err}", t.name, t.image.split('@').next().unwrap_or(""), t.current_state)
                })
                .collect();
            bad.dedup();
            return Err(format!(
                "Swarm service {} did not converge on {}:{version} within {}s ({good}/{want} running it): {}",
                s.service,
                s.image,
                limit.as_secs(),
                bad.join(" | ")
            ));
        }
        pace.wait().await;
    }
}
