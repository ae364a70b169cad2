//! `deploy-rollout`: the new version rolled out by the service's driver.

use super::{DeployConnections, DeployTarget};
use crate::config::{SwarmConfig, parse_duration};
use crate::ports::{RunQuery, WorkflowRun};
use crate::runbook::render;
use crate::steps::process::{self, Proc};
use crate::steps::{Prepared, StepContext, StepKind, StepOutcome, unless_cancelled};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The exact call, stored at plan time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "snake_case")]
pub(crate) enum Call {
    /// A CLI: `helm` or `docker`, its arguments (after the program), extra env.
    Cli { tool: String, args: Vec<String>, env: Vec<(String, String)>, timeout_secs: u64 },
    /// A workflow dispatch followed to its end.
    Pipeline { repo: String, workflow: String, git_ref: String, inputs: BTreeMap<String, String>, timeout_secs: u64, poll_ms: u64 },
}

impl Call {
    pub(crate) fn describe(&self) -> String {
        match self {
            Call::Cli { tool, args, env, timeout_secs } => {
                let envs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let pre = if envs.is_empty() { String::new() } else { format!("{} ", envs.join(" ")) };
                format!("run {pre}{tool} {} (timeout {timeout_secs}s)", args.join(" "))
            }
            Call::Pipeline { repo, workflow, git_ref, inputs, timeout_secs, .. } => {
                let i: Vec<String> = inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("dispatch {workflow} in {repo} on {git_ref} with {}, and follow the run to its end (timeout {timeout_secs}s)", i.join(", "))
            }
        }
    }
}

pub(crate) fn secs(d: &str) -> Result<u64, String> {
    Ok(parse_duration(d)?.as_secs().max(1))
}

