//! The restore of a database and what surrounds it, all from `[databases.NAME.restore]`, so
//! the built-in `restore` runbook serves every database:
//!
//! - `db-restore-preflight` (before the approval): the restore command runs in its check mode
//!   (`--check` added: the shipped script checks its tools and their versions, the PostgreSQL
//!   binaries, the archive and the target, and changes nothing), the integrity checker
//!   connects, and the cluster grants every verb the writer and cutover steps will use. A
//!   failure says what to fix, before anyone is asked and before anything stops.
//! - `db-rehearse` (before the approval, when `rehearse = true`): the restore command restores
//!   the date into a scratch directory (`--rehearse`), counts the integrity tables there and
//!   removes the copy; the counts become part of the plan (`rehearsed at T: items 600 — now:
//!   800`), so the approvers approve them, and `db-integrity` later requires exactly them.
//! - `db-restore`: the restore command (by default the shipped
//!   `deploy/scripts/db-restore.sh --date {date} --source {source}`), run like a `command`
//!   step — argv only, env with secrets filled in at run time, timeout, process group killed,
//!   output streamed — with `--pgdata`/`--port` and, in place, `--in-place --keep-aside
//!   PGDATA.before-EXECUTION` added. Its action in the plan names the cutover and what is kept.
//! - `db-cutover`: moves the service to the restored data. In place there is nothing left to
//!   move (the server's own directory was restored); a switch points the Secret key the
//!   writers read at the restored instance, keeping the old value beside it.

use super::command::{CommandStep, run_prepared};
use super::{Prepared, StepContext, StepKind, StepOutcome};
use crate::config::{Cutover, DatabaseConfig, RestoreConfig};
use crate::ports::cluster::Clusters;
use crate::ports::integrity::DbChecker;
use crate::runbook::render;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The prefix of a rehearsed count among the execution's resolved targets.
pub const REHEARSED: &str = "rehearsed at T: ";

/// A resolved line `rehearsed at T: TABLE N — now: M` (or `TABLE missing — …`) → (table, count).
pub fn rehearsed(resolved: &[String]) -> Vec<(String, Option<i64>)> {
    resolved
        .iter()
        .filter_map(|r| r.strip_prefix(REHEARSED))
        .filter_map(|r| {
            let mut words = r.split(' ');
            let table = words.next()?.to_string();
            let n = words.next()?;
            Some((table, if n == "missing" { None } else { Some(n.replace(',', "").parse().ok()?) }))
        })
        .collect()
}

/// `12777` → `12,777`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn count_text(n: Option<i64>) -> String {
    n.map(thousands).unwrap_or_else(|| "missing".into())
}

/// What the config says about one database's restore, rendered for one execution.
struct Resolved {
    database: String,
    cfg: RestoreConfig,
    cutover: Cutover,
    pgdata: Option<String>,
    /// In place: `PGDATA.before-EXECUTION`.
    keep_aside: Option<String>,
    tables: Vec<String>,
    writers: Vec<String>,
    cluster: String,
}

/// The database's restore settings, or `None` while the config is being checked (no target).
fn resolve(databases: &BTreeMap<String, DatabaseConfig>, vars: &BTreeMap<String, String>) -> Result<Option<Resolved>, String> {
    let Some(db) = vars.get("database").filter(|d| !d.is_empty()) else { return Ok(None) };
    let cfg = databases.get(db).ok_or_else(|| format!("'{db}' is not a configured database"))?;
    let r = cfg.restore.clone().unwrap_or_default();
    let Some(cutover) = r.cutover else {
        return Err(format!(
            "[databases.{db}.restore] cutover is not set: say how the service moves to the restored data — \"in-place\" (the server's own data directory is restored, the old one kept aside), \"switch\" (a restored instance, then the writers' Secret points at it) or \"none\" (your restore command does it); see docs/operations.md, Restoring a database"
        ));
    };
    let pgdata = r.pgdata.as_deref().map(|p| render(p, vars)).transpose().map_err(|e| format!("databases.{db}.restore.pgdata: {e}"))?;
    let execution = vars.get("execution").cloned().unwrap_or_default();
    let keep_aside = match (cutover, &pgdata) {
        (Cutover::InPlace, Some(p)) => Some(format!("{}.before-{execution}", p.trim_end_matches('/'))),
        (Cutover::InPlace, None) => return Err(format!("databases.{db}.restore: cutover \"in-place\" needs pgdata (the server's data directory)")),
        _ => None,
    };
    let tables = cfg.integrity.as_ref().map(|i| i.tables.keys().cloned().collect()).unwrap_or_default();
    Ok(Some(Resolved {
        database: db.clone(),
        cutover,
        pgdata,
        keep_aside,
        tables,
        writers: cfg.writers.clone(),
        cluster: vars.get("cluster").cloned().unwrap_or_default(),
        cfg: r,
    }))
}

