//! The `command` step kind: a local process with a templated argv (no shell), extra env,
//! a timeout, output streamed line by line, and the exit code deciding the outcome.

use super::process::{self, Proc};
use super::{Prepared, StepContext, StepKind, StepOutcome};
use crate::runbook::{expand_secrets, placeholders, render, render_keeping_secrets};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Parameters as written in the runbooks file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Def {
    /// Program and arguments; each element is a template (`{service}`), never a shell line.
    argv: Vec<String>,
    /// Extra environment; values may use `{secret.NAME}`, filled in only where written here.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// e.g. `30s`, `10m`. Default `10m`.
    #[serde(default)]
    timeout: Option<String>,
    /// Working directory (template). Default: runbot's own.
    #[serde(default)]
    cwd: Option<String>,
}

/// Parameters as prepared and stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Params {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    timeout_secs: u64,
    cwd: Option<String>,
}

pub struct CommandStep;

const DEFAULT_TIMEOUT: u64 = 600;

#[async_trait]
impl StepKind for CommandStep {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn default_idempotent(&self) -> bool {
        false
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let def: Def = super::definition(params)?;
        if def.argv.is_empty() || def.argv[0].is_empty() {
            return Err("argv must name a program".into());
        }
        for a in &def.argv {
            if placeholders(a).iter().any(|p| p.starts_with("secret.")) {
                return Err("secrets go in `env`, not in `argv` (argv shows in the plan and in process listings)".into());
            }
        }
        let argv = def.argv.iter().map(|a| render(a, vars)).collect::<Result<Vec<_>, _>>()?;
        let mut env = BTreeMap::new();
        for (k, v) in &def.env {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("env name '{k}' is not a valid variable name"));
            }
            // Only the secrets the author wrote stay placeholders, filled in when the step runs;
            // every variable's value is escaped, so a parameter cannot name a secret.
            env.insert(k.clone(), render_keeping_secrets(v, vars)?);
        }
        let timeout_secs = super::timeout_secs(&def.timeout, DEFAULT_TIMEOUT)?;
        let cwd = def.cwd.as_deref().map(|c| render(c, vars)).transpose()?;
        let mut action = format!("run {:?}", argv);
        if !env.is_empty() {
            let names: Vec<&str> = env.keys().map(|k| k.as_str()).collect();
            action.push_str(&format!(" with env {}", names.join(", ")));
        }
        if let Some(c) = &cwd {
            action.push_str(&format!(" in {c}"));
        }
        action.push_str(&format!(", timeout {timeout_secs}s"));
        let params = Params { argv, env, timeout_secs, cwd };
        Ok(Prepared { action, params: serde_json::to_value(params).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        match run_prepared(params, &ctx, false).await {
            // The plan already shows the argv: the message need not name the program.
            Ok(done) => done.outcome(None),
            Err(failed) => failed,
        }
    }
}

/// Runs a prepared `command` (its stored parameters) for another kind: secrets filled into
/// its env, stderr streamed, and stdout either streamed or kept for the caller to parse.
pub(crate) async fn run_prepared(params: &serde_json::Value, ctx: &StepContext, capture_stdout: bool) -> Result<process::Finished, StepOutcome> {
    let p: Params = super::stored(params)?;
    let mut env = Vec::with_capacity(p.env.len());
    for (k, v) in &p.env {
        match expand_secrets(v, &ctx.secrets) {
            Ok(value) => env.push((k.clone(), value)),
            Err(why) => return Err(StepOutcome::Failed(format!("env {k}: {why}"))),
        }
    }
    let proc = Proc {
        argv: &p.argv,
        env,
        cwd: p.cwd.as_deref(),
        timeout: Duration::from_secs(p.timeout_secs),
        stream_stdout: !capture_stdout,
        capture_stdout,
    };
    Ok(process::run(proc, ctx).await)
}
