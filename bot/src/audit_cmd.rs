//! `runbot audit verify` and `runbot audit export`.

use anyhow::Context;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::audit;
use runbot_commands::config::Settings;
use runbot_commands::ports::Store;
use std::io::Write;
use std::path::Path;

async fn log(settings: &Settings) -> anyhow::Result<(Vec<audit::AuditRecord>, Option<(u64, String)>)> {
    let store = SqlStore::connect(&settings.config.store.url).await?;
    Ok(store.audit_log().await?)
}

pub async fn verify(settings: &Settings) -> anyhow::Result<()> {
    let (records, head) = log(settings).await?;
    match audit::verify(&records, head.as_ref().map(|(s, h)| (*s, h.as_str()))) {
        Ok(n) => {
            println!("audit trail intact: {n} records, head {}", head.map(|(_, h)| h).unwrap_or_else(|| audit::GENESIS.into()));
            Ok(())
        }
        Err(problems) => {
            for p in &problems {
                println!("TAMPERED: {p}");
            }
            anyhow::bail!("the audit trail fails verification ({} problem(s))", problems.len())
        }
    }
}

pub async fn export(settings: &Settings, out: Option<&Path>) -> anyhow::Result<()> {
    let (records, _) = log(settings).await?;
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    for r in &records {
        writeln!(w, "{}", serde_json::to_string(r)?)?;
    }
    w.flush()?;
    if out.is_some() {
        eprintln!("exported {} audit records", records.len());
    }
    Ok(())
}
