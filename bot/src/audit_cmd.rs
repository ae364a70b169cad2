//! `runbot audit verify`, `runbot audit export` and `runbot artifacts export`.

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
    // Records are redacted when written; the export redacts again, with today's secrets (a
    // secret added since, or a record older than the redaction rules, still leaves nothing).
    for r in &records {
        writeln!(w, "{}", settings.redactor.redact(&serde_json::to_string(r)?))?;
    }
    w.flush()?;
    if out.is_some() {
        eprintln!("exported {} audit records", records.len());
    }
    Ok(())
}

/// Writes each artifact of execution `id` to `out/<name>`.
pub async fn export_artifacts(settings: &Settings, id: &str, out: &Path) -> anyhow::Result<()> {
    let exec: runbot_commands::grammar::ExecutionId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let store = SqlStore::connect(&settings.config.store.url).await?;
    let artifacts = store.artifacts(exec).await?;
    anyhow::ensure!(!artifacts.is_empty(), "{exec} has no artifacts");
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, content) in &artifacts {
        // Names come from step kinds, but a file name is still checked before it is used.
        anyhow::ensure!(
            !name.is_empty() && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "artifact name '{name}' is not a plain file name"
        );
        let path = out.join(name);
        // Stored redacted; redacted again with today's secrets, like the audit export.
        let content = settings.redactor.redact(content);
        std::fs::write(&path, &content).with_context(|| format!("writing {}", path.display()))?;
        println!("{} ({} bytes)", path.display(), content.len());
    }
    Ok(())
}
