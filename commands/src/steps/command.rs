//! The `command` step kind: a local process with a templated argv (no shell), extra env,
//! a timeout, output streamed line by line, and the exit code deciding the outcome.

use super::{Prepared, StepContext, StepKind, StepOutcome};
use crate::runbook::{placeholders, render};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Parameters as written in the runbooks file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Def {
    /// Program and arguments; each element is a template (`{service}`), never a shell line.
    argv: Vec<String>,
    /// Extra environment; values may use `{secret.NAME}`.
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
            // Secret placeholders survive preparation and are filled in only when the step runs.
            let mut with_secrets = vars.clone();
            for p in placeholders(v).into_iter().filter(|p| p.starts_with("secret.")) {
                with_secrets.insert(p.clone(), format!("{{{p}}}"));
            }
            env.insert(k.clone(), render(v, &with_secrets)?);
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

    async fn run(&self, params: &serde_json::Value, mut ctx: StepContext) -> StepOutcome {
        let p: Params = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        let mut cmd = tokio::process::Command::new(&p.argv[0]);
        cmd.args(&p.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        for (k, v) in &p.env {
            let mut value = v.clone();
            for (name, secret) in &ctx.secrets {
                value = value.replace(&format!("{{secret.{name}}}"), secret.expose());
            }
            cmd.env(k, value);
        }
        if let Some(c) = &p.cwd {
            cmd.current_dir(c);
        }
        let started = tokio::time::Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return StepOutcome::Failed(format!("could not start {}: {e}", p.argv[0])),
        };
        let pid = child.id();
        let out = child.stdout.take().map(|s| tokio::spawn(pump(s, ctx.output.clone(), 0)));
        let err = child.stderr.take().map(|s| tokio::spawn(pump(s, ctx.output.clone(), 5)));
        let timeout = tokio::time::sleep(Duration::from_secs(p.timeout_secs));
        tokio::pin!(timeout);
        let mut cancel = ctx.cancel.clone();
        let waited = loop {
            tokio::select! {
                status = child.wait() => break Ok(status),
                _ = &mut timeout => break Err(format!("timed out after {}s; the process was killed", p.timeout_secs)),
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() {
                        break Err("cancelled; the process was killed".to_string());
                    }
                }
            }
        };
        let cancelled = *ctx.cancel.borrow_and_update();
        if waited.is_err() {
            kill_group(pid);
            let _ = child.kill().await;
        }
        if let Some(h) = out {
            let _ = h.await;
        }
        let tail = match err {
            Some(h) => h.await.unwrap_or_default(),
            None => VecDeque::new(),
        };
        let secs = started.elapsed().as_secs_f64();
        match waited {
            Err(why) if cancelled => StepOutcome::Cancelled(why),
            Err(why) => StepOutcome::Failed(why),
            Ok(Err(e)) => StepOutcome::Failed(format!("waiting for the process failed: {e}")),
            Ok(Ok(status)) if status.success() => StepOutcome::Succeeded(format!("exit 0 in {secs:.1}s")),
            Ok(Ok(status)) => {
                let code = status.code().map(|c| format!("exit code {c}")).unwrap_or_else(|| "killed by a signal".into());
                let tail: Vec<String> = tail.into_iter().collect();
                if tail.is_empty() {
                    StepOutcome::Failed(code)
                } else {
                    StepOutcome::Failed(format!("{code}: {}", tail.join(" | ")))
                }
            }
        }
    }
}

/// Forwards each line to the output channel; keeps the last `keep` lines (for error messages).
async fn pump(
    stream: impl AsyncRead + Unpin,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    keep: usize,
) -> VecDeque<String> {
    let mut lines = BufReader::new(stream).lines();
    let mut tail = VecDeque::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if keep > 0 {
            if tail.len() == keep {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        let _ = tx.send(line);
    }
    tail
}

/// Kills the whole process group the child leads (so `sh -c 'sleep 100'` goes too).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
