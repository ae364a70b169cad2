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
        let def: Def = toml::Value::Table(params.clone()).try_into().map_err(|e: toml::de::Error| e.message().to_string())?;
        let get = |p: &Option<String>, var: &str| match p {
            Some(t) => render(t, vars),
            None => vars.get(var).cloned().ok_or_else(|| format!("needs `{var}` (a database target and --date)")),
        };
        let database = get(&def.database, "database")?;
        let date = get(&def.date, "date")?;
        // Blank values only come from config checking, which probes with blanks.
        if !date.is_empty() {
            DateTime::parse_from_rfc3339(&date).map_err(|e| format!("'{date}' is not an RFC 3339 date: {e}"))?;
        }
        let action = format!("check in {database}'s backup catalog that {date} is restorable (window, WAL gaps, base backup)");
        Ok(Prepared { action, params: serde_json::to_value(Params { database, date }).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: Params = match serde_json::from_value(params.clone()) {
            Ok(p) => p,
            Err(e) => return StepOutcome::Failed(format!("stored parameters are unreadable: {e}")),
        };
        let target = match DateTime::parse_from_rfc3339(&p.date) {
            Ok(t) => t.to_utc(),
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
            },
            Err(why) => StepOutcome::Failed(format!("{} cannot be restored: {why}. Nothing was changed.", at(target))),
        }
    }
}
