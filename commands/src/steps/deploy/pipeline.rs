//! Driver `pipeline`: a GitHub Actions workflow dispatched and followed to its end. When the
//! workflow upgrades a Helm release (the environment's `helm` section names it), verification
//! and rollback are Helm's; without it the deploy is verified as a Kubernetes rollout when the
//! environment names its Deployment, and a rollback is refused.

use super::helm::Helm;
use super::rollout::{Call, secs};
use super::{DeployConnections, DeployDriver, DeployTarget};
use crate::config::parse_duration;
use crate::model::Deployed;
use crate::ports::{RunQuery, WorkflowRun};
use crate::runbook::render;
use crate::steps::pace::Pace;
use crate::steps::{StepContext, StepOutcome};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) struct Pipeline;

impl Pipeline {
    /// A rollback goes through the Helm release the pipeline upgrades.
    fn release(t: &DeployTarget) -> Result<&'static Helm, String> {
        if t.helm.is_some() {
            return Ok(&Helm);
        }
        Err(format!(
            "{} deploys through a pipeline; to roll back, runbot needs the Helm release it upgrades: add services.{}.environments.{}.helm",
            t.where_(),
            t.service,
            t.env
        ))
    }
}

#[async_trait]
impl DeployDriver for Pipeline {
    fn deploy_call(&self, t: &DeployTarget, _version: &str, vars: &BTreeMap<String, String>) -> Result<Call, String> {
        let pl = t.pipeline.as_ref().ok_or_else(|| t.driver_missing())?;
        let repo = t.pipeline_repo().ok_or_else(|| format!("{}: the pipeline has no repository", t.where_()))?;
        let inputs = pl.inputs.iter().map(|(k, v)| Ok((k.clone(), render(v, vars)?))).collect::<Result<_, String>>()?;
        Ok(Call::Pipeline {
            repo,
            workflow: pl.workflow.clone(),
            git_ref: pl.branch.clone(),
            inputs,
            timeout_secs: secs(&pl.timeout)?,
            poll_ms: parse_duration(&pl.poll)?.as_millis().max(50) as u64,
        })
    }

    fn preflight(&self, t: &DeployTarget) -> (String, Vec<(String, String)>) {
        ("GitHub is connected".into(), if t.namespace.is_some() { super::gate::permissions(false) } else { Vec::new() })
    }

    fn preflight_run(&self, c: &DeployConnections) -> Result<Option<String>, String> {
        if c.ci.is_none() {
            return Err("GitHub is not connected: add a [github] section".into());
        }
        Ok(None)
    }

    /// A pipeline that upgrades a Helm release waits as long as that release would.
    fn verify_timeout(&self, t: &DeployTarget) -> Option<String> {
        Helm.verify_timeout(t)
    }

    fn rollback_plan(&self, t: &DeployTarget, pick: &str, to: &str) -> Result<String, String> {
        Pipeline::release(t)?.rollback_plan(t, pick, to)
    }

    async fn rollback_target(&self, c: &DeployConnections, t: &DeployTarget, to: &str, ctx: &StepContext) -> StepOutcome {
        match Pipeline::release(t) {
            Ok(helm) => helm.rollback_target(c, t, to, ctx).await,
            Err(why) => StepOutcome::Failed(why),
        }
    }

    async fn still_on(&self, c: &DeployConnections, t: &DeployTarget, version: &str, deployed_by: &str) -> Option<Result<(), String>> {
        Pipeline::release(t).ok()?.still_on(c, t, version, deployed_by).await
    }

    fn rollback_call(&self, t: &DeployTarget, to: Option<&Deployed>) -> Result<Call, String> {
        Pipeline::release(t)?.rollback_call(t, to)
    }
}

/// Dispatches the workflow, finds the run it started (a `workflow_dispatch` run on the ref
/// that was not there before), and follows it until it completes.
pub(super) async fn follow(
    gh: &dyn crate::ports::Ci,
    repo: &str,
    workflow: &str,
    git_ref: &str,
    inputs: &BTreeMap<String, String>,
    poll: Duration,
    ctx: &StepContext,
) -> Result<WorkflowRun, String> {
    let q = RunQuery { branch: Some(git_ref.to_string()), event: Some("workflow_dispatch".into()), per_page: 30 };
    let before: Vec<u64> =
        gh.runs(repo, workflow, &q).await.map_err(|e| format!("could not list the deploy runs: {e}"))?.into_iter().map(|r| r.id).collect();
    gh.dispatch(repo, workflow, git_ref, inputs).await.map_err(|e| format!("could not dispatch {workflow}: {e}"))?;
    let _ = ctx.output.send(format!("dispatched {workflow} on {git_ref}"));
    let mut pace = Pace::every(poll);
    let run = loop {
        pace.wait().await;
        let runs = gh.runs(repo, workflow, &q).await.map_err(|e| format!("could not list the deploy runs: {e}"))?;
        if let Some(r) = runs.into_iter().find(|r| !before.contains(&r.id)) {
            break r;
        }
    };
    let _ = ctx.output.send(format!("run #{} started: {}", run.run_number, run.html_url));
    let mut last = run.state();
    let mut run = run;
    while run.status != "completed" {
        pace.wait().await;
        run = gh.run(repo, run.id).await.map_err(|e| format!("could not read run #{}: {e}", run.run_number))?;
        if run.state() != last {
            last = run.state();
            let _ = ctx.output.send(format!("run #{}: {last}", run.run_number));
        }
    }
    Ok(run)
}
