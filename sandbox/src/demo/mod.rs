//! `runbot demo`: writes a self-contained world into a state directory — a config (SQLite
//! store, console on 127.0.0.1, two approver identities), a runbooks file using the shipped
//! step kinds, and the local cache directory those runbooks inspect and flush.

use anyhow::Context;
use std::path::{Path, PathBuf};

const CONFIG: &str = include_str!("config.toml");
const RUNBOOKS: &str = include_str!("runbooks.toml");

/// Prepares `state_dir` and returns the path of the demo config to serve.
pub fn prepare(state_dir: &Path, listen: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let state = std::fs::canonicalize(state_dir)?;
    let state_str = state.to_str().context("the state directory path is not UTF-8")?;
    if state_str.contains(['"', '\\', '\n']) {
        anyhow::bail!("the state directory path must not contain quotes, backslashes or newlines");
    }
    let cache = state.join("cache/promotions");
    std::fs::create_dir_all(&cache)?;
    // A few cache files for the flush runbook to find; refilled on every start.
    for i in 1..=3 {
        std::fs::write(cache.join(format!("page-{i}.bin")), vec![b'x'; 1024 * i])?;
    }
    let config = CONFIG.replace("@STATE@", state_str).replace("@LISTEN@", listen);
    let path = state.join("runbot.toml");
    std::fs::write(&path, config)?;
    std::fs::write(state.join("runbooks.toml"), RUNBOOKS)?;
    Ok(path)
}

/// The demo runbooks text (for tests that check it stays valid).
pub fn runbooks() -> &'static str {
    RUNBOOKS
}
