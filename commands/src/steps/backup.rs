//! `backup-prune-plan` (read-only, before the approval) and `backup-prune-apply`: what is past
//! the database's retention and no restore inside the window needs — base backups older than
//! the newest one that ended before the window, and the WAL before that one — is shown, approved,
//! then deleted; the apply step recomputes the plan and refuses to delete anything that was
//! not approved.
//!
//! `backup-restore-point` (read-only, before the approval): proves from the database's backup
//! catalog that the requested time can be restored — inside the recoverable window, not behind
//! a WAL gap, not before the chosen base backup's end — and names the base backup to use. A
//! time that cannot be restored fails the step with the reason, before anyone is asked.

use super::{Prepared, StepContext, StepKind, StepOutcome};
use crate::ports::backup::Catalogs;
use crate::runbook::render;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Def {
    /// Default `{database}`.
    database: Option<String>,
    /// RFC 3339, default `{date}` (from `--date`).
    date: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Params {
    database: String,
    date: String,
}

pub struct RestorePointStep {
    catalogs: Catalogs,
}

impl RestorePointStep {
    pub fn new(catalogs: Catalogs) -> Self {
        RestorePointStep { catalogs }
    }
}

/// `--date latest`.
const LATEST: &str = "latest";

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[async_trait]
impl StepKind for RestorePointStep {
    fn kind(&self) -> &'static str {
        "backup-restore-point"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let def: Def = super::definition(params)?;
        let get = |p: &Option<String>, var: &str| match p {
            Some(t) => render(t, vars),
            None => vars.get(var).cloned().ok_or_else(|| format!("needs `{var}` (a database target and --date)")),
        };
        let database = get(&def.database, "database")?;
        let date = get(&def.date, "date")?;
        // Blank values only come from config checking, which probes with blanks.
        if !date.is_empty() && date != LATEST {
            DateTime::parse_from_rfc3339(&date).map_err(|e| format!("'{date}' is not an RFC 3339 date: {e}"))?;
        }
        let action = format!("check in {database}'s backup catalog that {date} is restorable (window, WAL gaps, base backup)");
        Ok(Prepared { action, params: serde_json::to_value(Params { database, date }).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: Params = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        let target = match DateTime::parse_from_rfc3339(&p.date) {
            Ok(t) => Some(t.to_utc()),
            Err(_) if p.date == LATEST => None,
            Err(e) => return StepOutcome::Failed(format!("'{}' is not an RFC 3339 date: {e}", p.date)),
        };
        let Some(catalog) = self.catalogs.get(&p.database) else {
            return StepOutcome::Failed(format!("{} has no backup archive configured ([databases.{}.backup])", p.database, p.database));
        };
        if let Some(source) = ctx.execution.vars.get("source") {
            let configured = ctx.execution.vars.get("configured_source").cloned().unwrap_or_default();
            if !configured.is_empty() && source.trim_end_matches('/') != configured.trim_end_matches('/') {
                return StepOutcome::Failed(format!(
                    "--source {source} is not {}'s configured archive ({configured}); only that one can be checked before the restore",
                    p.database
                ));
            }
        }
        let snapshot = match catalog.snapshot().await {
            Ok(s) => s,
            Err(e) => return StepOutcome::Failed(format!("could not read the backup catalog: {e}")),
        };
        let a = snapshot.analyze();
        let out = &ctx.output;
        let _ = out.send(format!("catalog: {}", catalog.location()));
        let _ = out.send(format!("{} base backups, {} WAL segments", snapshot.backups.len(), snapshot.wal_segments));
        for r in &a.window {
            let _ = out.send(format!("restorable: {} → {}", at(r.from), at(r.to)));
        }
        for g in &a.gaps {
            let _ = out.send(format!("WAL gap on timeline {}: {}..{}", g.timeline, g.first_name, g.last_name));
        }
        let Some(target) = target else {
            return match a.latest_point() {
                Ok(rp) => StepOutcome::Resolved {
                    summary: format!(
                        "latest: the end of the archive, WAL uploaded up to {}, is restorable from base backup {} (ended {})",
                        at(rp.reach_time),
                        rp.backup_id,
                        at(rp.backup_end)
                    ),
                    targets: vec![format!(
                        "{} at the end of its archive (WAL up to {}) from base backup {}",
                        p.database,
                        at(rp.reach_time),
                        rp.backup_id
                    )],
                    rollback: None,
                },
                Err(why) => StepOutcome::Failed(format!("the newest archived point cannot be restored: {why}. Nothing was changed.")),
            };
        };
        match a.restore_point(target) {
            Ok(rp) => StepOutcome::Resolved {
                summary: format!(
                    "{} is restorable from base backup {} (ended {}); WAL reaches {}",
                    at(rp.target),
                    rp.backup_id,
                    at(rp.backup_end),
                    at(rp.reach_time)
                ),
                targets: vec![format!("{} at {} from base backup {}", p.database, at(rp.target), rp.backup_id)],
                rollback: None,
            },
            Err(why) => StepOutcome::Failed(format!("{} cannot be restored: {why}. Nothing was changed.", at(target))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PruneOp {
    Plan,
    Apply,
}

pub struct PruneStep {
    catalogs: Catalogs,
    op: PruneOp,
}

impl PruneStep {
    pub fn both(catalogs: &Catalogs) -> [PruneStep; 2] {
        [PruneStep { catalogs: catalogs.clone(), op: PruneOp::Plan }, PruneStep { catalogs: catalogs.clone(), op: PruneOp::Apply }]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PruneParams {
    database: String,
    retention_secs: u64,
}

/// The plan as resolved targets: one line per deletion, what the approvers approve.
fn plan_lines(plan: &crate::ports::backup::PrunePlan) -> Vec<String> {
    let mut v: Vec<String> = plan.backups.iter().map(|b| format!("delete base backup {b}")).collect();
    if let Some(w) = plan.wal_before {
        v.push(format!("delete WAL before {}", w.file_name(plan.wal_segment_size)));
    }
    v
}

#[async_trait]
impl StepKind for PruneStep {
    fn kind(&self) -> &'static str {
        match self.op {
            PruneOp::Plan => "backup-prune-plan",
            PruneOp::Apply => "backup-prune-apply",
        }
    }

    fn default_idempotent(&self) -> bool {
        // Planning reads; applying deletes only what the approved plan names, and what is
        // already gone is skipped, so a repeat after a crash deletes nothing more.
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        if !params.is_empty() {
            return Err("takes no parameters (the database's backup retention decides)".into());
        }
        let database = vars.get("database").cloned().ok_or("needs a database target")?;
        let retention = vars.get("backup_retention").cloned().unwrap_or_default();
        let retention_secs = if retention.is_empty() { 0 } else { crate::config::parse_duration(&retention)?.as_secs() };
        let action = match self.op {
            PruneOp::Plan => {
                format!("list what in {database}'s archive is older than its retention ({retention}) and not needed by a restore inside it")
            }
            PruneOp::Apply => format!("delete exactly the approved base backups and WAL from {database}'s archive"),
        };
        Ok(Prepared { action, params: serde_json::to_value(PruneParams { database, retention_secs }).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: PruneParams = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        if p.retention_secs == 0 {
            return StepOutcome::Failed(format!("{} has no backup retention configured", p.database));
        }
        let Some(catalog) = self.catalogs.get(&p.database) else {
            return StepOutcome::Failed(format!("{} has no backup archive configured ([databases.{}.backup])", p.database, p.database));
        };
        let snapshot = match catalog.snapshot().await {
            Ok(s) => s,
            Err(e) => return StepOutcome::Failed(format!("could not read the backup catalog: {e}")),
        };
        let retention = chrono::Duration::seconds(p.retention_secs as i64);
        let plan = snapshot.prune_plan(Utc::now(), retention);
        let lines = plan_lines(&plan);
        match self.op {
            PruneOp::Plan => {
                for l in &lines {
                    let _ = ctx.output.send(l.clone());
                }
                if plan.is_empty() {
                    return StepOutcome::Finished(format!("Nothing in {}'s archive is past its retention.", p.database));
                }
                let keeps = plan.keeps.clone().unwrap_or_default();
                StepOutcome::Resolved {
                    summary: format!(
                        "{} base backup(s) past retention{}; keeps {keeps}, the oldest backup a restore inside the window needs",
                        plan.backups.len(),
                        if plan.wal_before.is_some() { " and the WAL before it" } else { "" }
                    ),
                    targets: lines,
                    rollback: None,
                }
            }
            PruneOp::Apply => {
                let approved = &ctx.execution.resolved;
                if let Some(extra) = lines.iter().find(|l| !approved.contains(l)) {
                    return StepOutcome::Failed(format!("the archive changed since the approval: '{extra}' was not approved; nothing was deleted"));
                }
                match catalog.prune(&plan).await {
                    Ok(n) => StepOutcome::Succeeded(format!(
                        "deleted {n} objects: {}",
                        if lines.is_empty() { "nothing left to delete".into() } else { lines.join("; ") }
                    )),
                    Err(e) => StepOutcome::Failed(format!("deleting failed part-way: {e}")),
                }
            }
        }
    }
}
