//! `runbot audit verify`, `runbot audit export`, `runbot audit timeline` and `runbot artifacts export`.

use anyhow::Context;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::audit;
use runbot_commands::config::{Redactor, Settings};
use runbot_commands::ports::Store;
use std::io::Write;
use std::path::Path;

async fn log(store_url: &str) -> anyhow::Result<(Vec<audit::AuditRecord>, Option<(u64, String)>)> {
    let store = SqlStore::connect(store_url).await?;
    Ok(store.audit_log().await?)
}

/// The `[store] url` of a config file, read without the rest of the config: the audit commands
/// only read the store, so a secret that does not resolve here (an incident laptop, a copy of
/// the store) must not stop them.
pub fn store_url(config: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", config.display()))?;
    match table.get("store").and_then(|s| s.get("url")) {
        None => Ok(runbot_commands::config::StoreConfig::default().url),
        Some(toml::Value::String(url)) => Ok(url.clone()),
        Some(_) => anyhow::bail!("{}: store.url must be a string", config.display()),
    }
}

pub async fn verify(store_url: &str) -> anyhow::Result<()> {
    let (records, head) = log(store_url).await?;
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

/// Writes the audit trail as JSON lines. `redactor`: today's secrets, when the config's
/// secrets resolve (records were redacted when written; this redacts again).
pub async fn export(store_url: &str, redactor: Option<&Redactor>, out: Option<&Path>) -> anyhow::Result<()> {
    let (records, _) = log(store_url).await?;
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    // Records are redacted when written; the export redacts again, with today's secrets (a
    // secret added since, or a record older than the redaction rules, still leaves nothing).
    for r in &records {
        let line = serde_json::to_string(r)?;
        writeln!(w, "{}", redactor.map(|x| x.redact(&line)).unwrap_or(line))?;
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

/// Prints the postmortem timeline of execution `id` (Markdown, or JSON with `json`).
pub async fn timeline(store_url: &str, id: &str, json: bool) -> anyhow::Result<()> {
    let exec: runbot_commands::grammar::ExecutionId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let store = SqlStore::connect(store_url).await?;
    let Some(v) = store.load(exec).await? else { anyhow::bail!("there is no execution {exec}") };
    let (records, _) = store.audit_log().await?;
    let t = runbot_commands::timeline::build(&v.value, &records);
    println!("{}", if json { t.json() } else { t.markdown() });
    Ok(())
}
