//! `db-restore`: the database's restore command (`[databases.NAME.restore]`, by default the
//! shipped `deploy/scripts/db-restore.sh --date {date} --source {source}`), run exactly like a
//! `command` step — argv only, env with secrets filled in at run time, timeout, process group
//! killed, output streamed — with its definition taken from the config instead of the runbook,
//! so the built-in `restore` runbook serves every database.

use super::command::CommandStep;
use super::{Prepared, StepContext, StepKind, StepOutcome};
use crate::config::{DatabaseConfig, RestoreConfig};
use async_trait::async_trait;
use std::collections::BTreeMap;

pub struct RestoreStep {
    /// `[databases]` from the config.
    pub databases: BTreeMap<String, DatabaseConfig>,
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
        let Some(db) = vars.get("database").filter(|d| !d.is_empty()) else {
            // Config checking: no database to look up.
            return Ok(Prepared { action: "run the database's restore command".into(), params: serde_json::Value::Null });
        };
        let cfg = self.databases.get(db).ok_or_else(|| format!("'{db}' is not a configured database"))?;
        let r = cfg.restore.clone().unwrap_or_default();
        let RestoreConfig { argv, env, timeout, cwd } = r;
        let mut def = toml::Table::new();
        def.insert("argv".into(), toml::Value::Array(argv.into_iter().map(toml::Value::String).collect()));
        def.insert("env".into(), toml::Value::Table(env.into_iter().map(|(k, v)| (k, toml::Value::String(v))).collect()));
        def.insert("timeout".into(), toml::Value::String(timeout));
        if let Some(c) = cwd {
            def.insert("cwd".into(), toml::Value::String(c));
        }
        CommandStep.prepare(&def, vars).map_err(|e| format!("databases.{db}.restore: {e}"))
    }

    async fn run(&self, params: &serde_json::Value, ctx: StepContext) -> StepOutcome {
        CommandStep.run(params, ctx).await
    }
}
