//! The `helm` stand-in (helm v3.21.4 behaviour on the sandbox cluster): `version`,
//! `upgrade [--install]`, `rollback`, `history`, `status`. Releases live in Helm's real
//! storage (see `release.rs`), so the real `helm` and runbot's Kubernetes driver read them.
//! What a chart deploys follows the sandbox convention of `chart.rs`: upgrading or rolling
//! back sets one Deployment container's image (strategic-merge patch; the fake cluster's
//! controller rolls it out), creating the Deployment if needed.
//!
//! Global flags as helm's: `-n/--namespace` (`HELM_NAMESPACE`, default `default`),
//! `--kube-apiserver` (`HELM_KUBEAPISERVER`), `--kube-token` (`HELM_KUBETOKEN`),
//! `--kubeconfig` (`KUBECONFIG`), `--kube-context` (`HELM_KUBECONTEXT`), `--debug`.
//! `--history-max` defaults to `HELM_MAX_HISTORY`, else 10.
//!
//! `--wait` waits until the Deployment's rollout is complete (observedGeneration ≥
//! generation; updated, available and total replicas all equal the desired count) and its
//! pods are exactly `replicas` Ready pods on the new image, none terminating; past
//! `--timeout` (default 5m0s) the revision fails with `context deadline exceeded`.

use super::helm_deploy::{rollback, upgrade};
use super::kubeapi::{Kube, Target};
use super::release::{Release, Storage, ansic};
use super::{Flag, Parsed, flag, parse_flags, parse_go_duration};
use serde_json::{Value, json};
use std::time::Duration;

const VERSION: &str = "v3.21.4";

/// Runs `helm` with `args` (without argv[0]); returns the exit code. It builds its own
/// current-thread tokio runtime: call it from a plain `main`, not from inside a runtime.
pub fn helm_main(args: Vec<String>) -> i32 {
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(Failure { stdout, message }) => {
            print!("{stdout}");
            eprintln!("Error: {message}");
            1
        }
    }
}

/// An error with what was already printed to stdout before it.
pub(super) struct Failure {
    pub stdout: String,
    pub message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { stdout: String::new(), message }
    }
}

const GLOBAL: [Flag; 7] = [
    flag("namespace", Some('n'), true),
    flag("kube-apiserver", None, true),
    flag("kube-token", None, true),
    flag("kubeconfig", None, true),
    flag("kube-context", None, true),
    flag("debug", None, false),
    flag("help", Some('h'), false),
];

pub(super) fn flags(extra: &[Flag]) -> Vec<Flag> {
    GLOBAL.iter().chain(extra).copied().collect()
}

fn run(args: &[String]) -> Result<String, Failure> {
    // The command is the first argument that is neither a flag nor a global flag's value.
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        let takes_value =
            GLOBAL.iter().any(|f| f.takes_value && (args[i] == format!("--{}", f.long) || f.short.is_some_and(|c| args[i] == format!("-{c}"))));
        i += if takes_value { 2 } else { 1 };
    }
    let Some(cmd) = args.get(i).cloned() else {
        return Err("the sandbox helm stand-in needs a command: version, upgrade, rollback, history, status".to_string().into());
    };
    let rest: Vec<String> = args[..i].iter().chain(&args[i + 1..]).cloned().collect();
    match cmd.as_str() {
        "version" => version(&rest).map_err(Failure::from),
        "upgrade" => upgrade(&rest),
        "rollback" => rollback(&rest).map_err(Failure::from),
        "history" | "hist" => history(&rest).map_err(Failure::from),
        "status" => status(&rest).map_err(Failure::from),
        other => Err(format!("unknown command \"{other}\" for \"helm\"\nRun 'helm --help' for usage.").into()),
    }
}

fn version(args: &[String]) -> Result<String, String> {
    let p = parse_flags(args, &flags(&[flag("short", None, false), flag("template", None, true)]))?;
    if p.on("short") {
        return Ok(format!("{VERSION}+gsandbox\n"));
    }
    Ok(format!("version.BuildInfo{{Version:\"{VERSION}\", GitCommit:\"sandbox\", GitTreeState:\"clean\", GoVersion:\"go1.24.9\"}}\n"))
}

/// The connection, namespace and history limit every release command needs.
pub(super) struct Ctx {
    pub kube: Kube,
    pub namespace: String,
    pub max_history: usize,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(super) fn ctx(p: &Parsed) -> Result<Ctx, String> {
    let target = Target {
        api_server: p.value("kube-apiserver").map(String::from).or_else(|| env("HELM_KUBEAPISERVER")),
        token: p.value("kube-token").map(String::from).or_else(|| env("HELM_KUBETOKEN")),
        kubeconfig: p.value("kubeconfig").map(String::from),
        context: p.value("kube-context").map(String::from).or_else(|| env("HELM_KUBECONTEXT")),
    };
    let max_history = match p.value("history-max").map(String::from).or_else(|| env("HELM_MAX_HISTORY")) {
        None => 10,
        Some(v) => v
            .parse()
            .map_err(|_| format!("invalid argument \"{v}\" for \"--history-max\" flag: strconv.ParseInt: parsing \"{v}\": invalid syntax"))?,
    };
    Ok(Ctx {
        kube: Kube::connect(&target)?,
        namespace: p.value("namespace").map(String::from).or_else(|| env("HELM_NAMESPACE")).unwrap_or_else(|| "default".into()),
        max_history,
    })
}

impl Ctx {
    pub fn storage(&self) -> Storage<'_> {
        Storage { kube: &self.kube, namespace: self.namespace.clone(), max_history: self.max_history }
    }
}