impl Resolved {
    /// The restore command as a `command` step definition, with `extra` arguments added.
    fn command(&self, argv: &[String], extra: Vec<String>, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let mut def = toml::Table::new();
        let all = argv.iter().cloned().chain(extra.into_iter().map(|a| a.replace('{', "{{").replace('}', "}}")));
        def.insert("argv".into(), toml::Value::Array(all.map(toml::Value::String).collect()));
        def.insert("env".into(), toml::Value::Table(self.cfg.env.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect()));
        def.insert("timeout".into(), toml::Value::String(self.cfg.timeout.clone()));
        if let Some(c) = &self.cfg.cwd {
            def.insert("cwd".into(), toml::Value::String(c.clone()));
        }
        CommandStep.prepare(&def, vars).map_err(|e| format!("databases.{}.restore: {e}", self.database))
    }

    /// `--pgdata P --port N` when the config names them.
    fn target_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(p) = &self.pgdata {
            v.extend(["--pgdata".to_string(), p.clone()]);
        }
        if let Some(port) = self.cfg.port {
            v.extend(["--port".to_string(), port.to_string()]);
        }
        v
    }

    /// What the restore does to the service, for the plan.
    fn cutover_text(&self) -> String {
        let port = self.cfg.port.map(|p| format!(" on port {p}")).unwrap_or_default();
        let pgdata = self.pgdata.clone().unwrap_or_else(|| "the directory the command names".into());
        match self.cutover {
            Cutover::InPlace => format!(
                "in place: stop the server of {pgdata}, keep its data directory aside as {} (nothing is deleted), restore into {pgdata} and start it{port}",
                self.keep_aside.clone().unwrap_or_default()
            ),
            Cutover::Switch => format!("side by side: restore into {pgdata}{port}, the old server left as it is"),
            Cutover::None => "no cutover by runbot: the restore command alone decides where the restored data goes".into(),
        }
    }
}

/// The config-checking placeholder of a kind (no database to look up).
fn unbound(action: &str) -> Prepared {
    Prepared { action: action.into(), params: serde_json::Value::Null }
}

pub struct RestoreStep {
    /// `[databases]` from the config.
    pub databases: BTreeMap<String, DatabaseConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RestoreParams {
    command: serde_json::Value,
    cutover: String,
}

#[async_trait]
impl StepKind for RestoreStep {
    fn kind(&self) -> &'static str {
        "db-restore"
    }

    fn default_idempotent(&self) -> bool {
        false
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::deploy::NoParams = super::definition(params)?;
        let Some(r) = resolve(&self.databases, vars)? else { return Ok(unbound("run the database's restore command")) };
        let mut extra = r.target_args();
        if let Some(k) = &r.keep_aside {
            extra.extend(["--in-place".to_string(), "--keep-aside".to_string(), k.clone()]);
        }
        let cmd = r.command(&r.cfg.argv, extra, vars)?;
        let cutover = match r.cutover {
            Cutover::InPlace => "in-place",
            Cutover::Switch => "switch",
            Cutover::None => "none",
        };
        Ok(Prepared {
            action: format!("{}; {}", r.cutover_text(), cmd.action),
            params: serde_json::to_value(RestoreParams { command: cmd.params, cutover: cutover.into() }).map_err(|e| e.to_string())?,
        })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: RestoreParams = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        let outcome = match run_prepared(&p.command, &ctx, false).await {
            Ok(done) => done.outcome(None),
            Err(failed) => failed,
        };
        match (outcome, p.cutover.as_str()) {
            (StepOutcome::Failed(why), "switch") => StepOutcome::Failed(format!(
                "{why}. Nothing was switched: the writers' Secret still points at the old database, which was not touched"
            )),
            (other, _) => other,
        }
    }
}

