//! From a parsed command to a plan: which runbook, which target and environment, the
//! template variables, every step's exact action, the approval policy — and the fingerprint
//! that approvals are bound to.

use crate::config::Settings;
use crate::grammar::{BackupAction, Command, RollbackTo};
use crate::model::{Identity, PolicySnapshot, StepRecord, StepStatus, Target};
use crate::runbook::{ParamDef, ParamKind, RunbookDef, TargetKind};
use crate::steps::{APPROVAL, StepKinds};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Plan {
    pub runbook: String,
    pub target: Target,
    pub mutating: bool,
    pub vars: BTreeMap<String, String>,
    pub steps: Vec<StepRecord>,
    pub policy: Option<PolicySnapshot>,
    /// Groups allowed to request (empty: any group member).
    pub requesters: Vec<String>,
}

/// Default shape of a `--set` value: no leading `-`, so a value can never pose as an option,
/// no leading `/`; and (checked apart, the regex has no look-ahead) no `..` segment.
const DEFAULT_PARAM_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9._/:-]{0,199}$";

/// A parameter's value against its declaration: one line of text (no control characters,
/// whatever the pattern), matching the pattern, and — under the default pattern, for a plain
/// value — no `..` segment: a parameter is a value, not a path that could climb out of a
/// directory. A runbook that takes a path declares `type = "path"`.
fn check_param(name: &str, pd: &ParamDef, value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err(format!("{name} contains a control character; a parameter is one line of text."));
    }
    let pattern = pd.pattern.as_deref().unwrap_or(DEFAULT_PARAM_PATTERN);
    // The whole value must match, whether or not the pattern says ^…$.
    let ok = regex_lite::Regex::new(&format!("^(?:{pattern})$")).map(|re| re.is_match(value)).unwrap_or(false);
    if !ok {
        return Err(format!("{name}='{value}' is not allowed; it must match {pattern}."));
    }
    if pd.pattern.is_none() && pd.kind == ParamKind::Value && value.split('/').any(|seg| seg == "..") {
        return Err(format!("{name}='{value}' is not allowed: a parameter is a value, not a path, and may not contain a '..' segment."));
    }
    Ok(())
}

/// A `type = "path"` parameter: `value` joined to the declared root, both canonicalized
/// (symbolic links followed); the result must be the root or inside it. The variable becomes
/// that absolute path, so the step acts on exactly what the plan shows.
fn resolve_path(name: &str, pd: &ParamDef, value: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let Some(template) = &pd.root else {
        return Err(format!("parameter {name} is a path but its declaration names no root."));
    };
    let root = crate::runbook::render(template, vars)?;
    let root_path = std::path::Path::new(&root);
    if !root_path.is_absolute() {
        return Err(format!("parameter {name}'s root '{root}' is not an absolute path."));
    }
    let canonical_root = std::fs::canonicalize(root_path).map_err(|e| format!("parameter {name}'s root {root} cannot be resolved: {e}."))?;
    let full =
        std::fs::canonicalize(canonical_root.join(value)).map_err(|e| format!("{name}='{value}' does not name anything under {root}: {e}."))?;
    if !full.starts_with(&canonical_root) {
        return Err(format!("{name}='{value}' is outside {root}; a path parameter must stay under it (symbolic links included)."));
    }
    full.into_os_string().into_string().map_err(|_| format!("{name}='{value}' resolves to a path that is not UTF-8."))
}

/// A runbook command's runbook, target, `--env` and command-specific variables.
type RunbookCall = (String, String, Option<String>, BTreeMap<String, String>);

