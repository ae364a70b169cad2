//! `db-integrity`: validates a database (a restored copy, typically) against its configured
//! expectations — critical tables with minimum row counts and SQL checks — through the
//! [`DbChecker`] port. The result table goes to the detail thread and stays in the execution's
//! log; any failed check fails the step, so whatever follows (restarting writers) does not run.

use super::{Prepared, StepContext, StepKind, StepOutcome};
use crate::config::{Secret, Settings};
use crate::ports::integrity::{CheckResult, DbChecker, SqlCheck, TableCheck};
use crate::runbook::render;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One database's checks, resolved from the config (URL secret included).
#[derive(Clone, Debug)]
pub struct IntegritySpec {
    pub url: Secret,
    pub tables: Vec<TableCheck>,
    pub checks: Vec<SqlCheck>,
}

/// Every configured database's checks (`[databases.NAME.integrity]`).
pub fn specs(settings: &Settings) -> BTreeMap<String, IntegritySpec> {
    let mut out = BTreeMap::new();
    for (name, db) in &settings.config.databases {
        let Some(ic) = &db.integrity else { continue };
        let Some(url) = settings.secrets.get(&ic.url_secret) else { continue };
        out.insert(
            name.clone(),
            IntegritySpec {
                url: url.clone(),
                tables: ic.tables.iter().map(|(t, n)| TableCheck { table: t.clone(), min_rows: *n }).collect(),
                checks: ic.checks.iter().map(|c| SqlCheck { name: c.name.clone(), sql: c.sql.clone() }).collect(),
            },
        );
    }
    out
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Def {
    database: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Params {
    database: String,
}

pub struct IntegrityStep {
    pub checker: Option<Arc<dyn DbChecker>>,
    pub specs: BTreeMap<String, IntegritySpec>,
}

#[async_trait]
impl StepKind for IntegrityStep {
    fn kind(&self) -> &'static str {
        "db-integrity"
    }

    fn default_idempotent(&self) -> bool {
        true
    }

    fn prepare(&self, params: &toml::Table, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
        let def: Def = super::definition(params)?;
        let database = match &def.database {
            Some(t) => render(t, vars)?,
            None => vars.get("database").cloned().ok_or("needs a database target")?,
        };
        let action = match self.specs.get(&database) {
            Some(s) => {
                let tables: Vec<String> = s.tables.iter().map(|t| format!("{} ≥ {}", t.table, t.min_rows)).collect();
                let checks: Vec<&str> = s.checks.iter().map(|c| c.name.as_str()).collect();
                format!("check {database}: rows {}; checks {}; and exactly the counts a rehearsal found, if one ran", list(&tables), list(&checks))
            }
            None => format!("check {database} against [databases.{database}.integrity]"),
        };
        Ok(Prepared { action, params: serde_json::to_value(Params { database }).map_err(|e| e.to_string())? })
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        let p: Params = match super::stored(params) {
            Ok(p) => p,
            Err(failed) => return failed,
        };
        let Some(spec) = self.specs.get(&p.database) else {
            return StepOutcome::Failed(format!("{} has no integrity checks configured ([databases.{}.integrity])", p.database, p.database));
        };
        let Some(checker) = &self.checker else {
            return StepOutcome::Failed("this runbot has no database checker".into());
        };
        let results = match checker.run(spec.url.expose(), &spec.tables, &spec.checks).await {
            Ok(r) => r,
            Err(e) => return StepOutcome::Failed(format!("integrity checks could not run: {e}")),
        };
        let mut results = results;
        // A rehearsal before the approval fixed the counts the restore must give: exactly them.
        let rehearsed = super::restore::rehearsed(&ctx.execution.resolved);
        if !rehearsed.is_empty() {
            let tables: Vec<String> = rehearsed.iter().map(|(t, _)| t.clone()).collect();
            let counts = match checker.counts(spec.url.expose(), &tables).await {
                Ok(c) => c,
                Err(e) => return StepOutcome::Failed(format!("integrity checks could not run: {e}")),
            };
            for ((table, want), (_, got)) in rehearsed.iter().zip(counts) {
                let show = |n: Option<i64>| n.map(|n| format!("{n} rows")).unwrap_or_else(|| "no such table".into());
                results.push(CheckResult {
                    name: format!("rows in {table} as rehearsed"),
                    ok: got == *want,
                    detail: format!("{} (the rehearsal found {})", show(got), show(*want)),
                });
            }
        }
        let width = results.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
        for r in &results {
            let _ = ctx.output.send(format!("{} {:<width$}  {}", if r.ok { "✓" } else { "✗" }, r.name, r.detail));
        }
        let failed: Vec<String> = results.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.name, r.detail)).collect();
        if failed.is_empty() {
            StepOutcome::Succeeded(format!("all {} integrity checks passed", results.len()))
        } else {
            StepOutcome::Failed(format!("integrity check failed — {}", failed.join("; ")))
        }
    }
}

fn list<T: AsRef<str>>(v: &[T]) -> String {
    if v.is_empty() { "none".into() } else { v.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(", ") }
}
