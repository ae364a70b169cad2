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

/// What `check-config` and `serve` say of a deployment without `[audit] key`.
pub fn unkeyed_warning(settings: &Settings) -> Option<&'static str> {
    (!settings.audit_keys.is_keyed()).then_some(
        "[audit] key is not set: audit records get plain SHA-256 hashes, which whoever can write the database can recompute \
         after rewriting the trail, and the head is not anchored outside the store (see docs/operations.md, Audit key and anchors)",
    )
}

/// `serve`: keys the store's audit records with `[audit] key`, and builds the anchorer (`None`
/// without a key or a place to anchor).
pub fn key_store(
    settings: &Settings,
    store: &std::sync::Arc<SqlStore>,
    chats: &runbot_commands::ports::Chats,
) -> anyhow::Result<Option<std::sync::Arc<runbot_adapters::audit_anchor::Anchorer>>> {
    if let Some(k) = &settings.audit_keys.current {
        store.set_audit_key(k.clone())?;
    }
    runbot_adapters::audit_anchor::Anchorer::from_settings(settings, store.clone(), |p| chats.get(p).cloned()).map_err(anyhow::Error::msg)
}

/// What `audit verify` reads of a config besides the store: `[audit]` and the `[secrets]` its
/// S3 credentials name — resolved here, the rest of the config left alone.
struct AuditSide {
    audit: runbot_commands::config::AuditConfig,
    secrets: std::collections::BTreeMap<String, runbot_commands::config::SecretRef>,
    keys: audit::Keyring,
}

fn audit_side(config: &Path) -> anyhow::Result<AuditSide> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", config.display()))?;
    let section = |name: &str| table.get(name).cloned().unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    let audit: runbot_commands::config::AuditConfig =
        section("audit").try_into().map_err(|e| anyhow::anyhow!("{}: [audit]: {e}", config.display()))?;
    let secrets = section("secrets").try_into().map_err(|e| anyhow::anyhow!("{}: [secrets]: {e}", config.display()))?;
    let mut problems = Vec::new();
    let (keys, _) = runbot_commands::config::audit_keys(&audit, &mut |path, why| problems.push(format!("  {path}: {why}")));
    anyhow::ensure!(problems.is_empty(), "{}: the audit keys do not resolve:\n{}", config.display(), problems.join("\n"));
    Ok(AuditSide { audit, secrets, keys })
}

/// Where `verify` reads the newest anchor: `--anchor` (`s3://bucket/prefix` with `[audit.s3]`'s
/// endpoint and credentials, or a file holding an anchor's JSON or its chat line), else
/// `[audit.s3]`. Returns the place looked at and the anchor found there.
async fn newest_anchor(side: &AuditSide, given: Option<&str>) -> anyhow::Result<Option<(String, Option<(String, audit::Anchor)>)>> {
    let s3_url = match given {
        Some(u) if u.starts_with("s3://") => Some(u),
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading the anchor file {file}"))?;
            let found = match text.trim() {
                "" => None,
                t => Some((file.to_string(), audit::Anchor::parse(t).map_err(|e| anyhow::anyhow!("{file}: {e}"))?)),
            };
            return Ok(Some((file.to_string(), found)));
        }
        None => None,
    };
    let Some(cfg) = &side.audit.s3 else {
        anyhow::ensure!(
            s3_url.is_none(),
            "--anchor {}: reading anchors from S3 takes [audit.s3]'s endpoint and credentials",
            s3_url.unwrap_or_default()
        );
        return Ok(None);
    };
    let secret = |name: &str| match side.secrets.get(name) {
        Some(r) => r.resolve().map(|s| s.expose().to_string()),
        None => Err(format!("no secret '{name}' in [secrets]")),
    };
    let s3 = runbot_adapters::audit_anchor::S3Anchors::from_config(cfg, s3_url, secret).map_err(|e| anyhow::anyhow!("audit.s3: {e}"))?;
    let found = s3.newest().await.map_err(|e| anyhow::anyhow!("reading the anchors: {e}"))?;
    Ok(Some((s3.location(), found)))
}