/// The runbook a command runs and its command-specific variables.
fn runbook_of(cmd: &Command) -> Option<RunbookCall> {
    let mut vars = BTreeMap::new();
    let (runbook, target, env) = match cmd {
        Command::Deploy { service, version, env, .. } => {
            vars.insert("version".into(), version.0.clone());
            ("deploy".to_string(), service.clone(), env.clone())
        }
        Command::Rollback { service, to, env, .. } => {
            let to = match to {
                Some(RollbackTo::Version(v)) => v.0.clone(),
                Some(RollbackTo::Revision(r)) => r.to_string(),
                None => String::new(),
            };
            vars.insert("to".into(), to);
            ("rollback".to_string(), service.clone(), env.clone())
        }
        Command::Restore { database, date, source, .. } => {
            vars.insert("date".into(), date.to_string());
            if let Some(s) = source {
                vars.insert("source".into(), s.to_string());
            }
            ("restore".to_string(), database.clone(), None)
        }
        Command::Restart { target, env, .. } => ("restart".to_string(), target.clone(), env.clone()),
        Command::Backup { action, database } => {
            let name = match action {
                BackupAction::Status => "backup-status",
                BackupAction::Now => "backup-now",
                BackupAction::Prune => "backup-prune",
            };
            (name.to_string(), database.clone(), None)
        }
        Command::Run { runbook, target, params, env, .. } => {
            vars.extend(params.clone());
            (runbook.clone(), target.clone(), env.clone())
        }
        _ => return None,
    };
    Some((runbook, target, env, vars))
}

/// Resolves a runbook command into a plan for execution `id`. Errors are messages for the
/// requester, naming what is wrong and what would be right.
pub fn resolve(settings: &Settings, kinds: &StepKinds, cmd: &Command, id: &str, requester: &Identity) -> Result<Plan, String> {
    // An answer quotes what was typed; never a secret in it.
    resolve_unredacted(settings, kinds, cmd, id, requester).map_err(|why| settings.redactor.redact(&why))
}

