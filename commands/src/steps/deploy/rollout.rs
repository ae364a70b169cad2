//! `deploy-rollout`: the new version rolled out by the service's driver.

use super::{DeployConnections, DeployTarget, Tool};
use crate::config::parse_duration;
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
    Cli { tool: Tool, args: Vec<String>, env: Vec<(String, String)>, timeout_secs: u64 },
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

/// The subcommand of a CLI call for messages (`upgrade`, `service update`): the leading
/// words after the global `-H HOST`, up to the first flag, at most two.
fn subcommand(args: &[String]) -> String {
    let rest = match args.first().map(String::as_str) {
        Some("-H") => args.get(2..).unwrap_or_default(),
        _ => args,
    };
    rest.iter().take_while(|a| !a.starts_with('-')).take(2).map(String::as_str).collect::<Vec<_>>().join(" ")
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
        let call = t.driver()?.deploy_call(&t, &version, vars)?;
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
            let program = match c.tools.get(*tool) {
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
            match done.outcome(Some(tool.as_str())) {
                StepOutcome::Succeeded(_) => StepOutcome::Succeeded(format!("{tool} {} succeeded in {:.1}s", subcommand(args), done.secs)),
                other => other,
            }
        }
        Call::Pipeline { repo, workflow, git_ref, inputs, timeout_secs, poll_ms } => {
            let Some(gh) = &c.ci else { return StepOutcome::Failed("GitHub is not connected: add a [github] section".into()) };
            let follow = super::pipeline::follow(gh.as_ref(), repo, workflow, git_ref, inputs, Duration::from_millis(*poll_ms), ctx);
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