/// `helm upgrade --install`, the dispatch, or the Swarm update for `version`.
fn deploy_call(t: &DeployTarget, version: &str, vars: &BTreeMap<String, String>) -> Result<Call, String> {
    match t.driver.as_str() {
        "helm" => {
            let h = t.helm.as_ref().ok_or_else(|| t.driver_missing())?;
            let ns = t.namespace.clone().ok_or_else(|| format!("{} has no namespace", t.where_()))?;
            let timeout = secs(&h.timeout)?;
            let mut args: Vec<String> = ["upgrade", "--install", &h.release, &h.chart, "--namespace", &ns].iter().map(|s| s.to_string()).collect();
            args.extend(["--set".to_string(), format!("{}={version}", h.tag_key), "--wait".into(), "--timeout".into(), format!("{timeout}s")]);
            args.extend(h.args.iter().cloned());
            Ok(Call::Cli { tool: "helm".into(), args, env: Vec::new(), timeout_secs: timeout + 30 })
        }
        "swarm" => {
            let s = t.swarm.as_ref().ok_or_else(|| t.driver_missing())?;
            let timeout = secs(&s.timeout)?;
            Ok(match &s.compose {
                Some(compose) => Call::Cli {
                    tool: "docker".into(),
                    args: docker_args(s, &["stack", "deploy", "-c", compose, &s.stack]),
                    env: vec![(s.version_env.clone(), version.to_string())],
                    timeout_secs: timeout,
                },
                None => swarm_update(s, version, timeout),
            })
        }
        "pipeline" => {
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
        _ => Err(t.driver_missing()),
    }
}

/// The subcommand of a CLI call for messages (`upgrade`, `service update`): the leading
/// words after the global `-H HOST`, up to the first flag, at most two.
fn subcommand(args: &[String]) -> String {
    let rest = match args.first().map(String::as_str) {
        Some("-H") => args.get(2..).unwrap_or_default(),
        _ => args,
    };
    rest.iter().take_while(|a| !a.starts_with('-')).take(2).map(String::as_str).collect::<Vec<_>>().join(" ")
}

/// `docker [-H HOST] ARGS…`: the Swarm manager's daemon when the driver names one.
pub(crate) fn docker_args(s: &SwarmConfig, rest: &[&str]) -> Vec<String> {
    let host = s.host.iter().flat_map(|h| ["-H".to_string(), h.clone()]);
    host.chain(rest.iter().map(|a| a.to_string())).collect()
}

/// `docker service update --detach --image IMAGE:VERSION SERVICE`: a Swarm deploy without a
/// compose file, and every Swarm rollback.
pub(crate) fn swarm_update(s: &SwarmConfig, version: &str, timeout_secs: u64) -> Call {
    let image = format!("{}:{version}", s.image);
    Call::Cli {
        tool: "docker".into(),
        args: docker_args(s, &["service", "update", "--detach", "--image", &image, &s.service]),
        env: Vec::new(),
        timeout_secs,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RolloutParams {
    target: DeployTarget,
    call: Call,
}

pub struct Rollout(pub(super) Arc<DeployConnections>);

#[async_trait]
impl StepKind for Rollout {
    fn kind(&self) -> &'static str {
        "deploy-rollout"
    }

    fn default_idempotent(&self) -> bool {
        false
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::NoParams = crate::steps::definition(params)?;
        let Some(t) = DeployTarget::of(&self.0.services, vars)? else {
            return Ok(Prepared { action: "roll out the version with the service's driver".into(), params: serde_json::Value::Null });
        };
        let version = vars.get("version").cloned().unwrap_or_default();
        let call = deploy_call(&t, &version, vars)?;
        super::prepared(call.describe(), RolloutParams { target: t, call })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: RolloutParams = match crate::steps::stored(params) {
            Ok(p) => p,
            Err(f) => return f,
        };
        perform(&self.0, &p.call, &ctx).await
    }
}

/// Runs a stored call: the CLI with its output streamed, or the pipeline followed.
pub(crate) async fn perform(c: &DeployConnections, call: &Call, ctx: &StepContext) -> StepOutcome {
    match call {
        Call::Cli { tool, args, env, timeout_secs } => {
            let program = match c.tools.get(tool) {
                Ok(p) => p,
                Err(why) => return StepOutcome::Failed(why),
            };
            let argv: Vec<String> = std::iter::once(program).chain(args.iter().cloned()).collect();
            let proc = Proc {
                argv: &argv,
                env: env.clone(),
                cwd: None,
                timeout: Duration::from_secs(*timeout_secs),
                stream_stdout: true,
                capture_stdout: false,
            };
            let done = process::run(proc, ctx).await;
            match done.outcome(Some(tool)) {
                StepOutcome::Succeeded(_) => StepOutcome::Succeeded(format!("{tool} {} succeeded in {:.1}s", subcommand(args), done.secs)),
                other => other,
            }
        }
        Call::Pipeline { repo, workflow, git_ref, inputs, timeout_secs, poll_ms } => {
            let Some(gh) = &c.ci else { return StepOutcome::Failed("GitHub is not connected: add a [github] section".into()) };
            let follow = follow_pipeline(gh.as_ref(), repo, workflow, git_ref, inputs, Duration::from_millis(*poll_ms), ctx);
            match unless_cancelled(&ctx.cancel, tokio::time::timeout(Duration::from_secs(*timeout_secs), follow)).await {
                None => StepOutcome::Cancelled("cancelled while following the deploy run (the run itself goes on in GitHub)".into()),
                Some(Err(_)) => StepOutcome::Failed(format!("the deploy run did not finish within {timeout_secs}s")),
                Some(Ok(Err(why))) => StepOutcome::Failed(why),
                Some(Ok(Ok(run))) if run.succeeded() => {
                    StepOutcome::Succeeded(format!("deploy run #{} succeeded — {}", run.run_number, run.html_url))
                }
                Some(Ok(Ok(run))) => StepOutcome::Failed(format!("deploy run #{} ended {} — {}", run.run_number, run.state(), run.html_url)),
            }
        }
    }
}

/// Dispatches the workflow, finds the run it started (a `workflow_dispatch` run on the ref
/// that was not there before), and follows it until it completes.
async fn follow_pipeline(
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
    let run = loop {
        tokio::time::sleep(poll).await;
        let runs = gh.runs(repo, workflow, &q).await.map_err(|e| format!("could not list the deploy runs: {e}"))?;
        if let Some(r) = runs.into_iter().find(|r| !before.contains(&r.id)) {
            break r;
        }
    };
    let _ = ctx.output.send(format!("run #{} started: {}", run.run_number, run.html_url));
    let mut last = run.state();
    let mut run = run;
    while run.status != "completed" {
        tokio::time::sleep(poll).await;
        run = gh.run(repo, run.id).await.map_err(|e| format!("could not read run #{}: {e}", run.run_number))?;
        if run.state() != last {
            last = run.state();
            let _ = ctx.output.send(format!("run #{}: {last}", run.run_number));
        }
    }
    Ok(run)
}