/// The problems printed in full; the rest are counted.
const SHOWN: usize = 20;

/// `runbot audit verify`: every record against the configured key(s), then the chain against
/// the newest anchor. Exits non-zero on any problem, and when a keyed trail has no anchor.
pub async fn verify(config: &Path, anchor: Option<&str>) -> anyhow::Result<()> {
    let side = audit_side(config)?;
    // The anchor first: one written while the chain is read is older than the chain read.
    // Without a key there is nothing to authenticate an anchor with.
    let anchor = if side.keys.is_keyed() { newest_anchor(&side, anchor).await? } else { None };
    let (records, head) = log(&store_url(config)?).await?;
    let verified = match audit::verify_with(&records, head.as_ref().map(|(s, h)| (*s, h.as_str())), &side.keys) {
        Ok(v) => v,
        Err(problems) => {
            for p in problems.iter().take(SHOWN) {
                println!("TAMPERED: {p}");
            }
            if problems.len() > SHOWN {
                println!("TAMPERED: … and {} more problem(s)", problems.len() - SHOWN);
            }
            anyhow::bail!("the audit trail fails verification ({} problem(s); the first is the first record that differs)", problems.len())
        }
    };
    let head = head.map(|(_, h)| h).unwrap_or_else(|| audit::GENESIS.into());
    let n = verified.records;
    if !side.keys.is_keyed() {
        println!("audit trail intact: {n} records, head {head}");
        println!(
            "UNKEYED: no [audit] key is configured, so these hashes are plain SHA-256: whoever can write the database can rewrite \
             the trail and re-hash it, and this check would still pass"
        );
        return Ok(());
    }
    let keyed = format!("keys: {}", side.keys.current.iter().chain(&side.keys.previous).map(|k| k.id.as_str()).collect::<Vec<_>>().join(", "));
    if verified.unkeyed > 0 {
        println!("note: records 1..{} were written before the key was configured; only the anchors protect them", verified.unkeyed);
    }
    match anchor {
        None => {
            println!("NO ANCHOR FOUND: no anchor location is configured ([audit.s3]) or given (--anchor s3://… or FILE)");
            anyhow::bail!("the audit trail cannot be checked against an anchor: a deleted tail or a wiped store would go unseen")
        }
        Some((place, None)) => {
            println!("NO ANCHOR FOUND: {place} holds no audit anchor");
            anyhow::bail!("no anchor found at {place}: a deleted tail or a wiped store would go unseen")
        }
        Some((place, Some((at, a)))) => {
            if let Err(why) = a.authenticate(&side.keys) {
                println!("TAMPERED: the anchor {at}: {why}");
                anyhow::bail!("the newest anchor ({at}) is not authentic")
            }
            if let Err(why) = audit::check_anchor(&records, &a) {
                println!("TAMPERED: {why}");
                anyhow::bail!("the audit trail does not match the newest anchor ({at})")
            }
            println!("audit trail intact: {n} records, head {head} ({keyed})");
            println!(
                "anchored: record {} as of {} by {} ({at}; newest of {place})",
                a.seq,
                a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                a.instance
            );
            Ok(())
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

/// Prints the postmortem timeline of execution `id` (Markdown, or JSON with `json`): as
/// `/ops timeline` shows it when `settings` (the whole configuration) loaded — output links,
/// the environment's time zone, redaction — else in UTC from the records as stored.
pub async fn timeline(store_url: &str, settings: Option<&Settings>, id: &str, json: bool) -> anyhow::Result<()> {
    let exec: runbot_commands::grammar::ExecutionId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let store = SqlStore::connect(store_url).await?;
    let Some(v) = store.load(exec).await? else { anyhow::bail!("there is no execution {exec}") };
    let (records, _) = store.audit_log().await?;
    let mut t = runbot_commands::timeline::build(&v.value, &records);
    if let Some(settings) = settings {
        t = t.as_configured(&v.value, settings);
    }
    println!("{}", if json { t.json() } else { t.markdown() });
    Ok(())
}