/// `db-restore-preflight`.
pub struct PreflightStep {
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub clusters: Clusters,
    pub checker: Option<Arc<dyn DbChecker>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreflightParams {
    database: String,
    command: serde_json::Value,
    /// The `[secrets]` entry the checker connects to now, and what it is.
    connect: Option<(String, String)>,
    /// `[secrets]` entries that must resolve (the restored instance's URLs).
    secrets: Vec<(String, String)>,
    cluster: String,
    /// (namespace, verb, resource) the later steps use.
    verbs: Vec<(String, String, String)>,
}

#[async_trait]
impl StepKind for PreflightStep {
    fn kind(&self) -> &'static str {
        "db-restore-preflight"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::deploy::NoParams = super::definition(params)?;
        let Some(r) = resolve(&self.databases, vars)? else { return Ok(unbound("check the restore can run before anything stops")) };
        let cmd = match &r.cfg.check_argv {
            Some(argv) => r.command(argv, Vec::new(), vars)?,
            None => {
                let mut extra = r.target_args();
                if let Some(k) = &r.keep_aside {
                    extra.extend(["--in-place".to_string(), "--keep-aside".to_string(), k.clone()]);
                }
                extra.push("--check".into());
                r.command(&r.cfg.argv, extra, vars)?
            }
        };
        let db = &self.databases[&r.database];
        let integrity_url = db.integrity.as_ref().map(|i| i.url_secret.clone());
        let connect = match (&r.cfg.current_url_secret, r.cutover, &integrity_url) {
            (Some(s), _, _) => Some((s.clone(), "the database as the writers use it now".to_string())),
            (None, Cutover::InPlace, Some(s)) => Some((s.clone(), "the server restored in place".to_string())),
            _ => None,
        };
        let mut secrets = Vec::new();
        if let Some(s) = &integrity_url {
            secrets.push((s.clone(), "the integrity checks' database".to_string()));
        }
        if let Some(sw) = &r.cfg.switch {
            secrets.push((sw.url_secret.clone(), "the URL the writers get after the switch".to_string()));
        }
        let mut verbs = Vec::new();
        for w in &r.writers {
            let ns = w.split_once('/').map(|(ns, _)| ns).unwrap_or(w).to_string();
            for (verb, res) in [
                ("get", "deployments.apps"),
                ("get", "deployments.apps/scale"),
                ("patch", "deployments.apps/scale"),
                ("list", "pods"),
                ("watch", "pods"),
            ] {
                let v = (ns.clone(), verb.to_string(), res.to_string());
                if !verbs.contains(&v) {
                    verbs.push(v);
                }
            }
        }
        if let (Cutover::Switch, Some(sw)) = (r.cutover, &r.cfg.switch) {
            let ns = sw.secret.split_once('/').map(|(ns, _)| ns).unwrap_or_default().to_string();
            verbs.push((ns, "patch".into(), "secrets".into()));
        }
        let mut action = format!("before anything stops: {}", cmd.action.replacen("run ", "run the restore command's check ", 1));
        if let Some((s, what)) = &connect {
            action.push_str(&format!("; the integrity checker connects to {what} ({s})"));
        }
        if !verbs.is_empty() {
            let list: Vec<String> = verbs.iter().map(|(ns, v, res)| format!("{v} {res} in {ns}")).collect();
            action.push_str(&format!("; the cluster grants {}", list.join(", ")));
        }
        let p = PreflightParams { database: r.database.clone(), command: cmd.params, connect, secrets, cluster: r.cluster.clone(), verbs };
        Ok(Prepared { action, params: serde_json::to_value(p).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: PreflightParams = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        let nothing = "Nothing was stopped or changed.";
        let done = match run_prepared(&p.command, &ctx, false).await {
            Ok(done) => done,
            Err(failed) => return failed,
        };
        if let StepOutcome::Failed(why) = done.outcome(None) {
            return StepOutcome::Failed(format!("the restore command cannot run: {why}. {nothing}"));
        }
        let mut passed = vec!["the restore command's check passed".to_string()];
        for (name, what) in &p.secrets {
            if !ctx.secrets.contains_key(name) {
                return StepOutcome::Failed(format!("secret '{name}' ({what}) does not resolve: set it. {nothing}"));
            }
        }
        if let Some((name, what)) = &p.connect {
            let Some(checker) = &self.checker else {
                return StepOutcome::Failed(format!("this runbot has no database checker, so the integrity step could not run. {nothing}"));
            };
            let Some(url) = ctx.secrets.get(name) else {
                return StepOutcome::Failed(format!("secret '{name}' ({what}) does not resolve: set it. {nothing}"));
            };
            if let Err(e) = checker.counts(url.expose(), &[]).await {
                return StepOutcome::Failed(format!("the integrity checker cannot reach {what} (secret {name}): {e}. {nothing}"));
            }
            let _ = ctx.output.send(format!("the integrity checker connects to {what}"));
            passed.push("the integrity checker connects".into());
        }
        if !p.verbs.is_empty() {
            let c = match self.clusters.get(&p.cluster) {
                Ok(c) => c.clone(),
                Err(why) => return StepOutcome::Failed(format!("{why}. {nothing}")),
            };
            let mut denied = Vec::new();
            for (ns, verb, res) in &p.verbs {
                match c.can_i(ns, verb, res).await {
                    Ok(true) => {}
                    Ok(false) => denied.push(format!("{verb} {res} in {ns}")),
                    Err(e) => return StepOutcome::Failed(format!("cannot ask the cluster what runbot may do: {e}. {nothing}")),
                }
            }
            if !denied.is_empty() {
                return StepOutcome::Failed(format!(
                    "the cluster does not let runbot {}: grant it in runbot's Role (deploy/helm/runbot, rbac). {nothing}",
                    denied.join(", ")
                ));
            }
            passed.push(format!("the cluster grants the {} verbs the later steps use", p.verbs.len()));
        }
        StepOutcome::Succeeded(format!("preflight of {}: {}", p.database, passed.join("; ")))
    }
}

/// `db-rehearse`.
pub struct RehearseStep {
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub checker: Option<Arc<dyn DbChecker>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RehearseParams {
    database: String,
    /// None: rehearsal off.
    command: Option<serde_json::Value>,
    tables: Vec<String>,
    /// Where today's counts are read (a `[secrets]` entry).
    current: Option<String>,
}

/// What the script printed on stdout.
#[derive(Debug, Default, PartialEq)]
struct Rehearsal {
    rows: Vec<(String, Option<i64>)>,
    reached: Option<String>,
    size: Option<u64>,
    took: Option<u64>,
}

fn parse_rehearsal(stdout: &str) -> Rehearsal {
    let mut r = Rehearsal::default();
    for line in stdout.lines() {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("rows"), Some(t), Some(n)) => r.rows.push((t.to_string(), n.trim().parse().ok())),
            (Some("reached"), Some(a), rest) => r.reached = Some(rest.map(|b| format!("{a} {b}")).unwrap_or_else(|| a.to_string())),
            (Some("size"), Some(n), None) => r.size = n.parse().ok(),
            (Some("took"), Some(n), None) => r.took = n.parse().ok(),
            _ => {}
        }
    }
    r
}

#[async_trait]
impl StepKind for RehearseStep {
    fn kind(&self) -> &'static str {
        "db-rehearse"
    }