fn resolve_unredacted(settings: &Settings, kinds: &StepKinds, cmd: &Command, id: &str, requester: &Identity) -> Result<Plan, String> {
    let Some((runbook, target_name, env_flag, mut vars)) = runbook_of(cmd) else {
        return Err(format!("{} is not a runbook command.", cmd.name()));
    };
    let typed: Vec<String> = vars.keys().cloned().collect();
    let Some(def) = settings.runbooks.get(&runbook) else {
        let mut have: Vec<&str> = settings.runbooks.keys().map(|s| s.as_str()).collect();
        if have.is_empty() {
            have.push("none");
        }
        return Err(format!(
            "The {runbook} runbook is not installed here: there is no runbook named '{runbook}' in the runbooks file. Installed: {}.",
            have.join(", ")
        ));
    };
    let user_params: Vec<String> = match cmd {
        Command::Run { params, .. } => params.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let (target, target_vars) = resolve_target(settings, def, &runbook, &target_name, env_flag.as_deref(), &mut vars)?;
    if let Command::Deploy { version, .. } = cmd
        && !settings.version_ok(&target.name, &version.0)
    {
        return Err(format!(
            "'{}' does not match {}'s version pattern ({}).",
            version.0,
            target.name,
            settings.config.services.get(&target.name).and_then(|s| s.version_pattern.clone()).unwrap_or_else(|| r"^v\d+\.\d+\.\d+$".into())
        ));
    }
    for p in &user_params {
        if !def.params.contains_key(p) {
            let known: Vec<&str> = def.params.keys().map(|s| s.as_str()).collect();
            return Err(format!("{runbook} has no parameter '{p}'; it takes: {}.", if known.is_empty() { "none".into() } else { known.join(", ") }));
        }
    }
    // What the requester typed (parameters and the command's own arguments) never holds a
    // secret: it would be stored in the execution's variables and shown in the plan.
    for name in typed {
        if vars.get(&name).is_some_and(|v| settings.redactor.finds_secret_in(v)) {
            return Err(format!(
                "{name} holds (part of) a configured secret; runbot does not take secrets as arguments. A runbook step gets a secret through its env as {{secret.NAME}}."
            ));
        }
    }
    for (name, pd) in &def.params {
        let value = match (vars.get(name), &pd.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => return Err(format!("{runbook} needs --set {name}=<value> ({}).", pd.help)),
        };
        check_param(name, pd, &value)?;
        vars.insert(name.clone(), value);
    }
    for (k, v) in target_vars {
        vars.entry(k).or_insert(v);
    }
    for (name, pd) in &def.params {
        if pd.kind == ParamKind::Path {
            let value = vars.get(name).cloned().unwrap_or_default();
            let resolved = resolve_path(name, pd, &value, &vars)?;
            vars.insert(name.clone(), resolved);
        }
    }
    vars.insert("target".into(), target.name.clone());
    vars.insert("env".into(), target.env.clone());
    vars.insert("runbook".into(), runbook.clone());
    vars.insert("requester".into(), requester.0.clone());
    vars.insert("execution".into(), id.to_string());

    let (policy, requesters) = match settings.policy(&runbook, &target.env) {
        Some((p, r)) => (Some(p), r),
        None => (None, Vec::new()),
    };
    let mut steps = Vec::new();
    for (i, s) in def.steps.iter().enumerate() {
        if s.kind == APPROVAL {
            let Some(p) = &policy else {
                return Err(format!("No approval policy covers {runbook} in {}; add an [[approvals]] entry to the config.", target.env));
            };
            steps.push(record(&s.name, APPROVAL, true, approval_action(p), serde_json::Value::Null));
            continue;
        }
        let Some(kind) = kinds.get(&s.kind) else {
            return Err(format!("Step {} of {runbook} has kind '{}', which this runbot does not have.", i + 1, s.kind));
        };
        let mut with_secrets = vars.clone();
        for name in settings.secrets.keys() {
            with_secrets.insert(format!("secret.{name}"), String::new());
        }
        let prepared =
            kind.prepare(&s.params, &with_secrets).map_err(|e| format!("Step {} ({}) of {runbook} cannot be prepared: {e}", i + 1, s.name))?;
        let idem = s.idempotent.unwrap_or(kind.default_idempotent());
        steps.push(record(&s.name, &s.kind, idem, prepared.action, prepared.params));
    }
    Ok(Plan { runbook, target, mutating: def.mutating, vars, steps, policy, requesters })
}

fn resolve_target(
    settings: &Settings,
    def: &RunbookDef,
    runbook: &str,
    name: &str,
    env_flag: Option<&str>,
    vars: &mut BTreeMap<String, String>,
) -> Result<(Target, BTreeMap<String, String>), String> {
    match def.target {
        TargetKind::Service => {
            let (svc_name, svc, pod) = match settings.service(name) {
                Some((n, s)) => (n.to_string(), s, None),
                None => {
                    // `restart <pod>`: a pod name starts with its service's name or alias.
                    let owner = settings
                        .config
                        .services
                        .iter()
                        .find(|(n, s)| std::iter::once(*n).chain(s.aliases.iter()).any(|a| name.starts_with(&format!("{a}-"))));
                    match owner {
                        Some((n, s)) if runbook == "restart" => (n.clone(), s, Some(name.to_string())),
                        _ => {
                            let known: Vec<&str> = settings.config.services.keys().map(|s| s.as_str()).collect();
                            return Err(format!(
                                "'{name}' is not a configured service{}. Configured: {}.",
                                if runbook == "restart" { " or a pod of one" } else { "" },
                                if known.is_empty() { "none".into() } else { known.join(", ") }
                            ));
                        }
                    }
                }
            };
            let env = match env_flag {
                Some(e) => e.to_string(),
                None => match (&svc.default_env, svc.environments.len()) {
                    (Some(d), _) => d.clone(),
                    (None, 1) => svc.environments.keys().next().cloned().unwrap_or_default(),
                    _ if svc.environments.contains_key("prod") => "prod".into(),
                    _ => {
                        let envs: Vec<&str> = svc.environments.keys().map(|s| s.as_str()).collect();
                        return Err(format!("{svc_name} has several environments ({}); pick one with --env.", envs.join(", ")));
                    }
                },
            };
            let Some(env_cfg) = svc.environments.get(&env) else {
                let envs: Vec<&str> = svc.environments.keys().map(|s| s.as_str()).collect();
                return Err(format!("{svc_name} has no environment '{env}'; it has: {}.", envs.join(", ")));
            };
            vars.insert("service".into(), svc_name.clone());
            let cluster = env_cfg
                .cluster
                .clone()
                .or_else(|| (settings.config.clusters.len() == 1).then(|| settings.config.clusters.keys().next().cloned()).flatten());
            for (k, v) in [
                ("cluster", cluster),
                ("namespace", env_cfg.namespace.clone()),
                ("selector", env_cfg.selector.clone()),
                ("deployment", env_cfg.deployment.clone()),
            ] {
                if let Some(v) = v {
                    vars.insert(k.into(), v);
                }
            }
            if let Some(p) = pod {
                vars.insert("pod".into(), p);
            }
            Ok((Target { kind: "service".into(), name: svc_name, env }, env_cfg.vars.clone()))
        }
        TargetKind::Database => {
            let Some(db) = settings.config.databases.get(name) else {
                let known: Vec<&str> = settings.config.databases.keys().map(|s| s.as_str()).collect();
                return Err(format!(
                    "'{name}' is not a configured database. Configured: {}.",
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ));
            };
            let env = db.env.clone().unwrap_or_else(|| "prod".into());
            if let Some(e) = env_flag
                && e != env
            {
                return Err(format!("{name} lives in {env}, not {e}."));
            }
            vars.insert("database".into(), name.to_string());
            let cluster = db
                .cluster
                .clone()
                .or_else(|| (settings.config.clusters.len() == 1).then(|| settings.config.clusters.keys().next().cloned()).flatten());
            if let Some(c) = cluster {
                vars.insert("cluster".into(), c);
            }
            vars.insert("writers".into(), db.writers.join(","));
            if let Some(cj) = &db.backup_cronjob {
                vars.insert("backup_cronjob".into(), cj.clone());
            }
            if let Some(b) = &db.backup {
                // The archive restores and checks read; `--source` must name the same one.
                vars.insert("configured_source".into(), b.source.clone());
                vars.entry("source".into()).or_insert_with(|| b.source.clone());
                vars.insert("server_name".into(), b.server_name.clone().unwrap_or_else(|| name.to_string()));
                vars.insert("backup_retention".into(), b.retention.clone());
            }
            Ok((Target { kind: "database".into(), name: name.to_string(), env }, db.vars.clone()))
        }
    }
}

fn record(name: &str, kind: &str, idempotent: bool, action: String, params: serde_json::Value) -> StepRecord {
    StepRecord {
        name: name.to_string(),
        kind: kind.to_string(),
        idempotent,
        action,
        params,
        status: StepStatus::Pending,
        attempts: 0,
        started_at: None,
        finished_at: None,
        summary: None,
        process: None,
    }
}

fn approval_action(p: &PolicySnapshot) -> String {
    format!(
        "wait for {} approval{} from {} (self-approval {}), expires after {}",
        p.required,
        if p.required == 1 { "" } else { "s" },
        p.groups.join(" or "),
        if p.self_approval { "allowed" } else { "off" },
        human(p.expiry_secs)
    )
}

/// `1800` → `30m`.
pub fn human(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The fingerprint approvals are bound to: runbook, target, variables, every step's exact
/// action and parameters, and the policy.
pub fn fingerprint(
    runbook: &str,
    target: &Target,
    vars: &BTreeMap<String, String>,
    steps: &[StepRecord],
    policy: &Option<PolicySnapshot>,
    resolved: &[String],
) -> String {
    let doc = serde_json::json!({
        "resolved": resolved,
        "runbook": runbook,
        "target": target,
        "vars": vars,
        "steps": steps.iter().map(|s| serde_json::json!([s.name, s.kind, s.idempotent, s.action, s.params])).collect::<Vec<_>>(),
        "policy": policy,
    });
    let mut h = Sha256::new();
    h.update(doc.to_string().as_bytes());
    hex::encode(h.finalize())[..16].to_string()
}
