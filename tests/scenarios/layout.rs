//! The core crate stays SDK-free: `commands/Cargo.toml` must not depend on any chat, cloud,
//! database or HTTP SDK — those belong in `adapters/`. And `anyhow` is `bot/`'s alone: every
//! other crate returns typed errors.

const SDK_CRATES: &[&str] = &[
    "slack-morphism",
    "serenity",
    "kube",
    "kube-client",
    "kube-runtime",
    "k8s-openapi",
    "aws-sdk-s3",
    "aws-config",
    "sqlx",
    "octocrab",
    "axum",
    "hyper",
    "reqwest",
];

#[test]
fn commands_crate_names_no_sdk() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../commands/Cargo.toml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("{path} is not TOML: {e}"));
    let deps = manifest.get("dependencies").and_then(|d| d.as_table()).expect("commands has [dependencies]");
    assert!(deps.contains_key("tokio"), "sanity: the table read is the real one");
    let offending: Vec<&String> = deps
        .iter()
        .filter(|(name, spec)| {
            // A dependency may be renamed: `k = { package = "kube", ... }`.
            let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(name.as_str());
            SDK_CRATES.contains(&name.as_str()) || SDK_CRATES.contains(&package)
        })
        .map(|(name, _)| name)
        .collect();
    assert!(offending.is_empty(), "commands/Cargo.toml depends on SDK crate(s) {offending:?}; move that code to adapters/");
}

/// `anyhow` erases what went wrong; only `bot/` (which reports errors and exits) may use it.
/// No other crate's manifest names it, and no other crate's source mentions it.
#[test]
fn only_the_bot_crate_uses_anyhow() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut offending = Vec::new();
    for krate in ["commands", "adapters", "sandbox", "tests"] {
        let path = format!("{root}/{krate}/Cargo.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("{path} is not TOML: {e}"));
        for section in ["dependencies", "dev-dependencies"] {
            if manifest.get(section).and_then(|d| d.as_table()).is_some_and(|d| d.contains_key("anyhow")) {
                offending.push(format!("{krate}/Cargo.toml [{section}]"));
            }
        }
        let mut dirs = vec![std::path::PathBuf::from(format!("{root}/{krate}"))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).flatten() {
                let p = entry.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs")
                    && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(concat!("any", "how::")) || t.contains(concat!("use any", "how")))
                {
                    offending.push(p.display().to_string());
                }
            }
        }
    }
    let bot = std::fs::read_to_string(format!("{root}/bot/Cargo.toml")).expect("bot/Cargo.toml");
    assert!(bot.contains("anyhow"), "sanity: bot/ is where anyhow lives");
    assert!(offending.is_empty(), "anyhow outside bot/: {offending:?}");
}