    fn default_idempotent(&self) -> bool {
        // A scratch copy under its own name, removed by the command whatever happens.
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::deploy::NoParams = super::definition(params)?;
        let Some(r) = resolve(&self.databases, vars)? else { return Ok(unbound("rehearse the restore when the database asks for it")) };
        let db = r.database.clone();
        if !r.cfg.rehearse {
            let p = RehearseParams { database: db.clone(), command: None, tables: Vec::new(), current: None };
            return Ok(Prepared {
                action: format!("no rehearsal ([databases.{db}.restore] rehearse is off)"),
                params: serde_json::to_value(p).map_err(|e| e.to_string())?,
            });
        }
        if r.tables.is_empty() {
            return Err(format!("the rehearsal counts the integrity tables, and [databases.{db}.integrity] lists none"));
        }
        let execution = vars.get("execution").cloned().unwrap_or_default();
        let scratch = format!("{}/rehearsal-{db}-{execution}", r.cfg.rehearse_dir.trim_end_matches('/'));
        let mut extra = vec!["--rehearse".to_string(), "--pgdata".into(), scratch.clone(), "--count-db".into(), r.cfg.rehearse_dbname.clone()];
        for t in &r.tables {
            extra.extend(["--count".to_string(), t.clone()]);
        }
        let cmd = r.command(&r.cfg.argv, extra, vars)?;
        let integrity_url = self.databases[&db].integrity.as_ref().map(|i| i.url_secret.clone());
        let current = r.cfg.current_url_secret.clone().or(if r.cutover == Cutover::InPlace { integrity_url } else { None });
        let action = format!(
            "before the approval: restore {} into the scratch directory {scratch} (private socket, no TCP), count {} there and beside it today's counts{}, then remove the scratch copy; {}",
            vars.get("date").cloned().unwrap_or_default(),
            r.tables.join(", "),
            current.as_ref().map(|s| format!(" (from {s})")).unwrap_or_else(|| " (unknown: no current_url_secret)".into()),
            cmd.action
        );
        let p = RehearseParams { database: db, command: Some(cmd.params), tables: r.tables.clone(), current };
        Ok(Prepared { action, params: serde_json::to_value(p).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: RehearseParams = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        let Some(command) = &p.command else {
            return StepOutcome::Succeeded(format!("no rehearsal: [databases.{}.restore] rehearse is off", p.database));
        };
        let done = match run_prepared(command, &ctx, true).await {
            Ok(done) => done,
            Err(failed) => return failed,
        };
        if let StepOutcome::Failed(why) = done.outcome(None) {
            return StepOutcome::Failed(format!("the rehearsal failed: {why}. Nothing was stopped or changed"));
        }
        let got = parse_rehearsal(&done.stdout);
        let missing: Vec<&String> = p.tables.iter().filter(|t| !got.rows.iter().any(|(g, _)| g == *t)).collect();
        if !missing.is_empty() {
            return StepOutcome::Failed(format!(
                "the rehearsal did not report the rows of {} (the restore command must print `rows TABLE N` with --rehearse)",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let now: BTreeMap<String, Option<i64>> = match (&p.current, &self.checker) {
            (Some(name), Some(checker)) => match ctx.secrets.get(name) {
                Some(url) => match checker.counts(url.expose(), &p.tables).await {
                    Ok(v) => v.into_iter().collect(),
                    Err(e) => return StepOutcome::Failed(format!("today's counts could not be read (secret {name}): {e}")),
                },
                None => return StepOutcome::Failed(format!("secret '{name}' does not resolve")),
            },
            _ => BTreeMap::new(),
        };
        let mut targets = ctx.execution.resolved.iter().filter(|r| !r.starts_with(REHEARSED)).cloned().collect::<Vec<_>>();
        for (t, n) in &got.rows {
            let today = match now.get(t) {
                Some(c) => count_text(*c),
                None => "unknown".into(),
            };
            targets.push(format!("{REHEARSED}{t} {} — now: {today}", count_text(*n)));
        }
        let cost = format!(
            "the rehearsal took {}s and {} MiB of scratch disk, removed afterwards",
            got.took.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            got.size.map(|b| (b / (1 << 20)).to_string()).unwrap_or_else(|| "?".into())
        );
        let reached = got.reached.map(|r| format!(" (last transaction replayed: {r})")).unwrap_or_default();
        let counts: Vec<String> = got.rows.iter().map(|(t, n)| format!("{t} {}", count_text(*n))).collect();
        StepOutcome::Resolved { summary: format!("rehearsed{reached}: at T {}; {cost}", counts.join(", ")), targets, rollback: None }
    }
}

/// `db-cutover`.
pub struct CutoverStep {
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub clusters: Clusters,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CutoverParams {
    database: String,
    cutover: String,
    text: String,
    /// Switch: cluster, namespace, Secret, key, the `[secrets]` entry of the new value, keep_as.
    switch: Option<(String, String, String, String, String, String)>,
}

#[async_trait]
impl StepKind for CutoverStep {
    fn kind(&self) -> &'static str {
        "db-cutover"
    }

    fn default_idempotent(&self) -> bool {
        false
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let _: super::deploy::NoParams = super::definition(params)?;
        let Some(r) = resolve(&self.databases, vars)? else { return Ok(unbound("move the service to the restored data")) };
        let execution = vars.get("execution").cloned().unwrap_or_default();
        let (cutover, text, switch) = match r.cutover {
            Cutover::InPlace => (
                "in-place",
                format!(
                    "in place: the server of {} now holds the restored data on its own address; the old data directory stays kept as {}",
                    r.pgdata.clone().unwrap_or_default(),
                    r.keep_aside.clone().unwrap_or_default()
                ),
                None,
            ),
            Cutover::Switch => {
                let sw = r.cfg.switch.clone().ok_or_else(|| {
                    format!("[databases.{}.restore] cutover \"switch\" needs [databases.{}.restore.switch]", r.database, r.database)
                })?;
                let (ns, name) = sw.secret.split_once('/').ok_or_else(|| format!("'{}' is not namespace/name", sw.secret))?;
                let keep_as = format!("{}-before-{execution}", sw.key);
                (
                    "switch",
                    format!(
                        "switch: point key {} of Secret {} (what the writers read) at the restored instance ({}), keeping the old value as key {keep_as}",
                        sw.key, sw.secret, sw.url_secret
                    ),
                    Some((r.cluster.clone(), ns.to_string(), name.to_string(), sw.key.clone(), sw.url_secret.clone(), keep_as)),
                )
            }
            Cutover::None => (
                "none",
                "no cutover by runbot ([databases.NAME.restore] cutover = \"none\"): the writers come back to the database they used before"
                    .replace("NAME", &r.database),
                None,
            ),
        };
        let p = CutoverParams { database: r.database.clone(), cutover: cutover.into(), text: text.clone(), switch };
        Ok(Prepared { action: text, params: serde_json::to_value(p).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: CutoverParams = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        let Some((cluster, ns, name, key, url_secret, keep_as)) = &p.switch else {
            return StepOutcome::Succeeded(p.text);
        };
        let Some(url) = ctx.secrets.get(url_secret) else {
            return StepOutcome::Failed(format!("secret '{url_secret}' (the restored instance's URL) does not resolve; nothing was switched"));
        };
        let c = match self.clusters.get(cluster) {
            Ok(c) => c.clone(),
            Err(why) => return StepOutcome::Failed(format!("{why}; nothing was switched")),
        };
        match c.switch_secret_key(ns, name, key, url.expose(), keep_as).await {
            Ok(()) => {
                let _ = ctx
                    .output
                    .send(format!("Secret {ns}/{name}: key {key} now points at the restored instance; the old value is kept as key {keep_as}"));
                StepOutcome::Succeeded(format!(
                    "switched: Secret {ns}/{name} key {key} points at the restored instance; the old value is kept as key {keep_as} (the old server was not touched)"
                ))
            }
            Err(e) => StepOutcome::Failed(format!("switching Secret {ns}/{name} failed: {e}; the writers' Secret was not changed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match crate::config::Settings::from_toml(text, std::path::Path::new("."), &super::super::StepKinds::shipped()) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// `[databases.NAME.restore]`'s cutover, switch and rehearsal keys are checked, each
    /// problem with its key path.
    #[test]
    fn restore_settings_are_checked_with_key_paths() {
        let db = "[secrets]\nurl = \"env:PATH\"\n[databases.db.integrity]\nurl_secret = \"url\"\ntables = { items = 1 }\n[databases.db.restore]\n";
        assert_eq!(problems(&format!("{db}cutover = \"in-place\"\npgdata = \"/d\"\nport = 5432\nrehearse = true\n")), Vec::<String>::new());
        let p = problems(&format!("{db}cutover = \"in-place\"\n"));
        assert!(p.iter().any(|m| m.contains("databases.db.restore.pgdata") && m.contains("data directory")), "{p:?}");
        let p = problems(&format!("{db}cutover = \"switch\"\n"));
        assert!(p.iter().any(|m| m.contains("databases.db.restore.switch") && m.contains("needs this section")), "{p:?}");
        let p = problems(&format!(
            "{db}cutover = \"switch\"\n[databases.db.restore.switch]\nsecret = \"NS/x/y\"\nkey = \"a b\"\nurl_secret = \"nope\"\n"
        ));
        for key in ["switch.secret", "switch.key", "switch.url_secret"] {
            assert!(p.iter().any(|m| m.contains(&format!("databases.db.restore.{key}"))), "{key}: {p:?}");
        }
        let p = problems(&format!("{db}cutover = \"sideways\"\n"));
        assert!(p.iter().any(|m| m.contains("databases.db.restore") && m.contains("sideways")), "{p:?}");
        let p = problems("[databases.db.restore]\ncutover = \"none\"\nrehearse = true\nrehearse_dir = \"tmp\"\n");
        assert!(p.iter().any(|m| m.contains("databases.db.restore.rehearse") && m.contains("integrity")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("databases.db.restore.rehearse_dir")), "{p:?}");
    }

    /// The restore step's action names the cutover and what is kept aside (the approvers
    /// approve it); a database that does not say how the service reaches the restored data is
    /// refused before anything runs.
    #[test]
    fn the_plan_names_the_cutover_and_a_database_without_one_is_refused() {
        let settings = |restore: &str| {
            let text = format!(
                "[secrets]\nurl = \"env:PATH\"\n[databases.db]\nwriters = [\"ns/api\"]\n[databases.db.integrity]\nurl_secret = \"url\"\ntables = {{ items = 1 }}\n[databases.db.restore]\nargv = [\"restore\", \"--date\", \"{{date}}\"]\n{restore}"
            );
            crate::config::Settings::from_toml(&text, std::path::Path::new("."), &super::super::StepKinds::shipped())
                .unwrap_or_else(|p| panic!("{p:?}"))
        };
        let vars: BTreeMap<String, String> =
            [("database", "db"), ("execution", "R-7"), ("date", "latest"), ("cluster", "prod")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        let step = |s: &crate::config::Settings| RestoreStep { databases: s.config.databases.clone() }.prepare(&toml::Table::new(), &vars);
        let in_place = step(&settings("cutover = \"in-place\"\npgdata = \"/pg/main\"\nport = 5432\n")).expect("prepared");
        assert!(in_place.action.starts_with("in place: stop the server of /pg/main, keep its data directory aside as /pg/main.before-R-7 (nothing is deleted), restore into /pg/main and start it on port 5432; run [\"restore\", \"--date\", \"latest\", \"--pgdata\", \"/pg/main\", \"--port\", \"5432\", \"--in-place\", \"--keep-aside\", \"/pg/main.before-R-7\"]"), "{}", in_place.action);
        let switch = step(&settings(
            "cutover = \"switch\"\npgdata = \"/pg/restore-{execution}\"\nport = 5433\nswitch = { secret = \"ns/db\", url_secret = \"url\" }\n",
        ))
        .expect("prepared");
        assert!(
            switch.action.starts_with("side by side: restore into /pg/restore-R-7 on port 5433, the old server left as it is"),
            "{}",
            switch.action
        );
        let why = step(&settings("")).expect_err("no cutover");
        assert!(why.contains("cutover is not set") && why.contains("\"in-place\"") && why.contains("\"switch\""), "{why}");
    }

    #[test]
    fn the_rehearsal_output_and_the_rehearsed_lines_are_read_back() {
        let got = parse_rehearsal("rows items 12777\nrows sales.orders missing\nreached 2026-12-06 02:00:01.5+00\nsize 41943040\ntook 12\nnoise\n");
        assert_eq!(got.rows, vec![("items".to_string(), Some(12777)), ("sales.orders".to_string(), None)]);
        assert_eq!((got.reached.as_deref(), got.size, got.took), (Some("2026-12-06 02:00:01.5+00"), Some(41943040), Some(12)));
        let lines = vec![
            "writer ns/api=3".to_string(),
            format!("{REHEARSED}items {} — now: {}", count_text(Some(12777)), count_text(Some(1277))),
            format!("{REHEARSED}sales.orders missing — now: 5"),
        ];
        assert_eq!(lines[1], "rehearsed at T: items 12,777 — now: 1,277");
        assert_eq!(rehearsed(&lines), vec![("items".to_string(), Some(12777)), ("sales.orders".to_string(), None)]);
        assert_eq!(
            (thousands(0), thousands(999), thousands(1000), thousands(-1234567)),
            ("0".into(), "999".into(), "1,000".into(), "-1,234,567".into())
        );
    }
}