pub(super) fn timeout(p: &Parsed) -> Result<Duration, String> {
    match p.value("timeout") {
        None => Ok(Duration::from_secs(300)),
        Some(t) => parse_go_duration(t).map_err(|e| format!("invalid argument \"{t}\" for \"--timeout\" flag: {e}")),
    }
}

pub(super) fn validate_release_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 53
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid release name, must match regex ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ and the length must not be longer than 53: {name}"
        ))
    }
}

/// `NAME: ... TEST SUITE: None`, as `helm status` and a successful upgrade print it.
pub(super) fn status_block(r: &Release) -> String {
    let mut s = format!(
        "NAME: {}\nLAST DEPLOYED: {}\nNAMESPACE: {}\nSTATUS: {}\nREVISION: {}\nTEST SUITE: None\n",
        r.name,
        ansic(&r.info.last_deployed),
        r.namespace,
        r.info.status,
        r.version
    );
    if !r.info.notes.is_empty() {
        s.push_str(&format!("NOTES:\n{}\n", r.info.notes.trim_end()));
    }
    s
}

fn history(args: &[String]) -> Result<String, String> {
    let p = parse_flags(args, &flags(&[flag("output", Some('o'), true), flag("max", None, true)]))?;
    let [name] = p.args.as_slice() else {
        return Err("\"helm history\" requires 1 argument\n\nUsage:  helm history RELEASE_NAME [flags]".into());
    };
    let max: usize = match p.value("max") {
        None => 256,
        Some(m) => m.parse().map_err(|_| format!("invalid argument \"{m}\" for \"--max\" flag"))?,
    };
    let output = p.value("output").unwrap_or("table").to_string();
    if !matches!(output.as_str(), "table" | "json" | "yaml") {
        return Err(format!("invalid argument \"{output}\" for \"-o, --output\" flag: invalid format type"));
    }
    let c = ctx(&p)?;
    let rt = super::runtime().map_err(|e| e.to_string())?;
    let revs = rt.block_on(async {
        c.kube.reachable().await?;
        c.storage().history(name).await
    })?;
    if revs.is_empty() {
        return Err("release: not found".into());
    }
    let revs = &revs[revs.len().saturating_sub(max)..];
    let rows: Vec<Value> = revs
        .iter()
        .map(|r| {
            json!({"revision": r.version, "updated": r.info.last_deployed, "status": r.info.status,
                   "chart": r.chart_label(), "app_version": r.app_version(), "description": r.info.description})
        })
        .collect();
    Ok(match output.as_str() {
        "json" => format!("{}\n", Value::Array(rows)),
        "yaml" => rows
            .iter()
            .map(|r| {
                format!(
                    "- app_version: {}\n  chart: {}\n  description: {}\n  revision: {}\n  status: {}\n  updated: \"{}\"\n",
                    r["app_version"].as_str().unwrap_or(""),
                    r["chart"].as_str().unwrap_or(""),
                    r["description"].as_str().unwrap_or(""),
                    r["revision"],
                    r["status"].as_str().unwrap_or(""),
                    r["updated"].as_str().unwrap_or("")
                )
            })
            .collect(),
        _ => {
            let mut table = vec![["REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION", "DESCRIPTION"].map(String::from).to_vec()];
            for r in revs {
                table.push(vec![
                    r.version.to_string(),
                    ansic(&r.info.last_deployed),
                    r.info.status.clone(),
                    r.chart_label(),
                    r.app_version().to_string(),
                    r.info.description.clone(),
                ]);
            }
            uitable(&table)
        }
    })
}

/// gosuri/uitable as helm configures it: cells padded to the column width, `\t` between.
fn uitable(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count().min(60))).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c: String = c.chars().take(60).collect();
                format!("{c:<w$}", w = widths[i])
            })
            .collect();
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    out
}

fn status(args: &[String]) -> Result<String, String> {
    let p = parse_flags(args, &flags(&[flag("revision", None, true), flag("output", Some('o'), true)]))?;
    let [name] = p.args.as_slice() else {
        return Err("\"helm status\" requires 1 argument\n\nUsage:  helm status RELEASE_NAME [flags]".into());
    };
    let c = ctx(&p)?;
    let rt = super::runtime().map_err(|e| e.to_string())?;
    let revs = rt.block_on(async {
        c.kube.reachable().await?;
        c.storage().history(name).await
    })?;
    let rel = match p.value("revision") {
        Some(v) => revs.iter().find(|r| r.version.to_string() == v),
        None => revs.last(),
    }
    .ok_or_else(|| "release: not found".to_string())?;
    if p.value("output") == Some("json") {
        return Ok(format!("{}\n", serde_json::to_value(rel).unwrap_or(Value::Null)));
    }
    Ok(status_block(rel))
}
